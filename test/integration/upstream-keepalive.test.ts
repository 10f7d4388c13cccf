// services.<name>.connectionPool.keepAliveTimeout bounds how long an idle upstream
// connection stays open, whatever `Keep-Alive: timeout=N` the upstream announces.
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, eventually } from '../helpers/gateway.js'
import { meshConfig, startUpstream } from '../helpers/upstreams.js'

test('an upstream\'s longer Keep-Alive hint does not keep idle connections past connectionPool.keepAliveTimeout', async (t) => {
  const closedAfterMs: number[] = []
  let lastAnswer = 0
  const up = await startUpstream(t, (req, res) => {
    req.resume()
    lastAnswer = Date.now()
    res.end('ok')
  })
  // Node announces its own idle timeout: `Keep-Alive: timeout=60`.
  up.server.keepAliveTimeout = 60_000
  up.server.on('connection', (socket) => { socket.on('close', () => { closedAfterMs.push(Date.now() - lastAnswer) }) })
  const g = await startGateway(t, meshConfig({ svc: [up] }, [{ name: 'svc', match: { path: { prefix: '/' } }, destination: { service: 'svc' } }], {
    services: { svc: { connectionPool: { keepAliveTimeout: '1s' } } }
  }))

  const res = await g.request('/x')
  assert.equal(res.status, 200)
  await eventually(() => closedAfterMs.length === 1, 'the idle upstream connection to close', 8_000)
  // undici's idle timers tick every half second: allow for that, far below the 58 s the hint would give.
  assert.ok(closedAfterMs[0]! >= 900 && closedAfterMs[0]! < 4_000, `closed ${closedAfterMs[0]} ms after the answer`)
})
