// Built-in route plugin `body-limit`: request bodies of at most `maxBytes`. A declared
// Content-Length over it is refused at once (413, the upstream is not called); a body of
// unknown length (chunked) is counted as it streams to the upstream, never buffered, and the
// exchange ends the moment it passes the limit (the route layer's `limitRequestBody`).
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyPluginAsync } from 'fastify'
import { fastmeshError } from '../../src/errors.js'
import type { RoutePluginDefinition } from '../types.js'

export const BodyLimitOptionsSchema = Type.Object({
  maxBytes: Type.Integer({ minimum: 0, description: 'Largest request body, in bytes; 0 allows none.' })
}, { additionalProperties: false })

export type BodyLimitOptions = Static<typeof BodyLimitOptionsSchema>

const bodyLimitPlugin: FastifyPluginAsync<BodyLimitOptions & Record<string, unknown>> = async (fastify, options) => {
  const route = fastify.fastmesh.route
  const maxBytes = options.maxBytes
  fastify.addHook('onRequest', (request, reply, done) => {
    const h = request.headers
    // A declared length frames the body (the parser stops there): checked once, nothing to count.
    const declared = h['transfer-encoding'] === undefined ? h['content-length'] : undefined
    if (declared === undefined) reply.limitRequestBody(maxBytes)
    else if (Number(declared) > maxBytes) { done(fastmeshError('BODY_TOO_LARGE', [route, maxBytes])); return }
    done()
  })
}

export const bodyLimitDefinition: RoutePluginDefinition<typeof BodyLimitOptionsSchema> = {
  name: 'body-limit',
  description: 'Refuse request bodies larger than `maxBytes` with 413: a declared Content-Length before the upstream is called, a chunked body the moment it passes the limit (counted as it streams, never buffered); the connection is then closed.',
  optionsSchema: BodyLimitOptionsSchema,
  plugin: bodyLimitPlugin,
  example: `plugins:
  - name: body-limit
    options:
      maxBytes: 1048576`
}
