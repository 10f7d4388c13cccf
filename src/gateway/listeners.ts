// Listeners: the long-lived sockets of a gateway. Each tags a request with where it came
// in (edge, node outbound, per-upstream, inbound mTLS) and hands it to the current version.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Duplex } from 'node:stream'
import { once } from 'node:events'
import { errorBody, fastmeshError } from '../errors.js'
import { tagEntry, type Entry, type GatewayVersion } from './app.js'
import type { MeshTls } from '../identity/mesh-tls.js'
import { peerIdentity } from '../identity/mesh-tls.js'

export interface ListenerLimits {
  readonly maxHeaderBytes: number
  readonly keepAliveTimeoutMs: number
  readonly requestTimeoutMs: number
}

export type CurrentVersion = () => GatewayVersion

/** Answers requests Node's parser rejects (too-large headers, bad syntax) with our JSON body. */
function onClientError (limits: ListenerLimits) {
  return (err: Error & { code?: string }, socket: Duplex): void => {
    if (!socket.writable) { socket.destroy(); return }
    const e = err.code === 'HPE_HEADER_OVERFLOW'
      ? fastmeshError('REQUEST_HEADERS_TOO_LARGE', [limits.maxHeaderBytes])
      : fastmeshError('BAD_REQUEST', [err.code ?? err.message])
    const body = errorBody(e, '-')
    socket.end(`HTTP/1.1 ${e.statusCode} ${e.statusCode === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
  }
}

/**
 * A plain HTTP listener. `entry` tags each request (undefined: the edge). Absolute-form
 * request targets (`GET http://orders/x`, as HTTP_PROXY clients send) become origin form
 * with the authority as Host.
 */
export function httpListener (limits: ListenerLimits, current: CurrentVersion, entry: Entry | undefined): Server {
  const server = createServer({
    maxHeaderSize: limits.maxHeaderBytes,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    noDelay: true
  }, (req: IncomingMessage, res: ServerResponse) => {
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
    toOriginForm(req)
    if (entry !== undefined) tagEntry(req, entry)
    current().upgrade(req, socket, head)
  })
  const closeAllConnections = server.closeAllConnections.bind(server)
  server.closeAllConnections = () => {
    closeAllConnections()
    for (const socket of tunnels) socket.destroy()
  }
  server.on('clientError', onClientError(limits))
  return server
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
    tag(req, encrypted)
    current().handle(req, res)
  }
  // As on the plain listeners: tunnels leave Node's connection tracking, so track them here.
  const tunnels = new Set<Duplex>()
  const upgrade = (encrypted: boolean) => (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    tunnels.add(socket)
    socket.once('close', () => { tunnels.delete(socket) })
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
    maxHeaderSize: limits.maxHeaderBytes,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    noDelay: true
  }, (req, res) => { handle(req, res, true) })
  tlsServer.on('clientError', onClientError(limits))
  tlsServer.on('upgrade', upgrade(true))
  tlsServer.on('tlsClientError', (_err: Error, socket: TLSSocket) => { socket.destroy() })

  let plain: Server | undefined
  let server: NetServer = tlsServer
  if (opts.mtls === 'permissive') {
    // Migration: plaintext on the same port. The first byte tells: 0x16 starts a TLS handshake.
    plain = createServer({ maxHeaderSize: limits.maxHeaderBytes, keepAliveTimeout: limits.keepAliveTimeoutMs, requestTimeout: limits.requestTimeoutMs }, (req, res) => { handle(req, res, false) })
    plain.on('clientError', onClientError(limits))
    plain.on('upgrade', upgrade(false))
    const inner = plain
    server = createNetServer({ noDelay: true }, (socket: Socket) => {
      socket.once('error', () => { socket.destroy() })
      socket.once('data', (chunk: Buffer) => {
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
