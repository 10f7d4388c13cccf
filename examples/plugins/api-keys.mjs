// An example route plugin (docs/writing-plugins.md walks through it): admits a request by
// API key, or an inbound mesh call by its verified identity; tells the upstream which
// tenant calls; and counts each tenant's requests in state that outlives config reloads.
// Load it with `customPlugins` (examples/api-keys.yaml); test/integration/example-plugin.test.ts
// runs it against a real gateway.

export const description = 'Admits requests by API key (or mesh identity), names the tenant to the upstream, counts requests per tenant.'

// The options' JSON Schema: the gateway checks each route's options against it (defaults
// filled in) when a config is validated, started or reloaded, and names the JSON path of
// every problem.
export const optionsSchema = {
  type: 'object',
  properties: {
    keys: {
      type: 'object',
      description: 'API key → tenant name.',
      additionalProperties: { type: 'string', minLength: 1 },
      minProperties: 1
    },
    callers: {
      type: 'object',
      description: 'Verified mesh identity (SPIFFE ID) → tenant name, for inbound mesh routes.',
      additionalProperties: { type: 'string', minLength: 1 },
      default: {}
    },
    keyHeader: { type: 'string', minLength: 1, default: 'x-api-key' },
    tenantHeader: { type: 'string', minLength: 1, default: 'x-tenant' }
  },
  required: ['keys'],
  additionalProperties: false
}

export default async function apiKeys (fastify, options) {
  // Header names arrive lower-cased in request.headers.
  const keyHeader = options.keyHeader.toLowerCase()
  const tenantHeader = options.tenantHeader.toLowerCase()
  const tenantByKey = new Map(Object.entries(options.keys))
  const tenantByCaller = new Map(Object.entries(options.callers))

  // Outlives reloads: the counts go on when the config changes, and are dropped (with the
  // route) once no config version has this route any more. The name is prefixed with the
  // plugin's, since every plugin of the route shares the namespace.
  const requestsByTenant = fastify.fastmesh.state('api-keys:requests', () => new Map())
  const route = fastify.fastmesh.route

  fastify.addHook('onRequest', async (request, reply) => {
    // `caller` is set only on inbound mesh routes, from the peer's mTLS certificate: it is
    // proven, unlike any header.
    const { caller } = request.fastmesh
    const key = request.headers[keyHeader]
    const tenant = caller !== undefined
      ? tenantByCaller.get(caller)
      : typeof key === 'string' ? tenantByKey.get(key) : undefined
    if (tenant === undefined) {
      // Headers set before throwing stay on the gateway's error answer.
      reply.header('www-authenticate', `ApiKey header="${keyHeader}"`)
      const who = caller ?? (key === undefined ? 'a request without a key' : 'an unknown key')
      // Any error with a status from 400 to 599 answers with that status and its code, in
      // the gateway's JSON error body. Never put the key itself in a message or a log.
      throw Object.assign(new Error(`route ${route} does not admit ${who}`), { statusCode: 401, code: 'EXAMPLE_API_KEY_REQUIRED' })
    }
    // The upstream learns the tenant, never the secret; a tenant header the client sent is
    // replaced, so it cannot be forged.
    delete request.headers[keyHeader]
    request.headers[tenantHeader] = tenant
    const count = (requestsByTenant.get(tenant) ?? 0) + 1
    requestsByTenant.set(tenant, count)
    reply.header('x-tenant-requests', String(count))
  })
}
