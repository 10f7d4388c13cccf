// Built-in route plugin `ip-filter`: allow and deny lists of addresses and CIDR ranges, IPv4
// and IPv6 (node:net's BlockList), checked against the real client address — the peer of the
// connection, or the first X-Forwarded-For address only when the gateway trusts forwarded
// headers. A refused request gets 403 FASTMESH_ERR_IP_DENIED and never reaches the upstream.
import { BlockList, isIPv4, isIPv6 } from 'node:net'
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { fastmeshError } from '../../src/errors.js'
import type { RoutePluginDefinition } from '../types.js'

const AddressOrRange = Type.String({ minLength: 2, description: 'An IPv4 or IPv6 address, or a CIDR range such as `10.0.0.0/8` or `2001:db8::/32`.' })

export const IpFilterOptionsSchema = Type.Object({
  allow: Type.Array(AddressOrRange, { default: [], description: 'When not empty, only these addresses and ranges may call the route.' }),
  deny: Type.Array(AddressOrRange, { default: [], description: 'These addresses and ranges may not call the route (checked after `allow`).' })
}, { additionalProperties: false })

export type IpFilterOptions = Static<typeof IpFilterOptionsSchema>

/** An address and its family, with IPv4-mapped IPv6 (`::ffff:10.0.0.1`) read as IPv4. */
export function addressFamily (address: string): { address: string, family: 'ipv4' | 'ipv6' } | undefined {
  const mapped = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : undefined
  if (mapped !== undefined && isIPv4(mapped)) return { address: mapped, family: 'ipv4' }
  if (isIPv4(address)) return { address, family: 'ipv4' }
  if (isIPv6(address)) return { address, family: 'ipv6' }
  return undefined
}

/** A BlockList of `entries`; throws naming the first entry that is neither an address nor a CIDR range. */
export function blockListOf (entries: readonly string[], what: string): BlockList {
  const list = new BlockList()
  for (const entry of entries) {
    const slash = entry.indexOf('/')
    const parsed = addressFamily(slash === -1 ? entry : entry.slice(0, slash))
    const prefix = slash === -1 ? undefined : Number(entry.slice(slash + 1))
    const max = parsed?.family === 'ipv4' ? 32 : 128
    if (parsed === undefined || (prefix !== undefined && (!Number.isInteger(prefix) || prefix < 0 || prefix > max || entry.slice(slash + 1) === ''))) {
      throw new Error(`${what}: "${entry}" is not an IP address or a CIDR range`)
    }
    if (prefix === undefined) list.addAddress(parsed.address, parsed.family)
    else list.addSubnet(parsed.address, prefix, parsed.family)
  }
  return list
}

function clientAddressOf (request: FastifyRequest, trustForwarded: boolean): string {
  if (trustForwarded) {
    const xff = request.headers['x-forwarded-for']
    const first = (Array.isArray(xff) ? xff[0] : xff)?.split(',')[0]?.trim()
    if (first !== undefined && first !== '') return first
  }
  return request.fastmesh.clientAddress
}

const ipFilterPlugin: FastifyPluginAsync<IpFilterOptions & Record<string, unknown>> = async (fastify, options) => {
  const route = fastify.fastmesh.route
  let allow: BlockList | undefined
  let deny: BlockList | undefined
  try {
    allow = options.allow.length > 0 ? blockListOf(options.allow, 'allow') : undefined
    deny = options.deny.length > 0 ? blockListOf(options.deny, 'deny') : undefined
  } catch (err) {
    throw fastmeshError('CONFIG_INVALID', [`route "${route}"`, `  ip-filter ${(err as Error).message}`])
  }
  const trustForwarded = fastify.fastmesh.trustForwardedHeaders
  fastify.addHook('onRequest', async (request) => {
    const raw = clientAddressOf(request, trustForwarded)
    const client = addressFamily(raw)
    // An address that cannot be read is refused where an allow list exists, and checked against nothing else.
    const allowed = client === undefined
      ? allow === undefined
      : (allow === undefined || allow.check(client.address, client.family)) && !(deny?.check(client.address, client.family) ?? false)
    if (!allowed) throw fastmeshError('IP_DENIED', [raw, route])
  })
}

export const ipFilterDefinition: RoutePluginDefinition<typeof IpFilterOptionsSchema> = {
  name: 'ip-filter',
  description: 'Allow or deny client addresses and CIDR ranges (IPv4 and IPv6) on a route; 403 otherwise.',
  optionsSchema: IpFilterOptionsSchema,
  plugin: ipFilterPlugin,
  example: `plugins:
  - name: ip-filter
    options: { allow: [10.0.0.0/8, 2001:db8::/32], deny: [10.0.66.0/24] }`
}
