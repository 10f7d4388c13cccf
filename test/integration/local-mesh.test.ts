// `npm run mesh` (scripts/mesh.mjs) as a user runs it: the whole local mesh (Consul, three node
// gateways, the edge, the sample services, Prometheus when installed, a trace receiver) comes up
// on free ports, every curl line it prints answers as it says, a request's trace and every
// gateway's metrics can be read, and SIGINT leaves no process and no temp dir behind.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, existsSync } from 'node:fs'
import net from 'node:net'
import dgram from 'node:dgram'
import os from 'node:os'
import { readdirSync } from 'node:fs'
import path from 'node:path'
import { Agent, request } from 'undici'
import { PROJECT_ROOT } from '../helpers/consul.js'
import { loadConfigFile } from '../../src/config/load.js'
import { onProcessExit } from '../helpers/exit-hooks.js'
import { pidAlive } from '../helpers/tool-process.js'
import { setTimeout as sleep } from 'node:timers/promises'

const SCRIPT = path.join(PROJECT_ROOT, 'scripts', 'mesh.mjs')

/** Whether `name` is installed where mesh.mjs looks for it: .tools/bin, then PATH. */
function installed (name: string): boolean {
  return [path.join(PROJECT_ROOT, '.tools', 'bin'), ...(process.env.PATH ?? '').split(path.delimiter).filter((d) => d !== '')].some((dir) => {
    try { accessSync(path.join(dir, name), constants.X_OK); return true } catch { return false }
  })
}
const withPrometheus = installed('prometheus')
const withJaeger = installed('jaeger-all-in-one')

/** A base port whose next 100 TCP ports are free on loopback (the script checks again, and fails clearly on a clash). */
async function freeBase (): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    // Below Linux's ephemeral range (32768-60999): other tests' outgoing connections take
    // ports there at any moment, which made "only this port is in use" checks flaky.
    const base = 20_000 + Math.floor(Math.random() * 120) * 100
    let free = true
    for (let p = base; p < base + 100 && free; p++) {
      free = await new Promise<boolean>((resolve) => {
        const s = net.createServer()
        s.once('error', () => { resolve(false) })
        s.listen(p, '127.0.0.1', () => { s.close(() => { resolve(true) }) })
      })
    }
    if (free) return base
  }
  throw new Error('no block of 100 free loopback ports')
}

interface Curl { url: string, comment: string }

describe('npm run mesh: the local mesh as processes', () => {
  let mesh: ChildProcess
  let output = ''
  let exited: Promise<number | null>
  const curls: Curl[] = []
  const pids: number[] = []
  let tempDir = ''
  const http = new Agent()

  before(async () => {
    const base = await freeBase()
    mesh = spawn(process.execPath, [SCRIPT], { env: { ...process.env, FASTMESH_MESH_BASE_PORT: String(base) }, stdio: ['ignore', 'pipe', 'pipe'] })
    // If this test dies, the script still stops its children (SIGTERM, not SIGKILL, so it can).
    onProcessExit(() => { if (mesh.exitCode === null) mesh.kill('SIGTERM') })
    mesh.stdout!.on('data', (c: Buffer) => { output += c.toString('utf8') })
    mesh.stderr!.on('data', (c: Buffer) => { output += c.toString('utf8') })
    exited = new Promise((resolve) => { mesh.once('exit', (code) => { resolve(code) }) })
    // Up to 50 s: five processes and their Consul checks on a loaded 2-core machine.
    const deadline = Date.now() + 50_000
    while (!(output.includes('The mesh is up') && output.trimEnd().endsWith('# the Consul UI'))) {
      if (mesh.exitCode !== null) throw new Error(`mesh exited (code ${mesh.exitCode}) before it was up:\n${output}`)
      if (Date.now() > deadline) throw new Error(`mesh not up after 50 s:\n${output}`)
      await sleep(100)
    }
    for (const m of output.matchAll(/^ {2}curl '?([^\s']+)'?\s+# (.*)$/gm)) curls.push({ url: m[1]!, comment: m[2]! })
    for (const m of output.matchAll(/\(pid ([0-9]+)\)/g)) pids.push(Number(m[1]))
    tempDir = /logs and configs in (\S+)/.exec(output)?.[1] ?? ''
  })
  after(async () => {
    await http.close()
    if (mesh.exitCode === null && mesh.signalCode === null) {
      mesh.kill('SIGTERM')
      await exited
    }
  })

  function curl (pattern: RegExp): string {
    const c = curls.find((x) => pattern.test(x.comment))
    assert.ok(c !== undefined, `no curl line for ${pattern}: ${JSON.stringify(curls)}`)
    return c.url
  }

  async function get (url: string): Promise<{ status: number, body: string }> {
    const r = await request(url, { dispatcher: http })
    return { status: r.statusCode, body: await r.body.text() }
  }

  it('prints one ready line per component, with the process ids', () => {
    const processes = ['consul', ...(withJaeger ? ['jaeger'] : []), ...(withPrometheus ? ['prometheus'] : []), 'node-1', 'node-2', 'node-3', 'edge']
    for (const name of processes) assert.match(output, new RegExp(`✓ ${name} \\(pid [0-9]+\\)`))
    for (const service of ['web', 'orders', 'payments', 'orders-v2']) assert.match(output, new RegExp(`✓ service ${service}: passing in Consul`))
    assert.equal(pids.length, processes.length)
    if (withPrometheus) assert.match(output, /✓ prometheus: every gateway scraped, up = 1 for node-1, node-2, node-3, edge\n/)
    else assert.match(output, /– prometheus: not installed, skipped \(`npm run setup`/)
    if (!withJaeger) assert.match(output, /✓ traces: built-in receiver \(Jaeger is not installed\), curl http:\/\/127\.0\.0\.1:[0-9]+\/traces\n/)
    assert.ok(tempDir !== '' && existsSync(tempDir), tempDir)
  })

  it('every printed URL answers: edge routes, upstream listener, service graph, admin, Consul UI', async () => {
    assert.equal(curls.length, 10 + (withPrometheus ? 2 : 0), JSON.stringify(curls))
    for (const c of curls) {
      if (/rate-limited|denied/.test(c.comment)) continue // their own tests below
      const r = await get(c.url)
      assert.equal(r.status, 200, `${c.url} (${c.comment}): ${r.body.slice(0, 300)}`)
    }
    assert.equal(JSON.parse((await get(curl(/^web, through the edge/))).body).service, 'web')
    assert.equal(JSON.parse((await get(curl(/upstream listener: orders/))).body).service, 'orders')
  })

  it('a request through the edge can be found by its trace id, with spans of the edge and the node gateways', async () => {
    // The trace id of a request: web echoes the traceparent node-1 sent it.
    const r = await get(curl(/^web, through the edge/))
    assert.equal(r.status, 200, r.body)
    const traceparent = String(JSON.parse(r.body).traceparent)
    const traceId = /^00-([0-9a-f]{32})-[0-9a-f]{16}-01$/.exec(traceparent)?.[1]
    assert.ok(traceId !== undefined, `web saw no sampled traceparent: ${r.body}`)
    const traces = curl(/traces/)
    // The gateways export every second: every span of the trace within 10 s.
    const deadline = Date.now() + 10_000
    let seen = ''
    for (;;) {
      if (withJaeger) {
        const ui = new URL(traces).origin
        const t = await get(`${ui}/api/traces/${traceId}`)
        seen = t.body
        const processes = t.status === 200 ? Object.values(JSON.parse(t.body).data?.[0]?.processes ?? {}) as Array<{ serviceName: string }> : []
        const names = processes.map((p) => p.serviceName)
        if (names.includes('fastmesh-edge') && names.includes('fastmesh-node-1')) break
      } else {
        const t = await get(traces.replace(/\/traces$/, `/traces/${traceId}`))
        seen = t.body
        // edge server -> edge client -> node-1 server (inbound, caller edge) -> node-1 client to
        // web, then web's own calls (orders, payments) through node-1 and node-2 under it. Each
        // gateway exports on its own timer: until all of them are in, some lines are missing.
        const lines = t.status === 200 ? seen.trimEnd().split('\n') : []
        const list = (await get(traces)).body
        if (/^edge {2}GET web {2}SERVER {2}200 {2}[0-9.]+ ms .*route=web.*destination=web/.test(lines[0] ?? '') &&
          /^ {2}edge {2}GET web {2}CLIENT {2}200 /.test(lines[1] ?? '') &&
          /^ {4}node-1 {2}GET inbound:web {2}SERVER {2}200 .*local_service=web.*caller\.service=edge/.test(lines[2] ?? '') &&
          /^ {6}node-1 {2}GET web {2}CLIENT {2}200 /.test(lines[3] ?? '') &&
          /^ {8,}node-1 {2}GET \S+ {2}SERVER {2}200 .*destination=orders/m.test(seen) &&
          /^ {8,}node-2 {2}GET inbound:orders {2}SERVER {2}200 /m.test(seen) &&
          new RegExp(`^${traceId} {2}edge: GET web {2}[0-9]+ spans {2}edge,node-1,node-2 {2}[0-9.]+ ms$`, 'm').test(list)) break
        seen += `\n--- /traces ---\n${list}`
      }
      if (Date.now() > deadline) assert.fail(`trace ${traceId} not complete after 10 s: ${seen}`)
      await sleep(250)
    }
  })

  it('Prometheus scrapes all four gateways: up is 1 for each', async (t) => {
    if (!withPrometheus) {
      t.skip('prometheus is not installed (neither .tools/bin/prometheus nor on PATH): `npm run setup` installs it on Debian')
      return
    }
    const r = await get(curl(/^Prometheus: up per gateway/))
    assert.equal(r.status, 200, r.body)
    const result = JSON.parse(r.body).data.result as Array<{ metric: Record<string, string>, value: [number, string] }>
    const up = result.map((x) => `${x.metric.gateway}/${x.metric.role}=${x.value[1]}`).sort()
    assert.deepEqual(up, ['edge/edge=1', 'node-1/node=1', 'node-2/node=1', 'node-3/node=1'])
  })

  it('the canary route splits 90/10 between orders and orders-v2', async () => {
    const url = curl(/^canary/)
    const counts = new Map<string, number>()
    const N = 200
    for (let i = 0; i < N; i++) {
      const r = await get(url)
      assert.equal(r.status, 200, r.body)
      const service = JSON.parse(r.body).service as string
      counts.set(service, (counts.get(service) ?? 0) + 1)
    }
    // Binomial(200, 0.1): mean 20, sigma ~4.2; 5 sigma either side.
    const v2 = counts.get('orders-v2') ?? 0
    assert.ok(v2 >= 1 && v2 <= 41, `orders-v2 got ${v2} of ${N}: ${JSON.stringify([...counts])}`)
    assert.equal((counts.get('orders') ?? 0) + v2, N, JSON.stringify([...counts]))
  })

  it('the rate-limited route answers 429 after 5 requests', async () => {
    const url = curl(/^rate-limited/)
    const statuses: number[] = []
    for (let i = 0; i < 7; i++) statuses.push((await get(url)).status)
    // Nothing else calls this route: the window starts at the first of these.
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429])
  })

  it('the call an intention denies answers 403', async () => {
    const r = await get(curl(/denied by a Consul intention/))
    assert.equal(r.status, 403, r.body)
    assert.equal(JSON.parse(r.body).error.code, 'FASTMESH_ERR_FORBIDDEN')
  })

  it('SIGINT stops every child and removes the temp dir', async () => {
    mesh.kill('SIGINT')
    assert.equal(await exited, 0, output)
    assert.match(output, /mesh: stopped, temp dir removed/)
    for (const pid of pids) assert.equal(pidAlive(pid), false, `pid ${pid} still running`)
    assert.equal(existsSync(tempDir), false, `${tempDir} still exists`)
  })
})

describe('npm run mesh: a component that cannot start', () => {
  function run (base: number): Promise<{ code: number | null, stdout: string, stderr: string }> {
    const child = spawn(process.execPath, [SCRIPT], { env: { ...process.env, FASTMESH_MESH_BASE_PORT: String(base) }, stdio: ['ignore', 'pipe', 'pipe'] })
    onProcessExit(() => { if (child.exitCode === null) child.kill('SIGTERM') })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString('utf8') })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString('utf8') })
    return new Promise((resolve) => { child.once('close', (code) => { resolve({ code, stdout, stderr }) }) })
  }
  const tempDirs = (): string[] => readdirSync(os.tmpdir()).filter((f) => f.startsWith('fastmesh-mesh-'))

  it('a port in use fails before anything starts, naming the port and FASTMESH_MESH_BASE_PORT', async () => {
    const base = await freeBase()
    const squatter = net.createServer()
    await new Promise<void>((resolve) => { squatter.listen(base + 80, '127.0.0.1', resolve) })
    try {
      const r = await run(base)
      assert.equal(r.code, 1, r.stdout + r.stderr)
      assert.match(r.stderr, new RegExp(`port in use on 127\\.0\\.0\\.1: ${base + 80} \\(edge http\\).*FASTMESH_MESH_BASE_PORT`))
      assert.doesNotMatch(r.stdout, /✓/)
    } finally {
      squatter.close()
    }
  })

  it('Consul exiting at start (its DNS port taken) ends the mesh with exit 1 and Consul\'s last log lines, nothing left', async () => {
    const base = await freeBase()
    const before = tempDirs()
    const squatter = dgram.createSocket('udp4')
    await new Promise<void>((resolve) => { squatter.bind(base + 1, '127.0.0.1', resolve) })
    try {
      const r = await run(base)
      assert.equal(r.code, 1, r.stdout + r.stderr)
      assert.match(r.stderr, /✗ consul: exited \(code [0-9]+\) before it was ready/)
      assert.match(r.stderr, /last lines of consul's log[\s\S]*address already in use/)
      const dir = /logs and configs in (\S+)/.exec(r.stdout)?.[1]
      assert.ok(dir !== undefined && !existsSync(dir), r.stdout)
      assert.deepEqual(tempDirs().filter((d) => !before.includes(d)), [])
    } finally {
      squatter.close()
    }
  })
})

describe('mesh/: the configs of the local mesh', () => {
  it('each one is valid as it is, with no warnings (what `fastmesh validate` checks)', async () => {
    const files = readdirSync(path.join(PROJECT_ROOT, 'mesh')).filter((f) => f.endsWith('.yaml')).sort()
    assert.deepEqual(files, ['edge.yaml', 'node-1.yaml', 'node-2.yaml', 'node-3.yaml'])
    for (const f of files) {
      const loaded = await loadConfigFile(path.join(PROJECT_ROOT, 'mesh', f))
      assert.deepEqual(loaded.warnings ?? [], [], f)
    }
  })
})
