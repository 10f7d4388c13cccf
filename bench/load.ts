// Load generators, each run as a child process of the harness:
// - closed loop (fixed connections, as fast as the target answers): wrk when installed,
//   autocannon otherwise;
// - paced open loop (fixed mean rate, exponential gaps) for latency: bench/paced.ts.
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { spawnChild, stopChild, type Child } from './children.js'

export type LoadTool = 'wrk' | 'autocannon'

export interface ClosedResult {
  readonly tool: LoadTool
  readonly requests: number
  readonly durationS: number
  readonly rps: number
  /** Socket errors and timeouts. */
  readonly errors: number
  readonly non2xx: number
  /** Client-seen latency of the closed loop, ms (send to end of response, per connection). */
  readonly latencyMs?: { readonly p50: number, readonly p90: number, readonly p99: number }
}

export interface Percentiles {
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly p999: number
  readonly max: number
  readonly mean: number
}

export interface PacedResult {
  readonly rate: number
  readonly sent: number
  readonly completed: number
  readonly errors: number
  readonly non2xx: number
  readonly lost: number
  readonly samples: number
  readonly achievedRate: number
  /** From the moment each request was handed to undici to the end of its response. */
  readonly latencyMs: Percentiles
  /** From each request's scheduled time: includes any delay in the client itself. */
  readonly scheduledLatencyMs: Percentiles
}

const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url))

/** `wrk` when it is on PATH (and runs), else autocannon; `preferred` forces one. */
export function pickLoadTool (preferred: string | undefined): LoadTool {
  if (preferred === 'autocannon') return 'autocannon'
  let hasWrk = false
  try {
    // wrk prints its usage and exits 1 when run without a URL; a missing binary throws ENOENT.
    execFileSync('wrk', ['--version'], { stdio: 'pipe' })
    hasWrk = true
  } catch (err) {
    hasWrk = (err as { code?: string }).code !== 'ENOENT'
  }
  if (preferred === 'wrk' && !hasWrk) throw new Error('--tool wrk asked for, but wrk is not installed (apt-get install -y wrk)')
  return hasWrk ? 'wrk' : 'autocannon'
}

async function finished (child: Child, limitMs: number): Promise<void> {
  const timeout = new Promise<'timeout'>((resolve) => { setTimeout(() => { resolve('timeout') }, limitMs).unref() })
  const r = await Promise.race([child.exited, timeout])
  if (r === 'timeout') {
    await stopChild(child, 2000)
    throw new Error(`${child.name} (pid ${child.pid}) did not finish within ${limitMs} ms`)
  }
  if (r !== 0) throw new Error(`${child.name} (pid ${child.pid}) failed (${r}): ${child.stderr().trim() || child.stdout().trim()}`)
}

function wrkNumber (text: string, re: RegExp): number | undefined {
  const m = re.exec(text)
  return m === null ? undefined : Number(m[1])
}

/** A wrk duration ("635.91us", "1.02ms", "2.00s") in ms. */
function wrkMs (text: string, percent: number): number | undefined {
  const m = new RegExp(`^\\s+${percent}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text)
  return m === null ? undefined : Number(m[1]) * { us: 1e-3, ms: 1, s: 1e3, m: 60e3 }[m[2] as 'us' | 'ms' | 's' | 'm']
}

/** wrk prints "1.23k"-style suffixes in some fields; requests and durations are plain. */
function parseWrk (out: string): Omit<ClosedResult, 'tool' | 'rps'> {
  const m = /(\d+) requests in ([\d.]+)(us|ms|s|m)\b/.exec(out)
  if (m === null) throw new Error(`cannot read wrk output:\n${out}`)
  const unit = { us: 1e-6, ms: 1e-3, s: 1, m: 60 }[m[3] as 'us' | 'ms' | 's' | 'm']
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  const errors = sock === null ? 0 : Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4])
  const [p50, p90, p99] = [wrkMs(out, 50), wrkMs(out, 90), wrkMs(out, 99)]
  return {
    requests: Number(m[1]),
    durationS: Number(m[2]) * unit,
    errors,
    non2xx: wrkNumber(out, /Non-2xx or 3xx responses: (\d+)/) ?? 0,
    ...(p50 !== undefined && p90 !== undefined && p99 !== undefined ? { latencyMs: { p50, p90, p99 } } : {})
  }
}

export interface ClosedOptions {
  readonly tool: LoadTool
  readonly url: string
  readonly connections: number
  readonly durationS: number
  readonly wrkThreads: number
  /** Sent with every request (e.g. a bearer token). */
  readonly headers?: Readonly<Record<string, string>>
}

/** `name: value` lines, as wrk's -H and our clients' --header take them. */
function headerArgs (flag: string, headers: Readonly<Record<string, string>> | undefined): string[] {
  return Object.entries(headers ?? {}).flatMap(([name, value]) => [flag, `${name}: ${value}`])
}

/** One closed-loop run; resolves when the load generator has exited. */
export async function closedLoop (o: ClosedOptions): Promise<ClosedResult> {
  const limitMs = (o.durationS + 30) * 1000
  if (o.tool === 'wrk') {
    const threads = Math.max(1, Math.min(o.wrkThreads, o.connections))
    const child = spawnChild('wrk', 'wrk', {
      args: [`-t${threads}`, `-c${o.connections}`, `-d${o.durationS}s`, '--timeout', '10s', '--latency', ...headerArgs('-H', o.headers), o.url],
      capture: true
    })
    await finished(child, limitMs)
    const r = parseWrk(child.stdout())
    return { tool: 'wrk', ...r, rps: r.requests / r.durationS }
  }
  const child = spawnChild('autocannon', process.execPath, {
    args: [here('./autocannon-child.js'), '--url', o.url, '--connections', String(o.connections), '--duration', String(o.durationS), ...headerArgs('--header', o.headers)],
    capture: true
  })
  await finished(child, limitMs)
  const r = JSON.parse(child.stdout().trim().split('\n').pop()!) as Omit<ClosedResult, 'tool' | 'rps'>
  return { tool: 'autocannon', ...r, rps: r.requests / r.durationS }
}

export interface PacedOptions {
  readonly url: string
  readonly rate: number
  readonly durationS: number
  readonly warmupS: number
  readonly connections: number
  readonly headers?: Readonly<Record<string, string>>
  /** A header whose value varies per request among `count` values (`k0` ...): hash policies' keys. */
  readonly varyHeader?: { readonly name: string, readonly count: number }
  /** Called when the client, warmed up, starts pacing (its own warm-up burst is over). */
  readonly onPacedStart?: () => void
}

/** One paced run from its own process. */
export async function pacedLoad (o: PacedOptions): Promise<PacedResult> {
  const child = spawnChild('paced client', process.execPath, {
    args: [here('./paced.js'), '--url', o.url, '--rate', String(o.rate), '--duration', String(o.durationS),
      '--warmup', String(o.warmupS), '--connections', String(o.connections), ...headerArgs('--header', o.headers),
      ...(o.varyHeader !== undefined ? ['--vary-header', `${o.varyHeader.name}:${o.varyHeader.count}`] : [])],
    capture: true
  })
  let started = false
  child.proc.stdout?.on('data', () => {
    if (!started && child.stdout().includes('"event":"paced-start"')) { started = true; o.onPacedStart?.() }
  })
  await finished(child, (o.durationS + o.warmupS + 30) * 1000)
  return JSON.parse(child.stdout().trim().split('\n').pop()!) as PacedResult
}
