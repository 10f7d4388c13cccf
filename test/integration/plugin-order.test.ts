// Several built-in plugins on one route run in the order of its `plugins` list, and a request
// one of them refuses goes no further: with `jwt` before `rate-limit`, unauthenticated
// requests cost no one's allowance; with `rate-limit` first, they use it up. And a refusal
// by `ip-filter` first spares both.
import test from 'node:test'
import assert from 'node:assert/strict'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { startGateway, assertErrorResponse } from '../helpers/gateway.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'

async function signer (): Promise<{ jwk: Record<string, unknown>, token: () => Promise<string> }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const jwk = { ...await exportJWK(publicKey), kid: 'k1', alg: 'ES256' }
  const token = async (): Promise<string> => await new SignJWT({ sub: 'user-1' })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuedAt().setExpirationTime('5m').sign(privateKey)
  return { jwk, token }
}

const limit = { name: 'rate-limit', options: { max: 2, timeWindow: '1m', keyBy: 'route' } }

async function gatewayWith (t: test.TestContext, plugins: unknown[]) {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'api', destination: { service: 'svc' }, plugins }]))
  return { g, echo }
}

test('jwt before rate-limit: requests without a token are refused (401) and use none of the limit', async (t) => {
  const { jwk, token } = await signer()
  const { g, echo } = await gatewayWith(t, [{ name: 'jwt', options: { keys: [jwk] } }, limit])
  for (let i = 0; i < 5; i++) assertErrorResponse(await g.request('/x'), 401, 'FASTMESH_ERR_UNAUTHENTICATED')
  const auth = { authorization: `Bearer ${await token()}` }
  assert.equal((await g.request('/x', { headers: auth })).status, 200)
  assert.equal((await g.request('/x', { headers: auth })).status, 200)
  assertErrorResponse(await g.request('/x', { headers: auth }), 429, 'FASTMESH_ERR_RATE_LIMITED')
  assert.equal(echo.seen.length, 2)
})

test('rate-limit before jwt: unauthenticated requests count against the limit, so a good token then gets 429', async (t) => {
  const { jwk, token } = await signer()
  const { g, echo } = await gatewayWith(t, [limit, { name: 'jwt', options: { keys: [jwk] } }])
  for (let i = 0; i < 2; i++) assertErrorResponse(await g.request('/x'), 401, 'FASTMESH_ERR_UNAUTHENTICATED')
  const refused = await g.request('/x', { headers: { authorization: `Bearer ${await token()}` } })
  assertErrorResponse(refused, 429, 'FASTMESH_ERR_RATE_LIMITED')
  assert.ok(Number(refused.headers['retry-after']) > 0, 'Retry-After on the 429')
  assert.equal(echo.seen.length, 0)
})

test('ip-filter first: a denied client is refused (403) before jwt or rate-limit see it', async (t) => {
  const { jwk, token } = await signer()
  const { g, echo } = await gatewayWith(t, [{ name: 'ip-filter', options: { deny: ['127.0.0.0/8', '::1'] } }, { name: 'jwt', options: { keys: [jwk] } }, limit])
  const auth = { authorization: `Bearer ${await token()}` }
  for (let i = 0; i < 4; i++) {
    const res = await g.request('/x', { headers: auth })
    assertErrorResponse(res, 403, 'FASTMESH_ERR_IP_DENIED')
    assert.equal(res.headers['www-authenticate'], undefined, 'jwt never ran')
    assert.equal(res.headers['x-ratelimit-remaining'] ?? res.headers['ratelimit-remaining'], undefined, 'rate-limit never ran')
  }
  assert.equal(echo.seen.length, 0)
})

test('two rate-limits on one route each keep their own count: 3 per user, 5 for the route', async (t) => {
  const { g, echo } = await gatewayWith(t, [
    { name: 'rate-limit', options: { max: 3, timeWindow: '1m', keyBy: 'header:x-user' } },
    { name: 'rate-limit', options: { max: 5, timeWindow: '1m', keyBy: 'route' } }
  ])
  const as = (user: string) => ({ headers: { 'x-user': user } })
  for (let i = 0; i < 3; i++) assert.equal((await g.request('/x', as('a'))).status, 200)
  assertErrorResponse(await g.request('/x', as('a')), 429, 'FASTMESH_ERR_RATE_LIMITED')
  // b has its own 3, but the route has only 2 of its 5 left (a's refused 4th never reached the route's limiter).
  assert.equal((await g.request('/x', as('b'))).status, 200)
  assert.equal((await g.request('/x', as('b'))).status, 200)
  assertErrorResponse(await g.request('/x', as('b')), 429, 'FASTMESH_ERR_RATE_LIMITED')
  assert.equal(echo.seen.length, 5)
})

test('two rate-limits with the same keyBy and different windows do not share a count', async (t) => {
  const { g } = await gatewayWith(t, [
    { name: 'rate-limit', options: { max: 2, timeWindow: '1m', keyBy: 'client' } },
    { name: 'rate-limit', options: { max: 3, timeWindow: '1h', keyBy: 'client' } }
  ])
  assert.equal((await g.request('/x')).status, 200)
  assert.equal((await g.request('/x')).status, 200, 'the per-minute limit counts 2, not 4')
  assertErrorResponse(await g.request('/x'), 429, 'FASTMESH_ERR_RATE_LIMITED')
})
