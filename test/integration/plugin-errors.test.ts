// Route plugins refusing requests: their status and the headers they set reach the client
// (published @fastify/rate-limit and @fastify/under-pressure, unchanged), a plugin can raise
// a catalogue error by key, onSend runs for gateway-made answers, and the internal URL that
// reaches a route's Fastify context is never seen by plugins, logs or upstreams.
import test from 'node:test'
import assert from 'node:assert/strict'
import { writeFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { startGateway, fixturePlugin, assertErrorResponse, eventually, tempDir } from '../helpers/gateway.js'
import { startEcho, meshConfig, type EchoRecord } from '../helpers/upstreams.js'

test('@fastify/rate-limit as a route plugin answers 429 with Retry-After and its rate-limit headers', async (t) => {
  const echo = await startEcho(t, 'api')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ api: [echo] }, [
    { name: 'limited', destination: { service: 'api' }, plugins: [{ name: 'fastify-rate-limit', options: { max: 2, timeWindow: '1 minute' } }] }
  ], { customPlugins: { 'fastify-rate-limit': { module: fixturePlugin(dir, 'rate-limit.js') } } }), { dir })
  assert.equal((await g.request('/a')).status, 200)
  assert.equal((await g.request('/a')).status, 200)
  const res = await g.request('/a', { headers: { 'x-request-id': 'limited-3' } })
  const body = assertErrorResponse(res, 429, 'FASTMESH_ERR_ROUTE_PLUGIN')
  assert.equal(body.error.requestId, 'limited-3')
  assert.ok(Number(res.headers['retry-after']) > 0, `Retry-After: ${String(res.headers['retry-after'])}`)
  assert.equal(res.headers['x-ratelimit-limit'], '2')
  assert.equal(res.headers['x-ratelimit-remaining'], '0')
  assert.equal(echo.seen.length, 2, 'the refused request never reached the upstream')
  const line = g.logs.entries().find((e) => e.log === 'access' && e.requestId === 'limited-3')
  assert.equal(line?.status, 429)
  assert.equal(line?.route, 'limited')
})

test('@fastify/under-pressure as a route plugin answers 503 with Retry-After (a plugin 5xx keeps its status)', async (t) => {
  const echo = await startEcho(t, 'api')
  const dir = await tempDir(t)
  const marker = join(dir, 'unhealthy')
  const g = await startGateway(t, meshConfig({ api: [echo] }, [
    { name: 'guarded', destination: { service: 'api' }, plugins: [{ name: 'pressure', options: { unhealthyWhileFileExists: marker } }] }
  ], { customPlugins: { pressure: { module: fixturePlugin(dir, 'under-pressure.js') } } }), { dir })
  assert.equal((await g.request('/')).status, 200)
  await writeFile(marker, '')
  const res = await eventually(async () => { const r = await g.request('/'); return r.status === 503 ? r : undefined }, 'under-pressure to see the marker')
  assert.equal(res.headers['retry-after'], '7')
  const body = res.json<{ error: { code: string, requestId: string } }>()
  assert.equal(typeof body.error.code, 'string')
  assert.notEqual(body.error.code, 'FASTMESH_ERR_INTERNAL', 'not turned into an internal error')
  assert.equal(res.headers['x-request-id'], body.error.requestId)
  await rm(marker)
  await eventually(async () => (await g.request('/')).status === 200, 'recovery once the marker is gone')
})

test('a route plugin raises a catalogue error by key and keeps the headers it set', async (t) => {
  const echo = await startEcho(t, 'api')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ api: [echo] }, [
    { name: 'closed', destination: { service: 'api' }, plugins: [{ name: 'refuse', options: {} }] }
  ], { customPlugins: { refuse: { module: fixturePlugin(dir, 'catalogue-error.js') } } }), { dir })
  const res = await g.request('/', { headers: { 'x-caller': 'web' } })
  const body = assertErrorResponse(res, 403, 'FASTMESH_ERR_FORBIDDEN')
  assert.match(body.error.message, /web may not call fixture/)
  assert.equal(res.headers['www-authenticate'], 'Bearer realm="fixture"')
  assert.equal(echo.seen.length, 0)
})

test('onSend hooks of route plugins run for errors their route raises, and their headers stay on the gateway\'s own answers', async (t) => {
  const echo = await startEcho(t, 'api')
  const dir = await tempDir(t)
  const g = await startGateway(t, {
    discovery: { embedded: { services: { empty: { endpoints: [] }, api: { endpoints: [{ address: '127.0.0.1', port: echo.port }] } } } },
    routes: [
      { name: 'refused', match: { path: { prefix: '/refused' } }, destination: { service: 'api' }, plugins: [{ name: 'observe', options: {} }, { name: 'refuse', options: {} }] },
      { name: 'nothing-there', destination: { service: 'empty' }, plugins: [{ name: 'observe', options: {} }] }
    ],
    customPlugins: { observe: { module: fixturePlugin(dir, 'observe.js') }, refuse: { module: fixturePlugin(dir, 'catalogue-error.js') } }
  }, { dir })
  const refused = await g.request('/refused')
  assertErrorResponse(refused, 403, 'FASTMESH_ERR_FORBIDDEN')
  assert.equal(refused.headers['x-on-send'], 'ran', 'onSend ran on the error raised in the route')
  // No endpoint: the gateway answers after the plugins ran (docs/writing-plugins.md: onSend does not run there).
  const empty = await g.request('/x')
  assertErrorResponse(empty, 503, 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT')
  assert.ok(empty.headers['x-plugin-saw'] !== undefined, 'headers the plugin set in onRequest are kept')
})

test('plugins, the access log and the upstream never see the internal route URL', async (t) => {
  const echo = await startEcho(t, 'api')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ api: [echo] }, [
    { name: 'other', match: { path: { prefix: '/other' } }, destination: { service: 'api' } },
    { name: 'seen', match: { path: { prefix: '/api' } }, destination: { service: 'api' }, plugins: [{ name: 'observe', options: {} }] }
  ], { customPlugins: { observe: { module: fixturePlugin(dir, 'observe.js') } } }), { dir })
  const res = await g.request('/api/items?color=blue', { headers: { 'x-request-id': 'url-check' } })
  assert.equal(res.status, 200)
  const saw = JSON.parse(String(res.headers['x-plugin-saw'])) as { url: string, originalUrl: string, query: Record<string, string>, raw: string }
  assert.deepEqual(saw, { url: '/api/items?color=blue', originalUrl: '/api/items?color=blue', query: { color: 'blue' }, raw: '/api/items?color=blue' })
  assert.equal(res.json<EchoRecord>().url, '/api/items?color=blue')
  const line = g.logs.entries().find((e) => e.log === 'access' && e.requestId === 'url-check')
  assert.equal(line?.path, '/api/items?color=blue')
  assert.doesNotMatch(JSON.stringify({ saw, line, upstream: res.json<EchoRecord>() }), /fastmesh-route/)
})
