// Endpoint churn under steady traffic (issue 17): does a discovery change move the request
// latency of a service with 1,000 endpoints, per balancing policy?
//
//   npm run bench:churn        (= npm run build --silent && node dist/bench/endpoint-churn.js)
//   node dist/bench/endpoint-churn.js --policies ring_hash --rounds 1 --gateway-node-args='--cpu-prof --cpu-prof-dir=/tmp/prof'
//
// One upstream process listens on one port at 1,000 + --extra loopback addresses
// (bench/loopback.ts: 127.1.x.y), so every endpoint is a real listening address:port. For
// each policy (and round, interleaved) a fresh gateway (`fastmesh start`, a child) serves one
// route to service `shop`, declared under discovery.embedded with the 1,000 endpoints (no
// health check: each is in rotation at once), hashing on header x-user for the hash policies;
// the paced open-loop client (bench/paced.ts, its own process) varies x-user over --keys
// values. Two phases of the same paced traffic:
//   1. baseline: no change;
//   2. churn: every --interval-min..--interval-max ms (uniform) one change through the admin
//      API, alternating: POST /services/shop/endpoints (an extra address), then DELETE it
//      (from the client's warm-up on, so the measured window is all churn).
// Before the phases, a closed-loop pass sends every key once (every endpoint at least twice):
// the baseline must not time the gateway's first connection to each endpoint.
// Per phase: client latency p50/p99/max, errors, and the gateway's event-loop delay from its
// /metrics (prom-client's nodejs_eventloop_lag_*_seconds: a histogram reset at each scrape,
// so a scrape at the start and one at the end of the phase frame it) and CPU time; during
// churn also the changes applied and the admin call's latency (a registration publishes to
// the balancer inside that call). Prints a table and writes bench/results/churn-latest.json.
// Every child is stopped by PID, at the end, on error and on SIGINT/SIGTERM.
import path from 'node:path'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir, cpus, release } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Pool, request } from 'undici'
import { stringify } from 'yaml'
import { freePorts } from '../test/helpers/ports.js'
import { POLICIES, type PolicyName } from '../src/balancer/policies/index.js'
import { runBenchMain, spawnChild, stopChild, waitForHttp, isRunning, type Child } from './children.js'
import { pacedLoad, type PacedResult, type Percentiles } from './load.js'
import { cpuMicros, systemBusyPercent } from './procstat.js'
import { loopbackAddress } from './loopback.js'

const HERE = path.dirname(fileURLToPath(import.meta.url)) // dist/bench
const ROOT = path.resolve(HERE, '..', '..')
const CLI = path.resolve(HERE, '..', 'src', 'cli', 'index.js')
const SERVICE = 'shop'
const HASH_HEADER = 'x-user'

const { values: opt } = parseArgs({
  options: {
    policies: { type: 'string', default: 'round_robin,ring_hash,maglev' },
    rounds: { type: 'string', default: '2' },
    endpoints: { type: 'string', default: '1000' },
    extra: { type: 'string', default: '50' },
    rate: { type: 'string', default: '500' },
    baseline: { type: 'string', default: '20' },
    churn: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '5' },
    'interval-min': { type: 'string', default: '250' },
    'interval-max': { type: 'string', default: '500' },
    keys: { type: 'string', default: '10000' },
    connections: { type: 'string', default: '64' },
    'pool-connections': { type: 'string', default: '4' },
    'gateway-node-args': { type: 'string', default: '' },
    out: { type: 'string', default: path.join(ROOT, 'bench', 'results', 'churn-latest.json') },
    'keep-logs': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false }
  }
})

if (opt.help) {
  process.stdout.write(`Usage: npm run bench:churn [-- options]   (node dist/bench/endpoint-churn.js [options])

Request latency through a fastmesh gateway while the endpoint set of its service (1,000
endpoints, embedded registry) changes every few hundred ms through the admin API, against a
baseline of the same paced traffic with no change; per balancing policy, a fresh gateway each.
Reports client p50/p99/max and errors per phase, changes applied, admin call latency, and the
gateway's event-loop delay (its /metrics) and CPU. A benchmark: no pass/fail.

  --policies LIST         policies, comma-separated (default round_robin,ring_hash,maglev)
  --rounds N              runs of each policy, interleaved (default 2)
  --endpoints N           endpoints of the service in the config (default 1000)
  --extra N               further addresses the churn registers in turn (default 50)
  --rate N                paced requests per second, open loop (default 500)
  --baseline S            measured seconds without changes (default 20)
  --churn S               measured seconds with changes (default 20)
  --warmup S              unmeasured paced seconds before the baseline (default 5)
  --interval-min MS       shortest time between two changes (default 250)
  --interval-max MS       longest (default 500)
  --keys N                distinct values of the hashed header ${HASH_HEADER} (default 10000)
  --connections N         client connections to the gateway (default 64)
  --pool-connections N    services.shop.connectionPool.connections (default 4)
  --gateway-node-args=S   extra node flags for the gateway (with '=': --gateway-node-args='--cpu-prof --cpu-prof-dir=DIR')
  --out FILE              results JSON (default bench/results/churn-latest.json)
  --keep-logs             keep the work directory (gateway configs and logs: with
                          --gateway-node-args=--trace-gc, the gateway's GC trace)
  -h, --help              this text
`)
  process.exit(0)
}

const int = (name: keyof typeof opt, min: number): number => {
  const n = Number(opt[name])
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number ≥ ${min} (got "${String(opt[name])}")`)
  return n
}
const o = {
  policies: opt.policies.split(',').map((p) => p.trim()).filter((p) => p !== '') as PolicyName[],
  rounds: int('rounds', 1),
  endpoints: int('endpoints', 1),
  extra: int('extra', 1),
  rate: int('rate', 1),
  baselineS: int('baseline', 1),
  churnS: int('churn', 1),
  warmupS: int('warmup', 0),
  intervalMinMs: int('interval-min', 1),
  intervalMaxMs: int('interval-max', 1),
  keys: int('keys', 1),
  connections: int('connections', 1),
  poolConnections: int('pool-connections', 1),
  gatewayNodeArgs: opt['gateway-node-args'].split(' ').filter((a) => a !== ''),
  out: opt.out,
  keepLogs: opt['keep-logs']
}
for (const p of o.policies) if (!POLICIES.includes(p)) throw new Error(`--policies: unknown policy "${p}" (one of ${POLICIES.join(', ')})`)
if (o.intervalMaxMs < o.intervalMinMs) throw new Error('--interval-max must be at least --interval-min')

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
const round = (n: number | undefined, digits = 2): number | undefined => n === undefined || !Number.isFinite(n) ? undefined : Number(n.toFixed(digits))

function gatewayConfigYaml (policy: PolicyName, upstreamPort: number, httpPort: number, adminPort: number): string {
  const doc = {
    gateway: { name: 'bench-churn', mode: 'edge' },
    listeners: { http: { address: '127.0.0.1', port: httpPort }, admin: { address: '127.0.0.1', port: adminPort } },
    discovery: {
      embedded: {
        services: {
          [SERVICE]: { endpoints: Array.from({ length: o.endpoints }, (_, i) => ({ id: `${SERVICE}-${i}`, address: loopbackAddress(i), port: upstreamPort })) }
        }
      }
    },
    services: {
      [SERVICE]: {
        connectionPool: { connections: o.poolConnections, keepAliveTimeout: '30s' },
        loadBalancer: { policy, ...(policy === 'ring_hash' || policy === 'maglev' ? { hashOn: { header: HASH_HEADER } } : {}) }
      }
    },
    telemetry: { logging: { level: 'warn', accessLog: false }, metrics: { enabled: true } },
    routes: [{ name: SERVICE, match: { path: { prefix: '/' } }, destination: { service: SERVICE } }]
  }
  return `# generated by bench/endpoint-churn.ts\n${stringify(doc)}`
}

/** The gateway's event-loop delay since the previous scrape (prom-client resets its histogram on each). */
interface LoopDelay { readonly p50Ms?: number, readonly p99Ms?: number, readonly maxMs?: number }

async function scrapeLoopDelay (adminUrl: string): Promise<LoopDelay> {
  const res = await request(`${adminUrl}/metrics`, { headersTimeout: 10_000, bodyTimeout: 10_000 })
  const text = await res.body.text()
  if (res.statusCode !== 200) throw new Error(`GET /metrics answered ${res.statusCode}`)
  const gauge = (name: string): number | undefined => {
    const m = new RegExp(`^${name} ([0-9.eE+-]+)`, 'm').exec(text)
    return m === null ? undefined : round(Number(m[1]) * 1000)
  }
  return { p50Ms: gauge('nodejs_eventloop_lag_p50_seconds'), p99Ms: gauge('nodejs_eventloop_lag_p99_seconds'), maxMs: gauge('nodejs_eventloop_lag_max_seconds') }
}

async function inRotation (adminUrl: string): Promise<number> {
  const res = await request(`${adminUrl}/services/${SERVICE}`, { headersTimeout: 10_000, bodyTimeout: 10_000 })
  const body = await res.body.json() as { inRotation?: number }
  if (res.statusCode !== 200 || typeof body.inRotation !== 'number') throw new Error(`GET /services/${SERVICE} answered ${res.statusCode}`)
  return body.inRotation
}

interface ChurnStats {
  applied: number
  failed: number
  readonly adminMs: number[]
  lastError?: string
}

/**
 * Changes the endpoint set until `stop()`: a registration of the next extra address, then its
 * removal, then the next one... one change every intervalMin..intervalMax ms (each waits for the
 * previous call to answer).
 */
function churn (adminUrl: string, upstreamPort: number): { stop: () => Promise<ChurnStats> } {
  const stats: ChurnStats = { applied: 0, failed: 0, adminMs: [] }
  let stopped = false
  let next = 0
  let registered: string | undefined
  const loop = (async () => {
    while (!stopped) {
      await sleep(o.intervalMinMs + Math.random() * (o.intervalMaxMs - o.intervalMinMs))
      if (stopped) break
      const t0 = performance.now()
      try {
        let ok: boolean
        if (registered === undefined) {
          const id = `churn-${next}`
          const res = await request(`${adminUrl}/services/${SERVICE}/endpoints`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ id, address: loopbackAddress(o.endpoints + (next % o.extra)), port: upstreamPort }),
            headersTimeout: 10_000,
            bodyTimeout: 10_000
          })
          const text = await res.body.text()
          ok = res.statusCode === 201
          if (ok) { registered = id; next++ } else stats.lastError = `POST ${res.statusCode}: ${text.slice(0, 200)}`
        } else {
          const res = await request(`${adminUrl}/services/${SERVICE}/endpoints/${registered}`, { method: 'DELETE', headersTimeout: 10_000, bodyTimeout: 10_000 })
          const text = await res.body.text()
          ok = res.statusCode === 204
          if (ok) registered = undefined; else stats.lastError = `DELETE ${res.statusCode}: ${text.slice(0, 200)}`
        }
        if (ok) stats.applied++; else stats.failed++
      } catch (err) {
        stats.failed++
        stats.lastError = (err as Error).message
      }
      stats.adminMs.push(performance.now() - t0)
    }
  })()
  return { stop: async () => { stopped = true; await loop; return stats } }
}

function summarize (xs: readonly number[]): { p50?: number, p99?: number, max?: number } {
  if (xs.length === 0) return {}
  const s = [...xs].sort((a, b) => a - b)
  const at = (q: number): number => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!
  return { p50: round(at(0.5)), p99: round(at(0.99)), max: round(s[s.length - 1]) }
}

interface Phase {
  readonly latencyMs: Percentiles
  readonly sent: number
  readonly achievedRate: number
  /** Client errors (socket, timeout), non-2xx answers and requests never answered. */
  readonly errors: number
  readonly loopDelay: LoopDelay
  /** Gateway CPU over the phase (paced start to end), percent of one core. */
  readonly gatewayCpuPercent?: number
}

interface RunResult {
  readonly policy: PolicyName
  readonly round: number
  readonly baseline: Phase
  readonly churn: Phase & { readonly changes: number, readonly failedChanges: number, readonly adminMs: ReturnType<typeof summarize>, readonly lastError?: string }
  readonly machineBusyPercentBefore?: number
}

/** One paced phase; `during` runs from the client's paced start to its end (the churn). */
async function phase (url: string, adminUrl: string, gw: Child, warmupS: number, durationS: number, during?: () => { stop: () => Promise<ChurnStats> }): Promise<{ phase: Phase, churnStats?: ChurnStats }> {
  let cpuFrom: { t: number, us: number | undefined } | undefined
  let framed: Promise<unknown> | undefined
  let running: { stop: () => Promise<ChurnStats> } | undefined
  const result: PacedResult = await pacedLoad({
    url,
    rate: o.rate,
    durationS,
    warmupS,
    connections: o.connections,
    varyHeader: { name: HASH_HEADER, count: o.keys },
    onPacedStart: () => {
      running = during?.()
      // Frame the measured window: the scrape resets the gateway's loop-delay histogram.
      framed = sleep(warmupS * 1000).then(async () => {
        cpuFrom = { t: performance.now(), us: cpuMicros(gw.pid) }
        await scrapeLoopDelay(adminUrl)
      })
    }
  })
  const churnStats = await running?.stop()
  await framed
  const cpuTo = cpuMicros(gw.pid)
  const loopDelay = await scrapeLoopDelay(adminUrl)
  const elapsedMs = cpuFrom === undefined ? undefined : performance.now() - cpuFrom.t
  return {
    phase: {
      latencyMs: result.latencyMs,
      sent: result.sent,
      achievedRate: result.achievedRate,
      errors: result.errors + result.non2xx + result.lost,
      loopDelay,
      ...(cpuFrom?.us !== undefined && cpuTo !== undefined && elapsedMs !== undefined ? { gatewayCpuPercent: round(((cpuTo - cpuFrom.us) / 1000) / elapsedMs * 100, 1) } : {})
    },
    ...(churnStats !== undefined ? { churnStats } : {})
  }
}

/**
 * Opens the gateway's connections before anything is measured: every key once (hash
 * policies) and every endpoint at least twice (round robin), closed loop. Otherwise the
 * baseline would time the first connection to each of the 1,000 endpoints.
 */
async function warmGateway (url: string): Promise<number> {
  const target = new URL(url)
  const pool = new Pool(target.origin, { connections: 32 })
  const total = Math.max(o.keys, 2 * o.endpoints)
  let next = 0
  let failed = 0
  try {
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (next < total) {
        const i = next++
        const res = await pool.request({ method: 'GET', path: target.pathname, headers: { [HASH_HEADER]: `k${i % o.keys}` }, headersTimeout: 10_000, bodyTimeout: 10_000 })
        await res.body.dump()
        if (res.statusCode !== 200) failed++
      }
    }))
  } finally {
    await pool.destroy()
  }
  return failed
}

let workDir: string | undefined

async function runOne (policy: PolicyName, roundNo: number, upstreamPort: number): Promise<RunResult> {
  const [httpPort, adminPort] = await freePorts(2) as [number, number]
  const configFile = path.join(workDir!, `gateway-${policy}-${roundNo}.yaml`)
  writeFileSync(configFile, gatewayConfigYaml(policy, upstreamPort, httpPort, adminPort))
  const gw = spawnChild(`gateway ${policy}`, process.execPath, {
    args: [...o.gatewayNodeArgs, CLI, 'start', '--config', configFile],
    logFile: path.join(workDir!, `gateway-${policy}-${roundNo}.log`),
    proxy: true
  })
  const adminUrl = `http://127.0.0.1:${adminPort}`
  try {
    await waitForHttp(`${adminUrl}/ready`, gw, 30_000)
    const before = await inRotation(adminUrl)
    if (before !== o.endpoints) throw new Error(`${before} endpoints in rotation, expected ${o.endpoints}`)
    const machineBusyPercentBefore = await systemBusyPercent(1000)
    const url = `http://127.0.0.1:${httpPort}/item`
    const warmFailures = await warmGateway(url)
    if (warmFailures > 0) throw new Error(`${warmFailures} requests of the warm-up failed`)
    const base = await phase(url, adminUrl, gw, o.warmupS, o.baselineS)
    // The same warm-up as the baseline (the client is a fresh process); the changes start with it.
    const during = await phase(url, adminUrl, gw, o.warmupS, o.churnS, () => churn(adminUrl, upstreamPort))
    const stats = during.churnStats!
    const after = await inRotation(adminUrl)
    if (after < o.endpoints || after > o.endpoints + 1) throw new Error(`${after} endpoints in rotation after the churn, expected ${o.endpoints} or ${o.endpoints + 1}`)
    if (!isRunning(gw)) throw new Error(`the gateway (pid ${gw.pid}) exited during the run`)
    return {
      policy,
      round: roundNo,
      baseline: base.phase,
      churn: { ...during.phase, changes: stats.applied, failedChanges: stats.failed, adminMs: summarize(stats.adminMs), ...(stats.lastError !== undefined ? { lastError: stats.lastError } : {}) },
      ...(machineBusyPercentBefore !== undefined ? { machineBusyPercentBefore: round(machineBusyPercentBefore, 0) } : {})
    }
  } finally {
    // SIGTERM: a --cpu-prof gateway writes its profile on a graceful exit.
    await stopChild(gw, 20_000)
  }
}

const f = (n: number | undefined, width = 6): string => (n === undefined ? '-' : n >= 100 ? n.toFixed(0) : n.toFixed(1)).padStart(width)

function table (results: readonly RunResult[]): string {
  const lines = [
    `${'policy'.padEnd(12)} rnd | ${'baseline ms: p50    p99    max'.padStart(31)} err | ${'churn ms: p50    p99    max'.padStart(28)} err | changes admin p99 | loop delay max ms base/churn | gw cpu % base/churn`,
    '-'.repeat(150)
  ]
  for (const r of results) {
    const b = r.baseline
    const c = r.churn
    lines.push(`${r.policy.padEnd(12)} ${String(r.round).padStart(3)} | ${' '.repeat(11)}${f(b.latencyMs.p50)} ${f(b.latencyMs.p99)} ${f(b.latencyMs.max)} ${String(b.errors).padStart(4)} | ${' '.repeat(8)}${f(c.latencyMs.p50)} ${f(c.latencyMs.p99)} ${f(c.latencyMs.max)} ${String(c.errors).padStart(4)} | ${String(c.changes).padStart(7)} ${f(c.adminMs.p99, 9)} | ${f(b.loopDelay.maxMs, 14)} / ${f(c.loopDelay.maxMs)} | ${f(b.gatewayCpuPercent, 10)} / ${f(c.gatewayCpuPercent)}`)
  }
  return lines.join('\n')
}

async function main (): Promise<void> {
  workDir = mkdtempSync(path.join(tmpdir(), 'fastmesh-churn-'))
  const [upstreamPort] = await freePorts(1) as [number]
  const addresses = o.endpoints + o.extra
  const upstream = spawnChild('upstream', process.execPath, {
    args: [path.join(HERE, 'upstream.js'), '--port', String(upstreamPort), '--loopback-count', String(addresses)],
    capture: true
  })
  const deadline = Date.now() + 30_000
  while (!upstream.stdout().includes('upstream listening')) {
    if (!isRunning(upstream)) throw new Error(`the upstream exited: ${upstream.stderr().trim()}`)
    if (Date.now() > deadline) throw new Error('the upstream did not listen within 30 s')
    await sleep(100)
  }
  console.log(`upstream (pid ${upstream.pid}) on ${addresses} loopback addresses, port ${upstreamPort}; ${o.endpoints} endpoints, ${o.rate} req/s, baseline ${o.baselineS} s, churn ${o.churnS} s (a change every ${o.intervalMinMs}-${o.intervalMaxMs} ms)`)

  const results: RunResult[] = []
  for (let r = 1; r <= o.rounds; r++) {
    for (const policy of o.policies) {
      console.log(`round ${r}: ${policy} ...`)
      const res = await runOne(policy, r, upstreamPort)
      results.push(res)
      console.log(table([res]).split('\n').pop())
    }
  }
  await stopChild(upstream)

  console.log(`\n${table(results)}`)
  console.log('\nLatency: the paced client\'s, send to end of response. err: socket errors, timeouts, non-2xx and unanswered.')
  console.log('admin p99: POST/DELETE of one endpoint, ms (the balancer update runs inside it). Loop delay: nodejs_eventloop_lag_max_seconds over the phase.')
  mkdirSync(path.dirname(o.out), { recursive: true })
  writeFileSync(o.out, JSON.stringify({
    bench: 'endpoint-churn',
    at: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, kernel: release(), node: process.version },
    options: { ...o, out: undefined },
    results
  }, null, 2) + '\n')
  console.log(`\nwrote ${path.relative(process.cwd(), o.out)}`)
  if (o.keepLogs) console.log(`gateway configs and logs kept in ${workDir}`)
  else rmSync(workDir, { recursive: true, force: true })
}

runBenchMain('endpoint-churn', main, () => workDir)
