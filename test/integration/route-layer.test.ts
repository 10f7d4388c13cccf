// The route layer alone: RouteLayer (src/gateway/route-layer.ts) over a hand-built Destination
// in place of the service layer, with a real PolicyChain recording every end. The endpoint
// layer below it is real (`forward` on a real undici Pool to a real upstream); no gateway,
// router, Fastify or discovery takes part: a bare node:http server makes the Exchange.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import type { RouteConfig } from '../../src/config/schema.js'
import type { ResponseError } from '../../src/errors.js'
import { Exchange, PolicyChain } from '../../src/gateway/exchange.js'
import { RouteLayer, type Destination, type DestinationFor } from '../../src/gateway/route-layer.js'
import type { CompiledRouteMatcher, RouteMatch } from '../../src/gateway/router.js'
import type { EndpointTarget } from '../../src/upstream/endpoint-pool.js'
import type { ForwardSettings } from '../../src/upstream/proxy.js'
import { compileRetryPolicy, RetryBudget } from '../../src/gateway/retry.js'
import type { FastmeshConfig } from '../../src/config/validate.js'
import { assertErrorResponse } from '../helpers/gateway.js'
import { eventually } from '../helpers/poll.js'
import { freePort } from '../helpers/ports.js'
import { startEcho, startUpstream, type EchoRecord } from '../helpers/upstreams.js'
import { endpointTarget, send } from '../helpers/layers.js'

const SETTINGS: ForwardSettings = { bodyTimeoutMs: 10_000, rewriteHost: undefined, trustForwarded: false, proto: 'http' }

interface Ended { readonly requestId: string, readonly status: number, readonly error: string | undefined, readonly destination: string | undefined, readonly endpoint: string | undefined }

/** A hand-built service layer: counts picks, and can hold back its first discovery answer. */
interface TestDestination extends Destination {
  picks: number
  knownCalls: number[]
  current: unknown
}

function fixedDestination (target: EndpointTarget | undefined, service = 'orders'): TestDestination {
  return {
    service,
    picks: 0,
    knownCalls: [],
    current: target ?? { endpoints: [] },
    pick () { this.picks++; return target },
    report () {},
    admit: () => undefined,
    release () {},
    async known (timeoutMs) { this.knownCalls.push(timeoutMs) }
  }
}

interface RouteFront {
  readonly origin: string
  /** Every end the policy chain saw, in order. */
  readonly ends: Ended[]
  /** Request ids whose response has closed on the server side. */
  readonly closed: string[]
  /** Exceptions the route layer reported while serving (`requestId: where: message`). */
  readonly faults: string[]
}

/**
 * A node:http server handing each request to a RouteLayer as the gateway would: an Exchange
 * (request ids `rid-1`, `rid-2`, ...), a RouteMatch whose params carry `id: '7'`, and
 * `replyHeaders` as a route's plugins left them.
 */
async function startRoute (t: TestContext, destination: DestinationFor, opts: { rewrite?: (m: RouteMatch) => string, replyHeaders?: Record<string, unknown>, retries?: Partial<NonNullable<RouteConfig['retries']>> } = {}): Promise<RouteFront> {
  const ends: Ended[] = []
  const closed: string[] = []
  const faults: string[] = []
  const chain = new PolicyChain([{ name: 'recorder', onEnd (ex) { ends.push({ requestId: ex.requestId, status: ex.status, error: ex.error, destination: ex.destination, endpoint: ex.endpoint }) } }],
    (ex, where, err) => { faults.push(`${ex.requestId}: ${where}: ${(err as Error).message}`) })
  const config: RouteConfig = { name: 'orders', destination: { service: 'orders' }, timeout: '10s', idleTimeout: '10s', plugins: [] }
  const rewrite = opts.rewrite ?? ((m: RouteMatch) => m.path)
  const route: CompiledRouteMatcher = { name: 'orders', config, index: 0, precedence: [], rewrite }
  // One try, no retry: this file is about the route layer's forwarding and answers (retries: test/integration/retries.test.ts).
  const layer = new RouteLayer({ name: 'orders', rewrite, destination, forwarding: SETTINGS, retry: compileRetryPolicy({ ...config, retries: { attempts: 1, retryOn: ['connect-failure'], retriableStatusCodes: [], nonIdempotent: false, bufferBodyBytes: 0, backoff: { base: '25ms', max: '250ms' }, budget: { percent: 20, minPerSecond: 10 }, ...opts.retries } }, { services: {} } as unknown as FastmeshConfig), budget: () => new RetryBudget(), forwardClientCert: false, chain })
  let n = 0
  const front = await startUpstream(t, (req, res) => {
    const ex = new Exchange(req, res, `rid-${++n}`, process.hrtime.bigint(), undefined)
    ex.route = 'orders'
    res.once('close', () => { closed.push(ex.requestId) })
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const match: RouteMatch = { route, params: { id: '7' }, path: q === -1 ? url : url.slice(0, q), search: q === -1 ? '' : url.slice(q) }
    layer.forward(ex, match, req.headers, null, opts.replyHeaders ?? null)
  })
  return { origin: `http://127.0.0.1:${front.port}`, ends, closed, faults }
}

test('the upstream path is rewrite(match) followed by the query as matched', async (t) => {
  const echo = await startEcho(t, 'orders-a')
  const target = endpointTarget(t, echo.port)
  const front = await startRoute(t, () => fixedDestination(target), { rewrite: (m) => `/v2/items/${m.params!.id}` })
  const res = await send(front.origin, '/items/7?q=a&b=c')
  assert.equal(res.status, 200)
  assert.equal(res.json<EchoRecord>().url, '/v2/items/7?q=a&b=c')
  await eventually(() => front.ends.length === 1, 'the end to be recorded')
  assert.deepEqual(front.ends, [{ requestId: 'rid-1', status: 200, error: undefined, destination: 'orders', endpoint: target.label }])
})

test('a forwarded request carries the exchange\'s request id upstream and back', async (t) => {
  const echo = await startEcho(t, 'orders-a')
  const front = await startRoute(t, () => fixedDestination(endpointTarget(t, echo.port)))
  const res = await send(front.origin, '/a')
  assert.equal(res.headers['x-request-id'], 'rid-1')
  assert.equal(res.json<EchoRecord>().headers['x-request-id'], 'rid-1')
})

test('no usable endpoint: 503 FASTMESH_ERR_NO_HEALTHY_ENDPOINT with the request id, and the chain ends with it', async (t) => {
  const destination = fixedDestination(undefined)
  const front = await startRoute(t, () => destination)
  const res = await send(front.origin, '/orders')
  const body = assertErrorResponse(res, 503, 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT')
  assert.equal(body.error.requestId, 'rid-1')
  assert.equal(res.headers['x-request-id'], 'rid-1')
  assert.match(body.error.message, /"orders"/)
  assert.equal(destination.picks, 1)
  assert.deepEqual(front.ends, [{ requestId: 'rid-1', status: 503, error: 'FASTMESH_ERR_NO_HEALTHY_ENDPOINT', destination: 'orders', endpoint: undefined }])
})

test('an endpoint that refuses the connection: the route layer answers 502 FASTMESH_ERR_UPSTREAM_FAILURE once, plugin reply headers kept', async (t) => {
  const target = endpointTarget(t, await freePort())
  const replyHeaders = { 'access-control-allow-origin': '*', 'x-ratelimit-remaining': '9' }
  const front = await startRoute(t, () => fixedDestination(target), { replyHeaders })
  const res = await send(front.origin, '/orders')
  const body = assertErrorResponse(res, 502, 'FASTMESH_ERR_UPSTREAM_FAILURE')
  assert.equal(body.error.requestId, 'rid-1')
  assert.equal(res.headers['access-control-allow-origin'], '*')
  assert.equal(res.headers['x-ratelimit-remaining'], '9')
  assert.match(body.error.message, new RegExp(target.label.replace(/\./g, '\\.')))
  await eventually(() => front.ends.length > 0, 'the end to be recorded')
  assert.deepEqual(front.ends, [{ requestId: 'rid-1', status: 502, error: 'FASTMESH_ERR_UPSTREAM_FAILURE', destination: 'orders', endpoint: target.label }])
})

test('a destination discovery has not answered for yet: the request waits for known() before picking', async (t) => {
  const echo = await startEcho(t, 'orders-a')
  const target = endpointTarget(t, echo.port)
  let answer!: () => void
  const destination: TestDestination = {
    ...fixedDestination(target),
    current: undefined,
    async known (timeoutMs) {
      this.knownCalls.push(timeoutMs)
      await new Promise<void>((resolve) => { answer = resolve })
    }
  }
  const front = await startRoute(t, () => destination)
  const pending = send(front.origin, '/orders')
  await eventually(() => destination.knownCalls.length === 1, 'the route layer to wait for discovery')
  assert.equal(destination.picks, 0, 'nothing was picked before discovery answered')
  assert.equal(echo.seen.length, 0)
  destination.current = { endpoints: [target.endpoint] }
  answer()
  const res = await pending
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-served-by'], 'orders-a')
  assert.equal(destination.picks, 1)
  assert.deepEqual(destination.knownCalls, [5_000], 'known() is given FIRST_DISCOVERY_WAIT_MS')
})

test('a client that leaves while discovery is awaited: the chain ends 499 and nothing is picked', async (t) => {
  let answer!: () => void
  const destination: TestDestination = {
    ...fixedDestination(undefined),
    current: undefined,
    async known (timeoutMs) {
      this.knownCalls.push(timeoutMs)
      await new Promise<void>((resolve) => { answer = resolve })
    }
  }
  const front = await startRoute(t, () => destination)
  const { hostname, port } = new URL(front.origin)
  const req = httpRequest({ hostname, port, path: '/orders', agent: false })
  req.on('error', () => {})
  req.end()
  await eventually(() => destination.knownCalls.length === 1, 'the route layer to wait for discovery')
  req.destroy()
  await eventually(() => front.closed.includes('rid-1'), 'the server to see the client leave')
  answer()
  await eventually(() => front.ends.length > 0, 'the end to be recorded')
  assert.equal(destination.picks, 0)
  assert.deepEqual(front.ends, [{ requestId: 'rid-1', status: 499, error: 'client closed the connection', destination: 'orders', endpoint: undefined }])
})

test('a DestinationFor that returns a ResponseError is answered as it is', async (t) => {
  const refusal: ResponseError = { statusCode: 421, code: 'TEST_MISDIRECTED', message: 'no such destination here' }
  const front = await startRoute(t, () => refusal, { replyHeaders: { 'x-plugin': 'kept' } })
  const res = await send(front.origin, '/orders')
  const body = assertErrorResponse(res, 421, 'TEST_MISDIRECTED')
  assert.equal(body.error.message, 'no such destination here')
  assert.equal(body.error.requestId, 'rid-1')
  assert.equal(res.headers['x-plugin'], 'kept')
  assert.deepEqual(front.ends, [{ requestId: 'rid-1', status: 421, error: 'TEST_MISDIRECTED', destination: undefined, endpoint: undefined }])
})

test('an exception in a retry timer (the service layer throws) ends only that exchange: JSON 500, reported once, admission given back, the next request served', async (t) => {
  const dead = await freePort()
  const echo = await startEcho(t, 'orders-a')
  const deadTarget = endpointTarget(t, dead)
  const liveTarget = endpointTarget(t, echo.port)
  let admitted = 0
  let throwOnRetry = true
  const destination: TestDestination = {
    ...fixedDestination(deadTarget),
    pick (req) {
      this.picks++
      if (req.tried === undefined) return throwOnRetry ? deadTarget : liveTarget
      if (throwOnRetry) throw new Error('pick failed in a timer')
      return liveTarget
    },
    admit: () => { admitted++; return undefined },
    release: () => { admitted-- }
  }
  const front = await startRoute(t, () => destination, { retries: { attempts: 2, backoff: { base: '20ms', max: '20ms' } } })
  const res = await send(front.origin, '/a')
  assertErrorResponse(res, 500, 'FASTMESH_ERR_INTERNAL')
  await eventually(() => front.ends.length === 1, 'the end to be recorded')
  assert.equal(front.ends[0]!.status, 500)
  // One fault, reported once: in the retry timer (or, when the random backoff came out 0 ms, in the failed try's own step).
  assert.equal(front.faults.length, 1, front.faults.join('\n'))
  assert.match(front.faults[0]!, /^rid-1: route orders: (retry|failed try): pick failed in a timer$/)
  assert.equal(admitted, 0, 'every admission (request and retry) was given back')
  throwOnRetry = false
  assert.equal((await send(front.origin, '/b')).status, 200)
})
