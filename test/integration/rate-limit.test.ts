// The built-in `rate-limit` plugin on real gateways and real upstreams: the limit exactly
// reached, the 429 with its headers, window rollover, keys (client, header, route, trusted
// X-Forwarded-For), counters that survive a reload, and a limit shared by two gateways
// through a real redis-server, with both fail modes while Redis is down.
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, assertErrorResponse, type TestGateway } from '../helpers/gateway.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'
import { startRedis } from '../helpers/redis.js'

function limited (options: Record<string, unknown>, name = 'limited'): Record<string, unknown> {
  return { name, destination: { service: 'svc' }, plugins: [{ name: 'rate-limit', options }] }
}

async function statuses (g: TestGateway, n: number, headers: Record<string, string> = {}): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push((await g.request('/x', { headers })).status)
  return out
}

test('rate-limit: max requests pass with RateLimit-* headers counting down, the next gets 429 FASTMESH_ERR_RATE_LIMITED with Retry-After', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [limited({ max: 3, timeWindow: '1m' })]))
  const remaining: unknown[] = []
  for (let i = 0; i < 3; i++) {
    const res = await g.request('/x')
    assert.equal(res.status, 200)
    assert.equal(res.headers['ratelimit-limit'], '3')
    remaining.push(res.headers['ratelimit-remaining'])
  }
  assert.deepEqual(remaining, ['2', '1', '0'])
  const over = await g.request('/x')
  const body = assertErrorResponse(over, 429, 'FASTMESH_ERR_RATE_LIMITED')
  assert.match(body.error.message, /route "limited"/)
  const retryAfter = Number(over.headers['retry-after'])
  assert.ok(retryAfter > 0 && retryAfter <= 60, `Retry-After within the window (${String(over.headers['retry-after'])})`)
  assert.equal(over.headers['ratelimit-remaining'], '0')
  assert.equal(echo.seen.length, 3, 'the refused request never reached the upstream')
})

test('rate-limit: a new window starts after timeWindow', async (t) => {
  const echo = await startEcho(t, 'svc')
  // A window starts at its first request: the three must fall in it, which a loaded machine
  // does not guarantee in 400 ms. 2 s leaves room; the wait outlasts it.
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [limited({ max: 2, timeWindow: '2s' })]))
  assert.deepEqual(await statuses(g, 3), [200, 200, 429])
  await new Promise((resolve) => setTimeout(resolve, 2_500))
  assert.deepEqual(await statuses(g, 3), [200, 200, 429])
})

test('rate-limit: keyBy header counts each value apart, and requests without it together', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [limited({ max: 1, keyBy: 'header:x-tenant' })]))
  assert.deepEqual(await statuses(g, 2, { 'x-tenant': 'a' }), [200, 429])
  assert.deepEqual(await statuses(g, 2, { 'x-tenant': 'b' }), [200, 429])
  assert.deepEqual(await statuses(g, 2), [200, 429])
})

test('rate-limit: keyBy client ignores X-Forwarded-For unless the gateway trusts it', async (t) => {
  const echo = await startEcho(t, 'svc')
  const untrusted = await startGateway(t, meshConfig({ svc: [echo] }, [limited({ max: 1 })]))
  assert.equal((await untrusted.request('/x', { headers: { 'x-forwarded-for': '203.0.113.1' } })).status, 200)
  assert.equal((await untrusted.request('/x', { headers: { 'x-forwarded-for': '203.0.113.2' } })).status, 429, 'a forged X-Forwarded-For does not buy a new key')

  const trusted = await startGateway(t, meshConfig({ svc: [echo] }, [limited({ max: 1 })], { gateway: { trustForwardedHeaders: true } }))
  assert.equal((await trusted.request('/x', { headers: { 'x-forwarded-for': '203.0.113.1, 10.0.0.1' } })).status, 200)
  assert.equal((await trusted.request('/x', { headers: { 'x-forwarded-for': '203.0.113.2' } })).status, 200)
  assert.equal((await trusted.request('/x', { headers: { 'x-forwarded-for': '203.0.113.1' } })).status, 429)
})

test('rate-limit: keyBy route counts every client together, and each route apart', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { ...limited({ max: 2, keyBy: 'route' }, 'a'), match: { path: { prefix: '/a' } } },
    { ...limited({ max: 2, keyBy: 'route' }, 'b'), match: { path: { prefix: '/b' } } }
  ]))
  const a = []
  for (let i = 0; i < 3; i++) a.push((await g.request('/a', { headers: { 'x-forwarded-for': `198.51.100.${i}` } })).status)
  assert.deepEqual(a, [200, 200, 429])
  assert.equal((await g.request('/b')).status, 200, 'route b has its own count')
})

test('rate-limit: local counters survive a reload that keeps the route', async (t) => {
  const echo = await startEcho(t, 'svc')
  const routes = [limited({ max: 3 })]
  const g = await startGateway(t, meshConfig({ svc: [echo] }, routes))
  assert.deepEqual(await statuses(g, 2), [200, 200])
  await g.writeConfig(meshConfig({ svc: [echo] }, [...routes, { name: 'other', match: { path: { prefix: '/other' } }, destination: { service: 'svc' } }]))
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  assert.deepEqual(await statuses(g, 2), [200, 429], 'the third request of the window passes, the fourth is refused')
})

test('rate-limit in Redis: two gateways share one limit', async (t) => {
  const redis = await startRedis(t)
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [limited({ max: 4, keyBy: 'route', store: { redis: { url: redis.url } } })])
  const a = await startGateway(t, config)
  const b = await startGateway(t, config)
  const seen = []
  for (let i = 0; i < 3; i++) {
    seen.push((await a.request('/x')).status)
    seen.push((await b.request('/x')).status)
  }
  assert.deepEqual(seen, [200, 200, 200, 200, 429, 429])
})

test('rate-limit in Redis: Redis down with failMode open lets requests through at once; counting resumes when it is back', async (t) => {
  const redis = await startRedis(t)
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [limited({ max: 2, keyBy: 'route', store: { redis: { url: redis.url, timeout: '200ms', failMode: 'open' } } })]))
  assert.deepEqual(await statuses(g, 3), [200, 200, 429])
  await redis.stop()
  const start = performance.now()
  assert.deepEqual(await statuses(g, 3), [200, 200, 200], 'open: not counted, not refused')
  assert.match((await g.admin('GET', '/metrics')).text, /^fastmesh_plugin_outcomes_total\{role="edge",route="[^"]+",plugin="rate-limit",outcome="store_fail_open"\} 3$/m, 'each request let through unlimited is counted')
  // Each is bounded by the store's 200 ms timeout, with 1.5 s of slack for a loaded machine.
  assert.ok(performance.now() - start < 3 * (200 + 1500), 'no request waited on the dead Redis beyond its timeout')
  await redis.restart()
  const { eventually } = await import('../helpers/poll.js')
  // The client reconnects on its own; the restarted Redis is empty, so the count starts again.
  await eventually(async () => (await g.request('/x')).status === 429 ? true : undefined, 'the limit to apply again', 10_000)
  assert.ok(g.logs.entries().some((e) => e.msg === 'rate-limit Redis store unavailable'), 'the outage was logged')
  assert.ok(g.logs.entries().some((e) => e.msg === 'rate-limit Redis store available'), 'the recovery was logged')
})

test('rate-limit in Redis: Redis down with failMode closed answers 503 FASTMESH_ERR_RATE_LIMIT_UNAVAILABLE', async (t) => {
  const redis = await startRedis(t)
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [limited({ max: 5, store: { redis: { url: redis.url, timeout: '200ms', failMode: 'closed' } } })]))
  assert.equal((await g.request('/x')).status, 200)
  await redis.stop()
  const res = await g.request('/x')
  assertErrorResponse(res, 503, 'FASTMESH_ERR_RATE_LIMIT_UNAVAILABLE')
  assert.equal(echo.seen.length, 1)
  assert.match((await g.admin('GET', '/metrics')).text, /^fastmesh_plugin_outcomes_total\{role="edge",route="[^"]+",plugin="rate-limit",outcome="store_fail_closed"\} 1$/m)
})

test('rate-limit: options are checked at validation with their JSON path', async (t) => {
  const echo = await startEcho(t, 'svc')
  await assert.rejects(startGateway(t, meshConfig({ svc: [echo] }, [limited({ max: 0, keyBy: 'ip' })])), (err: Error) => {
    assert.match(err.message, /\$\.routes\[0\]\.plugins\[0\]\.options\.max/)
    assert.match(err.message, /\$\.routes\[0\]\.plugins\[0\]\.options\.keyBy/)
    return true
  })
})
