// Per-route statistics: counts by status class, gateway-made errors by code, duration sum
// and mean, kept in the state registry under the route name.
import test from 'node:test'
import assert from 'node:assert/strict'
import { StateRegistry } from '../../src/state/registry.js'
import { RouteStats, recordRouteStats, routeStatsKind } from '../../src/telemetry/route-stats.js'

test('a route with no requests reports zero counts and no mean', () => {
  assert.deepEqual(new RouteStats().snapshot(), {
    requests: 0,
    byClass: { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0, other: 0 },
    errors: {},
    durationMs: { sum: 0, mean: null },
    retries: 0,
    retriedRequests: 0
  })
})

test('record counts responses by status class, statuses outside 100-599 as other', () => {
  const s = new RouteStats()
  for (const status of [101, 200, 204, 301, 404, 429, 503, 599, 600, 99, 0]) s.record(status, 1)
  assert.deepEqual(s.snapshot().byClass, { '1xx': 1, '2xx': 2, '3xx': 1, '4xx': 2, '5xx': 2, other: 3 })
  assert.equal(s.snapshot().requests, 11)
})

test('record counts gateway-made errors by code', () => {
  const s = new RouteStats()
  s.record(503, 1, 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT')
  s.record(503, 1, 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT')
  s.record(504, 1, 'FASTMESH_ERR_UPSTREAM_TIMEOUT')
  s.record(200, 1)
  assert.deepEqual(s.snapshot().errors, { FASTMESH_ERR_NO_HEALTHY_ENDPOINT: 2, FASTMESH_ERR_UPSTREAM_TIMEOUT: 1 })
})

test('record keeps the running duration sum and mean', () => {
  const s = new RouteStats()
  s.record(200, 2)
  s.record(200, 4.5)
  assert.deepEqual(s.snapshot().durationMs, { sum: 6.5, mean: 3.25 })
})

test('recordRouteStats counts into the registry slot of the route name', () => {
  const r = new StateRegistry()
  recordRouteStats(r, 'orders', 200, 1)
  recordRouteStats(r, 'orders', 500, 1, 'FASTMESH_ERR_INTERNAL')
  recordRouteStats(r, 'billing', 200, 1)
  const orders = r.peek(routeStatsKind, 'orders')
  assert.ok(orders !== undefined)
  assert.equal(orders.snapshot().requests, 2)
  assert.equal(r.slot(routeStatsKind, 'billing').snapshot().requests, 1)
})

test('route statistics survive a release that keeps the route name, and go with it otherwise', () => {
  // What a reload does: the gateway releases the route names no live version uses.
  const r = new StateRegistry()
  const orders = r.slot(routeStatsKind, 'orders')
  orders.record(200, 1)
  r.slot(routeStatsKind, 'gone').record(200, 1)
  r.release({ route: new Set(['orders']) })
  assert.equal(r.slot(routeStatsKind, 'orders'), orders)
  assert.equal(orders.snapshot().requests, 1)
  assert.equal(r.peek(routeStatsKind, 'gone'), undefined)
})
