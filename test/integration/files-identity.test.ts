// FilesIdentityProvider over a real directory: loading, rotation by reissuing, refusal of a bad
// leaf (the old one keeps serving), CA rotation through roots/, and clear errors when missing.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { FilesIdentityProvider } from '../../src/identity/files-provider.js'
import { createCaInMemory, createLocalCa, issueLeaf, issueLeafInMemory, type CreatedCa } from '../../src/identity/local-ca.js'
import type { IdentityChange } from '../../src/identity/types.js'
import { isFastmeshError } from '../../src/errors.js'
import { eventually } from '../helpers/poll.js'

interface LogLine { level: number, msg: string, code?: string, service?: string }

function captureLog (): { log: pino.Logger, lines: LogLine[] } {
  const lines: LogLine[] = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as LogLine)
      cb()
    }
  })
  return { log: pino({ level: 'debug' }, stream), lines }
}

async function setup (t: TestContext, services: string[] = ['orders', 'web']): Promise<{ dir: string, ca: CreatedCa }> {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-files-id-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const ca = await createLocalCa(dir, { trustDomain: 'files.test' })
  for (const s of services) await issueLeaf(dir, s)
  return { dir, ca }
}

/** selfIssue off: these tests are about reading what `fastmesh certs` wrote, though ca-key.pem is there. */
function provider (t: TestContext, dir: string, opts: Partial<ConstructorParameters<typeof FilesIdentityProvider>[0]> = { selfIssue: false }): { p: FilesIdentityProvider, lines: LogLine[] } {
  const { log, lines } = captureLog()
  const p = new FilesIdentityProvider({ dir, log, debounceMs: 50, pollMs: 50, ...opts })
  t.after(() => p.close())
  return { p, lines }
}

test('loads roots and leaves from the directory', async (t) => {
  const { dir, ca } = await setup(t)
  const { p } = provider(t, dir)
  assert.equal(p.kind, 'files')
  await p.start(['orders', 'web'])
  const roots = p.roots()
  assert.equal(roots.trustDomain, 'files.test')
  assert.deepEqual(roots.rootsPem, [ca.certPem])
  assert.equal(roots.notAfter?.getTime(), ca.notAfter.getTime())
  const orders = p.leaf('orders')
  assert.ok(orders !== undefined)
  assert.equal(orders.spiffeId, 'spiffe://files.test/ns/default/dc/dc1/svc/orders')
  assert.equal(orders.certPem, await readFile(join(dir, 'orders.pem'), 'utf8'))
  assert.equal(orders.keyPem, await readFile(join(dir, 'orders-key.pem'), 'utf8'))
  assert.ok(orders.notAfter > new Date() && orders.notBefore < new Date())
  assert.match(orders.serial, /^[0-9A-F]+$/)
  assert.equal(p.leaf('web')?.service, 'web')
  assert.equal(p.leaf('billing'), undefined)
})

test('reissuing a leaf emits a change and the new serial is served', async (t) => {
  const { dir } = await setup(t)
  const { p } = provider(t, dir)
  await p.start(['orders', 'web'])
  const changes: IdentityChange[] = []
  p.onChange((c) => { changes.push(c) })
  const before = p.leaf('orders')!.serial
  const reissued = await issueLeaf(dir, 'orders')
  assert.notEqual(reissued.serial, before)
  await eventually(() => p.leaf('orders')?.serial === reissued.serial, 'the new serial')
  assert.deepEqual(changes, [{ kind: 'leaf', service: 'orders' }])
  assert.equal(p.leaf('orders')!.keyPem, reissued.keyPem)
})

test('a leaf whose SPIFFE ID names another service is refused and the old one kept', async (t) => {
  const { dir, ca } = await setup(t)
  const { p, lines } = provider(t, dir)
  await p.start(['orders'])
  const changes: IdentityChange[] = []
  p.onChange((c) => { changes.push(c) })
  const old = p.leaf('orders')!
  const wrong = await issueLeafInMemory(ca, 'orders', { spiffeId: 'spiffe://files.test/ns/default/dc/dc1/svc/web' })
  await writeFile(join(dir, 'orders-key.pem'), wrong.keyPem)
  await writeFile(join(dir, 'orders.pem'), wrong.certPem)
  await eventually(() => lines.some((l) => l.code === 'FASTMESH_ERR_IDENTITY_INVALID' && l.msg.includes('names service "web"')), 'the refusal log line')
  const line = lines.find((l) => l.code === 'FASTMESH_ERR_IDENTITY_INVALID')!
  assert.equal(line.level, 50, 'logged as an error')
  assert.match(line.msg, /keeping the previous one/)
  assert.equal(line.service, 'orders')
  assert.equal(p.leaf('orders'), old)
  assert.equal(p.problem('orders')?.code, 'FASTMESH_ERR_IDENTITY_INVALID')
  assert.deepEqual(changes, [])
  // A good one after that is taken.
  const good = await issueLeaf(dir, 'orders')
  await eventually(() => p.leaf('orders')?.serial === good.serial, 'the good leaf')
  assert.equal(p.problem('orders'), undefined)
  assert.deepEqual(changes, [{ kind: 'leaf', service: 'orders' }])
})

test('a certificate that does not match its key is refused and the old one kept', async (t) => {
  const { dir, ca } = await setup(t)
  const { p, lines } = provider(t, dir)
  await p.start(['orders'])
  const old = p.leaf('orders')!
  const other = await issueLeafInMemory(ca, 'orders')
  await writeFile(join(dir, 'orders.pem'), other.certPem) // with the old key left in orders-key.pem
  await eventually(() => lines.some((l) => l.code === 'FASTMESH_ERR_IDENTITY_INVALID' && l.msg.includes('does not match')), 'the refusal log line')
  assert.equal(p.leaf('orders'), old)
})

test('a leaf from a CA that is not trusted is refused', async (t) => {
  const { dir } = await setup(t)
  const { p, lines } = provider(t, dir)
  await p.start(['orders'])
  const old = p.leaf('orders')!
  const foreign = await issueLeafInMemory(await createCaInMemory({ trustDomain: 'files.test' }), 'orders')
  await writeFile(join(dir, 'orders-key.pem'), foreign.keyPem)
  await writeFile(join(dir, 'orders.pem'), foreign.certPem)
  await eventually(() => lines.some((l) => l.code === 'FASTMESH_ERR_IDENTITY_INVALID' && l.msg.includes('not signed by a trusted root')), 'the refusal log line')
  assert.equal(p.leaf('orders'), old)
})

test('a missing leaf fails start() at once, naming the file and the command that makes it', async (t) => {
  const { dir } = await setup(t, ['web'])
  const { p } = provider(t, dir)
  await assert.rejects(p.start(['web', 'orders']), (err: unknown) => {
    assert.ok(isFastmeshError(err))
    assert.equal(err.code, 'FASTMESH_ERR_IDENTITY_MISSING')
    assert.ok(err.message.includes(join(dir, 'orders.pem')), err.message)
    assert.ok(err.message.includes(`fastmesh certs issue --dir ${dir} --service orders`), err.message)
    return true
  })
})

test('a missing CA fails start(), naming `fastmesh certs init`', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-files-id-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const { p } = provider(t, dir)
  await assert.rejects(p.start(['orders']), (err: unknown) => {
    assert.ok(isFastmeshError(err))
    assert.equal(err.code, 'FASTMESH_ERR_IDENTITY_MISSING')
    assert.ok(err.message.includes(join(dir, 'ca.pem')), err.message)
    assert.ok(err.message.includes(`fastmesh certs init --dir ${dir}`), err.message)
    return true
  })
})

test('start() with a timeout waits for a leaf that appears, and fails after it otherwise', async (t) => {
  const { dir } = await setup(t, [])
  const { p } = provider(t, dir)
  const started = Date.now()
  const waiting = p.start(['orders'], 5000)
  setTimeout(() => { void issueLeaf(dir, 'orders') }, 200)
  await waiting
  assert.ok(Date.now() - started < 4000)
  assert.ok(p.leaf('orders') !== undefined)

  const { p: p2 } = provider(t, dir)
  const t0 = Date.now()
  await assert.rejects(p2.start(['billing'], 300), /Identity file .*billing\.pem is missing; create it with `fastmesh certs issue --dir .* --service billing`/)
  assert.ok(Date.now() - t0 >= 290, 'waited for the timeout')
})

test('a leaf that is present but invalid fails start() with the reason', async (t) => {
  const { dir, ca } = await setup(t, [])
  const wrong = await issueLeafInMemory(ca, 'orders', { spiffeId: 'spiffe://files.test/ns/default/dc/dc1/svc/web' })
  await writeFile(join(dir, 'orders.pem'), wrong.certPem)
  await writeFile(join(dir, 'orders-key.pem'), wrong.keyPem)
  const { p } = provider(t, dir)
  await assert.rejects(p.start(['orders']), /FASTMESH_ERR_IDENTITY_INVALID|refused: its SPIFFE ID .* names service "web", not "orders"/)
})

test('ensure() adds a leaf, and rejects clearly while it is missing', async (t) => {
  const { dir } = await setup(t, ['orders'])
  const { p } = provider(t, dir)
  await p.start(['orders'])
  await assert.rejects(p.ensure('users'), /users\.pem is missing/)
  await assert.rejects(p.ensure('bad name'), /Invalid service name/)
  await issueLeaf(dir, 'users')
  await p.ensure('users')
  assert.equal(p.leaf('users')?.service, 'users')
  await p.ensure('users') // idempotent
})

test('CA rotation: the old CA stays trusted from roots/, old leaves keep serving, reissued ones are taken', async (t) => {
  const { dir, ca } = await setup(t, ['orders'])
  const { p } = provider(t, dir)
  await p.start(['orders'])
  const changes: IdentityChange[] = []
  p.onChange((c) => { changes.push(c) })
  const oldLeaf = p.leaf('orders')!
  const rotated = await createLocalCa(dir, { force: true })
  await eventually(() => p.roots().rootsPem.length === 2, 'both roots')
  assert.deepEqual(p.roots().rootsPem, [rotated.certPem, ca.certPem])
  assert.equal(p.roots().trustDomain, 'files.test')
  assert.deepEqual(changes, [{ kind: 'roots' }])
  assert.equal(p.leaf('orders'), oldLeaf, 'a leaf of the previous CA is still valid')
  const reissued = await issueLeaf(dir, 'orders')
  await eventually(() => p.leaf('orders')?.serial === reissued.serial, 'the reissued leaf')
  // Dropping the previous root.
  await rm(rotated.previousRootFile!)
  await eventually(() => p.roots().rootsPem.length === 1, 'the old root gone')
  assert.deepEqual(changes, [{ kind: 'roots' }, { kind: 'leaf', service: 'orders' }, { kind: 'roots' }])
})

test('an extra root added under roots/ is picked up; a broken ca.pem is refused and the old roots kept', async (t) => {
  const { dir, ca } = await setup(t, ['orders'])
  const { p, lines } = provider(t, dir)
  await p.start(['orders'])
  const other = await createCaInMemory({ trustDomain: 'files.test' })
  await mkdir(join(dir, 'roots'))
  await writeFile(join(dir, 'roots', 'other.pem'), other.certPem)
  await eventually(() => p.roots().rootsPem.length === 2, 'the extra root')
  await writeFile(join(dir, 'ca.pem'), 'not a certificate\n')
  await eventually(() => lines.some((l) => l.code === 'FASTMESH_ERR_IDENTITY_INVALID' && l.msg.includes('ca.pem')), 'the refusal')
  assert.deepEqual(p.roots().rootsPem, [ca.certPem, other.certPem])
})

test('an expired leaf is served with a warning naming the command that reissues it', async (t) => {
  const { dir, ca } = await setup(t, [])
  const expired = await issueLeafInMemory(ca, 'orders', { notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) })
  await writeFile(join(dir, 'orders.pem'), expired.certPem)
  await writeFile(join(dir, 'orders-key.pem'), expired.keyPem)
  const { p, lines } = provider(t, dir)
  await p.start(['orders'])
  assert.equal(p.leaf('orders')?.serial, expired.serial)
  const warn = lines.find((l) => l.level === 40 && l.msg.includes('expired'))
  assert.ok(warn !== undefined, JSON.stringify(lines))
  assert.ok(warn.msg.includes(`fastmesh certs issue --dir ${dir} --service orders`))
})

test('close() stops watching: later changes are not applied', async (t) => {
  const { dir } = await setup(t, ['orders'])
  const { p } = provider(t, dir)
  await p.start(['orders'])
  const serial = p.leaf('orders')!.serial
  const changes: IdentityChange[] = []
  p.onChange((c) => { changes.push(c) })
  await p.close()
  await issueLeaf(dir, 'orders')
  await new Promise((resolve) => setTimeout(resolve, 300))
  assert.equal(p.leaf('orders')!.serial, serial)
  assert.deepEqual(changes, [])
})

test('with the CA key, a missing leaf is issued into the directory at start', async (t) => {
  const { dir } = await setup(t, [])
  const { p, lines } = provider(t, dir, {})
  await p.start(['orders'])
  const leaf = p.leaf('orders')
  assert.ok(leaf !== undefined)
  assert.equal(leaf.spiffeId, 'spiffe://files.test/ns/default/dc/dc1/svc/orders')
  assert.equal(await readFile(join(dir, 'orders.pem'), 'utf8'), leaf.certPem)
  assert.equal(await readFile(join(dir, 'orders-key.pem'), 'utf8'), leaf.keyPem)
  const hours = (leaf.notAfter.getTime() - Date.now()) / 3_600_000
  assert.ok(hours > 71.9 && hours <= 72, String(hours))
  assert.equal(p.renewalStatus('orders')?.renewal, 'self')
  assert.equal(p.renewalStatus('orders')?.renewals, 1)
  assert.ok(lines.some((l) => l.msg === 'leaf certificate issued with the local CA key' && l.service === 'orders'))
})

test('with the CA key, an expired leaf is replaced at start', async (t) => {
  const { dir, ca } = await setup(t, [])
  const expired = await issueLeafInMemory(ca, 'orders', { notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) })
  await writeFile(join(dir, 'orders.pem'), expired.certPem)
  await writeFile(join(dir, 'orders-key.pem'), expired.keyPem)
  const { p } = provider(t, dir, {})
  await p.start(['orders'])
  await eventually(() => p.leaf('orders')?.serial !== expired.serial, 'a new leaf')
  assert.ok(p.leaf('orders')!.notAfter > new Date())
})

test('a leaf file with two URI SANs is refused, not read as its first', async (t) => {
  const { dir, ca } = await setup(t, [])
  const two = await issueLeafInMemory(ca, 'orders', { extraUris: ['spiffe://files.test/ns/default/dc/dc1/svc/web'] })
  await writeFile(join(dir, 'orders.pem'), two.certPem)
  await writeFile(join(dir, 'orders-key.pem'), two.keyPem)
  const { p } = provider(t, dir)
  await assert.rejects(p.start(['orders']), /refused: the certificate has 2 URI SANs .* SPIFFE requires exactly one/)
})

