// Round robin policy: plain rotation when weights are equal, smooth weighted round robin
// (as nginx does) when they differ. The default policy; no allocation per pick.
// Smooth WRR costs O(n) a pick, so a large weighted set (more than SMOOTH_MAX endpoints)
// instead follows a schedule precomputed on update by stride scheduling: the same share
// per endpoint over each cycle of `total weight` picks, interleaved, at O(1) a pick.
import { type Balancer, type BalancedTarget, wasTried } from './types.js'
import type { PickRequest } from '../types.js'

/** Largest weighted set picked by smooth WRR itself (O(n) a pick). */
export const SMOOTH_MAX = 64
/** Longest precomputed schedule (its length is the total weight). */
const SCHEDULE_MAX = 1 << 20

/**
 * One cycle of stride scheduling: each pick takes the endpoint with the lowest pass and
 * advances it by total/weight, so over the cycle endpoint i is picked exactly weight_i times,
 * spread out. O(total × log n) with a binary heap.
 */
export function strideSchedule (weights: readonly number[]): Uint32Array {
  const total = weights.reduce((a, w) => a + w, 0)
  const schedule = new Uint32Array(total)
  const n = weights.length
  const pass = weights.map((w) => total / w / 2)
  const heap = Array.from({ length: n }, (_, i) => i)
  const less = (a: number, b: number): boolean => pass[a]! < pass[b]! || (pass[a] === pass[b] && a < b)
  const down = (at: number): void => {
    for (;;) {
      const l = 2 * at + 1
      const r = l + 1
      let m = at
      if (l < n && less(heap[l]!, heap[m]!)) m = l
      if (r < n && less(heap[r]!, heap[m]!)) m = r
      if (m === at) return
      const tmp = heap[at]!
      heap[at] = heap[m]!
      heap[m] = tmp
      at = m
    }
  }
  for (let i = (n >> 1) - 1; i >= 0; i--) down(i)
  for (let k = 0; k < total; k++) {
    const i = heap[0]!
    schedule[k] = i
    pass[i]! += total / weights[i]!
    down(0)
  }
  return schedule
}

export class RoundRobin<T extends BalancedTarget> implements Balancer<T> {
  private targets: readonly T[] = []
  private weighted = false
  private totalWeight = 0
  private next = 0
  /** Large weighted sets: the precomputed cycle (indexes into `targets`). */
  private schedule: Uint32Array | undefined

  update (targets: readonly T[]): void {
    this.targets = targets
    let total = 0
    for (const t of targets) total += t.endpoint.weight
    this.totalWeight = total
    this.weighted = targets.some((t) => t.endpoint.weight !== targets[0]!.endpoint.weight)
    this.schedule = this.weighted && targets.length > SMOOTH_MAX && total <= SCHEDULE_MAX
      ? strideSchedule(targets.map((t) => t.endpoint.weight))
      : undefined
    if (this.schedule !== undefined) this.next = this.next % total
  }

  pick (request: PickRequest | undefined): T | undefined {
    const n = this.targets.length
    if (n === 0) return undefined
    const first = this.one()
    if (!wasTried(request, first)) return first
    // A retry: go on round the rotation to one not tried yet (at most n steps).
    for (let k = 1; k < n; k++) {
      const t = this.one()
      if (!wasTried(request, t)) return t
    }
    return first
  }

  private one (): T {
    const targets = this.targets
    if (!this.weighted) {
      if (this.next >= targets.length) this.next = 0
      return targets[this.next++]!
    }
    const schedule = this.schedule
    if (schedule !== undefined) {
      if (this.next >= schedule.length) this.next = 0
      return targets[schedule[this.next++]!]!
    }
    let best = targets[0]!
    for (const t of targets) {
      t.stats.current += t.endpoint.weight
      if (t.stats.current > best.stats.current) best = t
    }
    best.stats.current -= this.totalWeight
    return best
  }
}
