// The gateway's own request headers (`x-fastmesh-*`, such as x-fastmesh-mirror) on real
// sockets: a client's are dropped at every entry it can reach (edge, node outbound by Host,
// per-upstream listeners, plaintext inbound in permissive mode); a verified peer gateway's,
// on the inbound mTLS listener, reach the local app as sent (that gateway set them).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { IncomingHttpHeaders } from 'node:http'
import { Pool, request } from 'undici'
import { startGateway } from '../helpers/gateway.js'
import { eventually } from '../helpers/poll.js'
import { freePort } from '../helpers/ports.js'
import { embeddedServices, meshConfig, startEcho } from '../helpers/upstreams.js'
import { createLocalCa, issueLeaf, issueLeafInMemory } from '../../src/identity/local-ca.js'

/** What a client may try to pass for gateway-made headers. */
const FORGED = { 'x-fastmesh-mirror': '1', 'x-fastmesh-overflow': 'max-requests', 'X-Fastmesh-Anything': 'forged' }

function gatewayHeaders (headers: IncomingHttpHeaders): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => k.startsWith('x-fastmesh-')))
}

test('regression: a client-sent x-fastmesh-mirror never reaches the primary: the edge drops every x-fastmesh-* header, and the mirror copy carries only the gateway\'s own', async (t) => {
  const primary = await startEcho(t, 'primary')
  const shadow = await startEcho(t, 'shadow')
  const g = await startGateway(t, meshConfig({ api: [primary], shadow: [shadow] }, [
    { name: 'api', destination: { service: 'api' }, mirror: { service: 'shadow' } }
  ]))
  const res = await g.request('/orders', { headers: FORGED })
  assert.equal(res.status, 200)
  assert.deepEqual(gatewayHeaders(primary.seen[0]!.headers), {})
  await eventually(() => shadow.seen.length === 1, 'the mirror copy')
  assert.deepEqual(gatewayHeaders(shadow.seen[0]!.headers), { 'x-fastmesh-mirror': '1' })
})

test('regression: a node\'s outbound port (by Host) and per-upstream listeners drop a local app\'s x-fastmesh-* headers', async (t) => {
  const orders = await startEcho(t, 'orders')
  const upstreamPort = await freePort()
  const g = await startGateway(t, {
    gateway: { name: 'node-a', mode: 'node' },
    listeners: { outbound: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } },
    discovery: { embedded: { services: embeddedServices({ orders: [orders.port] }) } },
    localServices: [{ name: 'web', port: 1, upstreams: [{ service: 'orders', port: upstreamPort }] }]
  })
  const outbound = g.gateway.listenerAddress('outbound')!.port
  const byHost = await request(`http://127.0.0.1:${outbound}/by-host`, { headers: { host: 'orders', ...FORGED } })
  assert.equal(byHost.statusCode, 200)
  await byHost.body.dump()
  const perUpstream = await request(`http://127.0.0.1:${upstreamPort}/per-upstream`, { headers: FORGED })
  assert.equal(perUpstream.statusCode, 200)
  await perUpstream.body.dump()
  assert.deepEqual(orders.seen.map((s) => [s.url, gatewayHeaders(s.headers)]), [['/by-host', {}], ['/per-upstream', {}]])
})

test('inbound mTLS: a verified peer gateway\'s x-fastmesh-* headers reach the local app as sent; a plaintext caller\'s (permissive) are dropped', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-ca-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const ca = await createLocalCa(dir)
  for (const s of ['node-b', 'orders']) await issueLeaf(dir, s)
  const web = await issueLeafInMemory(ca, 'web')
  const orders = await startEcho(t, 'orders')
  const g = await startGateway(t, {
    gateway: { name: 'node-b', mode: 'node' },
    mesh: { mtls: 'permissive', identity: { provider: 'files', dir }, authorization: { provider: 'rules', defaultAction: 'allow' } },
    localServices: [{ name: 'orders', port: orders.port }]
  })
  const port = g.gateway.listenerAddress('inbound')!.port
  const peer = new Pool(`https://127.0.0.1:${port}`, {
    connect: { servername: 'orders', cert: web.certPem, key: web.keyPem, ca: ca.certPem, rejectUnauthorized: true, checkServerIdentity: () => undefined },
    connections: 1
  })
  const plain = new Pool(`http://127.0.0.1:${port}`, { connections: 1 })
  // Closed before the gateway stops, which would otherwise wait for their idle connections.
  const viaPeer = await peer.request({ path: '/from-peer', method: 'GET', headers: { 'x-fastmesh-mirror': '1' } }).finally(async () => { await peer.close() })
  assert.equal(viaPeer.statusCode, 200)
  const viaPlain = await plain.request({ path: '/plaintext', method: 'GET', headers: { host: 'orders.mesh', ...FORGED } }).finally(async () => { await plain.close() })
  assert.equal(viaPlain.statusCode, 200)
  assert.deepEqual(orders.seen.map((s) => [s.url, gatewayHeaders(s.headers)]), [['/from-peer', { 'x-fastmesh-mirror': '1' }], ['/plaintext', {}]])
})
