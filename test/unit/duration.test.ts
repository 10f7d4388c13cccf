// The one duration syntax (src/config/duration.ts): the schema validates with its pattern, the
// CLI checks with it, and every string it accepts converts to milliseconds and to what Consul gets.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DURATION_PATTERN, durationMs, goDuration, isDuration } from '../../src/config/duration.js'
import { Duration } from '../../src/config/schema.js'
import { validateConfigDocument } from '../../src/config/validate.js'
import { spawnCli } from '../helpers/cli.js'
import { freePort } from '../helpers/ports.js'

const ACCEPTED: ReadonlyArray<[string, number]> = [['250ms', 250], ['0.5ms', 1], ['5s', 5000], ['1.5s', 1500], ['2m', 120_000], ['0.1h', 360_000], ['1h', 3_600_000]]
const REFUSED = ['15', 's', '1.s', '.5s', '-1s', '1 s', '1h30m', '5S', '10us', '']

function routeTimeoutProblems (timeout: string): string[] {
  const doc = {
    discovery: { embedded: { services: { users: { endpoints: [{ address: '127.0.0.1', port: 9301 }] } } } },
    routes: [{ name: 'a', destination: { service: 'users' }, timeout }]
  }
  return validateConfigDocument(doc).problems.map((p) => p.path)
}

test('the schema\'s Duration pattern is the parser\'s pattern', () => {
  assert.equal(Duration.pattern, DURATION_PATTERN)
})

test('every duration the schema accepts converts to whole milliseconds', () => {
  for (const [text, ms] of ACCEPTED) {
    assert.deepEqual(routeTimeoutProblems(text), [], `${text} is valid config`)
    assert.equal(isDuration(text), true, text)
    assert.equal(durationMs(text), ms, text)
  }
})

test('what the schema refuses, the parser refuses too', () => {
  for (const text of REFUSED) {
    assert.deepEqual(routeTimeoutProblems(text), ['$.routes[0].timeout'], `${JSON.stringify(text)} is a config problem`)
    assert.equal(isDuration(text), false, text)
    assert.throws(() => durationMs(text), /invalid duration/, text)
  }
})

test('a duration goes to Consul as whole milliseconds in Go syntax', () => {
  assert.equal(goDuration('1.5s'), '1500ms')
  assert.equal(goDuration('10s'), '10000ms')
  assert.equal(goDuration('0.1h'), '360000ms')
})

test('regression: fastmesh register accepts a fractional duration (1.5s) that the config accepts', async () => {
  // Nothing listens at the Consul address: the flags pass the usage check, then the call fails (exit 1).
  const consul = `127.0.0.1:${await freePort()}`
  const ok = await spawnCli(['register', '--name', 'web', '--port', '80', '--check-ttl', '1.5s', '--consul', consul])
  assert.doesNotMatch(ok.stderr, /takes a duration/)
  assert.equal(ok.code, 1, ok.stderr)
  const bad = await spawnCli(['register', '--name', 'web', '--port', '80', '--check-ttl', '1h30m', '--consul', consul])
  assert.equal(bad.code, 2)
  assert.match(bad.stderr, /--check-ttl takes a duration like 10s or 1.5s, got "1h30m"/)
})
