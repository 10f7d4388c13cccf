#!/usr/bin/env node
// `npm run mesh`: the local mesh as processes on this machine, from the configs in mesh/.
//
//   Consul dev agent (Connect CA on, in memory)
//   host 1: node-1 gateway + web            host 2: node-2 gateway + orders (v1) + payments
//   host 3: node-3 gateway + orders-v2      edge gateway: / -> web, /api/orders 90/10 v1/v2,
//                                           /api/payments rate-limited (5 per 10 s)
//   one intention: web -> payments denied (403)
//   Prometheus scraping every gateway's /metrics, when installed (`npm run setup` on Debian);
//   traces: Jaeger when `jaeger-all-in-one` is on PATH, else a small receiver in this script
//
// Started in order, one line per component once it is ready; then the URLs to try, as curl lines.
// Ctrl-C (SIGINT) or SIGTERM stops every child by its PID and removes the temp dir (logs,
// configs); Consul runs with -dev, so it keeps no data. When a component does not come up,
// the others are stopped and its last log lines printed (exit 1).
//
//   node scripts/mesh.mjs            (needs dist/: `npm run mesh` builds first)
//   FASTMESH_MESH_BASE_PORT=28500 npm run mesh
//
// Ports are the base (default 18500) plus: Consul HTTP +0 (DNS +1, Serf +2/+3, server +4),
// node-N outbound/inbound/admin +N1/+N2/+N3 (node-1: +11..+13), services web +41, orders +42,
// payments +43, orders-v2 +44, web's upstream listeners to orders +51 and payments +52,
// edge HTTP +80 and admin +90, Prometheus +95, OTLP/HTTP traces +96 (Jaeger: its UI +97, admin
// +98). The gateway configs in mesh/ are used as they are (their
// listener ports and Consul address come from the environment, as docker-compose gives them);
// with another base, copies with only the local service and upstream ports moved are written
// to the temp dir.
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import { gunzipSync } from 'node:zlib'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, createWriteStream, accessSync, constants } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { parse, stringify } from 'yaml'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const DEFAULT_BASE = 18500
const CONFIG_BASE = 18500 // the ports written in mesh/*.yaml
const READY_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 5_000

const baseText = process.env.FASTMESH_MESH_BASE_PORT ?? String(DEFAULT_BASE)
const base = Number(baseText)
if (!/^[0-9]+$/.test(baseText) || base < 1024 || base > 65535 - 100) {
  process.stderr.write(`FASTMESH_MESH_BASE_PORT must be a port number from 1024 to 65435 (the mesh uses the next 100), got "${baseText}"\n`)
  process.exit(2)
}

const port = {
  consul: { http: base, dns: base + 1, serfLan: base + 2, serfWan: base + 3, server: base + 4 },
  node: (n) => ({ outbound: base + n * 10 + 1, inbound: base + n * 10 + 2, admin: base + n * 10 + 3 }),
  web: base + 41, orders: base + 42, payments: base + 43, ordersV2: base + 44,
  webToOrders: base + 51, webToPayments: base + 52,
  edge: { http: base + 80, admin: base + 90 },
  prometheus: base + 95, traces: base + 96, jaegerUi: base + 97, jaegerAdmin: base + 98
}

// The hosts and their sample services (ports as written in mesh/*.yaml), shared with docker-compose.yml.
const TOPOLOGY = JSON.parse(readFileSync(path.join(ROOT, 'mesh', 'topology.json'), 'utf8'))
const HOSTS = TOPOLOGY.hosts.map((h) => ({
  name: h.name,
  file: h.config,
  services: h.services.map((s) => ({ name: s.name, instance: s.instance, port: s.port - CONFIG_BASE + base, calls: s.calls }))
}))

const consulBin = [path.join(ROOT, '.tools', 'bin', 'consul'), ...(process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d, 'consul'))]
  .find((p) => { try { accessSync(p, constants.X_OK); return true } catch { return false } })
const cli = path.join(ROOT, 'dist', 'src', 'cli', 'index.js')

const children = [] // { name, child, log, exited }
const sampleServices = []
let tmp
let stopping = null

function say (line) { process.stdout.write(line + '\n') }

async function main () {
  if (consulBin === undefined) throw new StartError('consul', 'Consul is not installed (neither .tools/bin/consul nor `consul` on PATH): run `npm run setup`.')
  if (!existsSync(cli)) throw new StartError('build', `${path.relative(ROOT, cli)} is missing: run \`npm run build\` (\`npm run mesh\` builds first).`)
  await checkPortsFree()
  tmp = mkdtempSync(path.join(os.tmpdir(), 'fastmesh-mesh-'))
  say(`mesh: base port ${base}, logs and configs in ${tmp}`)

  const consulAddr = `127.0.0.1:${port.consul.http}`
  await startProcess('consul', consulBin, [
    'agent', '-dev', '-bind', '127.0.0.1', '-client', '127.0.0.1',
    '-http-port', String(port.consul.http), '-dns-port', String(port.consul.dns),
    '-serf-lan-port', String(port.consul.serfLan), '-serf-wan-port', String(port.consul.serfWan),
    '-server-port', String(port.consul.server), '-grpc-port=-1', '-node', 'fastmesh-mesh',
    '-hcl', 'disable_update_check = true'
  ], {}, async () => {
    const leader = await getJson(`http://${consulAddr}/v1/status/leader`)
    const roots = await getJson(`http://${consulAddr}/v1/connect/ca/roots`)
    return typeof leader === 'string' && leader !== '' && Array.isArray(roots?.Roots) && roots.Roots.length > 0
  }, `leader elected, Connect CA on, http://${consulAddr}`)
  const traces = await startTraces()
  const prometheus = await startPrometheus()

  const { startSampleService } = await import(path.join(ROOT, 'dist', 'src', 'demo', 'sample-service.js'))
  for (const [n, host] of HOSTS.entries()) {
    for (const s of host.services) {
      try {
        // A calling service uses its node gateway's outbound listener as its HTTP proxy.
        const calls = s.calls !== undefined ? { services: s.calls, through: { proxy: `http://127.0.0.1:${port.node(n + 1).outbound}` } } : undefined
        sampleServices.push(await startSampleService(s.name, s.instance, s.port, '127.0.0.1', calls))
      } catch (err) {
        throw new StartError(`service ${s.name}`, `could not listen on 127.0.0.1:${s.port}: ${err.message}`)
      }
      say(`✓ service ${s.name} (${s.instance}) on 127.0.0.1:${s.port}, in this process${s.calls !== undefined ? `; calls ${s.calls.join(', ')} through ${host.name}` : ''}`)
    }
    const p = port.node(n + 1)
    await startGateway(host.name, host.file, {
      FASTMESH_OUTBOUND_PORT: String(p.outbound), FASTMESH_INBOUND_PORT: String(p.inbound), FASTMESH_ADMIN_PORT: String(p.admin),
      CONSUL_HTTP_ADDR: consulAddr
    }, p.admin)
    for (const s of host.services) {
      await waitFor(`service ${s.name}`, host.name, async () => {
        const passing = await getJson(`http://${consulAddr}/v1/health/connect/${s.name}?passing=1`)
        const own = await getJson(`http://${consulAddr}/v1/health/service/${s.name}?passing=1`)
        return Array.isArray(passing) && passing.length > 0 && Array.isArray(own) && own.length > 0
      })
      say(`✓ service ${s.name}: passing in Consul, with ${host.name} as its Connect proxy`)
    }
  }

  await startGateway(TOPOLOGY.edge.name, TOPOLOGY.edge.config, { FASTMESH_HTTP_PORT: String(port.edge.http), FASTMESH_ADMIN_PORT: String(port.edge.admin), CONSUL_HTTP_ADDR: consulAddr }, port.edge.admin)
  const edge = `http://127.0.0.1:${port.edge.http}`
  await waitFor('edge', 'edge', async () => (await fetchStatus(`${edge}/`)) === 200 && (await fetchStatus(`${edge}/api/orders/1`)) === 200)
  say(`✓ edge routes answering: ${edge}/ and ${edge}/api/orders`)

  for (const i of TOPOLOGY.intentions) {
    const intention = { SourceName: i.source, DestinationName: i.destination, Action: i.action, Description: 'fastmesh local mesh: shows a 403' }
    const res = await fetch(`http://${consulAddr}/v1/connect/intentions`, { method: 'POST', body: JSON.stringify(intention), signal: AbortSignal.timeout(5_000) })
    if (!res.ok) throw new StartError('intention', `Consul POST /v1/connect/intentions: HTTP ${res.status} ${await res.text()}`)
  }
  const denied = `http://127.0.0.1:${port.webToPayments}/pay`
  await waitFor('intention web -> payments', 'node-2', async () => (await fetchStatus(denied)) === 403)
  say('✓ intention web -> payments: deny (the call answers 403)')
  if (prometheus) await waitForScrapes()

  const n1 = port.node(1)
  say('')
  say('The mesh is up. Try (Ctrl-C stops everything):')
  const tries = [
    [`${edge}/hello`, 'web, through the edge and node-1 over mTLS'],
    [`${edge}/api/orders/1`, 'canary: 90% orders (v1), 10% orders-v2'],
    [`${edge}/api/payments/1`, 'rate-limited: 5 per 10 s per client, then 429'],
    [`http://127.0.0.1:${port.webToOrders}/orders/1`, "web's upstream listener: orders, as identity web"],
    [denied, 'web -> payments: denied by a Consul intention, 403'],
    [`http://127.0.0.1:${port.edge.admin}/ui`, 'the service graph (edge admin)'],
    [`http://127.0.0.1:${port.edge.admin}/metrics`, 'edge metrics (Prometheus text)'],
    ...(prometheus ? prometheusTries() : []),
    ...traces.tries,
    [`http://127.0.0.1:${n1.admin}/authz`, 'node-1 admin: authorization decisions'],
    [`http://127.0.0.1:${port.consul.http}/ui/`, 'the Consul UI']
  ]
  // Quoted where a shell would read ?, ( or ) (zsh refuses an unmatched glob).
  const words = tries.map(([url, what]) => [/[?()&*]/.test(url) ? `'${url}'` : url, what])
  const width = Math.max(...words.map(([url]) => url.length))
  for (const [url, what] of words) say(`  curl ${url.padEnd(width)}   # ${what}`)
}

class StartError extends Error {
  constructor (component, message) {
    super(message)
    this.component = component
  }
}

/** Every port the mesh binds must be free on 127.0.0.1, checked before anything starts. */
async function checkPortsFree () {
  const wanted = [
    ['consul http', port.consul.http], ['consul dns', port.consul.dns], ['consul serf lan', port.consul.serfLan],
    ['consul serf wan', port.consul.serfWan], ['consul server', port.consul.server],
    ...[1, 2, 3].flatMap((n) => Object.entries(port.node(n)).map(([k, v]) => [`node-${n} ${k}`, v])),
    ['web', port.web], ['orders', port.orders], ['payments', port.payments], ['orders-v2', port.ordersV2],
    ['web -> orders', port.webToOrders], ['web -> payments', port.webToPayments],
    ['edge http', port.edge.http], ['edge admin', port.edge.admin],
    ['prometheus', port.prometheus], ['traces (OTLP/HTTP)', port.traces], ['jaeger ui', port.jaegerUi], ['jaeger admin', port.jaegerAdmin]
  ]
  const taken = []
  for (const [what, p] of wanted) {
    const free = await new Promise((resolve) => {
      const s = net.createServer()
      s.once('error', () => resolve(false))
      s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)))
    })
    if (!free) taken.push(`${p} (${what})`)
  }
  if (taken.length > 0) {
    throw new StartError('ports', `port${taken.length > 1 ? 's' : ''} in use on 127.0.0.1: ${taken.join(', ')}. ` +
      'Stop what uses them, or run with another base: FASTMESH_MESH_BASE_PORT=28500 npm run mesh')
  }
}

/** The config as it runs: the file in mesh/ itself, or (another base port) a copy with its local ports moved. */
function configFor (file) {
  const original = path.join(ROOT, 'mesh', file)
  if (base === CONFIG_BASE) return original
  const doc = parse(readFileSync(original, 'utf8'))
  const move = (p) => p - CONFIG_BASE + base
  for (const local of doc.localServices ?? []) {
    const was = local.port
    local.port = move(local.port)
    if (local.check?.http !== undefined) local.check.http = local.check.http.replace(`:${was}/`, `:${local.port}/`)
    for (const u of local.upstreams ?? []) u.port = move(u.port)
  }
  const copy = path.join(tmp, file)
  writeFileSync(copy, `# ${file} with local ports moved to base ${base}\n${stringify(doc)}`)
  return copy
}

/**
 * A gateway's command line, as docker-compose.yml runs it too: its file in mesh/ is the base,
 * and its Consul KV key (empty at first) a layer over it, watched, so `fastmesh config push
 * FILE --base mesh/<name>.yaml` changes a running gateway (docs/tutorial.md).
 */
function gatewayArgs (name, config) {
  return ['start', '--config', config, '--kv', `fastmesh/config/${name}`]
}

async function startGateway (name, file, env, adminPort) {
  const config = configFor(file)
  await startProcess(name, process.execPath, [cli, ...gatewayArgs(name, config)], { ...tracingEnv, ...env },
    async () => (await fetchStatus(`http://127.0.0.1:${adminPort}/ready`)) === 200,
    `admin /ready, ${path.relative(ROOT, config).startsWith('..') ? config : path.relative(ROOT, config)}`)
}

async function startProcess (name, command, args, env, ready, detail) {
  const logFile = path.join(tmp, `${name}.log`)
  const log = createWriteStream(logFile)
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const entry = { name, child, logFile, exited: null }
  children.push(entry)
  child.stdout.pipe(log, { end: false })
  child.stderr.pipe(log, { end: false })
  entry.exit = new Promise((resolve) => child.once('exit', (code, signal) => { entry.exited = { code, signal }; resolve() }))
  // Once its output is all in the log file (to quote its last lines when it failed).
  entry.logged = new Promise((resolve) => child.once('close', () => log.end(resolve)))
  await new Promise((resolve, reject) => {
    child.once('spawn', resolve)
    child.once('error', (err) => reject(new StartError(name, `could not start ${command}: ${err.message}`)))
  })
  await waitFor(name, name, ready)
  say(`✓ ${name} (pid ${child.pid}): ${detail}`)
}

/** Polls `ready` until it is true; fails when the time is up or the component's process exits. */
async function waitFor (what, processName, ready) {
  const deadline = Date.now() + READY_TIMEOUT_MS
  const entry = children.find((c) => c.name === processName)
  for (;;) {
    if (stopping !== null) throw new StartError(what, 'stopped while starting')
    if (entry?.exited) throw new StartError(processName, `exited (${entry.exited.signal ?? `code ${entry.exited.code}`}) before it was ready`)
    try {
      if (await ready()) return
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new StartError(processName ?? what, `${what} was not ready after ${READY_TIMEOUT_MS / 1000} s`)
    await sleep(200)
  }
}

async function getJson (url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) })
  if (!res.ok) throw new Error(`${res.status}`)
  return res.json()
}

async function fetchStatus (url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) })
  await res.arrayBuffer()
  return res.status
}

function lastLines (file, count) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-count).join('\n')
  } catch {
    return '(no log)'
  }
}

// --- metrics and traces ------------------------------------------------------------------

/** The first of `names` found as an executable in .tools/bin or on PATH, or undefined. */
function findTool (...names) {
  const dirs = [path.join(ROOT, '.tools', 'bin'), ...(process.env.PATH ?? '').split(path.delimiter).filter((d) => d !== '')]
  for (const name of names) {
    for (const dir of dirs) {
      const p = path.join(dir, name)
      try { accessSync(p, constants.X_OK); return p } catch { /* not here */ }
    }
  }
  return undefined
}

/** Every gateway: its name, role and admin port (the metrics Prometheus scrapes). */
function gateways () {
  return [
    ...HOSTS.map((h, i) => ({ name: h.name, role: 'node', admin: port.node(i + 1).admin })),
    { name: TOPOLOGY.edge.name, role: 'edge', admin: port.edge.admin }
  ]
}

/**
 * Prometheus, when installed, scraping every gateway's admin /metrics every 5 s; its data in
 * the temp dir. Static targets, not Consul SD as in mesh/prometheus.yml: Debian's Prometheus
 * (what `npm run setup` installs) is built without consul_sd_configs. Started before the
 * gateways: its first scrape comes 5 to 10 s after it starts, while they start. Returns
 * whether it runs.
 */
async function startPrometheus () {
  const bin = findTool('prometheus')
  if (bin === undefined) {
    say('– prometheus: not installed, skipped (`npm run setup` puts it in .tools/bin on Debian; or put `prometheus` on PATH)')
    return false
  }
  const all = gateways()
  const config = {
    global: { scrape_interval: '5s', evaluation_interval: '5s' },
    scrape_configs: [{
      job_name: 'fastmesh',
      metrics_path: '/metrics',
      static_configs: all.map((g) => ({ targets: [`127.0.0.1:${g.admin}`], labels: { gateway: g.name, role: g.role } }))
    }]
  }
  const configFile = path.join(tmp, 'prometheus.yml')
  writeFileSync(configFile, `# Written by scripts/mesh.mjs: every gateway of the local mesh, scraped on loopback.\n${stringify(config)}`)
  const url = `http://127.0.0.1:${port.prometheus}`
  await startProcess('prometheus', bin, [
    `--config.file=${configFile}`, `--storage.tsdb.path=${path.join(tmp, 'prometheus-data')}`,
    `--web.listen-address=127.0.0.1:${port.prometheus}`
  ], {}, async () => (await fetchStatus(`${url}/-/ready`)) === 200, `${url}, scraping ${all.length} gateways every 5 s`)
  return true
}

/** Until Prometheus has scraped every gateway since it came up: `up` is 1 for each. */
async function waitForScrapes () {
  const all = gateways()
  await waitFor('prometheus scrapes', 'prometheus', async () => {
    const up = await getJson(`http://127.0.0.1:${port.prometheus}/api/v1/query?query=up`)
    const result = up?.data?.result ?? []
    return all.every((g) => result.some((r) => r.metric.gateway === g.name && r.value[1] === '1'))
  })
  say(`✓ prometheus: every gateway scraped, up = 1 for ${all.map((g) => g.name).join(', ')}`)
}

function prometheusTries () {
  const query = `http://127.0.0.1:${port.prometheus}/api/v1/query?query=`
  return [
    [`${query}up`, 'Prometheus: up per gateway (1: scraped)'],
    [`${query}sum%20by%20(gateway)%20(fastmesh_requests_total)`, 'Prometheus: requests per gateway']
  ]
}

/** FASTMESH_TRACING_* for every gateway (src/config/load.ts): spans of every request go to the receiver. */
let tracingEnv = {}
let traceReceiver

/**
 * Where the gateways send their spans: Jaeger when `jaeger-all-in-one` is on PATH, else the
 * small receiver below, in this process. Returns the Try lines for it.
 */
async function startTraces () {
  const endpoint = `http://127.0.0.1:${port.traces}`
  tracingEnv = { FASTMESH_TRACING_ENDPOINT: endpoint, FASTMESH_TRACING_RATIO: '1' }
  const hint = 'web echoes the traceparent it received: its second field is the trace id'
  // Jaeger v1's all-in-one binary: its flags below. (Jaeger v2, `jaeger`, is configured by a
  // YAML file instead; not started here yet, the built-in receiver serves then.)
  const jaeger = findTool('jaeger-all-in-one')
  if (jaeger !== undefined) {
    const ui = `http://127.0.0.1:${port.jaegerUi}`
    // Its other listeners (OTLP gRPC, Thrift, sampling) keep Jaeger's default ports.
    await startProcess('jaeger', jaeger, [
      '--collector.otlp.enabled=true', `--collector.otlp.http.host-port=127.0.0.1:${port.traces}`,
      `--query.http-server.host-port=127.0.0.1:${port.jaegerUi}`, `--admin.http.host-port=127.0.0.1:${port.jaegerAdmin}`
    ], {}, async () => (await fetchStatus(`http://127.0.0.1:${port.jaegerAdmin}/`)) === 200 && (await fetchStatus(`${ui}/api/services`)) === 200,
    `OTLP/HTTP ${endpoint}, UI ${ui}`)
    return { tries: [[`${ui}/api/traces?service=fastmesh-edge&limit=5`, `traces (Jaeger); one: ${ui}/trace/<trace id>; ${hint}`]] }
  }
  traceReceiver = createServer(traceRequest)
  await new Promise((resolve, reject) => {
    traceReceiver.once('error', (err) => reject(new StartError('traces', `could not listen on 127.0.0.1:${port.traces}: ${err.message}`)))
    traceReceiver.listen(port.traces, '127.0.0.1', resolve)
  })
  say(`✓ traces: built-in receiver (Jaeger is not installed), curl ${endpoint}/traces`)
  return { tries: [[`${endpoint}/traces`, `recent traces; one as a tree: ${endpoint}/traces/<trace id>; ${hint}`]] }
}

// The built-in trace receiver: a demo viewer, not a product. It takes what the gateways'
// OTLP/HTTP exporter sends (JSON, POST /v1/traces), keeps the spans of the last
// MAX_TRACES traces in memory, and shows them as plain text for curl. For real use,
// install Jaeger (or any OTLP collector) and point FASTMESH_TRACING_ENDPOINT at it.
const MAX_TRACES = 200
const MAX_SPANS_PER_TRACE = 500
const MAX_EXPORT_BYTES = 8 * 1024 * 1024
const SPAN_KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER']
/** trace id -> its spans, oldest trace first (a Map keeps insertion order). */
const tracesById = new Map()

function traceRequest (req, res) {
  const reply = (status, text) => { res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' }); res.end(text) }
  const url = new URL(req.url ?? '/', 'http://receiver')
  if (req.method === 'POST' && url.pathname === '/v1/traces') {
    const type = req.headers['content-type'] ?? ''
    if (!type.startsWith('application/json')) {
      say(`traces: refused an export in ${type || 'no content type'} (415): the built-in receiver reads OTLP/HTTP JSON only`)
      req.resume()
      return reply(415, 'the built-in receiver reads OTLP/HTTP JSON (application/json) only\n')
    }
    const chunks = []
    let size = 0
    req.on('data', (c) => { size += c.length; if (size <= MAX_EXPORT_BYTES) chunks.push(c) })
    req.on('end', () => {
      if (size > MAX_EXPORT_BYTES) return reply(413, `export larger than ${MAX_EXPORT_BYTES} bytes\n`)
      try {
        const body = Buffer.concat(chunks)
        keepSpans(JSON.parse((req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body).toString('utf8')))
      } catch (err) {
        return reply(400, `not an OTLP JSON export: ${err.message}\n`)
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{}')
    })
    return
  }
  if (req.method !== 'GET') return reply(405, 'GET /traces, GET /traces/<trace id>, POST /v1/traces\n')
  if (url.pathname === '/traces' || url.pathname === '/traces/') {
    const lines = [...tracesById.entries()].reverse().map(([id, spans]) => traceSummary(id, spans))
    return reply(200, lines.length > 0 ? lines.join('\n') + '\n' : 'no traces yet: send a request through the mesh (spans arrive within a few seconds)\n')
  }
  if (url.pathname.startsWith('/traces/')) {
    // A trace id, or a whole traceparent (00-<trace id>-<span id>-01) as web echoes it.
    const asked = decodeURIComponent(url.pathname.slice('/traces/'.length)).trim().toLowerCase()
    const id = /^00-([0-9a-f]{32})-/.exec(asked)?.[1] ?? asked
    const spans = tracesById.get(id)
    if (spans === undefined) return reply(404, `no trace ${id} here (the last ${MAX_TRACES} are kept; spans arrive within a few seconds); see /traces\n`)
    return reply(200, traceTree(spans))
  }
  reply(404, 'GET /traces, GET /traces/<trace id>\n')
}

/** An attribute list ([{ key, value: { stringValue | intValue | ... } }]) as a Map of plain values. */
function attributesOf (list) {
  const out = new Map()
  for (const a of list ?? []) {
    const v = a.value ?? {}
    out.set(a.key, v.stringValue ?? v.intValue ?? v.doubleValue ?? v.boolValue ?? JSON.stringify(v))
  }
  return out
}

/** Nanoseconds (a decimal string, a number, or { low, high }) as milliseconds. */
function nanosToMs (t) {
  if (t !== null && typeof t === 'object') return ((t.high >>> 0) * 2 ** 32 + (t.low >>> 0)) / 1e6
  return Number(BigInt(t ?? 0)) / 1e6
}

function keepSpans (request) {
  for (const rs of request.resourceSpans ?? []) {
    const resource = attributesOf(rs.resource?.attributes)
    const service = String(resource.get('fastmesh.gateway.name') ?? resource.get('service.name') ?? '?')
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        const id = String(s.traceId)
        let spans = tracesById.get(id)
        if (spans === undefined) {
          if (tracesById.size >= MAX_TRACES) tracesById.delete(tracesById.keys().next().value)
          tracesById.set(id, spans = [])
        }
        if (spans.length >= MAX_SPANS_PER_TRACE) continue
        spans.push({
          service,
          id: String(s.spanId),
          parent: s.parentSpanId ? String(s.parentSpanId) : '',
          name: String(s.name),
          kind: SPAN_KINDS[s.kind] ?? String(s.kind),
          start: nanosToMs(s.startTimeUnixNano),
          end: nanosToMs(s.endTimeUnixNano),
          attributes: attributesOf(s.attributes)
        })
      }
    }
  }
}

/** One line: trace id, root span, span count, services, duration. */
function traceSummary (id, spans) {
  const ids = new Set(spans.map((s) => s.id))
  const root = spans.find((s) => s.parent === '' || !ids.has(s.parent)) ?? spans[0]
  const start = Math.min(...spans.map((s) => s.start))
  const end = Math.max(...spans.map((s) => s.end))
  const services = [...new Set([...spans].sort((a, b) => a.start - b.start).map((s) => s.service))].join(',')
  return `${id}  ${root.service}: ${root.name}  ${spans.length} span${spans.length === 1 ? '' : 's'}  ${services}  ${(end - start).toFixed(1)} ms`
}

/** The spans as a tree (parent, then its children indented, by start time); one line each. */
function traceTree (spans) {
  const ids = new Set(spans.map((s) => s.id))
  const byStart = [...spans].sort((a, b) => a.start - b.start)
  const lines = []
  const walk = (span, depth) => {
    const a = span.attributes
    const status = a.get('http.response.status_code')
    const mesh = [...a].filter(([k]) => k.startsWith('fastmesh.')).map(([k, v]) => `${k.slice('fastmesh.'.length)}=${v}`)
    lines.push(`${'  '.repeat(depth)}${span.service}  ${span.name}  ${span.kind}  ${status ?? '-'}  ${(span.end - span.start).toFixed(1)} ms  ${mesh.join(' ')}`.trimEnd())
    for (const child of byStart) if (child.parent === span.id) walk(child, depth + 1)
  }
  for (const root of byStart) if (root.parent === '' || !ids.has(root.parent)) walk(root, 0)
  return lines.join('\n') + '\n'
}

/** Stops the children in reverse order (edge first, Consul last), each by PID; then removes the temp dir. */
function stopAll () {
  stopping ??= (async () => {
    for (const entry of [...children].reverse()) {
      if (entry.exited) continue
      entry.child.kill('SIGTERM')
      const timer = setTimeout(() => { if (!entry.exited) entry.child.kill('SIGKILL') }, STOP_TIMEOUT_MS)
      await entry.exit
      clearTimeout(timer)
    }
    await Promise.all(sampleServices.map(async (s) => await s.close()))
    if (traceReceiver !== undefined) await new Promise((resolve) => { traceReceiver.closeAllConnections(); traceReceiver.close(resolve) })
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true })
  })()
  return stopping
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    say(`\nmesh: ${signal}, stopping ${children.filter((c) => !c.exited).map((c) => `${c.name} (pid ${c.child.pid})`).join(', ') || 'nothing'}`)
    void stopAll().then(() => { say('mesh: stopped, temp dir removed'); process.exit(0) })
  })
}
// A crash of this script must not leave children behind either.
process.once('exit', () => { for (const c of children) if (!c.exited) c.child.kill('SIGKILL') })

try {
  await main()
} catch (err) {
  if (stopping === null) {
    const entry = children.find((c) => c.name === err.component)
    process.stderr.write(`✗ ${err.component ?? 'mesh'}: ${err.message}\n`)
    if (entry?.exited) await Promise.race([entry.logged, sleep(2_000)])
    if (entry !== undefined) process.stderr.write(`--- last lines of ${entry.name}'s log ---\n${lastLines(entry.logFile, 30)}\n`)
    await stopAll()
    process.exit(1)
  }
}
