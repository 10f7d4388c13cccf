// The mesh across several hosts: three hosts and a services host, each a Linux network
// namespace on one bridge (test/helpers/netns.ts), every component a real process inside
// its namespace — one Consul server, an edge gateway, a node gateway per host
// (`fastmesh start --config`), sample apps. Calls cross hosts over mTLS with Consul Connect
// identities and are authorized by intentions on the receiving node.
//
//   svc 10.213.77.10   consul (server, -dev), edge (http :8080 -> service web)
//   a   10.213.77.11   node-a, web-a    (web calls its node gateway at 127.0.0.1:15001)
//   b   10.213.77.12   node-b, orders-b, payments-b
//   c   10.213.77.13   node-c, orders-c
//
// Every node gateway: outbound 127.0.0.1:15001, inbound 0.0.0.0:15443 advertised as the
// host's address, admin 127.0.0.1:15000. The test process reaches the namespaces through
// portals (a relay per namespace, loopback listeners here): see netns.ts for why.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { Agent, request } from 'undici'
import { NetnsLab, netnsUnsupported, type NsProcess, type Portal } from '../helpers/netns.js'
import { PROJECT_ROOT, consulApi, startConsul, type ConsulAgent } from '../helpers/consul.js'
import { eventually } from '../helpers/poll.js'

const CLI = path.join(PROJECT_ROOT, 'dist', 'src', 'cli', 'index.js')
const SAMPLE_APP = path.join(path.dirname(fileURLToPath(import.meta.url)), 'sample-app.js')
const HOSTS = { svc: 10, a: 11, b: 12, c: 13 }
const ADMIN = '127.0.0.1:15000'
const CONSUL_HTTP = '127.0.0.1:8500'
const EDGE_HTTP = '127.0.0.1:8080'
/** Consul's default ports: the namespace is ours, nothing else binds them there. */
const CONSUL_PORTS = { http: 8500, dns: 8600, serfLan: 8301, serfWan: 8302, server: 8300 }
/**
 * Bounds for start-up waits. About 15 s pass on an idle 2-core machine; these are generous
 * because a loaded CI machine starts a dozen Node processes much more slowly.
 */
const READY_TIMEOUT_MS = 60_000

interface Reply { status: number, json: Record<string, unknown> }
interface Upstream { service?: string, instance?: string, path?: string, error?: { code?: string, message?: string } }
interface WebReply { service?: string, instance?: string, upstream?: Upstream }
interface AuthzRow { source: string, destination: string, result: string, count: number }

test('the mesh across hosts in network namespaces', { timeout: 240_000 }, async (t) => {
  const unsupported = netnsUnsupported()
  if (unsupported?.skip === true) {
    t.skip(`cannot run here: ${unsupported.reason}`)
    return
  }
  if (unsupported !== undefined) throw new Error(`the e2e mesh test cannot run: ${unsupported.reason}`)

  const started = Date.now()
  const phase = (what: string): void => { t.diagnostic(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`) }
  const http = new Agent({ keepAliveTimeout: 1_000 })
  let consul: ConsulAgent | undefined

  const lab = await NetnsLab.create({ hosts: HOSTS })
  t.after(async () => {
    await http.close()
    // Gateways first (they deregister from Consul while it still runs), then Consul, then the namespaces.
    await Promise.all(lab.processes.filter((p) => !p.name.startsWith('relay@')).map(async (p) => { await p.stop() }))
    await consul?.stop()
    await lab.destroy()
  })
  phase(`namespaces ${lab.hosts.map((h) => `${lab.ns(h)}=${lab.ip(h)}`).join(', ')}`)

  /** Everything the processes printed, written out when a step fails. */
  const report = (): void => {
    process.stderr.write(`\n===== e2e process output (namespaces ${lab.id}-*) =====\n${lab.report()}\n`)
    if (consul !== undefined) process.stderr.write(`--- consul ---\n${consul.output().slice(-4000)}\n`)
  }
  const step = async (name: string, fn: (t: TestContext) => Promise<void>): Promise<void> => {
    await t.test(name, async (st) => {
      try {
        await fn(st)
      } catch (err) {
        report()
        throw err
      }
    })
  }

  const portals: Record<string, Portal> = {}
  const gateways: Record<string, NsProcess> = {}
  const get = async (url: string): Promise<Reply> => {
    const r = await request(url, { dispatcher: http, headersTimeout: 15_000, bodyTimeout: 15_000 })
    const text = await r.body.text()
    let json: Record<string, unknown>
    try {
      json = text === '' ? {} : JSON.parse(text) as Record<string, unknown>
    } catch {
      json = { unparsed: text }
    }
    return { status: r.statusCode, json }
  }
  const viaEdge = async (pathname: string): Promise<Reply & { web: WebReply }> => {
    const r = await get(`${portals.svc!.url(EDGE_HTTP)}${pathname}`)
    return { ...r, web: r.json as WebReply }
  }
  const admin = async (host: string, pathname: string): Promise<Record<string, unknown>> => {
    const r = await get(`${portals[host]!.url(ADMIN)}${pathname}`)
    assert.equal(r.status, 200, `admin ${pathname} of ${host}: ${JSON.stringify(r.json)}`)
    return r.json
  }

  // --- bring the mesh up ------------------------------------------------------------------
  try {
    const app = (host: string, name: string, instance: string, port: number, outbound?: string): NsProcess =>
      lab.spawn(host, instance, process.execPath, [SAMPLE_APP, '--name', name, '--instance', instance, '--port', String(port), ...(outbound !== undefined ? ['--outbound', outbound] : [])])
    const apps = [
      app('a', 'web', 'web-a', 8081, 'http://127.0.0.1:15001'),
      app('b', 'orders', 'orders-b', 8081),
      app('b', 'payments', 'payments-b', 8082),
      app('c', 'orders', 'orders-c', 8081)
    ]
    const [svcPortal, aPortal, bPortal, cPortal] = await Promise.all([
      lab.portal('svc', [CONSUL_HTTP, EDGE_HTTP, ADMIN]),
      lab.portal('a', [ADMIN]),
      lab.portal('b', [ADMIN]),
      lab.portal('c', [ADMIN])
    ])
    Object.assign(portals, { svc: svcPortal, a: aPortal, b: bPortal, c: cPortal })

    consul = await startConsul({
      exec: lab.exec('svc'),
      bind: lab.ip('svc'),
      client: `127.0.0.1 ${lab.ip('svc')}`,
      ports: CONSUL_PORTS,
      node: 'svc',
      url: svcPortal!.url(CONSUL_HTTP),
      args: ['-log-level', 'info'],
      readyTimeoutMs: READY_TIMEOUT_MS
    })
    await Promise.all(apps.map(async (p) => { await p.waitForOutput(/listening on/, READY_TIMEOUT_MS) }))
    phase('consul ready, sample apps listening')

    const consulAddress = `${lab.ip('svc')}:8500`
    const common = {
      limits: { drainTimeout: '5s' },
      discovery: { consul: { address: consulAddress, wait: '5s' } },
      mesh: { mtls: 'strict', identity: { provider: 'consul' } }
    }
    const nodeConfig = (host: string, localServices: Array<{ name: string, port: number }>): Record<string, unknown> => ({
      gateway: { name: `node-${host}`, mode: 'node' },
      listeners: {
        outbound: { address: '127.0.0.1', port: 15001 },
        inbound: { address: '0.0.0.0', port: 15443, advertiseAddress: lab.ip(host) },
        admin: { address: '127.0.0.1', port: 15000 }
      },
      ...common,
      localServices
    })
    const configs: Record<string, Record<string, unknown>> = {
      a: nodeConfig('a', [{ name: 'web', port: 8081 }]),
      b: nodeConfig('b', [{ name: 'orders', port: 8081 }, { name: 'payments', port: 8082 }]),
      c: nodeConfig('c', [{ name: 'orders', port: 8081 }]),
      svc: {
        gateway: { name: 'edge', mode: 'edge' },
        listeners: { http: { address: '0.0.0.0', port: 8080 }, admin: { address: '127.0.0.1', port: 15000 } },
        ...common,
        routes: [{ name: 'web', match: { path: { prefix: '/' } }, destination: { service: 'web' } }]
      }
    }
    for (const [host, config] of Object.entries(configs)) {
      const file = path.join(lab.dir, `${host}.yaml`)
      writeFileSync(file, stringify(config))
      const name = host === 'svc' ? 'edge' : `node-${host}`
      gateways[host] = lab.spawn(host, name, process.execPath, [CLI, 'start', '--config', file])
    }
    await Promise.all(Object.entries(gateways).map(async ([host, g]) => {
      await eventually(async () => {
        if (g.exited !== undefined) throw new Error(`${g.name} exited: ${JSON.stringify(g.exited)}`)
        return (await get(`${portals[host]!.url(ADMIN)}/ready`)).status === 200
      }, `${g.name} to be ready (admin /ready)`, READY_TIMEOUT_MS, 100)
    }))
    phase('gateways ready')

    // Consul probes each inbound listener (TCP check, first run within its 5 s interval).
    for (const [service, count] of [['web', 1], ['orders', 2], ['payments', 1]] as const) {
      await eventually(async () => {
        const rows = await consulApi<unknown[]>(consul!, 'GET', `/v1/health/connect/${service}?passing=true`)
        return rows.length === count
      }, `${count} passing connect proxy(ies) of ${service} in Consul`, READY_TIMEOUT_MS, 100)
    }
    phase('all connect proxies passing in Consul')
    await eventually(async () => (await viaEdge('/call/orders/x')).status === 200, 'web -> orders to answer through the edge', READY_TIMEOUT_MS, 100)
    phase('mesh answering')
  } catch (err) {
    report()
    throw err
  }

  await step('1. an edge request reaches web on host A, which calls orders through its node gateway on localhost; calls cross to hosts B and C round robin', async () => {
    const instances: string[] = []
    for (let i = 0; i < 20 && !(instances.includes('orders-b') && instances.includes('orders-c')); i++) {
      const r = await viaEdge(`/call/orders/item/${i}`)
      assert.equal(r.status, 200, JSON.stringify(r.json))
      assert.equal(r.web.service, 'web')
      assert.equal(r.web.instance, 'web-a')
      assert.equal(r.web.upstream?.service, 'orders')
      assert.equal(r.web.upstream?.path, `/item/${i}`)
      instances.push(r.web.upstream?.instance ?? '(none)')
    }
    assert.ok(instances.includes('orders-b') && instances.includes('orders-c'), `both orders instances answer; got ${instances.join(', ')}`)
    assert.deepEqual([...new Set(instances)].sort(), ['orders-b', 'orders-c'])
    // Node A sends orders calls to the other hosts' inbound (mTLS) listeners.
    const services = await admin('a', '/services') as { services: Array<{ name: string, endpoints: Array<{ address: string, port: number }> }> }
    const orders = services.services.find((s) => s.name === 'orders')
    assert.deepEqual(orders?.endpoints.map((e) => `${e.address}:${e.port}`).sort(), [`${lab.ip('b')}:15443`, `${lab.ip('c')}:15443`])
  })

  await step('2. node B sees the caller identity node-a (the node gateway of the shared outbound port) calling orders', async () => {
    const authz = await admin('b', '/authz') as { decisions: AuthzRow[] }
    const row = authz.decisions.find((d) => d.source === 'node-a' && d.destination === 'orders')
    assert.ok(row !== undefined, `a decision node-a -> orders on node-b; got ${JSON.stringify(authz.decisions)}`)
    assert.equal(row.result, 'allow')
    assert.ok(row.count >= 1)
  })

  await step('3. an intention denying node-a -> payments blocks /call/payments with 403 FASTMESH_ERR_FORBIDDEN from node B; orders still works', async () => {
    // The first call node-a gets for payments starts its discovery watch; it must wait for
    // Consul's answer rather than fail with 503 NO_HEALTHY_ENDPOINT (a bug this test found).
    const before = await viaEdge('/call/payments/x')
    assert.equal(before.status, 200, `payments answers before the intention: ${JSON.stringify(before.json)}`)
    await consulApi(consul!, 'POST', '/v1/connect/intentions', { SourceName: 'node-a', DestinationName: 'payments', Action: 'deny' })
    // Node B caches an authorization answer for up to mesh.authorization.cacheTtl (1 s).
    const denied = await eventually(async () => {
      const r = await viaEdge('/call/payments/x')
      return r.status === 403 ? r : undefined
    }, 'the deny intention to apply', 10_000, 100)
    assert.equal(denied.web.instance, 'web-a')
    assert.equal(denied.web.upstream?.error?.code, 'FASTMESH_ERR_FORBIDDEN')
    assert.match(denied.web.upstream?.error?.message ?? '', /node-a may not call payments/)
    const authz = await admin('b', '/authz') as { decisions: AuthzRow[] }
    assert.ok(authz.decisions.some((d) => d.source === 'node-a' && d.destination === 'payments' && d.result === 'deny'), JSON.stringify(authz.decisions))
    for (let i = 0; i < 4; i++) {
      const r = await viaEdge('/call/orders/x')
      assert.equal(r.status, 200, JSON.stringify(r.json))
      assert.equal(r.web.upstream?.service, 'orders')
    }
  })

  await step('4. stopping host C\'s gateway (SIGTERM: it deregisters) fails orders traffic over to host B', async () => {
    const nodeC = gateways.c!
    const stoppedAt = Date.now()
    // Traffic keeps flowing while node-c drains, deregisters and exits.
    nodeC.signal('SIGTERM')
    const needed = 5
    let streak = 0
    const seen: string[] = []
    await eventually(async () => {
      const r = await viaEdge('/call/orders/x')
      const who = r.status === 200 ? r.web.upstream?.instance ?? '?' : `HTTP ${r.status} ${r.web.upstream?.error?.code ?? ''}`.trim()
      seen.push(who)
      streak = who === 'orders-b' ? streak + 1 : 0
      return streak >= needed
    }, `${needed} orders calls in a row answered by orders-b`, 15_000, 20)
    t.diagnostic(`failover: ${Date.now() - stoppedAt} ms after SIGTERM to node-c (pid ${nodeC.pid}); answers meanwhile: ${seen.join(', ')}`)
    assert.ok(await nodeC.waitForExit(10_000), 'node-c exits within 10 s of SIGTERM')
    assert.deepEqual(nodeC.exited, { code: 0, signal: null }, 'node-c shuts down gracefully on SIGTERM')
    assert.match(nodeC.output(), /"msg":"deregistered from Consul"/)
    for (let i = 0; i < 20; i++) {
      const r = await viaEdge(`/call/orders/after/${i}`)
      assert.equal(r.status, 200, JSON.stringify(r.json))
      assert.equal(r.web.upstream?.instance, 'orders-b')
    }
  })
  phase('scenarios done')
})
