// A version build is pure: building the next version touches nothing the live version
// uses until the swap. Changed pool settings make new endpoint sets and pools for the new
// version; a build that fails leaves the live version's sets and pools as they were.
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, tempDir, fixturePlugin } from '../helpers/gateway.js'
import { meshConfig, startHeldUpstream, type HeldUpstream } from '../helpers/upstreams.js'

/** Connections the upstream has accepted so far. */
function countConnections (up: HeldUpstream): { readonly count: number } {
  const c = { count: 0 }
  up.server.on('connection', () => { c.count++ })
  return c
}

function config (up: HeldUpstream, connections: number, extra: Record<string, unknown> = {}, plugins: unknown[] = []): Record<string, unknown> {
  return meshConfig({ svc: [up] }, [{ name: 'main', destination: { service: 'svc' }, plugins }], {
    services: { svc: { connectionPool: { connections } } },
    ...extra
  })
}

test('regression: a reload whose build fails late leaves the live version\'s pool settings and connection cap untouched', async (t) => {
  // Before: ServiceTable.get re-pooled the live endpoint set with the new settings while the
  // next version was being built, so a build that then failed had already changed it.
  const up = await startHeldUpstream(t)
  const conns = countConnections(up)
  const dir = await tempDir(t)
  const g = await startGateway(t, config(up, 1), { dir })
  const live = g.gateway.services.all().find((s) => s.service === 'svc')
  assert.ok(live !== undefined)
  assert.equal(live.settings.connections, 1)

  // connections 4, and a plugin that fails when registered: the build gets past the service
  // lookup of route `main`, then fails.
  await g.writeConfig(config(up, 4, { customPlugins: { broken: { module: fixturePlugin(dir, 'fail-register.js') } } }, [{ name: 'broken' }]))
  const result = await g.gateway.reload('test')
  assert.equal(result.ok, false)
  assert.match(result.error ?? '', /fixture plugin refuses to register/)

  const sets = g.gateway.services.all().filter((s) => s.service === 'svc')
  assert.deepEqual(sets, [live], 'the live endpoint set is the only one left (the failed build\'s set was released)')
  assert.equal(live.settings.connections, 1)

  // Three requests at once: with the old cap of one connection only one reaches the upstream,
  // and all three are served over that one connection once it answers.
  const responses = Promise.all([g.request('/a'), g.request('/b'), g.request('/c')])
  await up.waitForArrivals(1)
  up.release()
  for (const res of await responses) assert.equal(res.status, 200)
  assert.equal(up.arrived, 3)
  assert.equal(conns.count, 1, 'still capped at connections: 1')
})

test('a successful reload that changes connectionPool applies the new cap to the new version, leaving the old version\'s set as it was', async (t) => {
  const up = await startHeldUpstream(t)
  const conns = countConnections(up)
  const g = await startGateway(t, config(up, 1))
  const old = g.gateway.services.all().find((s) => s.service === 'svc')
  assert.ok(old !== undefined)

  await g.writeConfig(config(up, 3))
  const result = await g.gateway.reload('test')
  assert.equal(result.ok, true)
  // The old version drained nothing, so only the new version's set stays (eventually: the
  // retirement runs after the swap).
  const current = g.gateway.services.all().filter((s) => s.service === 'svc').at(-1)
  assert.ok(current !== undefined)
  assert.equal(current.settings.connections, 3)
  assert.equal(old.settings.connections, 1, 'the old version\'s set kept its settings while it drained')

  // Three requests at once all reach the upstream together: three connections.
  const responses = Promise.all([g.request('/a'), g.request('/b'), g.request('/c')])
  await up.waitForArrivals(3)
  up.release()
  for (const res of await responses) assert.equal(res.status, 200)
  assert.equal(conns.count, 3)
})

test('a reload that keeps a service\'s pool settings keeps its endpoint set', async (t) => {
  const up = await startHeldUpstream(t)
  up.release()
  const g = await startGateway(t, config(up, 2))
  const before = g.gateway.services.all().find((s) => s.service === 'svc')
  await g.writeConfig(config(up, 2, { gateway: { name: 'renamed' } }))
  assert.equal((await g.gateway.reload('test')).ok, true)
  assert.deepEqual(g.gateway.services.all().filter((s) => s.service === 'svc'), [before])
  assert.equal((await g.request('/')).status, 200)
})
