// The built-in `fault-injection` plugin against real gateways and upstreams: aborts (status
// and reset), delays, a seeded share of the requests, the header condition, and faults in
// place of upstream tries that retries and outlier detection take as real ones.
import test from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { startGateway, assertErrorResponse, eventually, type TestGateway } from '../helpers/gateway.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'
import { seededRandom } from '../../src/balancer/random.js'
import { callerMatches } from '../../plugins/fault-injection/index.js'

function faulty (options: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'chaos', destination: { service: 'svc' }, plugins: [{ name: 'fault-injection', options }], ...extra }
}

async function accessLine (g: TestGateway, requestId: string): Promise<Record<string, unknown>> {
  return await eventually(() => g.logs.entries().find((e) => e.log === 'access' && e.requestId === requestId), 'the access line', 5000)
}

test('fault-injection abort: 100% answers the configured status at once, marked, and the upstream is never called', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [faulty({ abort: { percent: 100, status: 418 } })]))
  const res = await g.request('/x', { headers: { 'x-request-id': 'abort-1' } })
  assertErrorResponse(res, 418, 'FASTMESH_ERR_FAULT_INJECTED')
  assert.equal(res.headers['x-fastmesh-fault'], 'abort')
  assert.equal(echo.seen.length, 0)
  assert.equal((await accessLine(g, 'abort-1')).fault, 'abort')
})

test('fault-injection abort with reset: the client\'s connection is closed without an answer', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [faulty({ abort: { percent: 100, reset: true } })]))
  const outcome = await new Promise<string>((resolve) => {
    const req = httpRequest(`${g.url}/x`, (res) => { resolve(`answered ${res.statusCode ?? 0}`) })
    req.on('error', (err: Error & { code?: string }) => { resolve(err.code ?? err.message) })
    req.end()
  })
  assert.match(outcome, /ECONNRESET|socket hang up/)
  assert.equal(echo.seen.length, 0)
})

test('fault-injection delay: the request is held for the duration, then served, marked delay', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [faulty({ delay: { percent: 100, duration: '300ms' } })]))
  const start = performance.now()
  const res = await g.request('/x')
  const ms = performance.now() - start
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-fastmesh-fault'], 'delay')
  assert.ok(ms >= 295, `held at least the delay (${ms.toFixed(0)} ms)`)
})

test('fault-injection percent: with a seed, exactly the requests the seeded source picks are aborted', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [faulty({ abort: { percent: 25, status: 503 }, seed: 42 })]))
  const n = 200
  const random = seededRandom(42)
  const expected: number[] = []
  for (let i = 0; i < n; i++) expected.push(random() * 100 < 25 ? 503 : 200)
  const got: number[] = []
  for (let i = 0; i < n; i++) got.push((await g.request(`/x/${i}`)).status)
  assert.deepEqual(got, expected)
  const aborted = got.filter((s) => s === 503).length
  assert.ok(aborted > 25 && aborted < 75, `about a quarter aborted (${aborted} of ${n})`)
})

test('fault-injection when.header: only requests carrying the header get the fault', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [faulty({ abort: { percent: 100, status: 503 }, when: { header: 'x-chaos' } })]))
  assert.equal((await g.request('/x')).status, 200)
  assert.equal((await g.request('/x', { headers: { 'x-chaos': '1' } })).status, 503)
})

test('fault-injection response: an injected 503 is retried like a real one, and outlier detection ejects the endpoint it was charged to', async (t) => {
  const a = await startEcho(t, 'svc-a')
  const b = await startEcho(t, 'svc-b')
  const g = await startGateway(t, meshConfig({ svc: [a, b] }, [faulty({ response: { percent: 100, status: 503 } }, { retries: { attempts: 2, retryOn: ['gateway-error'] } })]))
  for (let i = 0; i < 6; i++) {
    const res = await g.request('/x', { headers: { 'x-request-id': `resp-${i}` } })
    assert.equal(res.status, 503, 'the last try\'s (injected) answer goes back')
    assert.equal(res.headers['x-fastmesh-fault'], 'response')
  }
  assert.equal(a.seen.length + b.seen.length, 0, 'no upstream was called')
  const line = await accessLine(g, 'resp-0')
  assert.equal(line.attempts, 2, 'the injected 503 was retried')
  assert.equal(line.fault, 'response')
  const services = (await g.admin('GET', '/services/svc')).json<{ endpoints: Array<{ state: string }> }>()
  assert.ok(services.endpoints.some((e) => e.state === 'ejected'), `an endpoint was ejected: ${JSON.stringify(services.endpoints.map((e) => e.state))}`)
})

test('fault-injection response reset: the try fails as a reset, answered 502 with cause reset', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [faulty({ response: { percent: 100, reset: true } }, { retries: { attempts: 1 } })]))
  const res = await g.request('/x', { headers: { 'x-request-id': 'reset-1' } })
  assertErrorResponse(res, 502, 'FASTMESH_ERR_UPSTREAM_FAILURE')
  assert.match(String((await accessLine(g, 'reset-1')).cause), /^reset: ECONNRESET/)
  assert.equal(echo.seen.length, 0)
})

test('fault-injection: an abort with neither (or both) status and reset is refused', async (t) => {
  const echo = await startEcho(t, 'svc')
  await assert.rejects(startGateway(t, meshConfig({ svc: [echo] }, [faulty({ abort: { percent: 10 } })])), /give either status or reset/)
})

test('fault-injection callers: a verified caller matches by SPIFFE ID or by service name', () => {
  const web = 'spiffe://mesh.local/ns/default/dc/dc1/svc/web'
  assert.equal(callerMatches(web, ['web']), true)
  assert.equal(callerMatches(web, [web]), true)
  assert.equal(callerMatches(web, ['api', 'spiffe://mesh.local/ns/default/dc/dc1/svc/api']), false)
  assert.equal(callerMatches(undefined, ['web']), false, 'no verified caller, no match')
})
