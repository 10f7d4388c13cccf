// Regression: destinations a node gateway reaches by Host header are created on first use,
// after the version was built. They belong to the live version like its configured ones, so
// neither a reload refused at build time nor an old version finishing its drain may release
// them (the live version answered 503 FASTMESH_ERR_NO_HEALTHY_ENDPOINT for them until the
// next successful reload).
import test from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { startEcho, startHeldUpstream, embeddedServices } from '../helpers/upstreams.js'

const nodeConfig = (ports: Record<string, number[]>, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  gateway: { name: 'node-a', mode: 'node' },
  listeners: { outbound: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } },
  discovery: { embedded: { services: embeddedServices(ports) } },
  ...extra
})

async function byHost (g: TestGateway, host: string): Promise<number> {
  const port = g.gateway.listenerAddress('outbound')!.port
  // undici's request sends the Host given (fetch would replace it with the address).
  const res = await request(`http://127.0.0.1:${port}/x`, { headers: { host } })
  await res.body.dump()
  return res.statusCode
}

test('a reload refused at build time does not release a destination named by Host', async (t) => {
  const orders = await startEcho(t, 'orders')
  const g = await startGateway(t, nodeConfig({ orders: [orders.port] }))
  assert.equal(await byHost(g, 'orders'), 200)
  // Valid config, but the build fails: the plugin module does not exist.
  await g.writeConfig(nodeConfig({ orders: [orders.port] }, { customPlugins: { missing: { module: './no-such-plugin.js' } } }))
  const refused = await g.gateway.reload('test: build fails')
  assert.equal(refused.ok, false)
  assert.match(refused.error ?? '', /FASTMESH_ERR_PLUGIN_LOAD|no-such-plugin/)
  assert.equal(await byHost(g, 'orders'), 200, 'the live version still reaches orders by Host')
})

test('an old version finishing its drain does not release a destination the new version named by Host', async (t) => {
  const orders = await startEcho(t, 'orders')
  const slow = await startHeldUpstream(t)
  const g = await startGateway(t, nodeConfig({ orders: [orders.port], slow: [slow.port] }))
  // A request held upstream keeps version 1 draining across the reload.
  const port = g.gateway.listenerAddress('outbound')!.port
  const held = request(`http://127.0.0.1:${port}/held`, { headers: { host: 'slow' } })
  await slow.waitForArrivals(1)
  await g.writeConfig(nodeConfig({ orders: [orders.port], slow: [slow.port] }, { telemetry: { logging: { accessLog: false } } }))
  assert.equal((await g.gateway.reload('test: version 2')).ok, true)
  // Version 2 names `orders` by Host for the first time while version 1 still drains.
  assert.equal(await byHost(g, 'orders'), 200)
  slow.release()
  await (await held).body.dump()
  // Version 1 now has nothing in flight; its retirement checks every 50 ms, then releases what it held.
  await new Promise((resolve) => setTimeout(resolve, 500))
  for (let i = 0; i < 5; i++) assert.equal(await byHost(g, 'orders'), 200, `request ${i} after version 1 drained`)
})
