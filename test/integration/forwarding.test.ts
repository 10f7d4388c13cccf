// What the gateway forwards: hop-by-hop headers dropped both ways, X-Forwarded-* set,
// x-request-id handling, and the per-route upstream timeout.
import test from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { startGateway, assertErrorResponse, plainRequest } from '../helpers/gateway.js'
import { startEcho, startUpstream, meshConfig, type EchoRecord } from '../helpers/upstreams.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

test('hop-by-hop request headers, and the ones Connection names, are not forwarded upstream', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await plainRequest(g.url, '/x', { headers: {
    connection: 'keep-alive, X-Secret-Hop, x-other-hop',
    'keep-alive': 'timeout=5',
    'x-secret-hop': 'must not pass',
    'x-other-hop': 'must not pass either',
    te: 'trailers',
    'proxy-authorization': 'Basic Zm9vOmJhcg==',
    'proxy-connection': 'keep-alive',
    upgrade: 'h2c',
    'x-end-to-end': 'kept'
  } })
  assert.equal(res.status, 200)
  const seen = res.json<EchoRecord>()
  for (const name of ['keep-alive', 'x-secret-hop', 'x-other-hop', 'te', 'proxy-authorization', 'proxy-connection', 'upgrade']) {
    assert.equal(seen.headers[name], undefined, `${name} reached the upstream`)
  }
  // The upstream hop has its own Connection header (undici's), never the client's tokens.
  assert.doesNotMatch(String(seen.headers.connection ?? ''), /secret|other/i)
  assert.equal(seen.headers['x-end-to-end'], 'kept')
})

test('hop-by-hop response headers, and the ones Connection names, are not returned to the client', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, {
      connection: 'x-upstream-hop',
      'x-upstream-hop': 'must not pass',
      'proxy-authenticate': 'Basic realm="upstream"',
      'x-end-to-end': 'kept',
      'content-length': '2'
    })
    res.end('ok')
  })
  const g = await startGateway(t, meshConfig({ svc: [up] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await plainRequest(g.url, '/')
  assert.equal(res.status, 200)
  assert.equal(res.text, 'ok')
  assert.equal(res.headers['x-upstream-hop'], undefined)
  assert.equal(res.headers['proxy-authenticate'], undefined)
  assert.doesNotMatch(String(res.headers.connection ?? ''), /x-upstream-hop/i)
  assert.equal(res.headers['x-end-to-end'], 'kept')
})

test('X-Forwarded-For, -Proto and -Host are set from the client connection', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await g.request('/', { headers: { host: 'shop.example.com:8443' } })
  assert.equal(res.status, 200)
  const seen = res.json<EchoRecord>()
  assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1')
  assert.equal(seen.headers['x-forwarded-proto'], 'http')
  assert.equal(seen.headers['x-forwarded-host'], 'shop.example.com:8443')
})

test('client-supplied X-Forwarded-* and Forwarded headers are replaced by default (not trusted)', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await g.request('/', {
    headers: {
      host: 'shop.example.com',
      'x-forwarded-for': '6.6.6.6',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'evil.example',
      forwarded: 'for=6.6.6.6;proto=https'
    }
  })
  const seen = res.json<EchoRecord>()
  assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1')
  assert.equal(seen.headers['x-forwarded-proto'], 'http')
  assert.equal(seen.headers['x-forwarded-host'], 'shop.example.com')
  assert.equal(seen.headers.forwarded, undefined)
})

test('with trustForwardedHeaders the client address is appended to X-Forwarded-For', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }], {
    gateway: { trustForwardedHeaders: true }
  }))
  const res = await g.request('/', {
    headers: { host: 'edge.internal', 'x-forwarded-for': '203.0.113.7, 10.0.0.2', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'shop.example.com' }
  })
  const seen = res.json<EchoRecord>()
  assert.equal(seen.headers['x-forwarded-for'], '203.0.113.7, 10.0.0.2, 127.0.0.1')
  assert.equal(seen.headers['x-forwarded-proto'], 'https')
  assert.equal(seen.headers['x-forwarded-host'], 'shop.example.com')
})

test('x-request-id is generated when absent, forwarded upstream and echoed on the response', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const first = await g.request('/')
  const second = await g.request('/')
  const id = first.headers['x-request-id']
  assert.match(String(id), UUID)
  assert.equal(first.json<EchoRecord>().headers['x-request-id'], id)
  assert.notEqual(second.headers['x-request-id'], id, 'each request gets its own id')
})

test('a client x-request-id is kept: forwarded upstream and echoed on the response', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await g.request('/', { headers: { 'x-request-id': 'req-abc.123:7' } })
  assert.equal(res.headers['x-request-id'], 'req-abc.123:7')
  assert.equal(res.json<EchoRecord>().headers['x-request-id'], 'req-abc.123:7')
})

test('a malformed client x-request-id is replaced with a generated one', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await g.request('/', { headers: { 'x-request-id': 'has spaces; and <angle brackets>' } })
  assert.match(String(res.headers['x-request-id']), UUID)
  assert.equal(res.json<EchoRecord>().headers['x-request-id'], res.headers['x-request-id'])
})

test('the upstream x-request-id response header never replaces the gateway one', async (t) => {
  const echo = await startEcho(t, 'svc', { 'x-request-id': 'upstream-made-this' })
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await g.request('/', { headers: { 'x-request-id': 'client-id' } })
  assert.equal(res.headers['x-request-id'], 'client-id')
})

test('the request id is written in the access log line of the request', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  await g.request('/logged?x=1', { headers: { 'x-request-id': 'log-me-1' } })
  const line = g.logs.entries().find((e) => e.log === 'access' && e.requestId === 'log-me-1')
  assert.ok(line !== undefined, 'an access log line carries the request id')
  assert.equal(line.route, 'all')
  assert.equal(line.destination, 'svc')
  assert.equal(line.status, 200)
  assert.equal(line.path, '/logged?x=1')
})

test('an upstream slower than the route timeout gives 504 FASTMESH_ERR_UPSTREAM_TIMEOUT', async (t) => {
  // Never answers; the test's cleanup closes the connection.
  const up = await startUpstream(t, () => {})
  const g = await startGateway(t, meshConfig({ slow: [up] }, [{ name: 'slow', timeout: '200ms', destination: { service: 'slow' } }]))
  const res = await g.request('/slow', { headers: { 'x-request-id': 'timeout-1' } })
  const body = assertErrorResponse(res, 504, 'FASTMESH_ERR_UPSTREAM_TIMEOUT')
  assert.equal(body.error.requestId, 'timeout-1')
  assert.match(body.error.message, /200 ms/)
})

test('the request body is streamed upstream unchanged (POST with content-length and chunked)', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const fixed = await g.request('/upload', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' })
  assert.equal(fixed.json<EchoRecord>().bodyBytes, 7)
  assert.equal(fixed.json<EchoRecord>().headers['content-type'], 'application/json')
  const chunked = await new Promise<EchoRecord>((resolve, reject) => {
    const req = httpRequest(`${g.url}/upload`, { method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (c: string) => { body += c }).on('end', () => { resolve(JSON.parse(body) as EchoRecord) })
    })
    req.on('error', reject)
    req.write('x'.repeat(1000))
    req.end('y'.repeat(234))
  })
  assert.equal(chunked.bodyBytes, 1234)
})

test('regression: a request with an Upgrade header but no "Connection: upgrade" is forwarded as a plain request, never tunnelled', { timeout: 10_000 }, async (t) => {
  // Before the fix, any GET carrying Upgrade was sent upstream as an upgrade request: an
  // upstream that accepts it would have taken over a client connection that never asked.
  let upgradeAttempts = 0
  const echo = await startEcho(t, 'svc')
  echo.server.on('upgrade', (_req, socket) => {
    upgradeAttempts++
    socket.end('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n')
  })
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await plainRequest(g.url, '/plain', { headers: { upgrade: 'websocket', connection: 'keep-alive' } })
  assert.equal(res.status, 200)
  const seen = res.json<EchoRecord>()
  assert.equal(seen.url, '/plain')
  assert.equal(seen.headers.upgrade, undefined)
  assert.equal(upgradeAttempts, 0)
})
