// The built-in `jwt` plugin on a real gateway: tokens signed in the test with jose, a JWKS
// served by a real HTTP server on loopback (fetches counted there), an echo upstream that
// shows what the gateway forwarded. Token times are set relative to now, never waited for.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type JWK, type JWTPayload, type CryptoKey } from 'jose'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway, assertErrorResponse, defer, eventually, type TestGateway } from '../helpers/gateway.js'
import { startEcho, startUpstream, meshConfig, type EchoRecord } from '../helpers/upstreams.js'

const ISSUER = 'https://issuer.test/'
const AUDIENCE = 'orders-api'

interface SigningKey {
  readonly kid: string
  readonly alg: string
  readonly privateKey: CryptoKey
  readonly publicJwk: JWK
  readonly publicKey: CryptoKey
}

async function signingKey (kid: string, alg = 'RS256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  return { kid, alg, privateKey, publicKey, publicJwk: { ...await exportJWK(publicKey), kid, alg, use: 'sig' } }
}

const now = (): number => Math.floor(Date.now() / 1000)

/** A token signed by `key`; claims default to a valid one (issuer, audience, issued now, 5 minutes left). */
async function token (key: SigningKey, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  return await new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: 'user-7', iat: now(), exp: now() + 300, ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...header })
    .sign(key.privateKey)
}

interface JwksServer {
  readonly url: string
  /** Requests the server received (every fetch of the JWKS). */
  readonly fetches: number
  /** What it answers from now on: these keys, a 500, or nothing (the request hangs). */
  serve(mode: { keys: JWK[] } | 'fail' | 'hang'): void
}

async function startJwks (t: TestContext, keys: JWK[]): Promise<JwksServer> {
  let mode: { keys: JWK[] } | 'fail' | 'hang' = { keys }
  let fetches = 0
  const hanging: ServerResponse[] = []
  const up = await startUpstream(t, (_req: IncomingMessage, res: ServerResponse) => {
    fetches++
    if (mode === 'hang') { hanging.push(res); return }
    if (mode === 'fail') { res.writeHead(500).end('down'); return }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: mode.keys }))
  })
  defer(t, () => { for (const res of hanging) res.destroy() })
  return {
    url: `http://127.0.0.1:${up.port}/.well-known/jwks.json`,
    get fetches () { return fetches },
    serve (m) { mode = m }
  }
}

function jwtRoute (options: Record<string, unknown>, name = 'api'): Record<string, unknown> {
  return { name, destination: { service: 'svc' }, plugins: [{ name: 'jwt', options }] }
}

const bearer = (tok: string): Record<string, string> => ({ authorization: `Bearer ${tok}` })

/** Asserts a 401 invalid_token with `reason` in its description, and that the token is echoed nowhere. */
async function assertInvalid (g: TestGateway, tok: string, reason: RegExp): Promise<void> {
  const res = await g.request('/x', { headers: bearer(tok) })
  const body = assertErrorResponse(res, 401, 'FASTMESH_ERR_UNAUTHENTICATED')
  const challenge = String(res.headers['www-authenticate'])
  assert.match(challenge, /^Bearer realm="api", error="invalid_token", error_description="[^"\\]+"$/)
  assert.match(challenge, reason)
  assert.match(body.error.message, reason)
  // Each part of a real token is long enough that finding it anywhere means it was echoed.
  for (const part of tok.split('.').filter((p) => p.length >= 16)) assert.ok(!res.text.includes(part) && !challenge.includes(part), 'the token is not echoed')
}

test('jwt: a valid token reaches the upstream with the forwarded claims; the same headers sent by the client are dropped', async (t) => {
  const key = await signingKey('k1')
  const jwks = await startJwks(t, [key.publicJwk])
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({
    jwks: { url: jwks.url }, issuer: ISSUER, audience: AUDIENCE,
    forwardClaims: { sub: 'x-user-id', roles: 'x-user-roles', tenant: 'x-tenant' }
  })]))
  const tok = await token(key, { roles: ['reader', 'writer'] })
  const res = await g.request('/x', { headers: { ...bearer(tok), 'x-user-id': 'admin', 'X-Tenant': 'forged' } })
  assert.equal(res.status, 200, res.text)
  const seen = res.json<EchoRecord>().headers
  assert.equal(seen['x-user-id'], 'user-7', 'the verified claim, not the client\'s header')
  assert.equal(seen['x-user-roles'], 'reader,writer')
  assert.equal(seen['x-tenant'], undefined, 'a forged header for a claim the token lacks is dropped, not passed on')
  assert.equal(seen.authorization, `Bearer ${tok}`, 'forwardToken defaults to true')
  assert.ok(!g.logs.lines.some((l) => l.includes(tok.split('.')[2]!)), 'the token is in no log line')
})

test('jwt: forwardToken false keeps the Authorization header from the upstream', async (t) => {
  const key = await signingKey('k1', 'ES256')
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ keys: [key.publicJwk], forwardToken: false })]))
  const res = await g.request('/x', { headers: bearer(await token(key)) })
  assert.equal(res.status, 200, res.text)
  assert.equal(res.json<EchoRecord>().headers.authorization, undefined)
})

test('jwt: no token gets 401 with a bare Bearer challenge; the upstream is not called', async (t) => {
  const key = await signingKey('k1')
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ keys: [key.publicJwk] })]))
  for (const headers of [{}, { authorization: 'Basic dXNlcjpwYXNz' }] as Array<Record<string, string>>) {
    const res = await g.request('/x', { headers })
    assertErrorResponse(res, 401, 'FASTMESH_ERR_UNAUTHENTICATED')
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="api"')
  }
  assert.equal(echo.seen.length, 0)
})

test('jwt: malformed, badly signed, wrong issuer or audience, and disallowed algorithms get 401 invalid_token', async (t) => {
  const key = await signingKey('k1')
  const impostor = await signingKey('k1')
  const jwks = await startJwks(t, [key.publicJwk])
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ jwks: { url: jwks.url }, issuer: ISSUER, audience: AUDIENCE })]))
  await assertInvalid(g, 'not.a.jwt', /malformed/)
  await assertInvalid(g, await token(impostor), /signature does not verify/)
  await assertInvalid(g, await token(key, { iss: 'https://elsewhere.test/' }), /another issuer/)
  await assertInvalid(g, await token(key, { aud: 'billing-api' }), /another audience/)
  const hs = await new SignJWT({ iss: ISSUER, aud: AUDIENCE }).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(new TextEncoder().encode('x'.repeat(32)))
  await assertInvalid(g, hs, /algorithm is not accepted/)
  const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: ISSUER, aud: AUDIENCE })).toString('base64url')}.`
  await assertInvalid(g, unsigned, /algorithm is not accepted|malformed/)
  assert.equal(echo.seen.length, 0)
})

test('jwt: expiry and not-before are checked with the clock skew as tolerance', async (t) => {
  const key = await signingKey('k1', 'EdDSA')
  const echo = await startEcho(t, 'svc')
  // 60 s of skew; the margins (20 s, 120 s) are far from its edge whatever the machine's speed.
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ keys: [key.publicJwk], clockSkew: '60s' })]))
  const status = async (claims: JWTPayload): Promise<number> => (await g.request('/x', { headers: bearer(await token(key, claims)) })).status
  assert.equal(await status({ exp: now() - 20 }), 200, 'expired 20 s ago: inside the skew')
  await assertInvalid(g, await token(key, { exp: now() - 120 }), /has expired/)
  assert.equal(await status({ nbf: now() + 20 }), 200, 'valid in 20 s: inside the skew')
  await assertInvalid(g, await token(key, { nbf: now() + 120, iat: now() }), /not valid yet/)
})

test('jwt: a valid token without a required claim gets 403 insufficient_scope', async (t) => {
  const key = await signingKey('k1')
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { ...jwtRoute({ keys: [key.publicJwk], requiredClaims: ['tenant'] }, 'named'), match: { path: { prefix: '/named' } } },
    { ...jwtRoute({ keys: [key.publicJwk], requiredClaims: { scope: ['orders.read', 'orders.write'], admin: true } }, 'valued'), match: { path: { prefix: '/valued' } } }
  ]))
  const refused = async (path: string, claims: JWTPayload, reason: RegExp): Promise<void> => {
    const res = await g.request(path, { headers: bearer(await token(key, claims)) })
    const body = assertErrorResponse(res, 403, 'FASTMESH_ERR_FORBIDDEN_CLAIMS')
    assert.match(String(res.headers['www-authenticate']), /^Bearer realm="[a-z]+", error="insufficient_scope", error_description="[^"]+"$/)
    assert.match(body.error.message, reason)
  }
  await refused('/named', {}, /claim tenant is missing/)
  assert.equal((await g.request('/named', { headers: bearer(await token(key, { tenant: 'acme' })) })).status, 200)
  await refused('/valued', { scope: 'orders.read', admin: true }, /claim scope does not hold orders\.write/)
  await refused('/valued', { scope: 'orders.read orders.write', admin: 'yes' }, /claim admin does not hold true/)
  assert.equal((await g.request('/valued', { headers: bearer(await token(key, { scope: 'orders.write orders.read', admin: true })) })).status, 200)
  assert.equal(echo.seen.length, 2)
})

test('jwt: JWKS key rotation — a token with a new kid is accepted after a refetch, without a reload', async (t) => {
  const old = await signingKey('2024')
  const fresh = await signingKey('2025')
  const jwks = await startJwks(t, [old.publicJwk])
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ jwks: { url: jwks.url, cooldown: '0s' } })]))
  assert.equal((await g.request('/x', { headers: bearer(await token(old)) })).status, 200)
  assert.equal(jwks.fetches, 1)
  await assertInvalid(g, await token(fresh), /no known key/)
  assert.equal(jwks.fetches, 2, 'the unknown kid made one refetch')
  jwks.serve({ keys: [old.publicJwk, fresh.publicJwk] })
  assert.equal((await g.request('/x', { headers: bearer(await token(fresh)) })).status, 200, 'the new key after a refetch')
  assert.equal((await g.request('/x', { headers: bearer(await token(old)) })).status, 200, 'the old key still held')
  assert.equal(jwks.fetches, 3)
})

test('jwt: the JWKS cache outlives a config reload (no refetch)', async (t) => {
  const key = await signingKey('k1')
  const jwks = await startJwks(t, [key.publicJwk])
  const echo = await startEcho(t, 'svc')
  const routes = [jwtRoute({ jwks: { url: jwks.url } })]
  const g = await startGateway(t, meshConfig({ svc: [echo] }, routes))
  const tok = await token(key)
  assert.equal((await g.request('/x', { headers: bearer(tok) })).status, 200)
  assert.equal(jwks.fetches, 1)
  await g.writeConfig(meshConfig({ svc: [echo] }, [...routes, { name: 'other', match: { path: { prefix: '/other' } }, destination: { service: 'svc' } }]))
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  assert.equal((await g.request('/x', { headers: bearer(tok) })).status, 200)
  assert.equal(jwks.fetches, 1, 'the new version verified with the keys fetched before the reload')
})

test('jwt: keys past cacheMaxAge keep verifying while the JWKS fails (refetched in the background)', async (t) => {
  const key = await signingKey('k1')
  const jwks = await startJwks(t, [key.publicJwk])
  const echo = await startEcho(t, 'svc')
  // No token cache: every request asks for the key.
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ jwks: { url: jwks.url, cacheMaxAge: '1ms' }, tokenCacheSize: 0 })]))
  const tok = await token(key)
  assert.equal((await g.request('/x', { headers: bearer(tok) })).status, 200)
  jwks.serve('fail')
  assert.equal((await g.request('/x', { headers: bearer(tok) })).status, 200, 'the stale key still verifies')
  await eventually(() => jwks.fetches >= 2, 'a background refetch')
  await eventually(() => g.logs.withMessage('jwt JWKS unavailable: tokens whose key is not cached are refused').length === 1, 'the outage to be logged')
  assert.equal((await g.request('/x', { headers: bearer(tok) })).status, 200)
})

test('jwt: a verified token is remembered (not verified again) until its expiry', async (t) => {
  const key = await signingKey('k1')
  const jwks = await startJwks(t, [key.publicJwk])
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ jwks: { url: jwks.url, cacheMaxAge: '1ms' }, clockSkew: '0s' })]))
  let n = 0
  const another = async (claims: JWTPayload = {}): Promise<string> => await token(key, { jti: `t${++n}`, ...claims })
  const remembered = await another({ exp: now() + 3 })
  assert.equal((await g.request('/x', { headers: bearer(remembered) })).status, 200)
  // The JWKS drops the key; once a refetch took that in, only the remembered token still passes.
  jwks.serve({ keys: [] })
  await eventually(async () => (await g.request('/x', { headers: bearer(await another()) })).status === 401, 'the emptied JWKS to be fetched')
  assert.equal((await g.request('/x', { headers: bearer(remembered) })).status, 200, 'remembered: not verified again')
  // Past its exp (no skew), it is not remembered any more: verified again, and refused.
  await eventually(async () => (await g.request('/x', { headers: bearer(remembered) })).status === 401, 'the remembered token to expire')
})

test('jwt: a JWKS that hangs costs a request at most the timeout; its outage is logged once, its return once', async (t) => {
  const key = await signingKey('k1')
  const jwks = await startJwks(t, [key.publicJwk])
  jwks.serve('hang')
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ jwks: { url: jwks.url, timeout: '400ms' } })]))
  const tok = await token(key)
  for (let i = 0; i < 3; i++) {
    const started = performance.now()
    await assertInvalid(g, tok, /signing keys could not be fetched/)
    const took = performance.now() - started
    assert.ok(took < 400 + 2000, `answered in ${took.toFixed(0)} ms`)
  }
  assert.equal(g.logs.withMessage('jwt JWKS unavailable: tokens whose key is not cached are refused').length, 1, 'one line for the outage, not one per request')

  jwks.serve({ keys: [key.publicJwk] })
  await eventually(async () => (await g.request('/x', { headers: bearer(tok) })).status === 200, 'the JWKS to be fetched again')
  assert.equal(g.logs.withMessage('jwt JWKS available again').length, 1)
  assert.equal((await g.request('/x', { headers: bearer(tok) })).status, 200)
  assert.equal(g.logs.withMessage('jwt JWKS unavailable: tokens whose key is not cached are refused').length, 1)
})

test('jwt: static keys — a PEM public key verifies tokens whatever their kid; an HMAC secret verifies HS256', async (t) => {
  const rsa = await signingKey('rotating-kid')
  const echo = await startEcho(t, 'svc')
  const secret = 's'.repeat(40)
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ keys: [await exportSPKI(rsa.publicKey)], secret })]))
  assert.equal((await g.request('/x', { headers: bearer(await token(rsa)) })).status, 200)
  const hs = await new SignJWT({ sub: 'svc-a' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1m').sign(new TextEncoder().encode(secret))
  assert.equal((await g.request('/x', { headers: bearer(hs) })).status, 200)
  const wrong = await new SignJWT({ sub: 'svc-a' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode('t'.repeat(40)))
  await assertInvalid(g, wrong, /signature does not verify/)
})

test('jwt: a config without keys, with both key sources, with a private key or an HS algorithm without a secret is refused before the gateway starts, at its JSON path', async (t) => {
  const key = await signingKey('k1')
  const echo = await startEcho(t, 'svc')
  const at = String.raw`\$\.routes\[0\]\.plugins\[0\]\.options`
  const refused = async (options: Record<string, unknown>, problem: string): Promise<void> => {
    await assert.rejects(startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute(options)])), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'FASTMESH_ERR_CONFIG_INVALID')
      assert.match(err.message, new RegExp(`${at}${problem}`))
      return true
    })
  }
  await refused({ issuer: ISSUER }, ': needs a source of keys')
  await refused({ keys: [key.publicJwk], jwks: { url: 'http://127.0.0.1:1/' } }, ': has both .jwks. and .keys.')
  await refused({ keys: [{ ...await exportJWK(key.privateKey), kid: 'k1' }] }, String.raw`\.keys\[0\]: is a private key`)
  await refused({ keys: [key.publicJwk], algorithms: ['RS256', 'HS256'] }, String.raw`\.algorithms\[1\]: "HS256" needs a .secret.`)
})

test('jwt: a WebSocket upgrade without a token is refused with 401 before the tunnel opens', async (t) => {
  const key = await signingKey('k1')
  const up = await startUpstream(t, (_req, res) => { res.writeHead(426).end() })
  const wss = new WebSocketServer({ server: up.server })
  let upgrades = 0
  wss.on('connection', () => { upgrades++ })
  defer(t, async () => { await new Promise<void>((resolve) => { wss.close(() => { resolve() }) }) })
  const g = await startGateway(t, meshConfig({ chat: [up] }, [{ name: 'chat', destination: { service: 'chat' }, plugins: [{ name: 'jwt', options: { keys: [key.publicJwk] } }] }]))

  const refused = new WebSocket(`${g.url.replace('http:', 'ws:')}/ws`)
  defer(t, () => { refused.on('error', () => {}); refused.terminate() })
  const [, res] = await once(refused, 'unexpected-response') as [unknown, IncomingMessage]
  assert.equal(res.statusCode, 401)
  assert.equal(res.headers['www-authenticate'], 'Bearer realm="chat"')
  res.resume()

  const accepted = new WebSocket(`${g.url.replace('http:', 'ws:')}/ws`, { headers: bearer(await token(key)) })
  defer(t, () => { accepted.on('error', () => {}); accepted.terminate() })
  await once(accepted, 'open')
  assert.equal(upgrades, 1, 'only the upgrade with a token reached the upstream')
})

test('jwt with jwks and secret: HS tokens verify with the secret, never with a symmetric key a JWKS document publishes', async (t) => {
  const key = await signingKey('k1')
  const secret = 's'.repeat(32)
  const published = new TextEncoder().encode('p'.repeat(32))
  // A JWKS is public: an `oct` key in it is known to anyone, so it must not verify anything.
  const jwks = await startJwks(t, [key.publicJwk, { kty: 'oct', kid: 'shared', alg: 'HS256', k: Buffer.from(published).toString('base64url') }])
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [jwtRoute({ jwks: { url: jwks.url }, secret, algorithms: ['RS256', 'HS256'] })]))
  const hs = async (k: Uint8Array, kid?: string): Promise<string> => await new SignJWT({ sub: 'user-7', exp: now() + 300 }).setProtectedHeader(kid === undefined ? { alg: 'HS256' } : { alg: 'HS256', kid }).sign(k)
  assert.equal((await g.request('/x', { headers: bearer(await token(key)) })).status, 200, 'RS256 from the JWKS')
  const withSecret = await g.request('/x', { headers: bearer(await hs(new TextEncoder().encode(secret))) })
  assert.equal(withSecret.status, 200, `HS256 with the configured secret: ${withSecret.text}`)
  await assertInvalid(g, await hs(published, 'shared'), /signature does not verify|no known key/)
  await assertInvalid(g, await hs(published), /signature does not verify|no known key/)
  assert.equal(echo.seen.length, 2)
})

test('jwt: a token without exp is refused (RFC 9068: an access token expires), unless requireExpiration is false', async (t) => {
  const key = await signingKey('k1')
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { ...jwtRoute({ keys: [key.publicJwk] }, 'api'), match: { path: { prefix: '/x' } } },
    { ...jwtRoute({ keys: [key.publicJwk], requireExpiration: false }, 'lenient'), match: { path: { prefix: '/lenient' } } }
  ]))
  const forever = await new SignJWT({ sub: 'user-7', iat: now() }).setProtectedHeader({ alg: key.alg, kid: key.kid }).sign(key.privateKey)
  await assertInvalid(g, forever, /no expiry/)
  assert.equal((await g.request('/x', { headers: bearer(await token(key)) })).status, 200, 'a token with exp still passes')
  assert.equal((await g.request('/lenient', { headers: bearer(forever) })).status, 200, 'requireExpiration: false takes it')
  assert.equal(echo.seen.length, 2)
})
