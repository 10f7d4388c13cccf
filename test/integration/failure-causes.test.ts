// The access line of a request the gateway answered with an upstream error says why the
// last try failed: refused, reset (closed before any response byte) or timeout.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Socket } from 'node:net'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { startHeldUpstream, meshConfig } from '../helpers/upstreams.js'
import { freePort } from '../helpers/ports.js'

async function causeOf (g: TestGateway, requestId: string): Promise<Record<string, unknown>> {
  return await eventually(() => g.logs.entries().find((e) => e.log === 'access' && e.requestId === requestId), 'the access line', 5000)
}

const NO_RETRIES = { attempts: 1 }

test('a refused connection: 502 and cause "refused: ECONNREFUSED" in the access log', async (t) => {
  const dead = await freePort()
  const g = await startGateway(t, meshConfig({ api: [dead] }, [{ name: 'api', destination: { service: 'api' }, retries: NO_RETRIES }]))
  assert.equal((await g.request('/', { headers: { 'x-request-id': 'refused-1' } })).status, 502)
  const line = await causeOf(g, 'refused-1')
  assert.equal(line.cause, 'refused: ECONNREFUSED')
  assert.equal(line.error, 'FASTMESH_ERR_UPSTREAM_FAILURE')
})

test('a connection closed before any response byte: 502 and a "reset" cause', async (t) => {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => { sockets.add(socket); socket.once('data', () => { socket.destroy() }) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => { for (const s of sockets) s.destroy(); server.close() })
  const port = (server.address() as { port: number }).port
  const g = await startGateway(t, meshConfig({ api: [port] }, [{ name: 'api', destination: { service: 'api' }, retries: NO_RETRIES }]))
  assert.equal((await g.request('/', { headers: { 'x-request-id': 'reset-1' } })).status, 502)
  assert.match(String((await causeOf(g, 'reset-1')).cause), /^reset: /)
})

test('no response headers in time: 504 and cause "timeout"', async (t) => {
  const held = await startHeldUpstream(t)
  const g = await startGateway(t, meshConfig({ api: [held] }, [{ name: 'api', destination: { service: 'api' }, timeout: '100ms', retries: NO_RETRIES }]))
  assert.equal((await g.request('/', { headers: { 'x-request-id': 'slow-1' } })).status, 504)
  const line = await causeOf(g, 'slow-1')
  assert.equal(line.cause, 'timeout')
  assert.equal(line.error, 'FASTMESH_ERR_UPSTREAM_TIMEOUT')
})
