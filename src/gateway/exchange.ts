// Gateway-wide layer: one request's passage through a config version (who it is, where it
// went, how it ended), and the ordered chain of policies that sees every request on every
// listener, the fast path included, and every upstream try (forward, retry, mirror, upgrade):
// the home of the access log, route statistics, metrics, tracing and load shedding.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { RequestRecord } from '../telemetry/access-log.js'
import { elapsedMs } from '../telemetry/access-log.js'
import type { PolicyExchange, PolicyHooks, Refusal, UpstreamFaultInjector, UpstreamTry } from '../../plugins/types.js'
export type { TryOutcome, UpstreamTry } from '../../plugins/types.js'

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
  /**
   * Node mode, shared outbound port: config routes, then the destination named by Host; as
   * `caller` (`listeners.outbound.identity`, set per version) or, undefined, as the gateway.
   */
  | { readonly kind: 'outbound', readonly caller: string | undefined }
  /** Node mode, a per-upstream listener: always `service`, as `caller`. */
  | { readonly kind: 'upstream', readonly caller: string, readonly service: string }
  /** Node mode, the inbound listener: for local `service`; `peer` is the verified caller (mTLS). */
  | { readonly kind: 'inbound', readonly service: string, readonly peer: MeshPeer | undefined }

/** What the tracing policy keeps in `Exchange.trace` (src/telemetry/tracing.ts). */
interface TraceIds {
  /** Whether the trace is recorded (sampled): only then do its ids lead anywhere. */
  readonly sampled: boolean
  readonly traceId: string
  readonly spanId: string
}

/**
 * One request through a version. It is also the access-log record: the policies read it
 * when it ends, so a request costs this one object and no second copy.
 */
export class Exchange implements RequestRecord, PolicyExchange {
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
  /** Bytes read from and written to the client's connection while the exchange ran (headers and body), once it ended. */
  requestBytes = 0
  responseBytes = 0
  /** Tracing's state for this exchange (its server span); one slot, so every exchange keeps one shape. */
  trace: unknown = undefined
  /**
   * The client's address, read once when the exchange begins: Node detaches the socket from
   * the request when the exchange ends, and a retry or a timer may still run after that.
   */
  readonly clientAddress: string
  private endedAt: bigint | undefined = undefined
  private readonly socket: Socket | null

  constructor (
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly requestId: string,
    readonly start: bigint,
    readonly entry: Entry | undefined
  ) {
    const socket = req.socket ?? null
    this.socket = socket
    this.clientAddress = socket?.remoteAddress ?? ''
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

  /**
   * The trace this exchange belongs to, when tracing is on and it was sampled (a trace
   * backend has it). An unsampled request's lines are tied across hops by its request id.
   */
  get traceId (): string | undefined {
    const t = this.trace as TraceIds | undefined
    return t !== undefined && t.sampled ? t.traceId : undefined
  }

  /** The id of this gateway's server span of the exchange (sampled, as `traceId`). */
  get spanId (): string | undefined {
    const t = this.trace as TraceIds | undefined
    return t !== undefined && t.sampled ? t.spanId : undefined
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
    // What the connection carried since its previous exchange ended: this request's header
    // section was read before the exchange began, so a mark taken at the start would miss it.
    const socket = this.socket
    if (socket !== null) {
      let mark = connectionMarks.get(socket)
      if (mark === undefined) connectionMarks.set(socket, mark = new ConnectionMark())
      this.requestBytes = Math.max(0, socket.bytesRead - mark.read)
      this.responseBytes = Math.max(0, socket.bytesWritten - mark.written)
      mark.read = socket.bytesRead
      mark.written = socket.bytesWritten
    }
    return true
  }
}

/** Bytes of a client connection already counted by its earlier exchanges. */
class ConnectionMark {
  read = 0
  written = 0
}

/** Per client connection (kept outside Node's socket object, so its shape never changes). */
const connectionMarks = new WeakMap<Socket, ConnectionMark>()

/**
 * A gateway-wide policy: runs for every request of every listener, in chain order, and sees
 * every upstream try (hooks: PolicyHooks in plugins/types.ts). The gateway's own policies
 * (src/gateway/policies.ts) are shown the Exchange itself; plugins' get read-only views.
 */
export interface GatewayPolicy extends PolicyHooks<Exchange, Exchange> {
  readonly name: string
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
  /** Whether any policy has a per-try hook: without one, a try costs the chain nothing. */
  readonly seesTries: boolean
  /** Upstream header names the policies set themselves (the client's copies are dropped); undefined: none. */
  readonly ownedUpstreamHeaders: ReadonlySet<string> | undefined
  private readonly requestSteps: ReadonlyArray<Step<NonNullable<GatewayPolicy['onRequest']>>>
  private readonly tryStartSteps: ReadonlyArray<Step<NonNullable<GatewayPolicy['onTryStart']>>>
  private readonly headerSteps: ReadonlyArray<Step<NonNullable<GatewayPolicy['onUpstreamHeaders']>>>
  private readonly tryEndSteps: ReadonlyArray<Step<NonNullable<GatewayPolicy['onTryEnd']>>>
  private readonly endSteps: ReadonlyArray<Step<NonNullable<GatewayPolicy['onEnd']>>>

  constructor (readonly policies: readonly GatewayPolicy[], readonly fault: ExchangeFault = () => {}) {
    const steps = <K extends keyof GatewayPolicy>(key: K): Array<Step<NonNullable<GatewayPolicy[K]>>> =>
      policies.filter((p) => p[key] !== undefined).map((p) => new Step((p[key] as (...args: never[]) => unknown).bind(p) as NonNullable<GatewayPolicy[K]>, p.name))
    this.requestSteps = steps('onRequest')
    this.tryStartSteps = steps('onTryStart')
    this.headerSteps = steps('onUpstreamHeaders')
    this.tryEndSteps = steps('onTryEnd')
    this.endSteps = steps('onEnd')
    this.seesTries = this.tryStartSteps.length + this.headerSteps.length + this.tryEndSteps.length > 0
    const owned = policies.flatMap((p) => p.upstreamHeaderNames ?? [])
    this.ownedUpstreamHeaders = owned.length > 0 ? new Set(owned.map((n) => n.toLowerCase())) : undefined
  }

  /** The first policy's refusal, or undefined to go on. A policy that throws is skipped (and reported). */
  request (ex: Exchange): Refusal | undefined {
    const steps = this.requestSteps
    for (let i = 0; i < steps.length; i++) {
      let refusal: Refusal | undefined
      try {
        refusal = steps[i]!.run(ex)
      } catch (err) {
        this.fault(ex, steps[i]!.name, err)
        continue
      }
      if (refusal !== undefined) return refusal
    }
    return undefined
  }

  /** A try is about to go upstream. */
  tryStart (ex: Exchange, t: UpstreamTry): void {
    const steps = this.tryStartSteps
    for (let i = 0; i < steps.length; i++) {
      try {
        steps[i]!.run(ex, t)
      } catch (err) {
        this.fault(ex, steps[i]!.name, err)
      }
    }
  }

  /** The policies' headers for a try's upstream request, pushed onto `headers`. */
  upstreamHeaders (ex: Exchange, t: UpstreamTry, headers: string[]): void {
    const steps = this.headerSteps
    for (let i = 0; i < steps.length; i++) {
      const length = headers.length
      try {
        steps[i]!.run(ex, t, headers)
      } catch (err) {
        // Half a pair would shift every header after it: what the policy pushed goes.
        headers.length = length
        this.fault(ex, steps[i]!.name, err)
      }
    }
  }

  /** A try's outcome is known (once per try). */
  tryEnd (ex: Exchange, t: UpstreamTry): void {
    const steps = this.tryEndSteps
    for (let i = 0; i < steps.length; i++) {
      try {
        steps[i]!.run(ex, t)
      } catch (err) {
        this.fault(ex, steps[i]!.name, err)
      }
    }
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
        steps[i]!.run(ex)
      } catch (err) {
        this.fault(ex, steps[i]!.name, err)
      }
    }
  }
}

/** One policy's hook of one step, with the policy's name for fault reports. */
class Step<F> {
  constructor (readonly run: F, readonly name: string) {}
}
