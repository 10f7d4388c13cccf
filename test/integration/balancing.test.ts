// Balancing policies end to end: a real gateway over three real upstreams, one of them much
// slower (400 ms vs 2 ms), under a fixed number of concurrent clients. Load-aware policies
// (least_request, ewma) must send the slow one clearly less than round robin's third; ring_hash
// keeps a key on one upstream. The tests assert shares of requests, not latencies: latency is
// the benchmark's business (npm run bench:policies), and on a loaded machine every request here
// (client, gateway and upstreams share one event loop) waits tens of ms for the CPU. The slow
// upstream's delay is chosen to dominate that wait, so "slow" stays slow under load.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { meshConfig, startUpstream, type Upstream } from '../helpers/upstreams.js'

const FAST_MS = 2
const SLOW_MS = 400
/**
 * Few clients: on a loaded machine each request waits about CONCURRENCY / (requests per second
 * the starved test process manages) for the CPU, on every upstream alike. Kept small, that wait
 * stays well below SLOW_MS even with a CPU hog beside the suite.
 */
const CONCURRENCY = 6
const REQUESTS = 240

/** Three upstreams answering with their own name; `slow` takes 400 ms (or `slowMs`), the others 2 ms. */
async function upstreams (t: TestContext, slowMs = SLOW_MS): Promise<Array<Upstream & { name: string }>> {
  return await Promise.all(['fast-1', 'fast-2', 'slow'].map(async (name) => {
    const delay = name === 'slow' ? slowMs : FAST_MS
    const u = await startUpstream(t, (_req, res) => { setTimeout(() => { res.end(name) }, delay) })
    return { ...u, name }
  }))
}

/** Share of requests each upstream answered. */
type Shares = Record<string, number>

/** `requests` requests through the gateway from CONCURRENCY clients at once, each answer checked. */
async function load (g: TestGateway, requests = REQUESTS): Promise<Shares> {
  const counts: Record<string, number> = { 'fast-1': 0, 'fast-2': 0, slow: 0 }
  let next = 0
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < requests) {
      next++
      const res = await g.request('/orders')
      assert.equal(res.status, 200)
      counts[res.text] = (counts[res.text] ?? 0) + 1
    }
  }))
  const share: Shares = {}
  for (const [k, v] of Object.entries(counts)) share[k] = v / requests
  return share
}

async function gatewayWith (t: TestContext, ups: Upstream[], loadBalancer: Record<string, unknown>): Promise<TestGateway> {
  return await startGateway(t, meshConfig({ orders: ups }, [{ name: 'orders', destination: { service: 'orders' } }], {
    services: { orders: { loadBalancer } }
  }))
}

test('least_request and ewma send a 200x slower upstream clearly less than round_robin\'s third, and each fast one more', async (t) => {
  const ups = await upstreams(t)
  const runs: Record<string, Shares> = {}
  for (const policy of ['round_robin', 'least_request', 'ewma']) {
    const g = await gatewayWith(t, ups, { policy })
    // Round robin's shares are exact whatever the count; fewer requests keep its run short.
    runs[policy] = await load(g, policy === 'round_robin' ? 60 : REQUESTS)
  }
  t.diagnostic(JSON.stringify(runs))
  // Round robin ignores speed: a third each, exactly.
  assert.deepEqual(runs.round_robin, { 'fast-1': 1 / 3, 'fast-2': 1 / 3, slow: 1 / 3 })
  // The slow upstream holds each request 200x longer, so least_request sees more in flight on
  // it, and ewma a higher latency, than on the other candidate of nearly every pick: a few %
  // of the requests (7 % and 3 % on a loaded 2-core machine). Worst case, when the CPU wait W
  // of every request dwarfs the fast upstreams' 2 ms, in-flight counts even out and the slow
  // share tends to W / (2 SLOW_MS + 3 W): under 0.2 while W < SLOW_MS. Round robin's third fails.
  for (const policy of ['least_request', 'ewma']) {
    const r = runs[policy]!
    assert.ok(r.slow! < 0.2, `${policy} sent the slow upstream ${JSON.stringify(r)}`)
    assert.ok(r['fast-1']! > 2 * r.slow! && r['fast-2']! > 2 * r.slow!, `${policy}: each fast upstream gets more than twice the slow one's share: ${JSON.stringify(r)}`)
  }
})

test('ring_hash by header keeps each key on one upstream end to end', async (t) => {
  const ups = await upstreams(t, FAST_MS)
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
