// Built-in route plugin `ip-filter`: allow and deny lists of addresses and CIDR ranges, IPv4
// and IPv6 (node:net's BlockList), checked against the real client address — the peer of the
// connection, or the first X-Forwarded-For address only when the gateway trusts forwarded
// headers. A refused request gets 403 FASTMESH_ERR_IP_DENIED and never reaches the upstream.
import { BlockList } from 'node:net'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { fastmeshError } from '../../src/errors.js'
import type { RoutePluginDefinition } from '../types.js'
import { addressFamily, ipFilterOptions, parseEntry, type IpFilterOptions, type IpFilterOptionsSchema } from './options.js'

export { IpFilterOptionsSchema, addressFamily, type IpFilterOptions } from './options.js'

/** A BlockList of `entries`; throws naming the first entry that is neither an address nor a CIDR range. */
export function blockListOf (entries: readonly string[], what: string): BlockList {
  const list = new BlockList()
  for (const entry of entries) {
    const parsed = parseEntry(entry)
    if (parsed === undefined) throw new Error(`${what}: "${entry}" is not an IP address or a CIDR range`)
    if (parsed.prefix === undefined) list.addAddress(parsed.address, parsed.family)
    else list.addSubnet(parsed.address, parsed.prefix, parsed.family)
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
  // Entries were checked with the config (ipFilterOptions.checkOptions).
  const allow = options.allow.length > 0 ? blockListOf(options.allow, 'allow') : undefined
  const deny = options.deny.length > 0 ? blockListOf(options.deny, 'deny') : undefined
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

export const ipFilterDefinition: RoutePluginDefinition<typeof IpFilterOptionsSchema> = { ...ipFilterOptions, plugin: ipFilterPlugin }
