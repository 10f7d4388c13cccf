#!/usr/bin/env node
// `npm run mesh`: the local mesh as processes on this machine, from the configs in mesh/.
//
//   Consul dev agent (Connect CA on, in memory)
//   host 1: node-1 gateway + web            host 2: node-2 gateway + orders (v1) + payments
//   host 3: node-3 gateway + orders-v2      edge gateway: / -> web, /api/orders 90/10 v1/v2,
//                                           /api/payments rate-limited (5 per 10 s)
//   one intention: web -> payments denied (403)
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
// edge HTTP +80 and admin +90. The gateway configs in mesh/ are used as they are (their
// listener ports and Consul address come from the environment, as docker-compose gives them);
// with another base, copies with only the local service and upstream ports moved are written
// to the temp dir.
import { spawn } from 'node:child_process'
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
  edge: { http: base + 80, admin: base + 90 }
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
    [`http://127.0.0.1:${n1.admin}/authz`, 'node-1 admin: authorization decisions'],
    [`http://127.0.0.1:${port.consul.http}/ui/`, 'the Consul UI']
  ]
  const width = Math.max(...tries.map(([url]) => url.length))
  for (const [url, what] of tries) say(`  curl ${url.padEnd(width)}   # ${what}`)
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
    ['edge http', port.edge.http], ['edge admin', port.edge.admin]
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
  await startProcess(name, process.execPath, [cli, ...gatewayArgs(name, config)], env,
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
