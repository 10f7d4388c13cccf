// Endpoint-scoped state leaves with its endpoint (issue 17): the per-endpoint try series and
// their state-registry entries go when discovery stops listing the endpoint (a runtime
// registration removed through the admin API) or when no route uses its service any more
// (a reload), and the endpoints that stay keep their counts.
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { meshConfig, startEcho, startHeldUpstream } from '../helpers/upstreams.js'
import { endpointStateKey } from '../../src/state/registry.js'

async function scrape (g: TestGateway): Promise<string> {
  const res = await g.admin('GET', '/metrics')
  assert.equal(res.status, 200, res.text)
  return res.text
}

/** fastmesh_upstream_tries_total samples of `endpoint` (`address:port`), by their label text. */
function triesOf (text: string, endpoint: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (!line.startsWith('fastmesh_upstream_tries_total{') || !line.includes(`endpoint="${endpoint}"`)) continue
    out.set(line.slice(0, line.lastIndexOf(' ')), Number(line.slice(line.lastIndexOf(' ') + 1)))
  }
  return out
}

const routes = [
  { name: 'ra', match: { path: { prefix: '/a' } }, destination: { service: 'a' } },
  { name: 'rb', match: { path: { prefix: '/b' } }, destination: { service: 'b' } }
]

test('an endpoint removed from discovery takes its try series and endpoint state with it; the one that stays keeps its counts', async (t) => {
  const kept = await startEcho(t, 'kept')
  const leaving = await startEcho(t, 'leaving')
  const g = await startGateway(t, meshConfig({ a: [kept], b: [] }, routes))
  const reg = await g.admin('POST', '/services/a/endpoints', { id: 'a-runtime', address: '127.0.0.1', port: leaving.port })
  assert.equal(reg.status, 201, reg.text)
  const keptLabel = `127.0.0.1:${kept.port}`
  const leavingLabel = `127.0.0.1:${leaving.port}`
  // Round robin over the two: both see tries.
  for (let i = 0; i < 4; i++) assert.equal((await g.request('/a/x')).status, 200)
  assert.ok(kept.seen.length > 0 && leaving.seen.length > 0, 'both endpoints took traffic')
  const before = await scrape(g)
  const keptBefore = triesOf(before, keptLabel)
  assert.equal([...keptBefore.values()].reduce((a, b) => a + b, 0), kept.seen.length)
  assert.equal([...triesOf(before, leavingLabel).values()].reduce((a, b) => a + b, 0), leaving.seen.length)
  const names = g.gateway.state.names('endpoint')
  assert.ok(names.has(endpointStateKey('a', keptLabel)) && names.has(endpointStateKey('a', leavingLabel)), `endpoint state of both: ${[...names].join(', ')}`)

  assert.equal((await g.admin('DELETE', '/services/a/endpoints/a-runtime')).status, 204)

  await eventually(() => !g.gateway.state.names('endpoint').has(endpointStateKey('a', leavingLabel)) || undefined, 'the removed endpoint\'s state to go')
  const after = await scrape(g)
  assert.equal(triesOf(after, leavingLabel).size, 0, 'no series of the removed endpoint')
  assert.deepEqual(triesOf(after, keptLabel), keptBefore, 'the remaining endpoint keeps its series and counts')
  assert.ok(g.gateway.state.names('endpoint').has(endpointStateKey('a', keptLabel)))
  assert.equal((await g.request('/a/x')).status, 200, 'traffic goes on to the endpoint that stayed')
})

test('a try still under way when its endpoint leaves is counted, and the endpoint\'s state goes after it', async (t) => {
  const held = await startHeldUpstream(t)
  const g = await startGateway(t, meshConfig({ a: [], b: [] }, routes))
  assert.equal((await g.admin('POST', '/services/a/endpoints', { id: 'a-held', address: '127.0.0.1', port: held.port })).status, 201)
  const label = `127.0.0.1:${held.port}`
  const answer = g.request('/a/x')
  await held.waitForArrivals(1)
  assert.equal((await g.admin('DELETE', '/services/a/endpoints/a-held')).status, 204)
  held.release()
  assert.equal((await answer).status, 200, 'the try under way finishes')
  // Counted at its end, then released with the endpoint: nothing of it stays.
  await eventually(() => !g.gateway.state.names('endpoint').has(endpointStateKey('a', label)) || undefined, 'the departed endpoint\'s state to go')
  assert.equal(triesOf(await scrape(g), label).size, 0)
})

test('a reload that drops the only route to a service releases the endpoint state of its endpoints', async (t) => {
  const a = await startEcho(t, 'a')
  const b = await startEcho(t, 'b')
  const g = await startGateway(t, meshConfig({ a: [a], b: [b] }, routes))
  assert.equal((await g.request('/a/x')).status, 200)
  assert.equal((await g.request('/b/x')).status, 200)
  const bKey = endpointStateKey('b', `127.0.0.1:${b.port}`)
  assert.ok(g.gateway.state.names('endpoint').has(bKey))

  await g.writeConfig(meshConfig({ a: [a], b: [b] }, [routes[0]]))
  assert.equal((await g.admin('POST', '/reload')).status, 200)

  // The old version drains first; then its endpoint sets close.
  await eventually(() => !g.gateway.state.names('endpoint').has(bKey) || undefined, 'the endpoint state of b to go', 15_000)
  assert.equal(triesOf(await scrape(g), `127.0.0.1:${b.port}`).size, 0)
  assert.ok(g.gateway.state.names('endpoint').has(endpointStateKey('a', `127.0.0.1:${a.port}`)), 'a, still routed, keeps its state')
})
