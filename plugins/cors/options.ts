// Options of the built-in route plugin `cors` (the config checks them without loading
// @fastify/cors).
import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN } from '../../src/config/duration.js'
import type { PluginOptionProblem, PluginOptionsDefinition } from '../types.js'

const TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"

const Origin = Type.String({
  pattern: '^(\\*|[A-Za-z][A-Za-z0-9+.-]*://[^/?#\\s]+)$',
  description: 'An origin as browsers send it, `scheme://host[:port]` (no path), compared as browsers send it: case and the scheme\'s default port (`:443`, `:80`) make no difference; or `*` for any.'
})

export const CorsOptionsSchema = Type.Object({
  origins: Type.Array(Origin, { minItems: 1, description: 'Origins allowed to read the route\'s answers. `*` allows any (not with `credentials: true`); otherwise the request\'s `Origin` is echoed when listed, and answers carry `Vary: Origin`.' }),
  methods: Type.Array(Type.String({ pattern: TOKEN }), { minItems: 1, default: ['GET', 'HEAD', 'POST'], description: 'Methods a preflight allows (`Access-Control-Allow-Methods`).' }),
  allowedHeaders: Type.Optional(Type.Array(Type.String({ pattern: TOKEN }), { description: 'Request headers a preflight allows (`Access-Control-Allow-Headers`); when left out, the headers the preflight asks for are allowed.' })),
  exposedHeaders: Type.Array(Type.String({ pattern: TOKEN }), { default: [], description: 'Response headers the browser lets scripts read (`Access-Control-Expose-Headers`).' }),
  credentials: Type.Boolean({ default: false, description: 'Allow cookies and HTTP authentication (`Access-Control-Allow-Credentials: true`).' }),
  maxAge: Type.Optional(Type.String({ pattern: DURATION_PATTERN, description: 'How long browsers may cache a preflight\'s answer (`Access-Control-Max-Age`, whole seconds).' }))
}, { additionalProperties: false })

export type CorsOptions = Static<typeof CorsOptionsSchema>

function corsOptionProblems (options: CorsOptions): PluginOptionProblem[] {
  // Browsers refuse `Access-Control-Allow-Origin: *` on credentialed requests: a config error, at the item.
  if (!options.credentials) return []
  return options.origins.flatMap((origin, i) => origin !== '*'
    ? []
    : [{ path: `$.origins[${i}]`, message: '"*" is not allowed with `credentials: true`', hint: 'with credentials browsers refuse `*`: list the origins instead' }])
}

export const corsOptions: PluginOptionsDefinition<typeof CorsOptionsSchema> = {
  name: 'cors',
  description: 'Cross-origin resource sharing: the gateway answers browsers\' preflights (204, upstream not called) and adds the CORS headers to the route\'s answers; the route must accept OPTIONS. It runs before the route\'s other plugins wherever it is listed (gateway-wide too), so a preflight (which browsers send without credentials) is never refused by `jwt`, and the other plugins\' refusals (401, 403, 429, 413) carry the CORS headers the page needs to read them.',
  optionsSchema: CorsOptionsSchema,
  checkOptions: corsOptionProblems,
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
