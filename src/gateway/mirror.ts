// Route layer, shadow traffic: a copy of a share of a route's requests goes to a mirror
// destination (its own service layer and endpoint pools), fire-and-forget. The mirror's
// answer is discarded, its requests in flight are bounded, and nothing it does (hang, fail,
// refuse) reaches the primary exchange: the copy of a body is taken beside the primary's
// stream, never in front of it.
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import type { Dispatcher } from 'undici'
import type { PickRequest, ServiceLayer } from '../balancer/types.js'
import { defaultRandom, type RandomSource } from '../balancer/random.js'
import { stateKind } from '../state/registry.js'
import type { EndpointTarget } from '../upstream/endpoint-pool.js'
import { upstreamRequestHeaders, type ForwardSettings, type UpstreamCall } from '../upstream/proxy.js'

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
  /** Not mirrored: `maxConcurrent` in flight already, or the mirror service refused admission. */
  skippedAtLimit = 0
  /** Not mirrored: a body without Content-Length, above maxBodyBytes, or cut off by the client. */
  skippedBody = 0
  /** Mirrored requests that got no answer, a 5xx, or timed out (also: no mirror endpoint). */
  failed = 0
  /** Mirrored requests answered with a status below 500. */
  completed = 0
  inFlight = 0

  snapshot (): { sent: number, skippedAtLimit: number, skippedBody: number, failed: number, completed: number, inFlight: number } {
    return { sent: this.sent, skippedAtLimit: this.skippedAtLimit, skippedBody: this.skippedBody, failed: this.failed, completed: this.completed, inFlight: this.inFlight }
  }
}

export const mirrorStatsKind = stateKind('mirrorStats', 'route', () => new MirrorStats())

/** The length a request declares: 0 without a body, undefined when unknown (chunked) or malformed. */
function declaredLength (headers: IncomingHttpHeaders): number | undefined {
  if (headers['transfer-encoding'] !== undefined) return undefined
  const cl = headers['content-length']
  if (cl === undefined) return 0
  return /^[0-9]{1,15}$/.test(cl) ? Number(cl) : undefined
}

/** Receives the mirror's answer and throws it away; ends the mirrored request exactly once. */
class DiscardHandler implements Dispatcher.DispatchHandler {
  private status = 0
  private done = false
  private abort: ((err: Error) => void) | undefined
  private readonly timer: NodeJS.Timeout
  private readonly started = performance.now()

  constructor (private readonly mirror: Mirror, private readonly target: EndpointTarget, timeoutMs: number) {
    // One bound on the whole exchange (headers and body): a hanging mirror frees its slot.
    this.timer = setTimeout(() => { this.fail(new Error('mirror timeout')) }, timeoutMs)
    this.timer.unref()
  }

  onConnect (abort: (err?: Error) => void): void {
    this.abort = abort
    if (this.done) abort(new Error('mirror abandoned'))
  }

  onHeaders (statusCode: number): boolean {
    if (statusCode >= 200) this.status = statusCode
    return true
  }

  onData (): boolean {
    return true
  }

  onComplete (): void {
    this.end(false)
  }

  onError (): void {
    this.end(true)
  }

  onUpgrade (_statusCode: number, _headers: unknown, socket: { destroy: () => void }): void {
    socket.destroy()
    this.end(true)
  }

  fail (err: Error): void {
    if (this.done) return
    this.abort?.(err)
    this.end(true)
  }

  private end (gatewayError: boolean): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.timer)
    this.mirror.finished(this.target, gatewayError ? 0 : this.status, gatewayError, performance.now() - this.started)
  }
}

/** One route's mirror. Call `maybeMirror` before the primary is forwarded (see there). */
export class Mirror {
  private readonly random: RandomSource

  constructor (
    readonly layer: ServiceLayer,
    private readonly settings: MirrorSettings,
    readonly stats: MirrorStats = new MirrorStats()
  ) {
    this.random = settings.random ?? defaultRandom
  }

  /**
   * Sends a copy of the request to the mirror when it is sampled and allowed; returns whether
   * it will. It must run before anything reads the request body (before `forward`): it pauses
   * the request and listens beside the primary, which resumes the stream when it starts
   * sending it (undici does); each chunk then reaches both, and back-pressure stays the
   * primary's alone. The copy goes out once the body has fully arrived (it is at most
   * `maxBodyBytes`); a bodyless request, or one whose body the route layer buffered
   * (`call.body`), goes out on the next turn of the event loop, after the primary's dispatch.
   */
  maybeMirror (req: IncomingMessage, headers: IncomingHttpHeaders, forwarding: ForwardSettings, call: UpstreamCall): boolean {
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
    if (this.stats.inFlight >= s.maxConcurrent || this.layer.admit('request') !== undefined) {
      this.stats.skippedAtLimit++
      return false
    }
    this.stats.inFlight++
    const out = upstreamRequestHeaders(headers, forwarding, call)
    out.push(MIRROR_HEADER, '1')
    const q = call.path.indexOf('?')
    const pick: PickRequest = { headers, clientAddress: call.clientAddress, search: q === -1 ? '' : call.path.slice(q), tried: undefined }
    const method = (req.method ?? 'GET') as Dispatcher.HttpMethod
    if (length === 0 || buffered !== undefined) {
      const body = length === 0 ? null : buffered ?? null
      setImmediate(() => { this.send(pick, method, call.path, out, body) })
      return true
    }
    this.copyBody(req, length, (body) => {
      if (body === undefined) {
        this.stats.skippedBody++
        this.release()
      } else {
        this.send(pick, method, call.path, out, body)
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

  private send (pick: PickRequest, method: Dispatcher.HttpMethod, path: string, headers: string[], body: Buffer | null): void {
    const target = this.layer.pick(pick)
    if (target === undefined) {
      this.stats.failed++
      this.release()
      return
    }
    this.stats.sent++
    const handler = new DiscardHandler(this, target, this.settings.timeoutMs)
    const opts: Dispatcher.DispatchOptions = { path, method, headers, body, headersTimeout: this.settings.timeoutMs, bodyTimeout: this.settings.timeoutMs }
    try {
      target.pool.dispatch(opts, handler)
    } catch (err) {
      handler.fail(err as Error)
    }
  }

  /** Called once per dispatched mirror request (by its handler). */
  finished (target: EndpointTarget, status: number, gatewayError: boolean, latencyMs: number): void {
    this.layer.report(target, { status, gatewayError, latencyMs })
    if (gatewayError || status >= 500) this.stats.failed++
    else this.stats.completed++
    this.release()
  }

  private release (): void {
    this.stats.inFlight--
    this.layer.release('request')
  }
}
