// The endpoint layer alone: `forward` (src/upstream/proxy.ts) on a real undici Pool to a real
// upstream, called from a bare node:http front server with a recording ForwardObserver in
// place of the route layer. No gateway, router, policy chain or balancer takes part.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import { forward, tryTimeoutError, type ForwardObserver, type ForwardSettings, type UpstreamCall } from '../../src/upstream/proxy.js'
import type { EndpointTarget } from '../../src/upstream/endpoint-pool.js'
import type { FastmeshError } from '../../src/errors.js'
import { eventually } from '../helpers/poll.js'
import { freePort } from '../helpers/ports.js'
import { startHeldUpstream, startUpstream, type Upstream } from '../helpers/upstreams.js'
import { endpointTarget, send } from '../helpers/layers.js'

const SETTINGS: ForwardSettings = { bodyTimeoutMs: 10_000, rewriteHost: undefined, trustForwarded: false, proto: 'http' }

/** The front server answers a failed forward itself with this status, to show it still could. */
const FRONT_STATUS = 599

type Report =
  | { readonly kind: 'failed', readonly requestId: string, readonly err: FastmeshError, readonly headersSent: boolean }
  | { readonly kind: 'ended', readonly requestId: string, readonly status: number, readonly error: string | undefined }

interface Front extends Upstream {
  readonly origin: string
  /** What the observer was told, in order. */
  readonly reports: Report[]
  /** Request ids whose front response has closed (finished or cut). */
  readonly closed: string[]
}

/** A node:http server whose handler is `forward` to `target`, reporting to a recording observer. */
async function startFront (t: TestContext, target: EndpointTarget, settings: ForwardSettings = SETTINGS, headersTimeoutMs = 10_000): Promise<Front> {
  const reports: Report[] = []
  const closed: string[] = []
  let n = 0
  const observer: ForwardObserver<UpstreamCall & { res: ServerResponse }> = {
    responded: () => true,
    failed (call, err) {
      reports.push({ kind: 'failed', requestId: call.requestId, err, headersSent: call.res.headersSent })
      call.res.writeHead(FRONT_STATUS, { 'content-type': 'text/plain' }).end('answered by the front server')
    },
    ended (call, status, error) {
      reports.push({ kind: 'ended', requestId: call.requestId, status, error })
    },
    faulted (call, where, err) {
      throw new Error(`unexpected fault of ${call.requestId} at ${where}: ${String(err)}`)
    }
  }
  const up = await startUpstream(t, (req, res) => {
    const call = { requestId: `front-${++n}`, path: req.url ?? '/', editors: null, replyHeaders: null, clientCert: undefined, headersTimeoutMs, body: undefined, clientAddress: req.socket.remoteAddress ?? '', res }
    res.once('close', () => { closed.push(call.requestId) })
    const handle = forward(req, res, req.headers, target, settings, call, observer)
    // The route layer's per-try timer, as the caller owns it: abort the try when it is up.
    if (headersTimeoutMs < 10_000) setTimeout(() => { handle.abort(tryTimeoutError(headersTimeoutMs)) }, headersTimeoutMs)
  })
  return { ...up, origin: `http://127.0.0.1:${up.port}`, reports, closed }
}

/** An upstream answering with what it saw: the request headers and body, as JSON. */
async function startMirror (t: TestContext): Promise<Upstream> {
  return await startUpstream(t, (req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => {
      res.writeHead(201, 'Made', {
        'content-type': 'application/json',
        'x-upstream': 'yes',
        'x-request-id': 'upstream-own-id',
        'keep-alive': 'timeout=7, max=99',
        'proxy-authenticate': 'Basic',
        'x-nominated': 'drop me',
        connection: 'x-nominated'
      })
      // Two writes: the body is streamed, not one buffer.
      res.write(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }).slice(0, 10))
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }).slice(10))
    })
  })
}

/**
 * An upstream that sends its head and a first chunk, then holds the body open. `upstreamClosed`
 * resolves when its side of the exchange closes (cut by it or by the gateway).
 */
async function startStreaming (t: TestContext): Promise<Upstream & { cut(): void, upstreamClosed: Promise<{ finished: boolean }> }> {
  let current: ServerResponse | undefined
  let closed!: (v: { finished: boolean }) => void
  const upstreamClosed = new Promise<{ finished: boolean }>((resolve) => { closed = resolve })
  const up = await startUpstream(t, (req, res) => {
    req.resume()
    current = res
    res.once('close', () => { closed({ finished: res.writableFinished }) })
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('first chunk;')
  })
  return { ...up, upstreamClosed, cut () { current!.socket!.destroy() } }
}

/** A GET whose first body chunk is handed to `onFirstChunk`; resolves when the response closes. */
async function download (origin: string, onFirstChunk: (req: ReturnType<typeof httpRequest>) => void): Promise<{ status: number, text: string, complete: boolean }> {
  const { hostname, port } = new URL(origin)
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path: '/download', agent: false }, (res: IncomingMessage) => {
      let text = ''
      let first = true
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        text += c
        if (first) { first = false; onFirstChunk(req) }
      })
      res.on('error', () => {})
      res.on('close', () => { resolve({ status: res.statusCode ?? 0, text, complete: res.complete }) })
    })
    req.on('error', (err: Error & { code?: string }) => { if (err.code !== 'ECONNRESET') reject(err) })
    req.end()
  })
}

test('forward streams the upstream status, headers and body back, with x-request-id from the call', async (t) => {
  const upstream = await startMirror(t)
  const front = await startFront(t, endpointTarget(t, upstream.port))
  const res = await send(front.origin, '/orders/7?x=1', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello upstream' })
  assert.equal(res.status, 201)
  assert.equal(res.headers['x-upstream'], 'yes')
  assert.equal(res.headers['x-request-id'], 'front-1', 'the call\'s request id replaces the upstream\'s')
  const seen = res.json<{ method: string, url: string, headers: Record<string, string>, body: string }>()
  assert.equal(seen.method, 'POST')
  assert.equal(seen.url, '/orders/7?x=1')
  assert.equal(seen.body, 'hello upstream')
  assert.equal(seen.headers['x-request-id'], 'front-1')
})

test('forward drops hop-by-hop and connection-nominated headers in both directions', async (t) => {
  const upstream = await startMirror(t)
  const front = await startFront(t, endpointTarget(t, upstream.port))
  const res = await send(front.origin, '/', {
    headers: { connection: 'x-client-hop', 'x-client-hop': 'drop me', te: 'trailers', 'proxy-authorization': 'Basic x', 'x-kept': 'kept', 'x-request-id': 'forged', 'x-forwarded-for': '6.6.6.6' }
  })
  assert.equal(res.status, 201)
  const seen = res.json<{ headers: Record<string, string | undefined> }>().headers
  assert.equal(seen['x-kept'], 'kept')
  for (const name of ['x-client-hop', 'te', 'proxy-authorization']) assert.equal(seen[name], undefined, `upstream saw ${name}`)
  assert.equal(seen['x-request-id'], 'front-1', 'a client-supplied request id never travels')
  assert.equal(seen['x-forwarded-for'], '127.0.0.1', 'an untrusted client\'s x-forwarded-for is replaced')
  for (const name of ['proxy-authenticate', 'x-nominated']) assert.equal(res.headers[name], undefined, `client got ${name}`)
  // The front server may announce its own keep-alive; the upstream's never passes through.
  assert.notEqual(res.headers['keep-alive'], 'timeout=7, max=99', 'client got the upstream\'s keep-alive')
  assert.notEqual(res.headers.connection, 'x-nominated')
})

test('a completed forward reports ended(call, status, undefined) exactly once, and never failed', async (t) => {
  const upstream = await startMirror(t)
  const front = await startFront(t, endpointTarget(t, upstream.port))
  const res = await send(front.origin, '/')
  assert.equal(res.status, 201)
  // The front response's close comes after the end: it must not count as a client leaving.
  await eventually(() => front.closed.includes('front-1'), 'the front response to close')
  assert.deepEqual(front.reports, [{ kind: 'ended', requestId: 'front-1', status: 201, error: undefined }])
})

test('a 200 upstream answer is reported as ended(call, 200, undefined)', async (t) => {
  const upstream = await startUpstream(t, (_req, res) => { res.end('ok') })
  const front = await startFront(t, endpointTarget(t, upstream.port))
  const res = await send(front.origin, '/')
  assert.equal(res.status, 200)
  assert.equal(res.text, 'ok')
  await eventually(() => front.closed.includes('front-1'), 'the front response to close')
  assert.deepEqual(front.reports, [{ kind: 'ended', requestId: 'front-1', status: 200, error: undefined }])
})

test('connection refused: failed(call, FASTMESH_ERR_UPSTREAM_FAILURE) and nothing written to the client by the endpoint layer', async (t) => {
  const nobody = await freePort()
  const front = await startFront(t, endpointTarget(t, nobody))
  const res = await send(front.origin, '/')
  assert.equal(res.status, FRONT_STATUS, 'the front server could still answer with its own status')
  assert.equal(res.text, 'answered by the front server')
  assert.equal(res.headers['x-request-id'], undefined, 'no header of the endpoint layer reached the client')
  assert.equal(front.reports.length, 1, JSON.stringify(front.reports))
  const report = front.reports[0]!
  assert.equal(report.kind, 'failed')
  if (report.kind !== 'failed') return
  assert.equal(report.headersSent, false, 'headers were not sent when failed was called')
  assert.equal(report.err.code, 'FASTMESH_ERR_UPSTREAM_FAILURE')
  assert.equal(report.err.statusCode, 502)
  assert.match(report.err.message, new RegExp(`127\\.0\\.0\\.1:${nobody}`))
  assert.equal((report.err.cause as { code?: string }).code, 'ECONNREFUSED', 'the cause is kept')
  await eventually(() => front.closed.includes('front-1'), 'the front response to close')
  assert.equal(front.reports.length, 1, 'no ended after failed')
})

test('a try its caller aborts as timed out (TryHandle.abort): failed(call, FASTMESH_ERR_UPSTREAM_TIMEOUT)', async (t) => {
  const held = await startHeldUpstream(t)
  const front = await startFront(t, endpointTarget(t, held.port), SETTINGS, 200)
  const res = await send(front.origin, '/')
  assert.equal(res.status, FRONT_STATUS)
  assert.equal(held.arrived, 1, 'the request reached the upstream')
  const report = front.reports[0]!
  assert.equal(report.kind, 'failed')
  if (report.kind !== 'failed') return
  assert.equal(report.headersSent, false)
  assert.equal(report.err.code, 'FASTMESH_ERR_UPSTREAM_TIMEOUT')
  assert.equal(report.err.statusCode, 504)
  assert.match(report.err.message, /200 ms/)
  assert.equal(front.reports.length, 1)
})

test('an upstream that dies mid-body: the client response is cut and ended reports the status with an error code', async (t) => {
  const upstream = await startStreaming(t)
  const front = await startFront(t, endpointTarget(t, upstream.port))
  const got = await download(front.origin, () => { upstream.cut() })
  assert.equal(got.status, 200)
  assert.equal(got.text, 'first chunk;')
  assert.equal(got.complete, false, 'the truncation shows: the response did not complete')
  await eventually(() => front.reports.length > 0 && front.closed.includes('front-1'), 'the end to be reported')
  assert.deepEqual(front.reports, [{ kind: 'ended', requestId: 'front-1', status: 200, error: 'FASTMESH_ERR_UPSTREAM_FAILURE' }])
})

test('a client that disconnects mid-download: ended(call, 499) and the upstream request is aborted', async (t) => {
  const upstream = await startStreaming(t)
  const front = await startFront(t, endpointTarget(t, upstream.port))
  const got = await download(front.origin, (req) => { req.destroy() })
  assert.equal(got.complete, false)
  const { finished } = await upstream.upstreamClosed
  assert.equal(finished, false, 'the upstream response was cut, not completed')
  await eventually(() => front.reports.length > 0, 'the end to be reported')
  assert.deepEqual(front.reports, [{ kind: 'ended', requestId: 'front-1', status: 499, error: 'client closed the connection' }])
})

test('a client gone before the upstream answered: ended(call, 499) once, never failed', async (t) => {
  const held = await startHeldUpstream(t)
  const front = await startFront(t, endpointTarget(t, held.port))
  const { hostname, port } = new URL(front.origin)
  const req = httpRequest({ hostname, port, path: '/', agent: false })
  req.on('error', () => {})
  req.end()
  await held.waitForArrivals(1)
  req.destroy()
  await eventually(() => front.reports.length > 0, 'the end to be reported')
  assert.deepEqual(front.reports, [{ kind: 'ended', requestId: 'front-1', status: 499, error: 'client closed the connection' }])
  await eventually(() => front.closed.includes('front-1'), 'the front response to close')
  assert.equal(front.reports.length, 1)
})
