// Per-route plugins: the built-in `headers` plugin on both directions, encapsulation
// between routes, and custom plugins named under `customPlugins` with their options schema.
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, createGateway, tempDir, fixturePlugin, assertErrorResponse } from '../helpers/gateway.js'
import { startEcho, meshConfig, type EchoRecord } from '../helpers/upstreams.js'

const headersPlugin = {
  name: 'headers',
  options: {
    request: { set: { 'x-set': 'by-gateway', 'x-overwritten': 'new' }, add: { 'x-added': 'second' }, remove: ['x-drop-me'] },
    response: { set: { 'x-frame-options': 'DENY' }, add: { 'x-upstream-tag': 'edge' }, remove: ['x-internal'] }
  }
}

test('the headers plugin edits the request headers sent upstream', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'edited', destination: { service: 'svc' }, plugins: [headersPlugin] }]))
  const res = await g.request('/', { headers: { 'x-overwritten': 'old', 'x-added': 'first', 'x-drop-me': 'secret', 'x-untouched': 'same' } })
  assert.equal(res.status, 200)
  const seen = res.json<EchoRecord>().headers
  assert.equal(seen['x-set'], 'by-gateway')
  assert.equal(seen['x-overwritten'], 'new')
  assert.equal(seen['x-added'], 'first, second')
  assert.equal(seen['x-drop-me'], undefined)
  assert.equal(seen['x-untouched'], 'same')
})

test('the headers plugin edits the response headers sent to the client', async (t) => {
  const echo = await startEcho(t, 'svc', { 'x-internal': 'do-not-leak', 'x-upstream-tag': 'origin', 'x-frame-options': 'SAMEORIGIN' })
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'edited', destination: { service: 'svc' }, plugins: [headersPlugin] }]))
  const res = await g.request('/')
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-frame-options'], 'DENY')
  assert.deepEqual(res.headers['x-upstream-tag'], ['origin', 'edge'])
  assert.equal(res.headers['x-internal'], undefined)
  assert.equal(res.headers['x-served-by'], 'svc')
  assert.equal(res.json<EchoRecord>().service, 'svc', 'the body is untouched')
})

test('plugins of one route do not affect another route', async (t) => {
  const echo = await startEcho(t, 'svc', { 'x-internal': 'kept-here' })
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'edited', match: { path: { prefix: '/edited' } }, destination: { service: 'svc' }, plugins: [headersPlugin] },
    { name: 'plain', match: { path: { prefix: '/plain' } }, destination: { service: 'svc' } }
  ]))
  // The edited route first, so any leak would show on the next request.
  assert.equal((await g.request('/edited')).headers['x-frame-options'], 'DENY')
  const res = await g.request('/plain', { headers: { 'x-drop-me': 'stays' } })
  assert.equal(res.status, 200)
  const seen = res.json<EchoRecord>().headers
  assert.equal(seen['x-set'], undefined)
  assert.equal(seen['x-drop-me'], 'stays')
  assert.equal(res.headers['x-frame-options'], undefined)
  assert.equal(res.headers['x-internal'], 'kept-here')
})

test('plugins run in config order on their route', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{
    name: 'chain',
    destination: { service: 'svc' },
    plugins: [
      { name: 'headers', options: { request: { set: { 'x-step': 'one' } } } },
      { name: 'headers', options: { request: { add: { 'x-step': 'two' } } } }
    ]
  }]))
  assert.equal((await g.request('/')).json<EchoRecord>().headers['x-step'], 'one, two')
})

test('a custom plugin from customPlugins (relative module path) rejects a request with 401', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'secured', destination: { service: 'svc' }, plugins: [{ name: 'token', options: { token: 's3cret-token' } }] }
  ], { customPlugins: { token: { module: fixturePlugin(dir, 'require-token.js') } } }), { dir })
  const res = await g.request('/private', { headers: { authorization: 'Bearer wrong-token' } })
  const body = assertErrorResponse(res, 401, 'FIXTURE_UNAUTHORIZED')
  assert.equal(body.error.message, 'a valid bearer token is required')
  assert.equal(echo.seen.length, 0, 'the upstream never saw the request')
})

test('a custom plugin\'s reply.header() in an onRequest hook reaches the client with the upstream answer', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'secured', destination: { service: 'svc' }, plugins: [{ name: 'token', options: { token: 's3cret-token', header: 'x-auth' } }] }
  ], { customPlugins: { token: { module: fixturePlugin(dir, 'require-token.js') } } }), { dir })
  const res = await g.request('/private', { headers: { authorization: 'Bearer s3cret-token' } })
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-auth'], 'yes')
  assert.equal(res.headers['x-served-by'], 'svc')
  assert.equal(res.json<EchoRecord>().url, '/private')
})

test('regression: a custom plugin whose optionsSchema has defaults is accepted and gets the defaults', async (t) => {
  // Before the fix its options were validated in place on the frozen config: ajv could not
  // fill the default, so the route was refused ("must be string, got undefined").
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'secured', destination: { service: 'svc' }, plugins: [{ name: 'token', options: { token: 's3cret-token' } }] }
  ], { customPlugins: { token: { module: fixturePlugin(dir, 'require-token.js') } } }), { dir })
  const res = await g.request('/', { headers: { authorization: 'Bearer s3cret-token' } })
  assert.equal(res.headers['x-token-checked'], 'yes')
})

test('a custom plugin with options its optionsSchema refuses is refused before the gateway starts', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  await assert.rejects(createGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'secured', destination: { service: 'svc' }, plugins: [{ name: 'token', options: { token: 'short', colour: 'blue' } }] }
  ], { customPlugins: { token: { module: fixturePlugin(dir, 'require-token.js') } } }), { dir }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'FASTMESH_ERR_CONFIG_INVALID')
    assert.match(err.message, /\$\.routes\[0\]\.plugins\[0\]\.options\.token/)
    assert.match(err.message, /\$\.routes\[0\]\.plugins\[0\]\.options\.colour/)
    return true
  })
})

test('a reload to a custom plugin with invalid options is refused and the running routes stay', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const custom = { customPlugins: { token: { module: fixturePlugin(dir, 'require-token.js') } } }
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'open', destination: { service: 'svc' } }], custom), { dir })
  await g.writeConfig(meshConfig({ svc: [echo] }, [
    { name: 'secured', destination: { service: 'svc' }, plugins: [{ name: 'token', options: {} }] }
  ], custom))
  const res = await g.admin('POST', '/reload')
  assert.equal(res.status, 409)
  assert.match(res.json<{ error: { message: string } }>().error.message, /plugins\[0\]\.options\.token: is required/)
  assert.equal((await g.request('/')).status, 200)
})

test('a custom plugin module that cannot be loaded is refused with FASTMESH_ERR_PLUGIN_LOAD', async (t) => {
  const echo = await startEcho(t, 'svc')
  await assert.rejects(createGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'r', destination: { service: 'svc' }, plugins: [{ name: 'missing', options: {} }] }
  ], { customPlugins: { missing: { module: './no-such-plugin.js' } } })), (err: Error & { code?: string, problems?: Array<{ path: string }> }) => {
    assert.equal(err.code, 'FASTMESH_ERR_PLUGIN_LOAD')
    assert.deepEqual(err.problems?.map((p) => p.path), ['$.customPlugins.missing.module'])
    return true
  })
})

test('a built-in plugin with invalid options is refused at config load with its JSON path', async (t) => {
  const echo = await startEcho(t, 'svc')
  await assert.rejects(startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'r', destination: { service: 'svc' }, plugins: [{ name: 'headers', options: { request: { sett: {} } } }] }
  ])), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'FASTMESH_ERR_CONFIG_INVALID')
    assert.match(err.message, /\$\.routes\[0\]\.plugins\[0\]\.options\.request\.sett/)
    return true
  })
})
