// OpenTelemetry tracing at the edge, checked on the spans a real OTLP/HTTP receiver (started
// here, on loopback) gets from the gateway's exporter: server and client spans with their
// parent links and attributes, retries and mirrored copies as their own spans, the caller's
// W3C or B3 context continued and sent upstream, upgrades traced, trace ids in the access log,
// parent-based sampling, reloads, and requests that do not notice a collector that refuses or
// hangs.
import test from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { IncomingHttpHeaders } from 'node:http'
import WebSocket, { WebSocketServer } from 'ws'
import { defer, eventually, startGateway, type TestGateway } from '../helpers/gateway.js'
import { meshConfig, startEcho, startUpstream, type EchoUpstream } from '../helpers/upstreams.js'
import { freePort } from '../helpers/ports.js'
import { SPAN_KIND, STATUS_CODE, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../helpers/otlp.js'

const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER_SPAN = '00f067aa0ba902b7'

/** `telemetry` with tracing on, exporting to `receiver`; batches go out within about a second. */
function tracingOn (receiver: OtlpReceiver | string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const endpoint = typeof receiver === 'string' ? receiver : receiver.endpoint
  return { telemetry: { tracing: { enabled: true, otlp: { endpoint }, ...extra } } }
}

/** The traceparent an upstream received, split: [version, trace id, parent id, flags]. */
function traceparentOf (echo: EchoUpstream, i: number): string[] {
  const tp = echo.seen[i]!.headers.traceparent
  assert.equal(typeof tp, 'string', 'the upstream got a traceparent')
  const parts = (tp as string).split('-')
  assert.equal(parts.length, 4)
  return parts
}

const servers = (spans: readonly ReceivedSpan[]): ReceivedSpan[] => spans.filter((s) => s.kind === SPAN_KIND.server)
const clients = (spans: readonly ReceivedSpan[]): ReceivedSpan[] => spans.filter((s) => s.kind === SPAN_KIND.client)

async function edgeWithEcho (t: test.TestContext, receiver: OtlpReceiver, tracing: Record<string, unknown> = {}, routeExtra: Record<string, unknown> = {}): Promise<{ g: TestGateway, echo: EchoUpstream }> {
  const echo = await startEcho(t, 'api')
  const g = await startGateway(t, meshConfig({ api: [echo] }, [{ name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'api' }, ...routeExtra }], {
    gateway: { name: 'edge-1', mode: 'edge' },
    ...tracingOn(receiver, tracing)
  }))
  return { g, echo }
}

test('a request makes a server span and a client span for its try, with HTTP and fastmesh attributes; the upstream gets the client span as parent', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const { g, echo } = await edgeWithEcho(t, receiver)
  const res = await g.request('/api/items?token=secret', { headers: { 'user-agent': 'trace-test/1' } })
  assert.equal(res.status, 200)
  const spans = await receiver.waitFor((s) => s.length >= 2, 'a server and a client span')
  assert.equal(spans.length, 2)
  const [server] = servers(spans)
  const [client] = clients(spans)
  assert.ok(server !== undefined && client !== undefined)
  assert.equal(server.name, 'GET api')
  assert.equal(server.parentSpanId, '', 'a new trace: the server span is its root')
  assert.equal(client.name, 'GET api')
  assert.equal(client.traceId, server.traceId)
  assert.equal(client.parentSpanId, server.spanId)
  assert.ok(client.startNs >= server.startNs && client.endNs <= server.endNs, 'the try lies within the exchange')

  assert.equal(server.attributes['http.request.method'], 'GET')
  assert.equal(server.attributes['url.path'], '/api/items', 'the path without its query')
  assert.equal(server.attributes['url.scheme'], 'http')
  assert.equal(server.attributes['server.address'], '127.0.0.1')
  assert.equal(server.attributes['client.address'], '127.0.0.1')
  assert.equal(server.attributes['user_agent.original'], 'trace-test/1')
  assert.equal(server.attributes['http.response.status_code'], 200)
  assert.equal(server.attributes['fastmesh.route'], 'api')
  assert.equal(server.attributes['fastmesh.destination'], 'api')
  assert.equal(server.attributes['fastmesh.endpoint'], `127.0.0.1:${echo.port}`)
  assert.equal(server.attributes['fastmesh.direction'], 'edge')
  assert.equal(server.attributes['fastmesh.request_id'], echo.seen[0]!.headers['x-request-id'])
  assert.equal(server.statusCode, STATUS_CODE.unset)
  assert.ok(!JSON.stringify(spans.map((s) => s.attributes)).includes('secret'), 'the query string is not recorded')

  assert.equal(client.attributes['http.request.method'], 'GET')
  assert.equal(client.attributes['network.peer.address'], '127.0.0.1')
  assert.equal(client.attributes['network.peer.port'], echo.port)
  assert.equal(client.attributes['http.response.status_code'], 200)
  assert.equal(client.attributes['fastmesh.try.outcome'], 'response')
  assert.equal(client.attributes['http.request.resend_count'], undefined, 'the first try is no resend')

  assert.equal(server.resource['service.name'], 'fastmesh-edge-1')
  assert.equal(server.resource['fastmesh.gateway.role'], 'edge')
  assert.equal(typeof server.resource['service.instance.id'], 'string')

  const [version, traceId, parentId, flags] = traceparentOf(echo, 0)
  assert.deepEqual([version, traceId, parentId, flags], ['00', server.traceId, client.spanId, '01'])
})

test('the access line of a sampled request carries its trace id and the gateway\'s span id; an unsampled one carries neither (its request id ties its lines)', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const { g, echo } = await edgeWithEcho(t, receiver)
  await g.request('/api/x', { headers: { traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01` } })
  await g.request('/api/y', { headers: { traceparent: `00-${'2'.repeat(32)}-${CALLER_SPAN}-00` } })
  const spans = await receiver.waitFor((s) => servers(s).length >= 1, 'the sampled server span')
  const access = await eventually(() => {
    const lines = g.logs.entries().filter((e) => e.log === 'access')
    return lines.length >= 2 ? lines : undefined
  }, 'two access lines')
  const [server] = servers(spans)
  assert.equal(access[0]!.traceId, CALLER_TRACE)
  assert.equal(access[0]!.spanId, server!.spanId)
  // The unsampled request: no span exported, so no ids that lead nowhere (they cost every line ~70 bytes).
  assert.equal(access[1]!.traceId, undefined)
  assert.equal(access[1]!.spanId, undefined)
  assert.equal(typeof access[1]!.requestId, 'string')
  assert.equal(traceparentOf(echo, 1)[1], '2'.repeat(32), 'its context still goes upstream')
})

test('retries are client spans of their own under the one server span, with http.request.resend_count', async (t) => {
  const receiver = await startOtlpReceiver(t)
  let calls = 0
  const flaky = await startUpstream(t, (_req, res) => { calls++; res.writeHead(calls === 1 ? 503 : 200).end(String(calls)) })
  const g = await startGateway(t, meshConfig({ api: [flaky] }, [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 2, retryOn: ['5xx'] } }], tracingOn(receiver)))
  assert.equal((await g.request('/x')).status, 200)
  const spans = await receiver.waitFor((s) => s.length >= 3, 'a server span and two client spans')
  const [server] = servers(spans)
  const tries = clients(spans).sort((a, b) => Number(a.startNs - b.startNs))
  assert.equal(tries.length, 2)
  for (const c of tries) {
    assert.equal(c.traceId, server!.traceId)
    assert.equal(c.parentSpanId, server!.spanId)
  }
  assert.notEqual(tries[0]!.spanId, tries[1]!.spanId)
  assert.equal(tries[0]!.attributes['http.response.status_code'], 503)
  assert.equal(tries[0]!.statusCode, STATUS_CODE.error)
  assert.equal(tries[1]!.attributes['http.request.resend_count'], 1)
  assert.equal(tries[1]!.attributes['http.response.status_code'], 200)
  assert.equal(server!.attributes['fastmesh.attempts'], 2)
  assert.equal(server!.statusCode, STATUS_CODE.unset)
})

test('a try that cannot connect is an error client span with error.type; the gateway\'s 502 makes the server span an error', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const closed = await freePort()
  const g = await startGateway(t, meshConfig({ api: [closed] }, [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 1 } }], tracingOn(receiver)))
  const res = await g.request('/x')
  assert.ok(res.status >= 500, `status ${res.status}`)
  const spans = await receiver.waitFor((s) => servers(s).length === 1, 'the server span')
  const [server] = servers(spans)
  assert.equal(server!.statusCode, STATUS_CODE.error)
  assert.match(String(server!.attributes['error.type']), /^FASTMESH_ERR_/)
  const failed = clients(spans)
  assert.ok(failed.length >= 1)
  assert.equal(failed[0]!.statusCode, STATUS_CODE.error)
  assert.equal(failed[0]!.attributes['fastmesh.try.outcome'], 'connect_error')
  assert.match(String(failed[0]!.attributes['error.type']), /ECONNREFUSED/)
})

test('a caller\'s traceparent is continued: same trace id, the server span\'s parent is the caller\'s span, tracestate goes on', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const { g, echo } = await edgeWithEcho(t, receiver)
  await g.request('/api/x', { headers: { traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01`, tracestate: 'vendor=abc' } })
  const spans = await receiver.waitFor((s) => s.length >= 2, 'two spans')
  const [server] = servers(spans)
  const [client] = clients(spans)
  assert.equal(server!.traceId, CALLER_TRACE)
  assert.equal(server!.parentSpanId, CALLER_SPAN)
  assert.equal(client!.traceId, CALLER_TRACE)
  const [, traceId, parentId, flags] = traceparentOf(echo, 0)
  assert.deepEqual([traceId, parentId, flags], [CALLER_TRACE, client!.spanId, '01'], 'the caller\'s traceparent is replaced, not passed on')
  assert.equal(echo.seen[0]!.headers.tracestate, 'vendor=abc')
  assert.equal(echo.seen[0]!.headers.b3, undefined, 'a W3C caller gets no B3 headers upstream')
})

test('a B3 single-header caller is continued, and its context goes upstream as b3 and traceparent', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const { g, echo } = await edgeWithEcho(t, receiver)
  await g.request('/api/x', { headers: { b3: `${CALLER_TRACE}-${CALLER_SPAN}-1` } })
  const spans = await receiver.waitFor((s) => s.length >= 2, 'two spans')
  const [server] = servers(spans)
  const [client] = clients(spans)
  assert.equal(server!.traceId, CALLER_TRACE)
  assert.equal(server!.parentSpanId, CALLER_SPAN)
  assert.equal(echo.seen[0]!.headers.b3, `${CALLER_TRACE}-${client!.spanId}-1`)
  assert.equal(traceparentOf(echo, 0)[2], client!.spanId)
  assert.equal(echo.seen[0]!.headers['x-b3-traceid'], undefined)
})

test('a B3 multi-header caller is continued, and its context goes upstream as x-b3-* and traceparent', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const { g, echo } = await edgeWithEcho(t, receiver)
  await g.request('/api/x', { headers: { 'x-b3-traceid': CALLER_TRACE, 'x-b3-spanid': CALLER_SPAN, 'x-b3-sampled': '1' } })
  const spans = await receiver.waitFor((s) => s.length >= 2, 'two spans')
  const [server] = servers(spans)
  const [client] = clients(spans)
  assert.equal(server!.traceId, CALLER_TRACE)
  assert.equal(server!.parentSpanId, CALLER_SPAN)
  const up = echo.seen[0]!.headers
  assert.equal(up['x-b3-traceid'], CALLER_TRACE)
  assert.equal(up['x-b3-spanid'], client!.spanId)
  assert.equal(up['x-b3-sampled'], '1')
  assert.equal(up.b3, undefined)
})

test('sampling is parent-based: ratio 0 records a sampled caller\'s trace, and exports nothing for new traces while still sending traceparent (flags 00)', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const { g, echo } = await edgeWithEcho(t, receiver, { sampler: { ratio: 0 } })
  for (let i = 0; i < 5; i++) assert.equal((await g.request('/api/new')).status, 200)
  // An unsampled caller is followed too.
  await g.request('/api/x', { headers: { traceparent: `00-${'1'.repeat(32)}-${CALLER_SPAN}-00` } })
  await g.request('/api/x', { headers: { traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01` } })
  // Batches go out in order: once the sampled caller's spans arrived, the others would have too.
  const spans = await receiver.waitFor((s) => s.length >= 2, 'the sampled caller\'s spans')
  await new Promise((resolve) => setTimeout(resolve, 1500))
  assert.equal(spans.length, 2, 'only the sampled caller\'s trace is exported')
  assert.ok(spans.every((s) => s.traceId === CALLER_TRACE))
  const unsampled = traceparentOf(echo, 0)
  assert.equal(unsampled[3], '00', 'a new trace that is not sampled says so upstream')
  assert.match(unsampled[1]!, /^[0-9a-f]{32}$/)
  assert.notEqual(traceparentOf(echo, 1)[1], unsampled[1], 'each request is its own trace')
  assert.deepEqual(traceparentOf(echo, 5).slice(1, 2).concat(traceparentOf(echo, 5)[3]!), ['1'.repeat(32), '00'])
})

test('a mirrored copy is a client span of its own, marked as a mirror, and its upstream gets its own traceparent', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const echo = await startEcho(t, 'api')
  const shadow = await startEcho(t, 'shadow')
  const g = await startGateway(t, meshConfig({ api: [echo], shadow: [shadow] }, [
    { name: 'api', destination: { service: 'api' }, mirror: { service: 'shadow' } }
  ], tracingOn(receiver)))
  assert.equal((await g.request('/m')).status, 200)
  const spans = await receiver.waitFor((s) => clients(s).length >= 2 && servers(s).length === 1, 'the server span, the try and the mirrored copy')
  const [server] = servers(spans)
  const copy = clients(spans).find((s) => s.attributes['fastmesh.mirror'] === true)
  const primary = clients(spans).find((s) => s.attributes['fastmesh.mirror'] === undefined)
  assert.ok(copy !== undefined && primary !== undefined)
  assert.equal(copy.parentSpanId, server!.spanId)
  assert.equal(copy.attributes['fastmesh.destination'], 'shadow')
  assert.equal(copy.name, 'GET shadow')
  assert.equal(traceparentOf(shadow, 0)[2], copy.spanId)
  assert.equal(traceparentOf(echo, 0)[2], primary.spanId)
})

test('a WebSocket upgrade is traced: a client span with status 101, its context sent with the upgrade request', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const up = await startUpstream(t, (_req, res) => { res.writeHead(426).end() })
  const wss = new WebSocketServer({ server: up.server })
  const upgrades: IncomingHttpHeaders[] = []
  wss.on('connection', (socket, req) => { upgrades.push(req.headers); socket.send('hi') })
  defer(t, async () => {
    for (const c of wss.clients) c.terminate()
    await new Promise<void>((resolve) => { wss.close(() => { resolve() }) })
  })
  const g = await startGateway(t, meshConfig({ ws: [up.port] }, [{ name: 'ws', destination: { service: 'ws' } }], tracingOn(receiver)))
  const ws = new WebSocket(`${g.url.replace('http:', 'ws:')}/chat`)
  defer(t, () => { ws.on('error', () => {}); ws.terminate() })
  const [greeting] = await once(ws, 'message') as [Buffer]
  assert.equal(String(greeting), 'hi')
  ws.close()
  const spans = await receiver.waitFor((s) => servers(s).length === 1 && clients(s).length === 1, 'the upgrade\'s spans')
  const [client] = clients(spans)
  assert.equal(client!.attributes['http.response.status_code'], 101)
  assert.equal(client!.parentSpanId, servers(spans)[0]!.spanId)
  assert.equal(String(upgrades[0]!.traceparent).split('-')[2], client!.spanId)
})

test('a request answered before routing (no route) still has its server span', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const { g } = await edgeWithEcho(t, receiver)
  assert.equal((await g.request('/nowhere', { headers: { traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01` } })).status, 404)
  const spans = await receiver.waitFor((s) => s.length >= 1, 'the server span')
  assert.equal(spans.length, 1)
  assert.equal(spans[0]!.name, 'GET')
  assert.equal(spans[0]!.traceId, CALLER_TRACE)
  assert.equal(spans[0]!.attributes['http.response.status_code'], 404)
  assert.equal(spans[0]!.attributes['fastmesh.error'], 'FASTMESH_ERR_NO_ROUTE')
  assert.equal(spans[0]!.statusCode, STATUS_CODE.unset, 'a 4xx is not a server error')
})

test('export headers reach the collector, and the admin API shows them redacted', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const { g } = await edgeWithEcho(t, receiver, { otlp: { endpoint: receiver.endpoint + '/', headers: { 'x-honeycomb-team': 'team-key-123' } } })
  await g.request('/api/x')
  await receiver.waitFor((s) => s.length >= 2, 'two spans')
  assert.equal(receiver.requests[0]!.path, '/v1/traces', 'a trailing slash on the endpoint is not doubled')
  assert.equal(receiver.requests[0]!.headers['x-honeycomb-team'], 'team-key-123')
  const config = (await g.admin('GET', '/config')).text
  assert.ok(!config.includes('team-key-123'), 'the header value is not shown')
  assert.match(config, /"x-honeycomb-team":"<redacted>"/)
})

test('tracing off: no spans, and the client\'s trace headers pass through untouched', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const echo = await startEcho(t, 'api')
  const g = await startGateway(t, meshConfig({ api: [echo] }, [{ name: 'api', destination: { service: 'api' } }], { telemetry: { tracing: { enabled: false, otlp: { endpoint: receiver.endpoint } } } }))
  const tp = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`
  await g.request('/x', { headers: { traceparent: tp, b3: 'x' } })
  assert.equal(echo.seen[0]!.headers.traceparent, tp)
  assert.equal(echo.seen[0]!.headers.b3, 'x')
  assert.equal(g.gateway.version!.policies.map((p) => p.name).includes('tracing'), false, 'the policy is absent')
  const access = await eventually(() => g.logs.entries().find((e) => e.log === 'access'), 'the access line')
  assert.equal(access.traceId, undefined)
  await new Promise((resolve) => setTimeout(resolve, 1500))
  assert.equal(receiver.requests.length, 0)
})

test('a reload that turns tracing on starts exporting; one that moves the endpoint sends later spans to the new collector', async (t) => {
  const first = await startOtlpReceiver(t)
  const second = await startOtlpReceiver(t)
  const echo = await startEcho(t, 'api')
  const doc = (tracing: Record<string, unknown>): Record<string, unknown> => meshConfig({ api: [echo] }, [{ name: 'api', destination: { service: 'api' } }], { telemetry: { tracing } })
  const g = await startGateway(t, doc({ enabled: false }))
  await g.request('/x')
  await g.writeConfig(doc({ enabled: true, otlp: { endpoint: first.endpoint } }))
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  await g.request('/x')
  await first.waitFor((s) => s.length >= 2, 'spans at the first collector')
  await g.writeConfig(doc({ enabled: true, otlp: { endpoint: second.endpoint } }))
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  await g.request('/x')
  await second.waitFor((s) => s.length >= 2, 'spans at the second collector')
  assert.equal(first.spans.length, 2, 'the first collector got only the request made while it was configured')
})

test('a collector that refuses connections does not touch requests', async (t) => {
  const closed = await freePort()
  const echo = await startEcho(t, 'api')
  const g = await startGateway(t, meshConfig({ api: [echo] }, [{ name: 'api', destination: { service: 'api' } }], tracingOn(`http://127.0.0.1:${closed}`, { otlp: { endpoint: `http://127.0.0.1:${closed}`, timeout: '2s' } })))
  let slowest = 0
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < 50; i++) {
      const started = performance.now()
      assert.equal((await g.request('/x')).status, 200)
      slowest = Math.max(slowest, performance.now() - started)
    }
    // Let batches go out (and fail) between rounds.
    await new Promise((resolve) => setTimeout(resolve, 600))
  }
  // Exports retry for up to 2 s each; a request that waited on one would take that long.
  assert.ok(slowest < 1000, `slowest request ${slowest.toFixed(0)} ms`)
  const stats = g.gateway.tracing.stats(g.gateway.config.telemetry.tracing)!
  await eventually(async () => stats.failedExports >= 1 ? true : undefined, 'a failed export to be counted', 10_000)
  assert.equal(stats.exportedSpans, 0)
  // Operators see it in the metrics: spans dropped by failed exports, none exported.
  const metrics = (await g.admin('GET', '/metrics')).text
  const failed = Number(/^fastmesh_tracing_spans_total\{role="edge",result="failed"\} (\d+)$/m.exec(metrics)?.[1])
  assert.ok(failed > 0 && failed <= stats.failedSpans, `${failed} failed spans in the metrics, ${stats.failedSpans} counted`)
  assert.match(metrics, /^fastmesh_tracing_spans_total\{role="edge",result="exported"\} 0$/m)
})

test('a collector that hangs does not slow requests, and the spans held meanwhile stay within maxQueueSize', async (t) => {
  const receiver = await startOtlpReceiver(t)
  receiver.hang()
  const echo = await startEcho(t, 'api')
  const maxQueueSize = 20
  const g = await startGateway(t, meshConfig({ api: [echo] }, [{ name: 'api', destination: { service: 'api' } }], tracingOn(receiver, { maxQueueSize, otlp: { endpoint: receiver.endpoint, timeout: '60s' } })))
  let slowest = 0
  for (let i = 0; i < 200; i++) {
    const started = performance.now()
    assert.equal((await g.request('/x')).status, 200)
    slowest = Math.max(slowest, performance.now() - started)
    // The first batch goes out (and hangs) while requests go on.
    if (i === 20) await new Promise((resolve) => setTimeout(resolve, 1500))
  }
  assert.ok(receiver.heldCount >= 1, 'an export is hanging')
  assert.ok(slowest < 1000, `slowest request ${slowest.toFixed(0)} ms while the collector hangs`)
  receiver.release()
  // What was held: the hanging batch (at most maxQueueSize spans) and a full queue; 400 spans were ended.
  await receiver.waitFor((s) => s.length >= maxQueueSize, 'the held spans once the collector answers')
  await new Promise((resolve) => setTimeout(resolve, 2500))
  assert.ok(receiver.spans.length <= 2 * maxQueueSize, `${receiver.spans.length} spans exported of 400 ended: the rest were dropped, not kept`)
})

test('a ratio samples new traces at that rate: exactly the traces sent upstream as sampled are exported, whole, and no other', async (t) => {
  const receiver = await startOtlpReceiver(t)
  const { g, echo } = await edgeWithEcho(t, receiver, { sampler: { ratio: 0.5 } })
  const n = 200
  for (let i = 0; i < n; i++) assert.equal((await g.request('/api/r')).status, 200)
  const sent = echo.seen.map((_, i) => traceparentOf(echo, i))
  const sampled = new Set(sent.filter((p) => p[3] === '01').map((p) => p[1]!))
  // Binomial(200, 0.5): mean 100, sd 7.1; ±6 sd holds for any correct sampler, never for 0 or 1.
  assert.ok(sampled.size >= 57 && sampled.size <= 143, `${sampled.size} of ${n} sampled`)
  assert.equal(new Set(sent.map((p) => p[1])).size, n, 'every request is its own trace')
  await receiver.waitFor((s) => servers(s).length >= sampled.size, 'a server span per sampled trace')
  await new Promise((resolve) => setTimeout(resolve, 1500))
  assert.deepEqual(new Set(servers(receiver.spans).map((s) => s.traceId)), sampled, 'the exported server spans are exactly the sampled traces')
  assert.deepEqual(new Set(clients(receiver.spans).map((s) => s.traceId)), sampled, 'each with its client span')
  // The upstream's parent is the exported client span of its trace.
  const clientOf = new Map(clients(receiver.spans).map((s) => [s.traceId, s.spanId]))
  for (const p of sent.filter((x) => x[3] === '01')) assert.equal(p[2], clientOf.get(p[1]!))
})
