// `npm run bench`: direct vs the Node ceiling vs the fastmesh edge (vs Fastify + @fastify/http-proxy, ...), on loopback, in one run.
// Each round measures every scenario once (fresh proxy process each time): a closed-loop
// run for req/s and the proxy's CPU per request and RSS, then a paced open-loop run for
// latency. Reported figures are medians over rounds. A benchmark, not a test: no assertions.
//
//   node dist/bench/run.js [--duration 8] [--warmup 3] [--rounds 3] [--connections 50]
//     [--rate 2000] [--paced-duration S] [--tool wrk|autocannon] [--wrk-threads 1]
//     [--scenarios direct,node_ceiling,edge] [--pool-connections 128] [--out FILE]
//     [--cpu-prof DIR] [--pin-proxy CPUS] [--workers N [--sched rr|none]]   (--help lists them all)
// --workers N measures edge_workers (the edge with gateway.workers: N) beside node_ceiling and
// edge: req/s, the scaling factor over edge, CPU per request in all its processes and apart
// for the workers and the primary (CPU per request does not depend on spare cores).
// Every flag also reads from the environment: BENCH_DURATION, BENCH_WARMUP, BENCH_ROUNDS, ...
// Quick smoke run: node dist/bench/run.js --duration 2 --rounds 1
import { parseArgs } from 'node:util'
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir, cpus, release } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from '../test/helpers/ports.js'
import { pinChildren, runBenchMain, spawnChild, stopAllChildren, stopChild, waitForHttp, type Child } from './children.js'
import { closedLoop, pacedLoad, pickLoadTool, type ClosedResult, type LoadTool, type PacedResult } from './load.js'
import { cpuMicros, rssMb, clockTicks, systemBusyPercent } from './procstat.js'
import { SCENARIOS, type BenchContext, type RunningScenario, type ScenarioDefinition } from './scenarios.js'

/** Every process of the system under test: main, extra and worker processes. */
const processesOf = (running: RunningScenario): number[] => [running.measuredPid, ...(running.extraPids ?? []), ...(running.workerPids ?? [])]

/** CPU microseconds of `pids` together; undefined if one is gone (its time went with it). */
function cpuOfPids (pids: readonly number[]): number | undefined {
  let total = 0
  for (const pid of pids) {
    const c = cpuMicros(pid)
    if (c === undefined) return undefined
    total += c
  }
  return total
}

/** CPU microseconds of the system under test: its main process plus any extra and worker ones. */
const cpuOf = (running: RunningScenario): number | undefined => cpuOfPids(processesOf(running))

/** Default scenarios: every one but edge_workers, which needs --workers. */
const DEFAULT_SCENARIOS = SCENARIOS.filter((s) => s.name !== 'edge_workers').map((s) => s.name)
/** What --workers N measures unless --scenarios says otherwise. */
const WORKERS_SCENARIOS = ['node_ceiling', 'edge', 'edge_workers']

const FLAGS = {
  duration: { env: 'BENCH_DURATION', default: '8', help: 'seconds of each closed-loop measurement' },
  warmup: { env: 'BENCH_WARMUP', default: '', help: 'seconds of closed-loop warm-up before it, not counted (default: 3, at most --duration)' },
  rounds: { env: 'BENCH_ROUNDS', default: '3', help: 'rounds; each measures every scenario once' },
  connections: { env: 'BENCH_CONNECTIONS', default: '50', help: 'closed-loop client connections' },
  rate: { env: 'BENCH_RATE', default: '2000', help: 'paced (open-loop) request rate, req/s' },
  'paced-duration': { env: 'BENCH_PACED_DURATION', default: '', help: 'seconds of each paced run (default: --duration)' },
  tool: { env: 'BENCH_TOOL', default: '', help: 'closed-loop tool: wrk or autocannon (default: wrk if installed)' },
  'wrk-threads': { env: 'BENCH_WRK_THREADS', default: '1', help: 'wrk threads' },
  scenarios: { env: 'BENCH_SCENARIOS', default: DEFAULT_SCENARIOS.join(','), help: `scenarios to run, comma-separated (with --workers: ${WORKERS_SCENARIOS.join(',')})` },
  'pool-connections': { env: 'BENCH_POOL_CONNECTIONS', default: '128', help: 'upstream connections per endpoint in every proxy' },
  out: { env: 'BENCH_OUT', default: '', help: 'JSON output (default bench/results/latest.json)' },
  'cpu-prof': { env: 'BENCH_CPU_PROF', default: '', help: 'DIR: run the proxies under node --cpu-prof, profiles to DIR (figures then include profiler overhead)' },
  'pin-proxy': { env: 'BENCH_PIN_PROXY', default: '', help: 'CPUS: run the proxies on these CPUs (taskset), upstream and load generators on the others: steadier figures for comparing builds (a gateway\'s workers inherit its CPUs)' },
  workers: { env: 'BENCH_WORKERS', default: '', help: 'N (2-64): measure edge_workers, the edge with gateway.workers: N, beside node_ceiling and edge (the scenarios unless --scenarios names others): req/s, scaling factor over edge, CPU µs/req of all its processes, of the workers and of the primary' },
  sched: { env: 'BENCH_SCHED', default: '', help: 'rr or none: NODE_CLUSTER_SCHED_POLICY of the edge_workers gateway (default: Node\'s, rr on Linux)' }
} as const
type Flag = keyof typeof FLAGS

interface Options {
  durationS: number
  warmupS: number
  rounds: number
  connections: number
  rate: number
  pacedDurationS: number
  tool: string | undefined
  wrkThreads: number
  scenarios: ScenarioDefinition[]
  poolConnections: number
  out: string
  cpuProfDir: string | undefined
  pinProxy: string | undefined
  workers: number | undefined
  sched: 'rr' | 'none' | undefined
}

const repoRoot = fileURLToPath(new URL('../../', import.meta.url))

function usage (): string {
  return 'Usage: node dist/bench/run.js [flags]\n' + Object.entries(FLAGS)
    .map(([k, f]) => `  --${k.padEnd(18)} ${f.help} (env ${f.env}${f.default !== '' ? `, default ${f.default}` : ''})`).join('\n')
}

function parseOptions (argv: string[]): Options {
  if (argv.includes('--help') || argv.includes('-h')) { console.log(usage()); process.exit(0) }
  const spec: Record<string, { type: 'string' }> = Object.fromEntries(Object.keys(FLAGS).map((k) => [k, { type: 'string' as const }]))
  const values = parseArgs({ args: argv, options: spec, allowPositionals: false }).values as Partial<Record<Flag, string>>
  const raw = (k: Flag): string => values[k] ?? process.env[FLAGS[k].env] ?? FLAGS[k].default
  const num = (k: Flag, min: number, integer = true): number => {
    const n = Number(raw(k))
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) throw new Error(`--${k} must be ${integer ? 'an integer' : 'a number'} ≥ ${min} (got "${raw(k)}")\n${usage()}`)
    return n
  }
  // gateway.workers accepts 1-64; 1 has no workers, so edge_workers would be edge again.
  const workers = raw('workers') === '' ? undefined : num('workers', 2)
  if (workers !== undefined && workers > 64) throw new Error(`--workers must be at most 64, as gateway.workers (got ${workers})`)
  const sched = raw('sched')
  if (sched !== '' && sched !== 'rr' && sched !== 'none') throw new Error(`--sched must be rr or none (got "${sched}")`)
  if (sched !== '' && workers === undefined) throw new Error('--sched sets the scheduling of edge_workers: give --workers N too')
  const scenariosGiven = values.scenarios !== undefined || (process.env[FLAGS.scenarios.env] ?? '') !== ''
  const names = (scenariosGiven || workers === undefined ? raw('scenarios').split(',') : WORKERS_SCENARIOS).map((s) => s.trim()).filter((s) => s !== '')
  const unknown = names.filter((n) => !SCENARIOS.some((s) => s.name === n))
  if (unknown.length > 0 || names.length === 0) throw new Error(`unknown scenario(s) ${unknown.join(', ')}; known: ${SCENARIOS.map((s) => s.name).join(', ')}`)
  if (names.includes('edge_workers') && workers === undefined) throw new Error('scenario edge_workers needs --workers N')
  if (workers !== undefined && !names.includes('edge_workers')) throw new Error(`--workers ${workers} measures scenario edge_workers, which --scenarios leaves out`)
  const tool = raw('tool')
  if (tool !== '' && tool !== 'wrk' && tool !== 'autocannon') throw new Error(`--tool must be wrk or autocannon (got "${tool}")`)
  const durationS = num('duration', 1)
  return {
    durationS,
    warmupS: raw('warmup') === '' ? Math.min(3, durationS) : num('warmup', 0),
    rounds: num('rounds', 1),
    connections: num('connections', 1),
    rate: num('rate', 1, false),
    pacedDurationS: raw('paced-duration') === '' ? durationS : num('paced-duration', 1),
    tool: tool === '' ? undefined : tool,
    wrkThreads: num('wrk-threads', 1),
    // Definition order, whatever order the flag lists them in: baselines run first.
    scenarios: SCENARIOS.filter((s) => names.includes(s.name)),
    poolConnections: num('pool-connections', 1),
    out: raw('out') !== '' ? raw('out') : join(repoRoot, 'bench/results/latest.json'),
    cpuProfDir: raw('cpu-prof') !== '' ? resolve(raw('cpu-prof')) : undefined,
    pinProxy: raw('pin-proxy') !== '' ? raw('pin-proxy') : undefined,
    workers,
    sched: sched === '' ? undefined : sched
  }
}

/** One scenario measured once. */
interface Measurement {
  round: number
  rps: number
  requests: number
  errors: number
  non2xx: number
  /** CPU of every process of the system under test, per request. */
  cpu_us_per_req?: number
  /** With workers: the workers' CPU together per request (each request is served by one). */
  worker_cpu_us_per_req?: number
  /** With workers: the primary's CPU per request. */
  primary_cpu_us_per_req?: number
  /** With workers: each worker's share of the workers' CPU, percent, in worker order. */
  worker_cpu_split_pct?: number[]
  rss_mb?: number
  upstream_cpu_us_per_req?: number
  p50_ms: number
  p90_ms: number
  p99_ms: number
  p999_ms: number
  paced_achieved_rps: number
  paced_errors: number
  /** p99 counted from each request's scheduled send time (client delays included). */
  paced_scheduled_p99_ms: number
  paced_cpu_us_per_req?: number
  /** Machine CPU busy while this scenario's processes sat idle between its two runs. */
  background_busy_pct?: number
  facts?: Record<string, unknown>
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => { setTimeout(resolve, ms) }) }

function perRequest (before: number | undefined, after: number | undefined, requests: number): number | undefined {
  return before === undefined || after === undefined || requests <= 0 ? undefined : (after - before) / requests
}

async function measure (def: ScenarioDefinition, ctx: BenchContext, o: Options, tool: LoadTool): Promise<Measurement> {
  const running = await def.start(ctx)
  let closed: ClosedResult
  let paced: PacedResult
  let cpu: number | undefined
  let upstreamCpu: number | undefined
  let workerCpu: { total: number, primary?: number, splitPct: number[] } | undefined
  let rss: number | undefined
  let pacedCpu: number | undefined
  let background: number | undefined
  try {
    const load = { tool, url: running.url, connections: o.connections, wrkThreads: o.wrkThreads, headers: running.headers }
    if (o.warmupS > 0) await closedLoop({ ...load, durationS: o.warmupS })
    const c0 = cpuOf(running)
    const u0 = cpuMicros(ctx.upstreamPid)
    const w0 = running.workerPids?.map(cpuMicros)
    const primary0 = cpuMicros(running.measuredPid)
    closed = await closedLoop({ ...load, durationS: o.durationS })
    cpu = perRequest(c0, cpuOf(running), closed.requests)
    upstreamCpu = perRequest(u0, cpuMicros(ctx.upstreamPid), closed.requests)
    if (running.workerPids !== undefined && w0 !== undefined) {
      const primaryCpu = perRequest(primary0, cpuMicros(running.measuredPid), closed.requests)
      const w1 = running.workerPids.map(cpuMicros)
      const each = w1.map((after, i) => after === undefined || w0[i] === undefined ? undefined : after - w0[i]!)
      if (each.every((d) => d !== undefined) && closed.requests > 0) {
        const sum = each.reduce((a, b) => a + b, 0)
        workerCpu = { total: sum / closed.requests, splitPct: each.map((d) => sum > 0 ? (100 * d) / sum : 0), ...(primaryCpu !== undefined ? { primary: primaryCpu } : {}) }
      }
    }
    rss = processesOf(running).reduce<number | undefined>((sum, pid) => { const r = rssMb(pid); return sum === undefined || r === undefined ? undefined : sum + r }, 0)
    await sleep(200)
    // Nothing of ours runs now: what the machine does meanwhile is someone else's load.
    background = await systemBusyPercent(800)
    let p0: number | undefined
    paced = await pacedLoad({
      url: running.url,
      headers: running.headers,
      rate: o.rate,
      durationS: o.pacedDurationS,
      // Paced warm-up (not counted), after the client's own 1 s closed-loop warm-up burst.
      warmupS: Math.min(2, o.pacedDurationS),
      connections: 64,
      onPacedStart: () => { p0 = cpuOf(running) }
    })
    // CPU per request at a moderate, steady rate (the client's closed-loop warm-up burst excluded).
    pacedCpu = perRequest(p0, cpuOf(running), paced.completed)
  } finally {
    await running.stop()
  }
  const facts = await running.afterStop?.()
  return {
    round: ctx.round,
    rps: closed.rps,
    requests: closed.requests,
    errors: closed.errors,
    non2xx: closed.non2xx,
    ...(cpu !== undefined ? { cpu_us_per_req: cpu } : {}),
    ...(workerCpu !== undefined ? { worker_cpu_us_per_req: workerCpu.total, worker_cpu_split_pct: workerCpu.splitPct } : {}),
    ...(workerCpu?.primary !== undefined ? { primary_cpu_us_per_req: workerCpu.primary } : {}),
    ...(rss !== undefined ? { rss_mb: rss } : {}),
    ...(upstreamCpu !== undefined && running.measuredPid !== ctx.upstreamPid ? { upstream_cpu_us_per_req: upstreamCpu } : {}),
    p50_ms: paced.latencyMs.p50,
    p90_ms: paced.latencyMs.p90,
    p99_ms: paced.latencyMs.p99,
    p999_ms: paced.latencyMs.p999,
    paced_achieved_rps: paced.achievedRate,
    paced_errors: paced.errors + paced.non2xx + paced.lost,
    paced_scheduled_p99_ms: paced.scheduledLatencyMs.p99,
    ...(pacedCpu !== undefined ? { paced_cpu_us_per_req: pacedCpu } : {}),
    ...(background !== undefined ? { background_busy_pct: background } : {}),
    ...(facts !== undefined ? { facts } : {})
  }
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

const round = (x: number, digits: number): number => Number(x.toFixed(digits))

type Summary = Record<string, number | Measurement[] | string>

function summarise (defs: ScenarioDefinition[], results: Map<string, Measurement[]>): Record<string, Summary> {
  const out: Record<string, Summary> = {}
  const med = (name: string, key: keyof Measurement): number | undefined => {
    const xs = (results.get(name) ?? []).map((m) => m[key]).filter((v): v is number => typeof v === 'number')
    return xs.length === 0 ? undefined : median(xs)
  }
  for (const def of defs) {
    const s: Summary = { description: def.description }
    const put = (key: string, v: number | undefined, digits: number): void => { if (v !== undefined) s[key] = round(v, digits) }
    put('rps', med(def.name, 'rps'), 0)
    put('p50_ms', med(def.name, 'p50_ms'), 3)
    put('p99_ms', med(def.name, 'p99_ms'), 3)
    put('cpu_us_per_req', med(def.name, 'cpu_us_per_req'), 1)
    put('worker_cpu_us_per_req', med(def.name, 'worker_cpu_us_per_req'), 1)
    put('primary_cpu_us_per_req', med(def.name, 'primary_cpu_us_per_req'), 2)
    const shares = (results.get(def.name) ?? []).flatMap((m) => m.primary_cpu_us_per_req !== undefined && m.cpu_us_per_req !== undefined && m.cpu_us_per_req > 0 ? [(100 * m.primary_cpu_us_per_req) / m.cpu_us_per_req] : [])
    if (shares.length > 0) s.primary_cpu_share_pct = round(median(shares), 2)
    put('rss_mb', med(def.name, 'rss_mb'), 1)
    for (const base of def.compareTo) {
      const b = med(base, 'rps')
      const mine = med(def.name, 'rps')
      if (b !== undefined && mine !== undefined) s[`ratio_to_${base}`] = round(mine / b, 3)
    }
    if (def.singleProcess !== undefined && typeof s[`ratio_to_${def.singleProcess}`] === 'number') s.scaling_factor = s[`ratio_to_${def.singleProcess}`]!
    // What the gateways logged (the primary's "workers listening" line), not what was asked for.
    const policies = [...new Set((results.get(def.name) ?? []).map((m) => m.facts?.schedulingPolicy).filter((p): p is string => typeof p === 'string'))]
    if (policies.length > 0) s.scheduling_policy = policies.join(' and ')
    // CPU per request relative to the Node ceiling (or another proxy): steadier than req/s
    // on a busy machine.
    for (const base of def.compareTo.filter((b) => b !== 'direct')) {
      const b = med(base, 'cpu_us_per_req')
      const mine = med(def.name, 'cpu_us_per_req')
      if (b !== undefined && mine !== undefined && b > 0) s[`cpu_ratio_to_${base}`] = round(mine / b, 3)
    }
    if (def.name !== 'direct') {
      const d50 = med('direct', 'p50_ms')
      const d99 = med('direct', 'p99_ms')
      const m50 = med(def.name, 'p50_ms')
      const m99 = med(def.name, 'p99_ms')
      if (d50 !== undefined && m50 !== undefined) s.added_p50_ms = round(m50 - d50, 3)
      if (d99 !== undefined && m99 !== undefined) s.added_p99_ms = round(m99 - d99, 3)
    }
    put('p90_ms', med(def.name, 'p90_ms'), 3)
    put('p999_ms', med(def.name, 'p999_ms'), 3)
    put('paced_cpu_us_per_req', med(def.name, 'paced_cpu_us_per_req'), 1)
    put('upstream_cpu_us_per_req', med(def.name, 'upstream_cpu_us_per_req'), 1)
    put('background_busy_pct', med(def.name, 'background_busy_pct'), 1)
    s.rounds = (results.get(def.name) ?? []).map((m) => ({
      ...m,
      rps: round(m.rps, 0),
      p50_ms: round(m.p50_ms, 3),
      p90_ms: round(m.p90_ms, 3),
      p99_ms: round(m.p99_ms, 3),
      p999_ms: round(m.p999_ms, 3),
      paced_achieved_rps: round(m.paced_achieved_rps, 0),
      paced_scheduled_p99_ms: round(m.paced_scheduled_p99_ms, 3),
      ...(m.cpu_us_per_req !== undefined ? { cpu_us_per_req: round(m.cpu_us_per_req, 1) } : {}),
      ...(m.worker_cpu_us_per_req !== undefined ? { worker_cpu_us_per_req: round(m.worker_cpu_us_per_req, 1) } : {}),
      ...(m.primary_cpu_us_per_req !== undefined ? { primary_cpu_us_per_req: round(m.primary_cpu_us_per_req, 2) } : {}),
      ...(m.worker_cpu_split_pct !== undefined ? { worker_cpu_split_pct: m.worker_cpu_split_pct.map((p) => round(p, 1)) } : {}),
      ...(m.rss_mb !== undefined ? { rss_mb: round(m.rss_mb, 1) } : {}),
      ...(m.upstream_cpu_us_per_req !== undefined ? { upstream_cpu_us_per_req: round(m.upstream_cpu_us_per_req, 1) } : {}),
      ...(m.paced_cpu_us_per_req !== undefined ? { paced_cpu_us_per_req: round(m.paced_cpu_us_per_req, 1) } : {}),
      ...(m.background_busy_pct !== undefined ? { background_busy_pct: round(m.background_busy_pct, 1) } : {})
    }))
    out[def.name] = s
  }
  return out
}

function table (summary: Record<string, Summary>): string {
  const cols: Array<[string, (s: Summary) => string]> = [
    ['scenario', () => ''],
    ['req/s', (s) => fmt(s.rps, 0)],
    ['×direct', (s) => fmt(s.ratio_to_direct, 2)],
    ['×ceiling', (s) => fmt(s.ratio_to_node_ceiling, 2)],
    ['p50 ms', (s) => fmt(s.p50_ms, 3)],
    ['p99 ms', (s) => fmt(s.p99_ms, 3)],
    ['+p50 ms', (s) => fmt(s.added_p50_ms, 3)],
    ['+p99 ms', (s) => fmt(s.added_p99_ms, 3)],
    ['CPU µs/req', (s) => fmt(s.cpu_us_per_req, 1)],
    ['CPU ×ceiling', (s) => fmt(s.cpu_ratio_to_node_ceiling, 2)],
    ['RSS MB', (s) => fmt(s.rss_mb, 1)]
  ]
  if (Object.values(summary).some((s) => s.worker_cpu_us_per_req !== undefined)) {
    // With workers: req/s over the one-process edge, and where their CPU went.
    cols.splice(3, 0, ['×edge', (s) => fmt(s.ratio_to_edge, 2)])
    cols.splice(10, 0, ['workers µs/req', (s) => fmt(s.worker_cpu_us_per_req, 1)], ['primary µs/req', (s) => fmt(s.primary_cpu_us_per_req, 2)])
  }
  const rows = Object.entries(summary).map(([name, s]) => cols.map(([, f], i) => i === 0 ? name : f(s)))
  const widths = cols.map(([h], i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => cells.map((c, i) => i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)).join('  ')
  return [line(cols.map(([h]) => h)), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

function fmt (v: unknown, digits: number): string {
  return typeof v === 'number' ? v.toFixed(digits) : '—'
}

let workDir: string | undefined

async function main (): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  const tool = pickLoadTool(o.tool)
  const cpuList = cpus()
  console.log(`fastmesh bench: ${o.scenarios.map((s) => s.name).join(', ')} × ${o.rounds} round(s); closed loop ${tool} -c${o.connections} ${o.durationS}s (+${o.warmupS}s warm-up); paced ${o.rate} req/s for ${o.pacedDurationS}s`)
  console.log(`machine: ${cpuList.length} × ${cpuList[0]?.model ?? '?'}, node ${process.version}; CPU from /proc at ${clockTicks()} ticks/s`)
  if (o.pinProxy !== undefined) {
    const pinned = pinChildren(o.pinProxy)
    console.log(`pinned: proxies on CPU ${pinned.proxy}, upstream and load generators on CPU ${pinned.rest} (so \`direct\` measures an upstream sharing its CPUs with the load generator)`)
    if (o.workers !== undefined && o.workers > o.pinProxy.split(',').length) console.log(`note: edge_workers runs its ${o.workers} workers and primary on ${o.pinProxy.split(',').length} CPU(s) (${o.pinProxy}): they take turns, they cannot scale`)
  } else if (cpuList.length < 4) console.log(`note: load generator, proxy and upstream share ${cpuList.length} CPU(s); absolute figures are for this machine only`)
  if (o.workers !== undefined) {
    const inherited = process.env.NODE_CLUSTER_SCHED_POLICY
    const policy = o.sched !== undefined ? `NODE_CLUSTER_SCHED_POLICY=${o.sched} (--sched)` : inherited !== undefined ? `NODE_CLUSTER_SCHED_POLICY=${inherited} (inherited)` : 'Node\'s default (rr on Linux)'
    console.log(`workers: edge_workers runs a primary and ${o.workers} workers; cluster scheduling ${policy}; the policy each gateway logged is in the round lines`)
  }

  const backgroundBefore = await systemBusyPercent(1000)
  if (backgroundBefore !== undefined) {
    console.log(`machine busy before start: ${backgroundBefore.toFixed(0)}% of all CPUs${backgroundBefore > 10 ? ' — other work is running: expect noisy figures (see background_busy_pct per round in the JSON)' : ''}`)
  }
  if (o.cpuProfDir !== undefined) await mkdir(o.cpuProfDir, { recursive: true })
  workDir = await mkdtemp(join(tmpdir(), 'fastmesh-bench-'))
  let upstream: Child | undefined
  try {
    const port = await freePort()
    upstream = spawnChild('upstream', process.execPath, { args: [fileURLToPath(new URL('./upstream.js', import.meta.url)), '--port', String(port)] })
    await waitForHttp(`http://127.0.0.1:${port}/`, upstream)

    const results = new Map<string, Measurement[]>(o.scenarios.map((s) => [s.name, []]))
    for (let r = 1; r <= o.rounds; r++) {
      for (const def of o.scenarios) {
        const profDir = o.cpuProfDir
        const ctx: BenchContext = {
          upstreamPorts: [port],
          upstreamPid: upstream.pid,
          workDir,
          poolConnections: o.poolConnections,
          round: r,
          // A gateway's workers inherit its node flags: Node's default names (with the pid) keep their profiles apart.
          nodeArgs: (name) => profDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profDir, ...(name === 'edge_workers' ? [] : ['--cpu-prof-name', `${name}-round${r}.cpuprofile`])],
          ...(o.workers !== undefined ? { gatewayWorkers: o.workers } : {}),
          ...(o.sched !== undefined ? { clusterSchedPolicy: o.sched } : {})
        }
        const m = await measure(def, ctx, o, tool)
        results.get(def.name)!.push(m)
        const warn = m.errors + m.non2xx + m.paced_errors > 0 ? `  !! errors: closed ${m.errors} + non-2xx ${m.non2xx}, paced ${m.paced_errors}` : ''
        const facts = m.facts !== undefined ? `  ${JSON.stringify(m.facts)}` : ''
        const bg = m.background_busy_pct !== undefined ? `  (machine ${m.background_busy_pct.toFixed(0)}% busy while idle)` : ''
        const split = m.worker_cpu_us_per_req !== undefined ? ` (workers ${fmt(m.worker_cpu_us_per_req, 1)}, primary ${fmt(m.primary_cpu_us_per_req, 2)}; workers' CPU split ${m.worker_cpu_split_pct?.map((p) => p.toFixed(0)).join('/') ?? '—'}%)` : ''
        console.log(`[round ${r}/${o.rounds}] ${def.name.padEnd(12)} ${m.rps.toFixed(0).padStart(6)} req/s  cpu ${fmt(m.cpu_us_per_req, 1)} µs/req${split}  rss ${fmt(m.rss_mb, 1)} MB | paced ${m.paced_achieved_rps.toFixed(0)}/s p50 ${m.p50_ms.toFixed(3)} p99 ${m.p99_ms.toFixed(3)} ms${bg}${warn}${facts}`)
      }
    }

    const scenarios = summarise(o.scenarios, results)
    const report = {
      scenarios,
      machine: {
        cpus: cpuList.length,
        model: cpuList[0]?.model ?? 'unknown',
        node: process.version,
        kernel: release(),
        load_tool: tool,
        background_busy_pct_before: backgroundBefore !== undefined ? round(backgroundBefore, 1) : undefined,
        date: new Date().toISOString()
      },
      options: {
        duration_s: o.durationS,
        warmup_s: o.warmupS,
        rounds: o.rounds,
        connections: o.connections,
        wrk_threads: tool === 'wrk' ? o.wrkThreads : undefined,
        paced_rate: o.rate,
        paced_duration_s: o.pacedDurationS,
        pool_connections: o.poolConnections,
        aggregate: 'median of rounds',
        latency: 'paced open loop (exponential gaps), undici keep-alive Pool, send to end of response',
        cpu_rss_process: 'the proxy process; the upstream for direct; for edge_workers the primary and its workers together (worker_cpu_us_per_req and primary_cpu_us_per_req apart)',
        cpu_profiled: o.cpuProfDir !== undefined,
        pinned_proxy_cpus: o.pinProxy,
        gateway_workers: o.workers,
        cluster_sched_policy_asked: o.workers === undefined ? undefined : o.sched ?? process.env.NODE_CLUSTER_SCHED_POLICY ?? 'node default'
      }
    }
    await mkdir(dirname(o.out), { recursive: true })
    await writeFile(o.out, JSON.stringify(report, null, 2) + '\n')
    console.log(`\nmedians of ${o.rounds} round(s); load tool: ${tool}; latency: paced ${o.rate} req/s; CPU and RSS of the proxy (of the upstream for direct; of the primary and its workers for edge_workers)\n`)
    console.log(table(scenarios))
    // Comparisons the table has no column for (edge_retries against edge).
    for (const def of o.scenarios) {
      for (const base of def.compareTo.filter((b) => b !== 'direct' && b !== 'node_ceiling')) {
        const s = scenarios[def.name]!
        if (s[`ratio_to_${base}`] === undefined) continue
        console.log(`${def.name} vs ${base}: req/s ×${fmt(s[`ratio_to_${base}`], 3)}, CPU µs/req ×${fmt(s[`cpu_ratio_to_${base}`], 3)}`)
      }
      const w = scenarios[def.name]!
      if (def.singleProcess !== undefined && w.worker_cpu_us_per_req !== undefined) {
        console.log(`${def.name}: ${o.workers} workers, scheduling ${String(w.scheduling_policy ?? '?')}: ${fmt(w.rps, 0)} req/s, scaling factor ×${fmt(w.scaling_factor, 3)} over ${def.singleProcess}; ` +
          `CPU ${fmt(w.cpu_us_per_req, 1)} µs/req in all processes = ${fmt(w.worker_cpu_us_per_req, 1)} in the workers + ${fmt(w.primary_cpu_us_per_req, 2)} in the primary (${fmt(w.primary_cpu_share_pct, 2)}%); ${def.singleProcess} alone ${fmt(scenarios[def.singleProcess]?.cpu_us_per_req, 1)} µs/req`)
      }
    }
    const shown = relative(process.cwd(), o.out)
    console.log(`\nwritten: ${shown.startsWith('..') ? o.out : shown}`)
    if (o.cpuProfDir !== undefined) console.log(`CPU profiles in ${o.cpuProfDir} (figures above include profiler overhead); summarise one with: node dist/bench/profile-summary.js FILE`)
  } finally {
    if (upstream !== undefined) await stopChild(upstream)
    await stopAllChildren()
    await rm(workDir, { recursive: true, force: true })
  }
}

runBenchMain('bench', main, () => workDir)
