// Service layer: circuit breaking for one destination. Requests and retries are admitted
// against the destination's limits in O(1) and refused at once (503 FASTMESH_ERR_OVERFLOW,
// a header naming the limit) instead of queueing without bound.
import { Value } from '@sinclair/typebox/value'
import { CircuitBreakerSchema, type CircuitBreakerConfig } from '../config/schema.js'
import { fastmeshError, type FastmeshError } from '../errors.js'
import { stateKind } from '../state/registry.js'
import type { AdmissionKind } from './types.js'

/** The response header that names the limit an OVERFLOW answer hit. */
export const OVERFLOW_HEADER = 'x-fastmesh-overflow'

export type OverflowLimit = 'max-requests' | 'max-pending-requests' | 'max-retries'

/** FASTMESH_ERR_OVERFLOW; `headers` go on the response (`writeError(res, err, id, { ...replyHeaders, ...err.headers })`). */
export interface OverflowError extends FastmeshError {
  readonly limit: OverflowLimit
  readonly headers: Readonly<Record<string, string>>
}

export function isOverflowError (err: unknown): err is OverflowError {
  return err instanceof Error && (err as { code?: unknown }).code === 'FASTMESH_ERR_OVERFLOW'
}

export interface CircuitSettings {
  readonly maxConnections: number
  readonly maxPendingRequests: number
  readonly maxRequests: number
  readonly maxRetries: number
  /** Requests one connection carries at once (`connectionPool.pipelining`). */
  readonly pipelining: number
}

/** The schema's defaults (pipelining 1), made once: every service without a policy shares them. */
let defaultCircuitSettings: CircuitSettings | undefined

/** Settings from `services.<name>.circuitBreaker`; the schema's defaults when it is absent. */
export function circuitSettings (config?: CircuitBreakerConfig, pipelining = 1): CircuitSettings {
  if (config === undefined && pipelining === 1) return (defaultCircuitSettings ??= Object.freeze(settingsOf(Value.Default(CircuitBreakerSchema, {}) as CircuitBreakerConfig, 1)))
  return settingsOf(config ?? (Value.Default(CircuitBreakerSchema, {}) as CircuitBreakerConfig), pipelining)
}

function settingsOf (c: CircuitBreakerConfig, pipelining: number): CircuitSettings {
  return { maxConnections: c.maxConnections, maxPendingRequests: c.maxPendingRequests, maxRequests: c.maxRequests, maxRetries: c.maxRetries, pipelining }
}

/**
 * What is in flight to one destination, shared by the limits of every config version so a
 * reload neither forgets requests admitted by the old version nor counts them twice. Kept
 * in the state registry by the service's selector key.
 */
export class CircuitCounters {
  requests = 0
  retries = 0
  readonly overflows: Record<OverflowLimit, number> = { 'max-requests': 0, 'max-pending-requests': 0, 'max-retries': 0 }
}

export const circuitCountersKind = stateKind('circuit', 'service', () => new CircuitCounters())

export interface CircuitSnapshot {
  readonly requests: number
  readonly pending: number
  /** Sockets to the destination open or opening, across its endpoints (at most maxConnections). */
  readonly connections: number
  readonly retries: number
  readonly limits: Omit<CircuitSettings, 'pipelining'>
  readonly overflows: Readonly<Record<OverflowLimit, number>>
}

/**
 * The limits of one destination under one version's settings.
 *
 * A `request` admission lasts for a client request's whole life (every attempt and the
 * backoff between them); a `retry` admission lasts for one retry attempt, on top of it.
 *
 * `maxConnections` is a hard cap on the destination's sockets: its endpoints' pools draw
 * them from one budget (src/upstream/endpoint-pool.ts), and a request that finds no free
 * connection under it waits in its endpoint's pool. Pending requests are those waiting:
 * the admitted requests beyond what the destination's connections carry,
 * `min(maxConnections, endpointConnections) × pipelining`. They are counted here, not
 * summed over the pools per request; the count is exact when requests spread over
 * endpoints as the balancer intends, and errs towards admitting otherwise.
 * `maxConnections` thus never refuses a request by itself: like Envoy's, it makes requests
 * pending, and `maxPendingRequests` refuses them.
 */
export class CircuitLimits {
  /** Connections the destination's endpoints may open in all: usable endpoints × `connectionPool.connections`. */
  private endpointConnections = Infinity
  /** Sockets open now (the service layer's connection budget), for the snapshot. */
  private connectionGauge: () => number = () => 0

  constructor (
    readonly service: string,
    readonly settings: CircuitSettings,
    readonly counters: CircuitCounters = new CircuitCounters(),
    /** Told of every refusal (the gateway's endpoint events); one function may serve every destination. */
    private readonly onOverflow?: (limit: OverflowLimit, service: string) => void
  ) {}

  /** Called by the service layer when its usable endpoints change. */
  setEndpointConnections (connections: number): void {
    this.endpointConnections = connections
  }

  /** Where the snapshot reads the destination's open sockets from. */
  setConnectionGauge (gauge: () => number): void {
    this.connectionGauge = gauge
  }

  /** Requests in flight that may be on a connection at once. */
  get connectionSlots (): number {
    return Math.min(this.settings.maxConnections, this.endpointConnections) * this.settings.pipelining
  }

  /** Undefined when admitted (match it with one `release(kind)`), else the error to answer with at once. */
  admit (kind: AdmissionKind): OverflowError | undefined {
    const c = this.counters
    const s = this.settings
    if (kind === 'retry') {
      if (c.retries >= s.maxRetries) return this.overflow('max-retries', s.maxRetries)
      c.retries++
      return undefined
    }
    if (c.requests >= s.maxRequests) return this.overflow('max-requests', s.maxRequests)
    // The new request would wait for a connection behind the pending ones.
    if (c.requests + 1 - this.connectionSlots > s.maxPendingRequests) return this.overflow('max-pending-requests', s.maxPendingRequests)
    c.requests++
    return undefined
  }

  release (kind: AdmissionKind): void {
    const c = this.counters
    if (kind === 'retry') { if (c.retries > 0) c.retries-- } else if (c.requests > 0) c.requests--
  }

  /** For admin and metrics. */
  snapshot (): CircuitSnapshot {
    const c = this.counters
    const { pipelining: _, ...limits } = this.settings
    return { requests: c.requests, pending: Math.max(0, c.requests - this.connectionSlots), connections: this.connectionGauge(), retries: c.retries, limits, overflows: { ...c.overflows } }
  }

  private overflow (limit: OverflowLimit, value: number): OverflowError {
    this.counters.overflows[limit]++
    this.onOverflow?.(limit, this.service)
    // A fresh error each time: the route layer may add what was tried to it.
    const err = fastmeshError('OVERFLOW', [this.service, limit, value]) as FastmeshError & { limit: OverflowLimit, headers: Record<string, string> }
    err.limit = limit
    err.headers = { [OVERFLOW_HEADER]: limit }
    return err
  }
}
