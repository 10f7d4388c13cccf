// Built-in route plugin `headers`: set, add or remove request headers before they go
// upstream, and response headers before they reach the client.
import type { FastifyPluginAsync } from 'fastify'
import type { RoutePluginDefinition } from '../types.js'
import { headersOptions, type HeaderEdits as Edits, type HeadersOptions, type HeadersOptionsSchema } from './options.js'

export { HeadersOptionsSchema, type HeadersOptions } from './options.js'

type HeaderBag = Record<string, string | string[] | undefined>

function lower (edits: Edits) {
  const set = Object.entries(edits.set).map(([k, v]) => [k.toLowerCase(), v] as const)
  const add = Object.entries(edits.add).map(([k, v]) => [k.toLowerCase(), v] as const)
  const remove = edits.remove.map((k) => k.toLowerCase())
  return (headers: HeaderBag) => {
    for (const k of remove) delete headers[k]
    for (const [k, v] of set) headers[k] = v
    for (const [k, v] of add) {
      const cur = headers[k]
      headers[k] = cur === undefined ? v : Array.isArray(cur) ? [...cur, v] : [cur, v]
    }
  }
}

const headersPlugin: FastifyPluginAsync<HeadersOptions & Record<string, unknown>> = async (fastify, options) => {
  const editRequest = lower(options.request)
  const editResponse = lower(options.response)
  const touchesResponse = Object.keys(options.response.set).length + Object.keys(options.response.add).length + options.response.remove.length > 0
  fastify.addHook('onRequest', async (request, reply) => {
    editRequest(request.headers)
    if (touchesResponse) reply.onUpstreamHeaders(editResponse)
  })
}

export const headers: RoutePluginDefinition<typeof HeadersOptionsSchema> = { ...headersOptions, plugin: headersPlugin }
