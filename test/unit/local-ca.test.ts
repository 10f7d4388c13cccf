// The local CA: a leaf verifies against its CA and nothing else, carries its SPIFFE ID, and
// comes with its key; files are written with the right names and modes.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  caTrustDomain, createCaInMemory, createLocalCa, issueLeaf, issueLeafInMemory, listCertificates, uriSans
} from '../../src/identity/local-ca.js'
import { serviceSpiffeId } from '../../src/identity/types.js'
import { isFastmeshError } from '../../src/errors.js'

async function tempDir (t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-ca-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return dir
}

function hasCode (code: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(isFastmeshError(err), String(err))
    assert.equal(err.code, code, err.message)
    return true
  }
}

test('a leaf verifies against its CA, names its SPIFFE ID and matches its key', async () => {
  const ca = await createCaInMemory({ trustDomain: 'mesh.test' })
  const leaf = await issueLeafInMemory(ca, 'orders')
  const caCert = new X509Certificate(ca.certPem)
  const cert = new X509Certificate(leaf.certPem)
  assert.ok(cert.checkIssued(caCert))
  assert.ok(cert.verify(caCert.publicKey))
  assert.ok(cert.checkPrivateKey(createPrivateKey(leaf.keyPem)))
  assert.equal(cert.ca, false)
  assert.equal(leaf.spiffeId, serviceSpiffeId('mesh.test', 'dc1', 'orders'))
  assert.equal(leaf.spiffeId, 'spiffe://mesh.test/ns/default/dc/dc1/svc/orders')
  assert.deepEqual(uriSans(cert), [leaf.spiffeId])
  assert.match(cert.subjectAltName ?? '', /DNS:orders/)
  assert.equal(leaf.serial, cert.serialNumber)
  assert.equal(leaf.service, 'orders')
  const key = createPrivateKey(leaf.keyPem)
  assert.equal(key.asymmetricKeyType, 'ec')
  assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1')
  // Default validity: 72 h from (about) now.
  const hours = (leaf.notAfter.getTime() - Date.now()) / 3_600_000
  assert.ok(hours > 71.9 && hours <= 72, String(hours))
  assert.ok(leaf.notBefore.getTime() <= Date.now())
})

test('the CA is a CA with its trust domain as a URI SAN; a leaf is not', async () => {
  const ca = await createCaInMemory({ trustDomain: 'Mixed.Case.Test', datacenter: 'east' })
  const caCert = new X509Certificate(ca.certPem)
  assert.equal(caCert.ca, true)
  assert.equal(ca.trustDomain, 'mixed.case.test')
  assert.equal(caTrustDomain(caCert), 'mixed.case.test')
  assert.ok(caCert.checkIssued(caCert), 'self-signed')
  assert.ok(caCert.verify(caCert.publicKey))
  const days = (ca.notAfter.getTime() - Date.now()) / 86_400_000
  assert.ok(days > 3649 && days <= 3650, String(days))
  // A leaf takes the CA's datacenter unless told otherwise.
  assert.equal((await issueLeafInMemory(ca, 'web')).spiffeId, 'spiffe://mixed.case.test/ns/default/dc/east/svc/web')
  assert.equal((await issueLeafInMemory(ca, 'web', { datacenter: 'west' })).spiffeId, 'spiffe://mixed.case.test/ns/default/dc/west/svc/web')
})

test('a leaf from a second CA does not verify against the first', async () => {
  const first = await createCaInMemory()
  const second = await createCaInMemory()
  const stranger = new X509Certificate((await issueLeafInMemory(second, 'orders')).certPem)
  const firstCert = new X509Certificate(first.certPem)
  assert.equal(stranger.verify(firstCert.publicKey), false)
  assert.equal(stranger.verify(new X509Certificate(second.certPem).publicKey), true)
})

test('explicit dates make an expired leaf; a wrong identity can be asked for', async () => {
  const ca = await createCaInMemory()
  const past = new Date(Date.now() - 2 * 86_400_000)
  const expired = await issueLeafInMemory(ca, 'orders', { notBefore: past, notAfter: new Date(Date.now() - 86_400_000) })
  assert.ok(expired.notAfter.getTime() < Date.now())
  assert.ok(new Date(new X509Certificate(expired.certPem).validTo).getTime() < Date.now())
  const wrong = await issueLeafInMemory(ca, 'orders', { spiffeId: 'spiffe://fastmesh.local/ns/default/dc/dc1/svc/web' })
  assert.deepEqual(uriSans(new X509Certificate(wrong.certPem)), ['spiffe://fastmesh.local/ns/default/dc/dc1/svc/web'])
  await assert.rejects(issueLeafInMemory(ca, 'orders', { notAfter: past, notBefore: new Date() }), /must be after notBefore/)
})

test('a leaf does not outlive its CA', async () => {
  const ca = await createCaInMemory({ validityDays: 1 })
  const leaf = await issueLeafInMemory(ca, 'orders', { validityHours: 48 })
  assert.equal(leaf.notAfter.getTime(), ca.notAfter.getTime())
})

test('service, datacenter and trust domain names are validated with clear errors', async () => {
  const ca = await createCaInMemory()
  for (const bad of ['', 'has space', '-leading', 'a/b', '../x', 'x'.repeat(64)]) {
    await assert.rejects(issueLeafInMemory(ca, bad), hasCode('FASTMESH_ERR_IDENTITY_BAD_NAME'), bad)
  }
  await assert.rejects(issueLeafInMemory(ca, 'ca'), /would clash with the CA/)
  await assert.rejects(issueLeafInMemory(ca, 'orders-key'), /would clash with a key file/)
  await assert.rejects(issueLeafInMemory(ca, 'orders', { datacenter: 'dc 1' }), /Invalid datacenter "dc 1"/)
  await assert.rejects(createCaInMemory({ trustDomain: 'bad/domain' }), /Invalid trust domain "bad\/domain"/)
  for (const ok of ['a', 'orders.v2', 'my_service-1', 'x'.repeat(63)]) await issueLeafInMemory(ca, ok)
})

test('createLocalCa and issueLeaf write the files, keys 0600, and read the trust domain back', async (t) => {
  const dir = await tempDir(t)
  const made = await createLocalCa(dir, { trustDomain: 'files.test' })
  assert.equal(made.certFile, join(dir, 'ca.pem'))
  assert.equal((await stat(join(dir, 'ca-key.pem'))).mode & 0o777, 0o600)
  const leaf = await issueLeaf(dir, 'orders', { validityHours: 2 })
  assert.equal(leaf.spiffeId, 'spiffe://files.test/ns/default/dc/dc1/svc/orders')
  assert.equal((await stat(join(dir, 'orders-key.pem'))).mode & 0o777, 0o600)
  assert.deepEqual((await readdir(dir)).sort(), ['ca-key.pem', 'ca.pem', 'orders-key.pem', 'orders.pem'])
  const certText = await readFile(join(dir, 'orders.pem'), 'utf8')
  assert.equal(certText.match(/BEGIN CERTIFICATE/g)?.length, 1, 'the leaf file holds the leaf only')
  const cert = new X509Certificate(certText)
  assert.ok(cert.verify(new X509Certificate(await readFile(join(dir, 'ca.pem'), 'utf8')).publicKey))
  assert.ok(cert.checkPrivateKey(createPrivateKey(await readFile(join(dir, 'orders-key.pem'), 'utf8'))))
  const hours = (leaf.notAfter.getTime() - Date.now()) / 3_600_000
  assert.ok(hours > 1.9 && hours <= 2, String(hours))
})

test('createLocalCa refuses to overwrite a CA unless forced; forced, it keeps the old root and trust domain', async (t) => {
  const dir = await tempDir(t)
  const first = await createLocalCa(dir, { trustDomain: 'keep.test' })
  await assert.rejects(createLocalCa(dir), hasCode('FASTMESH_ERR_IDENTITY_CA_EXISTS'))
  assert.equal(await readFile(join(dir, 'ca.pem'), 'utf8'), first.certPem, 'untouched')
  const second = await createLocalCa(dir, { force: true })
  assert.notEqual(second.serial, first.serial)
  assert.equal(second.trustDomain, 'keep.test')
  assert.equal(second.previousRootFile, join(dir, 'roots', `previous-${first.serial}.pem`))
  assert.equal(await readFile(second.previousRootFile, 'utf8'), first.certPem)
})

test('issueLeaf without a CA names the command that makes one', async (t) => {
  const dir = await tempDir(t)
  await assert.rejects(issueLeaf(dir, 'orders'), (err: unknown) => {
    hasCode('FASTMESH_ERR_IDENTITY_MISSING')(err)
    assert.ok((err as Error).message.includes(`fastmesh certs init --dir ${dir}`), (err as Error).message)
    return true
  })
})

test('listCertificates reports each leaf with its SPIFFE ID, expiry and problems', async (t) => {
  const dir = await tempDir(t)
  const ca = await createLocalCa(dir)
  await issueLeaf(dir, 'orders')
  const other = await issueLeafInMemory(ca, 'web', { spiffeId: serviceSpiffeId('fastmesh.local', 'dc1', 'billing') })
  await writeFile(join(dir, 'web.pem'), other.certPem)
  await writeFile(join(dir, 'web-key.pem'), other.keyPem)
  await issueLeaf(dir, 'users')
  await rm(join(dir, 'users-key.pem'))
  const listed = await listCertificates(dir)
  assert.deepEqual(listed.map((c) => [c.kind, c.service, c.problem]), [
    ['ca', undefined, undefined],
    ['leaf', 'orders', undefined],
    ['leaf', 'users', 'users-key.pem: missing'],
    ['leaf', 'web', 'SPIFFE ID names service "billing"']
  ])
  assert.equal(listed[1]!.spiffeId, 'spiffe://fastmesh.local/ns/default/dc/dc1/svc/orders')
  assert.ok(listed[1]!.notAfter instanceof Date)
})
