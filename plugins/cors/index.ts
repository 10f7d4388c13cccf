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
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { durationMs } from '../../src/config/duration.js'
import type { RoutePluginDefinition } from '../types.js'
import { corsOptions, type CorsOptions, type CorsOptionsSchema } from './options.js'

export { CorsOptionsSchema, type CorsOptions } from './options.js'

/** OPTIONS carrying what only a browser's preflight carries (Fetch standard, "CORS-preflight request"). */
function isPreflight (request: FastifyRequest): boolean {
  return request.raw.method === 'OPTIONS' && request.headers.origin !== undefined && request.headers['access-control-request-method'] !== undefined
}

/**
 * A configured origin as browsers serialise it (the Origin header is compared exactly): an
 * http(s) origin through the URL parser (lower-case, punycode host, the scheme's default port
 * left out: `https://app.example.com:443` is sent as `https://app.example.com`); another
 * scheme, whose URL has an opaque origin, in lower case.
 */
function serializedOrigin (origin: string): string {
  return /^https?:/i.test(origin) && URL.canParse(origin) ? new URL(origin).origin : origin.toLowerCase()
}

const corsPlugin: FastifyPluginAsync<CorsOptions & Record<string, unknown>> = async (fastify, options) => {
  const any = options.origins.includes('*')
  // Keys left out keep @fastify/cors's "not set" (null): an undefined would override it.
  const common: FastifyCorsOptions = {
    // A list, even of one: the request's Origin is echoed only when listed.
    origin: any ? '*' : options.origins.map(serializedOrigin),
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

export const corsDefinition: RoutePluginDefinition<typeof CorsOptionsSchema> = { ...corsOptions, plugin: corsPlugin }
