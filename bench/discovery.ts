// Discovery at scale: a fastmesh gateway watching 1,000 Consul services (10 instances each)
// on one real `consul agent -dev`, on loopback.
//
//   npm run bench:discovery        (= npm run build && node dist/bench/discovery.js)
//   node dist/bench/discovery.js --profiles raised --trials 5     (a quicker look)
//
// For each Consul limit profile (`default`: the agent's own limits, i.e. at most 200
// concurrent HTTP connections per client IP; `raised`: http_max_conns_per_client = 4096):
//   1. start a dev agent, register services × instances through PUT /v1/catalog/register
//      (bounded concurrency), timed;
//   2. (first profile) start an idle gateway with no routes, read its RSS, stop it;
//   3. start the gateway (a child process, `fastmesh start --config`) with one route per
//      service; time until admin GET /services shows every service with all instances
//      healthy; then its RSS, its connections to the agent and its watch errors;
//   4. steady paced traffic on one route (baseline), then again while `trials` new
//      instances (real upstreams with their own answer) are registered for random
//      services: time until the gateway routes to the new instance, and until the admin
//      API lists it.
// Prints a table, then one PASS/FAIL line per target (each profile: converged, change →
// routed p99 < 1 s, no timeouts, ≤ 16 agent connections when following the catalog, no
// errors; with one query per service, seen by the admin API p99 ≤ 100 ms; RSS per watched service
// ≤ 30 KiB), exits 1 on a FAIL, and writes bench/results/discovery-latest.json. Every child (agents,
// gateways, upstreams) is stopped by PID at the end, on error and on SIGINT/SIGTERM.
import os from 'node:os'
import path from 'node:path'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { Pool } from 'undici'
import { findConsul, startConsul, type ConsulAgent } from '../test/helpers/consul.js'
import { freePorts } from '../test/helpers/ports.js'
import { bounded, ConsulCatalog, type BulkResult, type Instance } from './discovery/consul-catalog.js'
import { gatewayConfigYaml, requestFor, type Routing } from './discovery/gateway-config.js'
import type { LoadParams, LoadResult } from './discovery/load-worker.js'
import { cpuMs, isRunning, killAllChildrenNow, rssMiB, socketsTo, spawnChild, stopAllChildren, stopChild, type Child } from './discovery/processes.js'
import { nowMs, round, seededRandom, sleep, summarize, type Summary } from './discovery/stats.js'

const HERE = path.dirname(fileURLToPath(import.meta.url)) // dist/bench
const ROOT = path.resolve(HERE, '..', '..')
const CLI = path.resolve(HERE, '..', 'src', 'cli', 'index.js')

const { values: opt } = parseArgs({
  options: {
    services: { type: 'string', default: '1000' },
    instances: { type: 'string', default: '10' },
    nodes: { type: 'string', default: '100' },
    trials: { type: 'string', default: '20' },
    profiles: { type: 'string', default: 'raised,default' },
    concurrency: { type: 'string', default: '32' },
    rate: { type: 'string', default: '200' },
    baseline: { type: 'string', default: '30' },
    'converge-timeout': { type: 'string', default: '90' },
    'converge-stall': { type: 'string', default: '20' },
    'trial-timeout': { type: 'string', default: '35' },
    'trial-gap': { type: 'string', default: '1000' },
    seed: { type: 'string', default: '42' },
    'source-address': { type: 'string', default: '127.0.0.2' },
    routing: { type: 'string', default: 'auto' },
    'poll-interval': { type: 'string', default: '1000' },
    'gateway-node-args': { type: 'string', default: '' },
    'heap-snapshots': { type: 'string', default: '' },
    out: { type: 'string', default: path.join(ROOT, 'bench', 'results', 'discovery-latest.json') },
    help: { type: 'boolean', short: 'h', default: false }
  }
})

if (opt.help) {
  process.stdout.write(`Usage: npm run bench:discovery [-- options]   (node dist/bench/discovery.js [options])

A fastmesh gateway watching many Consul services on a real \`consul agent -dev\` (loopback):
registration time, convergence, RSS per watched service, agent connections, and how fast a
new instance is routed to, under each Consul limit profile. Ends with PASS/FAIL lines:
per profile, every service converged, change → routed p99 < 1 s with no timeouts (with one
query per service, change → seen by the admin API p99 ≤ 100 ms), at most 16 connections to
the agent when the gateway follows the catalog, no errors in steady traffic; RSS per watched
service ≤ 30 KiB.
Exits 1 when a line fails.

  --services N            services to register (default 1000)
  --instances N           instances per service (default 10)
  --nodes N               Consul nodes the instances spread over (default 100)
  --profiles LIST         Consul limit profiles, comma-separated: raised (http_max_conns_per_client
                          4096), default (the agent's own 200) (default raised,default)
  --trials N              new instances registered under traffic, each timed (default 20)
  --rate N                paced requests per second of the steady traffic (default 200)
  --baseline S            seconds of traffic before the trials (default 30)
  --concurrency N         registrations in flight (default 32)
  --converge-timeout S    give up waiting for every service to be healthy (default 90)
  --converge-stall S      ... or once nothing moved this long while watches fail (default 20)
  --trial-timeout S       one trial's limit (default 35)
  --trial-gap MS          pause between trials (default 1000)
  --seed N                random seed of the trials (default 42)
  --source-address A      loopback address the load comes from (default 127.0.0.2)
  --routing auto|routes|host  an edge with one route per service, or a node gateway
                          routing by Host header; auto: routes if the edge starts (default auto)
  --poll-interval MS      admin polling while converging (default 1000)
  --gateway-node-args S   extra node flags for the gateway process (e.g. --cpu-prof)
  --heap-snapshots DIR    after reading RSS, a heap snapshot of the idle and of each loaded
                          gateway into DIR (compare: node dist/bench/heap-summary.js LOADED IDLE
                          --per SERVICES)
  --out FILE              results JSON (default bench/results/discovery-latest.json)
  -h, --help              this text

Every process it starts (agents, gateways, upstreams) is stopped by PID at the end.
`)
  process.exit(0)
}

const SERVICES = Number(opt.services)
const INSTANCES = Number(opt.instances)
const NODES = Number(opt.nodes)
const TRIALS = Number(opt.trials)
const CONCURRENCY = Number(opt.concurrency)
const RATE = Number(opt.rate)
const BASELINE_MS = Number(opt.baseline) * 1000
const CONVERGE_TIMEOUT_MS = Number(opt['converge-timeout']) * 1000
/** Stop waiting for convergence when nothing moved for this long while watches fail (longer than the 30 s backoff cap). */
const CONVERGE_STALL_MS = Number(opt['converge-stall']) * 1000
const TRIAL_TIMEOUT_MS = Number(opt['trial-timeout']) * 1000
const TRIAL_GAP_MS = Number(opt['trial-gap'])
const SEED = Number(opt.seed)
const POLL_INTERVAL_MS = Number(opt['poll-interval'])
const HEAP_SNAPSHOTS = opt['heap-snapshots'] !== undefined && opt['heap-snapshots'] !== '' ? path.resolve(opt['heap-snapshots']) : undefined
if (HEAP_SNAPSHOTS !== undefined) mkdirSync(HEAP_SNAPSHOTS, { recursive: true })
const GATEWAY_NODE_ARGS = [
  ...(opt['gateway-node-args'] ?? '').split(' ').filter((a) => a !== ''),
  ...(HEAP_SNAPSHOTS !== undefined ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${HEAP_SNAPSHOTS}`] : [])
]
const SOURCE_ADDRESS = opt['source-address'] === '' ? undefined : opt['source-address']
/** Hard stop for the whole run: clean up and exit whatever is happening. */
const WATCHDOG_MS = 420_000

// The gateway is told each agent's limit through discovery.consul.maxConnections: under the
// default one it must follow the whole catalog; with the raised one, one query per service fits.
const PROFILES: Record<string, { description: string, args: string[], maxConnsPerClient: number, gatewayMaxConnections?: number }> = {
  default: { description: 'agent defaults (limits.http_max_conns_per_client = 200)', args: [], maxConnsPerClient: 200 },
  raised: { description: 'limits.http_max_conns_per_client = 4096', args: ['-hcl', 'limits { http_max_conns_per_client = 4096 }'], maxConnsPerClient: 4096, gatewayMaxConnections: 2048 }
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0')
const serviceName = (i: number): string => `svc-${pad(i, 4)}`
/** The route with steady traffic is the last one tried (the router scans routes in order). */
const STEADY = SERVICES - 1
const CHECK = SERVICES - 2
const DEAD_PORT_BASE = 20_000

// --- lifecycle --------------------------------------------------------------------------

const agents = new Set<ConsulAgent>()
/** What the run has found so far: written after each profile, and on failure or interruption. */
const report: Record<string, unknown> = { benchmark: 'discovery-at-scale', status: 'running' }
const results: Array<Record<string, unknown>> = []
let idle: { rssMiB?: number | null } | undefined

function writeReport (status: string): void {
  try {
    for (const r of results) {
      const loaded = (r.loadedGateway as { rssMiB?: number | null } | undefined)?.rssMiB
      if (typeof loaded === 'number' && typeof idle?.rssMiB === 'number') r.memoryPerServiceKiB = round(((loaded - idle.rssMiB) * 1024) / SERVICES, 1)
    }
    report.status = status
    report.machine = { ...(report.machine as Record<string, unknown> | undefined), loadavgAtEnd: os.loadavg().map((v) => round(v, 2)) }
    report.idleGateway = idle ?? null
    report.profiles = results
    mkdirSync(path.dirname(opt.out!), { recursive: true })
    writeFileSync(opt.out!, JSON.stringify(report, null, 2) + '\n')
  } catch (err) {
    process.stderr.write(`could not write ${opt.out}: ${(err as Error).message}\n`)
  }
}
const workers = new Set<Worker>()
let shuttingDown = false

async function cleanup (): Promise<void> {
  await Promise.all([...workers].map(async (w) => { await w.terminate() }))
  await stopAllChildren()
  await Promise.all([...agents].map(async (a) => { await a.stop() }))
}

async function shutdown (why: string, code: number): Promise<void> {
  if (shuttingDown) return
  shuttingDown = true
  process.stderr.write(`\n${why}: stopping every child process by PID\n`)
  report.error = why
  writeReport('interrupted')
  await Promise.race([cleanup(), sleep(20_000)])
  process.exit(code)
}

process.on('SIGINT', () => { void shutdown('SIGINT', 130) })
process.on('SIGTERM', () => { void shutdown('SIGTERM', 143) })
process.on('exit', killAllChildrenNow)
const watchdog = setTimeout(() => { void shutdown(`watchdog: still running after ${WATCHDOG_MS / 1000} s`, 3) }, WATCHDOG_MS)
watchdog.unref()

function log (msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)}] ${msg}\n`)
}

// --- HTTP to the gateway ----------------------------------------------------------------

async function getText (pool: Pool, p: string, timeoutMs = 10_000, headers: Record<string, string> = {}): Promise<{ status: number, body: string }> {
  const res = await pool.request({ method: 'GET', path: p, headers, headersTimeout: timeoutMs, bodyTimeout: timeoutMs })
  return { status: res.statusCode, body: await res.body.text() }
}

interface AdminService {
  name: string
  stale: boolean
  error?: string
  healthy: number
  endpoints: Array<{ port: number }>
}

async function waitReady (admin: Pool, child: Child, timeoutMs: number): Promise<number> {
  const t0 = nowMs()
  while (nowMs() - t0 < timeoutMs) {
    if (!isRunning(child)) throw new Error(`${child.name} exited before it was ready`)
    try {
      if ((await getText(admin, '/ready', 2_000)).status === 200) return nowMs() - t0
    } catch { /* not listening yet */ }
    await sleep(50)
  }
  throw new Error(`${child.name} was not ready within ${timeoutMs} ms`)
}

async function medianRss (pid: number, samples = 5, gapMs = 400): Promise<number | null> {
  const v: number[] = []
  for (let i = 0; i < samples; i++) {
    const r = rssMiB(pid)
    if (r !== undefined) v.push(r)
    if (i < samples - 1) await sleep(gapMs)
  }
  v.sort((a, b) => a - b)
  return v.length === 0 ? null : round(v[Math.floor(v.length / 2)]!, 1)
}

interface GatewayHandle {
  routing: Routing
  child: Child
  http: Pool
  admin: Pool
  httpPort: number
  adminPort: number
  logFile: string
}

async function startGateway (label: string, routing: Routing, consulAddress: string, services: readonly string[], dir: string, maxConnections?: number): Promise<GatewayHandle> {
  const [httpPort, adminPort] = await freePorts(2)
  const configFile = path.join(dir, `${label}.yaml`)
  writeFileSync(configFile, gatewayConfigYaml({ routing, consulAddress, trafficPort: httpPort, adminPort, services, ...(maxConnections !== undefined ? { maxConnections } : {}) }))
  const env = { ...process.env }
  for (const k of Object.keys(env)) if (k.startsWith('FASTMESH_') || k.startsWith('CONSUL_HTTP_')) delete env[k]
  const logFile = path.join(dir, `${label}.log`)
  const child = spawnChild(`gateway ${label}`, process.execPath, [...GATEWAY_NODE_ARGS, CLI, 'start', '--config', configFile], { logFile, env })
  return {
    routing,
    child,
    http: new Pool(`http://127.0.0.1:${httpPort}`, { connections: 16, keepAliveTimeout: 30_000 }),
    admin: new Pool(`http://127.0.0.1:${adminPort}`, { connections: 4, keepAliveTimeout: 30_000 }),
    httpPort,
    adminPort,
    logFile
  }
}

async function stopGateway (g: GatewayHandle): Promise<void> {
  await Promise.all([g.http.close().catch(() => {}), g.admin.close().catch(() => {})])
  await stopChild(g.child)
}

/** What the gateway logged at warn and above: counts by message, errors by text. */
function summarizeGatewayLog (file: string): { lines: number, byMessage: Record<string, number>, watchErrors: Record<string, number>, sample: string[] } {
  let text = ''
  try { text = readFileSync(file, 'utf8') } catch { /* no log */ }
  const byMessage: Record<string, number> = {}
  const watchErrors: Record<string, number> = {}
  const sample: string[] = []
  let lines = 0
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    lines++
    let rec: { msg?: unknown, err?: unknown }
    try { rec = JSON.parse(line) as { msg?: unknown, err?: unknown } } catch { rec = { msg: line.slice(0, 200) } }
    const msg = typeof rec.msg === 'string' ? rec.msg : '?'
    byMessage[msg] = (byMessage[msg] ?? 0) + 1
    if (typeof rec.err === 'string') watchErrors[rec.err] = (watchErrors[rec.err] ?? 0) + 1
    if (sample.length < 3) sample.push(line.slice(0, 400))
  }
  return { lines, byMessage, watchErrors, sample }
}

// --- per-second samples of a process --------------------------------------------------------

interface ProcSample { t: number, rssMiB: number | null, cpuMs: number | null, loadavg1m: number | null }

/** Samples `pid`'s RSS and CPU time used in the last second, every second, until stopped. */
function startSampler (pid: number): () => ProcSample[] {
  const samples: ProcSample[] = []
  const t0 = nowMs()
  let lastCpu = cpuMs(pid)
  const timer = setInterval(() => {
    const cpu = cpuMs(pid)
    samples.push({
      t: Math.round((nowMs() - t0) / 100) / 10,
      rssMiB: round(rssMiB(pid), 1),
      cpuMs: cpu !== undefined && lastCpu !== undefined ? cpu - lastCpu : null,
      loadavg1m: round(os.loadavg()[0], 2)
    })
    lastCpu = cpu
  }, 1000)
  return () => { clearInterval(timer); return samples }
}

// --- steady traffic ----------------------------------------------------------------------

interface LoadRun { stop: () => void, result: Promise<LoadResult> }

function startLoad (params: LoadParams): LoadRun {
  const worker = new Worker(new URL('./discovery/load-worker.js', import.meta.url), { workerData: params })
  workers.add(worker)
  const result = new Promise<LoadResult>((resolve, reject) => {
    worker.once('message', (m: LoadResult) => { resolve(m) })
    worker.once('error', reject)
    worker.once('exit', (code) => { reject(new Error(`load worker exited (${code}) without a result`)) })
  })
  void result.finally(() => { workers.delete(worker); void worker.terminate() }).catch(() => {})
  return { stop: () => { worker.postMessage('stop') }, result }
}

interface LoadFigures {
  sent: number
  ok: number
  errors: number
  errorKinds: Record<string, number>
  achievedRate: number | null
  latencyMs: Summary
  correctedLatencyMs: Summary
  byUpstream: Record<string, number>
  perSecondMaxMs: number[]
}

function loadFigures (r: LoadResult): LoadFigures {
  return {
    sent: r.sent,
    ok: r.ok,
    errors: r.errors,
    errorKinds: r.errorKinds,
    achievedRate: round(r.sent / (r.durationMs / 1000), 1),
    latencyMs: summarize(r.latencyMs),
    correctedLatencyMs: summarize(r.correctedLatencyMs),
    byUpstream: r.byBody,
    perSecondMaxMs: r.perSecondMaxMs
  }
}

// --- one profile --------------------------------------------------------------------------

interface ConvergeSample {
  tMs: number
  complete: number
  completeFresh: number
  withEndpoints: number
  stale: number
  withError: number
  socketsToAgent: Record<string, number> | undefined
}

interface TrialResult {
  trial: number
  service: string
  putMs: number
  routeMs: number | null
  adminMs: number | null
  routeRequests: number
}

async function runProfile (name: string, first: boolean, routing: Routing, upstreamPorts: Record<string, number>, dir: string): Promise<Record<string, unknown>> {
  const profile = PROFILES[name]
  if (profile === undefined) throw new Error(`unknown profile "${name}" (known: ${Object.keys(PROFILES).join(', ')})`)
  log(`profile ${name}: ${profile.description}`)
  const out: Record<string, unknown> = { profile: name, description: profile.description, routing }

  const agent = await startConsul({ args: profile.args, readyTimeoutMs: 60_000 })
  agents.add(agent)
  const agentPort = Number(agent.httpAddr.split(':')[1])
  const catalog = new ConsulCatalog(agent.url, { connections: CONCURRENCY, ...(SOURCE_ADDRESS !== undefined ? { localAddress: SOURCE_ADDRESS } : {}) })
  try {
    const self = await catalog.call<{ DebugConfig?: { HTTPMaxConnsPerClient?: number } }>('GET', '/v1/agent/self')
    out.agent = { pid: agent.pid, address: agent.httpAddr, httpMaxConnsPerClient: self.DebugConfig?.HTTPMaxConnsPerClient ?? null }
    log(`agent pid ${agent.pid} on ${agent.httpAddr}, http_max_conns_per_client = ${self.DebugConfig?.HTTPMaxConnsPerClient ?? '?'}`)

    // Registration method probe (first profile only): the agent API against the catalog API.
    if (first) {
      const n = 100
      const ids = Array.from({ length: n }, (_, i) => i)
      const agentApi = await bounded(ids, CONCURRENCY, async (i) => {
        await catalog.call('PUT', '/v1/agent/service/register', { Name: 'regprobe-agent', ID: `regprobe-agent-${i}`, Address: '127.0.0.1', Port: 1 + i, Check: { CheckID: `regprobe-agent-${i}`, TTL: '10m', Status: 'passing' } })
      })
      const catalogApi = await bounded(ids, CONCURRENCY, async (i) => {
        await catalog.register({ node: `regprobe-node-${i % 10}`, service: 'regprobe-catalog', id: `regprobe-catalog-${i}`, port: 1 + i })
      })
      await bounded(ids, CONCURRENCY, async (i) => { await catalog.call('PUT', `/v1/agent/service/deregister/regprobe-agent-${i}`) })
      await bounded(ids, CONCURRENCY, async (i) => { await catalog.deregister(`regprobe-node-${i % 10}`, `regprobe-catalog-${i}`) })
      for (let i = 0; i < 10; i++) await catalog.call('PUT', '/v1/catalog/deregister', { Node: `regprobe-node-${i}` }).catch(() => {})
      const rate = (r: BulkResult): number | null => round(r.done / (r.ms / 1000), 0)
      out.registrationMethodProbe = {
        instances: n,
        concurrency: CONCURRENCY,
        agentApi: { ms: round(agentApi.ms, 0), perSecond: rate(agentApi), failed: agentApi.failed },
        catalogApi: { ms: round(catalogApi.ms, 0), perSecond: rate(catalogApi), failed: catalogApi.failed }
      }
      log(`registration probe (${n} each): agent API ${rate(agentApi)}/s, catalog API ${rate(catalogApi)}/s`)
    }

    // 1. Registration.
    const instances: Instance[] = []
    for (let s = 0; s < SERVICES; s++) {
      for (let j = 0; j < INSTANCES; j++) {
        const k = s * INSTANCES + j
        const port = s === STEADY || s === CHECK
          ? upstreamPorts[j % 2 === 0 ? 'upstream-a' : 'upstream-b']!
          : DEAD_PORT_BASE + k
        instances.push({ node: `bench-node-${pad(k % NODES, 3)}`, service: serviceName(s), id: `${serviceName(s)}-${j}`, port })
      }
    }
    log(`registering ${SERVICES} services × ${INSTANCES} instances on ${NODES} nodes (catalog API, ${CONCURRENCY} in flight)`)
    const consulCpu0 = cpuMs(agent.pid)
    const reg = await bounded(instances, CONCURRENCY, async (inst) => { await catalog.register(inst) })
    const consulCpu1 = cpuMs(agent.pid)
    const catalogServices = await catalog.call<Record<string, unknown>>('GET', '/v1/catalog/services')
    const registeredServices = Object.keys(catalogServices).filter((s) => s.startsWith('svc-')).length
    const probe = await catalog.call<unknown[]>('GET', `/v1/health/service/${serviceName(Math.floor(SERVICES / 2))}?passing=true`)
    out.registration = {
      api: 'PUT /v1/catalog/register',
      instances: instances.length,
      concurrency: CONCURRENCY,
      ms: round(reg.ms, 0),
      perSecond: round(reg.done / (reg.ms / 1000), 0),
      retries: reg.retries,
      failed: reg.failed,
      ...(reg.firstError !== undefined ? { firstError: reg.firstError } : {}),
      servicesInCatalog: registeredServices,
      passingInstancesOfOneService: probe.length,
      consulCpuMs: consulCpu0 !== undefined && consulCpu1 !== undefined ? consulCpu1 - consulCpu0 : null
    }
    log(`registered ${reg.done} instances in ${round(reg.ms / 1000, 2)} s (${round(reg.done / (reg.ms / 1000), 0)}/s), ${reg.failed} failed; catalog has ${registeredServices} svc-* services`)
    if (reg.failed > 0 || registeredServices !== SERVICES) throw new Error(`registration incomplete: ${reg.failed} failed (${reg.firstError ?? '-'}), ${registeredServices}/${SERVICES} services`)

    // 2. Idle gateway: same config, no routes.
    if (first) {
      log('idle gateway (no routes) for the memory baseline')
      const idle = await startGateway(`${name}-idle`, routing, agent.httpAddr, [], dir, profile.gatewayMaxConnections)
      try {
        const readyMs = await waitReady(idle.admin, idle.child, 30_000)
        await sleep(3_000)
        const rss = await medianRss(idle.child.pid)
        const heap = await heapFigures(idle.admin)
        out.idleGateway = { routing, pid: idle.child.pid, readyMs: round(readyMs, 0), rssMiB: rss, heap }
        log(`idle gateway pid ${idle.child.pid}: ready in ${round(readyMs, 0)} ms, RSS ${rss} MiB; ${describeHeap(heap)}`)
        await heapSnapshot(idle.child.pid, 'idle')
      } finally {
        await stopGateway(idle)
      }
    }

    // 3. The loaded gateway: time to all services having all endpoints.
    const services = Array.from({ length: SERVICES }, (_, i) => serviceName(i))
    log(routing === 'routes' ? `gateway with ${SERVICES} routes` : `node gateway, services by Host header (${SERVICES} first requests start the watches)`)
    const t0 = nowMs()
    const gw = await startGateway(`${name}-loaded`, routing, agent.httpAddr, services, dir, profile.gatewayMaxConnections)
    const gwCpu0 = cpuMs(gw.child.pid) ?? 0
    const agentCpu0 = cpuMs(agent.pid) ?? 0
    try {
      await waitReady(gw.admin, gw.child, 60_000)
      const readyAt = nowMs() - t0
      log(`gateway pid ${gw.child.pid} ready after ${round(readyAt, 0)} ms; waiting for ${SERVICES} × ${INSTANCES} healthy endpoints`)
      // Host routing: a service is watched from the first request for it.
      let warmup: Record<string, unknown> | undefined
      const warming = routing !== 'host'
        ? Promise.resolve()
        : (async () => {
            // All at once, as an edge gateway starts every route's watch at boot. A node
            // gateway holds a service's first request until discovery answers (up to 5 s).
            const statuses: Record<string, number> = {}
            const pool = new Pool(`http://127.0.0.1:${gw.httpPort}`, { connections: services.length })
            const w = await bounded(services, services.length, async (svc) => {
              const r = requestFor(routing, svc)
              const res = await getText(pool, r.path, 30_000, r.headers)
              statuses[res.status] = (statuses[res.status] ?? 0) + 1
            }, 1)
            await pool.close()
            warmup = { requests: services.length, concurrency: services.length, ms: round(w.ms, 0), failed: w.failed, ...(w.firstError !== undefined ? { firstError: w.firstError } : {}), statuses, endedAtMs: round(nowMs() - t0, 0) }
            log(`first request to each service answered after ${round(w.ms, 0)} ms: ${JSON.stringify(statuses)}`)
          })()
      const timeline: ConvergeSample[] = []
      const milestones: Record<string, number | null> = { first: null, p10: null, p50: null, p90: null, all: null }
      let last: ConvergeSample | undefined
      let lastRecorded = -Infinity
      let pollMsMax = 0
      let progressAt = nowMs()
      let progressCount = -1
      let stalled = false
      while (nowMs() - t0 < CONVERGE_TIMEOUT_MS + readyAt) {
        if (!isRunning(gw.child)) throw new Error('gateway exited while converging')
        const p0 = nowMs()
        let list: AdminService[]
        try {
          const res = await getText(gw.admin, '/services', 20_000)
          list = (JSON.parse(res.body) as { services: AdminService[] }).services
        } catch (err) {
          log(`GET /services failed: ${(err as Error).message}`)
          await sleep(250)
          continue
        }
        pollMsMax = Math.max(pollMsMax, nowMs() - p0)
        const t = nowMs() - t0
        const complete = list.filter((s) => s.healthy === INSTANCES).length
        last = {
          tMs: round(t, 0)!,
          complete,
          completeFresh: list.filter((s) => s.healthy === INSTANCES && !s.stale).length,
          withEndpoints: list.filter((s) => s.endpoints.length > 0).length,
          stale: list.filter((s) => s.stale).length,
          withError: list.filter((s) => s.error !== undefined).length,
          socketsToAgent: socketsTo(gw.child.pid, agentPort)
        }
        if (complete > 0) milestones.first ??= round(t, 0)
        if (complete >= SERVICES * 0.1) milestones.p10 ??= round(t, 0)
        if (complete >= SERVICES * 0.5) milestones.p50 ??= round(t, 0)
        if (complete >= SERVICES * 0.9) milestones.p90 ??= round(t, 0)
        if (t - lastRecorded >= 1000) { timeline.push(last); lastRecorded = t }
        if (complete === SERVICES) { milestones.all = round(t, 0); break }
        if (complete !== progressCount) { progressCount = complete; progressAt = nowMs() }
        if (last.withError > 0 && nowMs() - progressAt > CONVERGE_STALL_MS) { stalled = true; break }
        await sleep(Math.max(0, POLL_INTERVAL_MS - (nowMs() - p0)))
      }
      await warming
      if (last !== undefined && timeline[timeline.length - 1] !== last) timeline.push(last)
      const gwCpu = (cpuMs(gw.child.pid) ?? 0) - gwCpu0
      const agentCpu = (cpuMs(agent.pid) ?? 0) - agentCpu0
      log(milestones.all !== null
        ? `all ${SERVICES} services complete after ${milestones.all} ms`
        : `NOT converged (${stalled ? `no progress for ${CONVERGE_STALL_MS / 1000} s while watches fail` : 'timeout'}) after ${round((nowMs() - t0) / 1000, 0)} s: ${last?.complete ?? 0}/${SERVICES} complete, ${last?.stale ?? 0} stale, ${last?.withError ?? 0} with a watch error; sockets to agent ${JSON.stringify(last?.socketsToAgent)}`)

      // Memory and connections once loaded; what one GET /services costs at this size.
      await sleep(3_000)
      const c0 = nowMs()
      const full = await getText(gw.admin, '/services', 20_000)
      const adminServicesCost = { ms: round(nowMs() - c0, 1), bytes: Buffer.byteLength(full.body) }
      const rss = await medianRss(gw.child.pid)
      const sockets = socketsTo(gw.child.pid, agentPort)
      const heap = await heapFigures(gw.admin)
      log(`loaded gateway ${describeHeap(heap)}`)
      // The gateway says when it moves from one query per service to the whole catalog.
      out.watchMode = readFileSync(gw.logFile, 'utf8').includes('following the whole Consul catalog') ? 'catalog' : 'service'
      // Another client on the gateway's own IP (127.0.0.1), as other local tools would be.
      let otherClient: string
      try {
        const p = new Pool(agent.url, { connections: 1 })
        const r = await getText(p, '/v1/status/leader', 5_000)
        await p.close()
        otherClient = `HTTP ${r.status}`
      } catch (err) {
        otherClient = `failed: ${(err as { code?: string }).code ?? (err as Error).message}`
      }
      log(`loaded gateway RSS ${rss} MiB; TCP connections to the agent ${JSON.stringify(sockets)}; another client from 127.0.0.1 → ${otherClient}`)
      out.convergence = {
        gatewayPid: gw.child.pid,
        readyMs: round(readyAt, 0),
        ...(warmup !== undefined ? { firstRequests: warmup } : {}),
        milestonesMs: milestones,
        converged: milestones.all !== null,
        ...(milestones.all === null ? { gaveUp: stalled ? `no progress for ${CONVERGE_STALL_MS / 1000} s while watches failed` : `timeout ${CONVERGE_TIMEOUT_MS / 1000} s` } : {}),
        final: last,
        timeline,
        gatewayCpuMs: gwCpu,
        agentCpuMs: agentCpu,
        pollIntervalMs: POLL_INTERVAL_MS,
        adminServicesPollMaxMs: round(pollMsMax, 0),
        adminServicesOnce: adminServicesCost
      }
      await heapSnapshot(gw.child.pid, `${name}-loaded`)
      out.loadedGateway = { heap, rssMiB: rss, socketsToAgent: sockets, otherClientFrom127001: otherClient }

      // Traffic check on the second upstream-backed service.
      const bodies: Record<string, number> = {}
      const rq = requestFor(routing, serviceName(CHECK))
      await Promise.all(Array.from({ length: INSTANCES }, async () => {
        const r = await getText(gw.http, rq.path, 10_000, rq.headers).catch((err: unknown) => ({ status: 0, body: (err as Error).message }))
        const k = r.status === 200 ? r.body : r.status === 0 ? r.body : `HTTP ${r.status}`
        bodies[k] = (bodies[k] ?? 0) + 1
      }))
      out.trafficCheck = { service: serviceName(CHECK), answers: bodies }
      log(`traffic check ${serviceName(CHECK)}: ${JSON.stringify(bodies)}`)

      // 4a. Baseline steady traffic.
      const steady = requestFor(routing, serviceName(STEADY))
      const loadParams: LoadParams = { origin: `http://127.0.0.1:${gw.httpPort}`, path: steady.path, headers: steady.headers, rate: RATE, connections: 8, maxDurationMs: BASELINE_MS + 1_000, warmupMs: 1_000, expectBodyPrefix: 'upstream-' }
      log(`baseline: ${RATE} req/s to ${serviceName(STEADY)} for ${BASELINE_MS / 1000} s`)
      const load1 = (): number | null => round(os.loadavg()[0], 2)
      const loadavg: Record<string, number | null> = { baselineStart: load1() }
      const sampleBaseline = startSampler(gw.child.pid)
      const baseline = loadFigures(await startLoad(loadParams).result)
      const baselineGateway = sampleBaseline()
      loadavg.baselineEnd = load1()
      log(`baseline: ${baseline.ok}/${baseline.sent} ok, p50 ${baseline.latencyMs.p50} ms, p99 ${baseline.latencyMs.p99} ms, max ${baseline.latencyMs.max} ms`)

      // 4b. Change trials with the same steady traffic running.
      const random = seededRandom(SEED)
      const picked = new Set<number>()
      while (picked.size < TRIALS && picked.size < SERVICES - 2) {
        const s = Math.floor(random() * (SERVICES - 2))
        picked.add(s)
      }
      const trialServices = [...picked]
      log(`${TRIALS} change trials, one every ${TRIAL_GAP_MS} ms (each up to ${TRIAL_TIMEOUT_MS / 1000} s), steady traffic running`)
      const sampleTrials = startSampler(gw.child.pid)
      const during = startLoad({ ...loadParams, maxDurationMs: TRIALS * TRIAL_GAP_MS + TRIAL_TIMEOUT_MS + 30_000 })
      const phase0 = nowMs() + 1_000
      const trialNode = (s: number): string => `bench-node-${pad((s * INSTANCES) % NODES, 3)}`
      const trials = await Promise.all(trialServices.map(async (s, k): Promise<TrialResult> => {
        await sleep(Math.max(0, phase0 + k * TRIAL_GAP_MS - nowMs()))
        return await runTrial(gw, catalog, k, s, trialNode(s), upstreamPorts[`trial-${pad(k, 2)}`]!)
      }))
      during.stop()
      const duringFigures = loadFigures(await during.result)
      const trialsGateway = sampleTrials()
      loadavg.trialsEnd = load1()
      await bounded(trials, 8, async (t) => { await catalog.deregister(trialNode(trialServices[t.trial]!), `${t.service}-trial-${t.trial}`) })
      const routeOk = trials.filter((t) => t.routeMs !== null).map((t) => t.routeMs!)
      const adminOk = trials.filter((t) => t.adminMs !== null).map((t) => t.adminMs!)
      out.changePropagation = {
        count: TRIALS,
        pollIntervalMs: '5 for the first 2 s of a trial, then 250',
        timeoutMs: TRIAL_TIMEOUT_MS,
        routedToNewInstanceMs: summarize(routeOk),
        routedTimeouts: trials.length - routeOk.length,
        visibleInAdminMs: summarize(adminOk),
        adminTimeouts: trials.length - adminOk.length,
        catalogPutMs: summarize(trials.map((t) => t.putMs)),
        perTrial: trials.map((t) => ({ ...t, putMs: round(t.putMs, 1), routeMs: round(t.routeMs, 1), adminMs: round(t.adminMs, 1) }))
      }
      out.steadyTraffic = { service: serviceName(STEADY), request: steady, rate: RATE, connections: 8, baseline, duringChanges: duringFigures, machineLoadavg1m: loadavg, gatewayPerSecond: { baseline: baselineGateway, duringChanges: trialsGateway } }
      log(`changes: routed p50 ${summarize(routeOk).p50} ms, p99 ${summarize(routeOk).p99} ms, max ${summarize(routeOk).max} ms, ${trials.length - routeOk.length} timed out; steady traffic during changes: ${duringFigures.errors} errors, p99 ${duringFigures.latencyMs.p99} ms`)
      out.rssAfterTrialsMiB = round(rssMiB(gw.child.pid), 1)
    } finally {
      await stopGateway(gw)
      out.gatewayLog = { file: gw.logFile, ...summarizeGatewayLog(gw.logFile) }
    }
  } finally {
    await catalog.close().catch(() => {})
    await agent.stop()
    agents.delete(agent)
  }
  return out
}

/**
 * Where a gateway's memory is, from its /metrics (prom-client's default metrics), in MiB: the
 * V8 heap used and committed, the young generation committed (it grows under allocation
 * churn, up to 3 × 16 MiB, and is not given back while idle), and external memory.
 */
async function heapFigures (admin: Pool): Promise<Record<string, number> | null> {
  try {
    const text = (await getText(admin, '/metrics', 10_000)).body
    const sum = (re: RegExp): number => {
      let total = 0
      for (const line of text.split('\n')) {
        const m = re.exec(line)
        if (m !== null) total += Number(m[1])
      }
      return Math.round(total / 2 ** 20 * 10) / 10
    }
    return {
      heapUsedMiB: sum(/^nodejs_heap_space_size_used_bytes\{[^}]*\} ([0-9.e+]+)$/),
      heapCommittedMiB: sum(/^nodejs_heap_space_size_total_bytes\{[^}]*\} ([0-9.e+]+)$/),
      newSpaceCommittedMiB: sum(/^nodejs_heap_space_size_total_bytes\{[^}]*space="new"[^}]*\} ([0-9.e+]+)$/),
      externalMiB: sum(/^nodejs_external_memory_bytes(?:\{[^}]*\})? ([0-9.e+]+)$/)
    }
  } catch {
    return null
  }
}

/** With --heap-snapshots: SIGUSR2 to the gateway, and the snapshot it writes renamed `<label>.heapsnapshot`. */
async function heapSnapshot (pid: number, label: string): Promise<void> {
  if (HEAP_SNAPSHOTS === undefined) return
  const mine = (): string[] => readdirSync(HEAP_SNAPSHOTS).filter((f) => f.includes(`.${pid}.`) && f.endsWith('.heapsnapshot'))
  const before = new Set(mine())
  process.kill(pid, 'SIGUSR2')
  for (let i = 0; i < 600; i++) {
    await sleep(100)
    const file = mine().find((f) => !before.has(f))
    // Written once the size stops changing.
    if (file !== undefined) {
      const full = path.join(HEAP_SNAPSHOTS, file)
      let size = -1
      while (size !== statSync(full).size) { size = statSync(full).size; await sleep(500) }
      renameSync(full, path.join(HEAP_SNAPSHOTS, `${label}.heapsnapshot`))
      log(`heap snapshot ${path.join(HEAP_SNAPSHOTS, `${label}.heapsnapshot`)}`)
      return
    }
  }
  log(`no heap snapshot from pid ${pid} within 60 s`)
}

function describeHeap (h: Record<string, number> | null): string {
  return h === null ? 'heap figures unavailable' : `heap used ${h.heapUsedMiB} MiB of ${h.heapCommittedMiB} committed (young generation ${h.newSpaceCommittedMiB}), external ${h.externalMiB} MiB`
}

/** Registers the trial instance, then polls the route and the admin API until both show it. */
async function runTrial (gw: GatewayHandle, catalog: ConsulCatalog, k: number, s: number, node: string, port: number): Promise<TrialResult> {
  const service = serviceName(s)
  const want = `trial-${pad(k, 2)}`
  const rq = requestFor(gw.routing, service)
  const t0 = nowMs()
  await catalog.register({ node, service, id: `${service}-trial-${k}`, port })
  const putMs = nowMs() - t0
  // Fine-grained for the first 2 s (where propagation normally lands), then gentler: a
  // trial that takes seconds must not turn the harness's probing into the load it measures.
  const interval = (): number => nowMs() - t0 < 2_000 ? 5 : 250
  let routeRequests = 0
  // Round robin over INSTANCES + 1 endpoints: a sweep of that many requests reaches each once.
  const route = (async (): Promise<number | null> => {
    while (nowMs() - t0 < TRIAL_TIMEOUT_MS) {
      const tick = nowMs()
      for (let i = 0; i <= INSTANCES; i++) {
        routeRequests++
        try {
          const r = await getText(gw.http, rq.path, 5_000, rq.headers)
          if (r.status === 200 && r.body === want) return nowMs() - t0
        } catch { /* counted as a miss */ }
      }
      await sleep(Math.max(0, tick + interval() - nowMs()))
    }
    return null
  })()
  const admin = (async (): Promise<number | null> => {
    while (nowMs() - t0 < TRIAL_TIMEOUT_MS) {
      const tick = nowMs()
      try {
        const r = await getText(gw.admin, `/services/${service}`, 5_000)
        if (r.status === 200 && (JSON.parse(r.body) as { endpoints: Array<{ port: number }> }).endpoints.some((e) => e.port === port)) return nowMs() - t0
      } catch { /* retry */ }
      await sleep(Math.max(0, tick + interval() - nowMs()))
    }
    return null
  })()
  const [routeMs, adminMs] = await Promise.all([route, admin])
  return { trial: k, service, putMs, routeMs, adminMs, routeRequests }
}

// --- can the gateway take one route per service? -------------------------------------------

interface RouteProbe {
  routes: number
  ok: boolean
  readyMs?: number | null
  exit?: number | string
  error?: string
}

/**
 * Starts an edge gateway with one route per service and sees whether it gets ready. Consul
 * is not needed for that: the address is a closed loopback port (the watches just fail).
 */
async function probeRoutes (services: readonly string[], dir: string): Promise<RouteProbe> {
  const gw = await startGateway('route-probe', 'routes', '127.0.0.1:1', services, dir)
  try {
    const readyMs = await waitReady(gw.admin, gw.child, 60_000)
    return { routes: services.length, ok: true, readyMs: round(readyMs, 0) }
  } catch (err) {
    await Promise.race([gw.child.exited, sleep(2_000)])
    const logText = (() => { try { return readFileSync(gw.logFile, 'utf8') } catch { return '' } })()
    const line = logText.split('\n').find((l) => /error|Error/.test(l)) ?? (err as Error).message
    return { routes: services.length, ok: false, exit: isRunning(gw.child) ? 'running' : await gw.child.exited, error: line.trim().slice(0, 500) }
  } finally {
    await stopGateway(gw)
  }
}

// --- main ---------------------------------------------------------------------------------

function machineInfo (): Record<string, unknown> {
  let consulVersion: string | null = null
  try { consulVersion = execFileSync(findConsul(), ['version'], { encoding: 'utf8' }).split('\n')[0]!.trim() } catch { /* none */ }
  const cpus = os.cpus()
  return {
    cpuModel: cpus[0]?.model ?? null,
    cpus: cpus.length,
    totalMemGiB: round(os.totalmem() / 2 ** 30, 1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    consul: consulVersion,
    loadavgAtStart: os.loadavg().map((v) => round(v, 2))
  }
}

function fmt (v: unknown): string {
  if (v === null || v === undefined) return '-'
  return String(v)
}

function printTable (results: Array<Record<string, unknown>>, idle: { rssMiB?: number | null } | undefined): void {
  type Row = [string, ...string[]]
  const rows: Row[] = [['', ...results.map((r) => String(r.profile))]]
  const get = (r: Record<string, unknown>, p: string): unknown => p.split('.').reduce<unknown>((o, k) => (o !== null && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), r)
  const add = (label: string, f: (r: Record<string, unknown>) => unknown): void => { rows.push([label, ...results.map((r) => fmt(f(r)))]) }
  add('routing', (r) => get(r, 'routing'))
  add('agent http_max_conns_per_client', (r) => get(r, 'agent.httpMaxConnsPerClient'))
  add('gateway discovery watch', (r) => get(r, 'watchMode'))
  add('registration (s)', (r) => { const ms = get(r, 'registration.ms'); return typeof ms === 'number' ? round(ms / 1000, 2) : null })
  add('registration (instances/s)', (r) => get(r, 'registration.perSecond'))
  add('gateway ready (ms)', (r) => get(r, 'convergence.readyMs'))
  add('first request per service (status)', (r) => { const st = get(r, 'convergence.firstRequests.statuses'); return st === undefined ? null : JSON.stringify(st) })
  add('first service complete (ms)', (r) => get(r, 'convergence.milestonesMs.first'))
  add('50% services complete (ms)', (r) => get(r, 'convergence.milestonesMs.p50'))
  add('all services complete (ms)', (r) => get(r, 'convergence.milestonesMs.all') ?? `no (${fmt(get(r, 'convergence.final.complete'))}/${SERVICES})`)
  add('services stale / with watch error', (r) => `${fmt(get(r, 'convergence.final.stale'))} / ${fmt(get(r, 'convergence.final.withError'))}`)
  add('gateway TCP conns to agent', (r) => JSON.stringify(get(r, 'loadedGateway.socketsToAgent') ?? null))
  add('other client from 127.0.0.1', (r) => get(r, 'loadedGateway.otherClientFrom127001'))
  add('RSS idle gateway (MiB)', () => idle?.rssMiB)
  add('RSS loaded gateway (MiB)', (r) => get(r, 'loadedGateway.rssMiB'))
  add('RSS per service (KiB)', (r) => get(r, 'memoryPerServiceKiB'))
  add('change → routed p50 (ms)', (r) => get(r, 'changePropagation.routedToNewInstanceMs.p50'))
  add('change → routed p99 (ms)', (r) => get(r, 'changePropagation.routedToNewInstanceMs.p99'))
  add('change → routed max (ms)', (r) => get(r, 'changePropagation.routedToNewInstanceMs.max'))
  add('change → routed timeouts', (r) => `${fmt(get(r, 'changePropagation.routedTimeouts'))}/${TRIALS}`)
  add('change → admin p50 / p99 (ms)', (r) => `${fmt(get(r, 'changePropagation.visibleInAdminMs.p50'))} / ${fmt(get(r, 'changePropagation.visibleInAdminMs.p99'))}`)
  add('catalog PUT p50 (ms)', (r) => get(r, 'changePropagation.catalogPutMs.p50'))
  add('steady errors baseline / during', (r) => `${fmt(get(r, 'steadyTraffic.baseline.errors'))} / ${fmt(get(r, 'steadyTraffic.duringChanges.errors'))}`)
  add('steady p50 baseline / during (ms)', (r) => `${fmt(get(r, 'steadyTraffic.baseline.latencyMs.p50'))} / ${fmt(get(r, 'steadyTraffic.duringChanges.latencyMs.p50'))}`)
  add('steady p99 baseline / during (ms)', (r) => `${fmt(get(r, 'steadyTraffic.baseline.latencyMs.p99'))} / ${fmt(get(r, 'steadyTraffic.duringChanges.latencyMs.p99'))}`)
  add('steady max baseline / during (ms)', (r) => `${fmt(get(r, 'steadyTraffic.baseline.latencyMs.max'))} / ${fmt(get(r, 'steadyTraffic.duringChanges.latencyMs.max'))}`)
  add('gateway warn+ log lines', (r) => get(r, 'gatewayLog.lines'))
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => (row[c] ?? '').length)))
  const line = (row: Row): string => row.map((cell, c) => c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)).join('  ')
  process.stdout.write(`\nDiscovery at scale: ${SERVICES} services × ${INSTANCES} instances, ${TRIALS} change trials, steady ${RATE} req/s\n`)
  process.stdout.write(rows.map(line).join('\n') + '\n')
}

/** The issue's targets as PASS/FAIL lines; true when every line passes. */
function printVerdicts (results: Array<Record<string, unknown>>): boolean {
  const get = (r: Record<string, unknown>, p: string): unknown => p.split('.').reduce<unknown>((o, k) => (o !== null && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), r)
  const num = (v: unknown): number | undefined => typeof v === 'number' ? v : undefined
  const lines: Array<[boolean, string]> = []
  for (const r of results) {
    const profile = String(r.profile)
    if (r.error !== undefined) {
      lines.push([false, `${profile}: the profile failed to run`])
      continue
    }
    const complete = get(r, 'convergence.milestonesMs.all') !== undefined
    const p99 = num(get(r, 'changePropagation.routedToNewInstanceMs.p99'))
    const timeouts = num(get(r, 'changePropagation.routedTimeouts'))
    const conns = num((get(r, 'loadedGateway.socketsToAgent') as Record<string, number> | undefined)?.ESTABLISHED)
    const errors = num(get(r, 'steadyTraffic.duringChanges.errors'))
    const catalog = r.watchMode === 'catalog'
    const ok = complete && p99 !== undefined && p99 < 1000 && timeouts === 0 && (!catalog || (conns !== undefined && conns <= 16)) && errors === 0
    lines.push([ok, `${profile} agent (http_max_conns_per_client ${fmt(get(r, 'agent.httpMaxConnsPerClient'))}, gateway watching ${catalog ? 'the catalog' : 'per service'}): ${complete ? `all ${SERVICES} services converged` : 'NOT converged'}; change → routed p99 ${fmt(p99)} ms (< 1000), ${fmt(timeouts)} timed out (0); ${fmt(conns)} connections to the agent${catalog ? ' (≤ 16)' : ''}; ${fmt(errors)} errors in steady traffic during changes (0)`])
    // One query per service learns of a change in milliseconds. (Routing to it takes longer
    // here: a trial service's other 10 instances are dead ports, so the probe goes through
    // connect failures and outlier panic first; a451ceb measures the same.)
    const seen = num(get(r, 'changePropagation.visibleInAdminMs.p99'))
    if (!catalog && seen !== undefined) lines.push([seen <= 100, `${profile}: per-service watches, change → in the gateway's tables (admin) p99 ${seen} ms (≤ 100)`])
    const perService = num(r.memoryPerServiceKiB)
    if (perService !== undefined) lines.push([perService <= 30, `${profile}: RSS per watched service ${perService} KiB beyond idle (≤ 30)`])
  }
  process.stdout.write('\n' + lines.map(([ok, text]) => `${ok ? 'PASS' : 'FAIL'}  ${text}`).join('\n') + '\n')
  return lines.every(([ok]) => ok)
}

async function main (): Promise<void> {
  const started = nowMs()
  const profiles = (opt.profiles ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '')
  for (const p of profiles) if (PROFILES[p] === undefined) throw new Error(`unknown profile "${p}"`)
  if (TRIALS > 99) throw new Error('at most 99 trials')
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fastmesh-bench-discovery-'))
  log(`work dir ${dir} (gateway configs and logs)`)
  Object.assign(report, {
    date: new Date().toISOString(),
    machine: machineInfo(),
    parameters: {
      services: SERVICES,
      instancesPerService: INSTANCES,
      nodes: NODES,
      trials: TRIALS,
      registrationConcurrency: CONCURRENCY,
      steadyRate: RATE,
      baselineS: BASELINE_MS / 1000,
      convergeTimeoutS: CONVERGE_TIMEOUT_MS / 1000,
      convergeStallS: CONVERGE_STALL_MS / 1000,
      trialTimeoutS: TRIAL_TIMEOUT_MS / 1000,
      trialGapMs: TRIAL_GAP_MS,
      seed: SEED,
      harnessSourceAddress: SOURCE_ADDRESS ?? '127.0.0.1',
      consulWait: '30s (gateway default)',
      workDir: dir
    }
  })

  const names = ['upstream-a', 'upstream-b', ...Array.from({ length: TRIALS }, (_, k) => `trial-${pad(k, 2)}`)]
  const upstream = spawnChild('upstreams', process.execPath, [path.join(HERE, 'discovery', 'upstream-child.js'), ...names])
  let upstreamPorts: Record<string, number> | undefined
  for (let i = 0; i < 200 && upstreamPorts === undefined; i++) {
    const line = upstream.stdout().split('\n')[0]
    if (line !== undefined && line.endsWith('}')) upstreamPorts = JSON.parse(line) as Record<string, number>
    else if (!isRunning(upstream)) throw new Error('upstream process exited')
    else await sleep(50)
  }
  if (upstreamPorts === undefined) throw new Error('upstream process did not report its ports')
  log(`upstreams pid ${upstream.pid}: a=${upstreamPorts['upstream-a']} b=${upstreamPorts['upstream-b']}, ${TRIALS} trial servers`)

  const allServices = Array.from({ length: SERVICES }, (_, i) => serviceName(i))
  const wanted = opt.routing ?? 'auto'
  if (!['auto', 'routes', 'host'].includes(wanted)) throw new Error(`--routing must be auto, routes or host, not "${wanted}"`)
  let routeProbe: RouteProbe | undefined
  let routing: Routing = wanted === 'host' ? 'host' : 'routes'
  report.routing = routing
  if (wanted !== 'host') {
    log(`can an edge gateway take ${SERVICES} routes (one per service)?`)
    routeProbe = await probeRoutes(allServices, dir)
    log(routeProbe.ok ? `yes: ready in ${routeProbe.readyMs} ms` : `NO: the gateway exited (${routeProbe.exit}): ${routeProbe.error}`)
    report.routeProbe = routeProbe
    if (!routeProbe.ok) {
      if (wanted === 'routes') throw new Error(`an edge gateway with ${SERVICES} routes does not start: ${routeProbe.error}`)
      routing = 'host'
      report.routing = routing
      log('falling back to a node gateway that routes by Host header (no config routes; one watch per service all the same)')
    }
  }

  for (const [i, p] of profiles.entries()) {
    try {
      const r = await runProfile(p, i === 0, routing, upstreamPorts, dir)
      if (r.idleGateway !== undefined) idle = r.idleGateway as { rssMiB?: number | null }
      results.push(r)
    } catch (err) {
      if (shuttingDown) throw err
      log(`profile ${p} failed: ${(err as Error).message}`)
      results.push({ profile: p, error: (err as Error).stack ?? String(err) })
    }
    report.durationS = round((nowMs() - started) / 1000, 1)
    writeReport(i === profiles.length - 1 ? 'done' : 'running')
  }
  await stopChild(upstream)
  printTable(results, idle)
  if (!printVerdicts(results)) process.exitCode = 1
  process.stdout.write(`\nwrote ${opt.out}\n`)
}

try {
  await main()
} catch (err) {
  process.stderr.write(`bench:discovery failed: ${(err as Error).stack ?? String(err)}\n`)
  report.error = (err as Error).stack ?? String(err)
  if (!shuttingDown) writeReport('failed')
  process.exitCode = 1
} finally {
  clearTimeout(watchdog)
  await cleanup()
  // Everything is stopped; do not wait for a straggling socket to close.
  setTimeout(() => { process.exit() }, 2_000).unref()
}
