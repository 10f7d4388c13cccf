// Round robin policy: plain rotation when weights are equal, smooth weighted round robin
// (as nginx does) when they differ. The default policy; no allocation per pick.
import { type Balancer, type BalancedTarget, wasTried } from './types.js'
import type { PickRequest } from '../types.js'

export class RoundRobin<T extends BalancedTarget> implements Balancer<T> {
  private targets: readonly T[] = []
  private weighted = false
  private totalWeight = 0
  private next = 0

  update (targets: readonly T[]): void {
    this.targets = targets
    let total = 0
    for (const t of targets) total += t.endpoint.weight
    this.totalWeight = total
    this.weighted = targets.some((t) => t.endpoint.weight !== targets[0]!.endpoint.weight)
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
    let best = targets[0]!
    for (const t of targets) {
      t.stats.current += t.endpoint.weight
      if (t.stats.current > best.stats.current) best = t
    }
    best.stats.current -= this.totalWeight
    return best
  }
}
