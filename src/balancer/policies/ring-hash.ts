// Ring hash policy (consistent hashing, ketama style): each endpoint owns `virtualNodes`
// points per unit of weight on a 32-bit ring; a request goes to the owner of the first point
// at or after its key's hash. Removing one of N endpoints moves only the keys it owned
// (about 1/N). Lookup is a binary search over a typed array: O(log points), no allocation.
import { type Balancer, type BalancedTarget, type PolicyContext, ownerAt, randomUntried } from './types.js'
import { hash32, type HashKey } from './hash.js'
import type { PickRequest } from '../types.js'

/** Keeps a ring of 1,000 heavy endpoints within memory: points beyond this are scaled down. */
const MAX_POINTS = 1 << 21
/** Owner ranks packed under each point's hash (at most 2^20 endpoints). */
const RANK_SPAN = 1 << 20

export class RingHash<T extends BalancedTarget> implements Balancer<T> {
  private targets: readonly T[] = []
  private points = new Uint32Array(0)
  private owners = new Int32Array(0)
  private pointCache = new Map<string, Uint32Array>()

  constructor (private readonly ctx: PolicyContext, private readonly key: HashKey, private readonly virtualNodes: number) {}

  update (targets: readonly T[]): void {
    this.targets = targets
    // Points per endpoint depend on its own weight only (relative to the smallest), so other
    // endpoints joining or leaving never move this one's points.
    let minWeight = Infinity
    for (const t of targets) minWeight = Math.min(minWeight, t.endpoint.weight)
    const counts = targets.map((t) => Math.max(1, Math.round(this.virtualNodes * t.endpoint.weight / minWeight)))
    const total = counts.reduce((a, b) => a + b, 0)
    const scale = total > MAX_POINTS ? MAX_POINTS / total : 1
    // Each point packed as hash × 2^20 + the owner's rank by label (exact in a double), so one
    // native numeric sort orders the ring, ties broken by label: independent of discovery's order.
    const byLabel = targets.map((_, i) => i).sort((a, b) => (targets[a]!.label < targets[b]!.label ? -1 : targets[a]!.label > targets[b]!.label ? 1 : a - b))
    const rank = new Int32Array(targets.length)
    byLabel.forEach((i, r) => { rank[i] = r })
    const sizes = counts.map((c) => Math.max(1, Math.floor(c * scale)))
    const packed = new Float64Array(sizes.reduce((a, b) => a + b, 0))
    const cache = new Map<string, Uint32Array>()
    let at = 0
    targets.forEach((t, i) => {
      const hashes = this.pointsOf(t.label, sizes[i]!)
      cache.set(`${t.label}|${hashes.length}`, hashes)
      const r = rank[i]!
      for (let v = 0; v < hashes.length; v++) packed[at++] = hashes[v]! * RANK_SPAN + r
    })
    this.pointCache = cache
    packed.sort()
    this.points = new Uint32Array(packed.length)
    this.owners = new Int32Array(packed.length)
    for (let k = 0; k < packed.length; k++) {
      const v = packed[k]!
      const r = v % RANK_SPAN
      this.points[k] = (v - r) / RANK_SPAN
      this.owners[k] = byLabel[r]!
    }
  }

  /** An endpoint's point hashes, kept from the last update: endpoint churn re-hashes only newcomers. */
  private pointsOf (label: string, count: number): Uint32Array {
    const known = this.pointCache.get(`${label}|${count}`)
    if (known !== undefined) return known
    const hashes = new Uint32Array(count)
    for (let v = 0; v < count; v++) hashes[v] = hash32(`${label}-${v}`)
    return hashes
  }

  /** Index of the first point at or after `h` (wrapping to 0). */
  private slot (h: number): number {
    const points = this.points
    let lo = 0
    let hi = points.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (points[mid]! < h) lo = mid + 1
      else hi = mid
    }
    return lo === points.length ? 0 : lo
  }

  pick (request: PickRequest | undefined): T | undefined {
    const targets = this.targets
    if (targets.length === 0) return undefined
    const k = this.key(request)
    // No key: any endpoint will do.
    if (k === undefined) return randomUntried(targets, request, this.ctx.random)
    return ownerAt(targets, this.owners, this.slot(hash32(k)), request)
  }
}
