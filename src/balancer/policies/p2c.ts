// Power-of-two-choices policies: two endpoints drawn in proportion to weight, the cheaper
// one wins. `least_request` costs an endpoint by its attempts in flight per unit of weight;
// `ewma` by its peak-EWMA latency times (in flight + 1), as Linkerd balances. O(1) per pick.
import { type Balancer, type BalancedTarget, type PolicyContext, untried, wasTried } from './types.js'
import { WeightedSampler } from './sampler.js'
import type { PickRequest } from '../types.js'

abstract class PowerOfTwo<T extends BalancedTarget> implements Balancer<T> {
  protected targets: readonly T[] = []
  private readonly sampler = new WeightedSampler()
  private readonly scoreFn = (t: T): number => this.cost(t)

  constructor (protected readonly ctx: PolicyContext) {}

  update (targets: readonly T[]): void {
    this.targets = targets
    this.sampler.build(targets.map((t) => t.endpoint.weight))
  }

  /** A second candidate, never `i`: weighted redraws, then any other one. */
  private second (i: number, n: number): number {
    if (this.sampler.uniform) {
      const j = Math.floor(this.ctx.random() * (n - 1))
      return j >= i ? j + 1 : j
    }
    for (let k = 0; k < 3; k++) {
      const j = this.sampler.draw(this.ctx.random())
      if (j !== i) return j
    }
    return (i + 1 + Math.floor(this.ctx.random() * (n - 1))) % n
  }

  /** Lower is better. */
  abstract cost (t: T): number

  pick (request: PickRequest | undefined): T | undefined {
    const targets = this.targets
    const n = targets.length
    if (n === 0) return undefined
    const i = this.sampler.draw(this.ctx.random())
    let chosen = targets[i]!
    if (n > 1) {
      const j = this.second(i, n)
      const other = targets[j]!
      // Ties keep the first draw, so with nothing in flight the spread follows the weights.
      if (this.cost(other) < this.cost(chosen)) chosen = other
    }
    return wasTried(request, chosen) ? untried(targets, request, this.ctx.random, chosen, this.scoreFn) : chosen
  }
}

/** least_request: fewest attempts in flight per unit of weight. */
export class LeastRequest<T extends BalancedTarget> extends PowerOfTwo<T> {
  cost (t: T): number {
    return t.stats.inFlight / t.endpoint.weight
  }
}

export interface EwmaSettings {
  readonly decayMs: number
  readonly defaultRttMs: number
}

/**
 * ewma: peak EWMA of latency. An observation above the estimate replaces it at once (peak);
 * one below moves it there by how long ago the estimate was made; with no observations the
 * estimate decays toward zero (time constant `decayMs`), so an endpoint once slow is tried
 * again later. The cost multiplies it by (in flight + 1): queued work counts.
 */
export class PeakEwma<T extends BalancedTarget> extends PowerOfTwo<T> {
  constructor (ctx: PolicyContext, private readonly settings: EwmaSettings) {
    super(ctx)
  }

  /** The estimate at `now`, decayed since it was last set. */
  estimate (t: T, now: number): number {
    const s = t.stats
    if (s.rtt < 0) return this.settings.defaultRttMs
    const elapsed = now - s.stamp
    return elapsed > 0 ? s.rtt * Math.exp(-elapsed / this.settings.decayMs) : s.rtt
  }

  cost (t: T): number {
    return this.estimate(t, this.ctx.now()) * (t.stats.inFlight + 1)
  }

  observe (t: T, latencyMs: number, failed: boolean): void {
    const now = this.ctx.now()
    const s = t.stats
    const current = this.estimate(t, now)
    // A failure that came back fast (connection refused) must not make the endpoint look
    // like the fastest: it counts as at least twice the estimate.
    const rtt = failed ? Math.max(latencyMs, 2 * current, this.settings.defaultRttMs) : latencyMs
    if (s.rtt < 0 || rtt > current) {
      s.rtt = rtt
    } else {
      const elapsed = Math.max(0, now - s.stamp)
      const w = Math.exp(-elapsed / this.settings.decayMs)
      s.rtt = current * w + rtt * (1 - w)
    }
    s.stamp = now
  }
}
