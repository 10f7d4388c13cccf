// The embedded registry behind a running gateway: active health checks move endpoints in
// and out of rotation; the admin API registers and removes endpoints at run time.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { startEcho, startSample, embeddedServices, meshConfig } from '../helpers/upstreams.js'
import type { SampleService } from '../../src/demo/sample-service.js'

const FAST_CHECK = { path: '/health', interval: '100ms', timeout: '500ms', unhealthyThreshold: 1, healthyThreshold: 1 }

interface AdminEndpoint { id: string, health: string, healthDetail?: string, origin: string, port: number }
interface AdminService { name: string, healthy: number, endpoints: AdminEndpoint[] }

async function serviceState (g: TestGateway, name: string): Promise<AdminService> {
  const services = (await g.admin('GET', '/services')).json<{ services: AdminService[] }>().services
  const s = services.find((x) => x.name === name)
  assert.ok(s !== undefined, `service ${name} is listed`)
  return s
}

async function waitForHealth (g: TestGateway, service: string, id: string, health: string): Promise<AdminEndpoint> {
  return await eventually(async () => {
    const e = (await serviceState(g, service)).endpoints.find((x) => x.id === id)
    return e?.health === health ? e : undefined
  }, `${service}/${id} to be ${health}`)
}

/** Who served each of `n` sequential requests (the x-served-by header of the upstream). */
async function servedBy (g: TestGateway, n: number, path = '/'): Promise<string[]> {
  const out: string[] = []
  for (let i = 0; i < n; i++) {
    const res = await g.request(path)
    assert.equal(res.status, 200, `request ${i}: ${res.text}`)
    out.push(String(res.headers['x-served-by']))
  }
  return out
}

/** Round robin over `members`: every request goes to the next one, in a fixed cycle. */
function assertRoundRobin (served: string[], members: string[]): void {
  assert.deepEqual(new Set(served), new Set(members), `served by ${served.join(',')}`)
  const cycle = served.slice(0, members.length)
  for (let i = 0; i < served.length; i++) assert.equal(served[i], cycle[i % members.length], `request ${i} in ${served.join(',')}`)
}

async function twoInstances (t: TestContext): Promise<{ g: TestGateway, a: SampleService, b: SampleService }> {
  const a = await startSample(t, 'orders', 'orders-a')
  const b = await startSample(t, 'orders', 'orders-b')
  const g = await startGateway(t, {
    discovery: { embedded: { services: embeddedServices({ orders: [a, b] }, FAST_CHECK) } },
    routes: [{ name: 'orders', destination: { service: 'orders' } }]
  })
  await waitForHealth(g, 'orders', 'orders-1', 'passing')
  await waitForHealth(g, 'orders', 'orders-2', 'passing')
  return { g, a, b }
}

test('round robin alternates exactly over the healthy endpoints', async (t) => {
  const { g } = await twoInstances(t)
  assertRoundRobin(await servedBy(g, 10), ['orders-a', 'orders-b'])
})

test('an endpoint whose health check fails leaves the rotation', async (t) => {
  const { g, b } = await twoInstances(t)
  b.healthy = false
  const e = await waitForHealth(g, 'orders', 'orders-2', 'critical')
  assert.match(String(e.healthDetail), /503/)
  assert.deepEqual(await servedBy(g, 6), Array(6).fill('orders-a'))
})

test('an endpoint whose health check passes again rejoins the rotation', async (t) => {
  const { g, b } = await twoInstances(t)
  b.healthy = false
  await waitForHealth(g, 'orders', 'orders-2', 'critical')
  b.healthy = true
  await waitForHealth(g, 'orders', 'orders-2', 'passing')
  assertRoundRobin(await servedBy(g, 6), ['orders-a', 'orders-b'])
})

test('a new endpoint with a health check only takes traffic after its first passing probe', async (t) => {
  const a = await startSample(t, 'orders', 'orders-a')
  const late = await startSample(t, 'orders', 'orders-late')
  late.healthy = false
  const g = await startGateway(t, {
    discovery: { embedded: { services: embeddedServices({ orders: [a, late] }, FAST_CHECK) } },
    routes: [{ name: 'orders', destination: { service: 'orders' } }]
  })
  await waitForHealth(g, 'orders', 'orders-1', 'passing')
  assert.deepEqual(await servedBy(g, 4), Array(4).fill('orders-a'))
  late.healthy = true
  await waitForHealth(g, 'orders', 'orders-2', 'passing')
  assertRoundRobin(await servedBy(g, 4), ['orders-a', 'orders-late'])
})

test('regression: /services shows why a never-healthy endpoint fails its check, not "waiting for the first health check"', async (t) => {
  // Before the fix a failing probe of an endpoint that had never passed updated the endpoint
  // without publishing it, so the admin API kept the placeholder detail forever.
  const sick = await startSample(t, 'orders', 'orders-sick')
  sick.healthy = false
  const g = await startGateway(t, {
    discovery: { embedded: { services: embeddedServices({ orders: [sick] }, FAST_CHECK) } },
    routes: [{ name: 'orders', destination: { service: 'orders' } }]
  })
  const e = await eventually(async () => {
    const ep = (await serviceState(g, 'orders')).endpoints[0]
    return ep?.healthDetail !== 'waiting for the first health check' ? ep : undefined
  }, 'the health detail of the first failed probe')
  assert.equal(e.health, 'critical')
  assert.equal(e.healthDetail, 'GET /health answered 503')
})

test('an endpoint registered through POST /services/:service/endpoints receives traffic', async (t) => {
  const first = await startEcho(t, 'users-1')
  const second = await startEcho(t, 'users-2')
  const g = await startGateway(t, meshConfig({ users: [first] }, [{ name: 'users', destination: { service: 'users' } }]))
  assert.deepEqual(await servedBy(g, 2), ['users-1', 'users-1'])
  const res = await g.admin('POST', '/services/users/endpoints', { id: 'users-extra', address: '127.0.0.1', port: second.port, tags: ['v2'] })
  assert.equal(res.status, 201)
  const created = res.json<AdminEndpoint>()
  assert.equal(created.id, 'users-extra')
  assert.equal(created.origin, 'admin')
  assertRoundRobin(await servedBy(g, 6), ['users-1', 'users-2'])
})

test('an endpoint removed through DELETE /services/:service/endpoints/:id stops receiving traffic', async (t) => {
  const first = await startEcho(t, 'users-1')
  const second = await startEcho(t, 'users-2')
  const g = await startGateway(t, meshConfig({ users: [first] }, [{ name: 'users', destination: { service: 'users' } }]))
  assert.equal((await g.admin('POST', '/services/users/endpoints', { id: 'users-extra', address: '127.0.0.1', port: second.port })).status, 201)
  assertRoundRobin(await servedBy(g, 4), ['users-1', 'users-2'])
  const del = await g.admin('DELETE', '/services/users/endpoints/users-extra')
  assert.equal(del.status, 204)
  assert.deepEqual(await servedBy(g, 4), Array(4).fill('users-1'))
  assert.deepEqual((await serviceState(g, 'users')).endpoints.map((e) => e.id), ['users-1'])
})

test('DELETE of an unknown endpoint answers 404 FASTMESH_ERR_ADMIN_NOT_FOUND', async (t) => {
  const first = await startEcho(t, 'users-1')
  const g = await startGateway(t, meshConfig({ users: [first] }, [{ name: 'users', destination: { service: 'users' } }]))
  const res = await g.admin('DELETE', '/services/users/endpoints/nope')
  assert.equal(res.status, 404)
  assert.equal(res.json<{ error: { code: string } }>().error.code, 'FASTMESH_ERR_ADMIN_NOT_FOUND')
})

test('a runtime registration with a health check waits for its first passing probe', async (t) => {
  const a = await startSample(t, 'orders', 'orders-a')
  const extra = await startSample(t, 'orders', 'orders-extra')
  extra.healthy = false
  const g = await startGateway(t, {
    discovery: { embedded: { services: embeddedServices({ orders: [a] }, FAST_CHECK) } },
    routes: [{ name: 'orders', destination: { service: 'orders' } }]
  })
  await waitForHealth(g, 'orders', 'orders-1', 'passing')
  const res = await g.admin('POST', '/services/orders/endpoints', { id: 'orders-extra', address: '127.0.0.1', port: extra.port })
  assert.equal(res.status, 201)
  assert.equal(res.json<AdminEndpoint>().health, 'critical')
  assert.deepEqual(await servedBy(g, 4), Array(4).fill('orders-a'))
  extra.healthy = true
  await waitForHealth(g, 'orders', 'orders-extra', 'passing')
  assertRoundRobin(await servedBy(g, 4), ['orders-a', 'orders-extra'])
})

for (const [what, body] of [
  ['a missing address', { port: 8080 }],
  ['a port that is not a number', { address: '127.0.0.1', port: 'eighty' }],
  ['a port out of range', { address: '127.0.0.1', port: 70000 }],
  ['an unknown field', { address: '127.0.0.1', port: 8080, colour: 'blue' }]
] as const) {
  test(`admin endpoint registration with ${what} answers 400 FASTMESH_ERR_ADMIN_BAD_REQUEST`, async (t) => {
    const first = await startEcho(t, 'users-1')
    const g = await startGateway(t, meshConfig({ users: [first] }, [{ name: 'users', destination: { service: 'users' } }]))
    const res = await g.admin('POST', '/services/users/endpoints', body)
    assert.equal(res.status, 400, res.text)
    const err = res.json<{ error: { code: string, message: string, requestId: string } }>().error
    assert.equal(err.code, 'FASTMESH_ERR_ADMIN_BAD_REQUEST')
    assert.ok(err.message.length > 0)
    assert.equal(typeof err.requestId, 'string')
    // Nothing was registered.
    assert.deepEqual((await serviceState(g, 'users')).endpoints.map((e) => e.id), ['users-1'])
  })
}

test('admin endpoint registration with a body that is not JSON answers 400 FASTMESH_ERR_ADMIN_BAD_REQUEST', async (t) => {
  const first = await startEcho(t, 'users-1')
  const g = await startGateway(t, meshConfig({ users: [first] }, [{ name: 'users', destination: { service: 'users' } }]))
  const res = await fetch(`${g.adminUrl}/services/users/endpoints`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"address": ' })
  assert.equal(res.status, 400)
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'FASTMESH_ERR_ADMIN_BAD_REQUEST')
})

test('runtime registrations survive a config reload', async (t) => {
  const first = await startEcho(t, 'users-1')
  const second = await startEcho(t, 'users-2')
  const config = meshConfig({ users: [first] }, [{ name: 'users', destination: { service: 'users' } }])
  const g = await startGateway(t, config)
  assert.equal((await g.admin('POST', '/services/users/endpoints', { id: 'users-extra', address: '127.0.0.1', port: second.port })).status, 201)
  await g.writeConfig({ ...config, routes: [{ name: 'users-renamed', destination: { service: 'users' } }] })
  assert.equal((await g.gateway.reload('test')).ok, true)
  assertRoundRobin(await servedBy(g, 4), ['users-1', 'users-2'])
})
