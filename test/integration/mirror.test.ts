// Shadow traffic (src/gateway/mirror.ts) on real sockets: a front server forwards each
// request to a primary upstream with the endpoint layer (forward) and offers it to a Mirror
// first, as the route layer does. The mirror gets a copy (body included); whatever it does
// (500, refuse, hang) the primary's answers stay as they were; in-flight mirrors are bounded.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { seededRandom } from '../../src/balancer/random.js'
import type { AttemptOutcome, ServiceLayer } from '../../src/balancer/types.js'
import { Mirror, MirrorBuffer, MirrorStats, MIRROR_HEADER, type MirrorSettings } from '../../src/gateway/mirror.js'
import type { EndpointTarget } from '../../src/upstream/endpoint-pool.js'
import { forward, type ForwardSettings, type UpstreamCall } from '../../src/upstream/proxy.js'
import { defer, eventually, readResponse, startGateway, type HttpResult } from '../helpers/gateway.js'
import { endpointTarget, send } from '../helpers/layers.js'
import { freePort } from '../helpers/ports.js'
import { meshConfig, startEcho, startHeldUpstream, startUpstream } from '../helpers/upstreams.js'

const forwarding: ForwardSettings = { bodyTimeoutMs: 10_000, rewriteHost: undefined, trustForwarded: false, proto: 'http' }

/** A service layer of one fixed endpoint, recording what it is told (the contract of types.ts). */
function fixedLayer (target: EndpointTarget | undefined): ServiceLayer & { reports: AttemptOutcome[], admitted: number } {
  const reports: AttemptOutcome[] = []
  const layer = {
    service: 'shadow',
    current: target,
    reports,
    admitted: 0,
    pick: () => target,
    report: (_t: EndpointTarget, o: AttemptOutcome) => { reports.push(o) },
    admit: () => { layer.admitted++; return undefined },
    release: () => { layer.admitted-- },
    known: async () => {}
  }
  return layer
}

/** What a mirror upstream saw, body included. */
interface Seen { method: string, url: string, headers: IncomingMessage['headers'], body: Buffer }

async function recordingUpstream (t: TestContext, status = 200): Promise<{ port: number, seen: Seen[] }> {
  const seen: Seen[] = []
  const up = await startUpstream(t, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) })
      res.writeHead(status, { 'content-length': '2' }).end('ok')
    })
  })
  return { port: up.port, seen }
}

/** The front: offers each request to `mirror`, then forwards it to `primary`. */
async function front (t: TestContext, primary: EndpointTarget, mirror: Mirror): Promise<string> {
  let n = 0
  const server = createServer((req, res) => {
    const call: UpstreamCall = { requestId: `req-${++n}`, path: req.url ?? '/', editors: null, replyHeaders: null, clientCert: undefined, headersTimeoutMs: 10_000, body: undefined, clientAddress: req.socket.remoteAddress ?? '' }
    mirror.maybeMirror(req, req.headers, forwarding, call)
    forward(req, res, req.headers, primary, forwarding, call, {
      responded: () => true,
      failed: (_c, err) => { res.writeHead(err.statusCode).end(err.code) },
      ended: () => {},
      faulted: () => { res.destroy() }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  defer(t, async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

const settings = (over: Partial<MirrorSettings> = {}): MirrorSettings => ({ percent: 100, maxConcurrent: 8, maxBodyBytes: 65_536, timeoutMs: 5_000, ...over })

/** A request whose body is written in `parts` (chunked unless headers give a Content-Length). */
async function sendParts (origin: string, path: string, method: string, headers: Record<string, string>, parts: Array<string | Buffer>): Promise<HttpResult> {
  const { hostname, port } = new URL(origin)
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path, method, headers, agent: false }, (res) => { readResponse(res).then(resolve, reject) })
    req.on('error', reject)
    for (const p of parts) req.write(p)
    req.end()
  })
}

test('a mirrored request reaches the mirror with its method, path, body and the mirror header; the primary answers as usual', async (t) => {
  const primary = await startEcho(t, 'primary')
  const shadow = await recordingUpstream(t)
  const layer = fixedLayer(endpointTarget(t, shadow.port, 'shadow'))
  const mirror = new Mirror(layer, settings())
  const origin = await front(t, endpointTarget(t, primary.port), mirror)

  const res = await send(origin, '/orders?x=1', { method: 'POST', headers: { 'content-type': 'text/plain', 'content-length': '12' }, body: 'hello mirror' })
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-served-by'], 'primary')
  assert.equal(JSON.parse(res.text).bodyBytes, 12)
  assert.equal(primary.seen[0]?.headers[MIRROR_HEADER], undefined, 'the primary request is not marked')

  const seen = await eventually(() => shadow.seen[0], 'the mirror to receive the copy')
  assert.equal(seen.method, 'POST')
  assert.equal(seen.url, '/orders?x=1')
  assert.equal(seen.body.toString(), 'hello mirror')
  assert.equal(seen.headers[MIRROR_HEADER], '1')
  assert.equal(seen.headers['x-request-id'], 'req-1')
  await eventually(() => mirror.stats.completed === 1, 'the mirror to be counted completed')
  assert.deepEqual({ ...mirror.stats.snapshot() }, { sent: 1, skippedAtLimit: 0, skippedBody: 0, skippedUnavailable: 0, failed: 0, completed: 1, inFlight: 0 })
  assert.equal(layer.reports.length, 1, 'the picked mirror endpoint gets exactly one report')
  assert.equal(layer.admitted, 0, 'every admission is released')
})

test('a 1 MiB body streams whole to the primary and its copy reaches the mirror byte for byte', async (t) => {
  const primary = await recordingUpstream(t)
  const shadow = await recordingUpstream(t)
  const mirror = new Mirror(fixedLayer(endpointTarget(t, shadow.port, 'shadow')), settings({ maxBodyBytes: 2 * 1024 * 1024 }))
  const origin = await front(t, endpointTarget(t, primary.port), mirror)
  const body = Buffer.alloc(1024 * 1024)
  for (let i = 0; i < body.length; i++) body[i] = (i * 7 + 3) & 0xff
  const digest = createHash('sha256').update(body).digest('hex')

  const res = await sendParts(origin, '/upload', 'PUT', { 'content-length': String(body.length) }, [body.subarray(0, 300_000), body.subarray(300_000)])
  assert.equal(res.status, 200)
  assert.equal(createHash('sha256').update(primary.seen[0]!.body).digest('hex'), digest)
  const seen = await eventually(() => shadow.seen[0], 'the mirror to receive the copy')
  assert.equal(createHash('sha256').update(seen.body).digest('hex'), digest)
})

test('a mirror answering 500 leaves the primary responses untouched and is counted failed', async (t) => {
  const primary = await startEcho(t, 'primary')
  const shadow = await recordingUpstream(t, 500)
  const mirror = new Mirror(fixedLayer(endpointTarget(t, shadow.port, 'shadow')), settings())
  const origin = await front(t, endpointTarget(t, primary.port), mirror)
  for (let i = 0; i < 10; i++) {
    const res = await send(origin, '/x', { method: 'POST', headers: { 'content-length': '3' }, body: 'abc' })
    assert.equal(res.status, 200)
    assert.equal(JSON.parse(res.text).bodyBytes, 3)
  }
  await eventually(() => mirror.stats.failed === 10, 'ten failed mirrors')
  assert.equal(mirror.stats.completed, 0)
})

test('a mirror that refuses connections leaves the primary responses untouched and is counted failed', async (t) => {
  const primary = await startEcho(t, 'primary')
  const closed = await freePort()
  const mirror = new Mirror(fixedLayer(endpointTarget(t, closed, 'shadow')), settings())
  const origin = await front(t, endpointTarget(t, primary.port), mirror)
  for (let i = 0; i < 5; i++) {
    const res = await send(origin, '/x', { method: 'POST', headers: { 'content-length': '3' }, body: 'abc' })
    assert.equal(res.status, 200)
    assert.equal(res.headers['x-served-by'], 'primary')
  }
  await eventually(() => mirror.stats.failed === 5, 'five failed mirrors')
  assert.equal(mirror.stats.inFlight, 0)
})

test('a mirror that never answers does not hold up the primary: its answers come while the mirror still waits', async (t) => {
  const primary = await startEcho(t, 'primary')
  const held = await startHeldUpstream(t)
  const mirror = new Mirror(fixedLayer(endpointTarget(t, held.port, 'shadow')), settings())
  const origin = await front(t, endpointTarget(t, primary.port), mirror)
  // Four: the mirror's test pool has four connections, so each mirrored request reaches it.
  for (let i = 0; i < 4; i++) {
    const res = await send(origin, '/x', { method: i % 2 === 0 ? 'GET' : 'POST', headers: i % 2 === 0 ? {} : { 'content-length': '3' }, body: i % 2 === 0 ? undefined : 'abc' })
    assert.equal(res.status, 200)
  }
  await held.waitForArrivals(4)
  // The primaries were answered while all four mirrors were still unanswered: a primary waiting
  // on its mirror would come back only after the mirror's 5 s timeout, which counts it failed.
  assert.equal(mirror.stats.inFlight, 4, 'all four mirrors are still unanswered')
  assert.equal(mirror.stats.failed, 0)
  held.release()
  await eventually(() => mirror.stats.completed === 4, 'the held mirrors to complete once released')
})

test('mirrored requests in flight never exceed maxConcurrent; the others are skipped at once and counted', async (t) => {
  const primary = await startEcho(t, 'primary')
  const held = await startHeldUpstream(t)
  const mirror = new Mirror(fixedLayer(endpointTarget(t, held.port, 'shadow')), settings({ maxConcurrent: 2 }))
  const origin = await front(t, endpointTarget(t, primary.port), mirror)
  for (let i = 0; i < 6; i++) assert.equal((await send(origin, '/x')).status, 200)
  await held.waitForArrivals(2)
  assert.deepEqual({ sent: mirror.stats.sent, skippedAtLimit: mirror.stats.skippedAtLimit, inFlight: mirror.stats.inFlight }, { sent: 2, skippedAtLimit: 4, inFlight: 2 })
  held.release()
  await eventually(() => mirror.stats.inFlight === 0, 'the slots to be freed')
  assert.equal(held.arrived, 2, 'skipped requests never reached the mirror')
  assert.equal((await send(origin, '/x')).status, 200)
  await eventually(() => mirror.stats.completed === 3, 'a freed slot to be used again')
})

test('a hanging mirror is abandoned after its timeout, freeing its slot', async (t) => {
  const primary = await startEcho(t, 'primary')
  const held = await startHeldUpstream(t)
  const mirror = new Mirror(fixedLayer(endpointTarget(t, held.port, 'shadow')), settings({ timeoutMs: 200, maxConcurrent: 1 }))
  const origin = await front(t, endpointTarget(t, primary.port), mirror)
  assert.equal((await send(origin, '/x')).status, 200)
  await eventually(() => mirror.stats.failed === 1, 'the mirror to time out')
  assert.equal(mirror.stats.inFlight, 0)
})

test('percent samples requests with the injected random source, exactly', async (t) => {
  const primary = await startEcho(t, 'primary')
  const shadow = await recordingUpstream(t)
  const mirror = new Mirror(fixedLayer(endpointTarget(t, shadow.port, 'shadow')), settings({ percent: 30, random: seededRandom(5) }))
  const origin = await front(t, endpointTarget(t, primary.port), mirror)
  const r = seededRandom(5)
  let expected = 0
  for (let i = 0; i < 40; i++) if (r() * 100 < 30) expected++
  for (let i = 0; i < 40; i++) assert.equal((await send(origin, `/x${i}`)).status, 200)
  await eventually(() => shadow.seen.length === expected && mirror.stats.inFlight === 0, `${expected} mirrored requests`)
  assert.equal(mirror.stats.sent, expected)
  assert.ok(expected > 0 && expected < 40)
})

test('a chunked body or one above maxBodyBytes is not mirrored, and the primary still gets it whole', async (t) => {
  const primary = await startEcho(t, 'primary')
  const shadow = await recordingUpstream(t)
  const mirror = new Mirror(fixedLayer(endpointTarget(t, shadow.port, 'shadow')), settings({ maxBodyBytes: 4 }))
  const origin = await front(t, endpointTarget(t, primary.port), mirror)
  const chunked = await sendParts(origin, '/c', 'POST', {}, ['ab', 'cd'])
  assert.equal(JSON.parse(chunked.text).bodyBytes, 4)
  const big = await send(origin, '/b', { method: 'POST', headers: { 'content-length': '5' }, body: 'abcde' })
  assert.equal(JSON.parse(big.text).bodyBytes, 5)
  assert.equal(mirror.stats.skippedBody, 2)
  assert.equal((await send(origin, '/ok', { method: 'POST', headers: { 'content-length': '4' }, body: 'abcd' })).status, 200)
  await eventually(() => shadow.seen.length === 1, 'the small body to be mirrored')
  assert.equal(shadow.seen[0]?.url, '/ok')
})

test('regression: mirrored bodies held at once stay within the gateway-wide buffer limit; beyond it a body is not mirrored (skippedAtLimit)', async (t) => {
  const primary = await startEcho(t, 'primary')
  const held = await startHeldUpstream(t)
  // Two routes' mirrors share the gateway's buffer: 10 bytes, room for one 8-byte body.
  const buffer = new MirrorBuffer()
  const one = new Mirror(fixedLayer(endpointTarget(t, held.port, 'shadow')), settings({ bufferLimitBytes: 10 }), new MirrorStats(), buffer)
  const two = new Mirror(fixedLayer(endpointTarget(t, held.port, 'shadow')), settings({ bufferLimitBytes: 10 }), new MirrorStats(), buffer)
  const origin1 = await front(t, endpointTarget(t, primary.port), one)
  const origin2 = await front(t, endpointTarget(t, primary.port), two)
  const post = { method: 'POST', headers: { 'content-length': '8' }, body: '12345678' }
  assert.equal((await send(origin1, '/a', post)).status, 200)
  await held.waitForArrivals(1)
  assert.equal(buffer.held, 8, 'the held mirror keeps its copy')
  assert.equal((await send(origin2, '/b', post)).status, 200, 'the primary is served either way')
  assert.equal((await send(origin1, '/c', post)).status, 200)
  assert.equal(two.stats.skippedAtLimit, 1)
  assert.equal(one.stats.skippedAtLimit, 1)
  assert.equal((await send(origin2, '/bodyless')).status, 200)
  await held.waitForArrivals(2)
  assert.equal(two.stats.sent, 1, 'a bodyless request needs no buffer')
  held.release()
  await eventually(() => one.stats.inFlight === 0 && two.stats.inFlight === 0, 'the held mirrors to end')
  assert.equal(buffer.held, 0, 'every copy is given back')
  assert.equal((await send(origin2, '/d', post)).status, 200)
  await eventually(() => two.stats.completed === 2, 'a body mirrored again once there is room')
})

test('regression: a dead mirror never panics: once its only endpoint is ejected, mirrored requests are skipped (skippedUnavailable) and the dead target sees a bounded number of connection attempts', async (t) => {
  const primary = await startEcho(t, 'primary')
  // Dead but countable: accepts each connection and drops it at once.
  const dead = await startUpstream(t, () => {})
  let attempts = 0
  dead.server.on('connection', (socket) => { attempts++; socket.destroy() })
  const g = await startGateway(t, meshConfig({ api: [primary], shadow: [dead] }, [
    { name: 'api', destination: { service: 'api' }, mirror: { service: 'shadow', maxConcurrent: 2 } }
  ]))
  const n = 100
  for (let i = 0; i < n; i++) assert.equal((await g.request(`/r${i}`)).status, 200, `primary request ${i}`)
  type Stats = ReturnType<MirrorStats['snapshot']>
  const statsOf = async (): Promise<Stats> => (await g.admin('GET', '/routes')).json<{ routes: Array<{ mirror: { stats: Stats } }> }>().routes[0]!.mirror.stats
  await eventually(async () => (await statsOf()).inFlight === 0, 'the last mirrored requests to end')
  const stats = await statsOf()
  // Five consecutive failures eject it (outlierDetection defaults); at most maxConcurrent more were under way.
  assert.ok(attempts <= 5 + 2 + 3, `${attempts} connection attempts at the dead mirror over ${n} requests`)
  assert.ok(stats.sent <= 5 + 2, JSON.stringify(stats))
  assert.equal(stats.failed, stats.sent)
  assert.equal(stats.sent + stats.skippedUnavailable + stats.skippedAtLimit, n, JSON.stringify(stats))
  assert.ok(stats.skippedUnavailable >= n - 10, JSON.stringify(stats))
  assert.equal(primary.seen.length, n)
})
