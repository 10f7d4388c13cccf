// discovery.consul.wait: every duration the schema accepts is converted exactly into what is
// sent to Consul, and a wait outside Consul's range is refused with its JSON path and the range.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { validateConfigDocument } from '../../src/config/validate.js'
import { waitMs, waitParam, waitProblem } from '../../src/config/consul-wait.js'
import { jitteredWait } from '../../src/discovery/consul/catalog-feed.js'

function withWait (wait: string): unknown {
  return { discovery: { consul: { address: '127.0.0.1:8500', wait } } }
}

test('a fractional wait like 1.5s is sent to Consul as 1500ms, not replaced by 30s', () => {
  assert.equal(waitMs('1.5s'), 1500)
  assert.equal(waitParam('1.5s'), '1500ms')
  assert.equal(jitteredWait('1.5s', () => 1), '1500ms')
})

test('a wait in hours within the range (0.1h) is converted, not replaced by 30s', () => {
  assert.equal(waitParam('0.1h'), '360000ms')
  assert.equal(validateConfigDocument(withWait('0.1h')).problems.length, 0)
})

test('the bounds of Consul\'s range, 1s and 10m, are accepted', () => {
  assert.equal(waitProblem('1s'), undefined)
  assert.equal(waitProblem('10m'), undefined)
  assert.equal(validateConfigDocument(withWait('10m')).config?.discovery.consul?.wait, '10m')
})

test('regression: wait 1h is refused at $.discovery.consul.wait with the allowed range instead of silently waiting 30s', () => {
  const { config, problems } = validateConfigDocument(withWait('1h'))
  assert.equal(config, undefined)
  assert.equal(problems.length, 1)
  assert.equal(problems[0]!.path, '$.discovery.consul.wait')
  assert.match(problems[0]!.message, /1s to 10m/)
})

test('a wait under one second is refused with the allowed range', () => {
  const { problems } = validateConfigDocument(withWait('500ms'))
  assert.deepEqual(problems.map((p) => p.path), ['$.discovery.consul.wait'])
  assert.match(problems[0]!.message, /500ms is out of range/)
})

test('a wait that is not a duration throws instead of falling back to 30s', () => {
  assert.throws(() => waitMs('soon'), /invalid duration "soon"/)
})
