// The balancing policies by name: builds the policy a service's settings ask for.
import type { Balancer, BalancedTarget, BalancingSettings, PolicyContext } from './types.js'
import { RoundRobin } from './round-robin.js'
import { RandomPolicy } from './random.js'
import { LeastRequest, PeakEwma } from './p2c.js'
import { RingHash } from './ring-hash.js'
import { Maglev } from './maglev.js'
import { hashKeyOf } from './hash.js'

export function createBalancer<T extends BalancedTarget> (settings: BalancingSettings, ctx: PolicyContext): Balancer<T> {
  const key = hashKeyOf(settings.hashOn ?? { clientAddress: true })
  switch (settings.policy) {
    case 'round_robin': return new RoundRobin<T>()
    case 'random': return new RandomPolicy<T>(ctx)
    case 'least_request': return new LeastRequest<T>(ctx)
    case 'ewma': return new PeakEwma<T>(ctx, settings)
    case 'ring_hash': return new RingHash<T>(ctx, key, settings.virtualNodes)
    case 'maglev': return new Maglev<T>(ctx, key, settings.tableSize)
  }
}

export * from './types.js'
