// Per-route request statistics: responses by status class, gateway-made errors by code and
// the running duration, kept in the state registry under the route name so they survive
// reloads that keep the route.
import { stateKind, type StateRegistry } from '../state/registry.js'

export interface RouteStatsSnapshot {
  readonly requests: number
  /** Responses by status class; `other` is a status outside 100-599. */
  readonly byClass: { readonly '1xx': number, readonly '2xx': number, readonly '3xx': number, readonly '4xx': number, readonly '5xx': number, readonly other: number }
  /** Responses the gateway made itself, by FASTMESH_ERR_* (or plugin) code. */
  readonly errors: Readonly<Record<string, number>>
  readonly durationMs: { readonly sum: number, readonly mean: number | null }
  /** Tries beyond the first (retries), and requests that needed at least one. */
  readonly retries: number
  readonly retriedRequests: number
}

export class RouteStats {
  /** Index 0 is `other`, 1-5 are 1xx-5xx. */
  private readonly classes = [0, 0, 0, 0, 0, 0]
  private readonly errors = new Map<string, number>()
  private count = 0
  private durationSum = 0
  private retries = 0
  private retried = 0

  /** Counts one finished request. No allocation except for an error code seen the first time. */
  record (status: number, durationMs: number, errorCode?: string, attempts = 1): void {
    if (attempts > 1) { this.retries += attempts - 1; this.retried++ }
    const c = (status / 100) | 0
    this.classes[c >= 1 && c <= 5 ? c : 0]!++
    this.count++
    this.durationSum += durationMs
    if (errorCode !== undefined) this.errors.set(errorCode, (this.errors.get(errorCode) ?? 0) + 1)
  }

  snapshot (): RouteStatsSnapshot {
    const c = this.classes
    return {
      requests: this.count,
      byClass: { '1xx': c[1]!, '2xx': c[2]!, '3xx': c[3]!, '4xx': c[4]!, '5xx': c[5]!, other: c[0]! },
      errors: Object.fromEntries(this.errors),
      durationMs: { sum: this.durationSum, mean: this.count === 0 ? null : this.durationSum / this.count },
      retries: this.retries,
      retriedRequests: this.retried
    }
  }
}

/** Route statistics in the state registry, keyed by route name. */
export const routeStatsKind = stateKind('routeStats', 'route', () => new RouteStats())

/**
 * Counts one request of `routeName`. On the hot path prefer looking the slot up once when
 * the version is built (`registry.slot(routeStatsKind, name)`) and calling its `record`.
 */
export function recordRouteStats (registry: StateRegistry, routeName: string, status: number, durationMs: number, errorCode?: string): void {
  registry.slot(routeStatsKind, routeName).record(status, durationMs, errorCode)
}
