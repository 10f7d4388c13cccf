// Service layer contracts: what the route layer asks of a destination service (an endpoint
// for this attempt, admission under the circuit limits) and what it reports back after each
// attempt (for least-request, peak EWMA and outlier detection).
import type { IncomingHttpHeaders } from 'node:http'
import type { ResponseError } from '../errors.js'
import type { EndpointTarget } from '../upstream/endpoint-pool.js'

/** What a balancing choice may look at for one attempt. */
export interface PickRequest {
  readonly headers: IncomingHttpHeaders
  /** The client's address (consistent hashing by client). */
  readonly clientAddress: string
  /** The request's query string (`?a=b`, or ''), for hashing by a query parameter. */
  readonly search: string
  /**
   * Endpoint ids this request already tried: a retry picks another when one exists. A
   * destination of several tiers (failover) gives a retry to the first tier in its order that
   * still has an untried usable endpoint (Envoy's previous-priorities predicate), and takes a
   * tried one only when no tier has any.
   */
  readonly tried: ReadonlySet<string> | undefined
  /**
   * Only a usable endpoint not in `tried` (of any tier), or none: undefined when every usable
   * one was tried (an endpoint known to be unreachable, used when nothing else is, does not count).
   */
  readonly untriedOnly?: boolean
}

/** How one attempt on an endpoint ended, as the route layer saw it. */
export interface AttemptOutcome {
  /** The upstream's status; 0 when there was no response (connect failure, reset, timeout). */
  readonly status: number
  /** A connect failure, reset or timeout: the endpoint, not the application, failed. */
  readonly gatewayError: boolean
  /** No TCP connection could be made (refused, connect timeout, host unreachable): nothing reached the endpoint. */
  readonly unreachable?: boolean
  /** Time from dispatch to response headers (or to the failure), in ms. */
  readonly latencyMs: number
}

/** Circuit-breaking admission kinds, each with its own limit. */
export type AdmissionKind = 'request' | 'retry'

/**
 * The service layer as the route layer uses it. `pick` may return a target only once per
 * attempt and every picked target gets exactly one `report` (it ends that attempt's
 * in-flight count). `admit` returns an error to answer at once (503 FASTMESH_ERR_OVERFLOW)
 * or undefined; every undefined is matched by exactly one `release` of the same kind.
 */
export interface ServiceLayer {
  readonly service: string
  pick(request: PickRequest): EndpointTarget | undefined
  report(target: EndpointTarget, outcome: AttemptOutcome): void
  admit(kind: AdmissionKind): ResponseError | undefined
  release(kind: AdmissionKind): void
  /**
   * True while this layer would serve only by ignoring outlier ejections (panic). Optional:
   * layers without outlier detection never are. A mirror skips a degraded destination.
   */
  degraded?(): boolean
  /** Undefined until discovery has answered for this destination once. */
  readonly current: unknown
  /** Resolves once discovery has answered, or after `timeoutMs`. */
  known(timeoutMs: number): Promise<void>
}
