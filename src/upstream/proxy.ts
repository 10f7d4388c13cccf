// Endpoint layer, forwarding: one request to the endpoint the service layer picked,
// streamed both ways on the endpoint's undici Pool. It writes nothing of its own to the
// client: a failure before the response started goes back to the route layer (which
// answers, or later retries), and every end is reported to it.
//
// Why undici directly and not @fastify/reply-from: pools must outlive a config version and
// be chosen per request by our balancer (reply-from binds one base URL per registration and
// owns its pools); and the raw dispatch API with undici's legacy handler callbacks forwards
// raw header buffers and body chunks without a Readable per response, the largest share of
// the gap between reply-from (0.79x) and the Node ceiling.
import type { IncomingMessage, ServerResponse, IncomingHttpHeaders } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Dispatcher } from 'undici'
import { fastmeshError, type FastmeshError } from '../errors.js'
import { bodyUnread } from '../gateway/respond.js'
import type { EndpointTarget } from './endpoint-pool.js'
import type { UpstreamHeadersEditor } from '../../plugins/types.js'

/** Request headers that describe one hop and never travel further (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings',
  // Node answers `Expect: 100-continue` itself; undici refuses to send it.
  'expect'
])

/** Client-supplied forwarding headers: replaced unless the gateway trusts its client. */
const FORWARDING = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded'])

/** How a route forwards: fixed when the version is built. */
export interface ForwardSettings {
  readonly bodyTimeoutMs: number
  readonly rewriteHost: string | undefined
  readonly trustForwarded: boolean
  /** `http` or `https`: what the client used to reach us. */
  readonly proto: string
}

/** One forwarded request: what differs per request. */
export interface UpstreamCall {
  readonly requestId: string
  /** Path (and query) to request upstream. */
  readonly path: string
  readonly editors: UpstreamHeadersEditor[] | null
  /** Headers that plugins set on the Fastify reply; they win over the upstream's. */
  readonly replyHeaders: Record<string, unknown> | null
  /** Inbound mesh calls: the caller's verified SPIFFE ID, sent as X-Forwarded-Client-Cert. */
  readonly clientCert: string | undefined
  /** Time for this try to get response headers (the route's per-try timeout, or what is left of its whole-request timeout). */
  readonly headersTimeoutMs: number
  /** The request body, buffered so a retry can send it again; undefined: stream it from the client. */
  readonly body: Buffer | undefined
  /** The client's address (read when the exchange began), for X-Forwarded-For. */
  readonly clientAddress: string
  /** Header names the gateway's policies set on this try (trace context): the client's copies are dropped. */
  readonly ownedHeaders?: ReadonlySet<string> | undefined
  /** Pushes the policies' headers for this try (`name, value` pairs) onto the upstream request's. */
  pushHeaders?(out: string[]): void
}

/** One try on the endpoint layer, as its caller holds it. */
export interface TryHandle {
  /**
   * Ends the try with `err`: the request to the upstream is aborted and, when no response
   * was relayed yet, the observer is told `failed` (at once, even if the try still waits
   * for a connection).
   */
  abort(err: Error): void
}

/** The error a try the route layer's timer ended carries (classified as a timeout). */
export function tryTimeoutError (ms: number): Error & { code: string } {
  return Object.assign(new Error(`no response headers within ${ms} ms`), { code: 'UND_ERR_HEADERS_TIMEOUT' })
}

/**
 * A response dropped for a retry is read to its end when what is left of it is at most this
 * big, so its connection goes back to the pool; a longer one closes its connection.
 */
const DRAIN_MAX_BYTES = 64 * 1024

/** The route layer's side of a forward: told of a failure it may still answer, and of every end. */
export interface ForwardObserver<C extends UpstreamCall = UpstreamCall> {
  /** Response headers arrived (nothing relayed yet): false drops this response (the route layer retries). */
  responded(call: C, status: number): boolean
  /** Nothing was sent to the client yet: the route layer answers (or retries). */
  failed(call: C, err: FastmeshError): void
  /** The exchange is over: `status` as relayed (499: the client left), `error` when it broke. */
  ended(call: C, status: number, error: string | undefined): void
  /** An exception that is neither the upstream's nor the client's (a plugin's header edit, a bug): the exchange ends as a fault. */
  faulted(call: C, where: string, err: unknown): void
}

function connectionTokens (value: string | string[] | undefined): string[] | undefined {
  if (value === undefined) return undefined
  const v = Array.isArray(value) ? value.join(',') : value
  if (v === '' || v === 'keep-alive' || v === 'close' || v === 'Keep-Alive') return undefined
  return v.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '')
}

/** The gateway's own header namespace (`x-fastmesh-mirror` on requests; `x-fastmesh-overflow`, `x-fastmesh-fault` on answers). */
const GATEWAY_HEADER_PREFIX = 'x-fastmesh-'

/**
 * Builds the upstream request headers as a flat [name, value, ...] list.
 *
 * `x-fastmesh-*` headers are the gateway's to set: a client's are dropped at every entry
 * (edge, node outbound, per-upstream listeners), so a client cannot pass for mirrored
 * traffic. The one exception is an inbound mesh call (`call.clientCert`: the caller proved
 * a mesh identity over mTLS): that caller is a gateway that dropped its own client's and set
 * these itself, so they reach the local app as sent.
 */
export function upstreamRequestHeaders (headers: IncomingHttpHeaders, settings: ForwardSettings, call: UpstreamCall): string[] {
  const out: string[] = []
  const nominated = connectionTokens(headers.connection)
  const owned = call.ownedHeaders
  let xff: string | undefined
  let xfp: string | undefined
  let xfh: string | undefined
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    if (HOP_BY_HOP.has(name) || (nominated !== undefined && nominated.includes(name))) continue
    if (FORWARDING.has(name)) {
      if (!settings.trustForwarded) continue
      const v = Array.isArray(value) ? value.join(', ') : value
      if (name === 'x-forwarded-for') { xff = v; continue }
      if (name === 'x-forwarded-proto') { xfp = v; continue }
      if (name === 'x-forwarded-host') { xfh = v; continue }
    }
    if (name === 'host') {
      out.push('host', settings.rewriteHost ?? (value as string))
      continue
    }
    // Identity headers are only ever set by us, from a verified certificate.
    if (name === 'x-request-id' || name === 'x-forwarded-client-cert') continue
    if (call.clientCert === undefined && name.startsWith(GATEWAY_HEADER_PREFIX)) continue
    if (owned !== undefined && owned.has(name)) continue
    if (typeof value === 'string') out.push(name, value)
    else for (const v of value) out.push(name, v)
  }
  if (headers.host === undefined && settings.rewriteHost !== undefined) out.push('host', settings.rewriteHost)
  const client = call.clientAddress
  out.push('x-forwarded-for', xff !== undefined ? `${xff}, ${client}` : client)
  out.push('x-forwarded-proto', xfp ?? settings.proto)
  const host = xfh ?? headers.host
  if (host !== undefined) out.push('x-forwarded-host', host)
  out.push('x-request-id', call.requestId)
  if (call.clientCert !== undefined) out.push('x-forwarded-client-cert', `URI=${call.clientCert}`)
  call.pushHeaders?.(out)
  return out
}

function hasBody (req: IncomingMessage): boolean {
  const h = req.headers
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0')
}

function upstreamError (err: Error & { code?: string }, target: EndpointTarget, call: UpstreamCall): FastmeshError {
  if (err.code === 'UND_ERR_HEADERS_TIMEOUT') return fastmeshError('UPSTREAM_TIMEOUT', [target.label, target.endpoint.service, call.headersTimeoutMs], err)
  return fastmeshError('UPSTREAM_FAILURE', [target.label, target.endpoint.service, err.code ?? err.message], err)
}

/** Response headers from undici's raw buffers, hop-by-hop ones dropped, as a flat list. */
function responseHeaders (raw: Buffer[], call: UpstreamCall, statusCode: number): string[] {
  const out: string[] = []
  let nominated: string[] | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1')
    const lower = name.toLowerCase()
    if (lower === 'connection') { nominated = connectionTokens(raw[i + 1]!.toString('latin1')); continue }
    if (HOP_BY_HOP.has(lower) || lower === 'x-request-id') continue
    out.push(lower, raw[i + 1]!.toString('latin1'))
  }
  let headers = out
  if (nominated !== undefined) {
    const drop = nominated
    headers = []
    for (let i = 0; i < out.length; i += 2) if (!drop.includes(out[i]!)) headers.push(out[i]!, out[i + 1]!)
  }
  if (call.replyHeaders !== null || call.editors !== null) headers = applyEdits(headers, call, statusCode)
  headers.push('x-request-id', call.requestId)
  return headers
}

/** The union of two Vary values (field names compare case-insensitively; `*` covers all). */
export function mergeVary (a: string | string[], b: string | string[]): string {
  const names: string[] = []
  const seen = new Set<string>()
  for (const value of [a, b].flat()) {
    for (const raw of value.split(',')) {
      const name = raw.trim()
      if (name === '') continue
      if (name === '*') return '*'
      const key = name.toLowerCase()
      if (!seen.has(key)) { seen.add(key); names.push(name) }
    }
  }
  return names.join(', ')
}

/** Plugin edits need a map; only routes with response-side plugins pay for it. */
function applyEdits (flat: string[], call: UpstreamCall, statusCode: number): string[] {
  const bag: Record<string, string | string[] | undefined> = {}
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]!
    const cur = bag[k]
    bag[k] = cur === undefined ? flat[i + 1]! : Array.isArray(cur) ? [...cur, flat[i + 1]!] : [cur, flat[i + 1]!]
  }
  if (call.replyHeaders !== null) {
    for (const [k, v] of Object.entries(call.replyHeaders)) {
      const ours = Array.isArray(v) ? v.map(String) : String(v)
      // Vary lists what the answer depends on: the upstream's reasons and ours both hold.
      bag[k] = k === 'vary' && bag.vary !== undefined ? mergeVary(bag.vary, ours) : ours
    }
  }
  if (call.editors !== null) for (const edit of call.editors) edit(bag, statusCode)
  const out: string[] = []
  for (const [k, v] of Object.entries(bag)) {
    if (v === undefined) continue
    if (Array.isArray(v)) for (const x of v) out.push(k, x)
    else out.push(k, v)
  }
  return out
}

/**
 * Streams the exchange. Uses undici's (still supported) raw handler callbacks: they hand
 * over header buffers and body chunks with no per-request wrapper objects.
 */
class ForwardHandler<C extends UpstreamCall> implements Dispatcher.DispatchHandler, TryHandle {
  private abortUpstream: ((err: Error) => void) | undefined
  private resumeUpstream: (() => void) | undefined
  private status = 0
  private done = false
  /** Why the try was aborted before it reached a connection (undici's onConnect then aborts it). */
  private abortedWith: Error | undefined
  /** Bytes of a response dropped for a retry still allowed before the connection is given up; -1: not dropped. */
  private drainLeft = -1
  private readonly onClientClose = (): void => {
    if (this.done) return
    this.finish(499, 'client closed the connection')
    this.abortUpstream?.(new Error('client closed the connection'))
  }

  private readonly onDrain = (): void => { this.resumeUpstream?.() }

  constructor (
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly target: EndpointTarget,
    private readonly call: C,
    private readonly observer: ForwardObserver<C>
  ) {
    res.once('close', this.onClientClose)
  }

  abort (err: Error): void {
    if (this.done) {
      // A dropped response being drained: give its connection up too.
      if (this.drainLeft >= 0) { this.drainLeft = -1; this.abortUpstream?.(err) }
      return
    }
    if (this.abortUpstream !== undefined) { this.abortUpstream(err); return }
    // Still queued for a connection (none free under the pool's or the circuit's cap): the try
    // ends now, and says nothing about the endpoint; undici's onConnect aborts it later.
    this.abortedWith = err
    this.onError(Object.assign(err, { neverSent: true }))
  }

  onConnect (abort: (err?: Error) => void): void {
    this.abortUpstream = abort
    if (this.done && this.drainLeft < 0) abort(this.abortedWith ?? new Error('client closed the connection'))
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (this.done) return this.drainLeft >= 0
    // 1xx informational responses (other than 101) are not relayed.
    if (statusCode < 200) return true
    if (!this.observer.responded(this.call, statusCode)) {
      // Dropped for a retry. A short rest is read and discarded so the connection is reused;
      // a long or unknown one would hold the connection: it is closed instead.
      this.done = true
      this.res.removeListener('close', this.onClientClose)
      const length = declaredLength(rawHeaders)
      if (length !== undefined && length <= DRAIN_MAX_BYTES) {
        this.drainLeft = length
        return true
      }
      this.abortUpstream?.(new Error(`response ${statusCode} dropped for a retry`))
      return false
    }
    let headers: string[]
    try {
      headers = responseHeaders(rawHeaders, this.call, statusCode)
    } catch (err) {
      // A route plugin's edit of the response headers failed: not the upstream's fault.
      this.done = true
      this.res.removeListener('close', this.onClientClose)
      this.abortUpstream?.(new Error('response dropped: its header edit failed'))
      this.observer.faulted(this.call, 'response header edit', err)
      return false
    }
    this.status = statusCode
    this.resumeUpstream = resume
    // The upstream answers before the client's body has all arrived (an early 413 or 503):
    // undici may let go of the body stream, so the rest could never be read and the
    // connection could not carry another request. Say so now (Connection: close).
    if (bodyUnread(this.req)) this.res.shouldKeepAlive = false
    this.res.writeHead(statusCode, statusText, headers)
    return true
  }

  onData (chunk: Buffer): boolean {
    if (this.done) {
      if (this.drainLeft < 0) return false
      this.drainLeft -= chunk.length
      if (this.drainLeft < 0) this.abortUpstream?.(new Error('dropped response longer than declared'))
      return this.drainLeft >= 0
    }
    if (this.res.write(chunk)) return true
    this.res.once('drain', this.onDrain)
    return false
  }

  onComplete (): void {
    if (this.done) { this.drainLeft = -1; return }
    this.res.end()
    this.finish(this.status, undefined)
  }

  onError (err: Error): void {
    if (this.done) { this.drainLeft = -1; return }
    const e = upstreamError(err, this.target, this.call)
    if (this.res.headersSent) {
      // The upstream failed mid-response: cut the client's exchange so the truncation shows.
      this.res.destroy(e)
      this.finish(this.status, e.code)
      return
    }
    this.done = true
    this.res.removeListener('close', this.onClientClose)
    this.observer.failed(this.call, e)
  }

  onUpgrade (statusCode: number, rawHeaders: Buffer[] | string[] | null, upstream: Duplex): void {
    // undici calls this outside any try: a failure here must end this tunnel only.
    try {
      this.tunnel(statusCode, rawHeaders, upstream)
    } catch (err) {
      upstream.destroy()
      this.req.socket?.destroy()
      if (this.done) return
      this.done = true
      this.res.removeListener('close', this.onClientClose)
      this.observer.faulted(this.call, 'upgrade', err)
    }
  }

  private tunnel (statusCode: number, rawHeaders: Buffer[] | string[] | null, upstream: Duplex): void {
    const client = this.req.socket
    if (client === null || client.destroyed) { upstream.destroy(); this.finish(499, 'client closed the connection'); return }
    // Connection and Upgrade stay (they make the 101); the rest is treated as any response:
    // the upstream's x-request-id replaced by ours, response-side plugin edits applied.
    const raw = rawHeaders ?? []
    let headers: string[] = []
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toString().toLowerCase()
      if (name !== 'x-request-id') headers.push(name, raw[i + 1]!.toString())
    }
    if (this.call.replyHeaders !== null || this.call.editors !== null) headers = applyEdits(headers, this.call, statusCode)
    headers.push('x-request-id', this.call.requestId)
    let head = `HTTP/1.1 ${statusCode} Switching Protocols\r\n`
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`
    head += '\r\n'
    this.res.detachSocket(client)
    this.res.removeListener('close', this.onClientClose)
    client.write(head)
    const pending = (this.req as IncomingMessage & { upgradeHead?: Buffer }).upgradeHead
    if (pending !== undefined && pending.length > 0) upstream.write(pending)
    upstream.pipe(client)
    client.pipe(upstream)
    const close = (): void => { upstream.destroy(); client.destroy() }
    upstream.on('error', close).on('close', close)
    client.on('error', close).on('close', close)
    this.finish(101, undefined)
  }

  private finish (status: number, error: string | undefined): void {
    if (this.done) return
    this.done = true
    this.res.removeListener('close', this.onClientClose)
    this.observer.ended(this.call, status, error)
  }
}

/** The Content-Length of a response from undici's raw header buffers, when it has one. */
function declaredLength (raw: Buffer[]): number | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === 14 && name.toString('latin1').toLowerCase() === 'content-length') {
      const n = Number(raw[i + 1]!.toString('latin1'))
      return Number.isSafeInteger(n) && n >= 0 ? n : undefined
    }
  }
  return undefined
}

/**
 * Sends the request to `target` and streams the answer back on `res`. The try's time limit
 * is the caller's (TryHandle.abort); `call.headersTimeoutMs` is only undici's backstop.
 */
export function forward<C extends UpstreamCall> (req: IncomingMessage, res: ServerResponse, headers: IncomingHttpHeaders, target: EndpointTarget, settings: ForwardSettings, call: C, observer: ForwardObserver<C>): TryHandle {
  // Only a request the listener took as an upgrade (Connection: upgrade) is tunnelled; a bare
  // Upgrade header on an ordinary request is hop-by-hop and dropped like the others.
  const isUpgrade = (req as IncomingMessage & { upgrade?: boolean }).upgrade === true && headers.upgrade !== undefined && req.method === 'GET'
  const handler = new ForwardHandler(req, res, target, call, observer)
  const opts: Dispatcher.DispatchOptions = {
    path: call.path,
    method: req.method as Dispatcher.HttpMethod,
    headers: upstreamRequestHeaders(headers, settings, call),
    body: call.body ?? (!isUpgrade && hasBody(req) ? req : null),
    // The caller's timer ends the try on time; undici's (coarse) one only backs it up.
    headersTimeout: call.headersTimeoutMs > 0 ? call.headersTimeoutMs + BACKSTOP_MS : 0,
    bodyTimeout: settings.bodyTimeoutMs
  }
  if (isUpgrade) opts.upgrade = String(headers.upgrade)
  try {
    target.pool.dispatch(opts, handler)
  } catch (err) {
    handler.onError(err as Error)
  }
  return handler
}

/** How much later than the caller's timer undici's own headers timeout fires. */
const BACKSTOP_MS = 2000
