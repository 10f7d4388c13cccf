// Real mutual-TLS handshakes with certificates from the local CA, served by FilesIdentityProvider:
// `orders` serves, `web` calls, and each side sees the other's SPIFFE ID; strangers are refused.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import tls from 'node:tls'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { FilesIdentityProvider } from '../../src/identity/files-provider.js'
import { createCaInMemory, createLocalCa, issueLeaf, issueLeafInMemory, uriSans, type CreatedCa } from '../../src/identity/local-ca.js'
import type { LeafCertificate } from '../../src/identity/types.js'
import { eventually } from '../helpers/poll.js'

interface Server {
  readonly port: number
  /** URI SANs of every client the server accepted. */
  readonly accepted: string[][]
  /** With `inspect`: the authorizationError of each client it then turned away. */
  readonly unauthorized: string[]
}

async function setup (t: TestContext): Promise<{ dir: string, ca: CreatedCa, provider: FilesIdentityProvider }> {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-mtls-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const ca = await createLocalCa(dir, { trustDomain: 'mtls.test' })
  await issueLeaf(dir, 'orders')
  await issueLeaf(dir, 'web')
  // These tests hand-issue and rotate with `fastmesh certs`' functions: the provider only reads
  // (with the CA key in the directory it would otherwise race them by renewing on its own).
  const provider = new FilesIdentityProvider({ dir, log: pino({ level: 'silent' }), selfIssue: false })
  t.after(() => provider.close())
  await provider.start(['orders', 'web'])
  return { dir, ca, provider }
}

/**
 * A TLS server presenting `orders`. By default it rejects unverified clients inside the handshake
 * (rejectUnauthorized: true); with `inspect` it lets the handshake finish, records why the client
 * is not authorized and hangs up, so a test can assert the reason.
 */
async function startServer (t: TestContext, provider: FilesIdentityProvider, inspect = false): Promise<Server> {
  const leaf = provider.leaf('orders')!
  const accepted: string[][] = []
  const unauthorized: string[] = []
  const server = tls.createServer({
    key: leaf.keyPem,
    cert: leaf.certPem,
    ca: [...provider.roots().rootsPem],
    requestCert: true,
    rejectUnauthorized: !inspect,
    minVersion: 'TLSv1.3'
  }, (socket) => {
    if (!socket.authorized) {
      unauthorized.push(String(socket.authorizationError))
      socket.destroy()
      return
    }
    const peer = socket.getPeerX509Certificate()
    const uris = peer !== undefined ? uriSans(peer) : []
    accepted.push(uris)
    socket.end(`hello ${uris.join(',')}`)
  })
  server.on('tlsClientError', () => { /* a refused or vanished client */ })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => server.close(() => { resolve() })))
  return { port: (server.address() as AddressInfo).port, accepted, unauthorized }
}

interface Attempt {
  readonly data: string
  readonly error?: Error
  readonly serverUris: string[]
}

/** Connects as `client`, reads until the server closes; resolves with what happened. */
function connect (port: number, client: Pick<LeafCertificate, 'certPem' | 'keyPem'>, rootsPem: readonly string[]): Promise<Attempt> {
  return new Promise((resolve) => {
    let data = ''
    let error: Error | undefined
    let serverUris: string[] = []
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'orders',
      cert: client.certPem,
      key: client.keyPem,
      ca: [...rootsPem],
      minVersion: 'TLSv1.3'
    }, () => {
      const peer = socket.getPeerX509Certificate()
      serverUris = peer !== undefined ? uriSans(peer) : []
    })
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => { data += chunk })
    socket.on('error', (err) => { error = err })
    socket.on('close', () => { resolve({ data, serverUris, ...(error !== undefined ? { error } : {}) }) })
  })
}

test('web calls orders over mutual TLS and each side sees the other\'s SPIFFE ID', async (t) => {
  const { provider } = await setup(t)
  const server = await startServer(t, provider)
  const web = provider.leaf('web')!
  const r = await connect(server.port, web, provider.roots().rootsPem)
  assert.equal(r.error, undefined, r.error?.message)
  assert.equal(r.data, 'hello spiffe://mtls.test/ns/default/dc/dc1/svc/web')
  assert.deepEqual(server.accepted, [['spiffe://mtls.test/ns/default/dc/dc1/svc/web']])
  assert.deepEqual(r.serverUris, ['spiffe://mtls.test/ns/default/dc/dc1/svc/orders'])
})

test('a client whose certificate comes from another CA is refused', async (t) => {
  const { provider } = await setup(t)
  const server = await startServer(t, provider)
  // Same trust domain and service name: only the signature tells it apart.
  const stranger = await issueLeafInMemory(await createCaInMemory({ trustDomain: 'mtls.test' }), 'web')
  const r = await connect(server.port, stranger, provider.roots().rootsPem)
  // In TLS 1.3 the client's side of the handshake ends before the server checks the client's
  // certificate, so the client only sees the connection close without an answer.
  assert.equal(r.data, '')
  assert.deepEqual(server.accepted, [])
  // Why: a server that inspects instead of rejecting outright.
  const inspecting = await startServer(t, provider, true)
  assert.equal((await connect(inspecting.port, stranger, provider.roots().rootsPem)).data, '')
  assert.deepEqual(inspecting.accepted, [])
  assert.deepEqual(inspecting.unauthorized, ['UNABLE_TO_VERIFY_LEAF_SIGNATURE'])
})

test('a client with an expired certificate from the right CA is refused', async (t) => {
  const { provider, ca } = await setup(t)
  const server = await startServer(t, provider)
  const expired = await issueLeafInMemory(ca, 'web', { notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) })
  const r = await connect(server.port, expired, provider.roots().rootsPem)
  assert.equal(r.data, '')
  assert.deepEqual(server.accepted, [])
  const inspecting = await startServer(t, provider, true)
  assert.equal((await connect(inspecting.port, expired, provider.roots().rootsPem)).data, '')
  assert.deepEqual(inspecting.unauthorized, ['CERT_HAS_EXPIRED'])
})

test('a client that trusts only the mesh roots refuses a server from another CA', async (t) => {
  const { provider } = await setup(t)
  const other = await createCaInMemory({ trustDomain: 'mtls.test' })
  const impostor = await issueLeafInMemory(other, 'orders')
  const server = tls.createServer({ key: impostor.keyPem, cert: impostor.certPem, ca: [other.certPem], requestCert: true, rejectUnauthorized: false }, (s) => { s.end('should not be read') })
  server.on('tlsClientError', () => { /* the client hangs up */ })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => server.close(() => { resolve() })))
  const r = await connect((server.address() as AddressInfo).port, provider.leaf('web')!, provider.roots().rootsPem)
  assert.equal(r.data, '')
  assert.ok(r.error !== undefined)
  assert.match((r.error as Error & { code?: string }).code ?? '', /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED_CERT_IN_CHAIN/)
})

test('after a rotation the reissued leaf handshakes against the same server (old and new CA trusted)', async (t) => {
  const { dir, provider } = await setup(t)
  const server = await startServer(t, provider)
  const oldWeb = provider.leaf('web')!
  // Rotate the CA: the server still trusts only the old root, as a peer that has not reloaded yet.
  await createLocalCa(dir, { force: true })
  const newWeb = await issueLeaf(dir, 'web')
  const refusedByStaleServer = await connect(server.port, newWeb, provider.roots().rootsPem)
  assert.equal(refusedByStaleServer.data, '')
  assert.deepEqual(server.accepted, [])
  // A server built from the reloaded roots (old + new) accepts old and new leaves alike.
  await eventually(() => provider.roots().rootsPem.length === 2 && provider.leaf('web')?.serial === newWeb.serial, 'the provider to pick up the rotation')
  const fresh = await startServer(t, provider)
  for (const client of [newWeb, oldWeb]) {
    const r = await connect(fresh.port, client, provider.roots().rootsPem)
    assert.equal(r.error, undefined, r.error?.message)
    assert.equal(r.data, 'hello spiffe://mtls.test/ns/default/dc/dc1/svc/web')
  }
})
