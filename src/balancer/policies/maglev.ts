// Maglev policy (consistent hashing, Google's Maglev paper): a lookup table of `tableSize`
// (a prime) slots filled from each endpoint's own permutation, weighted; a request goes to
// the owner of slot hash(key) mod size: O(1), no allocation. Removing one of N endpoints
// moves about 1/N of the keys, and the spread is even to within a slot per endpoint.
// Filling the table costs about size × ln(size) probes whatever changed (~10 ms at the
// default 65,537 slots and 1,000 endpoints): `rebuild` does it in steps the service layer
// spreads over event-loop turns, serving the previous table meanwhile.
import { type Balancer, type BalancedTarget, type PolicyContext, REBUILD_STEP_WORK, ownerAt, randomUntried } from './types.js'
import { hash32, type HashKey } from './hash.js'
import type { PickRequest } from '../types.js'

export class Maglev<T extends BalancedTarget> implements Balancer<T> {
  private targets: readonly T[] = []
  private table = new Int32Array(0)

  constructor (private readonly ctx: PolicyContext, private readonly key: HashKey, private readonly size: number) {}

  update (targets: readonly T[]): void {
    const steps = this.rebuild(targets)
    while (steps.next().done !== true);
  }

  /** The table of `targets`, built in steps of about REBUILD_STEP_WORK probes; applied by the last. */
  * rebuild (targets: readonly T[]): Generator<void, void, void> {
    const m = this.size
    const table = new Int32Array(m).fill(-1)
    if (targets.length > 0) {
      // Fill in label order so the table does not depend on discovery's order.
      const order = targets.map((_, i) => i).sort((a, b) => (targets[a]!.label < targets[b]!.label ? -1 : 1))
      // Each endpoint's permutation is offset, offset + skip, offset + 2·skip, ... (mod m):
      // `slot` holds where it is, stepped by one addition (no multiply or modulo per probe).
      const slot = Int32Array.from(order, (i) => hash32(targets[i]!.label, 0x5bd1e995) % m)
      const skip = Int32Array.from(order, (i) => (hash32(targets[i]!.label, 0x1b873593) % (m - 1)) + 1)
      let maxWeight = 0
      for (const t of targets) maxWeight = Math.max(maxWeight, t.endpoint.weight)
      const share = order.map((i) => targets[i]!.endpoint.weight / maxWeight)
      const credit = new Float64Array(order.length)
      let filled = 0
      let work = 0
      while (filled < m) {
        for (let b = 0; b < order.length && filled < m; b++) {
          if (work >= REBUILD_STEP_WORK) { work = 0; yield }
          // Weighted: an endpoint takes a slot each round it has a whole credit.
          credit[b]! += share[b]!
          if (credit[b]! < 1) continue
          credit[b]! -= 1
          let c = slot[b]!
          const step = skip[b]!
          while (table[c] !== -1) {
            c += step
            if (c >= m) c -= m
            work++
          }
          work++
          table[c] = order[b]!
          c += step
          slot[b] = c >= m ? c - m : c
          filled++
        }
      }
    }
    this.targets = targets
    this.table = table
  }

  pick (request: PickRequest | undefined): T | undefined {
    const targets = this.targets
    if (targets.length === 0) return undefined
    const k = this.key(request)
    if (k === undefined) return randomUntried(targets, request, this.ctx.random)
    return ownerAt(targets, this.table, hash32(k) % this.size, request)
  }
}
