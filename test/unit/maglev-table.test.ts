// The Maglev lookup table as the paper defines it: endpoint b's preference list is
// (offset_b + n·skip_b) mod M; rounds give each endpoint (by weight credit) its next free
// preferred slot. The policy steps that list by additions; here a direct transcription of
// the formula builds the same table for random weighted sets and table sizes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { Pool } from 'undici'
import { Maglev } from '../../src/balancer/policies/maglev.js'
import { TargetStats, type BalancedTarget } from '../../src/balancer/policies/index.js'
import { hash32 } from '../../src/balancer/policies/hash.js'
import { seededRandom } from '../../src/balancer/random.js'
import type { Endpoint } from '../../src/discovery/types.js'

function target (n: number, weight: number): BalancedTarget {
  const endpoint: Endpoint = { id: `e${n}`, service: 'orders', address: `10.1.${n >> 8}.${n & 255}`, port: 9000, weight, tags: [], meta: {}, health: 'passing', origin: 'config' }
  return { endpoint, pool: undefined as unknown as Pool, label: `${endpoint.address}:9000`, stats: new TargetStats() }
}

/** The table by the formula: label order, weighted credit rounds, (offset + n·skip) mod M. */
function referenceTable (targets: readonly BalancedTarget[], m: number): number[] {
  const table = new Array<number>(m).fill(-1)
  const order = targets.map((_, i) => i).sort((a, b) => (targets[a]!.label < targets[b]!.label ? -1 : 1))
  const offset = order.map((i) => hash32(targets[i]!.label, 0x5bd1e995) % m)
  const skip = order.map((i) => (hash32(targets[i]!.label, 0x1b873593) % (m - 1)) + 1)
  const next = order.map(() => 0)
  const maxWeight = Math.max(...targets.map((t) => t.endpoint.weight))
  const credit = order.map(() => 0)
  let filled = 0
  while (filled < m) {
    for (let b = 0; b < order.length && filled < m; b++) {
      credit[b]! += targets[order[b]!]!.endpoint.weight / maxWeight
      if (credit[b]! < 1) continue
      credit[b]! -= 1
      let c = (offset[b]! + next[b]! * skip[b]!) % m
      while (table[c] !== -1) c = (offset[b]! + ++next[b]! * skip[b]!) % m
      table[c] = order[b]!
      next[b]!++
      filled++
    }
  }
  return table
}

test('the Maglev table is the one the paper\'s formula gives, for random weighted sets and sizes', () => {
  const context = { random: seededRandom(1), now: () => 0 }
  const rnd = seededRandom(11)
  for (const m of [7, 101, 65537, 131071]) {
    for (let round = 0; round < 6; round++) {
      const count = 1 + Math.floor(rnd() * Math.min(m, 300))
      const targets = Array.from({ length: count }, (_, n) => target(n, rnd() < 0.7 ? 1 : 1 + Math.floor(rnd() * 5)))
      const maglev = new Maglev<BalancedTarget>(context, () => 'k', m)
      maglev.update(targets)
      const table = [...(maglev as unknown as { table: Int32Array }).table]
      assert.deepEqual(table, referenceTable(targets, m), `M=${m}, ${count} endpoints`)
    }
  }
})
