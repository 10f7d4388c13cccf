// Secret redaction for every place a config is shown (admin `/config`, logs): one rule, one walk.

export const REDACTED = '<redacted>'

/**
 * Key names whose values are secrets, compared lower-cased with `-` and `_` removed:
 * `token`, `consulToken`, `x-api-key`, `client_secret`, `password`, `authorization`,
 * `privateKey`, `key`, ... A false positive costs a hidden value; a false negative leaks one.
 */
const SECRET_KEY = /token|secret|passw|credential|apikey|privatekey|authorization|^key$/

/** A PEM private key, wherever it appears (plugin options, header values). */
const PRIVATE_KEY_PEM = /-----BEGIN [A-Z ]*PRIVATE KEY-----/

function isScalar (v: unknown): boolean {
  return (typeof v === 'string' && v !== '') || typeof v === 'number'
}

export function isSecretKey (name: string): boolean {
  return SECRET_KEY.test(name.toLowerCase().replace(/[-_]/g, ''))
}

/**
 * A deep copy of `value` with secrets replaced by `"<redacted>"`: the string or number value
 * (or list items) of any key whose name looks secret (isSecretKey; objects under such keys, like
 * `mesh.authorization`, are walked, not hidden), and any string holding a PEM private key.
 * Applies everywhere, plugin options included.
 */
export function redactSecrets (value: unknown): unknown {
  if (typeof value === 'string') return PRIVATE_KEY_PEM.test(value) ? REDACTED : value
  if (Array.isArray(value)) return value.map(redactSecrets)
  if (value === null || typeof value !== 'object') return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) {
    if (!isSecretKey(k)) out[k] = redactSecrets(v)
    else if (Array.isArray(v)) out[k] = v.map((item) => isScalar(item) ? REDACTED : redactSecrets(item))
    else out[k] = isScalar(v) ? REDACTED : redactSecrets(v)
  }
  return out
}
