// The admin service-graph page (`GET /ui`) in a real headless chromium: after known traffic
// it shows the services as nodes and the calls between them with non-zero rates, for one
// edge gateway (embedded registry) and for a mesh of gateways found in Consul, the latter
// behind the admin token. Screenshots are kept under test-artifacts/.
import test from 'node:test'
import assert from 'node:assert/strict'
import { mkdir } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import type { Page } from 'playwright-core'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { meshConfig, startEcho, startSample, startUpstream } from '../helpers/upstreams.js'
import { startBrowser } from '../helpers/browser.js'
import { startConsul, consulApi } from '../helpers/consul.js'
import { freePorts } from '../helpers/ports.js'
import { defer } from '../helpers/gateway.js'
import type { LocalGraph, MeshGraph } from '../../src/admin/service-graph.js'

const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/', import.meta.url))

async function screenshot (page: Page, name: string): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: `${ARTIFACTS}${name}.png`, fullPage: true })
}

/** The drawn edge `source → destination`: its rate as the page holds it, and its label. */
async function drawnEdge (page: Page, source: string, destination: string): Promise<{ rps: number, label: string }> {
  const g = page.locator(`svg#graph g.edge[data-source="${source}"][data-destination="${destination}"]`)
  await g.waitFor({ timeout: 15_000 })
  return { rps: Number(await g.getAttribute('data-rps')), label: await g.locator('text').getAttribute('aria-label') ?? '' }
}

async function drawnNodes (page: Page): Promise<string[]> {
  return (await page.locator('svg#graph g.node').evaluateAll((nodes) => nodes.map((n) => n.getAttribute('data-id') ?? ''))).sort()
}

test('one edge gateway: after traffic to two services the page draws them and the calls to them with their rates', async (t) => {
  const a = await startEcho(t, 'a')
  const failing = await startUpstream(t, (_req, res) => { res.writeHead(503).end('down') })
  const g: TestGateway = await startGateway(t, meshConfig({ a: [a], b: [failing] }, [
    { name: 'ra', match: { path: { prefix: '/a' } }, destination: { service: 'a' } },
    { name: 'rb', match: { path: { prefix: '/b' } }, destination: { service: 'b' } }
  ]))
  for (let i = 0; i < 6; i++) assert.equal((await g.request('/a/x')).status, 200)
  for (let i = 0; i < 2; i++) assert.equal((await g.request('/b/y')).status, 503)
  assert.equal((await g.request('/nowhere')).status, 404)

  const graph = (await g.admin('GET', '/ui/graph')).json<MeshGraph>()
  assert.deepEqual(graph.nodes.map((n) => `${n.id}:${n.kind}`), ['a:service', 'b:service', 'clients:clients'])
  const toA = graph.edges.find((e) => e.source === 'clients' && e.destination === 'a')!
  assert.equal(toA.requests, 6)
  assert.ok(toA.rps > 0)
  assert.equal(toA.errorPercent, 0)
  assert.ok(toA.p99Ms !== null && toA.p99Ms > 0 && toA.p99Ms <= 10_000)
  assert.equal(graph.edges.find((e) => e.destination === 'b')?.errorPercent, 100)
  assert.deepEqual(graph.errors.map((e) => [e.code, e.recent]), [['FASTMESH_ERR_NO_ROUTE', 1]])
  assert.deepEqual(graph.gateways.map((x) => [x.role, x.status, x.self]), [['edge', 'ok', true]])

  const browser = await startBrowser(t)
  const page = await browser.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => { errors.push(err.message) })
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()) })
  await page.goto(`${g.adminUrl}/ui`)
  const toADrawn = await drawnEdge(page, 'clients', 'a')
  assert.ok(toADrawn.rps > 0, `clients → a has a non-zero rate (${toADrawn.rps})`)
  assert.match(toADrawn.label, /^\d+(\.\d+)? req\/s · 0\.0% err · p99 [\d.]+ (ms|s)$/)
  const toBDrawn = await drawnEdge(page, 'clients', 'b')
  assert.ok(toBDrawn.rps > 0)
  assert.match(toBDrawn.label, / 100% err /)
  assert.deepEqual(await drawnNodes(page), ['a', 'b', 'clients'])
  // The tables: endpoint health per service, routes, recent errors by code.
  assert.match(await page.locator('#endpoints').innerText(), /a-1\s+127\.0\.0\.1:\d+\s+healthy/)
  assert.match(await page.locator('#routes').innerText(), /ra\s.*\/a.*\sa\s/)
  assert.match(await page.locator('#errors').innerText(), /FASTMESH_ERR_NO_ROUTE\s+1\s+1/)
  await screenshot(page, 'service-graph-edge')
  assert.deepEqual(errors, [], 'no script error and no CSP violation on the page')
})

test('the page shell carries no data and the Host check still applies to it', async (t) => {
  const a = await startEcho(t, 'a')
  const g = await startGateway(t, meshConfig({ secretservice: [a] }, [{ name: 'r', match: { path: { prefix: '/' } }, destination: { service: 'secretservice' } }], {
    listeners: { http: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0, token: 'shell-token-0123456789' } }
  }))
  const shell = await request(`${g.adminUrl}/ui`)
  const html = await shell.body.text()
  assert.equal(shell.statusCode, 200)
  assert.match(String(shell.headers['content-type']), /^text\/html/)
  assert.match(String(shell.headers['content-security-policy']), /default-src 'none'; script-src 'sha256-/)
  assert.doesNotMatch(html, /secretservice/)
  const rebound = await request(`${g.adminUrl}/ui`, { headers: { host: 'evil.example' } })
  await rebound.body.dump()
  assert.equal(rebound.statusCode, 421)
  const data = await request(`${g.adminUrl}/ui/graph`)
  await data.body.dump()
  assert.equal(data.statusCode, 401)
})

test('a mesh found in Consul: the page, behind the admin token, shows calls between services across gateways, each counted once', async (t) => {
  const consulAgent = await startConsul()
  defer(t, async () => { await consulAgent.stop() })
  const web = await startSample(t, 'web', 'web-1')
  const orders = await startSample(t, 'orders', 'orders-1')
  const token = 'mesh-admin-token-0123456789'
  const consul = { address: consulAgent.httpAddr, wait: '5s' }
  const mesh = { mtls: 'strict', identity: { provider: 'consul' } }
  const any = { address: '127.0.0.1', port: 0 }
  const admin = { ...any, token }
  const [upstreamPort] = await freePorts(1)
  const nodeA = await startGateway(t, {
    gateway: { name: 'node-a', mode: 'node' },
    listeners: { outbound: any, inbound: any, admin },
    discovery: { consul },
    mesh,
    localServices: [{ name: 'web', port: web.port, upstreams: [{ service: 'orders', port: upstreamPort }] }]
  })
  const nodeB = await startGateway(t, {
    gateway: { name: 'node-b', mode: 'node' },
    listeners: { outbound: any, inbound: any, admin },
    discovery: { consul },
    mesh,
    localServices: [{ name: 'orders', port: orders.port }]
  })
  const edge = await startGateway(t, {
    gateway: { name: 'edge', mode: 'edge' },
    listeners: { http: any, admin },
    discovery: { consul },
    mesh,
    routes: [{ name: 'web', match: { path: { prefix: '/' } }, destination: { service: 'web' } }]
  })
  // A gateway registered in Consul whose admin API is gone: listed, not an error of the page.
  const [closedPort] = await freePorts(1)
  await consulApi(consulAgent, 'PUT', '/v1/agent/service/register', { Name: 'ghost', ID: 'ghost-1', Address: '127.0.0.1', Port: 1, Tags: ['fastmesh', 'node'], Meta: { role: 'node', admin: `127.0.0.1:${closedPort}` } })

  // Traffic: clients → web through the edge, and web → orders through node-a's per-upstream listener.
  await eventually(async () => (await edge.request('/hello')).status === 200, 'web through the edge', 20_000)
  await eventually(async () => (await request(`http://127.0.0.1:${upstreamPort}/orders/1`).then(async (r) => { await r.body.dump(); return r.statusCode })) === 200, 'orders through node-a', 20_000)
  for (let i = 0; i < 5; i++) assert.equal((await edge.request('/hello')).status, 200)
  for (let i = 0; i < 4; i++) {
    const r = await request(`http://127.0.0.1:${upstreamPort}/orders/${i}`)
    await r.body.dump()
    assert.equal(r.statusCode, 200)
  }

  const unauthorized = await edge.admin('GET', '/ui/graph')
  assert.equal(unauthorized.status, 401)
  const graphOf = async (g: TestGateway): Promise<MeshGraph> => {
    const r = await request(`${g.adminUrl}/ui/graph`, { headers: { authorization: `Bearer ${token}` } })
    assert.equal(r.statusCode, 200)
    return await r.body.json() as MeshGraph
  }
  // The registrations are in the catalog once every gateway started; the view is the same from any gateway.
  const graph = await eventually(async () => {
    const g = await graphOf(edge)
    return g.gateways.filter((x) => x.status === 'ok').length === 3 ? g : undefined
  }, 'every live gateway in the mesh view', 15_000)
  assert.deepEqual(graph.gateways.map((x) => `${x.name}:${x.status}`).sort(), ['edge:ok', 'ghost:unreachable', 'node-a:ok', 'node-b:ok'])
  const edgeOf = <G extends { edges: ReadonlyArray<{ source: string, destination: string }> }>(gr: G, s: string, d: string): G['edges'][number] | undefined => gr.edges.find((e) => e.source === s && e.destination === d)
  const localOf = async (g: TestGateway): Promise<LocalGraph> => {
    const r = await request(`${g.adminUrl}/ui/graph/local`, { headers: { authorization: `Bearer ${token}` } })
    assert.equal(r.statusCode, 200)
    return await r.body.json() as LocalGraph
  }
  // Both ends saw each call (the edge and node-a; node-a and node-b): the mesh view counts the
  // caller's side only. `total` (since start) is exact whatever the window.
  const [atEdge, atNodeA, atNodeB] = [await localOf(edge), await localOf(nodeA), await localOf(nodeB)]
  const edgeSide = atEdge.edges.find((e) => e.source === 'clients' && e.destination === 'web' && e.observed === 'caller')!
  assert.ok(atNodeA.edges.some((e) => e.source === 'edge' && e.destination === 'web' && e.observed === 'destination' && e.total > 0), 'node-a saw the edge\'s calls arrive')
  const webSide = atNodeA.edges.find((e) => e.source === 'web' && e.destination === 'orders' && e.observed === 'caller')!
  assert.ok(atNodeB.edges.some((e) => e.source === 'web' && e.destination === 'orders' && e.observed === 'destination' && e.total >= 4), 'node-b saw web\'s calls arrive')
  const toWeb = edgeOf(graph, 'clients', 'web')!
  assert.equal(toWeb.total, edgeSide.total)
  assert.ok(toWeb.total >= 6)
  assert.deepEqual(toWeb.seenBy, ['edge'])
  const toOrders = edgeOf(graph, 'web', 'orders')!
  assert.equal(toOrders.total, webSide.total)
  assert.ok(toOrders.total >= 5)
  assert.deepEqual(toOrders.seenBy, ['node-a'])
  assert.equal(edgeOf(graph, 'edge', 'web'), undefined, 'the inbound side of clients → web is not a second edge')
  assert.equal(graph.edges.length, 2, JSON.stringify(graph.edges))
  assert.ok(graph.certificates.some((c) => c.gateway === 'node-b' && c.service === 'orders' && (c.daysLeft ?? 0) > 0))
  const fromNodeA = await graphOf(nodeA)
  assert.equal(edgeOf(fromNodeA, 'web', 'orders')?.total, toOrders.total, 'the same view from another gateway')

  const browser = await startBrowser(t)
  const page = await browser.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => { errors.push(err.message) })
  await page.goto(`${edge.adminUrl}/ui`)
  // No token yet: the page asks for it.
  await page.locator('#token-form').waitFor({ state: 'visible', timeout: 15_000 })
  await page.fill('#token', 'wrong')
  await page.click('#token-form button[type=submit]')
  await eventually(async () => (await page.locator('#problem').textContent()) === 'That token was refused.', 'the wrong token to be refused')
  await page.fill('#token', token)
  await page.click('#token-form button[type=submit]')
  const webDrawn = await drawnEdge(page, 'clients', 'web')
  assert.ok(webDrawn.rps > 0, `clients → web rate ${webDrawn.rps}`)
  const ordersDrawn = await drawnEdge(page, 'web', 'orders')
  assert.ok(ordersDrawn.rps > 0, `web → orders rate ${ordersDrawn.rps}`)
  assert.match(ordersDrawn.label, /^[\d.]+ req\/s · [\d.]+% err · p99 [\d.]+ (ms|s)$/, 'the warm-up calls made before the mesh was ready failed')
  assert.deepEqual(await drawnNodes(page), ['clients', 'orders', 'web'])
  assert.equal(await page.locator('#token-form').isHidden(), true)
  assert.match(await page.locator('#gateways').innerText(), /ghost\s+node\s+127\.0\.0\.1:\d+\s+unreachable/)
  assert.match(await page.locator('#certificates').innerText(), /node-b\s+orders\s+[\d.]+\s+valid/)
  // The token stays for the tab only, and is sent on the page's fetches, not kept in the page.
  assert.equal(await page.evaluate('sessionStorage.getItem("fastmesh-admin-token")'), token)
  await screenshot(page, 'service-graph-mesh')
  assert.deepEqual(errors, [])
})
