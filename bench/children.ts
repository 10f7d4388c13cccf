// Child processes of the harness: every component (upstream, proxies, load generators)
// runs in its own process, is tracked here by PID, and is stopped by that PID only.
import { execFileSync, spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { openSync, closeSync, readFileSync, rmSync } from 'node:fs'
import { request } from 'undici'

export interface Child {
  readonly name: string
  readonly pid: number
  readonly proc: ChildProcess
  /** Resolves with the exit code (or signal name) when the process has ended. */
  readonly exited: Promise<number | string>
  /** Captured stdout, when spawned with `capture: true`. */
  stdout (): string
  stderr (): string
}

const live = new Set<Child>()

export interface SpawnOptions {
  readonly args?: readonly string[]
  readonly env?: NodeJS.ProcessEnv
  readonly cwd?: string
  /** Keep stdout/stderr in memory (load generators print their results there). */
  readonly capture?: boolean
  /** Send stdout and stderr to this file instead (the gateway's logs). */
  readonly logFile?: string
  /** A proxy under measurement: runs on the proxy CPUs when pinning is on (`pinChildren`). */
  readonly proxy?: boolean
}

/** The CPUs this process may run on (its affinity list in /proc; else 0..n-1). */
function allowedCpus (): string[] {
  try {
    const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('Cpus_allowed_list:'))
    if (line !== undefined) {
      const out: string[] = []
      for (const part of line.slice(line.indexOf(':') + 1).trim().split(',')) {
        const [from, to] = part.split('-').map(Number) as [number, number | undefined]
        for (let c = from; c <= (to ?? from); c++) out.push(String(c))
      }
      if (out.length > 0) return out
    }
  } catch { /* not Linux: fall back to the count */ }
  return [...Array(availableParallelism()).keys()].map(String)
}

/** CPU lists for `taskset -c` when pinning is on: proxies on one set, every other child on the rest. */
let pinning: { readonly proxy: string, readonly rest: string } | undefined

/**
 * Pins every child spawned from now on (taskset): those spawned as `proxy` to `proxyCpus`
 * (a comma-separated list), the others (upstreams, load generators) to the remaining CPUs.
 * With a proxy alone on its CPU, two builds compare within a few percent on a small machine.
 */
export function pinChildren (proxyCpus: string): { proxy: string, rest: string } {
  const allowed = allowedCpus()
  const proxy = proxyCpus.split(',').map((c) => c.trim()).filter((c) => c !== '')
  if (proxy.length === 0 || proxy.some((c) => !allowed.includes(c))) throw new Error(`--pin-proxy wants CPUs this process may use (${allowed.join(',')}), comma-separated (got "${proxyCpus}")`)
  const rest = allowed.filter((c) => !proxy.includes(c))
  if (rest.length === 0) throw new Error(`--pin-proxy ${proxyCpus} leaves no CPU for the upstream and the load generator`)
  for (const list of [proxy, rest]) {
    try {
      execFileSync('taskset', ['-c', list.join(','), 'true'], { stdio: 'pipe' })
    } catch (err) {
      throw new Error(`--pin-proxy: taskset -c ${list.join(',')} failed (taskset is in util-linux): ${(err as Error).message}`)
    }
  }
  pinning = { proxy: proxy.join(','), rest: rest.join(',') }
  return pinning
}

export function spawnChild (name: string, command: string, opts: SpawnOptions = {}): Child {
  let fd: number | undefined
  let stdio: StdioOptions
  if (opts.logFile !== undefined) {
    fd = openSync(opts.logFile, 'w')
    stdio = ['ignore', fd, fd]
  } else if (opts.capture === true) {
    stdio = ['ignore', 'pipe', 'pipe']
  } else {
    stdio = ['ignore', 'ignore', 'inherit']
  }
  // taskset execs the command in its own process: the PID stays the measured one.
  const [file, args] = pinning === undefined
    ? [command, opts.args ?? []]
    : ['taskset', ['-c', opts.proxy === true ? pinning.proxy : pinning.rest, command, ...(opts.args ?? [])]]
  const proc = spawn(file, args, { stdio, env: opts.env ?? process.env, cwd: opts.cwd })
  if (fd !== undefined) closeSync(fd)
  if (proc.pid === undefined) throw new Error(`could not start ${name} (${command})`)
  const out: Buffer[] = []
  const err: Buffer[] = []
  proc.stdout?.on('data', (b: Buffer) => { out.push(b) })
  proc.stderr?.on('data', (b: Buffer) => { err.push(b) })
  const exited = new Promise<number | string>((resolve) => {
    proc.once('error', () => { resolve('spawn-error') })
    proc.once('exit', (code, signal) => { resolve(code ?? signal ?? 'unknown') })
  })
  const child: Child = {
    name,
    pid: proc.pid,
    proc,
    exited,
    stdout: () => Buffer.concat(out).toString('utf8'),
    stderr: () => Buffer.concat(err).toString('utf8')
  }
  live.add(child)
  void exited.then(() => { live.delete(child) })
  return child
}

export function isRunning (c: Child): boolean {
  return c.proc.exitCode === null && c.proc.signalCode === null
}

/** SIGTERM by PID, SIGKILL by PID after `graceMs`; resolves once the process is gone. */
export async function stopChild (c: Child, graceMs = 10_000): Promise<void> {
  if (!isRunning(c)) return
  try { process.kill(c.pid, 'SIGTERM') } catch { /* already gone */ }
  const timer = new Promise<'timeout'>((resolve) => { setTimeout(() => { resolve('timeout') }, graceMs).unref() })
  if (await Promise.race([c.exited, timer]) === 'timeout' && isRunning(c)) {
    try { process.kill(c.pid, 'SIGKILL') } catch { /* already gone */ }
    await Promise.race([c.exited, new Promise((resolve) => { setTimeout(resolve, 2000).unref() })])
  }
}

export async function stopAllChildren (): Promise<void> {
  await Promise.all([...live].map(async (c) => { await stopChild(c, 5000) }))
}

/** Last resort on exit: no await possible, so SIGKILL whatever is left, by PID. */
export function killAllChildrenNow (): void {
  for (const c of live) if (isRunning(c)) { try { process.kill(c.pid, 'SIGKILL') } catch { /* gone */ } }
}

/** Polls `url` until it answers `status`; fails after `timeoutMs` or when `child` dies. */
export async function waitForHttp (url: string, child: Child, timeoutMs = 20_000, status = 200, headers: Record<string, string> = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  while (Date.now() < deadline) {
    if (!isRunning(child)) throw new Error(`${child.name} (pid ${child.pid}) exited before it was ready: ${await child.exited}`)
    try {
      const res = await request(url, { headers, headersTimeout: 1000, bodyTimeout: 1000, reset: true })
      await res.body.dump()
      if (res.statusCode === status) return
      last = `status ${res.statusCode}`
    } catch (err) {
      last = (err as Error).message
    }
    await new Promise((resolve) => { setTimeout(resolve, 100) })
  }
  throw new Error(`${child.name} (pid ${child.pid}) not ready at ${url} after ${timeoutMs} ms: ${last}`)
}

/**
 * Runs a benchmark's `main` as the process: SIGINT/SIGTERM stop every child (by PID) and
 * remove the work directory `cleanup` names; exit 0 on success, 1 on failure, 130 when
 * interrupted (the children dying under an interrupted run is not a failure to report).
 */
export function runBenchMain (what: string, main: () => Promise<void>, workDir: () => string | undefined): void {
  let interrupted = false
  const removeWorkDir = (): void => {
    const dir = workDir()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  }
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return
    interrupted = true
    console.error(`\n${signal}: stopping child processes`)
    void stopAllChildren().then(removeWorkDir).finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  process.once('exit', killAllChildrenNow)
  main().then(() => process.exit(0), async (err: unknown) => {
    if (interrupted) return
    console.error(`${what} failed: ${(err as Error).stack ?? String(err)}`)
    await stopAllChildren()
    process.exit(1)
  })
}
