// Circuit limits of one destination: what is admitted, what overflows at once with which
// limit named, and that every admission is given back.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CircuitCounters, CircuitLimits, OVERFLOW_HEADER, circuitSettings, isOverflowError, type CircuitSettings } from '../../src/balancer/circuit.js'
import { catalogue } from '../../src/errors.js'

function limits (more: Partial<CircuitSettings> = {}, counters?: CircuitCounters): CircuitLimits {
  return new CircuitLimits('orders', { ...circuitSettings(), ...more }, counters)
}

function admitN (c: CircuitLimits, kind: 'request' | 'retry', n: number): void {
  for (let i = 0; i < n; i++) assert.equal(c.admit(kind), undefined, `admission ${i + 1} of ${n}`)
}

test('defaults with no config are generous: 1024 connections, pending, requests and retries', () => {
  assert.deepEqual(circuitSettings(), { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 1024, pipelining: 1 })
})

test('past maxRequests a request gets 503 FASTMESH_ERR_OVERFLOW naming max-requests in a header', () => {
  const c = limits({ maxRequests: 3 })
  admitN(c, 'request', 3)
  const err = c.admit('request')
  assert.ok(isOverflowError(err))
  assert.equal(err.statusCode, 503)
  assert.equal(err.code, catalogue.OVERFLOW.code)
  assert.equal(err.limit, 'max-requests')
  assert.deepEqual(err.headers, { [OVERFLOW_HEADER]: 'max-requests' })
  assert.match(err.message, /Service "orders" is over its circuit-breaker limit max-requests \(3\)/)
})

test('a release makes room for the next request', () => {
  const c = limits({ maxRequests: 1 })
  admitN(c, 'request', 1)
  assert.ok(c.admit('request'))
  c.release('request')
  assert.equal(c.admit('request'), undefined)
})

test('requests beyond the connections are pending; past maxPendingRequests they overflow with max-pending-requests', () => {
  const c = limits({ maxConnections: 4, maxPendingRequests: 2 })
  admitN(c, 'request', 6)
  assert.equal(c.snapshot().pending, 2)
  const err = c.admit('request')
  assert.equal(err?.limit, 'max-pending-requests')
  assert.deepEqual(err?.headers, { 'x-fastmesh-overflow': 'max-pending-requests' })
})

test('maxPendingRequests 0 refuses any request that would wait for a connection', () => {
  const c = limits({ maxConnections: 2, maxPendingRequests: 0 })
  admitN(c, 'request', 2)
  assert.equal(c.admit('request')?.limit, 'max-pending-requests')
})

test('connections carry pipelining requests each before requests are pending', () => {
  const c = limits({ maxConnections: 2, maxPendingRequests: 0, pipelining: 3 })
  admitN(c, 'request', 6)
  assert.equal(c.admit('request')?.limit, 'max-pending-requests')
})

test('the endpoints\' own connection capacity, when lower than maxConnections, bounds what is on the wire', () => {
  const c = limits({ maxConnections: 1024, maxPendingRequests: 1 })
  c.setEndpointConnections(2) // e.g. 2 endpoints × connectionPool.connections 1
  admitN(c, 'request', 3)
  assert.equal(c.admit('request')?.limit, 'max-pending-requests')
})

test('past maxRetries a retry overflows with max-retries, while first attempts are still admitted', () => {
  const c = limits({ maxRetries: 1 })
  admitN(c, 'request', 2)
  admitN(c, 'retry', 1)
  assert.equal(c.admit('retry')?.limit, 'max-retries')
  assert.equal(c.admit('request'), undefined)
  c.release('retry')
  assert.equal(c.admit('retry'), undefined)
})

test('maxRetries 0 refuses every retry', () => {
  assert.equal(limits({ maxRetries: 0 }).admit('retry')?.limit, 'max-retries')
})

test('each overflow is a fresh error (the route layer may add what was tried to it)', () => {
  const c = limits({ maxRequests: 1 })
  admitN(c, 'request', 1)
  assert.notEqual(c.admit('request'), c.admit('request'))
})

test('overflows are counted per limit; the snapshot shows in-flight counts and limits', () => {
  const c = limits({ maxRequests: 2, maxRetries: 0, maxConnections: 1 })
  admitN(c, 'request', 2)
  c.admit('request')
  c.admit('retry')
  c.admit('retry')
  assert.deepEqual(c.snapshot(), {
    requests: 2,
    pending: 1,
    connections: 0,
    retries: 0,
    limits: { maxConnections: 1, maxPendingRequests: 1024, maxRequests: 2, maxRetries: 0 },
    overflows: { 'max-requests': 1, 'max-pending-requests': 0, 'max-retries': 2 }
  })
})

test('the snapshot reads the open connections from the gauge the service layer sets', () => {
  const c = limits({ maxConnections: 3 })
  let open = 2
  c.setConnectionGauge(() => open)
  assert.equal(c.snapshot().connections, 2)
  open = 3
  assert.equal(c.snapshot().connections, 3)
})

test('a release without an admission never drives a count below zero', () => {
  const c = limits()
  c.release('request')
  c.release('retry')
  assert.equal(c.snapshot().requests, 0)
  assert.equal(c.snapshot().retries, 0)
})

test('a reload keeps the in-flight counts: the next version\'s limits share the counters', () => {
  const counters = new CircuitCounters()
  const v1 = limits({ maxRequests: 10 }, counters)
  admitN(v1, 'request', 3)
  const v2 = limits({ maxRequests: 4 }, counters)
  admitN(v2, 'request', 1)
  assert.equal(v2.admit('request')?.limit, 'max-requests')
  v1.release('request')
  assert.equal(v2.admit('request'), undefined)
})
