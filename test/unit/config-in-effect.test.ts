// After a reload: which changed keys wait for a restart, the config in effect, and where a
// config's relative paths are resolved from.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { dirname, resolve } from 'node:path'
import { configBaseDir, checkConfig } from '../../src/config/load.js'
import { configInEffect, pendingRestart } from '../../src/config/in-effect.js'
import type { FastmeshConfig } from '../../src/config/validate.js'

function config (extra: Record<string, unknown> = {}): FastmeshConfig {
  return checkConfig({
    listeners: { http: { address: '127.0.0.1', port: 8080 } },
    discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9000 }] } } } },
    routes: [{ name: 'all', destination: { service: 'svc' } }],
    ...extra
  }, 'test.yaml', {}).config
}

test('a changed listener port is pending restart, named by its dotted path', () => {
  const started = config()
  const latest = config({ listeners: { http: { address: '127.0.0.1', port: 9090 } } })
  assert.deepEqual(pendingRestart(started, latest), ['listeners.http.port'])
})

test('an added discovery.consul section is pending restart', () => {
  assert.deepEqual(pendingRestart(config(), config({ discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9000 }] } } }, consul: {} } })), ['discovery.consul'])
})

test('route changes are not pending restart', () => {
  assert.deepEqual(pendingRestart(config(), config({ routes: [{ name: 'other', destination: { service: 'svc' } }] })), [])
})

test('the config in effect keeps the started listeners and takes the new routes', () => {
  const started = config()
  const effective = configInEffect(started, config({ listeners: { http: { address: '127.0.0.1', port: 9090 } }, routes: [{ name: 'other', destination: { service: 'svc' } }] }))
  assert.equal(effective.listeners.http.port, 8080)
  assert.deepEqual(effective.routes.map((r) => r.name), ['other'])
})

test('the config in effect drops a discovery.consul section added by a reload', () => {
  const effective = configInEffect(config(), config({ discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9000 }] } } }, consul: {} } }))
  assert.equal(effective.discovery.consul, undefined)
  assert.equal(Object.hasOwn(effective.discovery, 'consul'), false)
})

test('relative paths of a file config resolve from the file\'s directory', () => {
  assert.equal(configBaseDir('conf/edge.yaml'), dirname(resolve('conf/edge.yaml')))
})

test('relative paths of a Consul KV config resolve from the working directory', () => {
  assert.equal(configBaseDir('kv:fastmesh/config/shared+fastmesh/config/edge'), process.cwd())
})
