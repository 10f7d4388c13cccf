// Discovery from a real Consul agent: registration to traffic, checks turning critical,
// Consul going away and coming back.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startConsul, consulApi, type ConsulAgent } from '../helpers/consul.js'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { startSampleService, type SampleService } from '../../src/demo/sample-service.js'

interface ServicesBody {
  services: Array<{ name: string, stale: boolean, error?: string, healthy: number, endpoints: Array<{ id: string, port: number, health: string }> }>
}

async function registerInstance (agent: Pick<ConsulAgent, 'url'>, id: string, port: number, ttl = true): Promise<void> {
  await consulApi(agent, 'PUT', '/v1/agent/service/register', {
    ID: id,
    Name: 'web',
    Address: '127.0.0.1',
    Port: port,
    Tags: ['v1'],
    ...(ttl ? { Check: { CheckID: `check-${id}`, TTL: '30s', Status: 'passing' } } : {})
  })
}

async function instancesSeen (gw: TestGateway, n: number): Promise<Set<string>> {
  const seen = new Set<string>()
  for (let i = 0; i < n; i++) {
    const res = await gw.request('/hello')
    assert.equal(res.status, 200, res.text)
    seen.add(res.json<{ instance: string }>().instance)
  }
  return seen
}

describe('Consul discovery', () => {
  let agent: ConsulAgent
  const samples: SampleService[] = []
  let gw: TestGateway
  let restartPorts: ConsulAgent['ports'] | undefined

  before(async () => {
    agent = await startConsul()
    for (const id of ['web-a', 'web-b', 'web-c']) samples.push(await startSampleService('web', id, 0))
  })

  after(async () => {
    await agent.stop()
    await Promise.all(samples.map(async (s) => { await s.close() }))
  })

  it('follows the Consul catalog through registrations, checks and an outage', async (t) => {
    await registerInstance(agent, 'web-a', samples[0]!.port)
    gw = await startGateway(t, {
      discovery: { consul: { address: agent.httpAddr, registerSelf: false, wait: '5s' } },
      routes: [{ name: 'web', destination: { service: 'web' } }]
    })
    await t.test('routes to the passing instance registered in Consul', async () => {
    const seen = await eventually(async () => {
      const r = await gw.request('/hello')
      return r.status === 200 ? r.json<{ instance: string }>().instance : undefined
    }, 'the first Consul instance to receive traffic')
    assert.equal(seen, 'web-a')
    })

    await t.test('a new instance receives traffic within 2 s of its registration', async () => {
    const registeredAt = Date.now()
    await registerInstance(agent, 'web-b', samples[1]!.port)
    await eventually(async () => (await instancesSeen(gw, 2)).has('web-b'), 'web-b to receive traffic', 2_000, 20)
    assert.ok(Date.now() - registeredAt < 2_000)
    assert.deepEqual(await instancesSeen(gw, 4), new Set(['web-a', 'web-b']))
    })

    await t.test('an instance whose check turns critical receives no traffic once Consul reports it', async () => {
    await consulApi(agent, 'PUT', '/v1/agent/check/fail/check-web-b?note=test')
    await eventually(async () => {
      const h = await consulApi<Array<{ Service: { ID: string }, Checks: Array<{ Status: string }> }>>(agent, 'GET', '/v1/health/service/web')
      return h.some((e) => e.Service.ID === 'web-b' && e.Checks.some((c) => c.Status === 'critical'))
    }, 'Consul to report web-b critical')
    await eventually(async () => {
      const s = (await gw.admin('GET', '/services')).json<ServicesBody>()
      return s.services.find((x) => x.name === 'web')?.endpoints.find((e) => e.id.endsWith('/web-b'))?.health === 'critical'
    }, 'the gateway to see web-b critical', 2_000)
    assert.deepEqual(await instancesSeen(gw, 10), new Set(['web-a']))
    })

    await t.test('an instance whose check passes again returns to rotation, and leaves when deregistered', async () => {
    await consulApi(agent, 'PUT', '/v1/agent/check/pass/check-web-b')
    await eventually(async () => (await instancesSeen(gw, 2)).has('web-b'), 'web-b back in rotation', 2_000)

    // Deregistered: gone.
    await consulApi(agent, 'PUT', '/v1/agent/service/deregister/web-b')
    await eventually(async () => {
      const s = (await gw.admin('GET', '/services')).json<ServicesBody>()
      return s.services.find((x) => x.name === 'web')?.endpoints.length === 1
    }, 'web-b to leave the gateway\'s endpoint set', 2_000)
    assert.deepEqual(await instancesSeen(gw, 6), new Set(['web-a']))
    })

    await t.test('Consul stopped: traffic keeps flowing to the last known endpoints, shown as stale', async () => {
    const ports = agent.ports
    await agent.stop()
    // Traffic keeps flowing to what was known.
    await eventually(async () => {
      const s = (await gw.admin('GET', '/services')).json<ServicesBody>()
      const web = s.services.find((x) => x.name === 'web')
      return web?.stale === true && web.error !== undefined
    }, 'the admin API to mark web stale')
    for (let i = 0; i < 20; i++) {
      const r = await gw.request('/hello')
      assert.equal(r.status, 200)
      assert.equal(r.json<{ instance: string }>().instance, 'web-a')
    }
    restartPorts = ports
    })

    await t.test('Consul back: the watch resumes and picks up changes made meanwhile', async () => {
    const ports = restartPorts!
    // Consul back on the same address, with a different catalog (a dev agent starts empty,
    // and its index starts below the old one: the watch must reset, not wait forever).
    agent = await startConsul({ ports })
    await registerInstance(agent, 'web-c', samples[2]!.port)
    await eventually(async () => {
      const seen = await instancesSeen(gw, 4)
      return seen.size === 1 && seen.has('web-c')
    }, 'traffic to move to web-c, registered while the watch was failing', 20_000, 100)
    const s = (await gw.admin('GET', '/services')).json<ServicesBody>()
    assert.equal(s.services.find((x) => x.name === 'web')?.stale, false)
    })
  })

  it('honours subsets by tag and meta, and Consul Weights (smooth weighted round robin)', async (t) => {
    const fresh = await startConsul()
    t.after(async () => { await fresh.stop() })
    const reg = async (id: string, port: number, tags: string[], meta: Record<string, string>, passingWeight: number): Promise<void> => {
      await consulApi(fresh, 'PUT', '/v1/agent/service/register', { ID: id, Name: 'api', Address: '127.0.0.1', Port: port, Tags: tags, Meta: meta, Weights: { Passing: passingWeight, Warning: 1 } })
    }
    await reg('api-a', samples[0]!.port, ['v2', 'blue'], { zone: 'a' }, 3)
    await reg('api-b', samples[1]!.port, ['v2'], { zone: 'b' }, 1)
    await reg('api-c', samples[2]!.port, ['v1'], { zone: 'a' }, 1)
    const gwv = await startGateway(t, {
      discovery: { consul: { address: fresh.httpAddr, registerSelf: false, wait: '5s' } },
      services: { api: { subset: { tags: ['v2'] } } },
      routes: [{ name: 'api', destination: { service: 'api' } }]
    })
    const seen = await eventually(async () => {
      const got: string[] = []
      for (let i = 0; i < 8; i++) {
        const r = await gwv.request('/w')
        if (r.status !== 200) return undefined
        got.push(r.json<{ instance: string }>().instance)
      }
      return new Set(got).size === 2 ? got : undefined
    }, 'both v2 instances in rotation')
    // Only the v2 subset (web-a = api-a, web-b = api-b), in a 3:1 ratio by Consul weight.
    const counts = seen.reduce<Record<string, number>>((acc, i) => { acc[i] = (acc[i] ?? 0) + 1; return acc }, {})
    assert.deepEqual(counts, { 'web-a': 6, 'web-b': 2 })

    // A meta subset: only zone a, and of the v2 tag: api-a alone.
    await gwv.writeConfig({
      discovery: { consul: { address: fresh.httpAddr, registerSelf: false, wait: '5s' } },
      services: { api: { subset: { tags: ['v2'], meta: { zone: 'a' } } } },
      routes: [{ name: 'api', destination: { service: 'api' } }]
    })
    assert.equal((await gwv.gateway.reload('test')).ok, true)
    await eventually(async () => (await instancesSeen(gwv, 4)).size === 1, 'the zone-a subset to apply')
    assert.deepEqual(await instancesSeen(gwv, 6), new Set(['web-a']))
  })
})
