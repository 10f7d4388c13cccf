// The compiled retry policy of a route (src/gateway/retry.ts): what is retried with nothing
// configured, and how a failed try's cause is classified.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { compileRetryPolicy, failureKind, isConnectFailure, isUnreachable } from '../../src/gateway/retry.js'
import { fastmeshError } from '../../src/errors.js'
import type { RouteConfig } from '../../src/config/schema.js'
import type { FastmeshConfig } from '../../src/config/validate.js'

const ROUTE: RouteConfig = { name: 'api', destination: { service: 'api' }, timeout: '15s', idleTimeout: '60s', plugins: [] }
const CONFIG = { services: {} } as unknown as FastmeshConfig

/** An endpoint-layer failure as proxy.ts makes it: undici's error kept as the cause. */
function upstreamFailure (code: string): Error {
  const cause = Object.assign(new Error(code), { code })
  return fastmeshError('UPSTREAM_FAILURE', ['127.0.0.1:1', 'api', code], cause)
}

test('regression: with nothing configured, a reset before any response byte is retried for idempotent methods (it cost requests when an instance died)', () => {
  const p = compileRetryPolicy(ROUTE, CONFIG)
  assert.equal(p.attempts, 2)
  for (const method of ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']) assert.equal(p.retriesFailure('reset', method), true, method)
  for (const method of ['POST', 'PATCH']) assert.equal(p.retriesFailure('reset', method), false, method)
})

test('with nothing configured, connect failures are retried for every method; timeouts and statuses are not', () => {
  const p = compileRetryPolicy(ROUTE, CONFIG)
  assert.equal(p.retriesFailure('refused', 'POST'), true)
  assert.equal(p.retriesFailure('connect-failure', 'POST'), true)
  assert.equal(p.retriesFailure('timeout', 'GET'), false)
  assert.equal(p.retriesStatus(503, 'GET'), false)
})

test('a route\'s own retryOn replaces the default: [refused] does not retry resets', () => {
  const p = compileRetryPolicy({ ...ROUTE, retries: { attempts: 3, retryOn: ['refused'], retriableStatusCodes: [], nonIdempotent: false, bufferBodyBytes: 0, backoff: { base: '25ms', max: '250ms' }, budget: { percent: 20, minPerSecond: 10 } } }, CONFIG)
  assert.equal(p.retriesFailure('reset', 'GET'), false)
  assert.equal(p.retriesFailure('refused', 'GET'), true)
})

test('failure kinds: refused and connect failures are connect failures; resets and timeouts are not', () => {
  assert.equal(failureKind(upstreamFailure('ECONNREFUSED')), 'refused')
  assert.equal(failureKind(upstreamFailure('UND_ERR_CONNECT_TIMEOUT')), 'connect-failure')
  assert.equal(failureKind(upstreamFailure('UND_ERR_SOCKET')), 'reset')
  assert.equal(failureKind(upstreamFailure('ECONNRESET')), 'reset')
  assert.equal(isConnectFailure('refused'), true)
  assert.equal(isConnectFailure('connect-failure'), true)
  assert.equal(isConnectFailure('reset'), false)
  assert.equal(isConnectFailure('timeout'), false)
})

test('unreachable: no TCP connection (refused, connect timeout, no route to host); a TLS failure or a reset is not', () => {
  for (const code of ['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH']) assert.equal(isUnreachable(upstreamFailure(code)), true, code)
  for (const code of ['DEPTH_ZERO_SELF_SIGNED_CERT', 'FASTMESH_ERR_PEER_IDENTITY', 'ECONNRESET', 'UND_ERR_SOCKET', 'UND_ERR_HEADERS_TIMEOUT']) assert.equal(isUnreachable(upstreamFailure(code)), false, code)
})
