// A rate limit keyed by the verified caller on a node gateway's inbound mTLS route: the
// gateway-wide `plugins` list reaches the gateway's own inbound routes, and `keyBy: caller`
// counts each mesh identity (from the client certificate's SPIFFE ID) on its own.
import test from 'node:test'
import assert from 'node:assert/strict'
import { Pool, type Dispatcher } from 'undici'
import { startGateway, tempDir } from '../helpers/gateway.js'
import { startSample } from '../helpers/upstreams.js'
import { createLocalCa, issueLeaf, issueLeafInMemory, type CaPem, type LeafPem } from '../../src/identity/local-ca.js'

/** One call to the inbound listener as `caller` (a fresh mTLS connection). */
async function callAs (port: number, ca: CaPem, caller: LeafPem): Promise<{ status: number, headers: Record<string, unknown>, code?: string }> {
  const pool = new Pool(`https://127.0.0.1:${port}`, {
    connect: { servername: 'orders', cert: caller.certPem, key: caller.keyPem, ca: ca.certPem, rejectUnauthorized: true, checkServerIdentity: () => undefined },
    connections: 1
  })
  try {
    const r = await pool.request({ path: '/orders', method: 'GET' } as Dispatcher.RequestOptions)
    const text = await r.body.text()
    return { status: r.statusCode, headers: r.headers, ...(r.statusCode >= 400 ? { code: (JSON.parse(text) as { error: { code: string } }).error.code } : {}) }
  } finally {
    await pool.close()
  }
}

test('rate-limit with keyBy: caller on an inbound mesh route limits one verified identity and not another', async (t) => {
  const dir = await tempDir(t)
  const ca = await createLocalCa(dir)
  for (const s of ['node-b', 'orders']) await issueLeaf(dir, s)
  const web = await issueLeafInMemory(ca, 'web')
  const billing = await issueLeafInMemory(ca, 'billing')
  const orders = await startSample(t, 'orders', 'orders-1')
  const g = await startGateway(t, {
    gateway: { name: 'node-b', mode: 'node' },
    mesh: {
      mtls: 'strict',
      identity: { provider: 'files', dir },
      authorization: { provider: 'rules', defaultAction: 'deny', rules: [{ source: 'web', destination: 'orders', action: 'allow' }, { source: 'billing', destination: 'orders', action: 'allow' }] }
    },
    localServices: [{ name: 'orders', port: orders.port }],
    plugins: [{ name: 'rate-limit', options: { max: 2, timeWindow: '1h', keyBy: 'caller' } }]
  }, { dir })
  const port = g.gateway.listenerAddress('inbound')!.port

  assert.equal((await callAs(port, ca, web)).status, 200)
  assert.equal((await callAs(port, ca, web)).status, 200)
  const limited = await callAs(port, ca, web)
  assert.equal(limited.status, 429, JSON.stringify(limited))
  assert.equal(limited.code, 'FASTMESH_ERR_RATE_LIMITED')
  assert.ok(Number(limited.headers['retry-after']) > 0)
  // Same route, same client address (loopback), another verified identity: its own count.
  assert.equal((await callAs(port, ca, billing)).status, 200)
  assert.equal((await callAs(port, ca, billing)).status, 200)
  assert.equal((await callAs(port, ca, billing)).status, 429)
  assert.equal((await callAs(port, ca, web)).status, 429, 'web is still limited')

  const routes = (await g.admin('GET', '/routes')).json<{ gatewayRoutes: Array<{ name: string, stats: { errors: Record<string, number> } }> }>().gatewayRoutes
  assert.equal(routes.find((r) => r.name === 'inbound:orders')?.stats.errors.FASTMESH_ERR_RATE_LIMITED, 3, JSON.stringify(routes))
})
