// Weighted splits, sticky splits and mirroring end to end: a real gateway, real upstreams
// on loopback, the route config a user writes (routes[].destination.backends / stickyOn,
// routes[].mirror). Statistical checks are bounded at 5σ: a correct split fails them with
// a probability below one in a million, a wrong one (say 80/20) fails them surely.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import type { IncomingHttpHeaders } from 'node:http'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { startEcho, startUpstream, startHeldUpstream, meshConfig } from '../helpers/upstreams.js'

/** Counts of `x-served-by` over `n` requests from `concurrency` clients; every answer must be a 200. */
async function spread (g: TestGateway, n: number, concurrency = 16): Promise<Record<string, number>> {
  const counts: Record<string, number> = {}
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) {
      next++
      const res = await g.request('/split')
      assert.equal(res.status, 200, res.text)
      const by = String(res.headers['x-served-by'])
      counts[by] = (counts[by] ?? 0) + 1
    }
  }))
  return counts
}

test('a 90/10 weighted split holds within 5σ over 2000 requests, and a 0-weight backend gets none', async (t) => {
  const stable = await startEcho(t, 'stable')
  const canary = await startEcho(t, 'canary')
  const off = await startEcho(t, 'off')
  const g = await startGateway(t, meshConfig({ stable: [stable], canary: [canary], off: [off] }, [{
    name: 'split',
    destination: { backends: [{ service: 'stable', weight: 90 }, { service: 'canary', weight: 10 }, { service: 'off', weight: 0 }] }
  }]))
  const N = 2000
  const counts = await spread(g, N)
  const mean = N * 0.1
  const sigma = Math.sqrt(N * 0.1 * 0.9)
  const got = counts.canary ?? 0
  assert.ok(Math.abs(got - mean) <= 5 * sigma, `canary got ${got} of ${N}, expected ${mean} ± ${(5 * sigma).toFixed(0)}: ${JSON.stringify(counts)}`)
  assert.equal((counts.stable ?? 0) + got, N)
  assert.equal(counts.off, undefined)
  assert.equal(off.seen.length, 0, 'the 0-weight backend never saw a request')
})

test('a split sticky on a header keeps each key on one backend across repeats, and the keys use both backends', async (t) => {
  const blue = await startEcho(t, 'blue')
  const green = await startEcho(t, 'green')
  const g = await startGateway(t, meshConfig({ blue: [blue], green: [green] }, [{
    name: 'sticky',
    destination: { backends: [{ service: 'blue', weight: 50 }, { service: 'green', weight: 50 }], stickyOn: { header: 'x-user' } }
  }]))
  const owners = new Map<string, Set<string>>()
  for (let round = 0; round < 4; round++) {
    for (let u = 0; u < 40; u++) {
      const res = await g.request('/', { headers: { 'x-user': `user-${u}` } })
      assert.equal(res.status, 200)
      const seen = owners.get(`user-${u}`) ?? new Set<string>()
      seen.add(String(res.headers['x-served-by']))
      owners.set(`user-${u}`, seen)
    }
  }
  for (const [key, seen] of owners) assert.equal(seen.size, 1, `${key} went to ${[...seen].join(', ')}`)
  // 40 keys over a 50/50 split: all on one side has probability 2 × 2^-40.
  assert.deepEqual(new Set([...owners.values()].map((s) => [...s][0])), new Set(['blue', 'green']))
})

/** What a mirror upstream saw, body included. */
interface Seen { url: string, headers: IncomingHttpHeaders, body: string }

/** An upstream answering `status` to everything, recording each request whole. */
async function recording (t: TestContext, status: number): Promise<{ port: number, seen: Seen[] }> {
  const seen: Seen[] = []
  const up = await startUpstream(t, (req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => {
      seen.push({ url: req.url ?? '', headers: req.headers, body })
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': 2 }).end('ok')
    })
  })
  return { port: up.port, seen }
}

function mirrored (primary: { port: number }, shadow: { port: number }): Record<string, unknown> {
  return meshConfig({ api: [primary], shadow: [shadow] }, [{ name: 'api', destination: { service: 'api' }, mirror: { service: 'shadow' } }])
}

test('mirrored requests reach the mirror service with x-fastmesh-mirror: 1 and the body; the primary request is not marked', async (t) => {
  const primary = await startEcho(t, 'primary')
  const shadow = await recording(t, 200)
  const g = await startGateway(t, mirrored(primary, shadow))
  for (let i = 0; i < 5; i++) {
    const res = await g.request(`/orders/${i}`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: `order ${i}` })
    assert.equal(res.status, 200)
    assert.equal(res.headers['x-served-by'], 'primary')
  }
  await eventually(() => shadow.seen.length === 5, 'five mirrored requests')
  const byUrl = new Map(shadow.seen.map((s) => [s.url, s]))
  for (let i = 0; i < 5; i++) {
    const s = byUrl.get(`/orders/${i}`)
    assert.ok(s !== undefined, `/orders/${i} was mirrored`)
    assert.equal(s.headers['x-fastmesh-mirror'], '1')
    assert.equal(s.body, `order ${i}`)
  }
  for (const p of primary.seen) assert.equal(p.headers['x-fastmesh-mirror'], undefined)
})

test('a mirror answering 500 leaves every primary response a 200', async (t) => {
  const primary = await startEcho(t, 'primary')
  const shadow = await recording(t, 500)
  const g = await startGateway(t, mirrored(primary, shadow))
  for (let i = 0; i < 20; i++) {
    const res = await g.request('/x', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'abc' })
    assert.equal(res.status, 200, res.text)
    assert.equal(res.headers['x-served-by'], 'primary')
  }
  await eventually(() => shadow.seen.length === 20, 'every request mirrored (and answered 500)')
  // Admin counts the mirror's outcomes on the route.
  const stats = await eventually(async () => {
    const route = (await g.admin('GET', '/routes')).json<{ routes: Array<{ mirror?: { stats: { sent: number, failed: number } } }> }>().routes[0]
    return route?.mirror?.stats.failed === 20 ? route.mirror.stats : undefined
  }, 'admin /routes shows 20 failed mirrored requests')
  assert.equal(stats.sent, 20)
})

test('a mirror that never answers leaves every primary response a 200, answered while the mirror still waits', async (t) => {
  const primary = await startEcho(t, 'primary')
  const shadow = await startHeldUpstream(t)
  const g = await startGateway(t, mirrored(primary, shadow))
  for (let i = 0; i < 20; i++) {
    const res = await g.request('/x', i % 2 === 0 ? {} : { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'abc' })
    assert.equal(res.status, 200, res.text)
    assert.equal(res.headers['x-served-by'], 'primary')
  }
  await shadow.waitForArrivals(20)
  // Every primary was answered while all 20 mirrored copies were still unanswered: a primary
  // that waited for its mirror would come back only after the mirror's 5 s timeout, which
  // ends that copy (counted failed).
  const route = (await g.admin('GET', '/routes')).json<{ routes: Array<{ mirror?: { stats: { inFlight: number, failed: number } } }> }>().routes[0]
  assert.deepEqual({ inFlight: route?.mirror?.stats.inFlight, failed: route?.mirror?.stats.failed }, { inFlight: 20, failed: 0 })
  shadow.release()
})
