// gateway.workers with the parts only the primary holds: mesh certificates (files provider)
// relayed to workers that terminate mTLS, a rotated leaf served by every worker without a
// restart; and Consul discovery watched once, by the primary, however many workers route.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { connect, type PeerCertificate } from 'node:tls'
import { request } from 'undici'
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js'
import { startEcho, type EchoUpstream } from '../helpers/upstreams.js'
import { startGateway, tempDir, eventually, type LogEntry } from '../helpers/gateway.js'
import { startConsul, type ConsulAgent } from '../helpers/consul.js'
import { socketsTo } from '../helpers/sockets.js'
import { createLocalCa, issueLeaf } from '../../src/identity/local-ca.js'

interface WorkerRow { index: number, pid: number, state: string, version: number | null }

async function workerPids (g: GatewayProcess): Promise<number[]> {
  const body = await (await request(`${g.adminUrl}/workers`)).body.json() as { workers: WorkerRow[] }
  assert.equal(body.workers.length, 2)
  for (const w of body.workers) assert.equal(w.state, 'ready')
  return body.workers.map((w) => w.pid)
}

function listenerPort (g: GatewayProcess, name: string): number {
  const up = g.logs().find((e) => e.msg === 'fastmesh gateway listening') as LogEntry & { listeners: Record<string, { port: number }> }
  return up.listeners[name]!.port
}

/** The leaf the inbound listener presents to a caller holding `caller`'s certificate (a fresh TLS connection). */
async function servedLeaf (port: number, dir: string, caller: string): Promise<PeerCertificate> {
  const [cert, key, ca] = await Promise.all([readFile(join(dir, `${caller}.pem`)), readFile(join(dir, `${caller}-key.pem`)), readFile(join(dir, 'ca.pem'))])
  return await new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, cert, key, ca, servername: 'orders', rejectUnauthorized: false }, () => {
      const peer = socket.getPeerCertificate()
      socket.end()
      resolve(peer)
    })
    socket.once('error', reject)
  })
}

/**
 * A node gateway `name` with two workers, strict mTLS from a fresh local CA (leaves for
 * `leaves`) and one local service, `orders` (an echo upstream); `extra` merged into its config.
 */
async function nodeWithWorkers (t: TestContext, name: string, leaves: readonly string[], extra: Record<string, unknown>): Promise<{ dir: string, orders: EchoUpstream, file: string }> {
  const dir = await tempDir(t)
  await createLocalCa(dir, { trustDomain: 'workers.test' })
  for (const s of leaves) await issueLeaf(dir, s)
  const orders = await startEcho(t, 'orders')
  const any = { address: '127.0.0.1', port: 0 }
  const file = join(dir, `${name}.json`)
  const authorization = (extra.authorization as Record<string, unknown> | undefined) ?? {}
  const rest = { ...extra }
  delete rest.authorization
  await writeFile(file, JSON.stringify({
    gateway: { name, mode: 'node', workers: 2 },
    listeners: { outbound: any, inbound: any, admin: any },
    mesh: { mtls: 'strict', identity: { provider: 'files', dir, selfIssue: false }, authorization: { provider: 'rules', defaultAction: 'deny', ...authorization } },
    localServices: [{ name: 'orders', port: orders.port }],
    ...rest
  }))
  return { dir, orders, file }
}

test('workers terminate mesh mTLS with the primary\'s certificates; a reissued leaf is served by every worker without a restart', async (t) => {
  const { dir, orders, file } = await nodeWithWorkers(t, 'node-b', ['node-a', 'node-b', 'orders'], { authorization: { rules: [{ source: 'node-a', destination: 'orders', action: 'allow' }] } })
  const any = { address: '127.0.0.1', port: 0 }
  const nodeB = await startGatewayProcess(t, ['--config', file], { NODE_CLUSTER_SCHED_POLICY: 'rr' })
  const pids = await workerPids(nodeB)
  const inbound = listenerPort(nodeB, 'inbound')
  const nodeA = await startGateway(t, {
    gateway: { name: 'node-a', mode: 'node' },
    listeners: { outbound: any, inbound: any, admin: any },
    discovery: { embedded: { services: { orders: { endpoints: [{ id: 'node-b', address: '127.0.0.1', port: inbound }] } } } },
    mesh: { mtls: 'strict', identity: { provider: 'files', dir, selfIssue: false }, authorization: { provider: 'rules', defaultAction: 'deny' } }
  })
  const outbound = nodeA.gateway.listenerAddress('outbound')!.port
  const call = async (): Promise<number> => {
    const r = await request(`http://127.0.0.1:${outbound}/x`, { headers: { host: 'orders', connection: 'close' }, reset: true })
    await r.body.dump()
    return r.statusCode
  }
  // node-a keeps a pool to node-b; enough calls that both workers take handshakes is not
  // needed: every handshake below is a fresh connection, handed out round-robin.
  for (let i = 0; i < 6; i++) assert.equal(await call(), 200)
  assert.equal(orders.seen.at(-1)?.headers['x-forwarded-client-cert'], 'URI=spiffe://workers.test/ns/default/dc/dc1/svc/node-a')

  const before = await servedLeaf(inbound, dir, 'node-a')
  assert.match(String(before.subjectaltname), /svc\/orders/)
  // Reissue orders' leaf: the primary's provider reads it and every worker serves it.
  const reissued = await issueLeaf(dir, 'orders')
  await eventually(async () => {
    // Four fresh handshakes: round-robin takes them to both workers.
    const serials = await Promise.all([0, 1, 2, 3].map(async () => (await servedLeaf(inbound, dir, 'node-a')).serialNumber.toUpperCase()))
    return serials.every((s) => s === reissued.serial.toUpperCase()) ? true : undefined
  }, 'every worker to present the reissued leaf', 15_000)
  assert.notEqual(before.serialNumber.toUpperCase(), reissued.serial.toUpperCase())
  assert.equal(await call(), 200)
  // The workers never read the certificate directory themselves: the same two serve.
  assert.deepEqual((await workerPids(nodeB)).sort(), pids.sort())
})

test('with Consul, the primary watches once for all workers: no worker opens a connection to the agent', async (t) => {
  const consul: ConsulAgent = await startConsul()
  t.after(async () => { await consul.stop() })
  const api = async (path: string, body: unknown): Promise<void> => {
    const r = await request(`${consul.url}${path}`, { method: 'PUT', body: JSON.stringify(body) })
    assert.equal(r.statusCode, 200, await r.body.text())
  }
  const a = await startEcho(t, 'a')
  const b = await startEcho(t, 'b')
  await api('/v1/agent/service/register', { ID: 'pay-1', Name: 'pay', Address: '127.0.0.1', Port: a.port })
  const dir = await tempDir(t)
  const file = join(dir, 'edge.json')
  await writeFile(file, JSON.stringify({
    gateway: { name: 'edge-c', workers: 2 },
    listeners: { http: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } },
    discovery: { consul: { address: consul.httpAddr } },
    routes: [{ name: 'pay', match: { path: { prefix: '/' } }, destination: { service: 'pay' } }]
  }))
  const g = await startGatewayProcess(t, ['--config', file], { NODE_CLUSTER_SCHED_POLICY: 'rr' })
  const pids = await workerPids(g)
  const get = async (): Promise<string> => {
    const r = await request(`${g.url}/`, { headers: { connection: 'close' } })
    await r.body.dump()
    return r.statusCode === 200 ? String(r.headers['x-served-by']) : `${r.statusCode}`
  }
  await eventually(async () => (await get()) === 'a' ? true : undefined, 'pay-1 routed', 10_000)
  // A second instance reaches both workers through the primary's watch.
  await api('/v1/agent/service/register', { ID: 'pay-2', Name: 'pay', Address: '127.0.0.1', Port: b.port })
  await eventually(async () => {
    const seen = new Set<string>()
    for (let i = 0; i < 12; i++) seen.add(await get())
    return seen.has('b') && seen.has('a') ? true : undefined
  }, 'pay-2 routed by the workers', 10_000)
  const agentPort = Number(consul.httpAddr.split(':')[1])
  for (const pid of pids) {
    const held = socketsTo(pid, agentPort)
    if (held === undefined) { t.diagnostic('no /proc: connection counts not checked'); return }
    assert.equal(held.ESTABLISHED ?? 0, 0, `worker ${pid} holds no connection to the agent`)
  }
  assert.ok((socketsTo(g.pid, agentPort)?.ESTABLISHED ?? 0) >= 1, 'the primary holds the watch')
})

test('a node gateway with workers registers itself and its local services\' proxies in Consul on the workers\' inbound port', async (t) => {
  const consul: ConsulAgent = await startConsul()
  t.after(async () => { await consul.stop() })
  const { file } = await nodeWithWorkers(t, 'node-r', ['node-r', 'orders'], { discovery: { consul: { address: consul.httpAddr } } })
  const g = await startGatewayProcess(t, ['--config', file])
  const inbound = listenerPort(g, 'inbound')
  const services = await eventually(async () => {
    const all = await (await request(`${consul.url}/v1/agent/services`)).body.json() as Record<string, { Service: string, Port: number, Kind?: string, Proxy?: { DestinationServiceName?: string } }>
    const list = Object.values(all)
    return list.some((s) => s.Kind === 'connect-proxy') ? list : undefined
  }, 'the connect-proxy registration', 10_000)
  const proxy = services.find((s) => s.Kind === 'connect-proxy')!
  assert.equal(proxy.Service, 'orders-fastmesh-proxy')
  assert.equal(proxy.Proxy?.DestinationServiceName, 'orders')
  assert.equal(proxy.Port, inbound, 'the proxy points at the inbound port the workers share')
  const self = services.find((s) => s.Service === 'node-r')
  assert.equal(self?.Port, inbound, 'the gateway registers on its inbound port, as with one process')
})
