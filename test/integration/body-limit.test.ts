// The built-in `body-limit` plugin on a real gateway and upstreams, over raw loopback sockets
// where an HTTP client would hide what matters: a declared length at and over the limit, a
// chunked body counted as it streams (413 and the upstream's request aborted; a response
// already begun is cut), the connection closed after a refusal, retries with buffered bodies,
// and an aborted try that says nothing against the endpoint.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { startGateway, assertErrorResponse, eventually, type TestGateway } from '../helpers/gateway.js'
import { startUpstream, meshConfig } from '../helpers/upstreams.js'
import { rawExchange, parseResponse, header, type ParsedResponse } from '../helpers/raw-exchange.js'

const LIMIT = 1000

/** What an upstream saw of each request: its body bytes, and whether it arrived whole or was aborted. */
interface Receipt { bytes: number, complete: boolean | undefined }

interface RecordingUpstream {
  readonly port: number
  readonly receipts: Receipt[]
  /** Resolves once `n` requests have arrived (headers seen). */
  arrivals(n: number): Promise<void>
}

/**
 * An upstream that reads each body to its end and then answers `status` with the byte count,
 * or (`answerAtOnce`) answers 200 headers and a first body piece at once, finishing when the
 * request body ends.
 */
async function recordingUpstream (t: TestContext, opts: { status?: number, answerAtOnce?: boolean } = {}): Promise<RecordingUpstream> {
  const receipts: Receipt[] = []
  const up = await startUpstream(t, (req, res) => {
    const receipt: Receipt = { bytes: 0, complete: undefined }
    receipts.push(receipt)
    if (opts.answerAtOnce === true) res.writeHead(200, { 'content-type': 'text/plain' }).write('started;')
    req.on('data', (c: Buffer) => { receipt.bytes += c.length })
    req.on('end', () => {
      receipt.complete = true
      const body = `got ${receipt.bytes}`
      if (opts.answerAtOnce === true) res.end(body)
      else res.writeHead(opts.status ?? 200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }).end(body)
    })
    req.on('close', () => { if (receipt.complete !== true) receipt.complete = false })
  })
  return {
    port: up.port,
    receipts,
    async arrivals (n) { await eventually(() => receipts.length >= n ? true : undefined, `${n} request(s) at the upstream`, 5000) }
  }
}

function limited (extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'upload', destination: { service: 'svc' }, plugins: [{ name: 'body-limit', options: { maxBytes: LIMIT } }], ...extra }
}

async function accessLine (g: TestGateway, requestId: string): Promise<Record<string, unknown>> {
  return await eventually(() => g.logs.entries().find((e) => e.log === 'access' && e.requestId === requestId), 'the access line', 5000)
}

/** A raw client connection: write pieces when the test says, see what came back. */
class RawClient {
  readonly socket: net.Socket
  private readonly chunks: Buffer[] = []
  readonly closed: Promise<void>

  constructor (port: number) {
    this.socket = net.connect(port, '127.0.0.1')
    this.socket.on('data', (c: Buffer) => { this.chunks.push(c) })
    // A reset while the client still sends is part of what is tested, not a failure.
    this.socket.on('error', () => {})
    // A gateway that never closes fails the test in 10 s rather than hanging it.
    const timer = setTimeout(() => { this.socket.destroy() }, 10_000)
    this.closed = new Promise((resolve) => { this.socket.once('close', () => { clearTimeout(timer); resolve() }) })
  }

  get received (): Buffer { return Buffer.concat(this.chunks) }

  write (data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data)
  }

  chunk (data: Buffer): void {
    this.write(`${data.length.toString(16)}\r\n`)
    this.write(data)
    this.write('\r\n')
  }

  async headersReceived (): Promise<void> {
    await eventually(() => this.received.includes('\r\n\r\n') ? true : undefined, 'response headers', 5000)
  }
}

function chunkedHead (requestId: string, path = '/upload'): string {
  return `POST ${path} HTTP/1.1\r\nhost: gw.test\r\nx-request-id: ${requestId}\r\ntransfer-encoding: chunked\r\n\r\n`
}

test('body-limit: a declared Content-Length exactly at the limit goes through whole', async (t) => {
  const up = await recordingUpstream(t)
  const g = await startGateway(t, meshConfig({ svc: [up] }, [limited()]))
  const res = await g.request('/upload', { method: 'POST', body: Buffer.alloc(LIMIT, 'a') })
  assert.equal(res.status, 200)
  assert.equal(res.text, `got ${LIMIT}`)
  assert.deepEqual(up.receipts, [{ bytes: LIMIT, complete: true }])
})

test('body-limit: one byte over the declared limit is refused with 413 before the upstream is called, and the connection closes', async (t) => {
  const up = await recordingUpstream(t)
  const g = await startGateway(t, meshConfig({ svc: [up] }, [limited()]))
  const port = Number(new URL(g.url).port)
  // Keep-alive, with a follow-up request ready: it must not be taken from the same connection.
  const outcome = await rawExchange({ port, method: 'POST', target: '/upload', headers: [['host', 'gw.test'], ['x-request-id', 'over-cl']], body: { kind: 'length', body: Buffer.alloc(LIMIT + 1, 'a') }, mode: 'normal', followUp: 'GET /upload HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n' })
  assert.equal(outcome.timedOut, false, 'the gateway closed the connection')
  assert.equal(outcome.followUpSent, false, 'the answer said the connection closes')
  const res = parseResponse(outcome.received, 'POST')
  assert.equal(res.status, 413)
  assert.equal(header(res, 'connection'), 'close')
  assert.equal(JSON.parse(res.body.toString()).error.code, 'FASTMESH_ERR_BODY_TOO_LARGE')
  assert.equal(res.extra, 0, 'one answer only')
  assert.equal(up.receipts.length, 0, 'the upstream was never called')
  const line = await accessLine(g, 'over-cl')
  assert.equal(line.status, 413)
  assert.equal(line.error, 'FASTMESH_ERR_BODY_TOO_LARGE')
  // A new connection is served.
  assert.equal((await g.request('/upload', { method: 'POST', body: 'small' })).status, 200)
})

test('body-limit: a chunked body within the limit streams through whole', async (t) => {
  const up = await recordingUpstream(t)
  const g = await startGateway(t, meshConfig({ svc: [up] }, [limited()]))
  const outcome = await rawExchange({ port: Number(new URL(g.url).port), method: 'POST', target: '/upload', headers: [['host', 'gw.test']], body: { kind: 'chunked', body: Buffer.alloc(LIMIT, 'b'), chunks: 10 }, mode: 'normal' })
  const res = parseResponse(outcome.received, 'POST')
  assert.equal(res.status, 200)
  assert.equal(res.body.toString(), `got ${LIMIT}`)
  assert.deepEqual(up.receipts, [{ bytes: LIMIT, complete: true }])
})

test('body-limit: a chunked body passing the limit mid-stream gets 413, the upstream\'s request is aborted, and the connection closes', async (t) => {
  const up = await recordingUpstream(t)
  const g = await startGateway(t, meshConfig({ svc: [up] }, [limited()]))
  const client = new RawClient(Number(new URL(g.url).port))
  client.write(chunkedHead('over-chunked'))
  client.chunk(Buffer.alloc(600, 'c'))
  // The upstream has the request (and part of its body) before the limit is passed.
  await up.arrivals(1)
  await eventually(() => up.receipts[0]!.bytes === 600 ? true : undefined, 'the first 600 bytes at the upstream', 5000)
  client.chunk(Buffer.alloc(600, 'd'))
  await client.closed
  const res: ParsedResponse = parseResponse(client.received, 'POST')
  assert.equal(res.status, 413)
  assert.equal(header(res, 'connection'), 'close')
  assert.equal(JSON.parse(res.body.toString()).error.code, 'FASTMESH_ERR_BODY_TOO_LARGE')
  await eventually(() => up.receipts[0]!.complete === false ? true : undefined, 'the upstream\'s request aborted', 5000)
  assert.ok(up.receipts[0]!.bytes <= LIMIT, `no byte past the limit reached the upstream (${up.receipts[0]!.bytes})`)
  const line = await accessLine(g, 'over-chunked')
  assert.equal(line.status, 413)
  assert.equal(line.error, 'FASTMESH_ERR_BODY_TOO_LARGE')
  assert.equal((await g.request('/upload', { method: 'POST', body: 'small' })).status, 200, 'a new connection is served')
})

test('body-limit: a chunked body passing the limit after the upstream\'s answer began cuts the exchange', async (t) => {
  const up = await recordingUpstream(t, { answerAtOnce: true })
  const g = await startGateway(t, meshConfig({ svc: [up] }, [limited()]))
  const client = new RawClient(Number(new URL(g.url).port))
  client.write(chunkedHead('over-late'))
  client.chunk(Buffer.alloc(600, 'c'))
  await client.headersReceived()
  client.chunk(Buffer.alloc(600, 'd'))
  await client.closed
  const res = parseResponse(client.received, 'POST')
  assert.equal(res.status, 200, 'the upstream\'s answer had begun')
  assert.equal(res.complete, false, 'and is cut, so the client sees a broken answer, not a short one')
  await eventually(() => up.receipts[0]!.complete === false ? true : undefined, 'the upstream\'s request aborted', 5000)
  const line = await accessLine(g, 'over-late')
  assert.equal(line.error, 'FASTMESH_ERR_BODY_TOO_LARGE')
})

test('body-limit with retries and buffered bodies: a body at the limit is re-sent whole after a 503; one over it reaches no endpoint', async (t) => {
  const sick = await recordingUpstream(t, { status: 503 })
  const well = await recordingUpstream(t)
  const g = await startGateway(t, meshConfig({ svc: [sick, well] }, [limited({ retries: { attempts: 3, retryOn: ['gateway-error'], bufferBodyBytes: 4096 } })]))
  const res = await g.request('/upload', { method: 'PUT', body: Buffer.alloc(LIMIT, 'e') })
  assert.equal(res.status, 200, res.text)
  assert.deepEqual(sick.receipts, [{ bytes: LIMIT, complete: true }])
  assert.deepEqual(well.receipts, [{ bytes: LIMIT, complete: true }], 'the retry carried the whole body')
  const over = await g.request('/upload', { method: 'PUT', body: Buffer.alloc(LIMIT + 1, 'e') })
  assertErrorResponse(over, 413, 'FASTMESH_ERR_BODY_TOO_LARGE')
  assert.equal(sick.receipts.length + well.receipts.length, 2, 'no endpoint saw the body over the limit')
})

test('body-limit: tries aborted for a body over the limit say nothing against the endpoint (no ejection)', async (t) => {
  const a = await recordingUpstream(t)
  const b = await recordingUpstream(t)
  const doc = meshConfig({ svc: [a, b] }, [limited({ retries: { attempts: 3, retryOn: ['gateway-error', 'reset'] } })])
  doc.services = { svc: { outlierDetection: { consecutiveGatewayErrors: 1 } } }
  const g = await startGateway(t, doc)
  const port = Number(new URL(g.url).port)
  for (let i = 0; i < 6; i++) {
    const client = new RawClient(port)
    client.write(chunkedHead(`abandoned-${i}`))
    client.chunk(Buffer.alloc(600, 'c'))
    await eventually(() => a.receipts.length + b.receipts.length > i ? true : undefined, 'the request at an endpoint', 5000)
    client.chunk(Buffer.alloc(600, 'd'))
    await client.closed
    assert.equal(parseResponse(client.received, 'POST').status, 413)
  }
  assert.equal(a.receipts.length + b.receipts.length, 6, 'one try each: an over-limit body is never retried')
  const services = (await g.admin('GET', '/services/svc')).json<{ endpoints: Array<{ state: string }> }>()
  assert.deepEqual(services.endpoints.map((e) => e.state).filter((s) => s === 'ejected'), [], JSON.stringify(services.endpoints))
  // Both still serve.
  for (let i = 0; i < 2; i++) assert.equal((await g.request('/upload', { method: 'POST', body: 'ok' })).status, 200)
})

test('body-limit: a route without it takes any body; maxBytes 0 refuses every body', async (t) => {
  const up = await recordingUpstream(t)
  const g = await startGateway(t, meshConfig({ svc: [up] }, [
    { name: 'open', match: { path: { prefix: '/open' } }, destination: { service: 'svc' } },
    { name: 'none', match: { path: { prefix: '/none' } }, destination: { service: 'svc' }, plugins: [{ name: 'body-limit', options: { maxBytes: 0 } }] }
  ]))
  assert.equal((await g.request('/open', { method: 'POST', body: Buffer.alloc(LIMIT * 10) })).status, 200)
  assertErrorResponse(await g.request('/none', { method: 'POST', body: 'x' }), 413, 'FASTMESH_ERR_BODY_TOO_LARGE')
  assert.equal((await g.request('/none')).status, 200, 'no body is within any limit')
})

test('body-limit with Expect: 100-continue: a declared length over the limit gets 413 without an invitation to send the body; one within it gets 100 Continue, then its answer', async (t) => {
  const up = await recordingUpstream(t)
  const g = await startGateway(t, meshConfig({ svc: [up] }, [limited()]))
  const port = Number(new URL(g.url).port)
  const over = new RawClient(port)
  over.write(`POST /upload HTTP/1.1\r\nhost: gw.test\r\ncontent-length: ${LIMIT + 1}\r\nexpect: 100-continue\r\n\r\n`)
  await over.closed
  const refused = over.received.toString('latin1')
  assert.match(refused, /^HTTP\/1\.1 413 /, 'the final answer comes first: no "100 Continue" asked for a body that is refused anyway')
  assert.doesNotMatch(refused, /100 Continue/)
  assert.equal(up.receipts.length, 0)

  const within = new RawClient(port)
  within.write(`POST /upload HTTP/1.1\r\nhost: gw.test\r\ncontent-length: ${LIMIT}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n`)
  await eventually(() => within.received.toString('latin1').startsWith('HTTP/1.1 100 Continue\r\n\r\n') ? true : undefined, 'the 100 Continue', 5000)
  within.write(Buffer.alloc(LIMIT, 'f'))
  await within.closed
  const res = parseResponse(within.received.subarray('HTTP/1.1 100 Continue\r\n\r\n'.length), 'POST')
  assert.equal(res.status, 200)
  assert.equal(res.body.toString(), `got ${LIMIT}`)
})

test('Expect: 100-continue on a route without plugins (the fast path) still gets its 100 Continue', async (t) => {
  const up = await recordingUpstream(t)
  const g = await startGateway(t, meshConfig({ svc: [up] }, [{ name: 'open', destination: { service: 'svc' } }]))
  const client = new RawClient(Number(new URL(g.url).port))
  client.write('PUT /any HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 5\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n')
  await eventually(() => client.received.toString('latin1').startsWith('HTTP/1.1 100 Continue\r\n\r\n') ? true : undefined, 'the 100 Continue', 5000)
  client.write('hello')
  await client.closed
  assert.equal(parseResponse(client.received.subarray('HTTP/1.1 100 Continue\r\n\r\n'.length), 'PUT').body.toString(), 'got 5')
})
