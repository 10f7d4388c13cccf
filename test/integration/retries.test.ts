// Retries in the route layer, against real upstreams on loopback: the built-in connect-failure
// retry, retry conditions by failure and by status, idempotency, buffered bodies, per-try and
// whole-request timeouts, the budget, and an instance killed (SIGKILL) under steady load.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { startUpstream, startUpstreamProcess, startEcho, meshConfig, type EchoRecord } from '../helpers/upstreams.js'
import { load, failures } from '../helpers/load.js'
import { freePort } from '../helpers/ports.js'

/** An upstream answering `status` to everything, counting requests and body bytes. */
async function statusUpstream (t: TestContext, status: number): Promise<{ port: number, hits: number, bodies: number[] }> {
  const state = { port: 0, hits: 0, bodies: [] as number[] }
  const up = await startUpstream(t, (req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => {
      state.hits++
      state.bodies.push(n)
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': 2 }).end('ok')
    })
  })
  state.port = up.port
  return state
}

function accessLine (g: TestGateway, requestId: string): Record<string, unknown> | undefined {
  return g.logs.entries().find((e) => e.log === 'access' && e.requestId === requestId) as Record<string, unknown> | undefined
}

test('with nothing configured, a refused connection is retried once on another endpoint, POST included', async (t) => {
  const echo = await startEcho(t, 'live')
  const dead = await freePort()
  const g = await startGateway(t, meshConfig({ api: [dead, echo] }, [{ name: 'api', destination: { service: 'api' } }]))
  for (let i = 0; i < 6; i++) {
    const res = await g.request('/orders', { method: 'POST', body: 'x'.repeat(100), headers: { 'content-type': 'text/plain', 'x-request-id': `post-${i}` } })
    assert.equal(res.status, 200, `request ${i}: ${res.text}`)
    assert.equal(res.json<EchoRecord>().bodyBytes, 100)
  }
  const retried = g.logs.entries().filter((e) => e.log === 'access' && (e as { attempts?: number }).attempts === 2)
  assert.ok(retried.length >= 1, 'some requests were retried (round robin sends every other one to the dead endpoint first)')
  assert.deepEqual((retried[0] as { endpoints?: string[] }).endpoints, [`127.0.0.1:${dead}`, `127.0.0.1:${echo.port}`])
})

test('a 503 is retried on another endpoint with retryOn 5xx, and the access log lists both tries', async (t) => {
  const sick = await statusUpstream(t, 503)
  const well = await statusUpstream(t, 200)
  const g = await startGateway(t, meshConfig({ api: [sick, well] }, [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 2, retryOn: ['5xx'] } }]))
  for (let i = 0; i < 4; i++) assert.equal((await g.request('/', { headers: { 'x-request-id': `r-${i}` } })).status, 200)
  // Round robin: each retry takes the next endpoint (the well one), so every request starts on the sick one.
  assert.equal(well.hits, 4)
  assert.equal(sick.hits, 4)
  for (let i = 0; i < 4; i++) {
    const line = accessLine(g, `r-${i}`)
    assert.equal(line?.attempts, 2)
    assert.deepEqual(line?.endpoints, [`127.0.0.1:${sick.port}`, `127.0.0.1:${well.port}`])
    assert.equal(line?.status, 200)
  }
  const stats = (await g.admin('GET', '/routes/api')).json<{ stats: { retries: number, retriedRequests: number } }>().stats
  assert.equal(stats.retries, 4, 'admin counts the retries')
  assert.equal(stats.retriedRequests, 4)
})

test('without retryOn for statuses, a 503 is relayed as the upstream sent it', async (t) => {
  const sick = await statusUpstream(t, 503)
  const g = await startGateway(t, meshConfig({ api: [sick] }, [{ name: 'api', destination: { service: 'api' } }]))
  assert.equal((await g.request('/')).status, 503)
  assert.equal(sick.hits, 1)
})

test('POST is not retried on a 5xx unless the route opts in with nonIdempotent', async (t) => {
  const sick = await statusUpstream(t, 503)
  const well = await statusUpstream(t, 200)
  const g = await startGateway(t, meshConfig({ api: [sick, well] }, [
    { name: 'plain', match: { path: { prefix: '/plain' } }, destination: { service: 'api' }, retries: { attempts: 2, retryOn: ['5xx'] } },
    { name: 'opted', match: { path: { prefix: '/opted' } }, destination: { service: 'api' }, retries: { attempts: 2, retryOn: ['5xx'], nonIdempotent: true, bufferBodyBytes: 1024 } }
  ]))
  // Round robin is shared by both routes (one service): the sick endpoint comes first on every other request.
  const statuses: number[] = []
  for (let i = 0; i < 4; i++) statuses.push((await g.request('/plain', { method: 'POST', body: 'abc', headers: { 'content-type': 'text/plain' } })).status)
  assert.deepEqual(statuses.sort(), [200, 200, 503, 503], 'POST answers from the sick endpoint are relayed, not retried')
  const before = well.bodies.length
  for (let i = 0; i < 4; i++) assert.equal((await g.request('/opted', { method: 'POST', body: 'abcdef', headers: { 'content-type': 'text/plain' } })).status, 200)
  assert.deepEqual(well.bodies.slice(before), [6, 6, 6, 6], 'the buffered body reached the endpoint of the retry whole')
})

test('a try slower than perTryTimeout is abandoned for another endpoint', async (t) => {
  const hung = await startUpstream(t, () => { /* never answers */ })
  const well = await statusUpstream(t, 200)
  const g = await startGateway(t, meshConfig({ api: [hung, well] }, [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 2, retryOn: ['gateway-error'], perTryTimeout: '300ms' } }]))
  for (let i = 0; i < 2; i++) {
    const started = Date.now()
    assert.equal((await g.request('/')).status, 200)
    assert.ok(Date.now() - started < 3000, 'answered well before the route timeout (15s)')
  }
})

test('requestTimeout bounds every try and backoff together: 504 with what was tried', async (t) => {
  const a = await startUpstream(t, () => {})
  const b = await startUpstream(t, () => {})
  const g = await startGateway(t, meshConfig({ api: [a, b] }, [{ name: 'api', destination: { service: 'api' }, requestTimeout: '1500ms', retries: { attempts: 5, retryOn: ['gateway-error'], perTryTimeout: '1s' } }]))
  const started = Date.now()
  const res = await g.request('/')
  assert.equal(res.status, 504)
  const body = res.json<{ error: { code: string, message: string } }>()
  assert.equal(body.error.code, 'FASTMESH_ERR_UPSTREAM_TIMEOUT')
  assert.match(body.error.message, /after 2 tries/)
  assert.ok(Date.now() - started < 4000)
})

test('an exhausted retry budget stops retries (the failure is answered)', async (t) => {
  const sick = await statusUpstream(t, 503)
  const well = await statusUpstream(t, 200)
  const g = await startGateway(t, meshConfig({ api: [sick, well] }, [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 2, retryOn: ['5xx'], budget: { percent: 0, minPerSecond: 0.1 } } }]))
  // The budget allows one retry in its 10 s window (0.1/s). Round robin: the first request
  // starts on the sick endpoint and is retried on the well one; then the two alternate and
  // every sick answer is relayed.
  const statuses: number[] = []
  for (let i = 0; i < 6; i++) statuses.push((await g.request('/')).status)
  assert.deepEqual(statuses, [200, 503, 200, 503, 200, 503])
  assert.equal(well.hits, 3, 'the retry, then every other first try')
})

test('an instance killed under steady load, with retries on: no client-visible error', async (t) => {
  const ups = [await startUpstreamProcess(t, 'u0'), await startUpstreamProcess(t, 'u1'), await startUpstreamProcess(t, 'u2')]
  const g = await startGateway(t, meshConfig({ api: ups }, [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 3, retryOn: ['gateway-error'], budget: { percent: 100, minPerSecond: 1000 } } }]))
  const outcomes = await load(g, 1200, 8, new Map([[400, () => { ups[1]!.kill() }]]))
  assert.deepEqual(failures(outcomes).map((o) => `${o.status} ${o.text}`), [], 'no client-visible error')
})
