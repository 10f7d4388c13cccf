// A large routing table: a gateway with 1,000 routes starts and sends each request to its
// own route (regression: find-my-way caps constrained handlers at 31 per node, and a
// routing table of 32 routes used to stop the gateway from starting).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway } from '../helpers/gateway.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'

test('regression: a gateway with 1,000 routes starts and routes each request to its own route', async (t) => {
  const echo = await startEcho(t, 'svc')
  const routes = Array.from({ length: 1000 }, (_, i) => ({
    name: `r${i}`,
    match: { path: { prefix: `/svc-${i}` } },
    destination: { service: 'svc', rewritePath: `/route-${i}` }
  }))
  const gw = await startGateway(t, meshConfig({ svc: [echo.port] }, routes))
  for (const i of [0, 31, 32, 500, 999]) {
    const r = await gw.request(`/svc-${i}/x?q=${i}`)
    assert.equal(r.status, 200, r.text)
    assert.equal(r.json<{ url: string }>().url, `/route-${i}?q=${i}`)
  }
  assert.equal((await gw.request('/svc-1000')).status, 404)
})
