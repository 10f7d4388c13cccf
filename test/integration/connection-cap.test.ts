// services.<name>.circuitBreaker.maxConnections on real sockets: the upstream servers count
// the TCP connections they accept, and at each accept the test reads how many sockets the
// gateway holds towards the service (its connection budget, in this process). Requests
// beyond the connections wait as pending; past maxPendingRequests they get 503 OVERFLOW.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import type { CircuitSnapshot } from '../../src/balancer/circuit.js'
import { once } from 'node:events'
import WebSocket, { WebSocketServer } from 'ws'
import { assertErrorResponse, defer, eventually, startGateway, type TestGateway } from '../helpers/gateway.js'
import { meshConfig, startEcho, startHeldUpstream, startUpstream, type HeldUpstream, type Upstream } from '../helpers/upstreams.js'

/** Counts the connections `up` accepts, and the gateway's open sockets to `service` at each accept. */
function countConnections (up: Upstream, g: () => TestGateway | undefined, service: string): { accepted: number, openAtAccept: number[] } {
  const seen = { accepted: 0, openAtAccept: [] as number[] }
  up.server.on('connection', () => {
    seen.accepted++
    const gw = g()
    if (gw !== undefined) seen.openAtAccept.push(circuitOf(gw, service).connections)
  })
  return seen
}

function circuitOf (g: TestGateway, service: string): CircuitSnapshot {
  const layers = g.gateway.services.all().filter((s) => s.service === service)
  assert.equal(layers.length, 1, `one endpoint set of ${service}`)
  return layers[0]!.circuit.snapshot()
}

async function startCapped (t: TestContext, upstreams: Upstream[], circuitBreaker: Record<string, number>): Promise<{ g: TestGateway, counts: Array<{ accepted: number, openAtAccept: number[] }> }> {
  const started: { g?: TestGateway } = {}
  const counts = upstreams.map((u) => countConnections(u, () => started.g, 'api'))
  const g = started.g = await startGateway(t, meshConfig({ api: upstreams }, [{ name: 'api', destination: { service: 'api' } }], {
    services: { api: { circuitBreaker } }
  }))
  return { g, counts }
}

test('regression: circuitBreaker.maxConnections 2 caps the upstream connections: 20 concurrent clients make 2, the other 18 wait as pending', async (t) => {
  const held = await startHeldUpstream(t)
  const { g, counts } = await startCapped(t, [held], { maxConnections: 2 })
  const answers = Array.from({ length: 20 }, async (_v, i) => await g.request(`/r${i}`))
  await held.waitForArrivals(2)
  await eventually(() => circuitOf(g, 'api').requests === 20, 'the gateway to have admitted all 20')
  const circuit = circuitOf(g, 'api')
  assert.equal(circuit.pending, 18)
  assert.equal(circuit.connections, 2)
  assert.equal(held.arrived, 2, 'only two requests reached the upstream: one per connection')
  held.release()
  const statuses = (await Promise.all(answers)).map((r) => r.status)
  assert.deepEqual(statuses, Array(20).fill(200))
  assert.equal(held.arrived, 20)
  assert.equal(counts[0]!.accepted, 2, 'the pending requests reused the two connections')
  assert.ok(counts[0]!.openAtAccept.every((n) => n <= 2), `gateway sockets at each accept: ${counts[0]!.openAtAccept.join(',')}`)
})

test('regression: maxConnections caps the sum over a service\'s endpoints, not each endpoint\'s pool', async (t) => {
  const a = await startHeldUpstream(t)
  const b = await startHeldUpstream(t)
  const { g, counts } = await startCapped(t, [a, b], { maxConnections: 3 })
  const answers = Array.from({ length: 20 }, async (_v, i) => await g.request(`/r${i}`))
  await eventually(() => a.arrived + b.arrived === 3 && circuitOf(g, 'api').requests === 20, 'three requests on the wire, twenty admitted')
  assert.equal(circuitOf(g, 'api').pending, 17)
  assert.ok(a.arrived >= 1 && b.arrived >= 1, `both endpoints hold a connection (a ${a.arrived}, b ${b.arrived})`)
  a.release()
  b.release()
  assert.deepEqual((await Promise.all(answers)).map((r) => r.status), Array(20).fill(200))
  const accepted = counts[0]!.accepted + counts[1]!.accepted
  assert.ok(accepted <= 3, `${accepted} connections accepted across both endpoints`)
  const atAccept = [...counts[0]!.openAtAccept, ...counts[1]!.openAtAccept]
  assert.ok(atAccept.every((n) => n <= 3), `gateway sockets at each accept: ${atAccept.join(',')}`)
})

test('past maxPendingRequests under the connection cap, requests get 503 FASTMESH_ERR_OVERFLOW (max-pending-requests) and never reach the upstream', async (t) => {
  const held = await startHeldUpstream(t)
  const { g, counts } = await startCapped(t, [held], { maxConnections: 2, maxPendingRequests: 3 })
  const first = Array.from({ length: 5 }, async (_v, i) => await g.request(`/r${i}`))
  await held.waitForArrivals(2)
  await eventually(() => circuitOf(g, 'api').requests === 5, 'five admitted: two on the wire, three pending')
  const refused = await Promise.all(Array.from({ length: 5 }, async () => await g.request('/more')))
  for (const res of refused) {
    assertErrorResponse(res, 503, 'FASTMESH_ERR_OVERFLOW')
    assert.equal(res.headers['x-fastmesh-overflow'], 'max-pending-requests')
  }
  held.release()
  assert.deepEqual((await Promise.all(first)).map((r) => r.status), Array(5).fill(200))
  assert.equal(held.arrived, 5, 'refused requests never reached the upstream')
  assert.equal(counts[0]!.accepted, 2)
})

test('regression: with fewer connections than endpoints (maxConnections 1, two endpoints) neither endpoint starves and the cap holds at every accept', async (t) => {
  const a = await startEcho(t, 'a')
  const b = await startEcho(t, 'b')
  const { g, counts } = await startCapped(t, [a, b], { maxConnections: 1 })
  for (let round = 0; round < 3; round++) {
    const answers = await Promise.all(Array.from({ length: 10 }, async (_v, i) => await g.request(`/r${round}-${i}`)))
    assert.deepEqual(answers.map((r) => r.status), Array(10).fill(200))
  }
  assert.ok(a.seen.length > 0 && b.seen.length > 0, `both endpoints served (a ${a.seen.length}, b ${b.seen.length})`)
  assert.equal(a.seen.length + b.seen.length, 30)
  const atAccept = [...counts[0]!.openAtAccept, ...counts[1]!.openAtAccept]
  assert.ok(atAccept.every((n) => n <= 1), `gateway sockets at each accept: ${atAccept.join(',')}`)
  assert.ok(circuitOf(g, 'api').connections <= 1)
})

test('admin /services shows the open connections of a capped service beside its limit', async (t) => {
  const held: HeldUpstream = await startHeldUpstream(t)
  const { g } = await startCapped(t, [held], { maxConnections: 2 })
  const answers = Array.from({ length: 4 }, async (_v, i) => await g.request(`/r${i}`))
  await held.waitForArrivals(2)
  const body = (await g.admin('GET', '/services')).json<{ services: Array<{ name: string, layers: Array<{ circuit: { connections: number, pending: number, limits: { maxConnections: number } } }> }> }>()
  const circuit = body.services.find((s) => s.name === 'api')!.layers[0]!.circuit
  assert.equal(circuit.connections, 2)
  assert.equal(circuit.limits.maxConnections, 2)
  held.release()
  await Promise.all(answers)
})

test('regression: a WebSocket tunnel holds its connection slot until it closes, then gives it back', async (t) => {
  const seen: string[] = []
  const up = await startUpstream(t, (req, res) => { seen.push(req.url ?? ''); req.resume(); req.on('end', () => { res.end('ok') }) })
  const wss = new WebSocketServer({ server: up.server })
  defer(t, async () => {
    for (const c of wss.clients) c.terminate()
    await new Promise<void>((resolve) => { wss.close(() => { resolve() }) })
  })
  const { g } = await startCapped(t, [up], { maxConnections: 1 })
  const ws = new WebSocket(`${g.url.replace('http:', 'ws:')}/tunnel`)
  ws.on('error', () => {})
  defer(t, () => { ws.terminate() })
  await once(ws, 'open')
  assert.equal(circuitOf(g, 'api').connections, 1, 'the tunnel is the service\'s one connection')
  const after = g.request('/after')
  await eventually(() => circuitOf(g, 'api').requests === 1, 'the request to be admitted')
  assert.deepEqual(seen, [], 'it waits for the tunnel\'s slot')
  ws.close()
  const res = await Promise.race([after, new Promise<never>((_resolve, reject) => { setTimeout(() => { reject(new Error('the request never got the slot back')) }, 10_000).unref() })])
  assert.equal(res.status, 200)
  assert.deepEqual(seen, ['/after'])
  assert.ok(circuitOf(g, 'api').connections <= 1)
})

test('regression: requests that time out waiting for a connection under maxConnections do not eject the endpoint (they never reached it)', async (t) => {
  const held = await startHeldUpstream(t)
  const g = await startGateway(t, meshConfig({ api: [held] }, [{ name: 'api', destination: { service: 'api' }, timeout: '300ms', retries: { attempts: 1 } }], {
    services: { api: { circuitBreaker: { maxConnections: 1 } } }
  }))
  // One request holds the only connection; six more wait for it, and every one times out.
  const results = await Promise.all(Array.from({ length: 7 }, async () => (await g.request('/')).status))
  assert.deepEqual(results, [504, 504, 504, 504, 504, 504, 504])
  // The first holds the connection until its timeout frees it; on a loaded machine a request
  // that started a little later may still get the freed slot before its own timeout. The rest
  // timed out waiting, never reaching the endpoint.
  assert.ok(held.arrived >= 1 && held.arrived <= 3, `at most a few reached the endpoint (${held.arrived} of 7)`)
  const service = (await g.admin('GET', '/services/api')).json<{ endpoints: Array<{ state: string, ejectionReason?: string }> }>()
  assert.deepEqual(service.endpoints.map((e) => e.state), ['healthy'], `one real timeout is not five consecutive gateway errors: ${JSON.stringify(service.endpoints)}`)
})
