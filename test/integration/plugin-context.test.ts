// The plugin seam: what the gateway offers route plugins — the route's name, state that
// outlives reloads (`fastify.fastmesh.state`), who calls and from where (`request.fastmesh`)
// — and plugins registered with their own fastify-plugin metadata, so Fastify's dependency
// checks run.
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, createGateway, tempDir, fixturePlugin, eventually } from '../helpers/gateway.js'
import { pluginStateKind } from '../../src/gateway/fastify-host.js'

const pluginState = pluginStateKind('context-probe:seen')
import { startEcho, meshConfig } from '../helpers/upstreams.js'

async function probeGateway (t: test.TestContext): Promise<{ g: Awaited<ReturnType<typeof startGateway>>, config: (routes: unknown[]) => Record<string, unknown> }> {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const custom = { customPlugins: { probe: { module: fixturePlugin(dir, 'context-probe.js') }, 'needs-probe': { module: fixturePlugin(dir, 'needs-probe.js') } } }
  const config = (routes: unknown[]): Record<string, unknown> => meshConfig({ svc: [echo] }, routes, custom)
  const g = await startGateway(t, config([{ name: 'probed', destination: { service: 'svc' }, plugins: [{ name: 'probe' }] }]), { dir })
  return { g, config }
}

test('a plugin sees its route\'s name, and per request the route, the client address and no caller on the edge', async (t) => {
  const { g } = await probeGateway(t)
  const res = await g.request('/x')
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-probe-registered-on'], 'probed')
  assert.equal(res.headers['x-probe-route'], 'probed')
  assert.equal(res.headers['x-probe-client'], '127.0.0.1')
  assert.equal(res.headers['x-probe-caller'], 'undefined')
})

test('plugin state survives a reload that keeps the route, and starts afresh once the route is gone', async (t) => {
  const { g, config } = await probeGateway(t)
  for (let i = 1; i <= 3; i++) assert.equal((await g.request('/x')).headers['x-probe-count'], String(i))
  // A reload that changes something else: the same counter carries on.
  await g.writeConfig(config([
    { name: 'probed', destination: { service: 'svc' }, plugins: [{ name: 'probe' }] },
    { name: 'other', match: { path: { prefix: '/other' } }, destination: { service: 'svc' } }
  ]))
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  assert.equal((await g.request('/x')).headers['x-probe-count'], '4')
  // The route leaves (and its last version retires): its state is dropped with it.
  await g.writeConfig(config([{ name: 'other', destination: { service: 'svc' } }]))
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  await eventually(() => g.gateway.state.entries(pluginState).length === 0 ? true : undefined, 'the route\'s plugin state to be released', 5000)
  await g.writeConfig(config([{ name: 'probed', destination: { service: 'svc' }, plugins: [{ name: 'probe' }] }]))
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  assert.equal((await g.request('/x')).headers['x-probe-count'], '1')
})

test('a fastify-plugin dependency is checked by Fastify: met when its dependency comes first on the route', async (t) => {
  const { g, config } = await probeGateway(t)
  await g.writeConfig(config([{ name: 'both', destination: { service: 'svc' }, plugins: [{ name: 'probe' }, { name: 'needs-probe' }] }]))
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  const res = await g.request('/x')
  assert.equal(res.headers['x-needs-probe'], 'ran')
})

test('a fastify-plugin dependency that is missing on the route refuses the config', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const g = await createGateway(t, meshConfig({ svc: [echo] }, [{ name: 'alone', destination: { service: 'svc' }, plugins: [{ name: 'needs-probe' }] }],
    { customPlugins: { 'needs-probe': { module: fixturePlugin(dir, 'needs-probe.js') } } }), { dir })
  await assert.rejects(g.start(), /probe/)
})
