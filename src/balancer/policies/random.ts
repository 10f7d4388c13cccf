// Random policy: each attempt goes to an endpoint drawn in proportion to its weight.
import { type Balancer, type BalancedTarget, type PolicyContext, untried, wasTried } from './types.js'
import { WeightedSampler } from './sampler.js'
import type { PickRequest } from '../types.js'

export class RandomPolicy<T extends BalancedTarget> implements Balancer<T> {
  private targets: readonly T[] = []
  private readonly sampler = new WeightedSampler()

  constructor (private readonly ctx: PolicyContext) {}

  update (targets: readonly T[]): void {
    this.targets = targets
    this.sampler.build(targets.map((t) => t.endpoint.weight))
  }

  pick (request: PickRequest | undefined): T | undefined {
    if (this.targets.length === 0) return undefined
    const t = this.targets[this.sampler.draw(this.ctx.random())]!
    return wasTried(request, t) ? untried(this.targets, request, this.ctx.random, t) : t
  }
}
