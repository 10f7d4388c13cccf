// The embedded registry's bookkeeping: config endpoints vs runtime registrations, and
// immutable snapshots. No health-check timing here (only the state a new endpoint starts in).
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { EmbeddedRegistry, type EmbeddedServiceInput } from '../../src/discovery/embedded/registry.js'
import type { ServiceSnapshot } from '../../src/discovery/types.js'

function registry (t: TestContext): EmbeddedRegistry {
  const r = new EmbeddedRegistry(pino({ level: 'silent' }))
  t.after(() => r.close())
  return r
}

function ep (port: number, more: { id?: string, weight?: number, tags?: string[], meta?: Record<string, string> } = {}) {
  return { address: '127.0.0.1', port, weight: 1, tags: [], meta: {}, ...more }
}

function services (input: Record<string, EmbeddedServiceInput>): Record<string, EmbeddedServiceInput> {
  return input
}

function ids (s: ServiceSnapshot | undefined): string[] {
  return (s?.endpoints ?? []).map((e) => `${e.id}@${e.origin}`).sort()
}

test('applyConfig publishes the config endpoints, passing without a health check', (t) => {
  const r = registry(t)
  r.applyConfig(services({ users: { endpoints: [ep(1), ep(2, { id: 'u2', weight: 3, tags: ['a'], meta: { zone: 'z1' } })] } }))
  const s = r.snapshot('users')!
  assert.equal(s.service, 'users')
  assert.equal(s.stale, false)
  assert.deepEqual(ids(s), ['127.0.0.1:1@config', 'u2@config'])
  const u2 = s.endpoints.find((e) => e.id === 'u2')!
  assert.deepEqual({ ...u2, tags: [...u2.tags], meta: { ...u2.meta } }, {
    id: 'u2', service: 'users', address: '127.0.0.1', port: 2, weight: 3, tags: ['a'], meta: { zone: 'z1' }, health: 'passing', origin: 'config'
  })
})

test('register adds a runtime endpoint; re-registering the same id replaces it', (t) => {
  const r = registry(t)
  r.applyConfig(services({ users: { endpoints: [ep(1)] } }))
  const e = r.register('users', { address: '127.0.0.2', port: 80 })
  assert.equal(e.id, '127.0.0.2:80')
  assert.equal(e.origin, 'admin')
  assert.equal(e.weight, 1)
  r.register('users', { id: '127.0.0.2:80', address: '127.0.0.3', port: 81 })
  const s = r.snapshot('users')!
  assert.deepEqual(ids(s), ['127.0.0.1:1@config', '127.0.0.2:80@admin'])
  assert.equal(s.endpoints.find((x) => x.id === '127.0.0.2:80')!.address, '127.0.0.3')
})

test('register creates a service the config does not declare', (t) => {
  const r = registry(t)
  r.applyConfig(services({}))
  r.register('billing', { address: '127.0.0.1', port: 7 })
  assert.deepEqual(ids(r.snapshot('billing')), ['127.0.0.1:7@admin'])
  assert.ok(r.services().some((s) => s.service === 'billing'))
})

test('deregister removes an endpoint and says whether there was one', (t) => {
  const r = registry(t)
  r.applyConfig(services({ users: { endpoints: [ep(1)] } }))
  r.register('users', { id: 'extra', address: '127.0.0.1', port: 2 })
  assert.equal(r.deregister('users', 'extra'), true)
  assert.equal(r.deregister('users', 'extra'), false)
  assert.equal(r.deregister('nope', 'extra'), false)
  assert.deepEqual(ids(r.snapshot('users')), ['127.0.0.1:1@config'])
})

test('applyConfig keeps runtime registrations and replaces config endpoints', (t) => {
  const r = registry(t)
  r.applyConfig(services({ users: { endpoints: [ep(1), ep(2)] } }))
  r.register('users', { id: 'rt', address: '127.0.0.1', port: 9 })
  r.applyConfig(services({ users: { endpoints: [ep(2), ep(3)] } }))
  assert.deepEqual(ids(r.snapshot('users')), ['127.0.0.1:2@config', '127.0.0.1:3@config', 'rt@admin'])
})

test('a service dropped from config keeps only its runtime registrations', (t) => {
  const r = registry(t)
  r.applyConfig(services({ users: { endpoints: [ep(1)] }, orders: { endpoints: [ep(5)] } }))
  r.register('orders', { id: 'rt', address: '127.0.0.1', port: 6 })
  r.applyConfig(services({ users: { endpoints: [ep(1)] } }))
  assert.deepEqual(ids(r.snapshot('orders')), ['rt@admin'])
})

test('snapshots are frozen, and a change makes a new one while the old stays as it was', (t) => {
  const r = registry(t)
  r.applyConfig(services({ users: { endpoints: [ep(1)] } }))
  const before = r.snapshot('users')!
  assert.ok(Object.isFrozen(before))
  assert.ok(Object.isFrozen(before.endpoints))
  assert.ok(Object.isFrozen(before.endpoints[0]!.tags))
  assert.ok(Object.isFrozen(before.endpoints[0]!.meta))
  assert.throws(() => { (before.endpoints as unknown as unknown[]).push({}) }, TypeError)
  r.register('users', { address: '127.0.0.1', port: 2 })
  const after = r.snapshot('users')!
  assert.notEqual(after, before)
  assert.equal(before.endpoints.length, 1)
  assert.equal(after.endpoints.length, 2)
  assert.equal(after.endpoints.find((e) => e.port === 1), before.endpoints[0], 'an unchanged endpoint is the same object')
})

test('applying the same config again publishes nothing new', (t) => {
  const r = registry(t)
  const config = services({ users: { endpoints: [ep(1), ep(2, { tags: ['x'], meta: { a: 'b' } })] } })
  r.applyConfig(config)
  const before = r.snapshot('users')
  r.applyConfig(structuredClone(config))
  assert.equal(r.snapshot('users'), before)
})

test('a changed weight, tag or meta republishes the endpoint', (t) => {
  const r = registry(t)
  r.applyConfig(services({ users: { endpoints: [ep(1)] } }))
  const before = r.snapshot('users')!
  r.applyConfig(services({ users: { endpoints: [ep(1, { weight: 5 })] } }))
  const after = r.snapshot('users')!
  assert.notEqual(after, before)
  assert.equal(after.endpoints[0]!.weight, 5)
})

test('watch calls back at once and on every change, until unwatched', (t) => {
  const r = registry(t)
  r.applyConfig(services({ users: { endpoints: [ep(1)] } }))
  const seen: number[] = []
  const stop = r.watch('users', (s) => { seen.push(s.endpoints.length) })
  r.register('users', { address: '127.0.0.1', port: 2 })
  r.deregister('users', '127.0.0.1:2')
  stop()
  r.register('users', { address: '127.0.0.1', port: 3 })
  assert.deepEqual(seen, [1, 2, 1])
})

test('watching a service not known yet gives an empty snapshot, then its endpoints', (t) => {
  const r = registry(t)
  const seen: number[] = []
  r.watch('later', (s) => { seen.push(s.endpoints.length) })
  r.register('later', { address: '127.0.0.1', port: 1 })
  assert.deepEqual(seen, [0, 1])
})

test('with a health check, a new endpoint waits for its first passing probe', async () => {
  const r = new EmbeddedRegistry(pino({ level: 'silent' }))
  r.applyConfig(services({
    users: { endpoints: [ep(1)], healthCheck: { path: '/health', interval: '1h', timeout: '1s', healthyThreshold: 1, unhealthyThreshold: 1 } }
  }))
  const e = r.snapshot('users')!.endpoints[0]!
  assert.equal(e.health, 'critical')
  assert.equal(e.healthDetail, 'waiting for the first health check')
  assert.equal(r.isUsable(e), false)
  // Closed before the first probe's timer can fire: no socket is opened.
  await r.close()
})

test('has() is true for declared services and services with registrations', (t) => {
  const r = registry(t)
  r.applyConfig(services({ users: { endpoints: [] } }))
  assert.equal(r.has('users'), true)
  assert.equal(r.has('orders'), false)
  r.register('orders', { address: '127.0.0.1', port: 1 })
  assert.equal(r.has('orders'), true)
})
