// Leaves from the local CA that do not expire on you: with the CA key in the directory the
// gateways issue and renew their own leaves under traffic; without it they warn ahead of expiry.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { defer, eventually, startGateway, tempDir } from '../helpers/gateway.js'
import { startEcho } from '../helpers/upstreams.js'
import { createLocalCa, issueLeaf, issueLeafInMemory, type LeafPem } from '../../src/identity/local-ca.js'

interface CertsLeaf { service: string, serial: string, state: string, renewal: { renewal: string, renewals: number, failures: number, warnings: number, renewAt?: string, warnAt?: string } }

/** A fresh mTLS connection to an inbound listener, one request on it: the status and the serial of the certificate the server presented. */
async function freshCall (port: number, client: LeafPem, caPem: string): Promise<{ status: number, serial: string }> {
  return await new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'orders', cert: client.certPem, key: client.keyPem, ca: caPem, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined })
    let serial = ''
    let data = ''
    const timer = setTimeout(() => { s.destroy(new Error('no answer within 5 s')) }, 5000)
    s.once('secureConnect', () => {
      serial = s.getPeerCertificate().serialNumber
      s.write('GET /x HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n')
    })
    s.setEncoding('utf8')
    s.on('data', (c: string) => { data += c })
    s.once('end', () => {
      clearTimeout(timer)
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0), serial })
    })
    s.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

test('with the CA key, gateways issue missing leaves and renew short-lived ones under traffic with zero failed requests', async (t) => {
  const dir = await tempDir(t)
  const ca = await createLocalCa(dir, { trustDomain: 'renewal.test' })
  // No leaf issued by hand: the gateways issue their own. 8 s leaves, renewed 4 s before expiry:
  // a renewal (a timer, a key, a file written and read back, a TLS context) has 4 s to land
  // before the old leaf expires, enough on a loaded machine (2 s was not).
  const identity = { provider: 'files', dir, leafValidity: '8s', renewBefore: '4s' }
  const orders = await startEcho(t, 'orders')
  const nodeB = await startGateway(t, {
    gateway: { name: 'node-b', mode: 'node' },
    mesh: { mtls: 'strict', identity, authorization: { provider: 'rules', defaultAction: 'allow' } },
    localServices: [{ name: 'orders', port: orders.port }]
  })
  const inbound = nodeB.gateway.listenerAddress('inbound')!.port
  const nodeA = await startGateway(t, {
    gateway: { name: 'node-a', mode: 'node' },
    discovery: { embedded: { services: { orders: { endpoints: [{ id: 'node-b', address: '127.0.0.1', port: inbound }] } } } },
    mesh: { mtls: 'strict', identity, authorization: { provider: 'rules', defaultAction: 'allow' } },
    localServices: []
  })
  const out = `http://127.0.0.1:${nodeA.gateway.listenerAddress('outbound')!.port}`
  const http = new Agent({ keepAliveTimeout: 10_000 })
  defer(t, async () => { await http.destroy() })
  const web = await issueLeafInMemory(ca, 'web', { validityHours: 1 })

  const firstSerial = nodeB.gateway.identity!.leaf('orders')!.serial
  const served = new Set<string>()
  const failures: string[] = []
  let requests = 0
  // Traffic until node-b has served three different 'orders' leaves (two renewals, 8 s), at most 40 s.
  const deadline = Date.now() + 40_000
  while (served.size < 3 && Date.now() < deadline) {
    try {
      const r = await request(`${out}/x`, { dispatcher: http, headers: { host: 'orders' } })
      await r.body.text()
      if (r.statusCode !== 200) failures.push(`via node-a: ${r.statusCode}`)
    } catch (err) {
      failures.push(`via node-a: ${(err as Error).message}`)
    }
    try {
      const r = await freshCall(inbound, web, ca.certPem)
      served.add(r.serial)
      if (r.status !== 200) failures.push(`fresh connection: ${r.status}`)
    } catch (err) {
      failures.push(`fresh connection: ${(err as Error).message}`)
    }
    requests += 2
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  assert.deepEqual(failures, [], `${failures.length} of ${requests} requests failed`)
  assert.ok(served.size >= 3, `served serials: ${[...served].join(', ')}`)
  assert.ok(served.has(firstSerial), 'the first leaf was served before it was renewed')
  assert.ok(requests > 20, `only ${requests} requests`)

  // The renewed leaves are in the directory, as `fastmesh certs issue` would have written them.
  await eventually(async () => new X509Certificate(await readFile(join(dir, 'orders.pem'), 'utf8')).serialNumber === nodeB.gateway.identity!.leaf('orders')!.serial, 'orders.pem holds the leaf node-b serves')
  const certs = (await nodeB.admin('GET', '/certs')).json<{ leaves: CertsLeaf[] }>()
  const ordersLeaf = certs.leaves.find((l) => l.service === 'orders')!
  assert.equal(ordersLeaf.renewal.renewal, 'self')
  assert.ok(ordersLeaf.renewal.renewals >= 3, JSON.stringify(ordersLeaf))
  assert.equal(ordersLeaf.renewal.failures, 0)
  assert.ok(ordersLeaf.renewal.renewAt !== undefined)
  // node-a renewed its own (client) leaf too.
  const nodeALeaf = (await nodeA.admin('GET', '/certs')).json<{ leaves: CertsLeaf[] }>().leaves.find((l) => l.service === 'node-a')!
  assert.ok(nodeALeaf.renewal.renewals >= 2, JSON.stringify(nodeALeaf))
})

test('without the CA key, a leaf entering warnBefore is logged once as a warning and shown as expiring in admin /certs', async (t) => {
  const dir = await tempDir(t)
  await createLocalCa(dir, { trustDomain: 'renewal.test' })
  // Leaves that enter the 3600 s warning window about 10 s from now: after the gateway has
  // started and been asked, even on a loaded machine.
  const notAfter = new Date(Date.now() + 3_610_000)
  for (const s of ['node-b', 'orders']) await issueLeaf(dir, s, { notAfter })
  await rm(join(dir, 'ca-key.pem'))
  const orders = await startEcho(t, 'orders')
  const nodeB = await startGateway(t, {
    gateway: { name: 'node-b', mode: 'node' },
    mesh: { mtls: 'strict', identity: { provider: 'files', dir, warnBefore: '3600s' }, authorization: { provider: 'rules', defaultAction: 'allow' } },
    localServices: [{ name: 'orders', port: orders.port }]
  })
  const leafOf = async (): Promise<CertsLeaf> => (await nodeB.admin('GET', '/certs')).json<{ leaves: CertsLeaf[] }>().leaves.find((l) => l.service === 'orders')!
  const before = await leafOf()
  assert.equal(before.state, 'valid')
  assert.equal(before.renewal.renewal, 'manual')
  assert.equal(before.renewal.warnings, 0)
  const warning = (): boolean => nodeB.logs.entries().some((e) => e.level === 'warn' && e.service === 'orders' && String(e.msg).includes('has no CA key'))
  assert.equal(warning(), false, 'no warning before the window')

  await eventually(warning, 'the expiry warning', 30_000)
  const line = nodeB.logs.entries().find((e) => e.level === 'warn' && e.service === 'orders' && String(e.msg).includes('has no CA key'))!
  assert.match(String(line.msg), new RegExp(`fastmesh certs issue --dir ${dir} --service orders`))
  assert.equal(line.state, 'expiring')
  const after = await leafOf()
  assert.equal(after.state, 'expiring')
  assert.equal(after.renewal.warnings, 1)
  assert.equal(after.renewal.renewals, 0)
})
