// Built-in route plugin `headers`: set, add or remove request headers before they go
// upstream, and response headers before they reach the client.
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyPluginAsync } from 'fastify'
import type { RoutePluginDefinition } from '../types.js'

const HeaderEdits = Type.Object({
  set: Type.Record(Type.String({ pattern: '^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$' }), Type.String(), { default: {}, additionalProperties: false, description: 'Replace (or create) these headers.' }),
  add: Type.Record(Type.String({ pattern: '^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$' }), Type.String(), { default: {}, additionalProperties: false, description: 'Append a value, keeping existing ones.' }),
  remove: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'Drop these headers.' })
}, { additionalProperties: false, default: {} })

export const HeadersOptionsSchema = Type.Object({
  request: HeaderEdits,
  response: HeaderEdits
}, { additionalProperties: false })

export type HeadersOptions = Static<typeof HeadersOptionsSchema>

type Edits = Static<typeof HeaderEdits>
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

export const headers: RoutePluginDefinition<typeof HeadersOptionsSchema> = {
  name: 'headers',
  description: 'Edit request headers sent upstream and response headers sent to the client.',
  optionsSchema: HeadersOptionsSchema,
  plugin: headersPlugin,
  example: `plugins:
  - name: headers
    options:
      request: { set: { x-gateway: edge }, remove: [x-debug] }
      response: { set: { x-frame-options: DENY }, remove: [server] }`
}
