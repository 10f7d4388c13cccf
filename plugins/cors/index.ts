// Built-in route plugin `cors`, on @fastify/cors: the gateway answers CORS preflights itself
// (204 with the Access-Control-* headers; the upstream is not called) and adds the CORS
// headers to every other answer of the route, the upstream's included (headers set on the
// reply are merged into the upstream's response; `Vary` is merged, not replaced).
//
// Only a real preflight is the gateway's: OPTIONS with `Origin` and
// `Access-Control-Request-Method`. Any other OPTIONS goes to the upstream like any request
// (@fastify/cors alone would answer it 400 or 204), hence the per-request choice of options
// (its `delegator`; which makes every answer say `Vary: Origin`, even with `*`: harmless). Its own `OPTIONS *` route is never reached (the host routes every request
// to the route's internal URL) and lands under the route's prefix, so it cannot clash.
import fastifyCors, { type FastifyCorsOptions } from '@fastify/cors'
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { DURATION_PATTERN, durationMs } from '../../src/config/duration.js'
import type { RoutePluginDefinition } from '../types.js'

const TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"

const Origin = Type.String({
  pattern: '^(\\*|[A-Za-z][A-Za-z0-9+.-]*://[^/?#\\s]+)$',
  description: 'An origin as browsers send it, `scheme://host[:port]` (no path), compared exactly (case-insensitively); or `*` for any.'
})

export const CorsOptionsSchema = Type.Object({
  origins: Type.Array(Origin, { minItems: 1, description: 'Origins allowed to read the route\'s answers. `*` allows any (not with `credentials: true`); otherwise the request\'s `Origin` is echoed when listed, and answers carry `Vary: Origin`.' }),
  methods: Type.Array(Type.String({ pattern: TOKEN }), { minItems: 1, default: ['GET', 'HEAD', 'POST'], description: 'Methods a preflight allows (`Access-Control-Allow-Methods`).' }),
  allowedHeaders: Type.Optional(Type.Array(Type.String({ pattern: TOKEN }), { description: 'Request headers a preflight allows (`Access-Control-Allow-Headers`); when left out, the headers the preflight asks for are allowed.' })),
  exposedHeaders: Type.Array(Type.String({ pattern: TOKEN }), { default: [], description: 'Response headers the browser lets scripts read (`Access-Control-Expose-Headers`).' }),
  credentials: Type.Boolean({ default: false, description: 'Allow cookies and HTTP authentication (`Access-Control-Allow-Credentials: true`).' }),
  maxAge: Type.Optional(Type.String({ pattern: DURATION_PATTERN, description: 'How long browsers may cache a preflight\'s answer (`Access-Control-Max-Age`, whole seconds).' }))
}, {
  additionalProperties: false,
  // Browsers refuse `Access-Control-Allow-Origin: *` on credentialed requests: a config error, at the item.
  if: { properties: { credentials: { const: true } }, required: ['credentials'] },
  then: {
    properties: {
      origins: { items: { not: { const: '*' }, description: 'With `credentials: true` browsers refuse `*`: list the origins instead.' } }
    }
  }
})

export type CorsOptions = Static<typeof CorsOptionsSchema>

/** OPTIONS carrying what only a browser's preflight carries (Fetch standard, "CORS-preflight request"). */
function isPreflight (request: FastifyRequest): boolean {
  return request.raw.method === 'OPTIONS' && request.headers.origin !== undefined && request.headers['access-control-request-method'] !== undefined
}

const corsPlugin: FastifyPluginAsync<CorsOptions & Record<string, unknown>> = async (fastify, options) => {
  const any = options.origins.includes('*')
  // Keys left out keep @fastify/cors's "not set" (null): an undefined would override it.
  const common: FastifyCorsOptions = {
    // A list, even of one: the request's Origin is echoed only when listed.
    origin: any ? '*' : options.origins.map((o) => o.toLowerCase()),
    methods: options.methods,
    credentials: options.credentials,
    preflightContinue: false,
    optionsSuccessStatus: 204,
    hook: 'onRequest'
  }
  if (options.allowedHeaders !== undefined) common.allowedHeaders = options.allowedHeaders
  if (options.exposedHeaders.length > 0) common.exposedHeaders = options.exposedHeaders
  if (options.maxAge !== undefined) common.maxAge = Math.floor(durationMs(options.maxAge) / 1000)
  const preflight: FastifyCorsOptions = { ...common, preflight: true, strictPreflight: false }
  const actual: FastifyCorsOptions = { ...common, preflight: false }
  // The preflight's 204 is the gateway's answer: it carries the request id, like every other.
  fastify.addHook('onRequest', (request, reply, done) => {
    if (isPreflight(request)) reply.header('x-request-id', request.id)
    done()
  })
  await fastify.register(fastifyCors, {
    hook: 'onRequest',
    delegator: (request: FastifyRequest, callback: (err: Error | null, options: FastifyCorsOptions) => void) => { callback(null, isPreflight(request) ? preflight : actual) }
  })
}

export const corsDefinition: RoutePluginDefinition<typeof CorsOptionsSchema> = {
  name: 'cors',
  description: 'Cross-origin resource sharing: the gateway answers browsers\' preflights (204, upstream not called) and adds the CORS headers to the route\'s answers; the route must accept OPTIONS.',
  optionsSchema: CorsOptionsSchema,
  plugin: corsPlugin,
  example: `plugins:
  - name: cors
    options:
      origins: [https://app.example.com]
      methods: [GET, POST, PUT]
      allowedHeaders: [content-type, authorization]
      exposedHeaders: [x-request-id]
      credentials: true
      maxAge: 10m`
}
