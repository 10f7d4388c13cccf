// Endpoint layer, TLS: secure contexts built from the identity provider's current leaves
// and roots. Servers pick theirs per connection by SNI; clients connect through a connector
// that takes the current context each time. A rotation therefore applies to new
// connections while connections in flight keep the context they began with.
import tls, { type PeerCertificate, type SecureContext } from 'node:tls'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { buildConnector } from 'undici'
import { parseServiceSpiffeId, type IdentityProvider, type ParsedSpiffeId } from './types.js'

/** The URI SANs of a peer certificate (`URI:spiffe://...` entries of subjectaltname). */
export function uriSans (cert: { subjectaltname?: string } | undefined): string[] {
  const san = cert?.subjectaltname
  if (san === undefined || san === '') return []
  return san.split(', ').filter((e) => e.startsWith('URI:')).map((e) => e.slice(4))
}

/** The mesh identity a verified peer certificate proves, or undefined. */
export function peerIdentity (cert: PeerCertificate | undefined, trustDomain: string): (ParsedSpiffeId & { uri: string }) | undefined {
  for (const uri of uriSans(cert)) {
    const id = parseServiceSpiffeId(uri)
    if (id !== undefined && id.trustDomain === trustDomain) return { ...id, uri }
  }
  return undefined
}

export class MeshTls {
  private readonly contexts = new Map<string, SecureContext>()
  private readonly unsubscribe: () => void
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
    return (servername, cb) => {
      const ctx = this.context(servername) ?? this.context(fallback)
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
          const id = peerIdentity(cert, this.trustDomain)
          if (id?.service === destination) return undefined
          return Object.assign(new Error(`server identity ${uriSans(cert).join(', ') || '(none)'} is not service "${destination}" of trust domain ${this.trustDomain}`), { code: 'FASTMESH_ERR_PEER_IDENTITY' })
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

  close (): void {
    this.unsubscribe()
    this.contexts.clear()
    this.log.debug('mesh TLS closed')
  }
}
