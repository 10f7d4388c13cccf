// Weighted splits (src/gateway/split.ts): shares by weight under a seeded random source,
// sticky keys that keep one client on one backend, and the config checks of splits and
// mirrors (contradictions reported with their JSON paths).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { seededRandom } from '../../src/balancer/random.js'
import { cookieValue, routeBackends, weightedDestination } from '../../src/gateway/split.js'
import { validateConfigDocument } from '../../src/config/validate.js'

const N = 10_000

function count<L> (choose: () => L, n = N): Map<L, number> {
  const out = new Map<L, number>()
  for (let i = 0; i < n; i++) {
    const l = choose()
    out.set(l, (out.get(l) ?? 0) + 1)
  }
  return out
}

// 10% of 10,000 has a standard deviation of 30: ±150 is 5 of them, so a correct split
// passes with overwhelming probability whatever the seed, and 85/15 or 95/5 fails.
const within90of10 = (n: number | undefined): boolean => n !== undefined && n >= 850 && n <= 1_150

test('a 90/10 split sends 10% of 10,000 requests to the second backend, within 1.5 points', () => {
  const choose = weightedDestination([{ layer: 'stable', weight: 90 }, { layer: 'canary', weight: 10 }], { random: seededRandom(7) })
  const counts = count(() => choose({}))
  assert.ok(within90of10(counts.get('canary')), `canary got ${counts.get('canary')}`)
  assert.equal((counts.get('stable') ?? 0) + (counts.get('canary') ?? 0), N)
})

test('a backend of weight 0 is never chosen', () => {
  const choose = weightedDestination([{ layer: 'a', weight: 1 }, { layer: 'off', weight: 0 }, { layer: 'b', weight: 1 }], { random: seededRandom(3) })
  const counts = count(() => choose({}))
  assert.equal(counts.get('off'), undefined)
  assert.ok((counts.get('a') ?? 0) > 4_500 && (counts.get('b') ?? 0) > 4_500, JSON.stringify([...counts]))
})

test('a split whose weights are all 0 is refused when built', () => {
  assert.throws(() => weightedDestination([{ layer: 'a', weight: 0 }]), /weight above 0/)
})

test('the same sticky header value always goes to the same backend, whatever the random source says', () => {
  const choose = weightedDestination([{ layer: 'stable', weight: 50 }, { layer: 'canary', weight: 50 }], { stickyOn: { header: 'X-User' }, random: seededRandom(1) })
  for (const user of ['alice', 'bob', 'carol', 'dave', '42']) {
    const first = choose({ 'x-user': user })
    for (let i = 0; i < 100; i++) assert.equal(choose({ 'x-user': user }), first, `user ${user} moved`)
  }
})

test('sticky keys spread over the backends by weight (10,000 distinct users on 90/10)', () => {
  const choose = weightedDestination([{ layer: 'stable', weight: 90 }, { layer: 'canary', weight: 10 }], { stickyOn: { header: 'x-user' } })
  let i = 0
  const counts = count(() => choose({ 'x-user': `user-${i++}` }))
  assert.ok(within90of10(counts.get('canary')), `canary got ${counts.get('canary')}`)
})

test('a sticky key keeps its backend when the split is rebuilt with the same weights (a reload)', () => {
  const backends = [{ layer: 0, weight: 70 }, { layer: 1, weight: 20 }, { layer: 2, weight: 10 }]
  const before = weightedDestination(backends, { stickyOn: { cookie: 'uid' }, random: seededRandom(1) })
  const after = weightedDestination(backends.map((b) => ({ ...b })), { stickyOn: { cookie: 'uid' }, random: seededRandom(2) })
  for (let u = 0; u < 1_000; u++) {
    const headers = { cookie: `theme=dark; uid=u${u}; lang=en` }
    assert.equal(after(headers), before(headers))
  }
})

test('a sticky cookie is read from among other cookies, and a request without it is split at random', () => {
  const choose = weightedDestination([{ layer: 'a', weight: 1 }, { layer: 'b', weight: 1 }], { stickyOn: { cookie: 'session' }, random: seededRandom(11) })
  const pinned = choose({ cookie: 'a=1; session=abc' })
  assert.equal(choose({ cookie: 'session=abc;a=2' }), pinned)
  const counts = count(() => choose({ cookie: 'other=1' }), 1_000)
  assert.equal(counts.size, 2, 'requests without the cookie reach both backends')
  assert.equal(cookieValue('a=1; session = xyz ;b=2', 'session'), 'xyz')
  assert.equal(cookieValue('sessionx=1', 'session'), undefined)
})

test('the same seed gives the same sequence of choices (tests and benchmarks are reproducible)', () => {
  const mk = () => weightedDestination([{ layer: 'a', weight: 3 }, { layer: 'b', weight: 1 }], { random: seededRandom(99) })
  const x = mk()
  const y = mk()
  for (let i = 0; i < 100; i++) assert.equal(x({}), y({}))
})

test('routeBackends: destination.service is one backend of weight 1; backends keep their subsets and weights', () => {
  assert.deepEqual(routeBackends({ service: 'orders' }), [{ service: 'orders', subset: undefined, weight: 1 }])
  const subset = { tags: ['v2'], meta: {} }
  assert.deepEqual(routeBackends({ backends: [{ service: 'orders', weight: 9 }, { service: 'orders', subset, weight: 1 }] }), [
    { service: 'orders', subset: undefined, weight: 9 },
    { service: 'orders', subset, weight: 1 }
  ])
})

// --- config ---

function problemsOf (routes: unknown[]): Array<{ path: string, message: string }> {
  const doc = { discovery: { embedded: { services: { orders: { endpoints: [] }, shadow: { endpoints: [] } } } }, routes }
  return validateConfigDocument(doc).problems.map((p) => ({ path: p.path, message: p.message }))
}

test('config: a valid split with a sticky cookie and a mirror is accepted, with mirror defaults filled', () => {
  const doc = {
    discovery: { embedded: { services: { orders: { endpoints: [] }, shadow: { endpoints: [] } } } },
    routes: [{
      name: 'r',
      destination: { backends: [{ service: 'orders', weight: 90 }, { service: 'orders', subset: { tags: ['v2'] }, weight: 10 }], stickyOn: { cookie: 'uid' } },
      mirror: { service: 'shadow', percent: 5 }
    }]
  }
  const r = validateConfigDocument(doc)
  assert.deepEqual(r.problems, [])
  assert.deepEqual(r.config?.routes[0]?.mirror, { service: 'shadow', percent: 5, maxConcurrent: 64, maxBodyBytes: 65536, timeout: '5s' })
})

test('config: a split whose weights are all 0 is an error at destination.backends', () => {
  assert.deepEqual(problemsOf([{ name: 'r', destination: { backends: [{ service: 'orders', weight: 0 }, { service: 'shadow', weight: 0 }] } }]),
    [{ path: '$.routes[0].destination.backends', message: 'every weight is 0: no request could be sent anywhere' }])
})

test('config: a destination with both service and backends, or neither, is an error at destination', () => {
  assert.deepEqual(problemsOf([{ name: 'r', destination: { service: 'orders', backends: [{ service: 'orders', weight: 1 }] } }]),
    [{ path: '$.routes[0].destination', message: 'has both service and backends' }])
  assert.deepEqual(problemsOf([{ name: 'r', destination: {} }]),
    [{ path: '$.routes[0].destination', message: 'has neither service nor backends' }])
})

test('config: an unknown backend or mirror service is reported at its own path', () => {
  const problems = problemsOf([{ name: 'r', destination: { backends: [{ service: 'orders', weight: 1 }, { service: 'ordrs', weight: 1 }] }, mirror: { service: 'shadw' } }])
  assert.deepEqual(problems, [
    { path: '$.routes[0].destination.backends[1].service', message: 'unknown service "ordrs"' },
    { path: '$.routes[0].mirror.service', message: 'unknown service "shadw"' }
  ])
})

test('config: stickyOn needs backends and exactly one key', () => {
  assert.deepEqual(problemsOf([{ name: 'r', destination: { service: 'orders', stickyOn: { header: 'x-user' } } }]),
    [{ path: '$.routes[0].destination.stickyOn', message: 'needs destination.backends' }])
  assert.deepEqual(problemsOf([{ name: 'r', destination: { backends: [{ service: 'orders', weight: 1 }], stickyOn: { header: 'x-user', cookie: 'uid' } } }]),
    [{ path: '$.routes[0].destination.stickyOn', message: 'has header and cookie; give exactly one' }])
})

test('config: the same service and subset twice in one split is an error', () => {
  assert.deepEqual(problemsOf([{ name: 'r', destination: { backends: [{ service: 'orders', weight: 1 }, { service: 'orders', weight: 2 }] } }]),
    [{ path: '$.routes[0].destination.backends[1]', message: 'same service and subset as backends[0]' }])
})

test('config: mirroring to the route\'s only destination is an error; to another subset of it is fine', () => {
  assert.deepEqual(problemsOf([{ name: 'r', destination: { service: 'orders' }, mirror: { service: 'orders' } }]),
    [{ path: '$.routes[0].mirror.service', message: 'mirrors to the route\'s own destination "orders"' }])
  assert.deepEqual(problemsOf([{ name: 'r', destination: { service: 'orders' }, mirror: { service: 'orders', subset: { tags: ['v2'] } } }]), [])
})

test('config: mirror percent outside 0-100 is a schema error at its path', () => {
  const problems = problemsOf([{ name: 'r', destination: { service: 'orders' }, mirror: { service: 'shadow', percent: 150 } }])
  assert.equal(problems.length, 1)
  assert.equal(problems[0]?.path, '$.routes[0].mirror.percent')
})
