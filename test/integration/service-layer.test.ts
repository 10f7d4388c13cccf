// The service layer alone: ServiceEndpoints (src/balancer/service-endpoints.ts) over the real
// EmbeddedRegistry and real EndpointPools. No route or endpoint layer takes part: nothing is
// forwarded, so apart from the health-check test (which needs a server to probe) the
// endpoints' ports are never connected to; their pools are made and closed, never used.
// Round robin through a whole gateway is covered by test/integration/discovery.test.ts.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { createServer } from 'node:http'
import { EmbeddedRegistry, type EmbeddedServiceInput } from '../../src/discovery/embedded/registry.js'
import { ServiceEndpoints } from '../../src/balancer/service-endpoints.js'
import type { ServiceSelector } from '../../src/config/selectors.js'
import { EndpointPools, type EndpointPool, type EndpointTarget, type PoolSettings } from '../../src/upstream/endpoint-pool.js'
import { eventually } from '../helpers/poll.js'
import { freePort } from '../helpers/ports.js'
import { startUpstream } from '../helpers/upstreams.js'

const SETTINGS: PoolSettings = { connections: 4, pipelining: 1, connectTimeoutMs: 1_000, keepAliveTimeoutMs: 4_000 }

interface Layer {
  readonly registry: EmbeddedRegistry
  readonly pools: EndpointPools
  /** A new endpoint set for `selector` (default: all of `orders`), closed after the test. */
  endpoints(selector?: ServiceSelector): ServiceEndpoints
}

function serviceLayer (t: TestContext, services: Record<string, EmbeddedServiceInput>): Layer {
  const registry = new EmbeddedRegistry(pino({ level: 'silent' }))
  const pools = new EndpointPools()
  const sets: ServiceEndpoints[] = []
  t.after(async () => {
    for (const s of sets) s.close()
    await pools.close()
    await registry.close()
  })
  registry.applyConfig(services)
  return {
    registry,
    pools,
    endpoints (selector = { service: 'orders' }) {
      const s = new ServiceEndpoints(selector, registry, pools, SETTINGS)
      sets.push(s)
      return s
    }
  }
}

function ep (id: string, port: number, weight = 1): EmbeddedServiceInput['endpoints'][number] {
  return { id, address: '127.0.0.1', port, weight, tags: [], meta: {} }
}

/** `n` picks, by endpoint id (`-` for none). */
function picks (s: ServiceEndpoints, n: number): string[] {
  return Array.from({ length: n }, () => s.pick()?.endpoint.id ?? '-')
}

function counts (ids: string[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const id of ids) out[id] = (out[id] ?? 0) + 1
  return out
}

/** The target `s` picks for `id` (within `limit` picks). */
/** A picked target of `s`: its pool is the set's own EndpointPool. */
type PoolTarget = EndpointTarget & { readonly pool: EndpointPool }

function targetOf (s: ServiceEndpoints, id: string, limit = 10): PoolTarget {
  for (let i = 0; i < limit; i++) {
    const t = s.pick()
    if (t?.endpoint.id === id) return t as unknown as PoolTarget
  }
  assert.fail(`${id} was not picked in ${limit} picks`)
}

test('only usable endpoints are picked: one failing its health check never is', async (t) => {
  const healthy = await startUpstream(t, (_req, res) => { res.end('ok') })
  const nobody = await freePort()
  const layer = serviceLayer(t, {
    orders: { endpoints: [ep('up', healthy.port), ep('down', nobody)], healthCheck: { path: '/health', interval: '50ms', timeout: '500ms', healthyThreshold: 1, unhealthyThreshold: 1 } }
  })
  const s = layer.endpoints()
  // With a health check both start critical; only the one answering its probe becomes passing.
  assert.equal(s.pick(), undefined, 'no endpoint is usable before its first passing probe')
  await eventually(() => s.healthyCount === 1, 'the healthy endpoint to pass its check')
  assert.deepEqual(picks(s, 10), Array(10).fill('up'))
  const down = layer.registry.snapshot('orders')!.endpoints.find((e) => e.id === 'down')!
  assert.equal(down.health, 'critical')
})

test('a service with no endpoints picks nothing, but is known', async (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [] } })
  const s = layer.endpoints()
  assert.equal(s.pick(), undefined)
  assert.notEqual(s.current, undefined, 'discovery has answered (with no endpoints)')
  await s.known(10) // resolves at once: the embedded registry answered on watch
})

test('round robin over equal weights is even and cyclic', (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [ep('a', 1), ep('b', 2), ep('c', 3)] } })
  const got = picks(layer.endpoints(), 300)
  assert.deepEqual(counts(got), { a: 100, b: 100, c: 100 })
  const cycle = got.slice(0, 3)
  assert.deepEqual([...cycle].sort(), ['a', 'b', 'c'])
  for (let i = 0; i < got.length; i++) assert.equal(got[i], cycle[i % 3], `pick ${i}`)
})

test('weights 3:1 give exactly 3:1 over 400 picks, spread smoothly', (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [ep('heavy', 1, 3), ep('light', 2, 1)] } })
  const got = picks(layer.endpoints(), 400)
  assert.deepEqual(counts(got), { heavy: 300, light: 100 })
  // Smooth weighted round robin: every run of 4 picks holds light exactly once.
  for (let i = 0; i + 4 <= got.length; i += 4) assert.deepEqual(counts(got.slice(i, i + 4)), { heavy: 3, light: 1 }, `picks ${i}..${i + 3}`)
})

test('pools are made on first use of an endpoint, one per address', (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [ep('a', 1), ep('b', 2)] } })
  const s = layer.endpoints()
  const a = targetOf(s, 'a')
  assert.equal(layer.pools.size, 0, 'picking alone makes no pool')
  const pool = a.pool
  assert.equal(layer.pools.size, 1)
  assert.equal(targetOf(s, 'a').pool, pool, 'the same pool on every use')
  void targetOf(s, 'b').pool
  assert.equal(layer.pools.size, 2)
})

test('a removed endpoint leaves rotation and its pool closes once no endpoint set uses it', (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [ep('a', 1), ep('b', 2)] } })
  const first = layer.endpoints()
  const second = layer.endpoints()
  const bPool: EndpointPool = targetOf(first, 'b').pool
  assert.equal(targetOf(second, 'b').pool, bPool, 'two sets of the same service and settings share the pool')
  const aPool: EndpointPool = targetOf(first, 'a').pool
  assert.equal(layer.pools.size, 2)

  // Only the first set ever used a's pool; both use b's.
  first.close()
  assert.equal(aPool.closed, true, 'a\'s pool closed with its only user')
  assert.equal(bPool.closed, false, 'b\'s pool stays open for the second set')
  assert.equal(layer.pools.size, 1)

  layer.registry.applyConfig({ orders: { endpoints: [ep('a', 1)] } })
  assert.deepEqual(picks(second, 4), ['a', 'a', 'a', 'a'])
  assert.equal(bPool.closed, true, 'b\'s pool closed once its last user dropped b')
  assert.equal(layer.pools.size, 0, 'a is back in rotation but its pool is made again only on use')
})

test('an update keeps the same target object and pool for an unchanged endpoint', (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [ep('a', 1), ep('b', 2)] } })
  const s = layer.endpoints()
  const a = targetOf(s, 'a')
  const pool = a.pool
  layer.registry.register('orders', { id: 'c', address: '127.0.0.1', port: 3 })
  assert.equal(s.healthyCount, 3, 'the update was applied')
  assert.equal(targetOf(s, 'a'), a, 'same target object')
  assert.equal(a.pool, pool)
  assert.equal(pool.closed, false)
  assert.equal(layer.pools.size, 1)
})

test('an endpoint whose weight changes keeps its pool and is balanced with the new weight', (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [ep('a', 1), ep('b', 2)] } })
  const s = layer.endpoints()
  const pool = targetOf(s, 'a').pool
  layer.registry.applyConfig({ orders: { endpoints: [ep('a', 1, 3), ep('b', 2)] } })
  const a = targetOf(s, 'a')
  assert.equal(a.endpoint.weight, 3)
  assert.equal(a.pool, pool, 'same pool')
  assert.equal(pool.closed, false)
  assert.equal(layer.pools.size, 1)
  assert.deepEqual(counts(picks(s, 400)), { a: 300, b: 100 })
})

test('an endpoint that moves to another address gets a new pool and its old one closes', (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [ep('a', 1)] } })
  const s = layer.endpoints()
  const before = targetOf(s, 'a').pool
  layer.registry.applyConfig({ orders: { endpoints: [ep('a', 4)] } })
  const after = targetOf(s, 'a')
  assert.equal(after.label, '127.0.0.1:4')
  assert.notEqual(after.pool, before)
  assert.equal(before.closed, true)
  assert.equal(layer.pools.size, 1)
})

test('a subset selector picks only the endpoints carrying its tags and meta', (t) => {
  const layer = serviceLayer(t, {
    orders: {
      endpoints: [
        { id: 'v1', address: '127.0.0.1', port: 1, weight: 1, tags: ['v1'], meta: { zone: 'z1' } },
        { id: 'v2', address: '127.0.0.1', port: 2, weight: 1, tags: ['v2'], meta: { zone: 'z1' } },
        { id: 'v2-far', address: '127.0.0.1', port: 3, weight: 1, tags: ['v2'], meta: { zone: 'z2' } }
      ]
    }
  })
  const s = layer.endpoints({ service: 'orders', subset: { tags: ['v2'], meta: { zone: 'z1' } } })
  assert.deepEqual(picks(s, 4), ['v2', 'v2', 'v2', 'v2'])
})

test('a closed endpoint set releases its pools and ignores later discovery updates', (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [ep('a', 1)] } })
  const s = layer.endpoints()
  const pool = targetOf(s, 'a').pool
  s.close()
  assert.equal(layer.pools.size, 0)
  assert.equal(pool.closed, true)
  layer.registry.register('orders', { id: 'b', address: '127.0.0.1', port: 2 })
  assert.equal(s.pick(), undefined)
  assert.equal(layer.pools.size, 0)
})

const REFUSED = { status: 0, gatewayError: true, unreachable: true, latencyMs: 1 }

test('an endpoint reported unreachable leaves rotation at once and is back once a TCP connect probe reaches it', async (t) => {
  const live = await startUpstream(t, (_req, res) => { res.end('ok') })
  const port = await freePort()
  const layer = serviceLayer(t, { orders: { endpoints: [ep('live', live.port), ep('dead', port)] } })
  const s = layer.endpoints()
  const dead = targetOf(s, 'dead')
  s.report(dead, REFUSED)
  assert.deepEqual(picks(s, 4), ['live', 'live', 'live', 'live'])
  // A probe while nothing listens fails: the next one is scheduled later, and it stays out.
  const firstProbe = s.outlier.view('dead', Date.now()).until!
  await eventually(() => { s.pick(); return s.outlier.view('dead', Date.now()).until! > firstProbe }, 'a failed probe to schedule the next', 5000, 50)
  assert.equal(s.outlier.isUnreachable('dead'), true)
  assert.deepEqual(picks(s, 4), ['live', 'live', 'live', 'live'])
  const again = createServer((_req, res) => { res.end('ok') })
  await new Promise<void>((resolve) => { again.listen(port, '127.0.0.1', () => { resolve() }) })
  t.after(() => { again.close() })
  // Picks drive the probes (no timer): back within the probe backoff's max (2 s) of listening.
  await eventually(() => picks(s, 2).includes('dead'), 'the endpoint to be back in rotation', 5000, 50)
  assert.equal(layer.pools.size, 0, 'a probe is a bare TCP connect: it makes no pool')
})

test('with unreachable endpoints, a pick with untriedOnly returns none rather than a tried or unreachable endpoint', (t) => {
  const layer = serviceLayer(t, { orders: { endpoints: [ep('a', 1), ep('b', 2)] } })
  const s = layer.endpoints()
  s.report(targetOf(s, 'a'), REFUSED)
  const request = { headers: {}, clientAddress: '', search: '', tried: new Set(['orders-2']), untriedOnly: true }
  // b tried; a unreachable: nothing for a retry that must not repeat an endpoint.
  assert.equal(s.pick({ ...request, tried: new Set(['b']) }), undefined)
  assert.equal(s.pick({ ...request, tried: new Set(['x']) })?.endpoint.id, 'b')
  s.report(targetOf(s, 'b'), REFUSED)
  // Every endpoint unreachable: a first try still gets one (the last resort), a retry that must not repeat gets none.
  assert.notEqual(s.pick(), undefined)
  assert.equal(s.pick({ ...request, tried: new Set(['x']) }), undefined)
  assert.equal(s.degraded(), true)
})
