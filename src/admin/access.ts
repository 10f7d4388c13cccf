// Who may use the admin API: the Host names it answers to (DNS rebinding), the bearer token,
// and same-origin for requests that change something. docs/admin.md, "Access", says why.
import { createHash, timingSafeEqual } from 'node:crypto'
import { networkInterfaces } from 'node:os'
import { hostHeaderProblem } from '../gateway/host-header.js'
import { isLoopbackAddress, isWildcardAddress } from '../config/addresses.js'

export interface AdminAccessOptions {
  /** The configured bind address (`127.0.0.1`, `localhost`, `0.0.0.0`, ...). */
  readonly address: string
  /** The address the listener is bound to (from `server.address()`). */
  readonly boundAddress: string
  readonly token: string | undefined
  /** `listeners.admin.allowedHosts`: more names the API answers to. */
  readonly allowedHosts: readonly string[]
  /** This host's interface addresses (for a wildcard bind); a parameter for tests. */
  readonly interfaceAddresses?: () => readonly string[]
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]']

/** `host[:port]` as a URL would compare it (lower case, IPv6 in brackets and compressed, port 80 dropped), or undefined. */
function urlHost (authority: string): { hostname: string, host: string } | undefined {
  try {
    const u = new URL(`http://${authority}/`)
    return { hostname: u.hostname, host: u.host }
  } catch {
    return undefined
  }
}

/** An address or name as a Host header carries it (IPv6 in brackets). */
function asHostName (address: string): string | undefined {
  return urlHost(address.includes(':') ? `[${address}]` : address)?.hostname
}

function allInterfaceAddresses (): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address))
}

function digest (token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

export class AdminAccess {
  private readonly fixedNames: ReadonlySet<string>
  /** A wildcard bind with no allowedHosts: its names are unknowable, the token guards (see docs). */
  private readonly anyHost: boolean
  private readonly wildcard: boolean
  private readonly tokenDigest: Buffer | undefined
  private readonly interfaceAddresses: () => readonly string[]

  constructor (opts: AdminAccessOptions) {
    this.wildcard = isWildcardAddress(opts.address) || isWildcardAddress(opts.boundAddress)
    this.anyHost = this.wildcard && opts.allowedHosts.length === 0
    this.interfaceAddresses = opts.interfaceAddresses ?? allInterfaceAddresses
    const names: Array<string | undefined> = opts.allowedHosts.map((h) => urlHost(h)?.hostname)
    if (this.wildcard || isLoopbackAddress(opts.address)) names.push(...LOOPBACK_NAMES)
    if (!this.wildcard) names.push(asHostName(opts.address), asHostName(opts.boundAddress))
    this.fixedNames = new Set(names.filter((n): n is string => n !== undefined))
    this.tokenDigest = opts.token !== undefined ? digest(opts.token) : undefined
  }

  get requiresToken (): boolean {
    return this.tokenDigest !== undefined
  }

  /**
   * Why the request's Host is not one the admin API answers to, or undefined when it is.
   * Only the name is compared, not the port: a rebinding page controls the name it uses.
   */
  hostProblem (rawHeaders: readonly string[], httpVersion: string, host: string | undefined): string | undefined {
    const malformed = hostHeaderProblem(rawHeaders, { httpVersion, absoluteForm: false })
    if (malformed !== undefined) return malformed
    if (host === undefined || host === '') return 'the request names no host'
    if (this.anyHost) return undefined
    const name = urlHost(host)?.hostname
    if (name !== undefined && this.fixedNames.has(name)) return undefined
    if (name !== undefined && this.wildcard && this.interfaceAddresses().some((a) => asHostName(a) === name)) return undefined
    return 'it is not an address of this admin listener nor in listeners.admin.allowedHosts'
  }

  /** Whether `authorization` carries the token (compared in constant time); true when none is set. */
  authorized (authorization: string | undefined): boolean {
    if (this.tokenDigest === undefined) return true
    const m = /^Bearer +(\S+) *$/i.exec(authorization ?? '')
    return m !== null && timingSafeEqual(digest(m[1]!), this.tokenDigest)
  }

  /**
   * Whether an `Origin` header names another origin than the one the request was sent to
   * (`http://` + Host). No Origin (curl, the CLI) is not cross-origin; `null` (a sandboxed
   * page, a redirect) is.
   */
  crossOrigin (origin: string | undefined, host: string | undefined): boolean {
    if (origin === undefined) return false
    let u: URL
    try {
      u = new URL(origin)
    } catch {
      return true
    }
    return u.protocol !== 'http:' || host === undefined || u.host !== urlHost(host)?.host
  }
}

/** `application/json`, with or without parameters (`; charset=utf-8`). */
export function isJsonContentType (value: string | undefined): boolean {
  return value !== undefined && /^application\/json\s*(;|$)/i.test(value)
}
