// Per-route request statistics in the admin API, kept in the gateway's state registry by
// route name: shown by GET /routes and GET /routes/:name, kept across reloads that keep the
// name, dropped once no live or draining version has the route.
// Counts are recorded here with recordRouteStats, as the gateway-wide policy chain will for
// every request (src/gateway/app.ts).
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, eventually, assertErrorResponse } from '../helpers/gateway.js'
import { meshConfig, startEcho, type EchoUpstream } from '../helpers/upstreams.js'
import { recordRouteStats, routeStatsKind, type RouteStatsSnapshot } from '../../src/telemetry/route-stats.js'

interface RoutesBody {
  version: number
  routes: Array<{ name: string, stats: RouteStatsSnapshot }>
  gatewayRoutes: Array<{ name: string, stats: RouteStatsSnapshot }>
}

const routes = (echo: EchoUpstream, names: string[]): Record<string, unknown> =>
  meshConfig({ svc: [echo] }, names.map((name) => ({ name, match: { path: { prefix: `/${name}` } }, destination: { service: 'svc' } })))

test('GET /routes shows each route\'s request statistics, zero for a route without requests', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, routes(echo, ['orders', 'billing']))
  recordRouteStats(g.gateway.state, 'orders', 200, 4)
  recordRouteStats(g.gateway.state, 'orders', 503, 2, 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT')
  const res = await g.admin('GET', '/routes')
  assert.equal(res.status, 200)
  const body = res.json<RoutesBody>()
  const orders = body.routes.find((r) => r.name === 'orders')
  assert.deepEqual(orders?.stats, {
    requests: 2,
    byClass: { '1xx': 0, '2xx': 1, '3xx': 0, '4xx': 0, '5xx': 1, other: 0 },
    errors: { FASTMESH_ERR_NO_HEALTHY_ENDPOINT: 1 },
    durationMs: { sum: 6, mean: 3 },
    retries: 0,
    retriedRequests: 0
  })
  assert.equal(body.routes.find((r) => r.name === 'billing')?.stats.requests, 0)
  assert.equal(g.gateway.state.peek(routeStatsKind, 'billing'), undefined, 'reading the admin API makes no state')
  assert.deepEqual(body.gatewayRoutes, [])
})

test('GET /routes/:name answers one route with its statistics', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, routes(echo, ['orders']))
  recordRouteStats(g.gateway.state, 'orders', 200, 1)
  const res = await g.admin('GET', '/routes/orders')
  assert.equal(res.status, 200)
  const body = res.json<{ name: string, version: number, stats: RouteStatsSnapshot }>()
  assert.equal(body.name, 'orders')
  assert.equal(body.stats.requests, 1)
})

test('GET /routes/:name for a route the config does not have is 404 FASTMESH_ERR_ADMIN_NOT_FOUND', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, routes(echo, ['orders']))
  assertErrorResponse(await g.admin('GET', '/routes/nope'), 404, 'FASTMESH_ERR_ADMIN_NOT_FOUND')
})

test('route statistics survive a reload that keeps the route name', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, routes(echo, ['orders', 'gone']))
  const stats = g.gateway.state.slot(routeStatsKind, 'orders')
  stats.record(200, 1)
  recordRouteStats(g.gateway.state, 'gone', 200, 1)
  await g.writeConfig(routes(echo, ['orders', 'billing']))
  assert.equal((await g.gateway.reload('test')).ok, true)
  // `gone` dropped: the old version has retired and the release has run.
  await eventually(() => g.gateway.state.peek(routeStatsKind, 'gone') === undefined, 'the old version to retire')
  assert.equal(g.gateway.state.slot(routeStatsKind, 'orders'), stats, 'the same statistics object keeps counting')
  const body = (await g.admin('GET', '/routes')).json<RoutesBody>()
  assert.equal(body.version, 2)
  assert.equal(body.routes.find((r) => r.name === 'orders')?.stats.requests, 1)
})

test('a refused reload keeps route statistics', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, routes(echo, ['orders']))
  recordRouteStats(g.gateway.state, 'orders', 200, 1)
  await g.writeRawConfig('routes: [ { name: broken')
  assert.equal((await g.gateway.reload('test')).ok, false)
  assert.equal(g.gateway.state.peek(routeStatsKind, 'orders')?.snapshot().requests, 1)
})

test('a reload that removes a route drops its statistics once no version has the route', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, routes(echo, ['orders', 'billing']))
  recordRouteStats(g.gateway.state, 'billing', 200, 1)
  recordRouteStats(g.gateway.state, 'orders', 200, 1)
  await g.writeConfig(routes(echo, ['orders']))
  assert.equal((await g.gateway.reload('test')).ok, true)
  await eventually(() => g.gateway.state.peek(routeStatsKind, 'billing') === undefined, 'billing\'s statistics to be dropped after the old version retires')
  assert.equal(g.gateway.state.peek(routeStatsKind, 'orders')?.snapshot().requests, 1)
})

test('requests through the gateway are counted under their route and keep counting across a reload', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, routes(echo, ['orders']))
  assert.equal((await g.request('/orders/1')).status, 200)
  assert.equal((await g.request('/orders/2')).status, 200)
  // Counted when the response ends, which may be just after the client has read it.
  const statsOf = async (): Promise<{ version: number, stats: RouteStatsSnapshot }> => (await g.admin('GET', '/routes/orders')).json()
  const before = await eventually(async () => { const b = await statsOf(); return b.stats.requests === 2 && b.stats }, 'two requests counted')
  assert.equal(before.byClass['2xx'], 2)
  await g.writeConfig(routes(echo, ['orders', 'billing']))
  assert.equal((await g.gateway.reload('test')).ok, true)
  assert.equal((await g.request('/orders/3')).status, 200)
  const after = await eventually(async () => { const b = await statsOf(); return b.stats.requests >= 3 && b }, 'the third request counted')
  assert.equal(after.version, 2)
  assert.equal(after.stats.requests, 3, 'counting went on from 2 after the reload')
})
