// Endpoint layer, TLS: secure contexts built from the identity provider's current leaves
// and roots. Servers pick theirs per connection by SNI; clients connect through a connector
// that takes the current context each time. A rotation therefore applies to new
// connections while connections in flight keep the context they began with.
import tls, { type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { buildConnector } from 'undici'
import type { IdentityProvider, ParsedSpiffeId } from './types.js'
import { spiffeIdentity, uriSans } from './san.js'

export { uriSans }

/** The mesh identity a verified peer certificate proves (exactly one URI SAN, a service SPIFFE ID in `trustDomain`), or undefined. */
export function peerIdentity (cert: PeerCertificate | undefined, trustDomain: string): (ParsedSpiffeId & { uri: string }) | undefined {
  const r = spiffeIdentity(cert, trustDomain)
  return r.ok ? { ...r.id, uri: r.uri } : undefined
}

/** At most one log line per reason in this window; the lines in between are counted as suppressed. */
export const REJECTION_LOG_INTERVAL_MS = 10_000

/**
 * Why a handshake on the inbound listener was refused: a small, bounded set. A client chain
 * that fails verification shows only as the socket's `authorizationError` (Node destroys the
 * socket and reports "socket hang up"), so that is read first.
 */
export function handshakeRejectionReason (err: Error & { code?: string }, authorizationError?: string | Error | null): string {
  const verify = typeof authorizationError === 'string' ? authorizationError : (authorizationError as { code?: string } | null | undefined)?.code
  if (verify !== undefined && verify !== '') {
    if (verify === 'CERT_HAS_EXPIRED') return 'certificate-expired'
    if (verify === 'CERT_NOT_YET_VALID') return 'certificate-not-yet-valid'
    if (/^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_SIGNATURE_FAILURE)$/.test(verify)) return 'unknown-ca'
    return 'certificate-verify-failed'
  }
  const code = err.code ?? ''
  const message = err.message ?? ''
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE' || /peer did not return a certificate/i.test(message)) return 'no-client-certificate'
  if (/certificate has expired|CERTIFICATE_EXPIRED/i.test(code + ' ' + message)) return 'certificate-expired'
  if (/certificate is not yet valid|CERTIFICATE_NOT_YET_VALID/i.test(code + ' ' + message)) return 'certificate-not-yet-valid'
  if (/unknown ca|unable to get (local )?issuer|self.signed|UNKNOWN_CA|UNABLE_TO_GET_ISSUER/i.test(code + ' ' + message)) return 'unknown-ca'
  if (code === 'ERR_SSL_CERTIFICATE_VERIFY_FAILED' || /certificate verify failed/i.test(message)) return 'certificate-verify-failed'
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'handshake-timeout'
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'connection-reset'
  if (/wrong version number|unsupported protocol|no shared cipher|no protocols available|VERSION|http request/i.test(code + ' ' + message)) return 'protocol-mismatch'
  return 'other'
}

export interface HandshakeRejections {
  readonly total: number
  /** Refusals by reason (see docs/mesh.md). */
  readonly byReason: Readonly<Record<string, number>>
  readonly last: { readonly reason: string, readonly peer: string, readonly detail: string, readonly at: string } | null
}

export class MeshTls {
  private readonly contexts = new Map<string, SecureContext>()
  private readonly unsubscribe: () => void
  private readonly rejected = new Map<string, number>()
  private readonly lastLogged = new Map<string, { at: number, suppressed: number }>()
  private lastRejection: HandshakeRejections['last'] = null
  /** Bumped on every change; pools keyed by it are not needed: connectors read the map. */
  generation = 0

  constructor (readonly provider: IdentityProvider, private readonly log: Logger) {
    this.unsubscribe = provider.onChange((change) => {
      // Roots change every context; a leaf only its own.
      if (change.kind === 'roots') this.contexts.clear()
      else this.contexts.delete(change.service)
      this.generation++
    })
  }

  get trustDomain (): string {
    return this.provider.roots().trustDomain
  }

  /** The context presenting `service`'s leaf and trusting the current roots. */
  context (service: string): SecureContext | undefined {
    let ctx = this.contexts.get(service)
    if (ctx !== undefined) return ctx
    const leaf = this.provider.leaf(service)
    const roots = this.provider.roots()
    if (leaf === undefined || roots.rootsPem.length === 0) return undefined
    ctx = tls.createSecureContext({ cert: leaf.certPem, key: leaf.keyPem, ca: [...roots.rootsPem], minVersion: 'TLSv1.3' })
    this.contexts.set(service, ctx)
    return ctx
  }

  /** SNI selects the local service's certificate; unknown names get the gateway's own. */
  sniCallback (fallback: string): (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void {
    const context = (name: string): SecureContext | undefined => this.context(name)
    // Node calls it as a method of the TLSSocket. Reading the peer address here caches it on
    // the socket: a refused handshake destroys the socket before the refusal can read it.
    return function (this: TLSSocket | undefined, servername, cb) {
      void this?.remoteAddress
      const ctx = context(servername) ?? context(fallback)
      if (ctx === undefined) cb(new Error(`no certificate for "${servername}" or "${fallback}"`))
      else cb(null, ctx)
    }
  }

  /**
   * An undici connector for calls made as `caller` to a gateway serving `destination`:
   * TLS 1.3 with the caller's leaf, SNI = destination, and the server must prove the
   * destination's SPIFFE identity (not a hostname).
   */
  connector (caller: string, destination: string, connectTimeoutMs: number): buildConnector.connector {
    return (opts, callback) => {
      const ctx = this.context(caller)
      if (ctx === undefined) {
        callback(new Error(`no leaf certificate for caller identity "${caller}"`), null)
        return
      }
      const socket = tls.connect({
        host: opts.hostname,
        port: Number(opts.port),
        servername: destination,
        secureContext: ctx,
        minVersion: 'TLSv1.3',
        ALPNProtocols: ['http/1.1'],
        checkServerIdentity: (_host, cert) => {
          const id = spiffeIdentity(cert, this.trustDomain)
          if (id.ok && id.id.service === destination) return undefined
          const why = id.ok ? `server identity ${id.uri} is not service "${destination}"` : `server certificate refused: ${id.reason}`
          return Object.assign(new Error(`${why} (expected service "${destination}" of trust domain ${this.trustDomain})`), { code: 'FASTMESH_ERR_PEER_IDENTITY' })
        }
      })
      socket.setNoDelay(true)
      socket.setKeepAlive(true, 60_000)
      let done = false
      const finish = (err: Error | null): void => {
        if (done) return
        done = true
        clearTimeout(timer)
        socket.off('error', onError)
        if (err !== null) {
          socket.destroy()
          callback(err, null)
        } else {
          callback(null, socket as unknown as Socket)
        }
      }
      const onError = (err: Error): void => { finish(err) }
      const timer = setTimeout(() => { finish(Object.assign(new Error(`TLS connect to ${opts.hostname}:${opts.port} timed out`), { code: 'UND_ERR_CONNECT_TIMEOUT' })) }, connectTimeoutMs)
      socket.once('secureConnect', () => { finish(null) })
      socket.once('error', onError)
    }
  }

  /**
   * Watches an inbound TLS server: refused handshakes (no certificate, unknown CA, expired,
   * ...) are counted by reason and logged at warn, rate-limited per reason; a client
   * certificate that verified but does not carry exactly one URI SAN is refused too
   * (closed before any request is read), since SPIFFE allows only one identity per certificate.
   */
  guardInbound (server: tls.Server): void {
    server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
      const reason = handshakeRejectionReason(err, socket.authorizationError)
      this.reject(reason, socket, socket.authorizationError !== undefined && socket.authorizationError !== null ? String(socket.authorizationError) : err.message)
      socket.destroy()
    })
    // Before the HTTP server's own listener: the socket is closed before a parser reads from it.
    server.prependListener('secureConnection', (socket: TLSSocket) => {
      const cert = socket.getPeerCertificate()
      // Permissive listeners let unverified callers through as unauthenticated; a certificate
      // that verified is a mesh identity claim and must be a well-formed one.
      if (!socket.authorized || cert === null || Object.keys(cert).length === 0) return
      const id = spiffeIdentity(cert)
      if (id.ok || id.uris.length === 1) return // one URI SAN: authorization judges what it names
      this.reject(id.uris.length === 0 ? 'no-uri-san' : 'multiple-uri-sans', socket, id.reason)
      socket.destroy()
    })
  }

  /** Refused inbound handshakes so far, for the admin API. */
  rejections (): HandshakeRejections {
    let total = 0
    for (const n of this.rejected.values()) total += n
    return { total, byReason: Object.fromEntries(this.rejected), last: this.lastRejection }
  }

  private reject (reason: string, socket: TLSSocket, detail: string): void {
    this.rejected.set(reason, (this.rejected.get(reason) ?? 0) + 1)
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`
    const now = Date.now()
    this.lastRejection = { reason, peer, detail, at: new Date(now).toISOString() }
    const logged = this.lastLogged.get(reason)
    if (logged !== undefined && now - logged.at < REJECTION_LOG_INTERVAL_MS) {
      logged.suppressed++
      return
    }
    this.lastLogged.set(reason, { at: now, suppressed: 0 })
    // A connection closed before or during the handshake proves nothing about a caller: it is
    // mostly a TCP health check (Consul's on the connect-proxy port) or a port probe, every few
    // seconds. Counted like the others; logged at debug, so warn stays for real refusals.
    const level = reason === 'connection-reset' ? 'debug' : 'warn'
    this.log[level]({ reason, peer, detail, suppressed: logged?.suppressed ?? 0 }, `inbound mTLS handshake refused (${reason}) from ${peer}${logged !== undefined && logged.suppressed > 0 ? `; ${logged.suppressed} more like it in the last ${Math.round((now - logged.at) / 1000)} s not logged` : ''}`)
  }

  close (): void {
    this.unsubscribe()
    this.contexts.clear()
    this.log.debug('mesh TLS closed')
  }
}
