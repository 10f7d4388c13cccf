// What an address may be, in one place: endpoint addresses (config and admin registrations)
// and which listener addresses are loopback (the admin listener's token rule).
import { isIP, isIPv4 } from 'node:net'
import { networkInterfaces } from 'node:os'

/** A DNS label as hosts and container networks use them (RFC 1123, plus `_`). */
const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/

/** The endpoint address rule in words, for messages and hints. */
export const ENDPOINT_ADDRESS_RULE = 'an IPv4 or IPv6 address (no brackets, no port) or a host name (labels of letters, digits, - and _, at most 253 characters)'

/** Why `address` cannot be an endpoint address, or undefined when it can. Never quotes it. */
export function endpointAddressProblem (address: string): string | undefined {
  if (isIP(address) !== 0) return undefined
  if (address.startsWith('[')) return 'is an IPv6 literal in brackets; give the address without them'
  if (address.length > 253 || !address.split('.').every((l) => LABEL.test(l))) return `is not ${ENDPOINT_ADDRESS_RULE}`
  // All-numeric names (`1.2.3`) read as IPv4 shorthands, not names.
  if (/^[0-9.]+$/.test(address)) return 'is not a complete IPv4 address'
  return undefined
}

/**
 * Whether a listener bound to `address` is reachable from this host only: `localhost`,
 * 127.0.0.0/8, `::1` and IPv4-mapped loopback (`::ffff:127.0.0.1`).
 */
export function isLoopbackAddress (address: string): boolean {
  const a = address.toLowerCase()
  if (a === 'localhost') return true
  if (isIPv4(a)) return a.startsWith('127.')
  const v6 = canonicalIPv6(a)
  if (v6 === undefined) return false
  if (v6 === '::1') return true
  // WHATWG URL writes IPv4-mapped addresses in hex: ::ffff:7f00:1 is ::ffff:127.0.0.1.
  const mapped = /^::ffff:([0-9a-f]{1,4}):[0-9a-f]{1,4}$/.exec(v6)
  return mapped !== null && parseInt(mapped[1]!, 16) >> 8 === 127
}

/** Whether `address` binds every interface (`0.0.0.0`, `::`). */
export function isWildcardAddress (address: string): boolean {
  return address === '0.0.0.0' || canonicalIPv6(address) === '::'
}

/** An IPv6 address in its one written form (lower case, zeros compressed), or undefined. */
export function canonicalIPv6 (address: string): string | undefined {
  if (isIP(address) !== 6) return undefined
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1)
  } catch {
    // A zone id (fe80::1%eth0) is an address node:net takes but a URL does not.
    return undefined
  }
}

/**
 * The address others reach a listener bound to `bind` at: `bind` itself when it names one
 * address; for a wildcard bind (`0.0.0.0`, `::`), this host's first non-loopback IPv4 address
 * (loopback when it has none). `interfaces`: for tests.
 */
export function reachableAddress (bind: string, interfaces: () => ReturnType<typeof networkInterfaces> = networkInterfaces): string {
  if (bind !== '0.0.0.0' && bind !== '::') return bind
  for (const addrs of Object.values(interfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address
  }
  return '127.0.0.1'
}
