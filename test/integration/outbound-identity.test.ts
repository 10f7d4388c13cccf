// `listeners.outbound.identity`: on a host that runs one app, a node gateway's shared outbound
// port speaks as that app's local service. Two gateways over real mTLS (leaves from the files
// provider): the peer sees and authorizes `web`, not `node-a`; the caller's metrics and
// service graph name `web` as the source; a reload without the option goes back to the
// gateway's own identity for new calls.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startGateway, tempDir, type TestGateway } from '../helpers/gateway.js'
import { startEcho, type EchoUpstream } from '../helpers/upstreams.js'
import { createLocalCa, issueLeaf } from '../../src/identity/local-ca.js'
import type { ObservedEdge } from '../../src/admin/service-graph.js'

const SPIFFE = 'spiffe://outbound.test/ns/default/dc/dc1/svc/'

interface Call { readonly status: number, readonly code: string | undefined }

/** One call on node-a's shared outbound port, the destination named by Host. */
async function viaOutbound (nodeA: TestGateway, host: string): Promise<Call> {
  const r = await request(`http://127.0.0.1:${nodeA.gateway.listenerAddress('outbound')!.port}/x`, { headers: { host } })
  const text = await r.body.text()
  return { status: r.statusCode, code: r.statusCode >= 400 ? (JSON.parse(text) as { error: { code: string } }).error.code : undefined }
}

/** The identity node-b verified for the last call its local app got (X-Forwarded-Client-Cert). */
const lastCaller = (app: EchoUpstream): unknown => app.seen.at(-1)?.headers['x-forwarded-client-cert']

/** node-a's outbound request series for `destination`: source label → count. */
async function outboundSources (nodeA: TestGateway, destination: string): Promise<Record<string, number>> {
  const text = (await nodeA.admin('GET', '/metrics')).text
  const out: Record<string, number> = {}
  for (const line of text.split('\n')) {
    if (!line.startsWith('fastmesh_requests_total{') || !line.includes('direction="outbound"') || !line.includes(`destination="${destination}"`)) continue
    const source = /source="([^"]*)"/.exec(line)![1]!
    out[source] = (out[source] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return out
}

test('listeners.outbound.identity: the shared outbound port calls as the local service (mTLS identity, authorization, metrics, graph); a reload without it calls as the gateway', async (t) => {
  const dir = await tempDir(t)
  await createLocalCa(dir, { trustDomain: 'outbound.test' })
  for (const s of ['node-a', 'node-b', 'web', 'orders', 'payments']) await issueLeaf(dir, s)
  const orders = await startEcho(t, 'orders')
  const payments = await startEcho(t, 'payments')
  const identity = { provider: 'files', dir, selfIssue: false }
  // node-b lets web call orders only; the gateway node-a may call both.
  const nodeB = await startGateway(t, {
    gateway: { name: 'node-b', mode: 'node' },
    mesh: {
      mtls: 'strict',
      identity,
      authorization: {
        provider: 'rules',
        defaultAction: 'deny',
        rules: [
          { source: 'web', destination: 'orders', action: 'allow' },
          { source: 'node-a', destination: 'orders', action: 'allow' },
          { source: 'node-a', destination: 'payments', action: 'allow' }
        ]
      }
    },
    localServices: [{ name: 'orders', port: orders.port }, { name: 'payments', port: payments.port }]
  })
  const inbound = nodeB.gateway.listenerAddress('inbound')!.port
  const any = { address: '127.0.0.1', port: 0 }
  const nodeAConfig = (outboundIdentity: string | undefined): Record<string, unknown> => ({
    gateway: { name: 'node-a', mode: 'node' },
    listeners: { outbound: { ...any, ...(outboundIdentity !== undefined ? { identity: outboundIdentity } : {}) }, inbound: any, admin: any },
    discovery: { embedded: { services: { orders: { endpoints: [{ id: 'node-b', address: '127.0.0.1', port: inbound }] }, payments: { endpoints: [{ id: 'node-b', address: '127.0.0.1', port: inbound }] } } } },
    mesh: { mtls: 'strict', identity, authorization: { provider: 'rules', defaultAction: 'deny' } },
    routes: [{ name: 'orders-by-route', match: { hosts: ['orders-route.test'] }, destination: { service: 'orders' } }],
    // The one app on node-a's host; nothing calls it here.
    localServices: [{ name: 'web', port: 1 }]
  })
  const nodeA = await startGateway(t, nodeAConfig('web'))

  // By Host and by a config route, node-b verifies web's certificate.
  assert.deepEqual(await viaOutbound(nodeA, 'orders'), { status: 200, code: undefined })
  assert.equal(lastCaller(orders), `URI=${SPIFFE}web`)
  assert.deepEqual(await viaOutbound(nodeA, 'orders-route.test'), { status: 200, code: undefined })
  assert.equal(lastCaller(orders), `URI=${SPIFFE}web`)
  // Authorization judges web, not node-a (which may call payments).
  assert.deepEqual(await viaOutbound(nodeA, 'payments'), { status: 403, code: 'FASTMESH_ERR_FORBIDDEN' })
  assert.equal(payments.seen.length, 0)

  // node-a counts the calls as web's, and its graph draws web -> orders.
  assert.deepEqual(await outboundSources(nodeA, 'orders'), { web: 2 })
  const edges = (await nodeA.admin('GET', '/ui/graph/local')).json<{ edges: ObservedEdge[] }>().edges
  assert.deepEqual(edges.filter((e) => e.destination === 'orders').map((e) => [e.source, e.sourceKind, e.observed, e.total]), [['web', 'service', 'caller', 2]])
  // node-b, at the other end, counted web as the verified source too.
  const authz = (await nodeB.admin('GET', '/authz')).json<{ decisions: Array<{ source: string, destination: string, result: string }> }>().decisions
  assert.deepEqual(authz.filter((d) => d.destination === 'payments').map((d) => [d.source, d.result]), [['web', 'deny']])

  // A reload without the option: new calls carry the gateway's own identity.
  await nodeA.writeConfig(nodeAConfig(undefined))
  const reloaded = await nodeA.gateway.reload('test')
  assert.equal(reloaded.ok, true, JSON.stringify(reloaded))
  assert.equal(reloaded.pendingRestart, undefined, 'outbound.identity applies without a restart')
  assert.deepEqual(await viaOutbound(nodeA, 'orders'), { status: 200, code: undefined })
  assert.equal(lastCaller(orders), `URI=${SPIFFE}node-a`)
  assert.deepEqual(await viaOutbound(nodeA, 'payments'), { status: 200, code: undefined })
  assert.equal(lastCaller(payments), `URI=${SPIFFE}node-a`)
  assert.deepEqual(await outboundSources(nodeA, 'orders'), { web: 2, '': 1 })
})

test('a reload naming a local service the running gateway did not start with is refused; the running identity keeps serving', async (t) => {
  const dir = await tempDir(t)
  await createLocalCa(dir, { trustDomain: 'outbound.test' })
  for (const s of ['node-a', 'web']) await issueLeaf(dir, s)
  const any = { address: '127.0.0.1', port: 0 }
  const config = (outboundIdentity: string, localServices: string[]): Record<string, unknown> => ({
    gateway: { name: 'node-a', mode: 'node' },
    listeners: { outbound: { ...any, identity: outboundIdentity }, inbound: any, admin: any },
    mesh: { mtls: 'strict', identity: { provider: 'files', dir, selfIssue: false }, authorization: { provider: 'rules', defaultAction: 'deny' } },
    localServices: localServices.map((name, i) => ({ name, port: i + 1 }))
  })
  const nodeA = await startGateway(t, config('web', ['web']))
  // Valid as a file, but localServices waits for a restart: the version would have no leaf for `billing`.
  await nodeA.writeConfig(config('billing', ['web', 'billing']))
  const r = await nodeA.gateway.reload('test')
  assert.equal(r.ok, false)
  assert.match(r.error ?? '', /billing.*listeners\.outbound\.identity names no local service the running gateway started with/)
})
