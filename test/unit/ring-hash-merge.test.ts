// The ring hash policy's incremental rebuild: after any sequence of endpoint set changes
// (joins, departures, re-weights, the smallest weight moving, duplicate labels), the ring is
// point for point the ring a fresh build of the same set gives, so keys map exactly as they
// would. Seeded; the seed and step are in the message.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { Pool } from 'undici'
import { RingHash } from '../../src/balancer/policies/ring-hash.js'
import { TargetStats, type BalancedTarget } from '../../src/balancer/policies/index.js'
import { seededRandom } from '../../src/balancer/random.js'
import type { Endpoint } from '../../src/discovery/types.js'

function target (n: number, weight: number): BalancedTarget {
  const endpoint: Endpoint = { id: `e${n}`, service: 'orders', address: `10.0.${n >> 8}.${n & 255}`, port: 8080, weight, tags: [], meta: {}, health: 'passing', origin: 'config' }
  return { endpoint, pool: undefined as unknown as Pool, label: `${endpoint.address}:8080`, stats: new TargetStats() }
}

/** The ring's points and their owners' labels, in ring order. */
function ringOf (ring: RingHash<BalancedTarget>, targets: readonly BalancedTarget[]): { points: number[], owners: string[] } {
  const inside = ring as unknown as { points: Uint32Array, owners: Int32Array }
  return { points: [...inside.points], owners: [...inside.owners].map((i) => targets[i]!.label) }
}

test('after random endpoint churn, the incrementally rebuilt ring equals a fresh build, point for point', () => {
  const context = { random: seededRandom(7), now: () => 0 }
  for (let seed = 1; seed <= 30; seed++) {
    const rnd = seededRandom(seed)
    const ring = new RingHash<BalancedTarget>(context, () => 'k', 16)
    let current = new Map<number, number>() // endpoint number → weight
    for (let step = 0; step < 40; step++) {
      const next = new Map(current)
      const action = rnd()
      if (action < 0.4 || next.size < 2) {
        for (let a = Math.floor(rnd() * 4) + 1; a > 0; a--) next.set(Math.floor(rnd() * 60), rnd() < 0.8 ? 1 : 2 + Math.floor(rnd() * 3))
      } else if (action < 0.8) {
        for (const n of [...next.keys()]) if (rnd() < 0.2) next.delete(n)
      } else {
        for (const n of [...next.keys()]) if (rnd() < 0.2) next.set(n, 1 + Math.floor(rnd() * 4))
      }
      current = next
      // Discovery's order is arbitrary: shuffle it, and sometimes repeat an endpoint.
      const targets = [...current].map(([n, w]) => target(n, w)).sort(() => rnd() - 0.5)
      if (rnd() < 0.05 && targets.length > 0) targets.push(targets[0]!)
      ring.update(targets)
      const fresh = new RingHash<BalancedTarget>(context, () => 'k', 16)
      fresh.update(targets)
      assert.deepEqual(ringOf(ring, targets), ringOf(fresh, targets), `seed ${seed}, step ${step}: ${targets.length} endpoints`)
    }
  }
})

test('a ring too big for MAX_POINTS is scaled, and still equals a fresh build after churn', () => {
  const context = { random: seededRandom(3), now: () => 0 }
  // 4096 points per endpoint of weight 1: 600 endpoints are above 2^21 points, so every count is scaled.
  const all = Array.from({ length: 600 }, (_, n) => target(n, 1))
  const ring = new RingHash<BalancedTarget>(context, () => 'k', 4096)
  ring.update(all)
  for (const set of [all.slice(1), all.slice(0, 300), all]) {
    ring.update(set)
    const fresh = new RingHash<BalancedTarget>(context, () => 'k', 4096)
    fresh.update(set)
    assert.deepEqual(ringOf(ring, set), ringOf(fresh, set), `${set.length} endpoints`)
  }
})
