// Ring hash policy (consistent hashing, ketama style): each endpoint owns `virtualNodes`
// points per unit of weight on a 32-bit ring; a request goes to the owner of the first point
// at or after its key's hash. Removing one of N endpoints moves only the keys it owned
// (about 1/N). Lookup is a binary search over a typed array: O(log points), no allocation.
// An endpoint set change rebuilds the ring incrementally when it can (the departed endpoints'
// points filtered out, the newcomers' merged in: linear, no sort of the whole ring), so a
// discovery change at 1,000 endpoints does not stall the event loop for a full sort. Even
// linear, a merge walks every point (128,000 at 1,000 endpoints: a few ms), so `rebuild`
// does it in steps the service layer spreads over event-loop turns; the first build and a
// change of the smallest weight (a full build, one native sort) are not split.
import { type Balancer, type BalancedTarget, type PolicyContext, REBUILD_STEP_WORK, ownerAt, randomUntried } from './types.js'
import { hash32, type HashKey } from './hash.js'
import type { PickRequest } from '../types.js'

/** Keeps a ring of 1,000 heavy endpoints within memory: points beyond this are scaled down. */
const MAX_POINTS = 1 << 21
/** Owner ranks packed under each point's hash (at most 2^20 endpoints). */
const RANK_SPAN = 1 << 20

/** What the last build was made of, for the next update to start from. */
interface RingBuild<T> {
  readonly minWeight: number
  readonly scale: number
  readonly targets: readonly T[]
  /** Points of each endpoint, by its index in `targets`. */
  readonly sizes: Int32Array
  /** Index in `targets` by label (labels are unique in a build that can be merged from). */
  readonly indexOf: ReadonlyMap<string, number>
}

export class RingHash<T extends BalancedTarget> implements Balancer<T> {
  private targets: readonly T[] = []
  private points = new Uint32Array(0)
  private owners = new Int32Array(0)
  private pointCache = new Map<string, Uint32Array>()
  private built: RingBuild<T> | undefined

  constructor (private readonly ctx: PolicyContext, private readonly key: HashKey, private readonly virtualNodes: number) {}

  update (targets: readonly T[]): void {
    const steps = this.rebuild(targets)
    while (steps.next().done !== true);
  }

  /** The ring of `targets` in steps of about REBUILD_STEP_WORK points; applied by the last. */
  * rebuild (targets: readonly T[]): Generator<void, void, void> {
    let minWeight = Infinity
    for (const t of targets) minWeight = Math.min(minWeight, t.endpoint.weight)
    if (this.built === undefined || !(yield * this.mergeUpdate(targets, minWeight))) this.fullUpdate(targets)
    this.targets = targets
  }

  /**
   * The ring of `targets` from the last one: the points of departed (or re-weighted)
   * endpoints dropped, the newcomers' sorted points merged in, owners re-indexed. Gives the
   * same ring as a full build (same order, ties by label). False, for a full build instead,
   * when the smallest weight or the point scaling changed (every endpoint's point count
   * moves, so nothing would be kept) or two endpoints share a label. Yields between steps;
   * the ring changes only after the last.
   */
  private * mergeUpdate (targets: readonly T[], minWeight: number): Generator<void, boolean, void> {
    const built = this.built!
    if (minWeight !== built.minWeight) return false
    const sizes = new Int32Array(targets.length)
    const indexOf = new Map<string, number>()
    let total = 0
    for (let i = 0; i < targets.length; i++) {
      sizes[i] = Math.max(1, Math.round(this.virtualNodes * targets[i]!.endpoint.weight / minWeight))
      total += sizes[i]!
      indexOf.set(targets[i]!.label, i)
    }
    if (indexOf.size !== targets.length) return false
    const scale = total > MAX_POINTS ? MAX_POINTS / total : 1
    if (scale !== built.scale) return false
    if (scale !== 1) for (let i = 0; i < sizes.length; i++) sizes[i] = Math.max(1, Math.floor(sizes[i]! * scale))

    // Each old endpoint's new index, or -1: gone, or its point count changed (re-weighted).
    const moved = new Int32Array(built.targets.length).fill(-1)
    const fresh: Array<{ hash: number, label: string, owner: number }> = []
    const cache = new Map<string, Uint32Array>()
    let work = 0
    for (let i = 0; i < targets.length; i++) {
      if (work >= REBUILD_STEP_WORK) { work = 0; yield }
      const label = targets[i]!.label
      const hashes = this.pointsOf(label, sizes[i]!)
      cache.set(`${label}|${sizes[i]!}`, hashes)
      work += 8
      const old = built.indexOf.get(label)
      if (old !== undefined && built.sizes[old] === sizes[i]) { moved[old] = i; continue }
      work += hashes.length * 4
      for (let v = 0; v < hashes.length; v++) fresh.push({ hash: hashes[v]!, label, owner: i })
    }
    fresh.sort((a, b) => a.hash - b.hash || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0))

    const oldPoints = this.points
    const oldOwners = this.owners
    let kept = 0
    for (let k = 0; k < oldOwners.length; k++) {
      if (moved[oldOwners[k]!] !== -1) kept++
      if (++work >= REBUILD_STEP_WORK) { work = 0; yield }
    }
    const n = kept + fresh.length
    const points = new Uint32Array(n)
    const owners = new Int32Array(n)
    let k = 0
    let j = 0
    for (let o = 0; o <= oldOwners.length; o++) {
      if (++work >= REBUILD_STEP_WORK) { work = 0; yield }
      const owner = o < oldOwners.length ? moved[oldOwners[o]!]! : -2
      if (owner === -1) continue
      // Newcomers' points that come before this kept one (or all that are left, at the end).
      while (j < fresh.length && (owner === -2 || fresh[j]!.hash < oldPoints[o]! || (fresh[j]!.hash === oldPoints[o]! && fresh[j]!.label < targets[owner]!.label))) {
        points[k] = fresh[j]!.hash
        owners[k++] = fresh[j++]!.owner
      }
      if (owner === -2) break
      points[k] = oldPoints[o]!
      owners[k++] = owner
    }
    // Applied at once, after the last step: an abandoned rebuild leaves the ring as it was.
    this.pointCache = cache
    this.points = points
    this.owners = owners
    this.built = { minWeight, scale, targets, sizes, indexOf }
    return true
  }

  private fullUpdate (targets: readonly T[]): void {
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
    const indexOf = new Map<string, number>()
    targets.forEach((t, i) => { indexOf.set(t.label, i) })
    // Two endpoints with one label share points: such a ring is not a base for a merge.
    this.built = indexOf.size === targets.length ? { minWeight, scale, targets, sizes: Int32Array.from(sizes), indexOf } : undefined
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
