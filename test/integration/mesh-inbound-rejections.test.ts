// A node gateway's inbound mTLS listener (identities from a local CA, no Consul) against
// callers that must be turned away — each with a real TLS handshake.
import { describe, it, before } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Pool, type Dispatcher } from 'undici'
import pino from 'pino'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { startSampleService } from '../../src/demo/sample-service.js'
import { createLocalCa, issueLeaf, createCaInMemory, issueLeafInMemory, type CaPem, type LeafPem } from '../../src/identity/local-ca.js'
import { FilesIdentityProvider } from '../../src/identity/files-provider.js'
import { MeshTls } from '../../src/identity/mesh-tls.js'

/** A client identity built by hand: a Pool to the inbound listener with these credentials. */
function clientPool (port: number, servername: string, creds: { cert?: string, key?: string, ca: string }): Pool {
  return new Pool(`https://127.0.0.1:${port}`, {
    connect: { servername, ...(creds.cert !== undefined ? { cert: creds.cert, key: creds.key } : {}), ca: creds.ca, rejectUnauthorized: true, checkServerIdentity: () => undefined },
    connections: 1
  })
}

async function call (pool: Pool, path = '/x'): Promise<{ status: number, body: string } | { error: string }> {
  try {
    const r = await pool.request({ path, method: 'GET' } as Dispatcher.RequestOptions)
    return { status: r.statusCode, body: await r.body.text() }
  } catch (err) {
    return { error: `${(err as { code?: string }).code ?? ''} ${(err as Error).message}` }
  } finally {
    await pool.close()
  }
}

describe('inbound mTLS rejections', () => {
  let dir: string
  let ca: CaPem
  let gw: TestGateway
  let port: number
  let web: LeafPem

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fastmesh-ca-'))
    ca = await createLocalCa(dir)
    for (const s of ['node-b', 'orders']) await issueLeaf(dir, s)
    web = await issueLeafInMemory(ca, 'web')
  })

  it('turns away callers without a valid mesh identity', async (t) => {
    t.after(async () => { await rm(dir, { recursive: true, force: true }) })
    const orders = await startSampleService('orders', 'orders-1', 0)
    t.after(async () => { await orders.close() })
    gw = await startGateway(t, {
      gateway: { name: 'node-b', mode: 'node' },
      mesh: {
        mtls: 'strict',
        identity: { provider: 'files', dir },
        authorization: { provider: 'rules', defaultAction: 'deny', rules: [{ source: 'web', destination: 'orders', action: 'allow' }] }
      },
      localServices: [{ name: 'orders', port: orders.port }]
    })
    port = gw.gateway.listenerAddress('inbound')!.port

    await t.test('a caller with a valid identity that is allowed gets through', async () => {
      const r = await call(clientPool(port, 'orders', { cert: web.certPem, key: web.keyPem, ca: ca.certPem }))
      assert.ok('status' in r, JSON.stringify(r))
      assert.equal(r.status, 200)
      assert.match(r.body, /orders-1/)
      // The inbound access log names the verified caller.
      const line = await eventually(() => gw.logs.entries().find((e) => e.log === 'access' && e.route === 'inbound:orders'), 'the inbound access line', 5000)
      assert.match(String(line.caller), /^spiffe:\/\/.+\/svc\/web$/)
    })

    await t.test('no client certificate: the handshake is refused', async () => {
      const r = await call(clientPool(port, 'orders', { ca: ca.certPem }))
      assert.ok('error' in r, `expected a transport error, got ${JSON.stringify(r)}`)
    })

    await t.test('a certificate from another CA: the handshake is refused', async () => {
      const other = await createCaInMemory({ trustDomain: 'fastmesh.local' })
      const impostor = await issueLeafInMemory(other, 'web')
      const r = await call(clientPool(port, 'orders', { cert: impostor.certPem, key: impostor.keyPem, ca: ca.certPem }))
      assert.ok('error' in r, `expected a transport error, got ${JSON.stringify(r)}`)
    })

    await t.test('an expired certificate: the handshake is refused', async () => {
      const expired = await issueLeafInMemory(ca, 'web', { notBefore: new Date(Date.now() - 3 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) })
      const r = await call(clientPool(port, 'orders', { cert: expired.certPem, key: expired.keyPem, ca: ca.certPem }))
      assert.ok('error' in r, `expected a transport error, got ${JSON.stringify(r)}`)
    })

    await t.test('a valid certificate whose identity is not allowed: 403 FASTMESH_ERR_FORBIDDEN', async () => {
      const billing = await issueLeafInMemory(ca, 'billing')
      const r = await call(clientPool(port, 'orders', { cert: billing.certPem, key: billing.keyPem, ca: ca.certPem }))
      assert.ok('status' in r, JSON.stringify(r))
      assert.equal(r.status, 403)
      assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, 'FASTMESH_ERR_FORBIDDEN')
      const authz = (await gw.admin('GET', '/authz')).json<{ decisions: Array<{ source: string, destination: string, result: string, count: number }> }>()
      assert.deepEqual(authz.decisions.find((d) => d.source === 'billing'), { source: 'billing', destination: 'orders', result: 'deny', count: 1 })
    })

    await t.test('a server whose identity is not the expected destination is refused by the client', async () => {
      // The caller wants "payments"; this gateway does not serve it and answers with its own
      // (node-b) certificate, which is not the payments identity.
      const provider = new FilesIdentityProvider({ dir, log: pino({ level: 'silent' }) })
      await issueLeaf(dir, 'web')
      await provider.start(['web'])
      const tls = new MeshTls(provider, pino({ level: 'silent' }))
      t.after(async () => { tls.close(); await provider.close() })
      const wrong = new Pool(`http://127.0.0.1:${port}`, { connect: tls.connector('web', 'payments', 2000) })
      const r = await call(wrong)
      assert.ok('error' in r, `expected a transport error, got ${JSON.stringify(r)}`)
      assert.match(r.error, /is not service "payments"/)
      // The same connector logic towards the right identity works.
      const right = new Pool(`http://127.0.0.1:${port}`, { connect: tls.connector('web', 'orders', 2000) })
      const ok = await call(right)
      assert.ok('status' in ok && ok.status === 200, JSON.stringify(ok))
    })

    await t.test('an SNI name this node does not serve gets 421 FASTMESH_ERR_UNKNOWN_LOCAL_SERVICE', async () => {
      const r = await call(clientPool(port, 'inventory', { cert: web.certPem, key: web.keyPem, ca: ca.certPem }))
      assert.ok('status' in r, JSON.stringify(r))
      assert.equal(r.status, 421)
    })
  })

  it('permissive mode takes plaintext and mTLS on the same port', async (t) => {
    const pdir = await mkdtemp(join(tmpdir(), 'fastmesh-ca-'))
    t.after(async () => { await rm(pdir, { recursive: true, force: true }) })
    const pca = await createLocalCa(pdir)
    for (const s of ['node-p', 'orders']) await issueLeaf(pdir, s)
    const caller = await issueLeafInMemory(pca, 'web')
    const orders = await startSampleService('orders', 'orders-p', 0)
    t.after(async () => { await orders.close() })
    const pgw = await startGateway(t, {
      gateway: { name: 'node-p', mode: 'node' },
      mesh: { mtls: 'permissive', identity: { provider: 'files', dir: pdir }, authorization: { provider: 'rules', defaultAction: 'allow' } },
      localServices: [{ name: 'orders', port: orders.port }]
    })
    const pport = pgw.gateway.listenerAddress('inbound')!.port
    const plain = new Pool(`http://127.0.0.1:${pport}`)
    const r1 = await plain.request({ path: '/plain', method: 'GET', headers: { host: 'orders.mesh' } })
    assert.equal(r1.statusCode, 200)
    assert.match(await r1.body.text(), /orders-p/)
    await plain.close()
    const r2 = await call(clientPool(pport, 'orders', { cert: caller.certPem, key: caller.keyPem, ca: pca.certPem }))
    assert.ok('status' in r2 && r2.status === 200, JSON.stringify(r2))
    const authz = (await pgw.admin('GET', '/authz')).json<{ decisions: Array<{ source: string }> }>()
    assert.deepEqual(authz.decisions.map((d) => d.source), ['web'])
  })
})
