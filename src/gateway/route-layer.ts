// Route layer: one route's forwarding. For each request it takes the destination (the
// service layer) through its circuit limits, makes the tries — an endpoint from the
// destination, the rewritten path, the per-try timeout — hands each to the endpoint layer,
// and decides, in this one place, whether a failed try is retried (policy, budget, backoff,
// another endpoint) or becomes the gateway's answer. Nothing below it retries.
import type { IncomingHttpHeaders } from 'node:http'
import { fastmeshError, type FastmeshError, type ResponseError } from '../errors.js'
import { forward, tryTimeoutError, type ForwardObserver, type ForwardSettings, type TryHandle, type UpstreamCall } from '../upstream/proxy.js'
import type { EndpointTarget } from '../upstream/endpoint-pool.js'
import type { ServiceLayer } from '../balancer/types.js'
import { defaultRandom, type RandomSource } from '../balancer/random.js'
import type { InjectedFault, UpstreamHeadersEditor } from '../../plugins/types.js'
import type { Exchange, PolicyChain, TryOutcome, UpstreamTry } from './exchange.js'
import type { RouteMatch } from './router.js'
import { writeError } from './respond.js'
import { failureKind, isConnectFailure, isUnreachable, MAX_TRIES, tryOutcomeOf, type CompiledRetryPolicy, type RetryBudget } from './retry.js'
import type { Mirror } from './mirror.js'

/** How long a request to a destination discovery has not answered for yet waits for it. */
export const FIRST_DISCOVERY_WAIT_MS = 5_000

/** The service layer as a route sees it (src/balancer/types.ts). */
export type Destination = ServiceLayer

/** The destination of one request: fixed for most routes, chosen per request for some (Host, splits). */
export type DestinationFor = (ex: Exchange) => Destination | ResponseError

/**
 * One request's forwarding, across its tries. It is also the current try as the policies see
 * it (UpstreamTry): a try costs no object of its own.
 */
class RouteCall implements UpstreamCall, UpstreamTry {
  path = ''
  headersTimeoutMs = 0
  body: Buffer | undefined = undefined
  /** The current try on the endpoint layer, to abort it (per-try timeout, a fault). */
  handle: TryHandle | undefined = undefined
  /** The current try's timer (its per-try timeout, or what is left of the request's). */
  timer: ReturnType<typeof setTimeout> | undefined = undefined
  /** Whether the circuit admission of the request was given back (once). */
  released = false
  /** A fault (or the body limit) ended the exchange: what the endpoint layer reports after it is ignored. */
  faulted = false
  /** Bytes the body may have, counted as it streams to the tries (`reply.limitRequestBody`); -1: no count. */
  bodyLimit = -1
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
  /** Tries that could not connect and were retried: they do not count towards `attempts`. */
  connectFailures = 0
  /** The next try takes only an endpoint not tried yet (a retry after a connect failure). */
  untriedOnly = false
  // The current try, as UpstreamTry: reset when each try starts.
  readonly mirror = false
  endpoint = ''
  outcome: TryOutcome | undefined = undefined
  status = 0
  durationMs = 0
  cause: string | undefined = undefined
  span: unknown = undefined

  constructor (
    readonly ex: Exchange,
    readonly destination: Destination,
    readonly match: RouteMatch,
    readonly headers: IncomingHttpHeaders,
    readonly requestId: string,
    readonly editors: UpstreamHeadersEditor[] | null,
    readonly replyHeaders: Record<string, unknown> | null,
    readonly clientCert: string | undefined,
    readonly deadline: number,
    /** The request has a body (Content-Length above 0, or chunked). */
    readonly hasBody: boolean,
    readonly chain: PolicyChain
  ) {}

  get clientAddress (): string {
    return this.ex.clientAddress
  }

  get service (): string {
    return this.destination.service
  }

  get startedAt (): number {
    return this.tryStart
  }

  get ownedHeaders (): ReadonlySet<string> | undefined {
    return this.chain.ownedUpstreamHeaders
  }

  /** The policies' headers for this try (tracing context), at the end of the upstream request's. */
  pushHeaders (out: string[]): void {
    if (this.chain.seesTries) this.chain.upstreamHeaders(this.ex, this, out)
  }

  /**
   * Whether another try can send the request as the client sent it: it has no body, or the
   * body was buffered. A streamed body is consumed (and its stream ended) by the first try.
   */
  get replayable (): boolean {
    return !this.hasBody || this.body !== undefined
  }
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
      destination.known(FIRST_DISCOVERY_WAIT_MS).then(() => {
        if (ex.res.destroyed) this.chain.end(ex, 499, 'client closed the connection')
        else this.begin(ex, destination, match, headers, editors, replyHeaders)
      }).catch((err: unknown) => { this.fault(ex, undefined, 'first discovery', err) })
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
    const chunked = headers['transfer-encoding'] !== undefined
    const declared = headers['content-length']
    const call = new RouteCall(ex, destination, match, headers, ex.requestId, editors, replyHeaders, clientCert, deadline, chunked || (declared !== undefined && declared !== '0'), this.chain)
    try {
      if (ex.requestBodyLimit >= 0 && call.hasBody) {
        // A declared length frames the body (the parser stops there): checked here, never counted.
        if (chunked || declared === undefined) call.bodyLimit = ex.requestBodyLimit
        else if (Number(declared) > ex.requestBodyLimit) {
          this.release(call)
          this.answer(ex, fastmeshError('BODY_TOO_LARGE', [this.name, ex.requestBodyLimit]), replyHeaders)
          return
        }
      }
      call.path = this.rewrite(match) + match.search
      if (retry.attempts > 1) (this.budget ??= this.budgetOf()).recordRequest()
      if (retry.attempts > 1 && retry.bufferBodyBytes > 0 && !chunked && declared !== undefined) {
        const length = Number(declared)
        if (length > 0 && length <= retry.bufferBodyBytes) {
          this.bufferBody(call, length)
          return
        }
      }
      this.attempt(call)
    } catch (err) {
      this.fault(ex, call, 'first try', err)
    }
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
      this.guarded(call, 'first try', this.attempt)
    })
    req.once('error', () => { this.finish(call, 499, 'client closed the connection') })
  }

  private attempt (call: RouteCall): void {
    const ex = call.ex
    if (call.faulted) return
    // The client left while the retry waited: the admissions go back, the exchange ends (once).
    if (ex.ended || ex.res.destroyed) { this.finish(call, 499, 'client closed the connection'); return }
    const target = call.destination.pick({ headers: call.headers, clientAddress: ex.clientAddress, search: call.match.search, tried: call.tried, untriedOnly: call.untriedOnly })
    if (target === undefined) {
      this.giveUp(call, call.lastError ?? fastmeshError('NO_HEALTHY_ENDPOINT', [call.destination.service]))
      return
    }
    call.attempt++
    call.target = target
    ex.attempts = call.attempt
    if (call.attempt > 1) ex.endpoints = ex.endpoints === undefined ? [ex.endpoint!, target.label] : [...ex.endpoints, target.label]
    ex.endpoint = target.label
    // The try's time: its own limit, or what is left of the request's; 0 means no limit.
    const left = call.deadline - Date.now()
    const perTry = this.retry.perTryTimeoutMs
    const limit = perTry > 0 ? Math.min(perTry, left) : left
    call.headersTimeoutMs = limit === Infinity ? 0 : Math.max(1, limit)
    call.tryStart = performance.now()
    call.reported = false
    call.endpoint = target.label
    call.outcome = undefined
    call.status = 0
    call.durationMs = 0
    call.cause = undefined
    call.span = undefined
    if (this.chain.seesTries) this.chain.tryStart(ex, call)
    // Before the first try reads the body: the mirror copies it, and the limit counts it, as it streams to the primary.
    if (call.attempt === 1) {
      if (this.mirror !== undefined) this.mirror.maybeMirror(ex.req, call.headers, this.forwarding, call, ex)
      if (call.bodyLimit >= 0) this.countBody(call)
    }
    const injected = ex.upstreamFault?.(call.attempt)
    if (injected !== undefined) { this.inject(call, injected); return }
    // Our own timer, not undici's: undici's coarse timers fire up to a second late.
    if (call.headersTimeoutMs > 0) call.timer = setTimeout(this.onTryTimeout, call.headersTimeoutMs, call)
    call.handle = forward(ex.req, ex.res, call.headers, target, this.forwarding, call, this)
  }

  /**
   * A plugin's fault in place of this try: the picked endpoint "answered" `status` or
   * "reset", and everything downstream of the try (retry, outlier detection, the answer)
   * happens as for a real one. The endpoint is not contacted.
   */
  private inject (call: RouteCall, fault: InjectedFault): void {
    const ex = call.ex
    ex.fault = 'response'
    if ('reset' in fault) {
      const reset = Object.assign(new Error('reset injected by fault injection'), { code: 'ECONNRESET' })
      this.failed(call, fastmeshError('UPSTREAM_FAILURE', [call.target!.label, call.destination.service, 'ECONNRESET (injected)'], reset))
      return
    }
    if (!this.responded(call, fault.status)) return
    const body = `fault injected: ${fault.status}\n`
    const headers: Record<string, string | number | string[]> = { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), 'x-fastmesh-fault': 'response', 'x-request-id': call.requestId }
    if (call.replyHeaders !== null) for (const name in call.replyHeaders) if (!(name in headers)) headers[name] = call.replyHeaders[name] as string | string[]
    ex.res.writeHead(fault.status, headers).end(body)
    this.ended(call, fault.status, undefined)
  }

  /**
   * Counts the streamed body beside the tries that read it; nothing is held. A body sent again
   * is a buffered one, whose declared length was checked: one count covers every try.
   */
  private countBody (call: RouteCall): void {
    const req = call.ex.req
    const limit = call.bodyLimit
    let seen = 0
    // Paused, so the listener does not start the flow before a try listens (see Mirror.maybeMirror);
    // attached before the try's, it sees each chunk before the upstream gets it.
    req.pause()
    const onData = (chunk: Buffer): void => {
      seen += chunk.length
      if (seen <= limit) return
      req.removeListener('data', onData)
      this.guarded(call, 'body limit', this.bodyOverLimit)
    }
    req.on('data', onData)
  }

  /**
   * The body passed the route's limit: the exchange ends here — 413 when no answer began, cut
   * otherwise — and the try is aborted. It is the client's doing: the endpoint gets no verdict
   * (outlier detection, statistics). The connection closes: what is left of the body cannot
   * be told from a next request.
   */
  private bodyOverLimit (call: RouteCall): void {
    const ex = call.ex
    if (call.faulted || ex.ended) return
    call.faulted = true
    this.stopTimer(call)
    const err = fastmeshError('BODY_TOO_LARGE', [this.name, call.bodyLimit])
    ex.res.shouldKeepAlive = false
    call.handle?.abort(new Error(err.message))
    this.report(call, 0, false, false, 'cancelled', err.code)
    this.release(call)
    if (ex.res.headersSent) {
      ex.res.destroy(err)
      this.chain.end(ex, ex.res.statusCode, err.code)
      return
    }
    this.answer(ex, err, call.replyHeaders)
  }

  /** The try's time is up before response headers: the endpoint layer aborts it and reports `failed`. */
  private readonly onTryTimeout = (call: RouteCall): void => {
    call.timer = undefined
    this.guarded(call, 'per-try timeout', () => { call.handle?.abort(tryTimeoutError(call.headersTimeoutMs)) })
  }

  private stopTimer (call: RouteCall): void {
    if (call.timer !== undefined) { clearTimeout(call.timer); call.timer = undefined }
  }

  responded (call: RouteCall, status: number): boolean {
    if (call.faulted) return false
    try {
      this.stopTimer(call)
      // A body streamed to this try cannot go again: its answer goes back as it is.
      const retry = this.retry.retriesStatus(status, call.ex.method) && call.replayable && this.mayRetry(call)
      this.report(call, status, false, false, 'response', undefined)
      if (!retry) return true
      this.note(call, `${call.target!.label}: ${status}`)
      call.lastError = fastmeshError('UPSTREAM_FAILURE', [call.target!.label, call.destination.service, `answered ${status}`])
      this.retryLater(call)
      return false
    } catch (err) {
      this.fault(call.ex, call, 'response headers', err)
      return false
    }
  }

  failed (call: RouteCall, err: FastmeshError): void {
    if (call.faulted) return
    try {
      this.stopTimer(call)
      const kind = failureKind(err)
      // A try that timed out waiting for a free connection never reached the endpoint: no verdict on it.
      const neverSent = (err as { cause?: { neverSent?: boolean } }).cause?.neverSent === true
      const cause = causeOf(err)
      this.report(call, 0, kind !== 'other' && !neverSent, isUnreachable(err), tryOutcomeOf(kind), cause)
      this.note(call, `${call.target!.label}: ${cause}`)
      call.lastError = err
      // A body streamed from the client is gone once read: only a try that read none may repeat.
      const bodyIntact = call.body !== undefined || !call.ex.req.readableDidRead
      if (bodyIntact && this.retry.retriesFailure(kind, call.ex.method) && this.mayRetry(call, isConnectFailure(kind))) {
        this.retryLater(call)
        return
      }
      this.giveUp(call, err)
    } catch (e) {
      this.fault(call.ex, call, 'failed try', e)
    }
  }

  ended (call: RouteCall, status: number, error: string | undefined): void {
    if (call.faulted) return
    try {
      this.stopTimer(call)
      // An upgrade (101) or a client that left before the answer: no headers were seen.
      if (!call.reported) {
        if (status === 499) this.report(call, 0, false, false, 'cancelled', error)
        else this.report(call, status, false, false, 'response', undefined)
      }
      this.finish(call, status, error)
    } catch (err) {
      this.fault(call.ex, call, 'end', err)
    }
  }

  /** The endpoint layer caught an exception of ours or a plugin's (not the upstream's) on this try. */
  faulted (call: RouteCall, where: string, err: unknown): void {
    if (call.faulted) return
    this.fault(call.ex, call, where, err)
  }

  /** Runs `step` for `call` from a timer or stream callback: an exception ends this exchange only. */
  private guarded (call: RouteCall, where: string, step: (call: RouteCall) => void): void {
    try {
      step.call(this, call)
    } catch (err) {
      this.fault(call.ex, call, where, err)
    }
  }

  /**
   * An exception while serving `ex` (a bug, ours or a plugin's): the exchange ends with a
   * JSON 500 (or is cut if its response started), the try is aborted and its admissions given
   * back, and the fault is logged with the request id and counted. Nothing else is touched.
   */
  private fault (ex: Exchange, call: RouteCall | undefined, where: string, err: unknown): void {
    try {
      this.chain.fault(ex, `route ${this.name}: ${where}`, err)
      if (call !== undefined) {
        call.faulted = true
        this.stopTimer(call)
        call.handle?.abort(err instanceof Error ? err : new Error(String(err)))
        if (call.target !== undefined) this.report(call, 0, false, false, 'cancelled', 'FASTMESH_ERR_INTERNAL')
        this.release(call)
      }
      const internal = fastmeshError('INTERNAL', [`${where} failed`])
      writeError(ex.res, internal, ex.requestId)
      this.chain.end(ex, internal.statusCode, internal.code)
    } catch {
      // The last resort must not throw: cut the connection.
      ex.res.destroy()
    }
  }

  /** The try's outcome to the service layer (balancer statistics, outlier detection) and to the policies, once. */
  private report (call: RouteCall, status: number, gatewayError: boolean, unreachable: boolean, outcome: TryOutcome, cause: string | undefined): void {
    if (call.reported) return
    call.reported = true
    const latencyMs = performance.now() - call.tryStart
    call.destination.report(call.target!, { status, gatewayError, unreachable, latencyMs })
    call.outcome = outcome
    call.status = status
    call.durationMs = latencyMs
    call.cause = cause
    if (this.chain.seesTries) this.chain.tryEnd(call.ex, call)
  }

  /** The gateway answers the exchange itself (plugin headers kept) and it ends. */
  answer (ex: Exchange, err: ResponseError, replyHeaders: Record<string, unknown> | null): void {
    const headers = (err as { headers?: Record<string, string> }).headers
    writeError(ex.res, err, ex.requestId, headers === undefined ? replyHeaders : { ...replyHeaders, ...headers })
    this.chain.end(ex, err.statusCode, err.code)
  }

  /**
   * Tries left, time left, the retry circuit limit and the budget all allow another try.
   * After a connect failure (nothing reached the upstream) the retry uses up neither
   * `attempts` nor the budget, and goes only to an endpoint not tried yet: at most one try
   * per endpoint, MAX_TRIES in all (`attempts: 1` still turns every retry off).
   */
  private mayRetry (call: RouteCall, connectFailure = false): boolean {
    if (call.attempt >= MAX_TRIES) return false
    if (connectFailure ? this.retry.attempts <= 1 : call.attempt - call.connectFailures >= this.retry.attempts) return false
    if (call.deadline - Date.now() <= 0) return false
    if (call.retryAdmitted) { call.destination.release('retry'); call.retryAdmitted = false }
    if (call.destination.admit('retry') !== undefined) return false
    call.untriedOnly = connectFailure
    if (connectFailure) {
      call.connectFailures++
      call.retryAdmitted = true
      return true
    }
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
    setTimeout(this.retryNow, wait, call)
  }

  private readonly retryNow = (call: RouteCall): void => { this.guarded(call, 'retry', this.attempt) }

  private note (call: RouteCall, cause: string): void {
    (call.causes ??= []).push(cause)
  }

  /** No (further) try: answer with `err`, saying what was tried when there was more than one try. */
  private giveUp (call: RouteCall, err: FastmeshError): void {
    call.ex.cause = failureCause(err)
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
    if (call.released) return
    call.released = true
    call.destination.release('request')
  }
}

/** Why a try failed, for the access log: its kind, and the underlying code when there is one. */
function failureCause (err: FastmeshError): string {
  const kind = failureKind(err)
  if (kind === 'timeout') return 'timeout'
  const code = causeOf(err)
  return kind === 'other' ? code : `${kind}: ${code}`
}

/** The short cause of a failed try, for the answer and the log: undici's code when there is one. */
function causeOf (err: FastmeshError): string {
  const cause = (err as { cause?: { code?: unknown, message?: unknown } }).cause
  return typeof cause?.code === 'string' ? cause.code : err.code
}
