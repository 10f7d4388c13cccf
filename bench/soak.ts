// Soak benchmark: a gateway under mixed traffic for minutes while its config is reloaded
// and its endpoints' health flips, watching for slow leaks and for missed health changes.
//
//   npm run bench:soak                      (= npm run build && node dist/bench/soak.js)
//   node dist/bench/soak.js --minutes 5 --reload-every 3 --flip-every 4
//   node dist/bench/soak.js --workers 2     (gateway.workers: errors, reloads and flips
//                                            cover the workers; heap and fds the primary)
//
// The gateway runs as a child (`fastmesh start`, with --expose-gc and bench/soak-gc.ts
// preloaded); three upstreams run in this process on 127.0.0.1, each answering plain
// requests, POST bodies and WebSocket echoes, and `GET /health` with 200 or 503 as told
// (after --health-delay ms, so probes are in flight when reloads land). The run is split
// into one phase per traffic kind (get, post, ws), after an unmeasured --warmup (seconds);
// throughout every phase:
//   - admin POST /reload every --reload-every seconds;
//   - every --flip-every seconds one endpoint (never the first) flips health; the flip
//     counts as missed unless admin GET /services shows it within 2 probe intervals;
//   - every --sample-every seconds: heap after GC (SIGUSR2 to the gateway) and its open
//     file descriptors (/proc/<pid>/fd).
// Prints per-kind slopes (least squares, per minute), errors and missed health changes, and
// writes bench/results/soak-latest.json. The gateway is stopped by its PID, always.
import path from 'node:path'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { Agent, request } from 'undici'
import WebSocket, { WebSocketServer } from 'ws'
import { stringify } from 'yaml'
import { freePorts } from '../test/helpers/ports.js'
import { runBenchMain, spawnChild, stopChild, waitForHttp, isRunning, type Child } from './children.js'

const HERE = path.dirname(fileURLToPath(import.meta.url)) // dist/bench
const ROOT = path.resolve(HERE, '..', '..')
const CLI = path.resolve(HERE, '..', 'src', 'cli', 'index.js')
const GC_HOOK = path.resolve(HERE, 'soak-gc.js')

const { values: opt } = parseArgs({
  options: {
    minutes: { type: 'string', default: '2' },
    'reload-every': { type: 'string', default: '3' },
    'flip-every': { type: 'string', default: '4' },
    'sample-every': { type: 'string', default: '5' },
    warmup: { type: 'string', default: '10' },
    'probe-interval': { type: 'string', default: '1000' },
    'health-delay': { type: 'string', default: '150' },
    concurrency: { type: 'string', default: '8' },
    workers: { type: 'string', default: '1' },
    out: { type: 'string', default: path.join(ROOT, 'bench', 'results', 'soak-latest.json') }
  }
})
const o = {
  minutes: Number(opt.minutes),
  reloadEveryMs: Number(opt['reload-every']) * 1000,
  flipEveryMs: Number(opt['flip-every']) * 1000,
  sampleEveryMs: Number(opt['sample-every']) * 1000,
  warmupMs: Number(opt.warmup) * 1000,
  probeIntervalMs: Number(opt['probe-interval']),
  healthDelayMs: Number(opt['health-delay']),
  concurrency: Number(opt.concurrency),
  workers: Number(opt.workers),
  out: opt.out
}
for (const [k, v] of Object.entries(o)) if (typeof v === 'number' && !(Number.isFinite(v) && v > 0)) throw new Error(`--${k}: a positive number is needed`)

const KINDS = ['get', 'post', 'ws'] as const
type Kind = typeof KINDS[number]
const POST_BODY = Buffer.alloc(16 * 1024, 'x')

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

interface SoakUpstream {
  readonly id: string
  readonly port: number
  readonly server: Server
  readonly wss: WebSocketServer
  healthy: boolean
}

/** One upstream: 200 to everything, POST bodies read, WebSocket echo, `/health` as told. */
async function startSoakUpstream (id: string): Promise<SoakUpstream> {
  const up = { healthy: true }
  const server = createServer((req, res) => {
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length })
    req.on('end', () => {
      if (req.url === '/health') {
        setTimeout(() => { res.writeHead(up.healthy ? 200 : 503).end(up.healthy ? 'ok' : 'down') }, o.healthDelayMs)
        return
      }
      const body = `${id} ${bytes}`
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }).end(body)
    })
  })
  server.keepAliveTimeout = 120_000
  const wss = new WebSocketServer({ noServer: true })
  wss.on('connection', (socket) => { socket.on('message', (data) => { socket.send(data) }) })
  server.on('upgrade', (req, socket, head) => { wss.handleUpgrade(req, socket, head, (ws) => { wss.emit('connection', ws, req) }) })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  return {
    id,
    port: (server.address() as AddressInfo).port,
    server,
    wss,
    get healthy () { return up.healthy },
    set healthy (h: boolean) { up.healthy = h }
  }
}

async function closeUpstream (u: SoakUpstream): Promise<void> {
  for (const c of u.wss.clients) c.terminate()
  u.wss.close()
  u.server.closeAllConnections()
  await new Promise<void>((resolve) => { u.server.close(() => { resolve() }) })
}

function configYaml (httpPort: number, adminPort: number, ups: readonly SoakUpstream[]): string {
  return stringify({
    gateway: { name: 'bench-soak', mode: 'edge', workers: o.workers },
    listeners: { http: { address: '127.0.0.1', port: httpPort }, admin: { address: '127.0.0.1', port: adminPort } },
    discovery: {
      embedded: {
        services: {
          soak: {
            endpoints: ups.map((u) => ({ id: u.id, address: '127.0.0.1', port: u.port })),
            healthCheck: { path: '/health', interval: `${o.probeIntervalMs}ms`, timeout: `${Math.max(o.healthDelayMs * 3, 500)}ms`, healthyThreshold: 1, unhealthyThreshold: 1 }
          }
        }
      }
    },
    services: { soak: { connectionPool: { connections: 32, keepAliveTimeout: '30s' } } },
    telemetry: { logging: { level: 'info', accessLog: false } },
    routes: [{ name: 'soak', match: { path: { prefix: '/' } }, destination: { service: 'soak' } }]
  })
}

// ---- measurements -------------------------------------------------------------------

interface Sample { readonly at: number, readonly heapUsed: number, readonly fds: number }

async function sample (gw: Child, heapFile: string): Promise<Sample | undefined> {
  const seqOf = (): number => { try { return (JSON.parse(readFileSync(heapFile, 'utf8')) as { seq: number }).seq } catch { return 0 } }
  const before = seqOf()
  process.kill(gw.pid, 'SIGUSR2')
  for (let i = 0; i < 100; i++) {
    await sleep(20)
    if (seqOf() > before) break
  }
  let heapUsed: number
  try {
    const r = JSON.parse(readFileSync(heapFile, 'utf8')) as { seq: number, heapUsed: number }
    if (r.seq <= before) return undefined
    heapUsed = r.heapUsed
  } catch {
    return undefined
  }
  let fds = Number.NaN
  try { fds = readdirSync(`/proc/${gw.pid}/fd`).length } catch { /* no /proc */ }
  return { at: Date.now(), heapUsed, fds }
}

/** Least-squares slope of `y` over time, per minute. */
function slopePerMinute (samples: readonly Sample[], y: (s: Sample) => number): number {
  if (samples.length < 2) return Number.NaN
  const xs = samples.map((s) => (s.at - samples[0]!.at) / 60_000)
  const ys = samples.map(y)
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length
  const my = ys.reduce((a, b) => a + b, 0) / ys.length
  let num = 0
  let den = 0
  for (let i = 0; i < xs.length; i++) { num += (xs[i]! - mx) * (ys[i]! - my); den += (xs[i]! - mx) ** 2 }
  return den === 0 ? Number.NaN : num / den
}

// ---- traffic ----------------------------------------------------------------------

interface Tally { requests: number, errors: number, lastError?: string }

async function oneExchange (kind: Kind, agent: Agent, httpUrl: string, wsUrl: string): Promise<void> {
  if (kind === 'ws') {
    await new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(wsUrl)
      let echoed = 0
      const timer = setTimeout(() => { ws.terminate(); reject(new Error('ws exchange timed out')) }, 5000)
      ws.on('open', () => { ws.send('m0') })
      ws.on('message', (data) => {
        if (String(data) !== `m${echoed}`) { clearTimeout(timer); ws.terminate(); reject(new Error(`ws echo was ${String(data)}`)); return }
        if (++echoed < 5) ws.send(`m${echoed}`)
        else ws.close()
      })
      ws.on('close', () => { clearTimeout(timer); if (echoed === 5) resolve(); else reject(new Error(`ws closed after ${echoed} echoes`)) })
      ws.on('error', (err) => { clearTimeout(timer); reject(err) })
    })
    return
  }
  const res = await agent.request({
    origin: httpUrl,
    path: '/soak',
    method: kind === 'get' ? 'GET' : 'POST',
    ...(kind === 'post' ? { body: POST_BODY, headers: { 'content-type': 'application/octet-stream' } } : {}),
    headersTimeout: 5000,
    bodyTimeout: 5000
  })
  const text = await res.body.text()
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`)
  if (kind === 'post' && !text.endsWith(` ${POST_BODY.length}`)) throw new Error(`upstream saw a body of ${text}`)
}

/** `concurrency` closed loops of `kind` exchanges until `until`. */
async function runTraffic (kind: Kind, until: number, agent: Agent, httpUrl: string, wsUrl: string, tally: Tally): Promise<void> {
  await Promise.all(Array.from({ length: o.concurrency }, async () => {
    while (Date.now() < until) {
      try {
        await oneExchange(kind, agent, httpUrl, wsUrl)
        tally.requests++
      } catch (err) {
        tally.errors++
        tally.lastError = (err as Error).message
        await sleep(50)
      }
    }
  }))
}

// ---- reloads and health flips -----------------------------------------------------------

interface ServicesBody { services: Array<{ name: string, endpoints: Array<{ id: string, health: string }> }> }

async function adminHealth (adminUrl: string, id: string): Promise<string | undefined> {
  const res = await request(`${adminUrl}/services`, { headersTimeout: 2000, bodyTimeout: 2000 })
  const body = await res.body.json() as ServicesBody
  return body.services.find((s) => s.name === 'soak')?.endpoints.find((e) => e.id === id)?.health
}

interface FlipStats { flips: number, missed: number, neverSeen: number, worstMs: number, missedDetail: string[] }

/** Flips endpoints 1.. in turn until `until`; each flip must show in /services within 2 probe intervals. */
async function runFlips (ups: readonly SoakUpstream[], adminUrl: string, until: number, stats: FlipStats): Promise<void> {
  let next = 1
  while (Date.now() < until) {
    const started = Date.now()
    const u = ups[next]!
    next = next + 1 < ups.length ? next + 1 : 1
    u.healthy = !u.healthy
    const want = u.healthy ? 'passing' : 'critical'
    stats.flips++
    const deadline = started + 2 * o.probeIntervalMs
    // Past the deadline it is missed; we keep looking (up to 10 intervals) to tell late from never.
    const giveUp = started + 10 * o.probeIntervalMs
    let seenAt: number | undefined
    while (Date.now() < giveUp) {
      try { if (await adminHealth(adminUrl, u.id) === want) { seenAt = Date.now(); break } } catch { /* admin busy: look again */ }
      await sleep(50)
    }
    if (seenAt === undefined || seenAt > deadline) {
      stats.missed++
      if (seenAt === undefined) stats.neverSeen++
      stats.missedDetail.push(`${new Date(started).toISOString()} ${u.id} -> ${want}: ${seenAt === undefined ? 'never seen' : `seen after ${seenAt - started} ms`}`)
    }
    if (seenAt !== undefined) stats.worstMs = Math.max(stats.worstMs, seenAt - started)
    await sleep(Math.max(0, started + o.flipEveryMs - Date.now()))
  }
}

async function runReloads (adminUrl: string, until: number, counts: { ok: number, failed: number }): Promise<void> {
  while (Date.now() < until) {
    await sleep(o.reloadEveryMs)
    try {
      const res = await request(`${adminUrl}/reload`, { method: 'POST', headersTimeout: 10_000, bodyTimeout: 10_000 })
      await res.body.dump()
      if (res.statusCode === 200) counts.ok++
      else counts.failed++
    } catch {
      counts.failed++
    }
  }
}

// ---- main -------------------------------------------------------------------------

let workDir: string | undefined

interface PhaseResult {
  readonly kind: Kind
  readonly seconds: number
  readonly exchanges: number
  readonly errors: number
  readonly lastError?: string
  readonly heapStartMiB: number
  readonly heapEndMiB: number
  readonly heapSlopeKiBPerMin: number
  readonly fdStart: number
  readonly fdEnd: number
  readonly fdSlopePerMin: number
  readonly samples: number
}

async function main (): Promise<void> {
  workDir = mkdtempSync(path.join(tmpdir(), 'fastmesh-soak-'))
  const ups = [await startSoakUpstream('soak-1'), await startSoakUpstream('soak-2'), await startSoakUpstream('soak-3')]
  const [httpPort, adminPort] = await freePorts(2)
  const configFile = path.join(workDir, 'soak.yaml')
  writeFileSync(configFile, configYaml(httpPort, adminPort, ups))
  const heapFile = path.join(workDir, 'heap.json')
  const logFile = path.join(workDir, 'gateway.log')
  const httpUrl = `http://127.0.0.1:${httpPort}`
  const wsUrl = `ws://127.0.0.1:${httpPort}/soak-ws`
  const adminUrl = `http://127.0.0.1:${adminPort}`
  const gw = spawnChild('gateway', process.execPath, {
    args: ['--expose-gc', '--import', pathToFileURL(GC_HOOK).href, CLI, 'start', '--config', configFile],
    env: { ...process.env, SOAK_HEAP_FILE: heapFile },
    logFile
  })
  const agent = new Agent({ keepAliveTimeout: 30_000, connections: o.concurrency })
  try {
    await waitForHttp(`${adminUrl}/ready`, gw)
    // Every endpoint passing before the clock starts.
    for (const u of ups) {
      const t0 = Date.now()
      while (await adminHealth(adminUrl, u.id) !== 'passing') {
        if (Date.now() - t0 > 10 * o.probeIntervalMs) throw new Error(`${u.id} never passed its first health check`)
        await sleep(50)
      }
    }
    // Unmeasured warm-up, every kind at once: JIT, pools and connections settle first.
    const warm: Tally = { requests: 0, errors: 0 }
    const warmEnd = Date.now() + o.warmupMs
    await Promise.all(KINDS.map(async (kind) => { await runTraffic(kind, warmEnd, agent, httpUrl, wsUrl, warm) }))
    const phaseMs = (o.minutes * 60_000) / KINDS.length
    const start = Date.now()
    const end = start + o.minutes * 60_000
    console.log(`soak: ${o.minutes} min (${KINDS.map((k) => `${k} ${Math.round(phaseMs / 1000)} s`).join(', ')}), concurrency ${o.concurrency}, reload every ${o.reloadEveryMs / 1000} s, flip every ${o.flipEveryMs / 1000} s, probe interval ${o.probeIntervalMs} ms, gateway pid ${gw.pid}`)
    const reloads = { ok: 0, failed: 0 }
    const flips: FlipStats = { flips: 0, missed: 0, neverSeen: 0, worstMs: 0, missedDetail: [] }
    const background = [runReloads(adminUrl, end, reloads), runFlips(ups, adminUrl, end, flips)]
    const phases: PhaseResult[] = []
    for (let i = 0; i < KINDS.length; i++) {
      const kind = KINDS[i]!
      const phaseEnd = start + (i + 1) * phaseMs
      const tally: Tally = { requests: 0, errors: 0 }
      const samples: Sample[] = []
      const first = await sample(gw, heapFile)
      if (first !== undefined) samples.push(first)
      const traffic = runTraffic(kind, phaseEnd, agent, httpUrl, wsUrl, tally)
      while (Date.now() + o.sampleEveryMs < phaseEnd) {
        await sleep(o.sampleEveryMs)
        const s = await sample(gw, heapFile)
        if (s !== undefined) samples.push(s)
      }
      await traffic
      const last = await sample(gw, heapFile)
      if (last !== undefined) samples.push(last)
      if (!isRunning(gw)) throw new Error(`the gateway exited during the ${kind} phase: ${await gw.exited}`)
      const phase: PhaseResult = {
        kind,
        seconds: Math.round(phaseMs / 1000),
        exchanges: tally.requests,
        errors: tally.errors,
        ...(tally.lastError !== undefined ? { lastError: tally.lastError } : {}),
        heapStartMiB: (samples[0]?.heapUsed ?? Number.NaN) / 2 ** 20,
        heapEndMiB: (samples.at(-1)?.heapUsed ?? Number.NaN) / 2 ** 20,
        heapSlopeKiBPerMin: slopePerMinute(samples, (s) => s.heapUsed / 1024),
        fdStart: samples[0]?.fds ?? Number.NaN,
        fdEnd: samples.at(-1)?.fds ?? Number.NaN,
        fdSlopePerMin: slopePerMinute(samples, (s) => s.fds),
        samples: samples.length
      }
      phases.push(phase)
      console.log(`  ${kind}: ${phase.exchanges} exchanges, ${phase.errors} errors, heap ${phase.heapStartMiB.toFixed(2)} -> ${phase.heapEndMiB.toFixed(2)} MiB`)
    }
    await Promise.all(background)
    const log = readFileSync(logFile, 'utf8')
    const unexpected = log.split('\n').filter((l) => l.includes('health probe failed unexpectedly')).length
    const healthChanges = log.split('\n').filter((l) => l.includes('"endpoint health changed"')).length

    const f = (n: number, d = 1): string => Number.isFinite(n) ? n.toFixed(d) : '-'
    console.log('\nkind   seconds  exchanges  errors  heap MiB (start->end)  heap KiB/min  fds (start->end)  fds/min  samples')
    for (const p of phases) {
      console.log(`${p.kind.padEnd(6)} ${String(p.seconds).padStart(7)}  ${String(p.exchanges).padStart(9)}  ${String(p.errors).padStart(6)}  ${`${f(p.heapStartMiB, 2)} -> ${f(p.heapEndMiB, 2)}`.padStart(21)}  ${f(p.heapSlopeKiBPerMin).padStart(12)}  ${`${p.fdStart} -> ${p.fdEnd}`.padStart(16)}  ${f(p.fdSlopePerMin).padStart(7)}  ${String(p.samples).padStart(7)}`)
    }
    if (o.workers > 1) console.log(`\nworkers: ${o.workers}; heap and fds above are the primary's (discovery, config, admin), not the workers'`)
    console.log(`\nreloads: ${reloads.ok} ok, ${reloads.failed} failed`)
    console.log(`health flips: ${flips.flips}, missed (not in /services within ${2 * o.probeIntervalMs} ms): ${flips.missed}, never seen: ${flips.neverSeen}, slowest seen: ${flips.worstMs} ms`)
    console.log(`gateway log: ${healthChanges} health changes logged, ${unexpected} unexpected probe failures`)
    for (const line of flips.missedDetail.slice(0, 10)) console.log(`  missed: ${line}`)
    for (const p of phases) if (p.lastError !== undefined) console.log(`  last ${p.kind} error: ${p.lastError}`)

    mkdirSync(path.dirname(o.out), { recursive: true })
    writeFileSync(o.out, JSON.stringify({ at: new Date().toISOString(), options: o, phases, reloads, flips, gatewayLog: { healthChanges, unexpected } }, null, 2) + '\n')
    const shown = path.relative(process.cwd(), o.out)
    console.log(`\nwritten: ${shown.startsWith('..') ? o.out : shown}`)
  } finally {
    await agent.close().catch(() => {})
    await stopChild(gw)
    await Promise.all(ups.map(closeUpstream))
    if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true })
  }
}

runBenchMain('soak', main, () => workDir)
