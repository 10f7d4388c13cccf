// Listener-level request hardening, over raw sockets so nothing is normalised by a client:
// Host validation before any upstream is chosen, answers to what Node's parser refuses,
// header and request timeouts (408), and the JSON error body on every one of them.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startGateway, defer, type TestGateway } from '../helpers/gateway.js'
import { startEcho, meshConfig, type EchoUpstream } from '../helpers/upstreams.js'
import { startSampleService } from '../../src/demo/sample-service.js'
import { createLocalCa, issueLeaf, issueLeafInMemory, type CaPem, type LeafPem } from '../../src/identity/local-ca.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

interface RawResponse {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: string
  /** Milliseconds from the first byte sent to the end of the response. */
  readonly elapsedMs: number
}

/** Reads one HTTP/1.1 response (content-length framed) from `socket`; resolves when it is complete or the socket closes. */
async function readResponse (socket: Socket, started: number, timeoutMs: number): Promise<RawResponse> {
  return await new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    const timer = setTimeout(() => { finish(new Error(`no complete response within ${timeoutMs} ms; got ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`)) }, timeoutMs)
    const finish = (err?: Error): void => {
      clearTimeout(timer)
      socket.removeListener('data', onData)
      socket.removeListener('close', onClose)
      socket.destroy()
      if (err !== undefined) { reject(err); return }
      const text = buf.toString('latin1')
      const split = text.indexOf('\r\n\r\n')
      const lines = text.slice(0, split).split('\r\n')
      const status = Number(/^HTTP\/1\.[01] (\d{3}) /.exec(lines[0] ?? '')?.[1] ?? NaN)
      const headers: Record<string, string> = {}
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':')
        headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
      }
      resolve({ status, headers, body: buf.subarray(Buffer.byteLength(text.slice(0, split + 4), 'latin1')).toString('utf8'), elapsedMs: Date.now() - started })
    }
    const complete = (): boolean => {
      const text = buf.toString('latin1')
      const split = text.indexOf('\r\n\r\n')
      if (split === -1) return false
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, split))
      return length !== null && buf.length >= split + 4 + Number(length[1])
    }
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk])
      if (complete()) finish()
    }
    const onClose = (): void => {
      if (buf.length === 0) finish(new Error('the connection closed without a response'))
      else finish()
    }
    socket.on('data', onData)
    socket.once('close', onClose)
    socket.on('error', () => { /* a reset after the answer is fine; close follows */ })
  })
}

/** Sends `raw` (chunks with `gapMs` between them) on a fresh connection and reads the answer. */
async function exchange (port: number, raw: string | string[], opts: { gapMs?: number, timeoutMs?: number } = {}): Promise<RawResponse> {
  const socket = connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve).once('error', reject) })
  const started = Date.now()
  const reading = readResponse(socket, started, opts.timeoutMs ?? 10_000)
  for (const chunk of Array.isArray(raw) ? raw : [raw]) {
    if (socket.destroyed) break
    socket.write(chunk)
    if (opts.gapMs !== undefined) await new Promise((resolve) => setTimeout(resolve, opts.gapMs))
  }
  return await reading
}

interface ErrorJson { error: { code: string, message: string, requestId: string } }

/** A gateway-made error: status, JSON body with the code, and the x-request-id it names. */
function assertJsonError (res: RawResponse, status: number, code: string): ErrorJson {
  assert.equal(res.status, status, `status (body: ${res.body})`)
  assert.match(res.headers['content-type'] ?? '', /^application\/json/)
  assert.equal(Number(res.headers['content-length']), Buffer.byteLength(res.body))
  const body = JSON.parse(res.body) as ErrorJson
  assert.equal(body.error.code, code)
  assert.ok(body.error.message.length > 0)
  assert.ok(res.headers['x-request-id'] !== undefined, 'x-request-id header')
  assert.equal(body.error.requestId, res.headers['x-request-id'])
  return body
}

async function edge (t: TestContext, limits: Record<string, unknown> = {}): Promise<{ g: TestGateway, echo: EchoUpstream, port: number }> {
  const echo = await startEcho(t, 'api')
  const g = await startGateway(t, meshConfig({ api: [echo] }, [{ name: 'all', destination: { service: 'api' } }], { limits }))
  return { g, echo, port: g.gateway.httpAddress.port }
}

const get = (hostLines: string, target = '/x'): string => `GET ${target} HTTP/1.1\r\n${hostLines}x-request-id: client-id-1\r\nConnection: close\r\n\r\n`

test('every invalid Host form gets 400 FASTMESH_ERR_BAD_HOST with the JSON body, and nothing reaches the upstream', async (t) => {
  const { echo, port } = await edge(t)
  const forms: Array<[string, string]> = [
    ['a two-valued Host', 'Host: 127.0.0.1:8080, evil.invalid\r\n'],
    ['duplicate Host lines', 'Host: a.example\r\nHost: b.example\r\n'],
    ['port 99999', 'Host: :99999\r\n'],
    ['port -1', 'Host: :-1\r\n'],
    ['port abc', 'Host: :abc\r\n'],
    ['a space inside', 'Host: a b.example\r\n'],
    ['a slash', 'Host: a.example/evil\r\n'],
    ['an @', 'Host: user@a.example\r\n'],
    ['an empty value', 'Host:\r\n'],
    ['[zz]', 'Host: [zz]\r\n'],
    ['no Host at all (HTTP/1.1)', '']
  ]
  for (const [what, lines] of forms) {
    await t.test(what, async () => {
      const body = assertJsonError(await exchange(port, get(lines)), 400, 'FASTMESH_ERR_BAD_HOST')
      // Host problems come after the headers were parsed: the client's valid request id is kept.
      assert.equal(body.error.requestId, 'client-id-1')
    })
  }
  assert.equal(echo.seen.length, 0)
})

test('regression: Host "[::1" and "[" get 400 FASTMESH_ERR_BAD_HOST, not 502 FASTMESH_ERR_UPSTREAM_FAILURE', async (t) => {
  const { echo, port } = await edge(t)
  for (const host of ['[::1', '[']) {
    const body = assertJsonError(await exchange(port, get(`Host: ${host}\r\n`)), 400, 'FASTMESH_ERR_BAD_HOST')
    assert.match(body.error.message, /closing "\]"/)
  }
  assert.equal(echo.seen.length, 0)
})

test('valid Host forms (name, name:port, [::1]:80, IPv4) are still routed', async (t) => {
  const { echo, port } = await edge(t)
  for (const host of ['example.com', 'example.com:8080', '[::1]:80', '127.0.0.1']) {
    const res = await exchange(port, get(`Host: ${host}\r\n`))
    assert.equal(res.status, 200, `${host}: ${res.body}`)
  }
  assert.deepEqual(echo.seen.map((r) => r.headers.host), ['example.com', 'example.com:8080', '[::1]:80', '127.0.0.1'])
})

test('HTTP/1.0 without Host is routed', async (t) => {
  const { echo, port } = await edge(t)
  const res = await exchange(port, 'GET /old HTTP/1.0\r\n\r\n')
  assert.equal(res.status, 200, res.body)
  assert.equal(echo.seen.length, 1)
  assert.equal(echo.seen[0]!.url, '/old')
})

test('an upgrade request with an invalid Host gets 400 FASTMESH_ERR_BAD_HOST on the socket', async (t) => {
  const { echo, port } = await edge(t)
  const res = await exchange(port, 'GET /ws HTTP/1.1\r\nHost: [::1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  assertJsonError(res, 400, 'FASTMESH_ERR_BAD_HOST')
  assert.equal(res.headers.connection, 'close')
  assert.equal(echo.seen.length, 0)
})

test('Expect other than 100-continue gets 417 FASTMESH_ERR_EXPECTATION_FAILED with the JSON body', async (t) => {
  const { echo, port } = await edge(t)
  const res = await exchange(port, 'POST /x HTTP/1.1\r\nHost: a.example\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\n')
  const body = assertJsonError(res, 417, 'FASTMESH_ERR_EXPECTATION_FAILED')
  assert.match(body.error.message, /something-else/)
  assert.equal(echo.seen.length, 0)
})

test('CONNECT gets 501 FASTMESH_ERR_METHOD_NOT_IMPLEMENTED with the JSON body instead of a silent close', async (t) => {
  const { echo, port } = await edge(t)
  const res = await exchange(port, 'CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nx-request-id: tunnel-1\r\n\r\n')
  const body = assertJsonError(res, 501, 'FASTMESH_ERR_METHOD_NOT_IMPLEMENTED')
  assert.equal(body.error.requestId, 'tunnel-1')
  assert.equal(echo.seen.length, 0)
})

test('a method Node does not know (FOO) gets 501 FASTMESH_ERR_METHOD_NOT_IMPLEMENTED', async (t) => {
  const { port } = await edge(t)
  const body = assertJsonError(await exchange(port, 'FOO / HTTP/1.1\r\nHost: a.example\r\n\r\n'), 501, 'FASTMESH_ERR_METHOD_NOT_IMPLEMENTED')
  assert.match(body.error.message, /FOO/)
  assert.match(body.error.requestId, UUID)
})

test('a request line with HTTP/2.0 gets 505 FASTMESH_ERR_HTTP_VERSION_NOT_SUPPORTED', async (t) => {
  const { echo, port } = await edge(t)
  const body = assertJsonError(await exchange(port, 'GET / HTTP/2.0\r\nHost: a.example\r\n\r\n'), 505, 'FASTMESH_ERR_HTTP_VERSION_NOT_SUPPORTED')
  assert.match(body.error.message, /HTTP\/2\.0/)
  assert.equal(echo.seen.length, 0)
})

test('a request line with HTTP/1.2 (refused by Node\'s parser) gets 505 FASTMESH_ERR_HTTP_VERSION_NOT_SUPPORTED', async (t) => {
  const { port } = await edge(t)
  const body = assertJsonError(await exchange(port, 'GET / HTTP/1.2\r\nHost: a.example\r\n\r\n'), 505, 'FASTMESH_ERR_HTTP_VERSION_NOT_SUPPORTED')
  assert.match(body.error.message, /HTTP\/1\.2/)
})

test('a parser error (bad header line) gets 400 FASTMESH_ERR_BAD_REQUEST with a real UUID request id, not "-"', async (t) => {
  const { echo, port } = await edge(t)
  const body = assertJsonError(await exchange(port, 'GET / HTTP/1.1\r\nHost: a.example\r\nbad header line\r\n\r\n'), 400, 'FASTMESH_ERR_BAD_REQUEST')
  assert.match(body.error.requestId, UUID)
  assert.equal(echo.seen.length, 0)
})

test('a 10,000-segment path gets 414 FASTMESH_ERR_URI_TOO_LONG, not 431', async (t) => {
  const { echo, port } = await edge(t)
  const body = assertJsonError(await exchange(port, `GET /${'a/'.repeat(10_000)} HTTP/1.1\r\nHost: a.example\r\n\r\n`), 414, 'FASTMESH_ERR_URI_TOO_LONG')
  assert.match(body.error.requestId, UUID)
  assert.equal(echo.seen.length, 0)
})

test('a large header (not the path) over maxHeaderBytes stays 431', async (t) => {
  const { port } = await edge(t)
  assertJsonError(await exchange(port, `GET / HTTP/1.1\r\nHost: a.example\r\nx-fill: ${'a'.repeat(20_000)}\r\n\r\n`), 431, 'FASTMESH_ERR_REQUEST_HEADERS_TOO_LARGE')
})

test('headers sent too slowly get 408 FASTMESH_ERR_REQUEST_TIMEOUT within headerTimeout + 1.5 s', async (t) => {
  const { echo, port } = await edge(t, { headerTimeout: '1s' })
  // Never finishes the header section.
  const res = await exchange(port, ['GET / HTTP/1.1\r\n', 'Host: a.example\r\n'], { gapMs: 200 })
  const body = assertJsonError(res, 408, 'FASTMESH_ERR_REQUEST_TIMEOUT')
  assert.match(body.error.message, /limits\.headerTimeout \(1000 ms\)/)
  assert.match(body.error.requestId, UUID)
  assert.equal(res.headers.connection, 'close')
  assert.ok(res.elapsedMs >= 900, `answered after ${res.elapsedMs} ms, before the header timeout`)
  assert.ok(res.elapsedMs <= 2500, `answered after ${res.elapsedMs} ms`)
  assert.equal(echo.seen.length, 0)
})

test('a body sent too slowly past requestTimeout gets 408 FASTMESH_ERR_REQUEST_TIMEOUT, not 400', async (t) => {
  const { port } = await edge(t, { headerTimeout: '1s', requestTimeout: '2s' })
  // Headers at once, then 2 of the 10 announced body bytes, then nothing.
  const res = await exchange(port, ['POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: 10\r\n\r\n', 'ab'], { gapMs: 100 })
  const body = assertJsonError(res, 408, 'FASTMESH_ERR_REQUEST_TIMEOUT')
  assert.match(body.error.message, /limits\.requestTimeout \(2000 ms\)/)
  assert.ok(res.elapsedMs >= 1900 && res.elapsedMs <= 3500, `answered after ${res.elapsedMs} ms`)
})

test('200 slow-header connections do not stop normal requests, and all 200 get 408 in bounded time', async (t) => {
  const { g, echo, port } = await edge(t, { headerTimeout: '2s' })
  const slow: Array<Promise<RawResponse>> = []
  let slowAnswered = 0
  for (let i = 0; i < 200; i++) {
    const socket = connect(port, '127.0.0.1')
    defer(t, () => { socket.destroy() })
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve).once('error', reject) })
    const reading = readResponse(socket, Date.now(), 6000)
    socket.write('GET /slow HTTP/1.1\r\nHost: a.example\r\n')
    slow.push(reading.finally(() => { slowAnswered++ }))
  }
  // Meanwhile ordinary requests on other connections are served: all of them before the
  // first slow connection is timed out (a gateway stuck on the slow ones would answer them
  // only once those are gone, 2 s on).
  for (let i = 0; i < 20; i++) {
    const res = await g.request(`/normal/${i}`)
    assert.equal(res.status, 200)
  }
  assert.equal(slowAnswered, 0, 'the 20 normal requests were answered while every slow connection still waited')
  const answers = await Promise.all(slow)
  for (const res of answers) {
    assertJsonError(res, 408, 'FASTMESH_ERR_REQUEST_TIMEOUT')
    assert.ok(res.elapsedMs <= 2000 + 1500 + 1000, `answered after ${res.elapsedMs} ms`)
  }
  assert.equal(echo.seen.filter((r) => r.url === '/slow').length, 0)
  assert.equal(echo.seen.length, 20)
})

/** A node gateway with a local CA, its inbound listener on loopback, and a caller identity `web`. */
async function nodeGateway (t: TestContext, mtls: 'strict' | 'permissive', limits: Record<string, unknown> = {}): Promise<{ g: TestGateway, port: number, ca: CaPem, web: LeafPem }> {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-ca-'))
  defer(t, async () => { await rm(dir, { recursive: true, force: true }) })
  const ca = await createLocalCa(dir)
  for (const s of ['node-h', 'orders']) await issueLeaf(dir, s)
  const web = await issueLeafInMemory(ca, 'web')
  const orders = await startSampleService('orders', 'orders-1', 0)
  defer(t, async () => { await orders.close() })
  const g = await startGateway(t, {
    gateway: { name: 'node-h', mode: 'node' },
    mesh: { mtls, identity: { provider: 'files', dir }, authorization: { provider: 'rules', defaultAction: 'allow' } },
    localServices: [{ name: 'orders', port: orders.port }],
    limits
  })
  return { g, port: g.gateway.listenerAddress('inbound')!.port, ca, web }
}

test('the inbound mTLS listener refuses an invalid Host with 400 FASTMESH_ERR_BAD_HOST before authorization or the local app', async (t) => {
  const { g, port, ca, web } = await nodeGateway(t, 'strict')
  const call = async (hostLines: string): Promise<RawResponse> => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'orders', cert: web.certPem, key: web.keyPem, ca: ca.certPem, checkServerIdentity: () => undefined })
    await new Promise<void>((resolve, reject) => { socket.once('secureConnect', resolve).once('error', reject) })
    const reading = readResponse(socket, Date.now(), 10_000)
    socket.write(`GET /x HTTP/1.1\r\n${hostLines}Connection: close\r\n\r\n`)
    return await reading
  }
  assertJsonError(await call('Host: [::1\r\n'), 400, 'FASTMESH_ERR_BAD_HOST')
  assertJsonError(await call('Host: orders\r\nHost: orders\r\n'), 400, 'FASTMESH_ERR_BAD_HOST')
  const ok = await call('Host: orders.mesh\r\n')
  assert.equal(ok.status, 200, ok.body)
  const authz = (await g.admin('GET', '/authz')).json<{ decisions: unknown[] }>()
  assert.equal(authz.decisions.length, 1, 'only the valid request reached authorization')
})

test('a permissive inbound listener closes a connection that sends nothing within headerTimeout + 1.5 s', async (t) => {
  // Until its first byte such a connection belongs to neither the TLS nor the plain server,
  // so neither one's header timeout covers it.
  const { port } = await nodeGateway(t, 'permissive', { headerTimeout: '1s' })
  const socket = connect(port, '127.0.0.1')
  defer(t, () => { socket.destroy() })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve).once('error', reject) })
  const started = Date.now()
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('the silent connection is still open after 5 s')) }, 5000)
    socket.resume().once('close', () => { clearTimeout(timer); resolve() })
  })
  const elapsed = Date.now() - started
  assert.ok(elapsed >= 900 && elapsed <= 2500, `closed after ${elapsed} ms`)
})

test('a strict inbound listener drops a TLS handshake that does not finish within headerTimeout + 1.5 s', async (t) => {
  const { port } = await nodeGateway(t, 'strict', { headerTimeout: '1s' })
  const socket = connect(port, '127.0.0.1')
  defer(t, () => { socket.destroy() })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve).once('error', reject) })
  const started = Date.now()
  // The first bytes of a TLS record (handshake, TLS 1.0 record version), then nothing.
  socket.write(Buffer.from([0x16, 0x03, 0x01]))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('the stalled handshake is still open after 5 s')) }, 5000)
    socket.on('error', () => {}).resume().once('close', () => { clearTimeout(timer); resolve() })
  })
  const elapsed = Date.now() - started
  assert.ok(elapsed >= 900 && elapsed <= 2500, `closed after ${elapsed} ms`)
})
