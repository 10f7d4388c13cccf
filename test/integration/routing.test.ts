// Routing through a running edge gateway: match kinds, conditions, precedence and the
// path/host rewrites, each observed at a real upstream.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, assertErrorResponse, plainRequest, type TestGateway, type RequestOptions } from '../helpers/gateway.js'
import { startEcho, meshConfig, type EchoRecord } from '../helpers/upstreams.js'

/** Starts one echo upstream per service name and a gateway with `routes` over them. */
async function mesh (t: TestContext, serviceNames: string[], routes: unknown[], extra: Record<string, unknown> = {}): Promise<TestGateway> {
  const ports: Record<string, number[]> = {}
  for (const name of serviceNames) ports[name] = [(await startEcho(t, name)).port]
  return await startGateway(t, meshConfig(ports, routes, extra))
}

/** Sends a request through the gateway and returns what the upstream saw (200 expected). */
async function via (g: TestGateway, path: string, opts?: RequestOptions): Promise<EchoRecord> {
  const res = await g.request(path, opts)
  assert.equal(res.status, 200, `status of ${opts?.method ?? 'GET'} ${path} (body: ${res.text})`)
  return res.json<EchoRecord>()
}

test('an exact path route takes only that exact path', async (t) => {
  const g = await mesh(t, ['health'], [{ name: 'health', match: { path: { exact: '/health' } }, destination: { service: 'health' } }])
  const seen = await via(g, '/health')
  assert.equal(seen.service, 'health')
  assert.equal(seen.url, '/health')
  assertErrorResponse(await g.request('/health/x'), 404, 'FASTMESH_ERR_NO_ROUTE')
  assertErrorResponse(await g.request('/healthz'), 404, 'FASTMESH_ERR_NO_ROUTE')
})

test('a prefix route takes the prefix itself and paths below it', async (t) => {
  const g = await mesh(t, ['api'], [{ name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'api' } }])
  assert.equal((await via(g, '/api')).url, '/api')
  assert.equal((await via(g, '/api/')).url, '/api/')
  assert.equal((await via(g, '/api/v1/items')).url, '/api/v1/items')
})

test('a prefix route is segment-aware: /api does not take /apix', async (t) => {
  const g = await mesh(t, ['api'], [{ name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'api' } }])
  assertErrorResponse(await g.request('/apix'), 404, 'FASTMESH_ERR_NO_ROUTE')
  assertErrorResponse(await g.request('/apix/items'), 404, 'FASTMESH_ERR_NO_ROUTE')
})

test('template parameters fill rewritePath', async (t) => {
  const g = await mesh(t, ['users'], [{
    name: 'user-orders',
    match: { path: { template: '/users/:id/orders/:order' } },
    destination: { service: 'users', rewritePath: '/v1/orders/:order/by-user/:id' }
  }])
  assert.equal((await via(g, '/users/42/orders/7')).url, '/v1/orders/7/by-user/42')
  assertErrorResponse(await g.request('/users/42/orders'), 404, 'FASTMESH_ERR_NO_ROUTE')
})

test('regex named groups fill rewritePath', async (t) => {
  const g = await mesh(t, ['items'], [{
    name: 'versioned',
    match: { path: { regex: '/v(?<ver>[0-9]+)/items/(?<id>[a-z0-9]+)' } },
    destination: { service: 'items', rewritePath: '/items/:id/version/:ver' }
  }])
  assert.equal((await via(g, '/v3/items/abc9')).url, '/items/abc9/version/3')
  // The regex is anchored at both ends.
  assertErrorResponse(await g.request('/v3/items/abc9/more'), 404, 'FASTMESH_ERR_NO_ROUTE')
  assertErrorResponse(await g.request('/x/v3/items/abc9'), 404, 'FASTMESH_ERR_NO_ROUTE')
})

test('an exact host route takes only that host, ignoring port and case', async (t) => {
  const g = await mesh(t, ['api'], [{ name: 'api', match: { hosts: ['api.example.com'] }, destination: { service: 'api' } }])
  assert.equal((await via(g, '/', { headers: { host: 'api.example.com' } })).service, 'api')
  assert.equal((await via(g, '/', { headers: { host: 'API.Example.com:8443' } })).service, 'api')
  assertErrorResponse(await g.request('/', { headers: { host: 'www.example.com' } }), 404, 'FASTMESH_ERR_NO_ROUTE')
})

test('a wildcard host route takes every subdomain but not the bare domain', async (t) => {
  const g = await mesh(t, ['tenants'], [{ name: 'tenants', match: { hosts: ['*.example.com'] }, destination: { service: 'tenants' } }])
  assert.equal((await via(g, '/', { headers: { host: 'a.example.com' } })).service, 'tenants')
  assert.equal((await via(g, '/', { headers: { host: 'a.b.example.com' } })).service, 'tenants')
  assertErrorResponse(await g.request('/', { headers: { host: 'example.com' } }), 404, 'FASTMESH_ERR_NO_ROUTE')
  assertErrorResponse(await g.request('/', { headers: { host: 'a.example.org' } }), 404, 'FASTMESH_ERR_NO_ROUTE')
})

test('an exact host route beats a wildcard host route', async (t) => {
  const g = await mesh(t, ['wild', 'exact'], [
    { name: 'wild', match: { hosts: ['*.example.com'] }, destination: { service: 'wild' } },
    { name: 'exact', match: { hosts: ['api.example.com'] }, destination: { service: 'exact' } }
  ])
  assert.equal((await via(g, '/', { headers: { host: 'api.example.com' } })).service, 'exact')
  assert.equal((await via(g, '/', { headers: { host: 'www.example.com' } })).service, 'wild')
})

test('a method condition routes by method', async (t) => {
  const g = await mesh(t, ['writes', 'reads'], [
    { name: 'reads', match: { path: { prefix: '/orders' } }, destination: { service: 'reads' } },
    { name: 'writes', match: { path: { prefix: '/orders' }, methods: ['POST', 'PUT'] }, destination: { service: 'writes' } }
  ])
  assert.equal((await via(g, '/orders', { method: 'POST', body: '{}' })).service, 'writes')
  assert.equal((await via(g, '/orders/1', { method: 'PUT', body: '{}' })).service, 'writes')
  assert.equal((await via(g, '/orders')).service, 'reads')
  assert.equal((await via(g, '/orders/1', { method: 'DELETE' })).service, 'reads')
})

test('header conditions route by header value (exact, prefix, regex, present, invert)', async (t) => {
  const g = await mesh(t, ['exact', 'prefix', 'regex', 'present', 'inverted'], [
    { name: 'exact', match: { headers: [{ name: 'X-Beta', exact: '1' }] }, destination: { service: 'exact' } },
    { name: 'prefix', match: { headers: [{ name: 'x-client', prefix: 'mobile/' }] }, destination: { service: 'prefix' } },
    { name: 'regex', match: { headers: [{ name: 'x-tenant', regex: 't-[0-9]{3}' }] }, destination: { service: 'regex' } },
    { name: 'present', match: { headers: [{ name: 'x-debug', present: true }] }, destination: { service: 'present' } },
    { name: 'inverted', match: { headers: [{ name: 'x-region', exact: 'eu', invert: true }] }, destination: { service: 'inverted' } }
  ])
  assert.equal((await via(g, '/', { headers: { 'x-beta': '1' } })).service, 'exact')
  assert.equal((await via(g, '/', { headers: { 'x-client': 'mobile/ios' } })).service, 'prefix')
  assert.equal((await via(g, '/', { headers: { 'x-tenant': 't-123' } })).service, 'regex')
  assert.equal((await via(g, '/', { headers: { 'x-debug': '' } })).service, 'present')
  assert.equal((await via(g, '/', { headers: { 'x-region': 'us' } })).service, 'inverted')
  // No condition holds: x-beta is not exactly 1, x-tenant does not match the whole regex, x-region is eu.
  assertErrorResponse(await g.request('/', { headers: { 'x-beta': '11', 'x-tenant': 't-1234', 'x-region': 'eu' } }), 404, 'FASTMESH_ERR_NO_ROUTE')
})

test('query conditions route by query parameter', async (t) => {
  const g = await mesh(t, ['debug', 'v2'], [
    { name: 'debug', match: { query: [{ name: 'debug', present: true }] }, destination: { service: 'debug' } },
    { name: 'v2', match: { query: [{ name: 'version', exact: '2' }] }, destination: { service: 'v2' } }
  ])
  assert.equal((await via(g, '/search?debug')).service, 'debug')
  assert.equal((await via(g, '/search?q=x&version=2')).service, 'v2')
  assertErrorResponse(await g.request('/search?version=3'), 404, 'FASTMESH_ERR_NO_ROUTE')
  // The condition is on the query, never on the path.
  assertErrorResponse(await g.request('/debug'), 404, 'FASTMESH_ERR_NO_ROUTE')
})

test('precedence: an exact path beats a prefix listed before it', async (t) => {
  const g = await mesh(t, ['prefix', 'exact'], [
    { name: 'prefix', match: { path: { prefix: '/docs' } }, destination: { service: 'prefix' } },
    { name: 'exact', match: { path: { exact: '/docs/index' } }, destination: { service: 'exact' } }
  ])
  assert.equal((await via(g, '/docs/index')).service, 'exact')
  assert.equal((await via(g, '/docs/other')).service, 'prefix')
})

test('precedence: a longer prefix beats a shorter one listed before it', async (t) => {
  const g = await mesh(t, ['short', 'long'], [
    { name: 'short', match: { path: { prefix: '/api' } }, destination: { service: 'short' } },
    { name: 'long', match: { path: { prefix: '/api/v2' } }, destination: { service: 'long' } }
  ])
  assert.equal((await via(g, '/api/v2/items')).service, 'long')
  assert.equal((await via(g, '/api/v1/items')).service, 'short')
  assert.equal((await via(g, '/api/v2x')).service, 'short')
})

test('precedence: a header-conditioned route beats the same path without the condition', async (t) => {
  const g = await mesh(t, ['plain', 'beta'], [
    { name: 'plain', match: { path: { prefix: '/users' } }, destination: { service: 'plain' } },
    { name: 'beta', match: { path: { prefix: '/users' }, headers: [{ name: 'x-beta', exact: '1' }] }, destination: { service: 'beta' } }
  ])
  assert.equal((await via(g, '/users/7', { headers: { 'x-beta': '1' } })).service, 'beta')
  assert.equal((await via(g, '/users/7')).service, 'plain')
})

test('precedence: priority overrides the automatic order', async (t) => {
  const g = await mesh(t, ['exact', 'catchall'], [
    { name: 'exact', match: { path: { exact: '/status' } }, destination: { service: 'exact' } },
    { name: 'catchall', priority: 10, match: { path: { prefix: '/' } }, destination: { service: 'catchall' } }
  ])
  assert.equal((await via(g, '/status')).service, 'catchall')
})

test('stripPrefix removes the matched prefix before forwarding', async (t) => {
  const g = await mesh(t, ['catalog'], [{ name: 'catalog', match: { path: { prefix: '/catalog/' } }, destination: { service: 'catalog', stripPrefix: true } }])
  assert.equal((await via(g, '/catalog/items/3')).url, '/items/3')
  assert.equal((await via(g, '/catalog')).url, '/')
  assert.equal((await via(g, '/catalog/')).url, '/')
})

test('rewriteHost replaces the Host header sent upstream', async (t) => {
  const g = await mesh(t, ['internal', 'plain'], [
    { name: 'internal', match: { path: { prefix: '/internal' } }, destination: { service: 'internal', rewriteHost: 'internal.svc.local' } },
    { name: 'plain', match: { path: { prefix: '/plain' } }, destination: { service: 'plain' } }
  ])
  const rewritten = await via(g, '/internal/x', { headers: { host: 'shop.example.com' } })
  assert.equal(rewritten.headers.host, 'internal.svc.local')
  assert.equal(rewritten.headers['x-forwarded-host'], 'shop.example.com')
  // Without rewriteHost the client's Host goes upstream unchanged.
  assert.equal((await via(g, '/plain/x', { headers: { host: 'shop.example.com' } })).headers.host, 'shop.example.com')
})

test('the query string is forwarded unchanged, also through a path rewrite', async (t) => {
  const g = await mesh(t, ['users', 'catalog', 'plain'], [
    { name: 'users', match: { path: { template: '/users/:id' } }, destination: { service: 'users', rewritePath: '/v1/users/:id' } },
    { name: 'catalog', match: { path: { prefix: '/catalog' } }, destination: { service: 'catalog', stripPrefix: true } },
    { name: 'plain', match: { path: { prefix: '/plain' } }, destination: { service: 'plain' } }
  ])
  const query = '?a=1&b=two%20words&a=3&empty=&flag'
  assert.equal((await via(g, `/users/9${query}`)).url, `/v1/users/9${query}`)
  assert.equal((await via(g, `/catalog/items${query}`)).url, `/items${query}`)
  assert.equal((await via(g, `/plain/x${query}`)).url, `/plain/x${query}`)
})

test('paths are normalised before matching: /public/../admin is matched and forwarded as /admin', async (t) => {
  const g = await mesh(t, ['public', 'admin'], [
    { name: 'public', match: { path: { prefix: '/public' } }, destination: { service: 'public' } },
    { name: 'admin', match: { path: { exact: '/admin' } }, destination: { service: 'admin' } }
  ])
  for (const path of ['/public/../admin', '/public/%2e%2e/admin', '/public/%2E%2E/admin', '/public/./../admin', '//admin']) {
    const seen = await via(g, path)
    assert.equal(seen.service, 'admin', `route for ${path}`)
    assert.equal(seen.url, '/admin', `path forwarded for ${path}`)
  }
})

test('a route without match conditions takes every request', async (t) => {
  const g = await mesh(t, ['all'], [{ name: 'all', destination: { service: 'all' } }])
  assert.equal((await via(g, '/anything/at/all?x=1', { method: 'DELETE', headers: { host: 'whatever.test' } })).url, '/anything/at/all?x=1')
})

test('regression: an absolute-form request target is routed on its authority and path, not forwarded as /host/path', async (t) => {
  // Before the fix the edge listener left `GET http://shop.example.com/api/x` as it came: it
  // was matched and forwarded as the path `/shop.example.com/api/x`.
  const g = await mesh(t, ['api', 'other'], [
    { name: 'api', match: { hosts: ['shop.example.com'], path: { prefix: '/api' } }, destination: { service: 'api' } },
    { name: 'other', destination: { service: 'other' } }
  ])
  const res = await plainRequest(g.url, 'http://shop.example.com/api/x?q=1', { headers: { host: 'ignored.example.org' } })
  assert.equal(res.status, 200)
  const seen = res.json<EchoRecord>()
  assert.equal(seen.service, 'api')
  assert.equal(seen.url, '/api/x?q=1')
  assert.equal(seen.headers.host, 'shop.example.com')
})

test('regression: a route without a method condition takes methods Fastify does not know by default (PURGE, LINK)', async (t) => {
  // Before the fix the route was registered for Fastify's default method list only, and a
  // PURGE matched by our router still got 404 FASTMESH_ERR_NO_ROUTE.
  const g = await mesh(t, ['cache'], [{ name: 'cache', match: { path: { prefix: '/assets' } }, destination: { service: 'cache' } }])
  const purge = await via(g, '/assets/app.js', { method: 'PURGE' })
  assert.equal(purge.method, 'PURGE')
  assert.equal(purge.url, '/assets/app.js')
  assert.equal((await via(g, '/assets/x', { method: 'LINK' })).method, 'LINK')
})

test('a method condition also selects methods Fastify does not know by default', async (t) => {
  const g = await mesh(t, ['cache', 'site'], [
    { name: 'site', match: { path: { prefix: '/' } }, destination: { service: 'site' } },
    { name: 'purge', match: { path: { prefix: '/' }, methods: ['PURGE'] }, destination: { service: 'cache' } }
  ])
  assert.equal((await via(g, '/x', { method: 'PURGE' })).service, 'cache')
  assert.equal((await via(g, '/x')).service, 'site')
})
