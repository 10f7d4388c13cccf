// Balancing policies end to end: a real gateway over three real upstreams, one of them 20×
// slower (40 ms vs 2 ms), under a fixed number of concurrent clients. Load-aware policies
// (least_request, ewma) must send the slow one clearly less than round robin's third and
// cut tail latency; ring_hash keeps a key on one upstream. The slow upstream answers every
// request after 40 ms however many it holds, so any policy that still probes it (a few %)
// has a p99 near 40 ms like round robin: the test asserts p90 (a clear margin), and reports
// p99 as a diagnostic.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { meshConfig, startUpstream, type Upstream } from '../helpers/upstreams.js'

const FAST_MS = 2
const SLOW_MS = 40
const CONCURRENCY = 12
const REQUESTS = 600

/** Three upstreams answering with their own name; `slow` takes 40 ms, the others 2 ms. */
async function upstreams (t: TestContext): Promise<Array<Upstream & { name: string }>> {
  return await Promise.all(['fast-1', 'fast-2', 'slow'].map(async (name) => {
    const delay = name === 'slow' ? SLOW_MS : FAST_MS
    const u = await startUpstream(t, (_req, res) => { setTimeout(() => { res.end(name) }, delay) })
    return { ...u, name }
  }))
}

interface Run {
  /** Share of requests each upstream answered. */
  readonly share: Record<string, number>
  readonly p90Ms: number
  readonly p99Ms: number
}

/** REQUESTS requests through the gateway from CONCURRENCY clients at once, each answer checked. */
async function load (g: TestGateway): Promise<Run> {
  const counts: Record<string, number> = {}
  const latencies: number[] = []
  let next = 0
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < REQUESTS) {
      next++
      const start = performance.now()
      const res = await g.request('/orders')
      latencies.push(performance.now() - start)
      assert.equal(res.status, 200)
      counts[res.text] = (counts[res.text] ?? 0) + 1
    }
  }))
  latencies.sort((a, b) => a - b)
  const share: Record<string, number> = {}
  for (const [k, v] of Object.entries(counts)) share[k] = v / REQUESTS
  return { share, p90Ms: latencies[Math.floor(latencies.length * 0.9)]!, p99Ms: latencies[Math.floor(latencies.length * 0.99)]! }
}

async function gatewayWith (t: TestContext, ups: Upstream[], loadBalancer: Record<string, unknown>): Promise<TestGateway> {
  return await startGateway(t, meshConfig({ orders: ups }, [{ name: 'orders', destination: { service: 'orders' } }], {
    services: { orders: { loadBalancer } }
  }))
}

test('least_request and ewma send a 20x slower upstream clearly less than round_robin, and p90 latency halves', async (t) => {
  const ups = await upstreams(t)
  const runs: Record<string, Run> = {}
  for (const policy of ['round_robin', 'least_request', 'ewma']) {
    const g = await gatewayWith(t, ups, { policy })
    runs[policy] = await load(g)
  }
  const rr = runs.round_robin!
  // Round robin ignores speed: a third each.
  assert.ok(Math.abs((rr.share.slow ?? 0) - 1 / 3) < 0.02, `round_robin: ${JSON.stringify(rr)}`)
  for (const policy of ['least_request', 'ewma']) {
    const r = runs[policy]!
    assert.ok((r.share.slow ?? 0) < 0.2, `${policy} sent the slow upstream ${JSON.stringify(r.share)}`)
    assert.ok(r.p90Ms < rr.p90Ms / 2, `${policy} p90 ${r.p90Ms.toFixed(1)} ms, round_robin ${rr.p90Ms.toFixed(1)} ms`)
  }
  t.diagnostic(JSON.stringify(runs))
})

test('ring_hash by header keeps each key on one upstream end to end', async (t) => {
  const ups = await upstreams(t)
  const g = await gatewayWith(t, ups, { policy: 'ring_hash', hashOn: { header: 'x-user' } })
  const owners = new Map<string, Set<string>>()
  for (let round = 0; round < 3; round++) {
    for (let u = 0; u < 30; u++) {
      const res = await g.request('/orders', { headers: { 'x-user': `user-${u}` } })
      assert.equal(res.status, 200)
      const seen = owners.get(`user-${u}`) ?? new Set<string>()
      seen.add(res.text)
      owners.set(`user-${u}`, seen)
    }
  }
  for (const [key, seen] of owners) assert.equal(seen.size, 1, `${key} went to ${[...seen].join(', ')}`)
  // And the keys do spread: more than one upstream is used.
  assert.ok(new Set([...owners.values()].map((s) => [...s][0])).size > 1)
})

test('a config with hashOn on a non-hash policy is refused with its path', async () => {
  const { validateConfigDocument } = await import('../../src/config/validate.js')
  const r = validateConfigDocument({ services: { orders: { loadBalancer: { policy: 'least_request', hashOn: { header: 'x' } } } } })
  assert.deepEqual(r.problems.map((p) => p.path), ['$.services.orders.loadBalancer.hashOn'])
  const m = validateConfigDocument({ services: { orders: { loadBalancer: { policy: 'maglev', hashOn: { clientAddress: true }, maglev: { tableSize: 65536 } } } } })
  assert.deepEqual(m.problems.map((p) => p.path), ['$.services.orders.loadBalancer.maglev.tableSize'])
  const h = validateConfigDocument({ services: { orders: { loadBalancer: { policy: 'ring_hash' } } } })
  assert.deepEqual(h.problems.map((p) => p.path), ['$.services.orders.loadBalancer.hashOn'])
})
