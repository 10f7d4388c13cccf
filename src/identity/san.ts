// The one reader of certificate identities: Node's subjectAltName text (X509Certificate
// `subjectAltName`, PeerCertificate `subjectaltname`) split into entries, and the SPIFFE rule
// that a mesh certificate carries exactly one URI SAN. Every SAN / SPIFFE check goes through here.
import { parseServiceSpiffeId, type ParsedSpiffeId } from './types.js'

export interface SanEntry {
  /** `URI`, `DNS`, `IP Address`, `email`, ... as Node prints it. */
  readonly type: string
  readonly value: string
}

/**
 * Parses Node's subjectAltName string: `TYPE:value` entries joined by `, `. A value with a
 * comma, quote, backslash or control character is printed JSON-quoted (`URI:"spiffe://a\u002cb"`),
 * so a plain split on `, ` would cut it; this reads quoted values as JSON strings.
 */
export function parseSubjectAltName (text: string | undefined): SanEntry[] {
  const out: SanEntry[] = []
  if (text === undefined || text === '') return out
  let i = 0
  while (i < text.length) {
    const colon = text.indexOf(':', i)
    if (colon === -1) break
    const type = text.slice(i, colon)
    let j = colon + 1
    let value: string
    if (text[j] === '"') {
      // A JSON string: find the closing quote that is not escaped.
      let k = j + 1
      while (k < text.length && text[k] !== '"') k += text[k] === '\\' ? 2 : 1
      try {
        value = JSON.parse(text.slice(j, k + 1)) as string
      } catch {
        value = text.slice(j + 1, k)
      }
      j = k + 1
    } else {
      const end = text.indexOf(', ', j)
      value = text.slice(j, end === -1 ? text.length : end)
      j = end === -1 ? text.length : end
    }
    out.push({ type, value })
    // Skip the `, ` separator.
    i = text.startsWith(', ', j) ? j + 2 : j + 1
  }
  return out
}

type CertLike = { subjectAltName?: string | undefined } | { subjectaltname?: string | undefined } | undefined | null

function sanText (cert: CertLike): string | undefined {
  if (cert === undefined || cert === null) return undefined
  if ('subjectAltName' in cert) return cert.subjectAltName
  if ('subjectaltname' in cert) return cert.subjectaltname
  return undefined
}

/** Every URI SAN of a certificate (node:crypto X509Certificate or a TLS PeerCertificate), in order. */
export function uriSans (cert: CertLike): string[] {
  return parseSubjectAltName(sanText(cert)).filter((e) => e.type === 'URI').map((e) => e.value)
}

export type SpiffeIdentity =
  | { readonly ok: true, readonly uri: string, readonly id: ParsedSpiffeId }
  | { readonly ok: false, readonly reason: string, readonly uris: readonly string[] }

/**
 * The service identity a certificate proves: exactly one URI SAN, a service SPIFFE ID, in
 * `trustDomain` when given. SPIFFE (X509-SVID §2) allows one URI SAN only, so a certificate
 * with several is refused outright rather than read as its first.
 */
export function spiffeIdentity (cert: CertLike, trustDomain?: string): SpiffeIdentity {
  const uris = uriSans(cert)
  if (uris.length === 0) return { ok: false, reason: 'the certificate has no URI SAN (a SPIFFE ID is required)', uris }
  if (uris.length > 1) return { ok: false, reason: `the certificate has ${uris.length} URI SANs (${uris.join(', ')}); SPIFFE requires exactly one`, uris }
  const uri = uris[0]!
  const id = parseServiceSpiffeId(uri)
  if (id === undefined) return { ok: false, reason: `its URI SAN ${uri} is not a service SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>)`, uris }
  if (trustDomain !== undefined && id.trustDomain !== trustDomain) return { ok: false, reason: `its SPIFFE ID ${uri} is in trust domain "${id.trustDomain}", not "${trustDomain}"`, uris }
  return { ok: true, uri, id }
}
