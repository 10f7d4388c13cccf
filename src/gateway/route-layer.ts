// Route layer: one route's forwarding. For each request it takes the destination (the
// service layer) through its circuit limits, makes the tries — an endpoint from the
// destination, the rewritten path, the per-try timeout — hands each to the endpoint layer,
// and decides, in this one place, whether a failed try is retried (policy, budget, backoff,
// another endpoint) or becomes the gateway's answer. Nothing below it retries.
import type { IncomingHttpHeaders } from 'node:http'
import { fastmeshError, type FastmeshError, type ResponseError } from '../errors.js'
import { forward, type ForwardObserver, type ForwardSettings, type UpstreamCall } from '../upstream/proxy.js'
import type { EndpointTarget } from '../upstream/endpoint-pool.js'
import type { ServiceLayer } from '../balancer/types.js'
import { defaultRandom, type RandomSource } from '../balancer/random.js'
import type { UpstreamHeadersEditor } from '../../plugins/types.js'
import type { Exchange, PolicyChain } from './exchange.js'
import type { RouteMatch } from './router.js'
import { writeError } from './respond.js'
import { failureKind, type CompiledRetryPolicy, type RetryBudget } from './retry.js'
import type { Mirror } from './mirror.js'

/** How long a request to a destination discovery has not answered for yet waits for it. */
export const FIRST_DISCOVERY_WAIT_MS = 5_000

/** The service layer as a route sees it (src/balancer/types.ts). */
export type Destination = ServiceLayer

/** The destination of one request: fixed for most routes, chosen per request for some (Host, splits). */
export type DestinationFor = (ex: Exchange) => Destination | ResponseError

/** One request's forwarding, across its tries. */
class RouteCall implements UpstreamCall {
  path = ''
  headersTimeoutMs = 0
  body: Buffer | undefined = undefined
  /** Tries made so far. */
  attempt = 0
  target: EndpointTarget | undefined = undefined
  tryStart = 0
  tried: Set<string> | undefined = undefined
  /** Per try: `endpoint: outcome`, for the answer when every try failed. */
  causes: string[] | undefined = undefined
  retryAdmitted = false
  /** Whether the current try's outcome went back to the service layer (once per try). */
  reported = true
  /** Why the last try failed, answered when no endpoint is left for another. */
  lastError: FastmeshError | undefined = undefined

  constructor (
    readonly ex: Exchange,
    readonly destination: Destination,
    readonly match: RouteMatch,
    readonly headers: IncomingHttpHeaders,
    readonly requestId: string,
    readonly editors: UpstreamHeadersEditor[] | null,
    readonly replyHeaders: Record<string, unknown> | null,
    readonly clientCert: string | undefined,
    readonly deadline: number
  ) {}
}

export interface RouteLayerOptions {
  readonly name: string
  /** The upstream path (without query) for a match. */
  readonly rewrite: (match: RouteMatch) => string
  readonly destination: DestinationFor
  readonly forwarding: ForwardSettings
  readonly retry: CompiledRetryPolicy
  /** The route's retry budget (state registry: it outlives config versions). */
  readonly budget: () => RetryBudget
  /** Inbound mesh calls: pass the verified caller on as X-Forwarded-Client-Cert. */
  readonly forwardClientCert: boolean
  readonly chain: PolicyChain
  /** Shadow traffic: a copy of a share of the requests, fire-and-forget. */
  readonly mirror?: Mirror | undefined
  readonly random?: RandomSource
}

export class RouteLayer implements ForwardObserver<RouteCall> {
  readonly name: string
  private readonly rewrite: RouteLayerOptions['rewrite']
  private readonly destination: DestinationFor
  private readonly forwarding: ForwardSettings
  private readonly retry: CompiledRetryPolicy
  private readonly budgetOf: () => RetryBudget
  private budget: RetryBudget | undefined
  private readonly forwardClientCert: boolean
  private readonly chain: PolicyChain
  private readonly mirror: Mirror | undefined
  private readonly random: RandomSource

  constructor (opts: RouteLayerOptions) {
    this.name = opts.name
    this.rewrite = opts.rewrite
    this.destination = opts.destination
    this.forwarding = opts.forwarding
    this.retry = opts.retry
    this.budgetOf = opts.budget
    this.forwardClientCert = opts.forwardClientCert
    this.chain = opts.chain
    this.mirror = opts.mirror
    this.random = opts.random ?? defaultRandom
  }

  /**
   * Forwards the exchange whose route matched as `match`. `editors` and `replyHeaders`
   * come from the route's plugins (null on routes without plugins).
   */
  forward (ex: Exchange, match: RouteMatch, headers: IncomingHttpHeaders, editors: UpstreamHeadersEditor[] | null, replyHeaders: Record<string, unknown> | null): void {
    const destination = this.destination(ex)
    if (!('pick' in destination)) {
      this.answer(ex, destination, replyHeaders)
      return
    }
    ex.destination = destination.service
    if (destination.current === undefined) {
      // A destination first used by this request: its discovery watch has just started.
      void destination.known(FIRST_DISCOVERY_WAIT_MS).then(() => {
        if (ex.res.destroyed) this.chain.end(ex, 499, 'client closed the connection')
        else this.begin(ex, destination, match, headers, editors, replyHeaders)
      })
      return
    }
    this.begin(ex, destination, match, headers, editors, replyHeaders)
  }

  private begin (ex: Exchange, destination: Destination, match: RouteMatch, headers: IncomingHttpHeaders, editors: UpstreamHeadersEditor[] | null, replyHeaders: Record<string, unknown> | null): void {
    const overflow = destination.admit('request')
    if (overflow !== undefined) {
      this.answer(ex, overflow, replyHeaders)
      return
    }
    const retry = this.retry
    const deadline = retry.requestTimeoutMs !== undefined ? Date.now() + retry.requestTimeoutMs : Infinity
    const clientCert = this.forwardClientCert && ex.entry?.kind === 'inbound' ? ex.entry.peer?.uri : undefined
    const call = new RouteCall(ex, destination, match, headers, ex.requestId, editors, replyHeaders, clientCert, deadline)
    call.path = this.rewrite(match) + match.search
    if (retry.attempts > 1) (this.budget ??= this.budgetOf()).recordRequest()
    if (retry.attempts > 1 && retry.bufferBodyBytes > 0 && headers['transfer-encoding'] === undefined) {
      const length = Number(headers['content-length'])
      if (length > 0 && length <= retry.bufferBodyBytes) {
        this.bufferBody(call, length)
        return
      }
    }
    this.attempt(call)
  }

  /** Reads a small declared body whole, so every try can send it. */
  private bufferBody (call: RouteCall, length: number): void {
    const chunks: Buffer[] = []
    let size = 0
    const req = call.ex.req
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size <= length) chunks.push(chunk)
    })
    req.once('end', () => {
      call.body = Buffer.concat(chunks, Math.min(size, length))
      this.attempt(call)
    })
    req.once('error', () => { this.finish(call, 499, 'client closed the connection') })
  }

  private attempt (call: RouteCall): void {
    const ex = call.ex
    if (ex.res.destroyed) { this.finish(call, 499, 'client closed the connection'); return }
    const target = call.destination.pick({ headers: call.headers, clientAddress: ex.req.socket.remoteAddress ?? '', search: call.match.search, tried: call.tried })
    if (target === undefined) {
      this.giveUp(call, call.lastError ?? fastmeshError('NO_HEALTHY_ENDPOINT', [call.destination.service]))
      return
    }
    call.attempt++
    call.target = target
    ex.attempts = call.attempt
    if (call.attempt > 1) ex.endpoints = ex.endpoints === undefined ? [ex.endpoint!, target.label] : [...ex.endpoints, target.label]
    ex.endpoint = target.label
    const left = call.deadline - Date.now()
    call.headersTimeoutMs = Math.max(1, Math.min(this.retry.perTryTimeoutMs, left))
    call.tryStart = performance.now()
    call.reported = false
    // Before the first try reads the body: the mirror copies it as it streams to the primary.
    if (call.attempt === 1 && this.mirror !== undefined) this.mirror.maybeMirror(ex.req, call.headers, this.forwarding, call)
    forward(ex.req, ex.res, call.headers, target, this.forwarding, call, this)
  }

  responded (call: RouteCall, status: number): boolean {
    const retry = this.retry.retriesStatus(status, call.ex.method) && this.mayRetry(call)
    this.report(call, status, false)
    if (!retry) return true
    this.note(call, `${call.target!.label}: ${status}`)
    call.lastError = fastmeshError('UPSTREAM_FAILURE', [call.target!.label, call.destination.service, `answered ${status}`])
    this.retryLater(call)
    return false
  }

  failed (call: RouteCall, err: FastmeshError): void {
    const kind = failureKind(err)
    this.report(call, 0, kind !== 'other')
    this.note(call, `${call.target!.label}: ${causeOf(err)}`)
    call.lastError = err
    // A body streamed from the client is gone once read: only a try that read none may repeat.
    const bodyIntact = call.body !== undefined || !call.ex.req.readableDidRead
    if (bodyIntact && this.retry.retriesFailure(kind, call.ex.method) && this.mayRetry(call)) {
      this.retryLater(call)
      return
    }
    this.giveUp(call, err)
  }

  ended (call: RouteCall, status: number, error: string | undefined): void {
    // An upgrade (101) or a client that left before the answer: no headers were seen.
    if (!call.reported) this.report(call, status === 499 ? 0 : status, false)
    this.finish(call, status, error)
  }

  /** The try's outcome to the service layer (balancer statistics, outlier detection), once. */
  private report (call: RouteCall, status: number, gatewayError: boolean): void {
    if (call.reported) return
    call.reported = true
    call.destination.report(call.target!, { status, gatewayError, latencyMs: performance.now() - call.tryStart })
  }

  /** The gateway answers the exchange itself (plugin headers kept) and it ends. */
  answer (ex: Exchange, err: ResponseError, replyHeaders: Record<string, unknown> | null): void {
    const headers = (err as { headers?: Record<string, string> }).headers
    writeError(ex.res, err, ex.requestId, headers === undefined ? replyHeaders : { ...replyHeaders, ...headers })
    this.chain.end(ex, err.statusCode, err.code)
  }

  /** Tries left, time left, the retry circuit limit and the budget all allow another try. */
  private mayRetry (call: RouteCall): boolean {
    if (call.attempt >= this.retry.attempts) return false
    if (call.deadline - Date.now() <= 0) return false
    if (call.retryAdmitted) { call.destination.release('retry'); call.retryAdmitted = false }
    if (call.destination.admit('retry') !== undefined) return false
    if (!(this.budget ??= this.budgetOf()).tryRetry(this.retry.budget)) {
      call.destination.release('retry')
      return false
    }
    call.retryAdmitted = true
    return true
  }

  private retryLater (call: RouteCall): void {
    (call.tried ??= new Set()).add(call.target!.endpoint.id)
    const wait = this.retry.backoffMs(call.attempt + 1, this.random)
    if (wait <= 0) { this.attempt(call); return }
    setTimeout(() => { this.attempt(call) }, wait)
  }

  private note (call: RouteCall, cause: string): void {
    (call.causes ??= []).push(cause)
  }

  /** No (further) try: answer with `err`, saying what was tried when there was more than one try. */
  private giveUp (call: RouteCall, err: FastmeshError): void {
    const answer: ResponseError = call.attempt > 1 || (call.causes !== undefined && call.causes.length > 1)
      ? { statusCode: err.statusCode, code: err.code, message: `${err.message} (after ${call.attempt} tries: ${call.causes!.join('; ')})` }
      : err
    this.release(call)
    this.answer(call.ex, answer, call.replyHeaders)
  }

  private finish (call: RouteCall, status: number, error: string | undefined): void {
    this.release(call)
    this.chain.end(call.ex, status, error)
  }

  private release (call: RouteCall): void {
    if (call.retryAdmitted) { call.destination.release('retry'); call.retryAdmitted = false }
    call.destination.release('request')
  }
}

/** The short cause of a failed try, for the answer and the log: undici's code when there is one. */
function causeOf (err: FastmeshError): string {
  const cause = (err as { cause?: { code?: unknown, message?: unknown } }).cause
  return typeof cause?.code === 'string' ? cause.code : err.code
}
