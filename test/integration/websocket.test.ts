// WebSocket upgrades through the gateway: the tunnel carries messages both ways, the
// route's plugins still run on the upgrade request (and can refuse it before any tunnel
// opens), and unroutable upgrades get 404.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway, defer, type TestGateway } from '../helpers/gateway.js'
import { startUpstream, meshConfig } from '../helpers/upstreams.js'

/** Ends a client in any state; an aborted handshake's error is expected here, not a failure. */
function closeQuietly (ws: WebSocket): void {
  ws.on('error', () => {})
  ws.terminate()
}

interface WsUpstream {
  readonly port: number
  readonly wss: WebSocketServer
  /** Headers of each upgrade request the upstream accepted. */
  readonly upgrades: Array<{ url: string, headers: IncomingHttpHeaders }>
  /** Messages the upstream received. */
  readonly received: string[]
}

/** A ws server that greets each client, then answers every message with `echo:<message>`. */
async function startWsUpstream (t: TestContext): Promise<WsUpstream> {
  const up = await startUpstream(t, (_req, res) => { res.writeHead(426).end() })
  const wss = new WebSocketServer({ server: up.server })
  const upgrades: WsUpstream['upgrades'] = []
  const received: string[] = []
  wss.on('connection', (socket, req: IncomingMessage) => {
    upgrades.push({ url: req.url ?? '', headers: req.headers })
    socket.send('welcome')
    socket.on('message', (data) => {
      const text = String(data)
      received.push(text)
      socket.send(`echo:${text}`)
    })
  })
  // Upgraded sockets are not the HTTP server's to close: end them before it closes.
  defer(t, async () => {
    for (const c of wss.clients) c.terminate()
    await new Promise<void>((resolve) => { wss.close(() => { resolve() }) })
  })
  return { port: up.port, wss, upgrades, received }
}

/** Opens a client through the gateway; resolves once open, with the 101 response's headers. */
async function connectClient (t: TestContext, g: TestGateway, path: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket, messages: AsyncIterator<string>, upgradeHeaders: IncomingHttpHeaders }> {
  const ws = new WebSocket(`${g.url.replace('http:', 'ws:')}${path}`, { headers })
  defer(t, () => { closeQuietly(ws) })
  const queue: string[] = []
  const waiting: Array<(v: string) => void> = []
  ws.on('message', (data) => {
    const text = String(data)
    const w = waiting.shift()
    if (w !== undefined) w(text)
    else queue.push(text)
  })
  let upgradeHeaders: IncomingHttpHeaders = {}
  ws.once('upgrade', (res: IncomingMessage) => { upgradeHeaders = res.headers })
  await once(ws, 'open')
  const messages: AsyncIterator<string> = {
    next: async () => {
      const v = queue.shift() ?? await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error('no WebSocket message within 10 s')) }, 10_000)
        waiting.push((m) => { clearTimeout(timer); resolve(m) })
      })
      return { value: v, done: false }
    }
  }
  return { ws, messages, upgradeHeaders }
}

test('WebSocket messages pass through the gateway both ways', async (t) => {
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{ name: 'chat', match: { path: { prefix: '/ws' } }, destination: { service: 'chat' } }]))
  const { ws, messages } = await connectClient(t, g, '/ws/room/1?user=ada')
  assert.equal((await messages.next()).value, 'welcome', 'upstream → client')
  ws.send('hello')
  assert.equal((await messages.next()).value, 'echo:hello', 'client → upstream → client')
  ws.send('x'.repeat(200_000))
  assert.equal((await messages.next()).value, `echo:${'x'.repeat(200_000)}`, 'a large message, in many frames')
  assert.deepEqual(up.received, ['hello', 'x'.repeat(200_000)])
  assert.equal(up.upgrades[0]?.url, '/ws/room/1?user=ada')
})

test('a WebSocket upgrade takes the route\'s path rewrite', async (t) => {
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{ name: 'chat', match: { path: { prefix: '/ws' } }, destination: { service: 'chat', stripPrefix: true } }]))
  const { messages } = await connectClient(t, g, '/ws/room/2')
  assert.equal((await messages.next()).value, 'welcome')
  assert.equal(up.upgrades[0]?.url, '/room/2')
})

test('a route plugin (headers) still applies to a WebSocket upgrade request', async (t) => {
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{
    name: 'chat',
    match: { path: { prefix: '/ws' } },
    destination: { service: 'chat' },
    plugins: [{ name: 'headers', options: { request: { set: { 'x-user': 'verified' }, remove: ['x-secret'] } } }]
  }]))
  const { messages } = await connectClient(t, g, '/ws', { 'x-secret': 'nope', 'x-request-id': 'ws-1' })
  assert.equal((await messages.next()).value, 'welcome')
  const seen = up.upgrades[0]?.headers
  assert.equal(seen?.['x-user'], 'verified')
  assert.equal(seen?.['x-secret'], undefined)
  assert.equal(seen?.['x-request-id'], 'ws-1')
  assert.equal(seen?.['x-forwarded-for'], '127.0.0.1')
})

test('regression: a route plugin\'s response header edits apply to the 101 Switching Protocols answer', async (t) => {
  // Before the fix the 101 was written from the upstream's raw headers only (and the
  // upstream's own x-request-id went out beside ours).
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{
    name: 'chat',
    match: { path: { prefix: '/ws' } },
    destination: { service: 'chat' },
    plugins: [{ name: 'headers', options: { response: { set: { 'x-edge': 'ws' } } } }]
  }]))
  const { messages, upgradeHeaders } = await connectClient(t, g, '/ws', { 'x-request-id': 'ws-2' })
  assert.equal((await messages.next()).value, 'welcome')
  assert.equal(upgradeHeaders['x-edge'], 'ws')
  assert.equal(upgradeHeaders['x-request-id'], 'ws-2')
})

test('a WebSocket upgrade with no route gets 404 FASTMESH_ERR_NO_ROUTE', async (t) => {
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{ name: 'chat', match: { path: { prefix: '/ws' } }, destination: { service: 'chat' } }]))
  const ws = new WebSocket(`${g.url.replace('http:', 'ws:')}/elsewhere`, { headers: { 'x-request-id': 'ws-404' } })
  defer(t, () => { closeQuietly(ws) })
  const [, res] = await once(ws, 'unexpected-response') as [unknown, IncomingMessage]
  assert.equal(res.statusCode, 404)
  let text = ''
  for await (const chunk of res) text += String(chunk)
  const body = JSON.parse(text) as { error: { code: string, requestId: string } }
  assert.equal(body.error.code, 'FASTMESH_ERR_NO_ROUTE')
  assert.equal(body.error.requestId, 'ws-404')
  assert.equal(up.upgrades.length, 0)
})

test('a WebSocket upgrade refused by the upstream reaches the client with the upstream status', async (t) => {
  const up = await startUpstream(t, (_req, res) => { res.writeHead(200).end() })
  up.server.on('upgrade', (_req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nconnection: close\r\n\r\nno way')
  })
  const g = await startGateway(t, meshConfig({ chat: [up] }, [{ name: 'chat', destination: { service: 'chat' } }]))
  const ws = new WebSocket(`${g.url.replace('http:', 'ws:')}/ws`)
  defer(t, () => { closeQuietly(ws) })
  const [, res] = await once(ws, 'unexpected-response') as [unknown, IncomingMessage]
  assert.equal(res.statusCode, 403)
  let text = ''
  for await (const chunk of res) text += String(chunk)
  assert.equal(text, 'no way')
})

test('closing the client closes the upstream side of the tunnel', async (t) => {
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{ name: 'chat', destination: { service: 'chat' } }]))
  const { ws, messages } = await connectClient(t, g, '/ws')
  assert.equal((await messages.next()).value, 'welcome')
  const [serverSide] = [...up.wss.clients]
  assert.ok(serverSide !== undefined)
  const closed = once(serverSide, 'close')
  ws.close(1000, 'bye')
  const [code] = await closed as [number]
  assert.equal(code, 1000)
})

test('regression: stop() ends WebSocket tunnels still open after the drain timeout', { timeout: 20_000 }, async (t) => {
  // Before the fix upgraded sockets were outside the listener's connection tracking:
  // closeAllConnections() left them open and stop() waited on close() forever.
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{ name: 'chat', destination: { service: 'chat' } }], { limits: { drainTimeout: '200ms' } }))
  const { ws, messages } = await connectClient(t, g, '/ws')
  assert.equal((await messages.next()).value, 'welcome')
  const clientClosed = once(ws, 'close')
  await g.gateway.stop()
  await clientClosed
  assert.equal(ws.readyState, WebSocket.CLOSED)
})

test('regression: an upgrade ends its try for the balancer (no in-flight count left behind per tunnel)', async (t) => {
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{ name: 'chat', destination: { service: 'chat' } }], { services: { chat: { loadBalancer: { policy: 'least_request' } } } }))
  for (let i = 0; i < 3; i++) {
    const { ws, messages } = await connectClient(t, g, '/socket')
    assert.equal((await messages.next()).value, 'welcome')
    closeQuietly(ws)
  }
  const services = (await g.admin('GET', '/services')).json<{ services: Array<{ name: string, layers: Array<{ balancer: Record<string, { inFlight: number }> }> }> }>()
  const chat = services.services.find((s) => s.name === 'chat')!
  assert.deepEqual(Object.values(chat.layers[0]!.balancer).map((b) => b.inFlight), [0])
})

/** An upgrade the gateway refuses: its status, headers and JSON error code. */
async function refusedUpgrade (t: TestContext, g: TestGateway, path: string): Promise<{ status: number, headers: IncomingHttpHeaders, code: string }> {
  const ws = new WebSocket(`${g.url.replace('http:', 'ws:')}${path}`)
  defer(t, () => { closeQuietly(ws) })
  const [, res] = await once(ws, 'unexpected-response') as [unknown, IncomingMessage]
  let text = ''
  for await (const chunk of res) text += String(chunk)
  return { status: res.statusCode ?? 0, headers: res.headers, code: (JSON.parse(text) as { error: { code: string } }).error.code }
}

test('a rate-limited WebSocket upgrade is refused with 429 and Retry-After before the tunnel opens', async (t) => {
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{
    name: 'chat',
    destination: { service: 'chat' },
    plugins: [{ name: 'rate-limit', options: { max: 1, timeWindow: '1h' } }]
  }]))
  const { messages } = await connectClient(t, g, '/ws')
  assert.equal((await messages.next()).value, 'welcome', 'the first upgrade is within the limit')
  const refused = await refusedUpgrade(t, g, '/ws')
  assert.equal(refused.status, 429)
  assert.equal(refused.code, 'FASTMESH_ERR_RATE_LIMITED')
  assert.ok(Number(refused.headers['retry-after']) > 0, JSON.stringify(refused.headers))
  assert.equal(up.upgrades.length, 1, 'the upstream saw no second upgrade')
})

test('an ip-filter-denied WebSocket upgrade is refused with 403 before the tunnel opens', async (t) => {
  const up = await startWsUpstream(t)
  const g = await startGateway(t, meshConfig({ chat: [up.port] }, [{
    name: 'chat',
    destination: { service: 'chat' },
    plugins: [{ name: 'ip-filter', options: { deny: ['127.0.0.0/8', '::1'] } }]
  }]))
  const refused = await refusedUpgrade(t, g, '/ws')
  assert.equal(refused.status, 403)
  assert.equal(refused.code, 'FASTMESH_ERR_IP_DENIED')
  assert.equal(up.upgrades.length, 0, 'the upstream saw no upgrade')
})
