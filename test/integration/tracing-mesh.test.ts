// One trace across the mesh: edge → node gateway A (outbound, by Host) → mTLS with identities
// from a real Consul Connect CA → node gateway B (inbound) → the app. Every gateway exports to
// one real OTLP/HTTP receiver started here; the spans it receives must form one trace with the
// parent links of the path, and carry the mesh identities.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startConsul, type ConsulAgent } from '../helpers/consul.js'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { startEcho } from '../helpers/upstreams.js'
import { SPAN_KIND, startOtlpReceiver, type ReceivedSpan } from '../helpers/otlp.js'

describe('a trace across the mesh', () => {
  let agent: ConsulAgent

  before(async () => { agent = await startConsul() })
  after(async () => { await agent.stop() })

  it('continues edge → node A → mTLS → node B → app as one trace with correct parent links and identities', async (t) => {
    const receiver = await startOtlpReceiver(t)
    const orders = await startEcho(t, 'orders')
    const consul = { address: agent.httpAddr, wait: '5s' }
    const mesh = { mtls: 'strict', identity: { provider: 'consul' } }
    const telemetry = { tracing: { enabled: true, otlp: { endpoint: receiver.endpoint } } }
    const nodeA: TestGateway = await startGateway(t, { gateway: { name: 'node-a', mode: 'node' }, discovery: { consul }, mesh, telemetry })
    const nodeB: TestGateway = await startGateway(t, {
      gateway: { name: 'node-b', mode: 'node' },
      discovery: { consul },
      mesh,
      telemetry,
      localServices: [{ name: 'orders', port: orders.port }]
    })
    const outboundA = nodeA.gateway.listenerAddress('outbound')!.port
    // The edge sends everything to node A's outbound port; A routes by Host into the mesh.
    const edge: TestGateway = await startGateway(t, {
      gateway: { name: 'edge', mode: 'edge' },
      discovery: { embedded: { services: { 'node-a': { endpoints: [{ address: '127.0.0.1', port: outboundA }] } } } },
      routes: [{ name: 'shop', match: { path: { prefix: '/' } }, destination: { service: 'node-a', rewriteHost: 'orders' } }],
      telemetry
    })

    await eventually(async () => (await edge.request('/orders/7')).status === 200 ? true : undefined, 'orders to answer through edge, A and B')
    // The app's view of the last (successful) call: its trace and its parent, B's client span.
    const seen = orders.seen[orders.seen.length - 1]!
    const [, traceId, appParent, flags] = String(seen.headers.traceparent).split('-')
    assert.equal(flags, '01')

    const spans = await receiver.waitFor((s) => s.filter((x) => x.traceId === traceId).length >= 6, 'six spans of the trace')
    const trace = spans.filter((s) => s.traceId === traceId)
    assert.equal(trace.length, 6, trace.map((s) => `${s.resource['service.name']} ${s.name}`).join(', '))
    const of = (service: string, kind: number): ReceivedSpan => {
      const found = trace.filter((s) => s.resource['service.name'] === service && s.kind === kind)
      assert.equal(found.length, 1, `one ${kind === SPAN_KIND.server ? 'server' : 'client'} span of ${service}`)
      return found[0]!
    }
    const edgeServer = of('fastmesh-edge', SPAN_KIND.server)
    const edgeClient = of('fastmesh-edge', SPAN_KIND.client)
    const aServer = of('fastmesh-node-a', SPAN_KIND.server)
    const aClient = of('fastmesh-node-a', SPAN_KIND.client)
    const bServer = of('fastmesh-node-b', SPAN_KIND.server)
    const bClient = of('fastmesh-node-b', SPAN_KIND.client)

    // Parent links: each hop's server span is the child of the previous hop's try.
    assert.equal(edgeServer.parentSpanId, '')
    assert.equal(edgeClient.parentSpanId, edgeServer.spanId)
    assert.equal(aServer.parentSpanId, edgeClient.spanId)
    assert.equal(aClient.parentSpanId, aServer.spanId)
    assert.equal(bServer.parentSpanId, aClient.spanId)
    assert.equal(bClient.parentSpanId, bServer.spanId)
    assert.equal(appParent, bClient.spanId)

    // Roles and directions.
    assert.equal(edgeServer.attributes['fastmesh.direction'], 'edge')
    assert.equal(aServer.attributes['fastmesh.direction'], 'outbound')
    assert.equal(bServer.attributes['fastmesh.direction'], 'inbound')
    assert.equal(aServer.resource['fastmesh.gateway.role'], 'node')
    assert.equal(edgeClient.attributes['fastmesh.destination'], 'node-a')
    assert.equal(aClient.attributes['fastmesh.destination'], 'orders')
    assert.equal(bClient.attributes['network.peer.port'], orders.port)

    // Identities: A calls with its own SPIFFE ID, B verified that caller over mTLS.
    const nodeAId = nodeA.gateway.identity!.leaf('node-a')!.spiffeId
    assert.match(nodeAId, /^spiffe:\/\/.+\/svc\/node-a$/)
    assert.equal(aServer.resource['fastmesh.gateway.spiffe_id'], nodeAId)
    assert.equal(aClient.attributes['fastmesh.source.service'], 'node-a')
    assert.equal(aClient.attributes['fastmesh.source.spiffe_id'], nodeAId)
    assert.equal(bServer.attributes['fastmesh.caller.spiffe_id'], nodeAId)
    assert.equal(bServer.attributes['fastmesh.caller.service'], 'node-a')
    assert.equal(bServer.attributes['fastmesh.local_service'], 'orders')
    assert.equal(bServer.attributes['url.scheme'], 'https', 'the inbound call came over TLS')
    assert.equal(bServer.resource['fastmesh.gateway.spiffe_id'], nodeB.gateway.identity!.leaf('node-b')!.spiffeId)
    assert.equal(edgeServer.resource['fastmesh.gateway.spiffe_id'], undefined, 'the edge has no mesh identity here')
  })
})
