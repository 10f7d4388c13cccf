// The built-in `cors` plugin (on @fastify/cors) on a real gateway and upstreams: preflights
// answered by the gateway (the upstream never sees them), the CORS headers on the upstream's
// own answers (Vary merged with the upstream's), credentials, exposed headers, a route without
// the plugin untouched, and the config error for `*` with credentials.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { startEcho, meshConfig, type EchoUpstream } from '../helpers/upstreams.js'
import { validateConfigDocument as validateConfig } from '../../src/config/validate.js'

const APP = 'https://app.example.com'

function corsRoute (name: string, prefix: string, options: Record<string, unknown>): Record<string, unknown> {
  return { name, match: { path: { prefix } }, destination: { service: 'svc' }, plugins: [{ name: 'cors', options }] }
}

/** A gateway with two CORS routes (different policies) and one without, over one echo upstream. */
async function gateway (t: TestContext, upstreamHeaders: Record<string, string> = {}): Promise<{ g: TestGateway, echo: EchoUpstream }> {
  const echo = await startEcho(t, 'svc', upstreamHeaders)
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    corsRoute('api', '/api', { origins: [APP, 'https://Admin.Example.com:8443'], methods: ['GET', 'PUT', 'DELETE'], allowedHeaders: ['content-type', 'authorization'], exposedHeaders: ['x-served-by', 'x-request-id'], credentials: true, maxAge: '10m' }),
    corsRoute('open', '/open', { origins: ['*'] }),
    { name: 'plain', match: { path: { prefix: '/plain' } }, destination: { service: 'svc' } }
  ]))
  return { g, echo }
}

function preflight (origin: string, method = 'PUT', requestHeaders?: string): Record<string, string> {
  const h: Record<string, string> = { origin, 'access-control-request-method': method }
  if (requestHeaders !== undefined) h['access-control-request-headers'] = requestHeaders
  return h
}

test('cors preflight from an allowed origin: 204 from the gateway with the route\'s Access-Control-* headers; the upstream is not called', async (t) => {
  const { g, echo } = await gateway(t)
  const res = await g.request('/api/orders', { method: 'OPTIONS', headers: preflight(APP, 'PUT', 'content-type') })
  assert.equal(res.status, 204)
  assert.equal(res.text, '')
  assert.equal(res.headers['access-control-allow-origin'], APP)
  assert.equal(res.headers['access-control-allow-methods'], 'GET, PUT, DELETE')
  assert.equal(res.headers['access-control-allow-headers'], 'content-type, authorization')
  assert.equal(res.headers['access-control-allow-credentials'], 'true')
  assert.equal(res.headers['access-control-max-age'], '600')
  assert.match(String(res.headers.vary), /\borigin\b/i)
  assert.equal(typeof res.headers['x-request-id'], 'string', 'the gateway\'s answer carries the request id')
  assert.equal(echo.seen.length, 0)
  // The configured origin's case does not matter (browsers send origins in lower case).
  const second = await g.request('/api/orders', { method: 'OPTIONS', headers: preflight('https://admin.example.com:8443') })
  assert.equal(second.headers['access-control-allow-origin'], 'https://admin.example.com:8443')
  assert.equal(echo.seen.length, 0)
})

test('cors preflight from an origin not listed: answered by the gateway without Access-Control-Allow-Origin (the browser refuses), upstream not called', async (t) => {
  const { g, echo } = await gateway(t)
  for (const origin of ['https://evil.example.com', 'https://app.example.com.evil.net', 'http://app.example.com']) {
    const res = await g.request('/api/orders', { method: 'OPTIONS', headers: preflight(origin) })
    assert.equal(res.status, 204, origin)
    assert.equal(res.headers['access-control-allow-origin'], undefined, origin)
    assert.match(String(res.headers.vary), /\borigin\b/i, 'the answer depends on Origin, so caches must key on it')
  }
  assert.equal(echo.seen.length, 0)
})

test('cors without allowedHeaders: the preflight allows the headers it asks for, and says the answer varies with them', async (t) => {
  const { g } = await gateway(t)
  const res = await g.request('/open/x', { method: 'OPTIONS', headers: preflight('https://any.example', 'POST', 'x-custom, content-type') })
  assert.equal(res.status, 204)
  assert.equal(res.headers['access-control-allow-origin'], '*')
  assert.equal(res.headers['access-control-allow-headers'], 'x-custom, content-type')
  assert.match(String(res.headers.vary), /access-control-request-headers/i)
  assert.equal(res.headers['access-control-allow-credentials'], undefined)
})

test('cors actual request: the upstream answers, carrying the CORS headers, exposed headers and credentials; the upstream\'s Vary is kept beside Origin', async (t) => {
  const { g, echo } = await gateway(t, { vary: 'Accept-Encoding' })
  const res = await g.request('/api/orders', { method: 'PUT', body: '{}', headers: { origin: APP, 'content-type': 'application/json' } })
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-served-by'], 'svc', 'the upstream\'s own answer')
  assert.equal(res.headers['access-control-allow-origin'], APP)
  assert.equal(res.headers['access-control-allow-credentials'], 'true')
  assert.equal(res.headers['access-control-expose-headers'], 'x-served-by, x-request-id')
  assert.equal(res.headers['access-control-allow-methods'], undefined, 'preflight headers only on preflights')
  const vary = String(res.headers.vary).split(',').map((v) => v.trim().toLowerCase()).sort()
  assert.deepEqual(vary, ['accept-encoding', 'origin'])
  assert.equal(echo.seen.length, 1)
  assert.equal(echo.seen[0]!.headers.origin, APP, 'the Origin header still reaches the upstream')
})

test('cors actual request from an origin not listed: forwarded, but without Access-Control-Allow-Origin', async (t) => {
  const { g, echo } = await gateway(t)
  const res = await g.request('/api/orders', { headers: { origin: 'https://evil.example.com' } })
  assert.equal(res.status, 200)
  assert.equal(res.headers['access-control-allow-origin'], undefined)
  assert.equal(echo.seen.length, 1)
})

test('cors with `*`: any origin gets `*`, without credentials', async (t) => {
  const { g } = await gateway(t)
  const res = await g.request('/open/x', { headers: { origin: 'https://whoever.example' } })
  assert.equal(res.status, 200)
  assert.equal(res.headers['access-control-allow-origin'], '*')
  assert.equal(res.headers['access-control-allow-credentials'], undefined)
})

test('cors: an OPTIONS that is not a preflight (no Access-Control-Request-Method) goes to the upstream', async (t) => {
  const { g, echo } = await gateway(t)
  const res = await g.request('/api/orders', { method: 'OPTIONS', headers: { origin: APP } })
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-served-by'], 'svc')
  assert.equal(res.headers['access-control-allow-origin'], APP)
  assert.equal(echo.seen.length, 1)
  assert.equal(echo.seen[0]!.method, 'OPTIONS')
})

test('cors: a route without the plugin is untouched (preflights reach its upstream, no CORS headers added)', async (t) => {
  const { g, echo } = await gateway(t)
  const pre = await g.request('/plain/x', { method: 'OPTIONS', headers: preflight(APP) })
  assert.equal(pre.status, 200)
  assert.equal(pre.headers['access-control-allow-origin'], undefined)
  const res = await g.request('/plain/x', { headers: { origin: APP } })
  assert.equal(res.headers['access-control-allow-origin'], undefined)
  assert.equal(res.headers.vary, undefined)
  assert.equal(echo.seen.length, 2)
})

test('cors: the gateway\'s own error answers on the route carry the CORS headers too (a browser can read them)', async (t) => {
  const g = await startGateway(t, meshConfig({ svc: [1] }, [corsRoute('api', '/api', { origins: [APP] })]))
  const res = await g.request('/api/x', { headers: { origin: APP } })
  assert.ok(res.status >= 500, `the dead upstream gives a gateway error (${res.status})`)
  assert.equal(res.headers['access-control-allow-origin'], APP)
})

test('cors: `*` with credentials: true refuses the config, naming the origins item', () => {
  const result = validateConfig({ ...meshConfig({ svc: [1] }, [corsRoute('api', '/api', { origins: [APP, '*'], credentials: true })]) })
  assert.equal(result.config, undefined)
  const paths = result.problems.map((p) => p.path)
  assert.ok(paths.includes('$.routes[0].plugins[0].options.origins[1]'), JSON.stringify(result.problems))
  const problem = result.problems.find((p) => p.path === '$.routes[0].plugins[0].options.origins[1]')!
  assert.match(problem.message, /"\*" is not allowed/)
  assert.match(problem.hint ?? '', /credentials/)
  assert.equal(result.problems.length, 1, JSON.stringify(result.problems))
  // Without credentials, `*` is fine; so are listed origins with credentials.
  assert.deepEqual(validateConfig(meshConfig({ svc: [1] }, [corsRoute('api', '/api', { origins: ['*'] })])).problems, [])
  assert.deepEqual(validateConfig(meshConfig({ svc: [1] }, [corsRoute('api', '/api', { origins: [APP], credentials: true })])).problems, [])
})

test('cors: an origin with a path is refused, naming it', () => {
  const result = validateConfig(meshConfig({ svc: [1] }, [corsRoute('api', '/api', { origins: ['https://app.example.com/'] })]))
  assert.ok(result.problems.some((p) => p.path === '$.routes[0].plugins[0].options.origins[0]'), JSON.stringify(result.problems))
})

test('cors as a gateway-wide plugin: every route answers preflights (each route context holds its own @fastify/cors route), and a route can switch it off', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'a', match: { path: { prefix: '/a' } }, destination: { service: 'svc' } },
    { name: 'b', match: { path: { prefix: '/b' } }, destination: { service: 'svc' } },
    { name: 'off', match: { path: { prefix: '/off' } }, destination: { service: 'svc' }, disablePlugins: ['cors'] }
  ], { plugins: [{ name: 'cors', options: { origins: [APP] } }] }))
  for (const path of ['/a/x', '/b/x']) {
    const res = await g.request(path, { method: 'OPTIONS', headers: preflight(APP, 'GET') })
    assert.equal(res.status, 204, path)
    assert.equal(res.headers['access-control-allow-origin'], APP, path)
  }
  assert.equal(echo.seen.length, 0)
  const off = await g.request('/off/x', { method: 'OPTIONS', headers: preflight(APP, 'GET') })
  assert.equal(off.status, 200, 'the route without it sends the preflight upstream')
  assert.equal(echo.seen.length, 1)
})

test('cors runs before the route\'s other plugins wherever it is listed: a preflight needs no token, and a 401 carries the CORS headers (route list and gateway-wide jwt)', async (t) => {
  const echo = await startEcho(t, 'svc')
  const jwt = { name: 'jwt', options: { secret: 's'.repeat(32) } }
  const cors = { name: 'cors', options: { origins: [APP], credentials: true } }
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    // jwt listed first on the route itself...
    { name: 'listed', match: { path: { prefix: '/listed' } }, destination: { service: 'svc' }, plugins: [jwt, cors] },
    // ...and jwt gateway-wide, which always comes in front of the route's own plugins.
    { name: 'wide', match: { path: { prefix: '/wide' } }, destination: { service: 'svc' }, plugins: [cors] }
  ], { plugins: [jwt] }))
  for (const path of ['/listed/x', '/wide/x']) {
    // Browsers send preflights without credentials (Fetch standard, CORS-preflight request).
    const pre = await g.request(path, { method: 'OPTIONS', headers: preflight(APP, 'PUT', 'authorization') })
    assert.equal(pre.status, 204, `${path}: ${pre.text}`)
    assert.equal(pre.headers['access-control-allow-origin'], APP, path)
    assert.equal(pre.headers['www-authenticate'], undefined, path)
    // The refusal of the actual request is readable by the page: CORS headers on the 401.
    const refused = await g.request(path, { method: 'PUT', headers: { origin: APP } })
    assert.equal(refused.status, 401, path)
    assert.equal(refused.headers['access-control-allow-origin'], APP, path)
    assert.equal(refused.headers['access-control-allow-credentials'], 'true', path)
    assert.match(String(refused.headers.vary), /\borigin\b/i, path)
    assert.equal(refused.headers['www-authenticate'], 'Bearer realm="' + path.split('/')[1]! + '"', path)
  }
  assert.equal(echo.seen.length, 0, 'neither a preflight nor an unauthenticated request reached the upstream')
})

test('cors: a configured origin with its scheme\'s default port matches what browsers send (they leave the port out)', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [corsRoute('api', '/api', { origins: ['https://App.Example.com:443', 'http://localhost:80'] })]))
  for (const origin of ['https://app.example.com', 'http://localhost']) {
    const pre = await g.request('/api/x', { method: 'OPTIONS', headers: preflight(origin, 'GET') })
    assert.equal(pre.headers['access-control-allow-origin'], origin, origin)
    assert.equal((await g.request('/api/x', { headers: { origin } })).headers['access-control-allow-origin'], origin, origin)
  }
  // Another port is another origin.
  assert.equal((await g.request('/api/x', { headers: { origin: 'https://app.example.com:8443' } })).headers['access-control-allow-origin'], undefined)
})
