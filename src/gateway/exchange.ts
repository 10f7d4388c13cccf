// Gateway-wide layer: one request's passage through a config version (who it is, where it
// went, how it ended), and the ordered chain of policies that sees every request on every
// listener, the fast path included: the home of the access log, route statistics, metrics
// and, later, tracing and load shedding.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { RequestRecord } from '../telemetry/access-log.js'
import { elapsedMs } from '../telemetry/access-log.js'
import type { PolicyRequest, Refusal, UpstreamFaultInjector } from '../../plugins/types.js'

/** The verified caller of an inbound mesh call. */
export interface MeshPeer {
  readonly service: string
  readonly uri: string
}

/**
 * Which listener a request came in on, set by the listener before the version sees it.
 * No entry: the edge listener (config routes only).
 */
export type Entry =
  /** Node mode, shared outbound port: config routes, then the destination named by Host. */
  | { readonly kind: 'outbound' }
  /** Node mode, a per-upstream listener: always `service`, as `caller`. */
  | { readonly kind: 'upstream', readonly caller: string, readonly service: string }
  /** Node mode, the inbound listener: for local `service`; `peer` is the verified caller (mTLS). */
  | { readonly kind: 'inbound', readonly service: string, readonly peer: MeshPeer | undefined }

/**
 * One request through a version. It is also the access-log record: the policies read it
 * when it ends, so a request costs this one object and no second copy.
 */
export class Exchange implements RequestRecord, PolicyRequest {
  /** The route that took the request (its config name), once chosen. */
  route: string | undefined = undefined
  /** The destination service, once chosen. */
  destination: string | undefined = undefined
  /** `address:port` of the endpoint the request went to (the last try's). */
  endpoint: string | undefined = undefined
  /** Tries made (0: none reached the endpoint layer). */
  attempts = 0
  /** Every try's endpoint, in order, when there was more than one. */
  endpoints: string[] | undefined = undefined
  status = 0
  /** Set when the gateway itself answered (FASTMESH_ERR_*) or the exchange broke. */
  error: string | undefined = undefined
  /** Why the last try failed, when the gateway answered with an upstream error. */
  cause: string | undefined = undefined
  /** A fault a plugin injected (`delay`, `abort`, `response`), for the access log. */
  fault: string | undefined = undefined
  /** Faults a plugin puts in place of upstream tries (fault injection), asked before each try. */
  upstreamFault: UpstreamFaultInjector | undefined = undefined
  /** Largest request body a plugin allows (`reply.limitRequestBody`), counted as it streams upstream; -1: none. */
  requestBodyLimit = -1
  ended = false
  /**
   * The client's address, read once when the exchange begins: Node detaches the socket from
   * the request when the exchange ends, and a retry or a timer may still run after that.
   */
  readonly clientAddress: string
  private endedAt: bigint | undefined = undefined

  constructor (
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly requestId: string,
    readonly start: bigint,
    readonly entry: Entry | undefined
  ) {
    this.clientAddress = req.socket?.remoteAddress ?? ''
  }

  get method (): string {
    return this.req.method ?? ''
  }

  /** The normalised request target, as routing, plugins and the upstream saw it. */
  get path (): string {
    return this.req.url ?? ''
  }

  get headers (): IncomingHttpHeaders {
    return this.req.headers
  }

  noteFault (kind: string): void {
    this.fault = kind
  }

  /** The verified caller of an inbound mesh call. */
  get caller (): string | undefined {
    const entry = this.entry
    return entry !== undefined && entry.kind === 'inbound' ? entry.peer?.uri : undefined
  }

  get durationMs (): number {
    return elapsedMs(this.start, this.endedAt)
  }

  /** Marks the end (first call wins); true when this call ended it. */
  end (status: number, error: string | undefined): boolean {
    if (this.ended) return false
    this.ended = true
    this.status = status
    this.error = error
    this.endedAt = process.hrtime.bigint()
    return true
  }
}

/** A gateway-wide policy: runs for every request of every listener, in chain order. */
export interface GatewayPolicy {
  readonly name: string
  /** After the route is chosen, before its plugins and forwarding: a refusal (with its headers) answers instead. */
  onRequest?(ex: Exchange): Refusal | undefined
  /** Once, when the exchange has ended (answered, forwarded, refused or cut). */
  onEnd?(ex: Exchange): void
}

/** Exceptions raised while serving exchanges, counted across versions (admin shows them). */
export class ExchangeFaults {
  /** Exceptions caught by a layer's guard: each ended its own exchange only. */
  count = 0
  /** Exceptions no guard caught (a plugin's own timer, a library callback), caught by the process-wide last resort. */
  uncaught = 0
  last: { readonly at: string, readonly where: string, readonly message: string, readonly requestId: string } | undefined = undefined

  record (ex: Exchange, where: string, err: unknown): void {
    this.count++
    this.last = { at: new Date().toISOString(), where, message: err instanceof Error ? err.message : String(err), requestId: ex.requestId }
  }
}

/**
 * Told of an exception raised while serving one exchange (`where`: a policy's name or a
 * layer's step): it is logged with the request id and counted, and the process goes on.
 */
export type ExchangeFault = (ex: Exchange, where: string, err: unknown) => void

/** The ordered policies of a version, split by step so an empty step costs one length check. */
export class PolicyChain {
  private readonly requestSteps: ReadonlyArray<NonNullable<GatewayPolicy['onRequest']>>
  private readonly endSteps: ReadonlyArray<NonNullable<GatewayPolicy['onEnd']>>
  private readonly requestNames: readonly string[]
  private readonly endNames: readonly string[]

  constructor (readonly policies: readonly GatewayPolicy[], readonly fault: ExchangeFault = () => {}) {
    const withRequest = policies.filter((p) => p.onRequest !== undefined)
    const withEnd = policies.filter((p) => p.onEnd !== undefined)
    this.requestSteps = withRequest.map((p) => p.onRequest!.bind(p))
    this.endSteps = withEnd.map((p) => p.onEnd!.bind(p))
    this.requestNames = withRequest.map((p) => p.name)
    this.endNames = withEnd.map((p) => p.name)
  }

  /** The first policy's refusal, or undefined to go on. A policy that throws is skipped (and reported). */
  request (ex: Exchange): Refusal | undefined {
    const steps = this.requestSteps
    for (let i = 0; i < steps.length; i++) {
      let refusal: Refusal | undefined
      try {
        refusal = steps[i]!(ex)
      } catch (err) {
        this.fault(ex, this.requestNames[i]!, err)
        continue
      }
      if (refusal !== undefined) return refusal
    }
    return undefined
  }

  /**
   * Ends the exchange with `status` (once) and lets every policy see it. It runs from socket
   * and timer callbacks, so a policy that throws is reported and the others still run.
   */
  end (ex: Exchange, status: number, error?: string): void {
    if (!ex.end(status, error)) return
    const steps = this.endSteps
    for (let i = 0; i < steps.length; i++) {
      try {
        steps[i]!(ex)
      } catch (err) {
        this.fault(ex, this.endNames[i]!, err)
      }
    }
  }
}
