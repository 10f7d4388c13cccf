// Listeners: the long-lived sockets of a gateway. Each tags a request with where it came
// in (edge, node outbound, per-upstream, inbound mTLS) and hands it to the current version.
import { createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Duplex } from 'node:stream'
import { once } from 'node:events'
import { randomUUID } from 'node:crypto'
import { fastmeshError, type FastmeshError, type ResponseError } from '../errors.js'
import { tagEntry, type Entry, type GatewayVersion } from './app.js'
import { hostHeaderProblem } from './host-header.js'
import { requestIdOf } from './request-id.js'
import { answerOnSocket, writeError } from './respond.js'
import type { MeshTls } from '../identity/mesh-tls.js'
import { peerIdentity } from '../identity/mesh-tls.js'

export interface ListenerLimits {
  readonly maxHeaderBytes: number
  readonly keepAliveTimeoutMs: number
  /** Time to receive the request headers (0: none); capped by requestTimeoutMs. */
  readonly headerTimeoutMs: number
  readonly requestTimeoutMs: number
}

export type CurrentVersion = () => GatewayVersion

// Node checks its header and request timeouts on this interval (30 s by default, so a slow
// client was held up to 30 s past expiry); checking often keeps the overrun under a second.
const TIMEOUT_CHECK_INTERVAL_MS = 500

/** The Node server options every listener shares. */
function serverOptions (limits: ListenerLimits): ServerOptions {
  return {
    maxHeaderSize: limits.maxHeaderBytes,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // Node refuses a header timeout longer than the whole-request timeout, which bounds headers too.
    headersTimeout: limits.requestTimeoutMs > 0 && (limits.headerTimeoutMs === 0 || limits.headerTimeoutMs > limits.requestTimeoutMs) ? limits.requestTimeoutMs : limits.headerTimeoutMs,
    connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
    // Node's own answer to a missing Host is an empty 400: we answer it (listenerRefusal).
    requireHostHeader: false,
    noDelay: true
  }
}

/** A refusal of a parsed request: the usual error response, and the connection closes after it. */
function refuse (req: IncomingMessage, res: ServerResponse, err: ResponseError): void {
  // The body was not read: closing is simpler and safer than draining it.
  res.shouldKeepAlive = false
  res.setHeader('connection', 'close')
  writeError(res, err, requestIdOf(req))
}

function isAbsoluteForm (url: string | undefined): boolean {
  return url !== undefined && (url.startsWith('http://') || url.startsWith('https://'))
}

/**
 * What every listener refuses before a config version sees the request, or undefined:
 * an HTTP version other than 1.x (Node parses `HTTP/2.0` and `HTTP/0.9` as requests) and a
 * bad Host (RFC 9112 §3.2: 400, before any route or upstream is chosen).
 */
function listenerRefusal (req: IncomingMessage): FastmeshError | undefined {
  if (req.httpVersionMajor !== 1) return fastmeshError('HTTP_VERSION_NOT_SUPPORTED', [`HTTP/${req.httpVersion}`])
  const problem = hostHeaderProblem(req.rawHeaders, { httpVersion: req.httpVersion, absoluteForm: isAbsoluteForm(req.url) })
  return problem === undefined ? undefined : fastmeshError('BAD_HOST', [problem])
}

const TOKEN_THEN_SPACE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64} /
const IN_REQUEST_TARGET = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ \r\n]*$/

interface ParserError extends Error {
  code?: string
  rawPacket?: Buffer
  bytesParsed?: number
}

/**
 * The line the parser was in when it failed: from the last line break before the failure
 * point to it. Only the current chunk is known, so a line begun in an earlier chunk shows
 * only its tail (then a long request target reads as a long header: 431, not 414).
 */
function failedLine (err: ParserError): string {
  const raw = err.rawPacket
  if (raw === undefined) return ''
  const end = Math.min(err.bytesParsed ?? raw.length, raw.length)
  const start = raw.lastIndexOf(0x0a, end - 1) + 1
  return raw.subarray(start, Math.max(start, end)).toString('latin1')
}

/** The first line of the failed message, for messages (at most 64 characters). */
function requestLine (err: ParserError): string {
  const raw = err.rawPacket
  if (raw === undefined) return ''
  const end = Math.min(err.bytesParsed ?? raw.length, raw.length)
  const start = raw.lastIndexOf(0x0a, end - 1) + 1
  const eol = raw.indexOf(0x0d, start)
  return raw.subarray(start, eol === -1 ? Math.min(raw.length, start + 64) : Math.min(eol, start + 64)).toString('latin1')
}

/** The answer to what Node's parser refused or timed out; undefined: a broken socket, no answer. */
function clientErrorAnswer (err: ParserError, socket: Duplex, limits: ListenerLimits): FastmeshError | undefined {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT': {
      const headersDone = (socket as { parser?: { incoming?: unknown } }).parser?.incoming != null
      // Which limit fired: headerTimeout, unless the headers are in or requestTimeout is the shorter.
      const byHeaderTimeout = !headersDone && limits.headerTimeoutMs > 0 && serverOptions(limits).headersTimeout === limits.headerTimeoutMs
      return fastmeshError('REQUEST_TIMEOUT', [byHeaderTimeout
        ? `the headers took longer than limits.headerTimeout (${limits.headerTimeoutMs} ms)`
        : `the whole request took longer than limits.requestTimeout (${limits.requestTimeoutMs} ms)`])
    }
    case 'HPE_HEADER_OVERFLOW':
      return IN_REQUEST_TARGET.test(failedLine(err))
        ? fastmeshError('URI_TOO_LONG', [limits.maxHeaderBytes])
        : fastmeshError('REQUEST_HEADERS_TOO_LARGE', [limits.maxHeaderBytes])
    case 'HPE_INVALID_VERSION':
      return fastmeshError('HTTP_VERSION_NOT_SUPPORTED', [JSON.stringify(requestLine(err).split(' ').pop() ?? '')])
    case 'HPE_PAUSED_H2_UPGRADE':
      return fastmeshError('HTTP_VERSION_NOT_SUPPORTED', ['HTTP/2 (connection preface)'])
    case 'HPE_INVALID_METHOD': {
      // A well-formed but unknown method (Node accepts only http.METHODS) is 501; noise is 400.
      const method = TOKEN_THEN_SPACE.exec(requestLine(err))?.[0]
      if (method !== undefined) return fastmeshError('METHOD_NOT_IMPLEMENTED', [method.trimEnd()])
    }
  }
  if (err.code?.startsWith('HPE_') === true) return fastmeshError('BAD_REQUEST', [`${err.message.replace(/^Parse Error: /, '')} (${err.code})`])
  return undefined
}

/**
 * Answers what Node's parser refuses (bad syntax, too-large headers, unknown versions and
 * methods) and the header and request timeouts with our JSON body. The request id is fresh:
 * nothing the client sent can be trusted here.
 */
function onClientError (limits: ListenerLimits) {
  return (err: ParserError, socket: Duplex): void => {
    const answer = clientErrorAnswer(err, socket, limits)
    const inFlight = (socket as { _httpMessage?: ServerResponse | null })._httpMessage
    const headersDone = (socket as { parser?: { incoming?: unknown } }).parser?.incoming != null
    // No status once a response has started, nor after the current request was answered
    // (its body still arriving): a second response would be taken for another request's.
    if (answer === undefined || inFlight?.headersSent === true || (headersDone && inFlight == null)) {
      socket.destroy()
      return
    }
    answerOnSocket(socket, answer, randomUUID())
  }
}

/**
 * A plain HTTP listener. `entry` tags each request (undefined: the edge). Absolute-form
 * request targets (`GET http://orders/x`, as HTTP_PROXY clients send) become origin form
 * with the authority as Host.
 */
export function httpListener (limits: ListenerLimits, current: CurrentVersion, entry: Entry | undefined): Server {
  const server = createServer(serverOptions(limits), (req: IncomingMessage, res: ServerResponse) => {
    const refused = listenerRefusal(req)
    if (refused !== undefined) { refuse(req, res, refused); return }
    // Every listener, the edge too: a server must accept absolute form (RFC 9112 §3.2.2), and
    // left as is `GET http://host/x` would be routed and forwarded as the path `/host/x`.
    toOriginForm(req)
    if (entry !== undefined) tagEntry(req, entry)
    current().handle(req, res)
  })
  // Upgraded sockets (WebSocket tunnels) leave Node's HTTP connection tracking: without
  // this, closeAllConnections() would leave them open and close() would wait for them forever.
  const tunnels = new Set<Duplex>()
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    tunnels.add(socket)
    socket.once('close', () => { tunnels.delete(socket) })
    const refused = listenerRefusal(req)
    if (refused !== undefined) { answerOnSocket(socket, refused, requestIdOf(req)); return }
    toOriginForm(req)
    if (entry !== undefined) tagEntry(req, entry)
    current().upgrade(req, socket, head)
  })
  const closeAllConnections = server.closeAllConnections.bind(server)
  server.closeAllConnections = () => {
    closeAllConnections()
    for (const socket of tunnels) socket.destroy()
  }
  guard(server, limits, tunnels)
  return server
}

/** Sends `100 Continue` when the body is first read (Readable calls `_read` for the first time), unless an answer began. */
function continueOnFirstRead (req: IncomingMessage, res: ServerResponse): void {
  const stream = req as IncomingMessage & { _read(size: number): void }
  const read = stream._read
  stream._read = function (this: IncomingMessage, size: number) {
    stream._read = read
    if (!res.headersSent && !res.writableEnded) res.writeContinue()
    read.call(this, size)
  }
}

/** The listener-level answers every HTTP server here gives: parser errors, Expect, CONNECT. */
function guard (server: Server | HttpsServer, limits: ListenerLimits, tunnels: Set<Duplex>): void {
  server.on('clientError', onClientError(limits))
  // Node answers an empty 417 itself unless this is listened to.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const expect = String(req.headers.expect)
    refuse(req, res, listenerRefusal(req) ?? fastmeshError('EXPECTATION_FAILED', [expect.length > 64 ? `${expect.slice(0, 64)}…` : expect]))
  })
  // `Expect: 100-continue`: left to Node, the 100 goes out before the request is even seen, so
  // a client is invited to send a body the gateway then refuses (413 on its declared length,
  // 401, 429, no route). The 100 goes out instead when something first reads the body (a try,
  // the retry buffer); a refusal comes without it, and Node closes the connection after it.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    continueOnFirstRead(req, res)
    server.emit('request', req, res)
  })
  // Without a listener Node closes a CONNECT without a word; the gateway does not tunnel.
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    tunnels.add(socket)
    socket.once('close', () => { tunnels.delete(socket) })
    answerOnSocket(socket, fastmeshError('METHOD_NOT_IMPLEMENTED', ['CONNECT']), requestIdOf(req))
  })
}

export function toOriginForm (req: IncomingMessage): void {
  const url = req.url
  if (url === undefined || !(url.startsWith('http://') || url.startsWith('https://'))) return
  try {
    const u = new URL(url)
    req.headers.host = u.host
    req.url = u.pathname + u.search
  } catch {
    // Left as is: routing answers 400/404.
  }
}

export interface InboundOptions {
  readonly limits: ListenerLimits
  readonly tls: MeshTls
  /** The gateway's own identity: its certificate answers SNI names it does not serve. */
  readonly selfIdentity: string
  readonly mtls: 'strict' | 'permissive'
}

export interface InboundListener {
  /** What listens: the TLS server itself (strict), or a front that sniffs TLS vs plaintext (permissive). */
  readonly server: NetServer
  /** Applies rotated roots or the gateway's own leaf to new connections. */
  refreshDefaultContext(): void
  /** Closes both inner servers' connections (shutdown). */
  closeAllConnections(): void
}

const peerCache = new WeakMap<object, { service: string, uri: string } | null>()

/**
 * The inbound mTLS listener: the certificate is chosen by SNI (the destination local
 * service); the client must present a chain to the mesh roots (strict), and its URI SAN is
 * the caller identity handed to authorization.
 */
export function inboundListener (opts: InboundOptions, current: CurrentVersion): InboundListener {
  const { tls, selfIdentity, limits } = opts
  const defaults = (): { cert: string, key: string, ca: string[] } => {
    const leaf = tls.provider.leaf(selfIdentity)
    if (leaf === undefined) throw fastmeshError('IDENTITY_UNAVAILABLE', [selfIdentity, tls.provider.kind, 'no leaf certificate for the gateway'])
    return { cert: leaf.certPem, key: leaf.keyPem, ca: [...tls.provider.roots().rootsPem] }
  }
  const tag = (req: IncomingMessage, encrypted: boolean): void => {
    const socket = req.socket as TLSSocket
    let peer: { service: string, uri: string } | undefined
    let service: string
    if (encrypted) {
      let cached = peerCache.get(socket)
      if (cached === undefined) {
        const id = socket.authorized ? peerIdentity(socket.getPeerCertificate(), tls.trustDomain) : undefined
        cached = id !== undefined ? { service: id.service, uri: id.uri } : null
        peerCache.set(socket, cached)
      }
      peer = cached ?? undefined
      // SNI names the destination; a client without SNI means the gateway's own identity.
      service = typeof socket.servername === 'string' && socket.servername !== '' ? socket.servername : selfIdentity
    } else {
      const host = req.headers.host ?? ''
      service = host.replace(/:[0-9]+$/, '').replace(/\.mesh$/, '')
    }
    tagEntry(req, { kind: 'inbound', service, peer })
  }
  const handle = (req: IncomingMessage, res: ServerResponse, encrypted: boolean): void => {
    const refused = listenerRefusal(req)
    if (refused !== undefined) { refuse(req, res, refused); return }
    tag(req, encrypted)
    current().handle(req, res)
  }
  // As on the plain listeners: tunnels leave Node's connection tracking, so track them here.
  const tunnels = new Set<Duplex>()
  const upgrade = (encrypted: boolean) => (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    tunnels.add(socket)
    socket.once('close', () => { tunnels.delete(socket) })
    const refused = listenerRefusal(req)
    if (refused !== undefined) { answerOnSocket(socket, refused, requestIdOf(req)); return }
    tag(req, encrypted)
    current().upgrade(req, socket, head)
  }
  const tlsServer: HttpsServer = createHttpsServer({
    ...defaults(),
    SNICallback: tls.sniCallback(selfIdentity),
    requestCert: true,
    rejectUnauthorized: opts.mtls === 'strict',
    minVersion: 'TLSv1.3',
    ALPNProtocols: ['http/1.1'],
    ...serverOptions(limits),
    // A handshake that crawls holds a connection as slow headers do (Node's default is 120 s).
    handshakeTimeout: serverOptions(limits).headersTimeout || 120_000
  }, (req, res) => { handle(req, res, true) })
  guard(tlsServer, limits, tunnels)
  tlsServer.on('upgrade', upgrade(true))
  tls.guardInbound(tlsServer) // refused handshakes are logged (rate-limited) and counted; more than one URI SAN is refused

  let plain: Server | undefined
  let server: NetServer = tlsServer
  if (opts.mtls === 'permissive') {
    // Migration: plaintext on the same port. The first byte tells: 0x16 starts a TLS handshake.
    plain = createServer(serverOptions(limits), (req, res) => { handle(req, res, false) })
    guard(plain, limits, tunnels)
    plain.on('upgrade', upgrade(false))
    const inner = plain
    // Until the first byte no inner server times the connection: cut a silent one here.
    const silentMs = serverOptions(limits).headersTimeout ?? 0
    server = createNetServer({ noDelay: true }, (socket: Socket) => {
      socket.once('error', () => { socket.destroy() })
      const silent = (): void => { socket.destroy() }
      if (silentMs > 0) socket.setTimeout(silentMs, silent)
      socket.once('data', (chunk: Buffer) => {
        socket.setTimeout(0)
        socket.removeListener('timeout', silent)
        socket.pause()
        socket.unshift(chunk)
        ;(chunk[0] === 0x16 ? tlsServer : inner).emit('connection', socket)
        process.nextTick(() => { socket.resume() })
      })
    })
  }
  return {
    server,
    refreshDefaultContext: () => { tlsServer.setSecureContext(defaults()) },
    closeAllConnections: () => {
      tlsServer.closeAllConnections()
      plain?.closeAllConnections()
      for (const socket of tunnels) socket.destroy()
    }
  }
}

/** Binds a server; a busy or forbidden address becomes FASTMESH_ERR_LISTEN. */
export async function bind (server: NetServer, address: string, port: number, what: string): Promise<void> {
  server.listen(port, address)
  try {
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw err })])
  } catch (cause) {
    throw fastmeshError('LISTEN', [`${address}:${port} (${what})`, (cause as Error).message], cause)
  }
}
