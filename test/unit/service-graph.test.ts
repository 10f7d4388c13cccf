// The service graph's numbers: rates, error share and p99 over the recent window, computed
// from snapshots of GatewayMetrics' cumulative series on a fake clock, and the mesh merge
// that counts a call seen at both ends once.
import test from 'node:test'
import assert from 'node:assert/strict'
import { GatewayMetrics, type MetricsSnapshot } from '../../src/telemetry/metrics.js'
import { RequestWindow, quantileSeconds } from '../../src/telemetry/request-window.js'
import { CLIENTS_NODE, localGraph, mergeGraphs, type LocalGraph } from '../../src/admin/service-graph.js'
import type { Entry, Exchange } from '../../src/gateway/exchange.js'

/** The fields GatewayMetrics.record reads of an ended exchange. */
function ended (o: { route?: string, destination?: string, status: number, ms: number, error?: string, entry?: Entry }): Exchange {
  return { entry: o.entry, route: o.route, destination: o.destination, endpoint: '127.0.0.1:1', status: o.status, error: o.error, durationMs: o.ms, requestBytes: 0, responseBytes: 0, fault: undefined } as unknown as Exchange
}

function fakeClock (start = 1_000_000): { now: () => number, advance: (ms: number) => void } {
  let t = start
  return { now: () => t, advance: (ms) => { t += ms } }
}

const edge = (g: LocalGraph, source: string, destination: string) => g.edges.find((e) => e.source === source && e.destination === destination)

test('a view right after traffic shows its rate over the time since the window began: no second poll needed', () => {
  const clock = fakeClock()
  const metrics = new GatewayMetrics({ role: 'edge', processMetrics: false })
  const window = new RequestWindow(() => metrics.snapshot(), { windowMs: 60_000, intervalMs: 5_000, now: clock.now })
  clock.advance(10_000)
  for (let i = 0; i < 20; i++) metrics.record(ended({ route: 'ra', destination: 'a', status: 200, ms: 4 }))
  const v = window.view()
  assert.equal(v.seconds, 10)
  const s = v.series.find((x) => x.destination === 'a')!
  assert.equal(s.count, 20)
  assert.equal(s.total, 20)
  const g = localGraph({ gateway: { name: 'edge', role: 'edge' }, localServices: [], window: v, services: [], routes: [{ name: 'ra', match: {}, destination: 'a' }], certificates: [] })
  assert.equal(edge(g, CLIENTS_NODE, 'a')?.rps, 2)
  assert.equal(g.routes[0]!.rps, 2)
})

test('traffic older than the window drops out; the window keeps counting what came after its baseline', () => {
  const clock = fakeClock()
  const metrics = new GatewayMetrics({ role: 'edge', processMetrics: false })
  const window = new RequestWindow(() => metrics.snapshot(), { windowMs: 60_000, intervalMs: 5_000, now: clock.now })
  for (let i = 0; i < 30; i++) metrics.record(ended({ route: 'ra', destination: 'a', status: 200, ms: 4 }))
  // Snapshots every 5 s for 70 s, then 12 more requests.
  for (let i = 0; i < 14; i++) { clock.advance(5_000); window.sample() }
  for (let i = 0; i < 12; i++) metrics.record(ended({ route: 'ra', destination: 'a', status: 200, ms: 4 }))
  const v = window.view()
  // The oldest snapshot inside the last 60 s was taken 60 s ago (after the first 30 requests).
  assert.equal(v.seconds, 60)
  const s = v.series[0]!
  assert.equal(s.count, 12)
  assert.equal(s.total, 42)
  assert.equal(localGraph({ gateway: { name: 'edge', role: 'edge' }, localServices: [], window: v, services: [], routes: [], certificates: [] }).edges[0]!.rps, 0.2)
})

test('when the timer could not run for a whole window, the newest older snapshot is the baseline', () => {
  const clock = fakeClock()
  const metrics = new GatewayMetrics({ role: 'edge', processMetrics: false })
  const window = new RequestWindow(() => metrics.snapshot(), { windowMs: 60_000, now: clock.now })
  metrics.record(ended({ route: 'ra', destination: 'a', status: 200, ms: 4 }))
  clock.advance(5_000)
  window.sample()
  metrics.record(ended({ route: 'ra', destination: 'a', status: 200, ms: 4 }))
  clock.advance(120_000)
  const v = window.view()
  assert.equal(v.seconds, 120)
  assert.equal(v.series[0]!.count, 1)
})

test('error share counts 5xx and gateway-made errors once each; errors by code are windowed', () => {
  const clock = fakeClock()
  const metrics = new GatewayMetrics({ role: 'edge', processMetrics: false })
  const window = new RequestWindow(() => metrics.snapshot(), { now: clock.now })
  metrics.record(ended({ route: 'rb', destination: 'b', status: 503, ms: 1, error: 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT' }))
  clock.advance(61_000)
  window.sample()
  for (let i = 0; i < 6; i++) metrics.record(ended({ route: 'rb', destination: 'b', status: 200, ms: 2 }))
  metrics.record(ended({ route: 'rb', destination: 'b', status: 502, ms: 2 }))
  metrics.record(ended({ route: 'rb', destination: 'b', status: 503, ms: 1, error: 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT' }))
  metrics.record(ended({ route: 'rb', destination: 'b', status: 429, ms: 1, error: 'FASTMESH_ERR_RATE_LIMITED' }))
  // A route plugin's own code: not a gateway error (a 4xx of the plugin's choosing), not a failure.
  metrics.record(ended({ route: 'rb', destination: 'b', status: 403, ms: 1, error: 'MY_PLUGIN_SAYS_NO' }))
  // Cut by the client: not the gateway's error, not a failure.
  metrics.record(ended({ route: 'rb', destination: 'b', status: 499, ms: 1, error: 'client closed the connection' }))
  clock.advance(4_000)
  const v = window.view()
  const g = localGraph({ gateway: { name: 'edge', role: 'edge' }, localServices: [], window: v, services: [], routes: [], certificates: [] })
  const e = edge(g, CLIENTS_NODE, 'b')!
  assert.equal(e.requests, 11)
  assert.equal(e.failed, 3, '502, 503 (gateway), 429 (gateway)')
  assert.equal(e.gatewayErrors, 2)
  assert.equal(e.total, 12)
  assert.deepEqual(g.errors, [
    { code: 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT', recent: 1, total: 2 },
    { code: 'FASTMESH_ERR_RATE_LIMITED', recent: 1, total: 1 }
  ])
  const merged = mergeGraphs([{ status: { name: 'edge', role: 'edge', admin: 'x', self: true, status: 'ok' }, graph: g }])
  assert.equal(merged.edges[0]!.errorPercent, 300 / 11)
})

test('p99 interpolates inside the bucket it falls in, as histogram_quantile does', () => {
  // 100 requests: 98 at <= 1 ms, 2 between 5 and 10 ms.
  const buckets = [0, 98, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]
  assert.equal(quantileSeconds(buckets, 100, 0.99), 0.0075)
  assert.equal(quantileSeconds(buckets, 100, 0.5), 0.0005 + 0.0005 * (50 / 98))
  assert.equal(quantileSeconds(buckets, 0, 0.99), null)
  // Over the last bound: reported as the last bound.
  assert.equal(quantileSeconds([1, ...Array(13).fill(0)], 5, 0.99), 10)
})

test('a p99 from the window ignores slow requests that fell out of it', () => {
  const clock = fakeClock()
  const metrics = new GatewayMetrics({ role: 'edge', processMetrics: false })
  const window = new RequestWindow(() => metrics.snapshot(), { now: clock.now })
  for (let i = 0; i < 10; i++) metrics.record(ended({ route: 'ra', destination: 'a', status: 200, ms: 3000 }))
  clock.advance(61_000)
  window.sample()
  for (let i = 0; i < 100; i++) metrics.record(ended({ route: 'ra', destination: 'a', status: 200, ms: 0.8 }))
  clock.advance(1_000)
  const g = localGraph({ gateway: { name: 'edge', role: 'edge' }, localServices: [], window: window.view(), services: [], routes: [], certificates: [] })
  const merged = mergeGraphs([{ status: { name: 'edge', role: 'edge', admin: 'x', self: true, status: 'ok' }, graph: g }])
  const p99 = merged.edges[0]!.p99Ms!
  assert.ok(p99 > 0.5 && p99 <= 1, `p99 ${p99} ms is inside the 0.5-1 ms bucket`)
})

test('the mesh merge counts a call once when both its caller and destination gateways answered', () => {
  const clock = fakeClock()
  const view = (record: (m: GatewayMetrics) => void) => {
    const m = new GatewayMetrics({ role: 'node', processMetrics: false })
    const w = new RequestWindow(() => m.snapshot(), { now: clock.now })
    record(m)
    clock.advance(10_000)
    return w.view()
  }
  const inbound = (peer: string, service: string): Entry => ({ kind: 'inbound', service, peer: { service: peer, uri: `spiffe://x/${peer}` } })
  const edgeGraph = localGraph({ gateway: { name: 'edge', role: 'edge' }, localServices: [], services: [], routes: [], certificates: [],
    window: view((m) => { for (let i = 0; i < 10; i++) m.record(ended({ route: 'web', destination: 'web', status: 200, ms: 2 })) }) })
  const nodeA = localGraph({ gateway: { name: 'node-a', role: 'node' }, localServices: ['web'], services: [], routes: [], certificates: [],
    window: view((m) => {
      for (let i = 0; i < 10; i++) m.record(ended({ route: 'inbound:web', destination: 'web', status: 200, ms: 1, entry: inbound('edge', 'web') }))
      for (let i = 0; i < 5; i++) m.record(ended({ route: 'upstream:web:orders', destination: 'orders', status: 200, ms: 1, entry: { kind: 'upstream', caller: 'web', service: 'orders' } }))
      // A connect failure the destination never sees.
      m.record(ended({ route: 'upstream:web:orders', destination: 'orders', status: 502, ms: 1, error: 'FASTMESH_ERR_UPSTREAM_CONNECT', entry: { kind: 'upstream', caller: 'web', service: 'orders' } }))
      for (let i = 0; i < 3; i++) m.record(ended({ route: '(by host)', destination: 'payments', status: 200, ms: 1, entry: { kind: 'outbound', caller: undefined } }))
    }) })
  const nodeB = localGraph({ gateway: { name: 'node-b', role: 'node' }, localServices: ['orders', 'payments'], services: [], routes: [], certificates: [],
    window: view((m) => {
      for (let i = 0; i < 5; i++) m.record(ended({ route: 'inbound:orders', destination: 'orders', status: 200, ms: 1, entry: inbound('web', 'orders') }))
      for (let i = 0; i < 3; i++) m.record(ended({ route: 'inbound:payments', destination: 'payments', status: 200, ms: 1, entry: inbound('node-a', 'payments') }))
      // From a caller whose gateway is not in the view: only the destination saw it.
      for (let i = 0; i < 2; i++) m.record(ended({ route: 'inbound:orders', destination: 'orders', status: 200, ms: 1, entry: inbound('billing', 'orders') }))
    }) })
  const ok = (name: string, role: string) => ({ name, role, admin: name, self: false, status: 'ok' as const })
  const all = mergeGraphs([{ status: ok('edge', 'edge'), graph: edgeGraph }, { status: ok('node-a', 'node'), graph: nodeA }, { status: ok('node-b', 'node'), graph: nodeB }])
  const requests = (s: string, d: string) => all.edges.find((e) => e.source === s && e.destination === d)?.requests
  assert.equal(requests(CLIENTS_NODE, 'web'), 10)
  assert.equal(requests('edge', 'web'), undefined, 'the edge\'s identity is its clients\' call, counted at the edge')
  assert.equal(requests('web', 'orders'), 6, 'the caller side, with the failure only it saw')
  assert.equal(requests('node-a', 'payments'), 3)
  assert.equal(requests('billing', 'orders'), 2)
  assert.equal(all.edges.length, 4)
  assert.equal(all.nodes.find((n) => n.id === 'node-a')?.kind, 'apps')
  assert.deepEqual(all.edges.find((e) => e.source === 'web')?.seenBy, ['node-a'])

  // node-a did not answer: the destination's inbound counts stand in for it.
  const partial = mergeGraphs([{ status: ok('edge', 'edge'), graph: edgeGraph }, { status: { ...ok('node-a', 'node'), status: 'unreachable', error: 'no answer' } }, { status: ok('node-b', 'node'), graph: nodeB }])
  assert.equal(partial.edges.find((e) => e.source === 'web' && e.destination === 'orders')?.requests, 5)
  assert.equal(partial.gateways.find((g) => g.name === 'node-a')?.status, 'unreachable')
})

test('snapshot copies: later requests do not change an earlier snapshot', () => {
  const metrics = new GatewayMetrics({ role: 'edge', processMetrics: false })
  metrics.record(ended({ route: 'ra', destination: 'a', status: 200, ms: 4 }))
  const before: MetricsSnapshot = metrics.snapshot()
  metrics.record(ended({ route: 'ra', destination: 'a', status: 200, ms: 4 }))
  assert.equal(before.series[0]!.count, 1)
  assert.equal(before.series[0]!.buckets[3], 1)
  assert.equal(metrics.snapshot().series[0]!.count, 2)
})
