// gateway.workers: a primary and N node:cluster workers run as `fastmesh start` runs them,
// with real traffic over loopback. The workers share the port and serve; the admin API
// (in the primary) counts their requests and says which version each runs; a reload
// reaches every worker or none; a killed worker is replaced while the others keep their
// connections.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js'
import { startUpstream } from '../helpers/upstreams.js'
import { eventually, fixturePlugin, tempDir, type LogEntry } from '../helpers/gateway.js'

interface WorkerRow { index: number, pid: number, state: string, restarts: number, version: number | null, ready: boolean }

async function workers (g: GatewayProcess): Promise<{ primary: number, version: number, workers: WorkerRow[] }> {
  const res = await request(`${g.adminUrl}/workers`)
  return await res.body.json() as { primary: number, version: number, workers: WorkerRow[] }
}

/** The sum of fastmesh_requests_total over every series, as /metrics renders it. */
async function requestsCounted (g: GatewayProcess): Promise<number> {
  const text = await (await request(`${g.adminUrl}/metrics`)).body.text()
  let sum = 0
  for (const line of text.split('\n')) if (line.startsWith('fastmesh_requests_total{')) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  return sum
}

function configDoc (upstreamPort: number, extra: { plugins?: unknown[], customPlugins?: Record<string, unknown>, prefix?: string } = {}): Record<string, unknown> {
  return {
    gateway: { name: 'edge-w', workers: 2 },
    listeners: { http: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } },
    discovery: { embedded: { services: { up: { endpoints: [{ id: 'up-1', address: '127.0.0.1', port: upstreamPort }] } } } },
    ...(extra.customPlugins !== undefined ? { customPlugins: extra.customPlugins } : {}),
    routes: [{ name: 'all', match: { path: { prefix: extra.prefix ?? '/' } }, destination: { service: 'up' }, ...(extra.plugins !== undefined ? { plugins: extra.plugins } : {}) }]
  }
}

/** Which process wrote each access line, by request id. */
function servedBy (g: GatewayProcess): Map<string, number> {
  const out = new Map<string, number>()
  for (const e of g.logs() as Array<LogEntry & { log?: string, requestId?: string, pid?: number }>) if (e.log === 'access' && e.requestId !== undefined) out.set(e.requestId, e.pid!)
  return out
}

async function startWorkersGateway (t: Parameters<typeof startGatewayProcess>[0], doc: Record<string, unknown>): Promise<{ g: GatewayProcess, file: string }> {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.json')
  await writeFile(file, JSON.stringify(doc))
  // Round-robin hand-off, so which worker takes a connection does not depend on timing.
  const g = await startGatewayProcess(t, ['--config', file], { NODE_CLUSTER_SCHED_POLICY: 'rr' })
  return { g, file }
}

test('two workers share the port and both serve; /metrics counts every request once; /workers says who runs what', async (t) => {
  const up = await startUpstream(t, (req, res) => { res.end(`up ${req.url}`) })
  const { g } = await startWorkersGateway(t, configDoc(up.port))
  const w = await workers(g)
  assert.equal(w.primary, g.pid)
  assert.equal(w.workers.length, 2)
  const pids = new Set(w.workers.map((x) => x.pid))
  assert.equal(pids.size, 2, 'two distinct worker processes')
  assert.ok(!pids.has(g.pid), 'the primary does not serve')
  for (const row of w.workers) {
    assert.equal(row.state, 'ready')
    assert.equal(row.version, 1)
  }
  // A fresh connection per request: each is handed to a worker in turn.
  const total = 40
  for (let i = 0; i < total; i++) {
    const res = await request(`${g.url}/r${i}`, { headers: { 'x-request-id': `one-${i}`, connection: 'close' } })
    assert.equal(res.statusCode, 200)
    assert.equal(await res.body.text(), `up /r${i}`)
  }
  const served = await eventually(() => { const s = servedBy(g); return s.size >= total ? s : undefined }, 'every access line', 10_000)
  const byPid = new Map<number, number>()
  for (const pid of served.values()) byPid.set(pid, (byPid.get(pid) ?? 0) + 1)
  assert.deepEqual(new Set(byPid.keys()), pids, 'only the workers served, and both did')
  for (const [pid, n] of byPid) assert.ok(n >= total / 4, `worker ${pid} served ${n} of ${total}`)
  assert.equal(await requestsCounted(g), total, 'fastmesh_requests_total sums the workers')
  // The service graph counts the workers' requests too (refreshed every 5 s).
  await eventually(async () => {
    const graph = await (await request(`${g.adminUrl}/ui/graph/local`)).body.json() as { edges: Array<{ destination: string, total: number }> }
    return graph.edges.find((e) => e.destination === 'up')?.total === total ? true : undefined
  }, 'the graph to count every request', 15_000)
  // SIGHUP is the primary's reload signal; one reaching a worker (pkill -HUP) must not kill it.
  for (const pid of pids) process.kill(pid, 'SIGHUP')
  for (let i = 0; i < 10; i++) {
    const res = await request(`${g.url}/h${i}`, { headers: { connection: 'close' } })
    assert.equal(res.statusCode, 200)
    await res.body.dump()
  }
  const after = await workers(g)
  assert.deepEqual(new Set(after.workers.map((x) => x.pid)), pids, 'no worker was replaced')
  assert.ok(!g.logs().some((e) => e.msg === 'worker exited; starting a replacement'))
  const ready = await request(`${g.adminUrl}/ready`)
  assert.equal(ready.statusCode, 200)
  await ready.body.dump()
})

test('a reload reaches every worker or none: a version one worker cannot build is refused everywhere', async (t) => {
  const up = await startUpstream(t, (req, res) => { res.end(`${req.url} fixture=${String(req.headers['x-fixture'] ?? '-')}`) })
  const { g, file } = await startWorkersGateway(t, configDoc(up.port))
  const dir = join(file, '..')
  const reload = async (): Promise<{ status: number, body: Record<string, unknown> }> => {
    const res = await request(`${g.adminUrl}/reload`, { method: 'POST' })
    return { status: res.statusCode, body: await res.body.json() as Record<string, unknown> }
  }
  // Accepted: every worker serves version 2 once the reload answers.
  await writeFile(file, JSON.stringify(configDoc(up.port, { prefix: '/v2' })))
  const ok = await reload()
  assert.equal(ok.status, 200, JSON.stringify(ok.body))
  assert.equal(ok.body.version, 2)
  for (const row of (await workers(g)).workers) assert.equal(row.version, 2, `worker ${row.index} serves version 2`)
  for (let i = 0; i < 10; i++) {
    const res = await request(`${g.url}/v2/x`, { headers: { connection: 'close' } })
    assert.equal(res.statusCode, 200)
    await res.body.dump()
    const old = await request(`${g.url}/x`, { headers: { connection: 'close' } })
    assert.equal(old.statusCode, 404, 'no worker serves the old route')
    await old.body.dump()
  }
  // Refused: worker 2 cannot build it, so worker 1 (which could) does not serve it either.
  await writeFile(file, JSON.stringify(configDoc(up.port, {
    prefix: '/v3',
    customPlugins: { 'fail-in-worker': { module: fixturePlugin(dir, 'fail-in-worker.js') } },
    plugins: [{ name: 'fail-in-worker', options: { worker: '2', value: 'v3' } }]
  })))
  const refused = await reload()
  assert.equal(refused.status, 409, JSON.stringify(refused.body))
  const error = refused.body.error as { code: string, message: string }
  assert.equal(error.code, 'FASTMESH_ERR_ADMIN_RELOAD_FAILED')
  assert.match(error.message, /Not every worker could build the new version: worker 2 \(pid \d+\) could not build version 3: .*refuses to register in worker 2/)
  const after = await workers(g)
  assert.equal(after.version, 2)
  for (const row of after.workers) assert.equal(row.version, 2, `worker ${row.index} still serves version 2`)
  for (let i = 0; i < 10; i++) {
    const res = await request(`${g.url}/v2/y`, { headers: { connection: 'close' } })
    assert.equal(res.statusCode, 200)
    assert.equal(await res.body.text(), '/v2/y fixture=-', 'served by version 2, without the refused plugin')
    const v3 = await request(`${g.url}/v3/y`, { headers: { connection: 'close' } })
    assert.equal(v3.statusCode, 404)
    await v3.body.dump()
  }
  const config = await (await request(`${g.adminUrl}/config`)).body.json() as { lastReload: { ok: boolean, error: string } }
  assert.equal(config.lastReload.ok, false)
})

test('a killed worker is replaced; only the connections it held see errors, none after', async (t) => {
  const up = await startUpstream(t, (_req, res) => { setTimeout(() => { res.end('ok') }, 2) })
  const { g } = await startWorkersGateway(t, configDoc(up.port))
  const before = await workers(g)
  const victim = before.workers[0]!
  const survivor = before.workers[1]!
  // Eight keep-alive connections, each its own client with one socket: round-robin gives
  // each worker four.
  const clients = Array.from({ length: 8 }, () => new Agent({ connections: 1, pipelining: 1, keepAliveTimeout: 60_000 }))
  t.after(async () => { await Promise.all(clients.map(async (c) => { await c.close() })) })
  interface Sent { id: string, client: number, status: number, phase: 'before' | 'during' | 'after' }
  const sent: Sent[] = []
  let phase: Sent['phase'] = 'before'
  let seq = 0
  const one = async (client: number): Promise<void> => {
    const id = `k-${client}-${seq++}`
    const at = phase
    try {
      const res = await request(`${g.url}/x`, { dispatcher: clients[client], headers: { 'x-request-id': id } })
      await res.body.dump()
      sent.push({ id, client, status: res.statusCode, phase: at })
    } catch {
      sent.push({ id, client, status: 0, phase: at })
    }
  }
  const running = { on: true }
  const loops = clients.map(async (_, i) => { while (running.on) await one(i) })
  await eventually(() => sent.length >= 200 ? true : undefined, '200 requests before the kill', 20_000)
  const countedBefore = await requestsCounted(g)
  assert.ok(countedBefore >= 150, `${countedBefore} counted before the kill`)
  phase = 'during'
  process.kill(victim.pid, 'SIGKILL')
  const replaced = await eventually(async () => {
    const w = (await workers(g)).workers.find((x) => x.index === victim.index)
    return w !== undefined && w.pid !== victim.pid && w.state === 'ready' ? w : undefined
  }, 'a replacement worker', 20_000)
  assert.equal(replaced.restarts, 1)
  phase = 'after'
  await eventually(() => sent.filter((s) => s.phase === 'after').length >= 200 ? true : undefined, '200 requests after the replacement', 20_000)
  running.on = false
  await Promise.all(loops)

  // Which worker each client's connection was on before the kill: a client the survivor
  // logged a request of (its access lines are written within a second; the killed worker's
  // buffered ones died with it), else the victim's. One connection per client: one worker.
  const served = servedBy(g)
  const onSurvivor = new Set(sent.filter((s) => s.phase === 'before' && served.get(s.id) === survivor.pid).map((s) => s.client))
  const onVictim = new Set(clients.map((_, i) => i).filter((i) => !onSurvivor.has(i)))
  assert.ok(onVictim.size > 0 && onSurvivor.size > 0, `both workers held connections (victim ${[...onVictim].join(',')}, survivor ${[...onSurvivor].join(',')})`)
  assert.ok(sent.filter((s) => s.phase === 'before').every((s) => !served.has(s.id) || served.get(s.id) === survivor.pid || served.get(s.id) === victim.pid))
  const failures = sent.filter((s) => s.status !== 200)
  for (const f of failures) {
    assert.notEqual(f.phase, 'after', `no failure after the replacement (${f.id}: ${f.status})`)
    assert.ok(onVictim.has(f.client), `a failure only on a connection the killed worker held (${f.id} on client ${f.client})`)
  }
  // Requests sent before the kill fail only if they were still in flight on the victim.
  assert.ok(failures.length <= onVictim.size * 2, `${failures.length} failures`)
  const survivorRow = (await workers(g)).workers.find((x) => x.index === survivor.index)!
  assert.equal(survivorRow.pid, survivor.pid, 'the other worker was not restarted')
  assert.equal(survivorRow.restarts, 0)
  assert.ok(g.logs().some((e) => e.msg === 'worker exited; starting a replacement'), 'the exit is logged')
  // The killed worker's requests stay counted: the counter does not go back (a reset to rate()).
  assert.ok(await requestsCounted(g) >= countedBefore + 200, 'fastmesh_requests_total keeps the killed worker\'s count')
})

test('reloads under load lose nothing with workers: every request is answered 200 while versions change on both', async (t) => {
  const up = await startUpstream(t, (req, res) => { req.resume(); req.on('end', () => { res.end('ok') }) })
  const { g, file } = await startWorkersGateway(t, configDoc(up.port))
  const clients = Array.from({ length: 8 }, () => new Agent({ connections: 1, keepAliveTimeout: 60_000 }))
  t.after(async () => { await Promise.all(clients.map(async (c) => { await c.close() })) })
  const statuses = new Map<number, number>()
  let running = true
  const loops = clients.map(async (dispatcher, i) => {
    let n = 0
    while (running) {
      // Every fourth request on a fresh connection, so new connections land mid-reload too.
      const fresh = n++ % 4 === 3
      let status = 0
      try {
        const res = await request(`${g.url}/a/${i}`, { dispatcher, method: n % 2 === 0 ? 'GET' : 'POST', body: n % 2 === 0 ? undefined : 'x'.repeat(2048), headers: fresh ? { connection: 'close' } : {} })
        await res.body.dump()
        status = res.statusCode
      } catch { status = 0 }
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
    }
  })
  for (let v = 2; v <= 6; v++) {
    // Alternate between two route sets that both serve /a.
    await writeFile(file, JSON.stringify(configDoc(up.port, { prefix: v % 2 === 0 ? '/a' : '/' })))
    const res = await request(`${g.adminUrl}/reload`, { method: 'POST' })
    const body = await res.body.json() as { version: number }
    assert.equal(res.statusCode, 200)
    assert.ok(body.version >= v, `version ${body.version}`)
    for (const row of (await workers(g)).workers) assert.equal(row.version, body.version)
    await new Promise((r) => setTimeout(r, 150))
  }
  running = false
  await Promise.all(loops)
  const total = [...statuses.values()].reduce((a, b) => a + b, 0)
  assert.ok(total >= 100, `${total} requests`)
  assert.deepEqual([...statuses.keys()], [200], `every answer 200: ${JSON.stringify(Object.fromEntries(statuses))}`)
})

test('an endpoint one worker ejects leaves every worker\'s rotation: ejections are shared', async (t) => {
  const good = await startUpstream(t, (_req, res) => { res.end('good') })
  const bad = await startUpstream(t, (_req, res) => { res.statusCode = 503; res.end('bad') })
  const doc = configDoc(good.port)
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.json')
  await writeFile(file, JSON.stringify({
    ...doc,
    discovery: { embedded: { services: { up: { endpoints: [{ id: 'good', address: '127.0.0.1', port: good.port }, { id: 'bad', address: '127.0.0.1', port: bad.port }] } } } },
    services: { up: { outlierDetection: { consecutiveGatewayErrors: 3, baseEjectionTime: '60s' } } }
  }))
  const g = await startGatewayProcess(t, ['--config', file], { NODE_CLUSTER_SCHED_POLICY: 'rr' })
  interface Row { index: number, ejected: Array<{ service: string, endpoint: string, reason?: string }> }
  const ejections = async (): Promise<Row[]> => ((await (await request(`${g.adminUrl}/workers`)).body.json()) as { workers: Row[] }).workers
  // One request at a time on fresh connections, until one worker has ejected `bad`.
  let first: Row | undefined
  for (let i = 0; i < 200 && first === undefined; i++) {
    const res = await request(`${g.url}/x`, { headers: { connection: 'close' } })
    await res.body.dump()
    first = (await ejections()).find((w) => w.ejected.some((e) => e.endpoint === 'bad'))
  }
  assert.ok(first !== undefined, 'a worker ejected the failing endpoint')
  // One worker ejected it on its own failures; the other on the first one's word.
  const rows = await eventually(async () => {
    const all = await ejections()
    return all.every((w) => w.ejected.some((e) => e.endpoint === 'bad')) ? all : undefined
  }, 'every worker to eject the endpoint', 5_000)
  const reasons = rows.map((w) => ({ index: w.index, reason: w.ejected.find((e) => e.endpoint === 'bad')!.reason }))
  const owner = reasons.find((r) => r.reason === '3 consecutive gateway errors')
  assert.ok(owner !== undefined, JSON.stringify(reasons))
  const other = reasons.find((r) => r.index !== owner.index)!
  assert.equal(other.reason, `3 consecutive gateway errors, seen by worker ${owner.index}`)
  // /services (the primary's tables) shows it ejected too.
  const services = await (await request(`${g.adminUrl}/services/up`)).body.json() as { endpoints: Array<{ id: string, state: string, ejectionReason?: string }> }
  const shown = services.endpoints.find((e) => e.id === 'bad')!
  assert.equal(shown.state, 'ejected')
  assert.equal(shown.ejectionReason, `3 consecutive gateway errors, seen by worker ${owner.index}`)
  // The gauge is the workers' view (the primary, which serves nothing, ejects nothing of its own).
  const text = await (await request(`${g.adminUrl}/metrics`)).body.text()
  const gauge = (state: string): number => Number(text.split('\n').find((l) => l.startsWith('fastmesh_endpoints{') && l.includes('destination="up"') && l.includes(`state="${state}"`))?.split(' ').at(-1))
  assert.equal(gauge('ejected'), 1)
  assert.equal(gauge('healthy'), 1)
  // From now on no worker sends to it.
  for (let i = 0; i < 20; i++) {
    const res = await request(`${g.url}/x`, { headers: { connection: 'close' } })
    assert.equal(await res.body.text(), 'good')
  }
})

test('stopping the gateway while workers already drain (a SIGTERM to every process, as systemd sends) lets requests in flight finish', async (t) => {
  const up = await startUpstream(t, (_req, res) => { setTimeout(() => { res.end('slow') }, 1500) })
  const { g } = await startWorkersGateway(t, configDoc(up.port))
  const pids = (await workers(g)).workers.map((w) => w.pid)
  const inFlight = Array.from({ length: 4 }, async (_, i) => {
    try {
      const res = await request(`${g.url}/s${i}`, { headers: { connection: 'close' } })
      return `${res.statusCode} ${await res.body.text()}`
    } catch (err) {
      return (err as Error).message
    }
  })
  await eventually(async () => (((await (await request(`${g.adminUrl}/workers`)).body.json()) as { workers: Array<{ inFlight: number }> }).workers.reduce((n, w) => n + w.inFlight, 0) === 4 ? true : undefined), 'four requests in flight', 5_000)
  for (const pid of pids) process.kill(pid, 'SIGTERM')
  await new Promise((r) => setTimeout(r, 200))
  g.signal('SIGTERM')
  assert.deepEqual(await Promise.all(inFlight), ['200 slow', '200 slow', '200 slow', '200 slow'])
  await eventually(() => g.exited ? true : undefined, 'the gateway to exit', 15_000)
  assert.ok(!g.logs().some((e) => e.msg === 'replacement worker listening'), 'no worker is replaced while the gateway stops')
})
