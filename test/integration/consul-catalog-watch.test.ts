// One watch on the whole Consul catalog instead of one per service: 240 watched services on a
// real agent with its default limits (200 HTTP connections per client), changes of every kind
// (checks, node checks, re-registrations that change no check, services registered late)
// routed, and the connections to the agent counted from /proc.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Pool } from 'undici'
import { startConsul, type ConsulAgent } from '../helpers/consul.js'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { socketsTo } from '../helpers/sockets.js'
import { startSampleService, type SampleService } from '../../src/demo/sample-service.js'

const SERVICES = 240
const name = (i: number): string => `cw-${String(i).padStart(3, '0')}`

interface ServicesBody {
  services: Array<{ name: string, stale: boolean, endpoints: Array<{ id: string, port: number, health: string }> }>
}

describe('Consul discovery: one catalog watch for many services', () => {
  let agent: ConsulAgent
  let a: SampleService
  let b: SampleService
  // The harness talks to the agent from 127.0.0.2, so that counting the gateway's connections
  // (from 127.0.0.1, in this same process) leaves it out.
  let harness: Pool

  async function consulPut (apiPath: string, body: unknown): Promise<void> {
    const res = await harness.request({ method: 'PUT', path: apiPath, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } })
    const text = await res.body.text()
    assert.equal(res.statusCode, 200, `Consul PUT ${apiPath}: ${text}`)
  }

  const gatewayConnections = (): number => socketsTo(process.pid, agent.ports.http, '127.0.0.1')?.ESTABLISHED ?? 0

  /** PUT /v1/catalog/register on an external node (no agent runs its checks). */
  async function register (node: string, service: string, id: string, port: number, check?: 'passing' | 'critical'): Promise<void> {
    await consulPut('/v1/catalog/register', {
      Node: node,
      Address: '127.0.0.1',
      Service: { ID: id, Service: service, Address: '127.0.0.1', Port: port },
      ...(check !== undefined ? { Check: { Node: node, CheckID: `service:${id}`, Name: 'test check', Status: check, ServiceID: id } } : {})
    })
  }

  async function nodeCheck (node: string, status: 'passing' | 'critical'): Promise<void> {
    await consulPut('/v1/catalog/register', { Node: node, Address: '127.0.0.1', Check: { Node: node, CheckID: 'node-alive', Name: 'node alive', Status: status } })
  }

  async function instancesOf (gw: TestGateway, service: string, n: number): Promise<Set<string>> {
    const seen = new Set<string>()
    for (let i = 0; i < n; i++) {
      const r = await gw.request(`/${service}`)
      if (r.status !== 200) {
        seen.add(`status ${r.status}`)
        continue
      }
      seen.add(r.json<{ instance: string }>().instance)
    }
    return seen
  }

  const same = (s: Set<string>, expected: string[]): boolean => s.size === expected.length && expected.every((e) => s.has(e))

  before(async () => {
    agent = await startConsul()
    harness = new Pool(agent.url, { connections: 4, localAddress: '127.0.0.2' })
    a = await startSampleService('cw', 'a', 0)
    b = await startSampleService('cw', 'b', 0)
    // Every service has one passing instance (on A); four at a time, so the harness itself
    // holds few connections to the agent.
    let next = 0
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < SERVICES) {
        const i = next++
        await register(`ext-${i % 10}`, name(i), `${name(i)}-1`, a.port, 'passing')
      }
    }))
  })

  after(async () => {
    await harness.close()
    await agent.stop()
    await a.close()
    await b.close()
  })

  it('follows 240 services with a handful of agent connections, and every kind of change', async (t) => {
    const routes = Array.from({ length: SERVICES }, (_, i) => ({ name: name(i), match: { path: { prefix: `/${name(i)}` } }, destination: { service: name(i) } }))
    routes.push({ name: 'late', match: { path: { prefix: '/late' } }, destination: { service: 'late' } })
    const gw = await startGateway(t, {
      discovery: { consul: { address: agent.httpAddr, registerSelf: false, wait: '5s' } },
      telemetry: { logging: { accessLog: false } },
      routes
    })

    await t.test('every service converges, through at most 9 connections to the agent (two blocking queries, six reads, a keep-alive one from the start)', async () => {
      await eventually(async () => {
        const s = (await gw.admin('GET', '/services')).json<ServicesBody>()
        const ready = s.services.filter((x) => x.name.startsWith('cw-') && !x.stale && x.endpoints.length === 1 && x.endpoints[0]!.health === 'passing')
        return ready.length === SERVICES
      }, `all ${SERVICES} services to converge`, 30_000, 100)
      const established = gatewayConnections()
      assert.ok(established >= 2 && established <= 9, `the gateway's connections to the agent: ${established} (one watch per service would hold ${SERVICES}, beyond the agent's 200)`)
      assert.ok(same(await instancesOf(gw, name(SERVICES - 1), 3), ['a']))
    })

    await t.test('a new instance of a service past the 200th is routed within 2 s', async () => {
      const t0 = Date.now()
      await register('ext-b', name(230), `${name(230)}-2`, b.port, 'passing')
      await eventually(async () => same(await instancesOf(gw, name(230), 4), ['a', 'b']), 'the new instance in rotation', 2_000, 20)
      assert.ok(Date.now() - t0 < 2_500)
    })

    await t.test('a service check turning critical takes only that instance out', async () => {
      await register('ext-b', name(230), `${name(230)}-2`, b.port, 'critical')
      await eventually(async () => same(await instancesOf(gw, name(230), 6), ['a']), 'the critical instance out of rotation', 2_000, 20)
      assert.ok(same(await instancesOf(gw, name(229), 3), ['a']), 'a neighbour is untouched')
    })

    await t.test('a node check turning critical takes every instance on that node out, and back', async () => {
      await consulPut('/v1/catalog/deregister', { Node: 'ext-1', ServiceID: `${name(231)}-1` })
      await register('ext-n1', name(231), `${name(231)}-n1`, a.port)
      await register('ext-n2', name(231), `${name(231)}-n2`, b.port)
      await nodeCheck('ext-n1', 'passing')
      await eventually(async () => same(await instancesOf(gw, name(231), 6), ['a', 'b']), 'both instances in rotation', 5_000, 20)
      await nodeCheck('ext-n1', 'critical')
      await eventually(async () => same(await instancesOf(gw, name(231), 6), ['b']), 'the node\'s instance out of rotation', 2_000, 20)
      await nodeCheck('ext-n1', 'passing')
      await eventually(async () => same(await instancesOf(gw, name(231), 6), ['a', 'b']), 'the node\'s instance back', 2_000, 20)
    })

    await t.test('an instance with no checks re-registered on a new port is followed (the catalog re-read)', async () => {
      // No check on the instance and none on its node: only the service table moves.
      await register('ext-bare', name(232), `${name(232)}-bare`, a.port)
      await consulPut('/v1/catalog/deregister', { Node: 'ext-2', ServiceID: `${name(232)}-1` })
      await eventually(async () => same(await instancesOf(gw, name(232), 4), ['a']), 'the bare instance alone', 10_000, 50)
      const t0 = Date.now()
      await register('ext-bare', name(232), `${name(232)}-bare`, b.port)
      await eventually(async () => same(await instancesOf(gw, name(232), 4), ['b']), 'traffic on the new port', 10_000, 50)
      // Re-read a second after the move, at most every 5 s.
      assert.ok(Date.now() - t0 < 8_000, `followed in ${Date.now() - t0} ms`)
    })

    await t.test('a service first registered after the gateway started is routed', async () => {
      assert.equal((await gw.request('/late')).status, 503)
      await register('ext-late', 'late', 'late-1', b.port, 'passing')
      await eventually(async () => same(await instancesOf(gw, 'late', 2), ['b']), 'the late service routed', 3_000, 20)
    })

    await t.test('a deregistered instance leaves within 2 s', async () => {
      await consulPut('/v1/catalog/deregister', { Node: 'ext-0', ServiceID: `${name(230)}-1` })
      await consulPut('/v1/catalog/register', { Node: 'ext-b', Address: '127.0.0.1', Check: { Node: 'ext-b', CheckID: `service:${name(230)}-2`, Name: 'test check', Status: 'passing', ServiceID: `${name(230)}-2` } })
      await eventually(async () => same(await instancesOf(gw, name(230), 6), ['b']), 'only the second instance', 2_000, 20)
    })

    await t.test('still a handful of connections after all of it', async () => {
      const established = gatewayConnections()
      assert.ok(established >= 2 && established <= 9, `the gateway's connections to the agent: ${established}`)
    })
  })

  it('auto: one query per service while they fit the connection budget, the whole catalog from the first that does not', async (t) => {
    const SWITCH_LOG = 'more watched services than the connection budget allows one each: following the whole Consul catalog instead (discovery.consul.watch, maxConnections)'
    // maxConnections 16: a quarter for KV, 12 for discovery, 8 of them held back: 4 services.
    const config = (n: number): Record<string, unknown> => ({
      discovery: { consul: { address: agent.httpAddr, registerSelf: false, wait: '5s', maxConnections: 16 } },
      telemetry: { logging: { accessLog: false } },
      routes: Array.from({ length: n }, (_, i) => ({ name: name(100 + i), match: { path: { prefix: `/${name(100 + i)}` } }, destination: { service: name(100 + i) } }))
    })
    const gw = await startGateway(t, config(4))
    await eventually(async () => same(await instancesOf(gw, name(103), 2), ['a']), 'the fourth service routed', 10_000, 50)
    assert.equal(gw.logs.withMessage(SWITCH_LOG).length, 0, 'four services: one query each')
    assert.deepEqual((await gw.admin('GET', '/services')).json<{ consulWatch: unknown }>().consulWatch, { default: 'service' })
    await register('ext-b', name(101), `${name(101)}-2`, b.port, 'passing')
    await eventually(async () => same(await instancesOf(gw, name(101), 4), ['a', 'b']), 'a change followed per service', 2_000, 20)

    await gw.writeConfig(config(8))
    assert.equal((await gw.admin('POST', '/reload')).status, 200)
    await eventually(() => gw.logs.withMessage(SWITCH_LOG).length === 1, 'the move to the catalog feed', 5_000)
    assert.deepEqual((await gw.admin('GET', '/services')).json<{ consulWatch: unknown }>().consulWatch, { default: 'catalog' })
    await eventually(async () => same(await instancesOf(gw, name(107), 2), ['a']), 'a service added past the budget routed', 10_000, 50)
    // Services watched per service before the move follow the feed now, both ways.
    await register('ext-b', name(101), `${name(101)}-2`, b.port, 'critical')
    await eventually(async () => same(await instancesOf(gw, name(101), 6), ['a']), 'a check change followed by the feed', 3_000, 20)
    await register('ext-b', name(106), `${name(106)}-2`, b.port, 'passing')
    await eventually(async () => same(await instancesOf(gw, name(106), 4), ['a', 'b']), 'a new instance followed by the feed', 3_000, 20)
    await register('ext-b', name(101), `${name(101)}-2`, b.port, 'passing')
    await eventually(async () => same(await instancesOf(gw, name(101), 4), ['a', 'b']), 'the instance back', 3_000, 20)
  })
})
