// What traffic sees of each endpoint of a service: out of rotation by its health check
// (`unhealthy`), out by outlier detection (`ejected`, unreachable included), or `healthy`.
// One rule for the admin API (`/services`) and the metrics (`fastmesh_endpoints`).
import type { Endpoint, ServiceSnapshot } from '../discovery/types.js'
import type { OutlierView } from './outlier.js'
import type { ServiceEndpoints } from './service-endpoints.js'

export type EndpointState = 'healthy' | 'unhealthy' | 'ejected'

/** The outlier view of `endpoint` in the first of `layers` (the service's endpoint sets) that ejected it. */
export function ejectionOf (endpoint: Endpoint, layers: readonly ServiceEndpoints[], now: number): OutlierView | undefined {
  for (const l of layers) {
    const v = l.outlier.view(endpoint.id, now)
    if (v.state === 'ejected') return v
  }
  return undefined
}

export function endpointState (endpoint: Endpoint, ejection: OutlierView | undefined): EndpointState {
  if (endpoint.health !== 'passing' && endpoint.health !== 'warning') return 'unhealthy'
  return ejection !== undefined ? 'ejected' : 'healthy'
}

/** Endpoints of a service by state. */
export interface EndpointStateCounts {
  readonly service: string
  readonly healthy: number
  readonly unhealthy: number
  readonly ejected: number
}

export function countEndpointStates (s: ServiceSnapshot, sets: readonly ServiceEndpoints[], now: number): EndpointStateCounts {
  const layers = sets.filter((set) => set.service === s.service)
  const counts = { service: s.service, healthy: 0, unhealthy: 0, ejected: 0 }
  for (const e of s.endpoints) counts[endpointState(e, ejectionOf(e, layers, now))]++
  return counts
}
