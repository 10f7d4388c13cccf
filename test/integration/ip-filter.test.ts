// The built-in `ip-filter` plugin on a real gateway: the connection's peer address against
// allow and deny lists, X-Forwarded-For only when the gateway trusts it, 403 before the upstream.
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, assertErrorResponse } from '../helpers/gateway.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'

function filtered (options: Record<string, unknown>): Record<string, unknown> {
  return { name: 'filtered', destination: { service: 'svc' }, plugins: [{ name: 'ip-filter', options }] }
}

test('ip-filter: a client outside the allow list gets 403 FASTMESH_ERR_IP_DENIED and the upstream is not called', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [filtered({ allow: ['10.0.0.0/8'] })]))
  const res = await g.request('/x')
  const body = assertErrorResponse(res, 403, 'FASTMESH_ERR_IP_DENIED')
  assert.match(body.error.message, /127\.0\.0\.1/)
  assert.equal(echo.seen.length, 0)
})

test('ip-filter: a client inside the allow list and outside the deny list goes through', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [filtered({ allow: ['127.0.0.0/8'], deny: ['127.0.0.2'] })]))
  assert.equal((await g.request('/x')).status, 200)
})

test('ip-filter: a denied address is refused even inside an allowed range', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [filtered({ allow: ['127.0.0.0/8'], deny: ['127.0.0.1/32'] })]))
  assert.equal((await g.request('/x')).status, 403)
})

test('ip-filter: X-Forwarded-For is ignored unless the gateway trusts it; trusted, its first address (IPv6 too) is checked', async (t) => {
  const echo = await startEcho(t, 'svc')
  const untrusted = await startGateway(t, meshConfig({ svc: [echo] }, [filtered({ deny: ['2001:db8::/32'] })]))
  assert.equal((await untrusted.request('/x', { headers: { 'x-forwarded-for': '2001:db8::7' } })).status, 200, 'a forged header changes nothing')

  const trusted = await startGateway(t, meshConfig({ svc: [echo] }, [filtered({ deny: ['2001:db8::/32'] })], { gateway: { trustForwardedHeaders: true } }))
  assert.equal((await trusted.request('/x', { headers: { 'x-forwarded-for': '2001:db8::7, 10.0.0.1' } })).status, 403)
  assert.equal((await trusted.request('/x', { headers: { 'x-forwarded-for': '2001:db9::7' } })).status, 200)
})

test('ip-filter: an entry that is not an address or range refuses the config, naming it', async (t) => {
  const echo = await startEcho(t, 'svc')
  await assert.rejects(startGateway(t, meshConfig({ svc: [echo] }, [filtered({ allow: ['10.0.0.0/33'] })])), /\$\.routes\[0\]\.plugins\[0\]\.options\.allow\[0\]: "10\.0\.0\.0\/33" is not an IP address or a CIDR range/)
})
