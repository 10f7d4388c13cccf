// Who may use the admin API of a running gateway: the Host it answers to (DNS rebinding),
// same-origin and JSON-only changes, body size, and the bearer token. The rules themselves
// are unit-tested in test/unit/admin-access.test.ts; this is their wiring on a real listener.
import test from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { startGateway, readResponse, assertErrorResponse, type HttpResult, type TestGateway } from '../helpers/gateway.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'

const TOKEN = '5d2c8e0b7a9f41e6b3c2d1e0f9a8b7c6'

/** One admin call on a fresh connection, with exactly these headers (Host included when given). */
async function call (g: TestGateway, method: string, path: string, opts: { headers?: Record<string, string>, body?: string } = {}): Promise<HttpResult> {
  const { hostname, port } = new URL(g.adminUrl)
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path, method, headers: { ...(opts.body !== undefined ? { 'content-length': String(Buffer.byteLength(opts.body)) } : {}), ...opts.headers }, agent: false }, (res) => { readResponse(res).then(resolve, reject) })
    req.on('error', reject)
    req.end(opts.body)
  })
}

async function gatewayWith (t: test.TestContext, admin: Record<string, unknown> = {}): Promise<TestGateway> {
  const echo = await startEcho(t, 'users-1')
  return await startGateway(t, meshConfig({ users: [echo] }, [{ name: 'users', destination: { service: 'users' } }], {
    listeners: { http: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0, ...admin } }
  }))
}

const registration = JSON.stringify({ id: 'users-extra', address: '127.0.0.1', port: 9 })
const json = { 'content-type': 'application/json' }

async function endpointIds (g: TestGateway): Promise<string[]> {
  return (await g.admin('GET', '/services/users')).json<{ endpoints: Array<{ id: string }> }>().endpoints.map((e) => e.id)
}

test('regression: a POST registering an endpoint with a DNS-rebinding Host is refused 421 and registers nothing', async (t) => {
  const g = await gatewayWith(t)
  const res = await call(g, 'POST', '/services/users/endpoints', { headers: { ...json, host: 'evil.example:15000' }, body: registration })
  assertErrorResponse(res, 421, 'FASTMESH_ERR_ADMIN_MISDIRECTED')
  assert.deepEqual(await endpointIds(g), ['users-1'])
})

test('regression: GET /config with a DNS-rebinding Host is refused 421 and shows nothing of the config', async (t) => {
  const g = await gatewayWith(t)
  const res = await call(g, 'GET', '/config', { headers: { host: 'evil.example' } })
  assertErrorResponse(res, 421, 'FASTMESH_ERR_ADMIN_MISDIRECTED')
  assert.ok(!res.text.includes('users'), res.text)
})

test('an unknown path with a foreign Host is refused 421, not answered 404', async (t) => {
  const g = await gatewayWith(t)
  assertErrorResponse(await call(g, 'GET', '/nothing', { headers: { host: 'evil.example' } }), 421, 'FASTMESH_ERR_ADMIN_MISDIRECTED')
})

test('the admin API answers to localhost, 127.0.0.1 and [::1], with or without the port', async (t) => {
  const g = await gatewayWith(t)
  const port = new URL(g.adminUrl).port
  for (const host of ['localhost', `localhost:${port}`, '127.0.0.1', `127.0.0.1:${port}`, '[::1]', `[::1]:${port}`]) {
    assert.equal((await call(g, 'GET', '/routes', { headers: { host } })).status, 200, host)
  }
})

test('a name in listeners.admin.allowedHosts is answered', async (t) => {
  const g = await gatewayWith(t, { allowedHosts: ['gateway.internal'] })
  assert.equal((await call(g, 'GET', '/routes', { headers: { host: 'gateway.internal:15000' } })).status, 200)
  assert.equal((await call(g, 'GET', '/routes', { headers: { host: 'other.internal:15000' } })).status, 421)
})

test('/live and /ready answer whatever the Host (health checkers call by container IP) and reveal only liveness and the version', async (t) => {
  const g = await gatewayWith(t, { token: TOKEN })
  const live = await call(g, 'GET', '/live', { headers: { host: '172.18.0.2:15000' } })
  assert.equal(live.status, 200)
  assert.deepEqual(live.json(), { status: 'live' })
  const ready = await call(g, 'GET', '/ready', { headers: { host: '172.18.0.2:15000' } })
  assert.equal(ready.status, 200)
  assert.deepEqual(ready.json(), { status: 'ready', version: 1 })
})

test('regression: a cross-origin POST /reload is refused 403 FASTMESH_ERR_ADMIN_CROSS_ORIGIN and reloads nothing', async (t) => {
  const g = await gatewayWith(t)
  const port = new URL(g.adminUrl).port
  for (const origin of ['http://evil.example', 'null', `http://localhost:${port}`]) {
    const res = await call(g, 'POST', '/reload', { headers: { host: `127.0.0.1:${port}`, origin } })
    assertErrorResponse(res, 403, 'FASTMESH_ERR_ADMIN_CROSS_ORIGIN')
  }
  assert.deepEqual(g.gateway.reloads, { ok: 0, failed: 0 })
})

test('a same-origin POST (Origin is the admin listener itself) is accepted', async (t) => {
  const g = await gatewayWith(t)
  const port = new URL(g.adminUrl).port
  const res = await call(g, 'POST', '/reload', { headers: { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}` } })
  assert.equal(res.status, 200, res.text)
})

test('regression: a text/plain POST /reload (what a page may send cross-origin without asking) is refused 415 and reloads nothing', async (t) => {
  const g = await gatewayWith(t)
  const res = await call(g, 'POST', '/reload', { headers: { 'content-type': 'text/plain' }, body: 'x' })
  assertErrorResponse(res, 415, 'FASTMESH_ERR_ADMIN_UNSUPPORTED_MEDIA_TYPE')
  assert.deepEqual(g.gateway.reloads, { ok: 0, failed: 0 })
})

test('a registration sent as text/plain or a form is refused 415 and registers nothing', async (t) => {
  const g = await gatewayWith(t)
  for (const type of ['text/plain', 'application/x-www-form-urlencoded']) {
    assertErrorResponse(await call(g, 'POST', '/services/users/endpoints', { headers: { 'content-type': type }, body: registration }), 415, 'FASTMESH_ERR_ADMIN_UNSUPPORTED_MEDIA_TYPE')
  }
  assertErrorResponse(await call(g, 'POST', '/services/users/endpoints'), 415, 'FASTMESH_ERR_ADMIN_UNSUPPORTED_MEDIA_TYPE')
  assert.deepEqual(await endpointIds(g), ['users-1'])
})

test('a registration body over 64 KiB is refused 413 FASTMESH_ERR_ADMIN_BODY_TOO_LARGE', async (t) => {
  const g = await gatewayWith(t)
  const body = JSON.stringify({ address: '127.0.0.1', port: 9, meta: { pad: 'x'.repeat(70 * 1024) } })
  assertErrorResponse(await call(g, 'POST', '/services/users/endpoints', { headers: json, body }), 413, 'FASTMESH_ERR_ADMIN_BODY_TOO_LARGE')
  assert.deepEqual(await endpointIds(g), ['users-1'])
})

test('with listeners.admin.token, a call without the bearer token is refused 401 with WWW-Authenticate; with it, answered', async (t) => {
  const g = await gatewayWith(t, { token: TOKEN })
  for (const headers of [{}, { authorization: `Bearer ${TOKEN.slice(0, -1)}0` }, { authorization: `Basic ${TOKEN}` }] as Array<Record<string, string>>) {
    const res = await call(g, 'GET', '/config', { headers })
    assertErrorResponse(res, 401, 'FASTMESH_ERR_ADMIN_UNAUTHORIZED')
    assert.match(String(res.headers['www-authenticate']), /^Bearer /)
  }
  assertErrorResponse(await call(g, 'POST', '/services/users/endpoints', { headers: json, body: registration }), 401, 'FASTMESH_ERR_ADMIN_UNAUTHORIZED')
  assert.deepEqual(g.gateway.registry.snapshot('users')?.endpoints.map((e) => e.id), ['users-1'])
  const ok = await call(g, 'GET', '/config', { headers: { authorization: `Bearer ${TOKEN}` } })
  assert.equal(ok.status, 200)
  assert.equal(ok.json<{ config: { listeners: { admin: { token: string } } } }>().config.listeners.admin.token, '<redacted>')
  assert.ok(!ok.text.includes(TOKEN), 'the token is not in /config')
  const created = await call(g, 'POST', '/services/users/endpoints', { headers: { ...json, authorization: `Bearer ${TOKEN}` }, body: registration })
  assert.equal(created.status, 201, created.text)
})

test('an admin listener on 0.0.0.0 with a token starts, and requires the token', async (t) => {
  const g = await gatewayWith(t, { address: '0.0.0.0', token: TOKEN })
  assert.equal(g.gateway.adminAddress.address, '0.0.0.0')
  assertErrorResponse(await call(g, 'GET', '/routes', { headers: { host: 'fastmesh-demo:15000' } }), 401, 'FASTMESH_ERR_ADMIN_UNAUTHORIZED')
  assert.equal((await call(g, 'GET', '/routes', { headers: { host: 'fastmesh-demo:15000', authorization: `Bearer ${TOKEN}` } })).status, 200)
  assert.equal((await call(g, 'GET', '/ready')).status, 200)
})
