// The state registry: per-name state made on first use, the same object while the name is
// in use, dropped (and disposed) when the gateway releases names no version uses.
import test from 'node:test'
import assert from 'node:assert/strict'
import { endpointStateKey, StateRegistry, stateKind } from '../../src/state/registry.js'

class Counter {
  n = 0
  disposed = false
  constructor (readonly key: string) {}
}

const counters = stateKind('counter', 'route', (key) => new Counter(key), (c) => { c.disposed = true })
const perService = stateKind('perService', 'service', (key) => new Counter(key))

test('slot makes the state of a name on first use with the kind\'s factory, and returns the same object after', () => {
  const r = new StateRegistry()
  const a = r.slot(counters, 'orders')
  assert.ok(a instanceof Counter)
  assert.equal(a.key, 'orders')
  a.n++
  assert.equal(r.slot(counters, 'orders'), a)
  assert.equal(r.slot(counters, 'orders').n, 1)
  assert.notEqual(r.slot(counters, 'billing'), a)
})

test('kinds are separate: the same name under two kinds is two states', () => {
  const r = new StateRegistry()
  assert.notEqual(r.slot(counters, 'x'), r.slot(perService, 'x'))
})

test('peek reads without creating', () => {
  const r = new StateRegistry()
  assert.equal(r.peek(counters, 'orders'), undefined)
  assert.deepEqual(r.entries(counters), [])
  const a = r.slot(counters, 'orders')
  assert.equal(r.peek(counters, 'orders'), a)
})

test('entries lists every name of a kind with its state', () => {
  const r = new StateRegistry()
  const a = r.slot(counters, 'a')
  const b = r.slot(counters, 'b')
  r.slot(perService, 'c')
  assert.deepEqual(r.entries(counters), [['a', a], ['b', b]])
})

test('retain keeps the named states and drops and disposes the rest', () => {
  const r = new StateRegistry()
  const keep = r.slot(counters, 'keep')
  const drop = r.slot(counters, 'drop')
  r.retain(counters, new Set(['keep']))
  assert.equal(r.peek(counters, 'keep'), keep)
  assert.equal(keep.disposed, false)
  assert.equal(r.peek(counters, 'drop'), undefined)
  assert.equal(drop.disposed, true)
  assert.notEqual(r.slot(counters, 'drop'), drop, 'a dropped name starts again from a fresh state')
})

test('release retains each kind by its scope and keeps scopes it is not given', () => {
  const r = new StateRegistry()
  r.slot(counters, 'route-a')
  r.slot(counters, 'route-b')
  const svc = r.slot(perService, 'svc')
  r.release({ route: new Set(['route-a']) })
  assert.deepEqual(r.entries(counters).map(([k]) => k), ['route-a'])
  assert.equal(r.peek(perService, 'svc'), svc, 'service scope not given: kept')
  r.release({ route: new Set(['route-a']), service: new Set() })
  assert.equal(r.peek(perService, 'svc'), undefined)
})

test('clear drops and disposes every state', () => {
  const r = new StateRegistry()
  const a = r.slot(counters, 'a')
  r.clear()
  assert.equal(a.disposed, true)
  assert.equal(r.peek(counters, 'a'), undefined)
})

test('forget drops (and disposes) the named state of every kind of one scope, and nothing else; a forgotten name starts afresh', () => {
  const r = new StateRegistry()
  const perEndpoint = stateKind('perEndpoint', 'endpoint', (key) => new Counter(key), (c) => { c.disposed = true })
  const alsoPerEndpoint = stateKind('alsoPerEndpoint', 'endpoint', (key) => new Counter(key))
  const left = r.slot(perEndpoint, endpointStateKey('orders', '10.0.0.1:80'))
  const stays = r.slot(perEndpoint, endpointStateKey('orders', '10.0.0.2:80'))
  r.slot(alsoPerEndpoint, endpointStateKey('orders', '10.0.0.1:80'))
  // The same text as a route name: another scope, untouched.
  const route = r.slot(counters, endpointStateKey('orders', '10.0.0.1:80'))
  left.n = 5

  r.forget('endpoint', [endpointStateKey('orders', '10.0.0.1:80')])

  assert.equal(left.disposed, true)
  assert.deepEqual([...r.names('endpoint')], [endpointStateKey('orders', '10.0.0.2:80')])
  assert.equal(stays.disposed, false)
  assert.equal(r.peek(counters, endpointStateKey('orders', '10.0.0.1:80')), route)
  assert.equal(route.disposed, false)
  assert.equal(r.slot(perEndpoint, endpointStateKey('orders', '10.0.0.1:80')).n, 0, 'made afresh when the endpoint comes back')
})
