// What the admin API takes at run time: endpoint registrations with a real address and a safe
// id, only for services the embedded registry declares, never over what the config owns.
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, assertErrorResponse, type TestGateway } from '../helpers/gateway.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'

async function gateway (t: test.TestContext): Promise<TestGateway> {
  const echo = await startEcho(t, 'users-1')
  return await startGateway(t, meshConfig({ users: [echo] }, [{ name: 'users', destination: { service: 'users' } }]))
}

async function endpoints (g: TestGateway): Promise<Array<{ id: string, address: string, port: number, origin: string }>> {
  return (await g.admin('GET', '/services/users')).json<{ endpoints: Array<{ id: string, address: string, port: number, origin: string }> }>().endpoints
}

test('regression: registering the address "not an address!" is refused 400 and registers nothing', async (t) => {
  const g = await gateway(t)
  for (const address of ['not an address!', '[::1]', '1.2.3', 'a..b']) {
    const res = await g.admin('POST', '/services/users/endpoints', { id: 'bad', address, port: 80 })
    const body = assertErrorResponse(res, 400, 'FASTMESH_ERR_ADMIN_BAD_REQUEST')
    assert.match(body.error.message, /address/, address)
  }
  assert.deepEqual((await endpoints(g)).map((e) => e.id), ['users-1'])
})

test('an IP address or a host name is accepted as an endpoint address', async (t) => {
  const g = await gateway(t)
  for (const [id, address] of [['v4', '127.0.0.2'], ['v6', '::1'], ['name', 'users-2.internal']]) {
    assert.equal((await g.admin('POST', '/services/users/endpoints', { id, address, port: 80 })).status, 201, address)
  }
})

test('regression: an endpoint id with "/" or ".." is refused 400 and registers nothing', async (t) => {
  const g = await gateway(t)
  for (const id of ['a/b', '..', '../users-1', 'x..y', 'with space']) {
    const res = await g.admin('POST', '/services/users/endpoints', { id, address: '127.0.0.1', port: 80 })
    assertErrorResponse(res, 400, 'FASTMESH_ERR_ADMIN_BAD_REQUEST')
  }
  assert.deepEqual((await endpoints(g)).map((e) => e.id), ['users-1'])
})

test('regression: a registration with the id of a config endpoint is refused 409 and the config endpoint stays as it was', async (t) => {
  const g = await gateway(t)
  const before = (await endpoints(g))[0]!
  const res = await g.admin('POST', '/services/users/endpoints', { id: 'users-1', address: '127.0.0.1', port: 9 })
  const body = assertErrorResponse(res, 409, 'FASTMESH_ERR_ADMIN_CONFLICT')
  assert.match(body.error.message, /users-1/)
  assert.deepEqual(await endpoints(g), [before])
  assert.equal((await g.request('/')).status, 200, 'traffic still reaches the config endpoint')
})

test('a registration without id whose address:port is a config endpoint\'s is refused 409', async (t) => {
  const echo = await startEcho(t, 'users-1')
  // Config endpoint without id: its id is address:port.
  const g = await startGateway(t, { discovery: { embedded: { services: { users: { endpoints: [{ address: '127.0.0.1', port: echo.port }] } } } }, routes: [{ name: 'users', destination: { service: 'users' } }] })
  assertErrorResponse(await g.admin('POST', '/services/users/endpoints', { address: '127.0.0.1', port: echo.port, weight: 5 }), 409, 'FASTMESH_ERR_ADMIN_CONFLICT')
})

test('DELETE of a config endpoint is refused 409 and it keeps serving', async (t) => {
  const g = await gateway(t)
  assertErrorResponse(await g.admin('DELETE', '/services/users/endpoints/users-1'), 409, 'FASTMESH_ERR_ADMIN_CONFLICT')
  assert.deepEqual((await endpoints(g)).map((e) => e.id), ['users-1'])
  assert.equal((await g.request('/')).status, 200)
})

test('re-registering an id the admin API registered replaces it', async (t) => {
  const g = await gateway(t)
  assert.equal((await g.admin('POST', '/services/users/endpoints', { id: 'extra', address: '127.0.0.1', port: 9 })).status, 201)
  assert.equal((await g.admin('POST', '/services/users/endpoints', { id: 'extra', address: '127.0.0.2', port: 10 })).status, 201)
  assert.deepEqual((await endpoints(g)).filter((e) => e.id === 'extra').map((e) => [e.address, e.port, e.origin]), [['127.0.0.2', 10, 'admin']])
})

test('regression: registering an endpoint of a service the embedded registry does not declare is refused 404 naming the service', async (t) => {
  const g = await gateway(t)
  const res = await g.admin('POST', '/services/ghost/endpoints', { id: 'g1', address: '127.0.0.1', port: 9 })
  const body = assertErrorResponse(res, 404, 'FASTMESH_ERR_ADMIN_NOT_FOUND')
  assert.match(body.error.message, /"ghost"/)
  assert.match(body.error.message, /discovery\.embedded\.services/)
  assertErrorResponse(await g.admin('GET', '/services/ghost'), 404, 'FASTMESH_ERR_ADMIN_NOT_FOUND')
})
