// What a serving process's metrics read at scrape time (endpoint states, retry budgets,
// authorization decisions, spans): the same in a gateway alone and in each worker.
import type { GatewayMetricsOptions } from '../telemetry/metrics.js'
import type { GatewayTracing } from '../telemetry/tracing.js'
import type { ServiceTable } from '../balancer/service-table.js'
import { countEndpointStates } from '../balancer/endpoint-state.js'
import type { StateRegistry } from '../state/registry.js'
import type { Discovery } from '../discovery/types.js'
import type { MeshContext } from './app.js'
import { retryBudgetKind } from './retry.js'

export function servingMetricSources (parts: {
  readonly services: ServiceTable
  readonly discovery: Pick<Discovery, 'services'>
  readonly state: StateRegistry
  readonly mesh: () => MeshContext | undefined
  readonly tracing: () => GatewayTracing
}): Pick<GatewayMetricsOptions, 'events' | 'state' | 'endpointStates' | 'retryBudgets' | 'authorization' | 'tracing'> {
  const { services, discovery, state } = parts
  return {
    events: services.events,
    state,
    endpointStates: () => {
      const now = Date.now()
      const sets = services.all()
      return discovery.services().map((s) => countEndpointStates(s, sets, now))
    },
    retryBudgets: () => state.entries(retryBudgetKind).map(([route, budget]) => ({ route, exhausted: budget.exhausted })),
    authorization: () => parts.mesh()?.authorizer.countRows() ?? [],
    tracing: () => parts.tracing().totals
  }
}
