// Two node gateways and an edge on loopback, identities from a real Consul Connect CA:
// calls cross between nodes over mTLS and each inbound call is authorized by intentions.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Agent, request } from 'undici'
import { startConsul, consulApi, type ConsulAgent } from '../helpers/consul.js'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { startSampleService, type SampleService } from '../../src/demo/sample-service.js'
import { freePorts } from '../helpers/ports.js'

describe('mesh over Consul Connect', () => {
  let agent: ConsulAgent
  const apps: Record<string, SampleService> = {}
  const http = new Agent()

  before(async () => {
    agent = await startConsul()
    for (const name of ['web', 'orders', 'payments']) apps[name] = await startSampleService(name, `${name}-1`, 0)
  })
  after(async () => {
    await http.close()
    await agent.stop()
    await Promise.all(Object.values(apps).map(async (a) => { await a.close() }))
  })

  async function get (url: string, headers: Record<string, string> = {}): Promise<{ status: number, json: Record<string, unknown> }> {
    const r = await request(url, { dispatcher: http, headers })
    const text = await r.body.text()
    return { status: r.statusCode, json: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
  }

  it('carries calls between node gateways over mTLS and enforces intentions', async (t) => {
    const consul = { address: agent.httpAddr, wait: '5s' }
    const mesh = { mtls: 'strict', identity: { provider: 'consul' } }
    const [upstreamPort, paymentsPort] = await freePorts(2)
    const nodeA: TestGateway = await startGateway(t, {
      gateway: { name: 'node-a', mode: 'node' },
      discovery: { consul },
      mesh,
      localServices: [{
        name: 'web',
        port: apps.web!.port,
        upstreams: [{ service: 'orders', port: upstreamPort }, { service: 'payments', port: paymentsPort }]
      }]
    })
    const nodeB: TestGateway = await startGateway(t, {
      gateway: { name: 'node-b', mode: 'node' },
      discovery: { consul },
      mesh,
      localServices: [{ name: 'orders', port: apps.orders!.port, tags: ['v1'], meta: { version: '1' } }, { name: 'payments', port: apps.payments!.port }]
    })
    const edge: TestGateway = await startGateway(t, {
      gateway: { name: 'edge', mode: 'edge' },
      discovery: { consul },
      mesh,
      routes: [
        { name: 'orders-v1', match: { path: { prefix: '/orders-v1' } }, destination: { backends: [{ service: 'orders', weight: 1, subset: { tags: ['v1'], meta: { version: '1' } } }] } },
        { name: 'orders-v2', match: { path: { prefix: '/orders-v2' } }, destination: { backends: [{ service: 'orders', weight: 1, subset: { tags: ['v2'] } }] } },
        { name: 'web', match: { path: { prefix: '/' } }, destination: { service: 'web' } }
      ]
    })

    await t.test('the node registers a connect-proxy per local service, listed by /v1/health/connect', async () => {
      const proxies = await consulApi<Array<{ Service: { Kind: string, Port: number, Tags: string[], Meta: Record<string, string>, Proxy: { DestinationServiceName: string } } }>>(agent, 'GET', '/v1/health/connect/orders')
      assert.equal(proxies.length, 1)
      // As Consul's own sidecars: the local service's tags and meta, so callers can select subsets.
      assert.deepEqual([...proxies[0]!.Service.Tags].sort(), ['fastmesh', 'v1'])
      assert.deepEqual(proxies[0]!.Service.Meta, { version: '1', gateway: 'node-b' })
      assert.equal(proxies[0]!.Service.Kind, 'connect-proxy')
      assert.equal(proxies[0]!.Service.Proxy.DestinationServiceName, 'orders')
      assert.equal(proxies[0]!.Service.Port, nodeB.gateway.listenerAddress('inbound')!.port)
    })

    await t.test('an app calls another service by Host through its node gateway, across nodes over mTLS', async () => {
      const out = `http://127.0.0.1:${nodeA.gateway.listenerAddress('outbound')!.port}`
      const r = await eventually(async () => {
        const res = await get(`${out}/orders/7`, { host: 'orders' })
        return res.status === 200 ? res : undefined
      }, 'orders to answer through the mesh')
      assert.equal(r.json.instance, 'orders-1')
      assert.equal(r.json.path, '/orders/7')
    })

    await t.test('the receiving side sees the caller identity and the certificates are from Consul', async () => {
      const certs = (await nodeB.admin('GET', '/certs')).json<{ provider: string, leaves: Array<{ service: string, spiffeId: string, daysLeft: number }> }>()
      assert.equal(certs.provider, 'consul')
      assert.deepEqual(certs.leaves.map((l) => l.service).sort(), ['node-b', 'orders', 'payments'])
      assert.ok(certs.leaves.every((l) => l.spiffeId.startsWith('spiffe://') && l.daysLeft > 0))
      const authz = (await nodeB.admin('GET', '/authz')).json<{ decisions: Array<{ source: string, destination: string, result: string, count: number }> }>()
      assert.ok(authz.decisions.some((d) => d.source === 'node-a' && d.destination === 'orders' && d.result === 'allow'))
    })

    await t.test('a per-upstream listener carries the local service identity', async () => {
      const r = await get(`http://127.0.0.1:${upstreamPort}/x`)
      assert.equal(r.status, 200)
      assert.equal(r.json.instance, 'orders-1')
      const authz = (await nodeB.admin('GET', '/authz')).json<{ decisions: Array<{ source: string, destination: string, result: string }> }>()
      assert.ok(authz.decisions.some((d) => d.source === 'web' && d.destination === 'orders' && d.result === 'allow'))
    })

    await t.test('an intention denying web -> payments blocks the call with 403', async () => {
      await consulApi(agent, 'POST', '/v1/connect/intentions', { SourceName: 'web', DestinationName: 'payments', Action: 'deny' })
      const r = await eventually(async () => {
        const res = await get(`http://127.0.0.1:${paymentsPort}/pay`)
        return res.status === 403 ? res : undefined
      }, 'the deny intention to apply', 5_000)
      assert.equal((r.json.error as { code: string }).code, 'FASTMESH_ERR_FORBIDDEN')
      // The node's own identity is a different source: not denied.
      const out = `http://127.0.0.1:${nodeA.gateway.listenerAddress('outbound')!.port}`
      assert.equal((await get(`${out}/pay`, { host: 'payments.mesh' })).status, 200)
    })

    await t.test('the edge reaches services through their node gateways', async () => {
      const r = await eventually(async () => {
        const res = await get(`${edge.url}/hello`)
        return res.status === 200 ? res : undefined
      }, 'web through the edge')
      assert.equal(r.json.instance, 'web-1')
    })

    await t.test('the edge selects a subset by the tags and meta the node gateways copy onto their proxy entries', async () => {
      const v1 = await eventually(async () => {
        const res = await get(`${edge.url}/orders-v1/9`)
        return res.status === 200 ? res : undefined
      }, 'orders v1 through the edge')
      assert.equal(v1.json.instance, 'orders-1')
      const v2 = await get(`${edge.url}/orders-v2/9`)
      assert.equal(v2.status, 503, 'no instance carries v2')
      assert.equal((v2.json.error as { code: string }).code, 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT')
    })

    await t.test('node metrics: inbound calls labelled by the verified source, outbound by the local caller; authorization decisions; leaf expiry', async () => {
      const scrape = async (g: TestGateway): Promise<string> => {
        const res = await g.admin('GET', '/metrics')
        assert.equal(res.status, 200)
        return res.text
      }
      const value = (text: string, name: string, labels: string): number | undefined => {
        const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `))
        return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
      }
      const b = await scrape(nodeB)
      // web called orders once through its per-upstream listener (200), and payments was denied (403) for web.
      assert.ok((value(b, 'fastmesh_requests_total', 'role="node",direction="inbound",source="web",destination="orders",route="inbound:orders",status_class="2xx"') ?? 0) >= 1, b.split('\n').filter((l) => l.startsWith('fastmesh_requests_total')).join('\n'))
      assert.ok((value(b, 'fastmesh_requests_total', 'role="node",direction="inbound",source="web",destination="payments",route="inbound:payments",status_class="4xx"') ?? 0) >= 1, b.split('\n').filter((l) => l.startsWith('fastmesh_requests_total{')).join('\n'))
      assert.ok((value(b, 'fastmesh_gateway_errors_total', 'role="node",route="inbound:payments",code="FASTMESH_ERR_FORBIDDEN"') ?? 0) >= 1)
      assert.ok((value(b, 'fastmesh_authorization_decisions_total', 'role="node",source="web",destination="orders",result="allow"') ?? 0) >= 1)
      assert.ok((value(b, 'fastmesh_authorization_decisions_total', 'role="node",source="web",destination="payments",result="deny"') ?? 0) >= 1)
      // Leaf certificates from the Connect CA: days ahead, not expired.
      for (const service of ['node-b', 'orders', 'payments']) {
        const seconds = value(b, 'fastmesh_certificate_expiry_seconds', `service="${service}"`)
        assert.ok(seconds !== undefined && seconds > 3600, `${service} leaf expiry ${String(seconds)}`)
      }
      const a = await scrape(nodeA)
      assert.ok((value(a, 'fastmesh_requests_total', `role="node",direction="outbound",source="web",destination="orders",route="upstream:web:orders",status_class="2xx"`) ?? 0) >= 1)
      assert.ok((value(a, 'fastmesh_endpoints', 'role="node",destination="orders",state="healthy"') ?? 0) >= 1)
      assert.equal(value(a, 'fastmesh_discovery_errors_total', 'role="node",source="consul"'), 0)
    })
  })
})
