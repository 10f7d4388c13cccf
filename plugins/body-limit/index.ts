// Built-in route plugin `body-limit`: request bodies of at most `maxBytes`. A declared
// Content-Length over it is refused at once (413, the upstream is not called); a body of
// unknown length (chunked) is counted as it streams to the upstream, never buffered, and the
// exchange ends the moment it passes the limit (the route layer's `limitRequestBody`).
import type { FastifyPluginAsync } from 'fastify'
import { fastmeshError } from '../../src/errors.js'
import type { RoutePluginDefinition } from '../types.js'
import { bodyLimitOptions, type BodyLimitOptions, type BodyLimitOptionsSchema } from './options.js'

export { BodyLimitOptionsSchema, type BodyLimitOptions } from './options.js'

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

export const bodyLimitDefinition: RoutePluginDefinition<typeof BodyLimitOptionsSchema> = { ...bodyLimitOptions, plugin: bodyLimitPlugin }
