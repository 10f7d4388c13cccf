// The inbound mTLS listener turns away certificates SPIFFE does not allow (more than one URI
// SAN) and logs and counts every refused handshake, by reason, with the peer address.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import tls from 'node:tls'
import type { AddressInfo } from 'node:net'
import { Pool, type Dispatcher } from 'undici'
import pino from 'pino'
import { startGateway, tempDir, type TestGateway } from '../helpers/gateway.js'
import { startEcho } from '../helpers/upstreams.js'
import { createCaInMemory, createLocalCa, issueLeaf, issueLeafInMemory, type CaPem } from '../../src/identity/local-ca.js'
import { MeshTls, type HandshakeRejections } from '../../src/identity/mesh-tls.js'
import { FilesIdentityProvider } from '../../src/identity/files-provider.js'

interface Node {
  readonly gw: TestGateway
  readonly ca: CaPem
  readonly port: number
}

async function startNode (t: TestContext): Promise<Node> {
  const dir = await tempDir(t)
  const ca = await createLocalCa(dir, { trustDomain: 'rejections.test' })
  for (const s of ['node-b', 'orders']) await issueLeaf(dir, s)
  const orders = await startEcho(t, 'orders')
  const gw = await startGateway(t, {
    gateway: { name: 'node-b', mode: 'node' },
    mesh: {
      mtls: 'strict',
      identity: { provider: 'files', dir },
      authorization: { provider: 'rules', defaultAction: 'allow' }
    },
    localServices: [{ name: 'orders', port: orders.port }]
  })
  return { gw, ca, port: gw.gateway.listenerAddress('inbound')!.port }
}

/** One request to the inbound listener as a hand-made client; a transport error is returned, not thrown. */
async function call (port: number, creds: { cert?: string, key?: string, ca: string }): Promise<{ status: number } | { error: string }> {
  const pool = new Pool(`https://127.0.0.1:${port}`, {
    connect: { servername: 'orders', ...(creds.cert !== undefined ? { cert: creds.cert, key: creds.key } : {}), ca: creds.ca, rejectUnauthorized: true, checkServerIdentity: () => undefined },
    connections: 1
  })
  try {
    const r = await pool.request({ path: '/x', method: 'GET' } as Dispatcher.RequestOptions)
    await r.body.text()
    return { status: r.statusCode }
  } catch (err) {
    return { error: `${(err as { code?: string }).code ?? ''} ${(err as Error).message}` }
  } finally {
    await pool.destroy()
  }
}

async function rejections (gw: TestGateway): Promise<HandshakeRejections> {
  const res = await gw.admin('GET', '/certs')
  assert.equal(res.status, 200)
  return res.json<{ handshakeRejections: HandshakeRejections }>().handshakeRejections
}

function refusalLines (gw: TestGateway, reason: string): Array<Record<string, unknown>> {
  return gw.logs.entries().filter((e) => e.reason === reason && typeof e.msg === 'string' && e.msg.startsWith('inbound mTLS handshake refused')) as Array<Record<string, unknown>>
}

test('a client certificate with one valid SPIFFE ID gets through (control)', async (t) => {
  const { gw, ca, port } = await startNode(t)
  const web = await issueLeafInMemory(ca, 'web')
  const r = await call(port, { cert: web.certPem, key: web.keyPem, ca: ca.certPem })
  assert.deepEqual(r, { status: 200 })
  assert.equal((await rejections(gw)).total, 0)
})

test('a client certificate with two URI SANs is refused, logged with the peer address, and counted', async (t) => {
  const { gw, ca, port } = await startNode(t)
  const twoSans = await issueLeafInMemory(ca, 'web', { extraUris: ['spiffe://rejections.test/ns/default/dc/dc1/svc/admin'] })
  const r = await call(port, { cert: twoSans.certPem, key: twoSans.keyPem, ca: ca.certPem })
  assert.ok('error' in r, `expected the connection to be refused, got ${JSON.stringify(r)}`)
  const counted = await rejections(gw)
  assert.equal(counted.byReason['multiple-uri-sans'], 1)
  assert.equal(counted.last?.reason, 'multiple-uri-sans')
  assert.match(counted.last?.detail ?? '', /2 URI SANs/)
  const [line] = refusalLines(gw, 'multiple-uri-sans')
  assert.ok(line !== undefined, 'a log line')
  assert.equal(line.level, 'warn')
  assert.match(String(line.peer), /^127\.0\.0\.1:\d+$/)
})

test('a handshake without a client certificate is logged and counted', async (t) => {
  const { gw, ca, port } = await startNode(t)
  const r = await call(port, { ca: ca.certPem })
  assert.ok('error' in r, JSON.stringify(r))
  assert.equal((await rejections(gw)).byReason['no-client-certificate'], 1)
  const [line] = refusalLines(gw, 'no-client-certificate')
  assert.ok(line !== undefined, JSON.stringify(gw.logs.entries().filter((e) => e.level === 'warn')))
  assert.match(String(line.peer), /^127\.0\.0\.1:\d+$/)
})

test('a certificate from an unknown CA and an expired one are counted under their own reasons', async (t) => {
  const { gw, ca, port } = await startNode(t)
  const other = await issueLeafInMemory(await createCaInMemory({ trustDomain: 'rejections.test' }), 'web')
  assert.ok('error' in await call(port, { cert: other.certPem, key: other.keyPem, ca: ca.certPem }))
  const expired = await issueLeafInMemory(ca, 'web', { notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) })
  assert.ok('error' in await call(port, { cert: expired.certPem, key: expired.keyPem, ca: ca.certPem }))
  const counted = await rejections(gw)
  assert.equal(counted.byReason['unknown-ca'], 1, JSON.stringify(counted))
  assert.equal(counted.byReason['certificate-expired'], 1, JSON.stringify(counted))
  assert.equal(counted.total, 2)
  assert.equal(refusalLines(gw, 'unknown-ca').length, 1)
  // The socket is gone when Node reports a failed verification; the address is still named.
  assert.match(String(refusalLines(gw, 'unknown-ca')[0]!.peer), /^127\.0\.0\.1:\d+$/)
  assert.equal(refusalLines(gw, 'certificate-expired').length, 1)
})

test('repeated refusals for one reason are logged once per window, and all counted', async (t) => {
  const { gw, ca, port } = await startNode(t)
  for (let i = 0; i < 5; i++) assert.ok('error' in await call(port, { ca: ca.certPem }))
  assert.equal((await rejections(gw)).byReason['no-client-certificate'], 5)
  assert.equal(refusalLines(gw, 'no-client-certificate').length, 1)
})

test('outbound: a server certificate with two URI SANs fails the connection, even when the first is the destination', async (t) => {
  const dir = await tempDir(t)
  const ca = await createLocalCa(dir, { trustDomain: 'rejections.test' })
  await issueLeaf(dir, 'web')
  const provider = new FilesIdentityProvider({ dir, log: pino({ level: 'silent' }), selfIssue: false })
  t.after(() => provider.close())
  await provider.start(['web'])
  const mesh = new MeshTls(provider, pino({ level: 'silent' }))
  t.after(() => { mesh.close() })
  const impostor = await issueLeafInMemory(ca, 'orders', { extraUris: ['spiffe://rejections.test/ns/default/dc/dc1/svc/admin'] })
  const server = tls.createServer({ cert: impostor.certPem, key: impostor.keyPem, ca: [ca.certPem], requestCert: true, minVersion: 'TLSv1.3' }, (s) => { s.end() })
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  t.after(() => { server.close() })
  const connect = mesh.connector('web', 'orders', 5000)
  const err = await new Promise<Error | null>((resolve) => {
    connect({ hostname: '127.0.0.1', host: '127.0.0.1', protocol: 'https:', port: String((server.address() as AddressInfo).port) } as Parameters<typeof connect>[0], (e, socket) => {
      socket?.destroy()
      resolve(e)
    })
  })
  assert.ok(err !== null, 'the connection is refused')
  assert.equal((err as Error & { code?: string }).code, 'FASTMESH_ERR_PEER_IDENTITY')
  assert.match(err.message, /2 URI SANs/)
})

