// Route layer, shadow traffic: a copy of a share of a route's requests goes to a mirror
// destination (its own service layer and endpoint pools), fire-and-forget. The mirror's
// answer is discarded, its requests in flight and the bodies it holds are bounded, and
// nothing it does (hang, fail, refuse, die) reaches the primary exchange or costs it much:
// the copy of a body is taken beside the primary's stream, never in front of it, and a
// mirror with no usable endpoint is skipped (it never panics).
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import type { Dispatcher } from 'undici'
import type { PickRequest, ServiceLayer } from '../balancer/types.js'
import { defaultRandom, type RandomSource } from '../balancer/random.js'
import { stateKind } from '../state/registry.js'
import type { EndpointTarget } from '../upstream/endpoint-pool.js'
import { upstreamRequestHeaders, type ForwardSettings, type UpstreamCall } from '../upstream/proxy.js'
import type { Exchange, PolicyChain, TryOutcome, UpstreamTry } from './exchange.js'
import { failureKind, tryOutcomeOf } from './retry.js'

/** The header that marks a mirrored request (Envoy's `-shadow` Host suffix would break Host routing at the mirror). */
export const MIRROR_HEADER = 'x-fastmesh-mirror'

export interface MirrorSettings {
  /** Share of requests mirrored, 0-100. */
  readonly percent: number
  readonly maxConcurrent: number
  /** Largest declared Content-Length mirrored; bodies without one are never mirrored. */
  readonly maxBodyBytes: number
  /** A mirrored request not finished by then is abandoned (and counted failed). */
  readonly timeoutMs: number
  /** Bytes of bodies every mirror of the gateway may hold at once (`limits.mirrorBufferBytes`); default: no limit. */
  readonly bufferLimitBytes?: number
  readonly random?: RandomSource
}

/**
 * A route's mirror counters and in-flight count. Kept in the state registry by route name
 * (`mirrorStatsKind`) so the concurrency bound holds across a reload while the old version's
 * mirrored requests finish, and the admin API shows totals since the route appeared.
 */
export class MirrorStats {
  /** Mirrored requests dispatched to an endpoint of the mirror. */
  sent = 0
  /**
   * Not mirrored: `maxConcurrent` in flight already, the mirror service refused admission,
   * or the body would not fit in the gateway's mirror buffer (`limits.mirrorBufferBytes`).
   */
  skippedAtLimit = 0
  /** Not mirrored: a body without Content-Length, above maxBodyBytes, or cut off by the client. */
  skippedBody = 0
  /**
   * Not mirrored: the mirror service has no usable endpoint (none healthy, or every one
   * ejected by outlier detection). A mirror never panics: it does not send to ejected endpoints.
   */
  skippedUnavailable = 0
  /** Mirrored requests that got no answer, a 5xx, or timed out. */
  failed = 0
  /** Mirrored requests answered with a status below 500. */
  completed = 0
  inFlight = 0

  snapshot (): { sent: number, skippedAtLimit: number, skippedBody: number, skippedUnavailable: number, failed: number, completed: number, inFlight: number } {
    return { sent: this.sent, skippedAtLimit: this.skippedAtLimit, skippedBody: this.skippedBody, skippedUnavailable: this.skippedUnavailable, failed: this.failed, completed: this.completed, inFlight: this.inFlight }
  }
}

export const mirrorStatsKind = stateKind('mirrorStats', 'route', () => new MirrorStats())

/**
 * Bytes of request bodies held by the gateway's mirrors (copies taken, or buffered bodies a
 * mirrored request still sends), across routes and config versions: what
 * `limits.mirrorBufferBytes` bounds. One per gateway, in the state registry.
 */
export class MirrorBuffer {
  held = 0

  /** Takes `bytes` when they fit under `limit`. */
  reserve (bytes: number, limit: number): boolean {
    if (this.held + bytes > limit) return false
    this.held += bytes
    return true
  }

  release (bytes: number): void {
    this.held = Math.max(0, this.held - bytes)
  }
}

export const mirrorBufferKind = stateKind('mirrorBuffer', 'gateway', () => new MirrorBuffer())
export const MIRROR_BUFFER_KEY = 'gateway'

/** An attempt that never went out: says nothing of the endpoint to outlier detection. */
const NOT_SENT = { status: 0, gatewayError: false, latencyMs: 0 } as const

/** The length a request declares: 0 without a body, undefined when unknown (chunked) or malformed. */
function declaredLength (headers: IncomingHttpHeaders): number | undefined {
  if (headers['transfer-encoding'] !== undefined) return undefined
  const cl = headers['content-length']
  if (cl === undefined) return 0
  return /^[0-9]{1,15}$/.test(cl) ? Number(cl) : undefined
}

/**
 * A mirrored copy as the upstream request sees it (the primary's call, with the policies'
 * headers for this copy) and as the policies see it (an UpstreamTry with `mirror` set).
 */
class MirrorTry implements UpstreamCall, UpstreamTry {
  readonly attempt = 1
  readonly mirror = true
  readonly editors = null
  readonly replyHeaders = null
  endpoint = ''
  startedAt = 0
  outcome: TryOutcome | undefined = undefined
  status = 0
  durationMs = 0
  cause: string | undefined = undefined
  span: unknown = undefined

  constructor (readonly primary: UpstreamCall, readonly service: string, readonly ex: Exchange | undefined, readonly chain: PolicyChain | undefined) {}

  get requestId (): string { return this.primary.requestId }
  get path (): string { return this.primary.path }
  get clientCert (): string | undefined { return this.primary.clientCert }
  get headersTimeoutMs (): number { return this.primary.headersTimeoutMs }
  get body (): Buffer | undefined { return this.primary.body }
  get clientAddress (): string { return this.primary.clientAddress }
  get ownedHeaders (): ReadonlySet<string> | undefined { return this.chain?.ownedUpstreamHeaders }

  pushHeaders (out: string[]): void {
    if (this.ex !== undefined && this.chain?.seesTries === true) this.chain.upstreamHeaders(this.ex, this, out)
  }

  started (endpoint: string): void {
    this.endpoint = endpoint
    this.startedAt = performance.now()
    if (this.ex !== undefined && this.chain?.seesTries === true) this.chain.tryStart(this.ex, this)
  }

  ended (status: number, err: Error | undefined): void {
    this.durationMs = performance.now() - this.startedAt
    this.status = err === undefined ? status : 0
    this.outcome = err === undefined ? 'response' : tryOutcomeOf(failureKind(err))
    this.cause = err === undefined ? undefined : (err as { code?: string }).code ?? err.message
    if (this.ex !== undefined && this.chain?.seesTries === true) this.chain.tryEnd(this.ex, this)
  }
}

/** Receives the mirror's answer and throws it away; ends the mirrored request exactly once. */
class DiscardHandler implements Dispatcher.DispatchHandler {
  private status = 0
  private done = false
  private abort: ((err: Error) => void) | undefined
  private readonly timer: NodeJS.Timeout
  private readonly started = performance.now()

  constructor (private readonly mirror: Mirror, private readonly target: EndpointTarget, private readonly bytes: number, timeoutMs: number, private readonly tried: MirrorTry) {
    // One bound on the whole exchange (headers and body): a hanging mirror frees its slot.
    this.timer = setTimeout(() => { this.fail(Object.assign(new Error('mirror timeout'), { code: 'UND_ERR_HEADERS_TIMEOUT' })) }, timeoutMs)
    this.timer.unref()
  }

  onConnect (abort: (err?: Error) => void): void {
    this.abort = abort
    if (this.done) abort(new Error('mirror abandoned'))
  }

  onHeaders (statusCode: number): boolean {
    if (statusCode >= 200 && this.status === 0) {
      this.status = statusCode
      this.tried.ended(statusCode, undefined)
    }
    return true
  }

  onData (): boolean {
    return true
  }

  onComplete (): void {
    this.end(undefined)
  }

  onError (err: Error): void {
    this.end(err)
  }

  onUpgrade (_statusCode: number, _headers: unknown, socket: { destroy: () => void }): void {
    socket.destroy()
    this.end(new Error('mirror answered with an upgrade'))
  }

  fail (err: Error): void {
    if (this.done) return
    this.abort?.(err)
    this.end(err)
  }

  /** `err`: the copy failed (no answer, or it broke off). */
  private end (err: Error | undefined): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.timer)
    // The try ended with its response headers when they came; otherwise it ends here.
    if (this.tried.outcome === undefined) this.tried.ended(0, err ?? new Error('mirror ended without a response'))
    const gatewayError = err !== undefined
    this.mirror.finished(this.target, gatewayError ? 0 : this.status, gatewayError, performance.now() - this.started, this.bytes)
  }
}

/** A copy waiting to go out (its body may still be arriving). */
interface MirrorRequest {
  readonly pick: PickRequest
  readonly method: Dispatcher.HttpMethod
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly forwarding: ForwardSettings
  readonly copy: MirrorTry
}

/** One route's mirror. Call `maybeMirror` before the primary is forwarded (see there). */
export class Mirror {
  private readonly random: RandomSource
  private readonly bufferLimit: number

  constructor (
    readonly layer: ServiceLayer,
    private readonly settings: MirrorSettings,
    readonly stats: MirrorStats = new MirrorStats(),
    private readonly buffer: MirrorBuffer = new MirrorBuffer(),
    /** The version's policies, told of each copy as a try (`mirror` set) and asked for its headers. */
    private readonly chain?: PolicyChain
  ) {
    this.random = settings.random ?? defaultRandom
    this.bufferLimit = settings.bufferLimitBytes ?? Infinity
  }

  /**
   * Sends a copy of the request to the mirror when it is sampled and allowed; returns whether
   * it will. It must run before anything reads the request body (before `forward`): it pauses
   * the request and listens beside the primary, which resumes the stream when it starts
   * sending it (undici does); each chunk then reaches both, and back-pressure stays the
   * primary's alone. The copy goes out once the body has fully arrived (it is at most
   * `maxBodyBytes`); a bodyless request, or one whose body the route layer buffered
   * (`call.body`), goes out on the next turn of the event loop, after the primary's dispatch.
   *
   * A mirror whose service has no usable endpoint is skipped before anything is copied: a
   * dead mirror costs the primary path a check, not a connection attempt per request.
   */
  maybeMirror (req: IncomingMessage, headers: IncomingHttpHeaders, forwarding: ForwardSettings, call: UpstreamCall, ex?: Exchange): boolean {
    const s = this.settings
    if (s.percent < 100 && !(this.random() * 100 < s.percent)) return false
    // Tunnels are not requests one can copy.
    if ((req as IncomingMessage & { upgrade?: boolean }).upgrade === true) return false
    // A body the route layer buffered (for retries) is copied from there, not from the stream.
    const buffered = call.body
    const length = buffered !== undefined ? buffered.length : declaredLength(headers)
    if (length === undefined || length > s.maxBodyBytes) {
      this.stats.skippedBody++
      return false
    }
    // Never panic: with every endpoint ejected the service layer would hand out ejected ones.
    if (this.layer.degraded?.() === true) {
      this.stats.skippedUnavailable++
      return false
    }
    if (this.stats.inFlight >= s.maxConcurrent || !this.buffer.reserve(length, this.bufferLimit)) {
      this.stats.skippedAtLimit++
      return false
    }
    if (this.layer.admit('request') !== undefined) {
      this.buffer.release(length)
      this.stats.skippedAtLimit++
      return false
    }
    this.stats.inFlight++
    const copy = new MirrorTry(call, this.layer.service, ex, this.chain)
    const q = call.path.indexOf('?')
    const pick: PickRequest = { headers, clientAddress: call.clientAddress, search: q === -1 ? '' : call.path.slice(q), tried: undefined }
    const method = (req.method ?? 'GET') as Dispatcher.HttpMethod
    const outgoing: MirrorRequest = { pick, method, path: call.path, headers, forwarding, copy }
    if (length === 0 || buffered !== undefined) {
      const body = length === 0 ? null : buffered ?? null
      setImmediate(() => { this.send(outgoing, body, length) })
      return true
    }
    this.copyBody(req, length, (body) => {
      if (body === undefined) {
        this.stats.skippedBody++
        this.release(length)
      } else {
        this.send(outgoing, body, length)
      }
    })
    return true
  }

  /** Collects the body beside the primary's stream; `done(undefined)` when it did not arrive whole. */
  private copyBody (req: IncomingMessage, length: number, done: (body: Buffer | undefined) => void): void {
    if (req.readableEnded || req.destroyed) { done(undefined); return }
    // Paused, so adding a listener does not start the flow before the primary listens too.
    req.pause()
    const body = Buffer.allocUnsafe(length)
    let received = 0
    let over = false
    const onData = (chunk: Buffer): void => {
      if (received + chunk.length > length) { over = true; return }
      chunk.copy(body, received)
      received += chunk.length
    }
    const finish = (): void => {
      req.removeListener('data', onData)
      req.removeListener('end', onEnd)
      req.removeListener('close', onClose)
      done(!over && received === length ? body : undefined)
    }
    const onEnd = (): void => { finish() }
    const onClose = (): void => { finish() }
    req.on('data', onData)
    req.once('end', onEnd)
    req.once('close', onClose)
  }

  /** `bytes`: what the body holds of the gateway's mirror buffer, given back when the request ends. */
  private send (m: MirrorRequest, body: Buffer | null, bytes: number): void {
    const target = this.layer.pick(m.pick)
    if (target === undefined || this.layer.degraded?.() === true) {
      // No usable endpoint, or only one the service layer gave out in panic: not sent.
      if (target !== undefined) this.layer.report(target, NOT_SENT)
      this.stats.skippedUnavailable++
      this.release(bytes)
      return
    }
    this.stats.sent++
    m.copy.started(target.label)
    // Built once the endpoint is known: the policies' headers (trace context) are this copy's own.
    const headers = upstreamRequestHeaders(m.headers, m.forwarding, m.copy)
    headers.push(MIRROR_HEADER, '1')
    const handler = new DiscardHandler(this, target, bytes, this.settings.timeoutMs, m.copy)
    const opts: Dispatcher.DispatchOptions = { path: m.path, method: m.method, headers, body, headersTimeout: this.settings.timeoutMs, bodyTimeout: this.settings.timeoutMs }
    try {
      target.pool.dispatch(opts, handler)
    } catch (err) {
      handler.fail(err as Error)
    }
  }

  /** Called once per dispatched mirror request (by its handler). */
  finished (target: EndpointTarget, status: number, gatewayError: boolean, latencyMs: number, bytes: number): void {
    this.layer.report(target, { status, gatewayError, latencyMs })
    if (gatewayError || status >= 500) this.stats.failed++
    else this.stats.completed++
    this.release(bytes)
  }

  private release (bytes: number): void {
    this.stats.inFlight--
    this.buffer.release(bytes)
    this.layer.release('request')
  }
}
