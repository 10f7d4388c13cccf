// Gateway-made errors: status, stable FASTMESH_ERR_* code and the small JSON body, and
// upstream failures that can no longer become a status.
import test from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { startGateway, assertErrorResponse, eventually, plainRequest, tempDir, fixturePlugin } from '../helpers/gateway.js'
import { startEcho, startSample, startUpstream, meshConfig, embeddedServices } from '../helpers/upstreams.js'
import { freePort as unusedPort } from '../helpers/ports.js'

test('a request no route takes gets 404 FASTMESH_ERR_NO_ROUTE with the request id', async (t) => {
  const echo = await startEcho(t, 'api')
  const g = await startGateway(t, meshConfig({ api: [echo] }, [{ name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'api' } }]))
  const res = await g.request('/nowhere', { headers: { 'x-request-id': 'lost-1' } })
  const body = assertErrorResponse(res, 404, 'FASTMESH_ERR_NO_ROUTE')
  assert.equal(body.error.requestId, 'lost-1')
  assert.match(body.error.message, /GET \/nowhere/)
  assert.equal(echo.seen.length, 0)
})

test('a request for an unknown host gets 404 FASTMESH_ERR_NO_ROUTE', async (t) => {
  const echo = await startEcho(t, 'shop')
  const g = await startGateway(t, meshConfig({ shop: [echo] }, [{ name: 'shop', match: { hosts: ['shop.example.com', '*.shop.example.com'] }, destination: { service: 'shop' } }]))
  const res = await g.request('/', { headers: { host: 'unknown.example.org' } })
  const body = assertErrorResponse(res, 404, 'FASTMESH_ERR_NO_ROUTE')
  assert.match(body.error.message, /unknown\.example\.org/)
  assert.equal(echo.seen.length, 0)
})

test('a service with no healthy endpoint gets 503 FASTMESH_ERR_NO_HEALTHY_ENDPOINT', async (t) => {
  const sick = await startSample(t, 'orders', 'orders-1')
  sick.healthy = false
  const g = await startGateway(t, {
    discovery: { embedded: { services: embeddedServices({ orders: [sick] }, { path: '/health', interval: '100ms', timeout: '500ms', unhealthyThreshold: 1, healthyThreshold: 1 }) } },
    routes: [{ name: 'orders', destination: { service: 'orders' } }]
  })
  // Wait for a probe to have failed, so the endpoint is known to be unhealthy (not just unprobed).
  await eventually(async () => {
    const s = (await g.admin('GET', '/services/orders')).json<{ endpoints: Array<{ healthDetail?: string }> }>()
    return s.endpoints[0]?.healthDetail?.includes('503') === true
  }, 'the first failing health probe')
  const body = assertErrorResponse(await g.request('/orders/1'), 503, 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT')
  assert.match(body.error.message, /"orders"/)
})

test('an upstream with nothing listening gets 502 FASTMESH_ERR_UPSTREAM_FAILURE', async (t) => {
  const port = await unusedPort()
  const g = await startGateway(t, meshConfig({ gone: [port] }, [{ name: 'gone', destination: { service: 'gone' } }]))
  const body = assertErrorResponse(await g.request('/x'), 502, 'FASTMESH_ERR_UPSTREAM_FAILURE')
  assert.match(body.error.message, new RegExp(`127\\.0\\.0\\.1:${port}`))
})

/** An upstream that sends headers and part of a body, then drops the connection. */
async function breakingUpstream (t: import('node:test').TestContext, withLength: boolean): Promise<{ port: number }> {
  return await startUpstream(t, (req, res) => {
    if (req.url === '/ok') { res.end('fine'); return }
    res.writeHead(200, withLength ? { 'content-type': 'text/plain', 'content-length': '100000' } : { 'content-type': 'text/plain' })
    res.write('x'.repeat(1000), () => { setImmediate(() => { res.socket?.destroy() }) })
  })
}

/** Reads a response through node:http and reports whether it ended cleanly or broke. */
async function readOutcome (url: string): Promise<{ status: number, bytes: number, outcome: 'complete' | 'broken' }> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false }, (res) => {
      let bytes = 0
      res.on('data', (c: Buffer) => { bytes += c.length })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, bytes, outcome: 'complete' }) })
      res.on('error', () => { resolve({ status: res.statusCode ?? 0, bytes, outcome: 'broken' }) })
      res.on('aborted', () => { resolve({ status: res.statusCode ?? 0, bytes, outcome: 'broken' }) })
    })
    req.on('error', reject)
    req.end()
  })
}

test('an upstream that closes mid-response (chunked) makes the client see a broken response, not a short clean one', async (t) => {
  const up = await breakingUpstream(t, false)
  const g = await startGateway(t, meshConfig({ flaky: [up] }, [{ name: 'flaky', destination: { service: 'flaky' } }]))
  const r = await readOutcome(`${g.url}/big`)
  assert.equal(r.status, 200)
  assert.equal(r.outcome, 'broken')
  assert.ok(r.bytes <= 1000)
})

test('an upstream that closes mid-response (content-length) makes the client see a broken response', async (t) => {
  const up = await breakingUpstream(t, true)
  const g = await startGateway(t, meshConfig({ flaky: [up] }, [{ name: 'flaky', destination: { service: 'flaky' } }]))
  const r = await readOutcome(`${g.url}/big`)
  assert.equal(r.status, 200)
  assert.equal(r.outcome, 'broken')
  assert.ok(r.bytes < 100000)
})

test('after an upstream broke off mid-response the gateway serves the next request', async (t) => {
  const up = await breakingUpstream(t, false)
  const g = await startGateway(t, meshConfig({ flaky: [up] }, [{ name: 'flaky', destination: { service: 'flaky' } }]))
  assert.equal((await readOutcome(`${g.url}/big`)).outcome, 'broken')
  const next = await g.request('/ok')
  assert.equal(next.status, 200)
  assert.equal(next.text, 'fine')
  const ready = await g.admin('GET', '/ready')
  assert.equal(ready.status, 200)
})

test('a broken-off response is logged with the upstream failure code', async (t) => {
  const up = await breakingUpstream(t, false)
  const g = await startGateway(t, meshConfig({ flaky: [up] }, [{ name: 'flaky', destination: { service: 'flaky' } }]))
  await readOutcome(`${g.url}/big`)
  const line = await eventually(() => g.logs.entries().find((e) => e.log === 'access' && e.path === '/big'), 'the access log line')
  assert.equal(line.error, 'FASTMESH_ERR_UPSTREAM_FAILURE')
})

test('request headers over limits.maxHeaderBytes get 431 FASTMESH_ERR_REQUEST_HEADERS_TOO_LARGE', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }], { limits: { maxHeaderBytes: 2048 } }))
  // Under the limit passes...
  assert.equal((await g.request('/', { headers: { 'x-fill': 'a'.repeat(1000) } })).status, 200)
  // ...over it does not reach the upstream.
  const res = await g.request('/', { headers: { 'x-fill': 'a'.repeat(4000) } })
  const body = assertErrorResponse(res, 431, 'FASTMESH_ERR_REQUEST_HEADERS_TOO_LARGE')
  assert.match(body.error.message, /2048/)
  assert.equal(echo.seen.length, 1)
})

test('a malformed HTTP request gets 400 FASTMESH_ERR_BAD_REQUEST', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const reply = await new Promise<string>((resolve, reject) => {
    const socket = connect(g.gateway.httpAddress.port, '127.0.0.1', () => { socket.write('GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n') })
    let data = ''
    socket.setEncoding('utf8').on('data', (c: string) => { data += c }).on('end', () => { resolve(data) }).on('error', reject)
  })
  assert.match(reply, /^HTTP\/1\.1 400 /)
  const body = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)) as { error: { code: string } }
  assert.equal(body.error.code, 'FASTMESH_ERR_BAD_REQUEST')
  assert.equal(echo.seen.length, 0)
})

test('regression: a path with invalid percent-encoding gets 400 FASTMESH_ERR_BAD_REQUEST with the gateway\'s JSON body', async (t) => {
  // Before the fix Fastify's router answered it with its own body (FST_ERR_BAD_URL), without
  // a request id.
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await g.request('/files/100%zz', { headers: { 'x-request-id': 'bad-pct-1' } })
  const body = assertErrorResponse(res, 400, 'FASTMESH_ERR_BAD_REQUEST')
  assert.equal(body.error.requestId, 'bad-pct-1')
  assert.equal(echo.seen.length, 0)
})

test('regression: OPTIONS * gets 400 FASTMESH_ERR_BAD_REQUEST, not a 502 blamed on the upstream', async (t) => {
  // Before the fix `*` was taken for a path, matched by a catch-all route and handed to
  // undici, which refused it: 502 FASTMESH_ERR_UPSTREAM_FAILURE.
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await plainRequest(g.url, '*', { method: 'OPTIONS' })
  assertErrorResponse(res, 400, 'FASTMESH_ERR_BAD_REQUEST')
  assert.equal(echo.seen.length, 0)
})

test('an upstream that stalls mid-body longer than the route idleTimeout makes the client see a broken response', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('first part, then nothing')
  })
  const g = await startGateway(t, meshConfig({ stalls: [up] }, [{ name: 'stalls', idleTimeout: '200ms', destination: { service: 'stalls' } }]))
  const r = await readOutcome(`${g.url}/stream`)
  assert.equal(r.status, 200)
  assert.equal(r.outcome, 'broken')
  assert.equal(r.bytes, 'first part, then nothing'.length)
})

test('a plugin that fails with a non-client error gets 500 FASTMESH_ERR_INTERNAL and the gateway serves on', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'broken', match: { path: { prefix: '/broken' } }, destination: { service: 'svc' }, plugins: [{ name: 'explode', options: {} }] },
    { name: 'fine', destination: { service: 'svc' } }
  ], { customPlugins: { explode: { module: fixturePlugin(dir, 'explode.js') } } }), { dir })
  const body = assertErrorResponse(await g.request('/broken'), 500, 'FASTMESH_ERR_INTERNAL')
  assert.match(body.error.message, /fixture plugin failure/)
  assert.equal((await g.request('/fine')).status, 200)
  assert.ok(g.logs.withMessage('request failed in the gateway').length === 1, 'the failure is logged')
})
