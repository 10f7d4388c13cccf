// The policy chain's per-try seam, through a custom plugin's gateway-policy form: every
// upstream try (first, retry, mirrored copy, WebSocket upgrade, failed connect) starts and
// ends once with its outcome, the policy's header reaches every upstream request in place
// of the client's, and a policy that throws costs its own step only.
import test from 'node:test'
import assert from 'node:assert/strict'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { once } from 'node:events'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway, tempDir, fixturePlugin, eventually, defer, type TestGateway } from '../helpers/gateway.js'
import { startEcho, startUpstream, meshConfig } from '../helpers/upstreams.js'
import { freePort } from '../helpers/ports.js'
import { observed } from '../fixtures/plugins/try-observer.js'

async function observedGateway (t: test.TestContext, services: Record<string, number[]>, routes: unknown[]): Promise<TestGateway> {
  observed.clear()
  const dir = await tempDir(t)
  return await startGateway(t, meshConfig(services, routes, {
    customPlugins: { observer: { module: fixturePlugin(dir, 'try-observer.js') } },
    plugins: [{ name: 'observer', options: {} }]
  }), { dir })
}

test('a retried request: each try starts and ends once, in order, with its outcome; each try\'s request carries the policy\'s header, the client\'s copy dropped', async (t) => {
  let n = 0
  const seen: Array<string | string[] | undefined> = []
  const flaky = await startUpstream(t, (req, res) => {
    seen.push(req.headers['x-try'])
    n++
    if (n === 1) res.writeHead(503).end('busy')
    else res.writeHead(200).end('ok')
  })
  const g = await observedGateway(t, { f: [flaky.port] }, [
    { name: 'rf', destination: { service: 'f' }, retries: { attempts: 2, retryOn: ['5xx'], backoff: { base: '1ms', max: '1ms' } } }
  ])
  const res = await g.request('/x', { headers: { 'x-try': 'forged', 'x-request-id': 'retried-1' } })
  assert.equal(res.status, 200)
  assert.deepEqual(seen, ['1', '2'], 'the client\'s x-try never reaches the upstream; each try has its own')
  const endpoint = `127.0.0.1:${flaky.port}`
  await eventually(() => observed.exchanges.length === 1, 'the exchange to end')
  assert.deepEqual(observed.starts, [
    { requestId: 'retried-1', attempt: 1, mirror: false, endpoint },
    { requestId: 'retried-1', attempt: 2, mirror: false, endpoint }
  ])
  assert.deepEqual(observed.ends.map(({ durationMs: _, ...e }) => e), [
    { requestId: 'retried-1', attempt: 1, mirror: false, service: 'f', endpoint, outcome: 'response', status: 503, cause: undefined, span: 'span-1' },
    { requestId: 'retried-1', attempt: 2, mirror: false, service: 'f', endpoint, outcome: 'response', status: 200, cause: undefined, span: 'span-2' }
  ])
  assert.ok(observed.ends.every((e) => e.durationMs >= 0))
  assert.deepEqual(observed.exchanges, [{ requestId: 'retried-1', status: 200, attempts: 2, error: undefined }])
})

test('a try that cannot connect ends as connect_error with its cause', async (t) => {
  const closed = await freePort()
  const g = await observedGateway(t, { d: [closed] }, [{ name: 'rd', destination: { service: 'd' }, retries: { attempts: 1 } }])
  assert.equal((await g.request('/x', { headers: { 'x-request-id': 'refused-1' } })).status, 502)
  await eventually(() => observed.exchanges.length === 1, 'the exchange to end')
  assert.equal(observed.ends.length, 1)
  assert.equal(observed.ends[0]!.outcome, 'connect_error')
  assert.equal(observed.ends[0]!.cause, 'ECONNREFUSED')
  assert.equal(observed.ends[0]!.status, 0)
  assert.equal(observed.exchanges[0]!.error, 'FASTMESH_ERR_UPSTREAM_FAILURE')
})

test('a mirrored copy is a try of its own (mirror set), with the policy\'s header for the copy', async (t) => {
  const primary = await startEcho(t, 'primary')
  const shadow = await startEcho(t, 'shadow')
  const g = await observedGateway(t, { api: [primary.port], shadow: [shadow.port] }, [
    { name: 'api', destination: { service: 'api' }, mirror: { service: 'shadow' } }
  ])
  assert.equal((await g.request('/m', { headers: { 'x-request-id': 'mirrored-1' } })).status, 200)
  await eventually(() => observed.ends.length === 2, 'both the try and the mirrored copy to end')
  assert.equal(primary.seen[0]!.headers['x-try'], '1')
  assert.equal(shadow.seen[0]!.headers['x-try'], 'mirror')
  const copy = observed.ends.find((e) => e.mirror)!
  assert.deepEqual({ service: copy.service, endpoint: copy.endpoint, outcome: copy.outcome, status: copy.status, attempt: copy.attempt }, { service: 'shadow', endpoint: `127.0.0.1:${shadow.port}`, outcome: 'response', status: 200, attempt: 1 })
  assert.ok(observed.starts.some((s) => s.mirror && s.requestId === 'mirrored-1'))
})

test('a WebSocket upgrade is a try that ends with 101, its upgrade request carrying the policy\'s header', async (t) => {
  const up = await startUpstream(t, (_req, res) => { res.writeHead(426).end() })
  const wss = new WebSocketServer({ server: up.server })
  const upgrades: IncomingHttpHeaders[] = []
  wss.on('connection', (socket, req: IncomingMessage) => { upgrades.push(req.headers); socket.send('hi') })
  defer(t, async () => {
    for (const c of wss.clients) c.terminate()
    await new Promise<void>((resolve) => { wss.close(() => { resolve() }) })
  })
  const g = await observedGateway(t, { ws: [up.port] }, [{ name: 'rw', destination: { service: 'ws' } }])
  const ws = new WebSocket(`${g.url.replace('http:', 'ws:')}/socket`, { headers: { 'x-try': 'forged' } })
  defer(t, () => { ws.on('error', () => {}); ws.terminate() })
  const [message] = await once(ws, 'message') as [Buffer]
  assert.equal(String(message), 'hi')
  assert.equal(upgrades[0]!['x-try'], '1')
  await eventually(() => observed.ends.length === 1, 'the upgrade try to end')
  assert.equal(observed.ends[0]!.outcome, 'response')
  assert.equal(observed.ends[0]!.status, 101)
})

test('a policy hook that throws costs its own step: the exchange answers as usual, the fault is counted', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await observedGateway(t, { svc: [echo.port] }, [{ name: 'r', destination: { service: 'svc' } }])
  const before = (await g.admin('GET', '/faults')).json<{ caught: number }>().caught
  const res = await g.request('/x', { headers: { 'x-observer-throw': '1' } })
  assert.equal(res.status, 200)
  assert.equal(JSON.parse(res.text).headers['x-try'], '1')
  await eventually(async () => (await g.admin('GET', '/faults')).json<{ caught: number }>().caught === before + 1, 'the fault to be counted')
  assert.equal((await g.request('/y')).status, 200, 'the gateway goes on')
})
