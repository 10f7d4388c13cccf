// Request time limits against real upstreams that never answer: the route layer times each
// try itself (a 300 ms per-try limit used to fire at ~1 s on undici's coarse timer), a try
// never outlives the request's limit, and 0s means "no limit" (it used to act as 1 ms).
// Counts of tries are the behaviour; the elapsed-time bounds are wide enough for a loaded
// 2-core machine but far below what the coarse timer gave.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, assertErrorResponse, eventually, type HttpResult, type TestGateway } from '../helpers/gateway.js'
import { startHeldUpstream, meshConfig } from '../helpers/upstreams.js'

/** How much later than its limit a timed-out answer may come on a busy machine. */
const LATE_MS = 250

/** The access log's `attempts` of a request (its line is written on the next turn). */
async function attemptsOf (g: TestGateway, requestId: string): Promise<number | undefined> {
  const line = await eventually(() => g.logs.entries().find((e) => e.log === 'access' && e.requestId === requestId), 'the access log line', 5000)
  return (line as { attempts?: number }).attempts
}

async function timed (g: TestGateway, path: string, requestId: string): Promise<HttpResult & { ms: number }> {
  const start = performance.now()
  const res = await g.request(path, { headers: { 'x-request-id': requestId } })
  return Object.assign(res, { ms: performance.now() - start })
}

async function silentPair (t: TestContext): Promise<Array<{ port: number }>> {
  return [await startHeldUpstream(t), await startHeldUpstream(t)]
}

test('a 300ms per-try timeout fires at 300 ms, not on a one-second timer', async (t) => {
  const g = await startGateway(t, meshConfig({ api: await silentPair(t) }, [{ name: 'api', destination: { service: 'api' }, timeout: '300ms', retries: { attempts: 1 } }]))
  const r = await timed(g, '/', 'one-try')
  assert.equal(r.status, 504, r.text)
  assert.ok(r.ms >= 295, `not before its limit (${r.ms.toFixed(0)} ms)`)
  assert.ok(r.ms < 300 + LATE_MS, `within ${LATE_MS} ms of its limit (${r.ms.toFixed(0)} ms)`)
})

test('perTryTimeout 300ms under requestTimeout 1s makes four tries (the last one cut to what is left), then 504', async (t) => {
  const g = await startGateway(t, meshConfig({ api: await silentPair(t) }, [{
    name: 'api',
    destination: { service: 'api' },
    requestTimeout: '1s',
    retries: { attempts: 10, retryOn: ['gateway-error'], perTryTimeout: '300ms', backoff: { base: '0ms', max: '0ms' } }
  }]))
  const r = await timed(g, '/', 'four-tries')
  assertErrorResponse(r, 504, 'FASTMESH_ERR_UPSTREAM_TIMEOUT')
  // Tries at 0, 300, 600 and 900 ms; the fourth gets the 100 ms left. On undici's timer it was 1.
  assert.equal(await attemptsOf(g, 'four-tries'), 4)
  assert.ok(r.ms >= 995, `the request's limit is 1 s (${r.ms.toFixed(0)} ms)`)
  assert.ok(r.ms < 1000 + LATE_MS, `answered within ${LATE_MS} ms of the request's limit (${r.ms.toFixed(0)} ms)`)
})

test('requestTimeout 1500ms answers at 1.5 s, not 2 s', async (t) => {
  const g = await startGateway(t, meshConfig({ api: await silentPair(t) }, [{ name: 'api', destination: { service: 'api' }, requestTimeout: '1500ms', timeout: '10s' }]))
  const r = await timed(g, '/', 'whole')
  assert.equal(r.status, 504, r.text)
  assert.ok(r.ms >= 1495 && r.ms < 1500 + LATE_MS, `${r.ms.toFixed(0)} ms`)
})

test('timeout 0s means no per-try limit (it is not a 1 ms limit)', async (t) => {
  const slow = await startHeldUpstream(t, 'late but fine')
  const g = await startGateway(t, meshConfig({ api: [slow] }, [{ name: 'api', destination: { service: 'api' }, timeout: '0s' }]))
  const pending = g.request('/')
  await slow.waitForArrivals(1)
  // Held past the old 1 ms limit (and past undici's one-second tick) before it answers.
  await new Promise((resolve) => setTimeout(resolve, 1200))
  slow.release()
  const res = await pending
  assert.equal(res.status, 200, res.text)
  assert.equal(res.text, 'late but fine')
})

test('requestTimeout 0s means no whole-request limit', async (t) => {
  const slow = await startHeldUpstream(t, 'no limit')
  const g = await startGateway(t, meshConfig({ api: [slow] }, [{ name: 'api', destination: { service: 'api' }, requestTimeout: '0s' }]))
  const pending = g.request('/')
  await slow.waitForArrivals(1)
  await new Promise((resolve) => setTimeout(resolve, 1200))
  slow.release()
  assert.equal((await pending).status, 200)
})
