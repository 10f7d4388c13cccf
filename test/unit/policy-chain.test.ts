// The gateway-wide layer alone: PolicyChain and Exchange (src/gateway/exchange.ts). No route,
// service or endpoint layer takes part. An Exchange only reads its request's method and URL,
// so an IncomingMessage and ServerResponse over an unconnected Socket are real enough: nothing
// here writes to a socket.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { IncomingMessage, ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import { Exchange, PolicyChain, type GatewayPolicy } from '../../src/gateway/exchange.js'
import { fastmeshError, type ResponseError } from '../../src/errors.js'

function exchange (requestId = 'req-1'): Exchange {
  const req = new IncomingMessage(new Socket())
  req.method = 'GET'
  req.url = '/orders?x=1'
  return new Exchange(req, new ServerResponse(req), requestId, process.hrtime.bigint(), undefined)
}

/** A policy recording each step it is asked to run in `log`, refusing with `refusal` when given. */
function recording (name: string, log: string[], refusal?: ResponseError): GatewayPolicy {
  return {
    name,
    onRequest (ex) { log.push(`${name}.onRequest ${ex.requestId}`); return refusal },
    onEnd (ex) { log.push(`${name}.onEnd ${ex.status} ${ex.error ?? '-'}`) }
  }
}

test('onRequest steps run in chain order and the chain goes on when none refuses', () => {
  const log: string[] = []
  const chain = new PolicyChain([recording('a', log), recording('b', log), recording('c', log)])
  assert.equal(chain.request(exchange()), undefined)
  assert.deepEqual(log, ['a.onRequest req-1', 'b.onRequest req-1', 'c.onRequest req-1'])
})

test('the first refusal wins and later onRequest steps are not called', () => {
  const log: string[] = []
  const first = fastmeshError('FORBIDDEN', ['caller', 'orders', 'test'])
  const second = fastmeshError('NO_ROUTE', ['GET', '/', '-'])
  const chain = new PolicyChain([recording('a', log), recording('b', log, first), recording('c', log, second)])
  assert.equal(chain.request(exchange()), first)
  assert.deepEqual(log, ['a.onRequest req-1', 'b.onRequest req-1'])
})

test('policies without an onRequest or onEnd step are skipped for that step, order kept', () => {
  const log: string[] = []
  const chain = new PolicyChain([
    { name: 'end-only', onEnd () { log.push('end-only.onEnd') } },
    { name: 'request-only', onRequest () { log.push('request-only.onRequest'); return undefined } },
    recording('both', log)
  ])
  const ex = exchange()
  chain.request(ex)
  chain.end(ex, 200)
  assert.deepEqual(log, ['request-only.onRequest', 'both.onRequest req-1', 'end-only.onEnd', 'both.onEnd 200 -'])
})

test('onEnd runs for every policy, in order, exactly once per exchange even when end is called twice', () => {
  const log: string[] = []
  const chain = new PolicyChain([recording('a', log), recording('b', log)])
  const ex = exchange()
  chain.end(ex, 502, 'FASTMESH_ERR_UPSTREAM_FAILURE')
  chain.end(ex, 499, 'client closed the connection')
  assert.deepEqual(log, ['a.onEnd 502 FASTMESH_ERR_UPSTREAM_FAILURE', 'b.onEnd 502 FASTMESH_ERR_UPSTREAM_FAILURE'])
})

test('the first end wins: the exchange keeps its first status and error', () => {
  const chain = new PolicyChain([])
  const ex = exchange()
  chain.end(ex, 200)
  chain.end(ex, 499, 'client closed the connection')
  assert.equal(ex.ended, true)
  assert.equal(ex.status, 200)
  assert.equal(ex.error, undefined)
})

test('Exchange.end says whether this call ended it', () => {
  const ex = exchange()
  assert.equal(ex.end(204, undefined), true)
  assert.equal(ex.end(500, 'late'), false)
  assert.equal(ex.status, 204)
})

test('each exchange ends on its own: ending one does not end another through the same chain', () => {
  const log: string[] = []
  const chain = new PolicyChain([recording('a', log)])
  const one = exchange('one')
  const two = exchange('two')
  chain.end(one, 200)
  chain.end(two, 404, 'FASTMESH_ERR_NO_ROUTE')
  chain.end(one, 500)
  assert.deepEqual(log, ['a.onEnd 200 -', 'a.onEnd 404 FASTMESH_ERR_NO_ROUTE'])
})

test('an empty chain refuses nothing and still ends the exchange', () => {
  const chain = new PolicyChain([])
  const ex = exchange()
  assert.equal(chain.request(ex), undefined)
  chain.end(ex, 200)
  assert.equal(ex.ended, true)
  assert.equal(ex.status, 200)
})

test('Exchange.durationMs grows while the exchange runs and is frozen once it ends', async () => {
  const ex = exchange()
  const before = ex.durationMs
  await new Promise((resolve) => setTimeout(resolve, 20))
  const running = ex.durationMs
  assert.ok(running > before, `running duration ${running} ms > ${before} ms`)
  new PolicyChain([]).end(ex, 200)
  const frozen = ex.durationMs
  assert.ok(frozen >= running)
  await new Promise((resolve) => setTimeout(resolve, 20))
  assert.equal(ex.durationMs, frozen)
})

test('onEnd sees the ended exchange: status, error and a frozen duration are set', async () => {
  const seen: Array<{ status: number, error: string | undefined, ended: boolean, durationMs: number }> = []
  const chain = new PolicyChain([{ name: 'probe', onEnd (ex) { seen.push({ status: ex.status, error: ex.error, ended: ex.ended, durationMs: ex.durationMs }) } }])
  const ex = exchange()
  chain.end(ex, 503, 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT')
  await new Promise((resolve) => setTimeout(resolve, 10))
  assert.deepEqual(seen, [{ status: 503, error: 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT', ended: true, durationMs: ex.durationMs }])
})

test('Exchange exposes the request method and target as routing saw them', () => {
  const ex = exchange()
  assert.equal(ex.method, 'GET')
  assert.equal(ex.path, '/orders?x=1')
})
