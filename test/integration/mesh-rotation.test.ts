// Certificate rotation under traffic: Consul's CA is rotated (new root, new leaves for
// every service) while calls cross between two node gateways; not one call may fail.
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { Agent, request } from 'undici'
import { startConsul, consulApi } from '../helpers/consul.js'
import { startGateway, eventually } from '../helpers/gateway.js'
import { startSampleService } from '../../src/demo/sample-service.js'
import { createCaInMemory } from '../../src/identity/local-ca.js'

interface CertsBody { leaves: Array<{ service: string, serial: string }>, roots: { count: number } }

it('a Connect CA rotation while traffic flows fails no request', async (t) => {
  const agent = await startConsul()
  t.after(async () => { await agent.stop() })
  const orders = await startSampleService('orders', 'orders-1', 0)
  t.after(async () => { await orders.close() })
  const consul = { address: agent.httpAddr, wait: '5s' }
  const mesh = { mtls: 'strict', identity: { provider: 'consul' } }
  const nodeA = await startGateway(t, { gateway: { name: 'node-a', mode: 'node' }, discovery: { consul }, mesh })
  const nodeB = await startGateway(t, { gateway: { name: 'node-b', mode: 'node' }, discovery: { consul }, mesh, localServices: [{ name: 'orders', port: orders.port }] })
  const out = `http://127.0.0.1:${nodeA.gateway.listenerAddress('outbound')!.port}`
  const http = new Agent({ connections: 8 })
  t.after(async () => { await http.close() })
  const call = async (): Promise<number> => {
    const r = await request(`${out}/x`, { dispatcher: http, headers: { host: 'orders' } })
    await r.body.dump()
    return r.statusCode
  }
  await eventually(async () => await call() === 200, 'the first call through the mesh')

  const serials = async (gw: typeof nodeA): Promise<Record<string, string>> =>
    Object.fromEntries((await gw.admin('GET', '/certs')).json<CertsBody>().leaves.map((l) => [l.service, l.serial]))
  const before = { a: await serials(nodeA), b: await serials(nodeB) }

  // Traffic: 4 concurrent callers until told to stop.
  let stop = false
  const statuses = new Map<number, number>()
  let errors = 0
  // However the test ends, the callers stop (or the process would never exit).
  t.after(() => { stop = true })
  const loops = Array.from({ length: 4 }, async () => {
    while (!stop) {
      try {
        const s = await call()
        statuses.set(s, (statuses.get(s) ?? 0) + 1)
      } catch {
        errors++
      }
    }
  })

  // A new root for the same trust domain: Consul makes it active, keeps trusting the old
  // one, and re-issues every leaf (with a cross-signed intermediate).
  const { TrustDomain } = await consulApi<{ TrustDomain: string }>(agent, 'GET', '/v1/agent/connect/ca/roots')
  const newRoot = await createCaInMemory({ trustDomain: TrustDomain, validityDays: 30 })
  await consulApi(agent, 'PUT', '/v1/connect/ca/configuration', { Provider: 'consul', Config: { LeafCertTTL: '72h', PrivateKey: newRoot.keyPem, RootCert: newRoot.certPem } })
  await eventually(async () => {
    const a = await serials(nodeA)
    const b = await serials(nodeB)
    return a['node-a'] !== before.a['node-a'] && b.orders !== before.b.orders
  }, 'both nodes to hold leaves from the new root (Consul staggers re-issue after a rotation)', 60_000, 200)
  // Keep calling on the new certificates for a while, then stop.
  await new Promise((r) => setTimeout(r, 1500))
  stop = true
  await Promise.all(loops)

  const total = [...statuses.values()].reduce((a, b) => a + b, 0)
  assert.ok(total > 50, `enough calls flowed during the rotation (${total})`)
  assert.equal(errors, 0, 'no call failed at the transport level')
  assert.deepEqual([...statuses.keys()], [200], `every call answered 200: ${JSON.stringify(Object.fromEntries(statuses))}`)
  // During the rotation both roots are trusted.
  const roots = (await nodeA.admin('GET', '/certs')).json<CertsBody>().roots
  assert.equal(roots.count, 2)
})
