// Regression tests for "one PUT stops the edge" (issue 13): a status-retry route whose first
// try answered 503 must neither end the process nor retry without the body. A body that fits
// the retry buffer is re-sent intact; one that does not is not retried, and the upstream's
// answer goes back as it is (Envoy's rule). Real upstreams on loopback, real gateway.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { startUpstream, meshConfig } from '../helpers/upstreams.js'

interface Receipts { port: number, bodies: string[] }

/** An upstream answering `status` to everything, keeping each request's body. */
async function recordingUpstream (t: TestContext, status: number): Promise<Receipts> {
  const state: Receipts = { port: 0, bodies: [] }
  const up = await startUpstream(t, (req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => {
      state.bodies.push(body)
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': 2 }).end('ok')
    })
  })
  state.port = up.port
  return state
}

const RETRIES = { attempts: 3, retryOn: ['gateway-error'] }

async function sickAndWell (t: TestContext, retries: Record<string, unknown> | undefined, service?: Record<string, unknown>): Promise<{ g: TestGateway, sick: Receipts, well: Receipts }> {
  const sick = await recordingUpstream(t, 503)
  const well = await recordingUpstream(t, 200)
  const route: Record<string, unknown> = { name: 'orders', destination: { service: 'orders' } }
  if (retries !== undefined) route.retries = retries
  const doc = meshConfig({ orders: [sick, well] }, [route])
  if (service !== undefined) doc.services = { orders: service }
  const g = await startGateway(t, doc)
  return { g, sick, well }
}

/** The gateway still serves: the next requests are answered (by either endpoint). */
async function stillServes (g: TestGateway): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const res = await g.request('/orders/health')
    assert.ok(res.status === 200 || res.status === 503, `gateway answers after the retry (got ${res.status})`)
  }
}

test('a PUT with a small streamed body on a status-retry route does not stop the gateway, and the 503 goes back as it is', async (t) => {
  const { g, sick, well } = await sickAndWell(t, RETRIES)
  const res = await g.request('/orders/1', { method: 'PUT', body: 'nine byte', headers: { 'content-type': 'text/plain' } })
  // Round robin starts on the sick endpoint; the body was streamed to it and is gone.
  assert.equal(res.status, 503, res.text)
  assert.deepEqual(sick.bodies, ['nine byte'])
  assert.deepEqual(well.bodies, [], 'no retry went out without its body')
  await stillServes(g)
})

test('a PUT whose body fits bufferBodyBytes is re-sent intact to another endpoint after a 503', async (t) => {
  const { g, sick, well } = await sickAndWell(t, { ...RETRIES, bufferBodyBytes: 1024 })
  const res = await g.request('/orders/1', { method: 'PUT', body: 'nine byte', headers: { 'content-type': 'text/plain' } })
  assert.equal(res.status, 200, res.text)
  assert.deepEqual(sick.bodies, ['nine byte'])
  assert.deepEqual(well.bodies, ['nine byte'], 'the retry carried the whole body')
})

test('a buffered PUT is re-sent intact with zero backoff too', async (t) => {
  const { g, well } = await sickAndWell(t, { ...RETRIES, bufferBodyBytes: 1024, backoff: { base: '0ms', max: '0ms' } })
  const res = await g.request('/orders/1', { method: 'PUT', body: 'nine byte', headers: { 'content-type': 'text/plain' } })
  assert.equal(res.status, 200, res.text)
  assert.deepEqual(well.bodies, ['nine byte'])
})

test('a streamed body with zero backoff is not retried without its body (the 503 goes back)', async (t) => {
  const { g, well } = await sickAndWell(t, { ...RETRIES, backoff: { base: '0ms', max: '0ms' } })
  const res = await g.request('/orders/1', { method: 'PUT', body: 'nine byte', headers: { 'content-type': 'text/plain' } })
  assert.equal(res.status, 503, res.text)
  assert.deepEqual(well.bodies, [])
  await stillServes(g)
})

test('a DELETE with a body on a status-retry route does not stop the gateway', async (t) => {
  const { g, sick, well } = await sickAndWell(t, RETRIES)
  const res = await g.request('/orders/1', { method: 'DELETE', body: '{"why":"x"}', headers: { 'content-type': 'application/json' } })
  assert.equal(res.status, 503)
  assert.deepEqual(sick.bodies, ['{"why":"x"}'])
  assert.deepEqual(well.bodies, [])
  await stillServes(g)
})

test('a PUT larger than bufferBodyBytes is not retried: the upstream answer goes back as it is', async (t) => {
  const { g, sick, well } = await sickAndWell(t, { ...RETRIES, bufferBodyBytes: 4 })
  const res = await g.request('/orders/1', { method: 'PUT', body: 'nine byte', headers: { 'content-type': 'text/plain' } })
  assert.equal(res.status, 503)
  assert.equal(res.text, 'ok', 'the upstream\'s own body')
  assert.deepEqual(sick.bodies, ['nine byte'])
  assert.deepEqual(well.bodies, [])
  await stillServes(g)
})

test('an opted-in (nonIdempotent) unbuffered POST is not retried without its body', async (t) => {
  const { g, well } = await sickAndWell(t, { ...RETRIES, nonIdempotent: true })
  const res = await g.request('/orders', { method: 'POST', body: 'nine byte', headers: { 'content-type': 'text/plain' } })
  assert.equal(res.status, 503)
  assert.deepEqual(well.bodies, [])
  await stillServes(g)
})

test('service-level retries: a streamed PUT is not retried, a buffered one is re-sent intact', async (t) => {
  const streamed = await sickAndWell(t, undefined, { retries: RETRIES })
  const a = await streamed.g.request('/orders/1', { method: 'PUT', body: 'nine byte', headers: { 'content-type': 'text/plain' } })
  assert.equal(a.status, 503)
  assert.deepEqual(streamed.well.bodies, [])
  await stillServes(streamed.g)

  const buffered = await sickAndWell(t, undefined, { retries: { ...RETRIES, bufferBodyBytes: 64 } })
  const b = await buffered.g.request('/orders/1', { method: 'PUT', body: 'nine byte', headers: { 'content-type': 'text/plain' } })
  assert.equal(b.status, 200)
  assert.deepEqual(buffered.well.bodies, ['nine byte'])
})

test('a GET retried after a 503 reuses the upstream connection (the dropped response is drained)', async (t) => {
  const connections = new Set<unknown>()
  let hits = 0
  const up = await startUpstream(t, (req, res) => {
    connections.add(req.socket)
    hits++
    // Every other request fails: each request's first try is dropped for a retry.
    const status = hits % 2 === 1 ? 503 : 200
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': 5 }).end('hello')
  })
  const g = await startGateway(t, meshConfig({ orders: [up] }, [{ name: 'orders', destination: { service: 'orders' }, retries: { attempts: 2, retryOn: ['gateway-error'], backoff: { base: '0ms', max: '0ms' } } }]))
  for (let i = 0; i < 20; i++) assert.equal((await g.request('/x')).status, 200)
  assert.equal(hits, 40, 'each request took two tries')
  assert.ok(connections.size <= 3, `dropped responses were read and their connections reused (${connections.size} connections for 20 retries)`)
})
