// The one service-name rule (as Consul's catalog and DNS take them): the config schema, the
// gateway's Host matching, the CLI and certificate names all check names with it.

/** Letters, digits, `_`, `.`, `-`; starts with a letter or digit; at most 63 characters. */
export const SERVICE_NAME_PATTERN = '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$'
export const SERVICE_NAME_RE = new RegExp(SERVICE_NAME_PATTERN)
/** The rule in words, for error messages and hints. */
export const SERVICE_NAME_RULE = 'letters, digits, _ . - (at most 63), starting with a letter or digit'

export function isServiceName (value: unknown): value is string {
  return typeof value === 'string' && SERVICE_NAME_RE.test(value)
}

/**
 * Endpoint ids (config `endpoints[].id`, admin registrations): letters, digits, `_ . : -`, at
 * most 200, never `..`. Ids appear in admin URLs (`/services/:service/endpoints/:id`), logs and
 * metrics, so `/`, spaces and `..` are out. `:` stays for the default id `address:port`.
 */
export const ENDPOINT_ID_PATTERN = '^(?!.*\\.\\.)[a-zA-Z0-9_.:-]{1,200}$'
export const ENDPOINT_ID_RE = new RegExp(ENDPOINT_ID_PATTERN)
export const ENDPOINT_ID_RULE = 'letters, digits, _ . : - (at most 200), without ".."'
