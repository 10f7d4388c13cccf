// Options of the built-in route plugin `ip-filter`, and its one rule of what an address or a
// CIDR range is (the config checks entries with it without loading the plugin).
import { isIPv4, isIPv6 } from 'node:net'
import { Type, type Static } from '@sinclair/typebox'
import type { PluginOptionProblem, PluginOptionsDefinition } from '../types.js'

const AddressOrRange = Type.String({ minLength: 2, description: 'An IPv4 or IPv6 address, or a CIDR range such as `10.0.0.0/8` or `2001:db8::/32`.' })

export const IpFilterOptionsSchema = Type.Object({
  allow: Type.Array(AddressOrRange, { default: [], description: 'When not empty, only these addresses and ranges may call the route.' }),
  deny: Type.Array(AddressOrRange, { default: [], description: 'These addresses and ranges may not call the route (checked after `allow`).' })
}, { additionalProperties: false })

export type IpFilterOptions = Static<typeof IpFilterOptionsSchema>

export type AddressFamily = 'ipv4' | 'ipv6'

/** An address and its family, with IPv4-mapped IPv6 (`::ffff:10.0.0.1`) read as IPv4. */
export function addressFamily (address: string): { address: string, family: AddressFamily } | undefined {
  const mapped = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : undefined
  if (mapped !== undefined && isIPv4(mapped)) return { address: mapped, family: 'ipv4' }
  if (isIPv4(address)) return { address, family: 'ipv4' }
  if (isIPv6(address)) return { address, family: 'ipv6' }
  return undefined
}

/** An allow/deny entry read as an address (no prefix) or a CIDR range; undefined when it is neither. */
export function parseEntry (entry: string): { address: string, family: AddressFamily, prefix?: number } | undefined {
  const slash = entry.indexOf('/')
  const parsed = addressFamily(slash === -1 ? entry : entry.slice(0, slash))
  if (parsed === undefined) return undefined
  if (slash === -1) return parsed
  const text = entry.slice(slash + 1)
  const prefix = Number(text)
  const max = parsed.family === 'ipv4' ? 32 : 128
  if (text === '' || !Number.isInteger(prefix) || prefix < 0 || prefix > max) return undefined
  return { ...parsed, prefix }
}

function ipFilterOptionProblems (options: IpFilterOptions): PluginOptionProblem[] {
  return (['allow', 'deny'] as const).flatMap((list) => options[list].flatMap((entry, i) => parseEntry(entry) !== undefined
    ? []
    : [{ path: `$.${list}[${i}]`, message: `"${entry}" is not an IP address or a CIDR range`, hint: 'e.g. 10.0.0.1, 10.0.0.0/8, 2001:db8::1 or 2001:db8::/32 (an IPv4 prefix is at most 32, an IPv6 one at most 128)' }]))
}

export const ipFilterOptions: PluginOptionsDefinition<typeof IpFilterOptionsSchema> = {
  name: 'ip-filter',
  description: 'Allow or deny client addresses and CIDR ranges (IPv4 and IPv6) on a route; 403 otherwise.',
  optionsSchema: IpFilterOptionsSchema,
  checkOptions: ipFilterOptionProblems,
  example: `plugins:
  - name: ip-filter
    options: { allow: [10.0.0.0/8, 2001:db8::/32], deny: [10.0.66.0/24] }`
}
