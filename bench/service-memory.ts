// What a watched service and its endpoints cost a gateway in memory, without Consul: the
// service layer, endpoint layer, state, metrics and routes, apart from any discovery source's
// own cost (issue 17). Endpoints are in the embedded registry without health checks, so
// nothing dials them until traffic does. By default they are registered through the admin
// API once the gateway is up, as discovery would deliver them (the config names only the
// services and routes); `--endpoints config` lists them in the config file instead (its
// parse then leaves garbage in the heap that an idle gateway never collects).
//
//   npm run bench:service-memory     (= npm run build && node dist/bench/service-memory.js)
//
// Three gateways, each a child process (`fastmesh start --config`), one after the other:
//   base: 1 service × `instances` endpoints, one route;
//   full: `services` × `instances`, one route per service;
//   thin: `services` × 1 endpoint (so the per-endpoint cost separates from the per-service one).
// Each is read after `settle` seconds idle: RSS (median of /proc samples) and V8's heap
// figures. Then `touched` services of `full` get requests reaching every endpoint (real
// upstreams, one per endpoint, in a child process), and the gateway is read again (after a
// tenth of them, and after all: the first ones also warm the request path up).
// With --heap, each gateway runs a second time for heap snapshots (SIGUSR2; taken after a
// full GC: the live heap to the byte), summed by constructor and retainer. A snapshot leaves
// the process's RSS far higher, so RSS always comes from the run without them.
// Per service = (full − base) / (services − 1); per endpoint = (full − thin) / (services × (instances − 1)).
import path from 'node:path'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { stringify } from 'yaml'
import { Pool } from 'undici'
import { freePorts } from '../test/helpers/ports.js'
import { runBenchMain, spawnChild, stopChild, waitForHttp, isRunning, type Child } from './children.js'
import { rssMiB } from './discovery/processes.js'
import { round, sleep } from './discovery/stats.js'
import { formatGrowth, heapGrowth, summarizeHeapSnapshot, type HeapSummary } from './heap-summary.js'

const HERE = path.dirname(fileURLToPath(import.meta.url)) // dist/bench
const ROOT = path.resolve(HERE, '..', '..')
const CLI = path.resolve(HERE, '..', 'src', 'cli', 'index.js')
const UPSTREAM_CHILD = path.join(HERE, 'discovery', 'upstream-child.js')

const { values: opt } = parseArgs({
  options: {
    services: { type: 'string', default: '1000' },
    instances: { type: 'string', default: '10' },
    touched: { type: 'string', default: '100' },
    settle: { type: 'string', default: '8' },
    heap: { type: 'boolean', default: false },
    endpoints: { type: 'string', default: 'admin' },
    cli: { type: 'string', default: CLI },
    top: { type: 'string', default: '25' },
    rounds: { type: 'string', default: '1' },
    keep: { type: 'boolean', default: false },
    out: { type: 'string', default: path.join(ROOT, 'bench', 'results', 'service-memory-latest.json') },
    help: { type: 'boolean', short: 'h', default: false }
  }
})

if (opt.help) {
  process.stdout.write(`Usage: npm run bench:service-memory [-- options]   (node dist/bench/service-memory.js [options])

Memory per service and per endpoint of a gateway with static endpoints (no Consul): RSS and,
with --heap, the live heap from a snapshot, summed by constructor and retainer.
Gateways: base (1 service), full (services × instances), thin (services × 1 endpoint);
then traffic reaching every endpoint of \`touched\` services of full.

  --services N     services, one route each (default 1000)
  --instances N    static endpoints per service (default 10)
  --touched N      services of full that get traffic afterwards; 0: none (default 100)
  --settle S       idle seconds before each reading (default 8)
  --endpoints admin|config  register the endpoints through the admin API once the gateway
                   is up, as discovery would deliver them; or list them in the config
                   file (default admin)
  --rounds N       run each gateway N times and take the median RSS (default 1; RSS
                   moves by a few MiB between runs)
  --heap           also run each gateway for heap snapshots, summed by constructor
  --top N          rows of the heap summary (default 25)
  --cli FILE       the fastmesh CLI to start (default this build's; another build's
                   dist/src/cli/index.js compares two builds)
  --keep           keep the work directory (configs, logs, snapshots) and print it
  --out FILE       results JSON (default bench/results/service-memory-latest.json)
  -h, --help       this text

Every process it starts is stopped by PID at the end.
`)
  process.exit(0)
}

const SERVICES = Number(opt.services)
const INSTANCES = Number(opt.instances)
const TOUCHED = Math.min(Number(opt.touched), SERVICES)
const SETTLE_MS = Number(opt.settle) * 1000
const TOP = Number(opt.top)
const ROUNDS = Number(opt.rounds)
for (const [name, v] of [['services', SERVICES], ['instances', INSTANCES], ['touched', TOUCHED], ['settle', SETTLE_MS], ['rounds', ROUNDS]] as const) {
  if (!Number.isInteger(v) || v < (name === 'services' || name === 'instances' || name === 'rounds' ? 1 : 0)) throw new Error(`--${name} wants a whole number (got ${String(opt[name])})`)
}
if (opt.endpoints !== 'admin' && opt.endpoints !== 'config') throw new Error(`--endpoints wants admin or config (got ${opt.endpoints})`)
const ENDPOINTS_IN_CONFIG = opt.endpoints === 'config'
if (SERVICES < 2) throw new Error('--services must be at least 2 (the base gateway has one)')

const serviceName = (i: number): string => `svc-${String(i).padStart(4, '0')}`

let workDir: string | undefined

function log (msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)}] ${msg}\n`)
}

/** An endpoint nothing listens on: a distinct loopback address and port per service and instance. */
function deadEndpoint (service: number, instance: number): { address: string, port: number } {
  return { address: `127.0.${1 + (instance % 250)}.${1 + (service % 250)}`, port: 20_000 + service }
}

/** The endpoints of service number `s`: real upstreams where `live` has them, else addresses nothing listens on. */
function endpointsOf (s: number, instances: number, live: ReadonlyMap<string, number>): Array<{ address: string, port: number }> {
  return Array.from({ length: instances }, (_, i) => {
    const port = live.get(`${serviceName(s)}-${i}`)
    return port !== undefined ? { address: '127.0.0.1', port } : deadEndpoint(s, i)
  })
}

function configYaml (services: number, instances: number, httpPort: number, adminPort: number, live: ReadonlyMap<string, number>): string {
  const names = Array.from({ length: services }, (_, i) => serviceName(i))
  const embedded: Record<string, unknown> = {}
  names.forEach((name, s) => {
    embedded[name] = ENDPOINTS_IN_CONFIG ? { endpoints: endpointsOf(s, instances, live) } : {}
  })
  const doc = {
    gateway: { name: 'bench-service-memory', mode: 'edge' },
    listeners: { http: { address: '127.0.0.1', port: httpPort }, admin: { address: '127.0.0.1', port: adminPort } },
    discovery: { embedded: { services: embedded } },
    telemetry: { logging: { level: 'warn', accessLog: false } },
    routes: names.map((s) => ({ name: s, match: { path: { prefix: `/${s}` } }, destination: { service: s } }))
  }
  return `# generated by bench/service-memory.ts\n${stringify(doc)}`
}

async function medianRss (pid: number, samples = 7, gapMs = 300): Promise<number> {
  const v: number[] = []
  for (let i = 0; i < samples; i++) {
    const r = rssMiB(pid)
    if (r !== undefined) v.push(r)
    if (i < samples - 1) await sleep(gapMs)
  }
  if (v.length === 0) throw new Error(`no RSS for pid ${pid} (needs /proc)`)
  v.sort((a, b) => a - b)
  return v[Math.floor(v.length / 2)]!
}

interface Reading {
  readonly rssMiB: number
  readonly v8?: V8Memory
  readonly heap?: HeapSummary
}

/** A heap snapshot of the gateway (SIGUSR2), once written: the process answers again and the file stops growing. */
async function heapSnapshot (g: Child, dir: string, admin: string): Promise<HeapSummary> {
  const before = new Set(readdirSync(dir))
  process.kill(g.pid, 'SIGUSR2')
  const deadline = Date.now() + 120_000
  for (;;) {
    if (Date.now() > deadline) throw new Error('no heap snapshot after 120 s')
    if (!isRunning(g)) throw new Error(`${g.name} exited while writing a heap snapshot`)
    const file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f))
    if (file !== undefined) {
      const size = statSync(path.join(dir, file)).size
      await sleep(500)
      // The snapshot is written on the main thread: once /ready answers, it is complete.
      await waitForHttp(`${admin}/ready`, g, 60_000)
      if (statSync(path.join(dir, file)).size === size && size > 0) {
        const summary = summarizeHeapSnapshot(path.join(dir, file))
        if (opt.keep !== true) rmSync(path.join(dir, file))
        return summary
      }
    }
    await sleep(250)
  }
}

/** V8's own account, from the gateway's /metrics (prom-client's process metrics): MiB. */
interface V8Memory {
  readonly heapTotal: number
  readonly heapUsed: number
  readonly external: number
  /** Committed size of each heap space (old, new, code, large objects, ...). */
  readonly spaces: Record<string, number>
}

async function v8Memory (admin: string): Promise<V8Memory | undefined> {
  try {
    const res = await fetch(`${admin}/metrics`)
    const text = await res.text()
    const value = (re: RegExp): number => { const m = re.exec(text); return m === null ? NaN : round(Number(m[1]) / 1048576, 2)! }
    const spaces: Record<string, number> = {}
    for (const m of text.matchAll(/^nodejs_heap_space_size_total_bytes\{space="([^"]+)"\} (\S+)$/gm)) spaces[m[1]!] = round(Number(m[2]) / 1048576, 2)!
    return { heapTotal: value(/^nodejs_heap_size_total_bytes (\S+)$/m), heapUsed: value(/^nodejs_heap_size_used_bytes (\S+)$/m), external: value(/^nodejs_external_memory_bytes (\S+)$/m), spaces }
  } catch {
    return undefined
  }
}

async function read (g: Child, dir: string, admin: string, snapshot: boolean): Promise<Reading> {
  await sleep(SETTLE_MS)
  const rss = await medianRss(g.pid)
  const v8 = await v8Memory(admin)
  return { rssMiB: rss, ...(v8 !== undefined ? { v8 } : {}), ...(snapshot ? { heap: await heapSnapshot(g, dir, admin) } : {}) }
}

interface GatewayRun {
  readonly label: string
  readonly idle: Reading
  readonly touched?: Reading
  /** After traffic to the first `warm` touched services. */
  readonly warmed?: Reading
  readonly warm?: number
  readonly startMs: number
}

/** Registers every endpoint through the admin API (a few requests at a time). */
async function registerEndpoints (admin: string, services: number, instances: number, live: ReadonlyMap<string, number>): Promise<void> {
  const pool = new Pool(admin, { connections: 4 })
  try {
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < services) {
        const s = next++
        for (const e of endpointsOf(s, instances, live)) {
          const res = await pool.request({ method: 'POST', path: `/services/${serviceName(s)}/endpoints`, headers: { 'content-type': 'application/json' }, body: JSON.stringify(e) })
          const body = await res.body.text()
          if (res.statusCode !== 201) throw new Error(`registering ${e.address}:${e.port} for ${serviceName(s)}: ${res.statusCode} ${body}`)
        }
      }
    }
    await Promise.all(Array.from({ length: 4 }, worker))
  } finally {
    await pool.close()
  }
}

async function runGateway (label: string, services: number, instances: number, live: ReadonlyMap<string, number>, touch: number, snapshots: boolean): Promise<GatewayRun> {
  const dir = mkdtempSync(path.join(workDir!, `${label}${snapshots ? '-heap' : ''}-`))
  const [httpPort, adminPort] = await freePorts(2) as [number, number]
  const configFile = path.join(dir, 'gateway.yaml')
  writeFileSync(configFile, configYaml(services, instances, httpPort, adminPort, live))
  const env = { ...process.env }
  for (const k of Object.keys(env)) if (k.startsWith('FASTMESH_') || k.startsWith('CONSUL_HTTP_')) delete env[k]
  const t0 = performance.now()
  // cwd: where SIGUSR2 writes the heap snapshot.
  const g = spawnChild(`gateway ${label}`, process.execPath, { args: ['--heapsnapshot-signal=SIGUSR2', opt.cli!, 'start', '--config', configFile], env, cwd: dir, logFile: path.join(dir, 'gateway.log') })
  const admin = `http://127.0.0.1:${adminPort}`
  try {
    await waitForHttp(`${admin}/ready`, g, 60_000)
    if (!ENDPOINTS_IN_CONFIG) await registerEndpoints(admin, services, instances, live)
    const startMs = performance.now() - t0
    log(`${label}${snapshots ? ' (heap)' : ''}: ${services} services × ${instances} endpoints ready in ${Math.round(startMs)} ms`)
    const idle = await read(g, dir, admin, snapshots)
    log(`${label}: idle RSS ${idle.rssMiB.toFixed(1)} MiB${idle.heap !== undefined ? `, heap ${(idle.heap.totalBytes / 1048576).toFixed(1)} MiB` : ''}`)
    if (touch === 0) return { label, idle, startMs }
    const http = new Pool(`http://127.0.0.1:${httpPort}`, { connections: 8 })
    // The first few services warm the request path up (JIT, young generation, parser):
    // what the rest add beyond that reading is their own cost.
    const warm = Math.max(1, Math.round(touch / 10))
    let warmed: Reading | undefined
    try {
      let failed = 0
      for (let s = 0; s < touch; s++) {
        if (s === warm && touch > warm) {
          warmed = await read(g, dir, admin, snapshots)
          log(`${label}: after traffic to ${warm} services, RSS ${warmed.rssMiB.toFixed(1)} MiB${warmed.heap !== undefined ? `, heap ${(warmed.heap.totalBytes / 1048576).toFixed(1)} MiB` : ''}`)
        }
        // Round robin: `instances` requests at once reach every endpoint of the service once.
        const results = await Promise.all(Array.from({ length: instances }, async () => {
          const res = await http.request({ method: 'GET', path: `/${serviceName(s)}/x` })
          await res.body.dump()
          return res.statusCode
        }))
        failed += results.filter((c) => c !== 200).length
      }
      if (failed > 0) throw new Error(`${failed} of ${touch * instances} requests to touched services did not answer 200`)
    } finally {
      await http.close()
    }
    const touched = await read(g, dir, admin, snapshots)
    log(`${label}: after traffic to ${touch} services, RSS ${touched.rssMiB.toFixed(1)} MiB${touched.heap !== undefined ? `, heap ${(touched.heap.totalBytes / 1048576).toFixed(1)} MiB` : ''}`)
    return { label, idle, touched, ...(warmed !== undefined ? { warmed, warm } : {}), startMs }
  } finally {
    await stopChild(g)
  }
}

const kib = (mib: number): number => mib * 1024

function median (values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

/** The first run, with each RSS reading the median over all runs of that gateway. */
function medianRun (all: readonly GatewayRun[]): GatewayRun {
  const first = all[0]!
  const rss = (pick: (r: GatewayRun) => Reading | undefined): number => median(all.map((r) => pick(r)!.rssMiB))
  return {
    ...first,
    idle: { ...first.idle, rssMiB: rss((r) => r.idle) },
    ...(first.warmed !== undefined ? { warmed: { ...first.warmed, rssMiB: rss((r) => r.warmed) } } : {}),
    ...(first.touched !== undefined ? { touched: { ...first.touched, rssMiB: rss((r) => r.touched) } } : {})
  }
}

async function main (): Promise<void> {
  workDir = mkdtempSync(path.join(os.tmpdir(), 'fastmesh-service-memory-'))
  let upstream: Child | undefined
  const live = new Map<string, number>()
  if (TOUCHED > 0) {
    const names: string[] = []
    for (let s = 0; s < TOUCHED; s++) for (let i = 0; i < INSTANCES; i++) names.push(`${serviceName(s)}-${i}`)
    upstream = spawnChild('upstreams', process.execPath, { args: [UPSTREAM_CHILD, ...names], capture: true })
    const deadline = Date.now() + 60_000
    while (!upstream.stdout().includes('\n')) {
      if (Date.now() > deadline || !isRunning(upstream)) throw new Error(`upstreams did not start: ${upstream.stderr()}`)
      await sleep(100)
    }
    for (const [name, port] of Object.entries(JSON.parse(upstream.stdout().split('\n')[0]!) as Record<string, number>)) live.set(name, port)
  }
  try {
    const runs = async (snapshots: boolean): Promise<{ base: GatewayRun, full: GatewayRun, thin: GatewayRun | undefined }> => ({
      base: await runGateway('base', 1, INSTANCES, live, 0, snapshots),
      full: await runGateway('full', SERVICES, INSTANCES, live, TOUCHED, snapshots),
      thin: INSTANCES > 1 ? await runGateway('thin', SERVICES, 1, new Map(), 0, snapshots) : undefined
    })
    // RSS moves by a few MiB between runs of the same gateway (when V8 last collected):
    // with several rounds, each reading is the median over them.
    const rounds: Array<Awaited<ReturnType<typeof runs>>> = []
    for (let i = 0; i < ROUNDS; i++) rounds.push(await runs(false))
    const measured = { base: medianRun(rounds.map((r) => r.base)), full: medianRun(rounds.map((r) => r.full)), thin: rounds[0]!.thin !== undefined ? medianRun(rounds.map((r) => r.thin!)) : undefined }
    const heapRuns = opt.heap ? await runs(true) : undefined
    // RSS from the runs without snapshots, heaps from the others.
    const merge = (r: GatewayRun, h: GatewayRun | undefined): GatewayRun => ({
      ...r,
      idle: { ...r.idle, ...(h?.idle.heap !== undefined ? { heap: h.idle.heap } : {}) },
      ...(r.touched !== undefined ? { touched: { ...r.touched, ...(h?.touched?.heap !== undefined ? { heap: h.touched.heap } : {}) } } : {}),
      ...(r.warmed !== undefined ? { warmed: { ...r.warmed, ...(h?.warmed?.heap !== undefined ? { heap: h.warmed.heap } : {}) } } : {})
    })
    const base = merge(measured.base, heapRuns?.base)
    const full = merge(measured.full, heapRuns?.full)
    const thin = measured.thin !== undefined ? merge(measured.thin, heapRuns?.thin) : undefined
    const perService = (kib(full.idle.rssMiB) - kib(base.idle.rssMiB)) / (SERVICES - 1)
    const perEndpoint = thin !== undefined ? (kib(full.idle.rssMiB) - kib(thin.idle.rssMiB)) / (SERVICES * (INSTANCES - 1)) : undefined
    const warmed = full.warmed ?? full.idle
    const warmCount = full.warm ?? 0
    const perTouched = full.touched !== undefined ? (kib(full.touched.rssMiB) - kib(warmed.rssMiB)) / (TOUCHED - warmCount) : undefined
    const heapPer = (a: HeapSummary | undefined, b: HeapSummary | undefined, n: number): number | null => a !== undefined && b !== undefined ? round((a.totalBytes - b.totalBytes) / 1024 / n, 2) : null
    const result = {
      benchmark: 'service-memory',
      endpointsFrom: opt.endpoints,
      node: process.version,
      services: SERVICES,
      instances: INSTANCES,
      touched: TOUCHED,
      settleSeconds: SETTLE_MS / 1000,
      rounds: ROUNDS,
      rssMiB: { base: base.idle.rssMiB, full: full.idle.rssMiB, fullTouched: full.touched?.rssMiB ?? null, thin: thin?.idle.rssMiB ?? null },
      heapMiB: {
        base: base.idle.heap !== undefined ? round(base.idle.heap.totalBytes / 1048576, 2) : null,
        full: full.idle.heap !== undefined ? round(full.idle.heap.totalBytes / 1048576, 2) : null,
        fullTouched: full.touched?.heap !== undefined ? round(full.touched.heap.totalBytes / 1048576, 2) : null,
        thin: thin?.idle.heap !== undefined ? round(thin.idle.heap.totalBytes / 1048576, 2) : null
      },
      perServiceKiB: { rss: round(perService, 1), heap: heapPer(full.idle.heap, base.idle.heap, SERVICES - 1) },
      perEndpointKiB: { rss: perEndpoint !== undefined ? round(perEndpoint, 2) : null, heap: heapPer(full.idle.heap, thin?.idle.heap, SERVICES * (INSTANCES - 1)) },
      perTouchedServiceKiB: { rss: perTouched !== undefined ? round(perTouched, 1) : null, heap: heapPer(full.touched?.heap, warmed.heap, TOUCHED - warmCount) },
      v8MiB: { base: base.idle.v8 ?? null, full: full.idle.v8 ?? null, fullWarmed: full.warmed?.v8 ?? null, fullTouched: full.touched?.v8 ?? null, thin: thin?.idle.v8 ?? null },
      startMs: { base: Math.round(base.startMs), full: Math.round(full.startMs), thin: thin !== undefined ? Math.round(thin.startMs) : null }
    }
    mkdirSync(path.dirname(opt.out!), { recursive: true })
    writeFileSync(opt.out!, JSON.stringify(result, null, 2) + '\n')
    process.stdout.write(`\n${SERVICES} services × ${INSTANCES} endpoints (${ENDPOINTS_IN_CONFIG ? 'in the config file' : 'registered through the admin API'}), one route each (node ${process.version})\n`)
    process.stdout.write(`RSS MiB: base ${base.idle.rssMiB.toFixed(1)}, full ${full.idle.rssMiB.toFixed(1)}${thin !== undefined ? `, thin ${thin.idle.rssMiB.toFixed(1)}` : ''}${full.touched !== undefined ? `, full after traffic to ${TOUCHED} ${full.touched.rssMiB.toFixed(1)}` : ''}\n`)
    process.stdout.write(`per service: ${result.perServiceKiB.rss} KiB RSS${result.perServiceKiB.heap !== null ? `, ${result.perServiceKiB.heap} KiB heap` : ''} (with its ${INSTANCES} endpoints and route)\n`)
    if (perEndpoint !== undefined) process.stdout.write(`per endpoint: ${result.perEndpointKiB.rss} KiB RSS${result.perEndpointKiB.heap !== null ? `, ${result.perEndpointKiB.heap} KiB heap` : ''}\n`)
    const v8line = (name: string, r: Reading | undefined): string => r?.v8 !== undefined ? `  ${name}: heap used ${r.v8.heapUsed}, committed ${r.v8.heapTotal}, external ${r.v8.external} MiB\n` : ''
    process.stdout.write(`V8 (its own account):\n${v8line('base', base.idle)}${v8line('full', full.idle)}${v8line('full, warmed', full.warmed)}${v8line('full, touched', full.touched)}${v8line('thin', thin?.idle)}`)
    if (perTouched !== undefined) process.stdout.write(`per touched service beyond the first ${warmCount} (pools and connections of its ${INSTANCES} endpoints): ${result.perTouchedServiceKiB.rss} KiB RSS${result.perTouchedServiceKiB.heap !== null ? `, ${result.perTouchedServiceKiB.heap} KiB heap` : ''}\n`)
    if (full.idle.heap !== undefined && base.idle.heap !== undefined) {
      process.stdout.write(`\nheap per service (full − base) by constructor:\n${formatGrowth(heapGrowth(full.idle.heap, base.idle.heap, SERVICES - 1, TOP), 'svc')}\n`)
    }
    if (full.idle.heap !== undefined && thin?.idle.heap !== undefined) {
      process.stdout.write(`\nheap per endpoint (full − thin) by constructor:\n${formatGrowth(heapGrowth(full.idle.heap, thin.idle.heap, SERVICES * (INSTANCES - 1), TOP), 'ep')}\n`)
    }
    if (full.touched?.heap !== undefined && warmed.heap !== undefined) {
      process.stdout.write(`\nheap per touched service (after traffic − after the first ${warmCount}) by constructor:\n${formatGrowth(heapGrowth(full.touched.heap, warmed.heap, TOUCHED - warmCount, TOP), 'svc')}\n`)
    }
    process.stdout.write(`\nwritten: ${path.relative(process.cwd(), opt.out!)}\n`)
  } finally {
    if (upstream !== undefined) await stopChild(upstream)
    if (opt.keep === true) process.stdout.write(`work directory kept: ${workDir}\n`)
    else rmSync(workDir, { recursive: true, force: true })
  }
}

runBenchMain('service-memory', main, () => opt.keep === true ? undefined : workDir)
