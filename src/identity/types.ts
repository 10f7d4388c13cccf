// Identity: who a gateway (and each local service behind it) is in the mesh — a leaf
// certificate whose URI SAN is a SPIFFE ID — and which roots it trusts.

export interface LeafCertificate {
  /** The service this leaf speaks for. */
  readonly service: string
  /** `spiffe://<trust-domain>/ns/default/dc/<dc>/svc/<service>` */
  readonly spiffeId: string
  /** PEM; may hold intermediates after the leaf. */
  readonly certPem: string
  readonly keyPem: string
  readonly notBefore: Date
  readonly notAfter: Date
  readonly serial: string
}

export interface TrustBundle {
  readonly trustDomain: string
  /** PEM of every root currently trusted (several during a CA rotation). */
  readonly rootsPem: readonly string[]
  /** Earliest expiry among the roots. */
  readonly notAfter: Date | undefined
}

export type IdentityChange = { readonly kind: 'roots' } | { readonly kind: 'leaf', readonly service: string }

export interface IdentityProvider {
  /** `consul` (Connect CA) or `files` (a local CA from `fastmesh certs`). */
  readonly kind: string
  /** Starts fetching (or reading) the roots and the leaves of `services`; resolves once all are available. */
  start(services: readonly string[], timeoutMs?: number): Promise<void>
  /** Adds leaves to keep fresh (idempotent). */
  ensure(service: string): Promise<void>
  roots(): TrustBundle
  leaf(service: string): LeafCertificate | undefined
  /** Called after roots or a leaf changed; returns the function that stops listening. */
  onChange(listener: (change: IdentityChange) => void): () => void
  /** How `service`'s leaf is kept fresh, for the admin API; providers that only read may leave it out. */
  renewalStatus?(service: string): LeafRenewalStatus | undefined
  close(): Promise<void>
}

/**
 * Who renews a leaf: `consul` (the Connect CA through the agent), `self` (this gateway, with
 * the local CA's key), `manual` (someone runs `fastmesh certs issue`; the gateway only warns).
 */
export interface LeafRenewalStatus {
  readonly renewal: 'consul' | 'self' | 'manual'
  /** `self`: when the current leaf will be replaced. */
  readonly renewAt?: Date
  /** When the expiry warning starts (or started). */
  readonly warnAt?: Date
  /** Leaves this gateway issued for the service. */
  readonly renewals: number
  /** Failed issue attempts since the last success. */
  readonly failures: number
  readonly lastError?: string
  /** Expiry warnings logged for the service. */
  readonly warnings: number
}

/** Consul's SPIFFE ID form for a service. */
export function serviceSpiffeId (trustDomain: string, datacenter: string, service: string, namespace = 'default'): string {
  return `spiffe://${trustDomain}/ns/${namespace}/dc/${datacenter}/svc/${service}`
}

export interface ParsedSpiffeId {
  readonly trustDomain: string
  readonly namespace: string
  readonly datacenter: string
  readonly service: string
}

const SPIFFE_SERVICE = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/dc\/([^/]+)\/svc\/([^/]+)$/

/** Parses a service SPIFFE ID; undefined for anything else (agent IDs, other shapes). */
export function parseServiceSpiffeId (uri: string): ParsedSpiffeId | undefined {
  const m = SPIFFE_SERVICE.exec(uri)
  if (m === null) return undefined
  return { trustDomain: m[1]!.toLowerCase(), namespace: m[2]!, datacenter: m[3]!, service: m[4]! }
}
