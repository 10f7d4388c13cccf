// Secret redaction: the one rule for every place a config, an endpoint, a route, a log line or
// an error message is shown (admin views, reload refusals, validation problems, error logs).

export const REDACTED = '<redacted>'

/**
 * Names whose values are secrets, compared lower-cased with `-` and `_` removed: keys such as
 * `token`, `consulToken`, `client_secret`, `password`, `passwd`, `api_key`, `credentials`,
 * `privateKey`, `access_key`, `key`, and credential-bearing header names such as
 * `authorization`, `proxy-authorization`, `cookie`, `set-cookie`, `x-auth-user`, `x-api-key`,
 * `x-internal-token`. A false positive costs a hidden value; a false negative leaks one.
 */
const SECRET_NAME = /token|secret|passw|credential|apikey|privatekey|accesskey|auth|cookie|^key$/

/**
 * Keys holding the value a named condition compares against (`{ name: "x-api-key", exact: "..." }`
 * in a route's `match.headers` or `match.query`, `{ name, value }` pairs in plugin options):
 * redacted when the sibling `name` is secret-named.
 */
const MATCH_VALUE_KEYS = new Set(['exact', 'prefix', 'regex', 'value', 'values'])

/**
 * Maps whose every value is a secret whatever its name: the `headers` of an `otlp` exporter
 * (`telemetry.tracing.otlp.headers`), where vendors name their key headers freely
 * (`x-honeycomb-team`, `dd-api-key`, `signoz-ingestion-key`). Held as `holder key → map key`.
 */
const SECRET_MAPS: ReadonlyMap<string, string> = new Map([['otlp', 'headers']])

/** The secret maps met while one redactedJson call walks a value (see SECRET_MAPS). */
const secretMapsSeen = new WeakSet<object>()

/** A PEM private key, wherever it appears (plugin options, header values). */
const PRIVATE_KEY_PEM = /-----BEGIN [A-Z ]*PRIVATE KEY-----/

/**
 * The userinfo of a URL (`https://user:password@host`, `redis://:password@host`,
 * `https://TOKEN@host`): everything between `scheme://` and the last `@` of the authority.
 */
const URL_USERINFO = /\b([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)[^\s/?#"'<>]*@/g

function isScalar (v: unknown): boolean {
  return (typeof v === 'string' && v !== '') || typeof v === 'number'
}

/** Whether a key, header name or query parameter name names a secret (see SECRET_NAME). */
export function isSecretName (name: unknown): boolean {
  return typeof name === 'string' && SECRET_NAME.test(name.toLowerCase().replace(/[-_]/g, ''))
}

/**
 * Query parameters that carry credentials under names too generic to hide as config keys:
 * URL signatures (`sig`, `signature`, `X-Amz-Signature`), OAuth authorization codes
 * (`code`), `jwt`, session ids. Compared as SECRET_NAME is.
 */
const SECRET_QUERY_NAME = /signature|^sig$|^code$|^jwt$|^session(id)?$|^sid$|^pwd$|^pass$/

/** Whether a query parameter's name (as written, percent-encoding allowed) names a secret. */
export function isSecretQueryName (name: string): boolean {
  let decoded = name
  if (name.includes('%')) {
    try { decoded = decodeURIComponent(name) } catch { /* malformed: judged as written */ }
  }
  return isSecretName(decoded) || SECRET_QUERY_NAME.test(decoded.toLowerCase().replace(/[-_]/g, ''))
}

/**
 * A request target (`/path?query`) with the values of credential-bearing query parameters
 * (isSecretQueryName) replaced by `<redacted>`; every other byte is kept, so `page=2` still
 * reads as sent. The common target, without `?`, is returned as it is at the cost of one scan.
 */
export function redactQuery (target: string): string {
  const q = target.indexOf('?')
  if (q === -1) return target
  let out = ''
  let copied = 0
  let at = q + 1
  while (at < target.length) {
    let end = target.indexOf('&', at)
    if (end === -1) end = target.length
    const eq = target.indexOf('=', at)
    if (eq !== -1 && eq + 1 < end && isSecretQueryName(target.slice(at, eq))) {
      out += target.slice(copied, eq + 1) + REDACTED
      copied = end
    }
    at = end + 1
  }
  return copied === 0 ? target : out + target.slice(copied)
}

/** `name=value` after a URL's `?` or `&`, in free text. */
const QUERY_PARAMETER = /([?&])([^=&#\s"'<>?]+)=([^&#\s"'<>]+)/g

/**
 * Free text with secrets it can recognise on its own hidden: URL userinfo becomes
 * `scheme://<redacted>@`, the values of credential-bearing query parameters (`?token=…`,
 * see redactQuery) become `<redacted>`, and a text holding a PEM private key is `<redacted>`
 * as a whole.
 */
export function redactText (text: string): string {
  if (text.includes('PRIVATE KEY') && PRIVATE_KEY_PEM.test(text)) return REDACTED
  let out = text.includes('://') ? text.replace(URL_USERINFO, `$1${REDACTED}@`) : text
  if (out.includes('?')) out = out.replace(QUERY_PARAMETER, (all, sep: string, name: string) => isSecretQueryName(name) ? `${sep}${name}=${REDACTED}` : all)
  return out
}

/** Whether the value of `key` in `holder` is secret by the key's name or by the holder's `name`. */
function isSecretSlot (holder: unknown, key: string): boolean {
  if (isSecretName(key)) return true
  return MATCH_VALUE_KEYS.has(key) && holder !== null && typeof holder === 'object' && isSecretName((holder as { name?: unknown }).name)
}

/**
 * JSON.stringify replacer: the string or number value (or list items) of a secret slot becomes
 * `"<redacted>"` (objects under such keys, like `mesh.authorization`, are walked, not hidden),
 * and every other string goes through redactText.
 */
function replacer (this: unknown, key: string, value: unknown): unknown {
  const mapKey = SECRET_MAPS.get(key)
  if (mapKey !== undefined && value !== null && typeof value === 'object') {
    const map = (value as Record<string, unknown>)[mapKey]
    if (map !== null && typeof map === 'object') secretMapsSeen.add(map)
  }
  if (key !== '' && !Array.isArray(this) && (isSecretSlot(this, key) || secretMapsSeen.has(this as object))) {
    if (isScalar(value)) return REDACTED
    if (Array.isArray(value)) return value.map((item) => isScalar(item) ? REDACTED : item)
  }
  return typeof value === 'string' ? redactText(value) : value
}

/**
 * `value` as JSON with secrets redacted. It builds no copy of the value: admin views keyed by
 * service, meta or header names must not create objects with those names in the gateway
 * process (docs/architecture.md, "V8 hidden classes").
 */
export function redactedJson (value: unknown): string {
  return JSON.stringify(value, replacer)
}

/** A redacted deep copy (JSON values only), for tests and one-off tools; views use redactedJson. */
export function redactSecrets (value: unknown): unknown {
  const json = redactedJson(value)
  return json === undefined ? undefined : JSON.parse(json) as unknown
}

/**
 * A value found at `instancePath` (`/routes/0/match/headers/1/exact`) of `doc`, as a message
 * may quote it, under the same rule as redactedJson: `<redacted>` when its key (or, for a list
 * item, the list's key) is secret-named or it is the value of a secret-named condition; else
 * the value with redactText applied to strings.
 */
export function redactAt (doc: unknown, instancePath: string, value: unknown): unknown {
  const parts = instancePath === '' ? [] : instancePath.slice(1).split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
  const holders: unknown[] = [doc]
  for (const key of parts.slice(0, -1)) {
    const h = holders[holders.length - 1]
    holders.push(h !== null && typeof h === 'object' ? (h as Record<string, unknown>)[key] : undefined)
  }
  const n = parts.length
  if (n > 0) {
    const parent = holders[n - 1]
    const secret = Array.isArray(parent)
      ? n > 1 && !Array.isArray(holders[n - 2]) && isSecretSlot(holders[n - 2], parts[n - 2]!)
      : isSecretSlot(parent, parts[n - 1]!) || (n > 2 && SECRET_MAPS.get(parts[n - 3]!) === parts[n - 2])
    if (secret) return REDACTED
  }
  return typeof value === 'string' ? redactText(value) : value
}
