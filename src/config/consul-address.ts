// What a Consul agent address may be: the one parser behind `fastmesh validate` (the config's
// `discovery.consul.address`) and the gateway's start (that key, `--consul`, CONSUL_HTTP_ADDR),
// so a config that validates also starts.

export interface ConsulAddress {
  /** Host name or IP, without IPv6 brackets. */
  readonly host: string
  /** The host as written in a URL (IPv6 in brackets). */
  readonly hostLiteral: string
  readonly port: number
  /** `https://` given: true; `http://`: false; no scheme: undefined (CONSUL_HTTP_SSL decides). */
  readonly secure: boolean | undefined
}

/** The address form in words, for messages and hints. */
export const CONSUL_ADDRESS_FORM = '`host:port`, `host` (port 8500) or `http(s)://host:port`'

/**
 * Parses `raw`, or says why it is not an address. Credentials (`user:password@`) are refused:
 * Consul authenticates with an ACL token (`discovery.consul.token`, env CONSUL_HTTP_TOKEN),
 * and an address is printed in logs and errors where a password must never appear. The
 * reason never quotes the value, so it is safe to print whatever was given.
 */
export function parseConsulAddress (raw: string): { address: ConsulAddress } | { problem: string } {
  let rest = raw
  let secure: boolean | undefined
  const scheme = /^(https?):\/\//i.exec(rest)
  if (scheme !== null) {
    secure = scheme[1]!.toLowerCase() === 'https'
    rest = rest.slice(scheme[0].length)
  }
  rest = rest.replace(/\/+$/, '')
  if (rest.includes('@')) {
    return { problem: 'carries credentials (user:password@ before the host), which Consul does not use; give the ACL token as discovery.consul.token or env CONSUL_HTTP_TOKEN' }
  }
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?$/.exec(rest)
  const port = m?.[2] !== undefined ? Number(m[2]) : 8500
  if (m === null || port < 1 || port > 65535) return { problem: `is not ${CONSUL_ADDRESS_FORM}` }
  return { address: { host: m[1]!.replace(/^\[|\]$/g, ''), hostLiteral: m[1]!, port, secure } }
}
