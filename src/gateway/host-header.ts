// The Host header check every listener runs before a request reaches a config version:
// exactly one Host line with one valid authority (RFC 9110 §7.2, RFC 9112 §3.2, RFC 3986 §3.2.2).
import { isIPv6 } from 'node:net'

export interface HostContext {
  /** `req.httpVersion`: HTTP/1.0 may leave Host out (there is then no host to route on). */
  readonly httpVersion: string
  /**
   * The request target is in absolute form (`GET http://orders/x`): its authority replaces
   * Host (RFC 9112 §3.2.2), so an empty Host is acceptable there and only there.
   */
  readonly absoluteForm: boolean
}

// reg-name, narrowed to what names a host in practice: RFC 3986 also allows sub-delims
// and %-encoding, but no DNS name or route uses them, and a comma reads as a list (§5.3).
const REG_NAME = /^[A-Za-z0-9._~-]+$/
const PORT = /^[0-9]{1,5}$/

/** Why `value` is not `uri-host [ ":" port ]`, or undefined when it is. */
export function hostValueProblem (value: string): string | undefined {
  let host = value
  let port: string | undefined
  if (value.startsWith('[')) {
    const close = value.indexOf(']')
    if (close === -1) return 'an IPv6 literal without its closing "]"'
    const inside = value.slice(1, close)
    // net.isIPv6 accepts a zone id (`fe80::1%eth0`), which means nothing to another host.
    if (inside.includes('%') || !isIPv6(inside)) return `"[${inside}]" is not an IPv6 address`
    const rest = value.slice(close + 1)
    if (rest !== '' && !rest.startsWith(':')) return 'text after the IPv6 literal'
    host = value.slice(0, close + 1)
    if (rest !== '') port = rest.slice(1)
  } else {
    const colon = value.indexOf(':')
    if (colon !== -1) {
      host = value.slice(0, colon)
      port = value.slice(colon + 1)
    }
    if (host === '') return 'an empty host name'
    if (!REG_NAME.test(host)) return 'a host name with characters other than letters, digits, ".", "-", "_" and "~"'
  }
  if (port !== undefined && (!PORT.test(port) || Number(port) > 65535)) return 'a port that is not a number from 0 to 65535'
  return undefined
}

/**
 * Why the request's Host is unacceptable, or undefined when it is fine. `rawHeaders` is
 * `req.rawHeaders`: Node keeps only the first of duplicate Host lines in `req.headers`.
 */
export function hostHeaderProblem (rawHeaders: readonly string[], ctx: HostContext): string | undefined {
  let value: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.length !== 4 || rawHeaders[i]!.toLowerCase() !== 'host') continue
    if (value !== undefined) return 'more than one Host line'
    value = rawHeaders[i + 1]!
  }
  if (value === undefined) return ctx.httpVersion === '1.0' ? undefined : 'HTTP/1.1 requires a Host header'
  if (value === '') return ctx.absoluteForm ? undefined : 'an empty Host names no host to route on'
  if (value.includes(',')) return 'a list of hosts; exactly one is allowed'
  const problem = hostValueProblem(value)
  return problem === undefined ? undefined : `${JSON.stringify(value)} is ${problem}`
}
