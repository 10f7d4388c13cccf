// Started gateways leave V8's empty-object map room for new hidden-class transitions.
// When that room runs out (ajv's code optimiser once used it all up), Node's own tick
// objects stop sharing a hidden class and every process.nextTick got about 6x dearer:
// some 5 µs per proxied request. See src/config/ajv-options.ts.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'

const run = promisify(execFile)
const fixture = fileURLToPath(new URL('../fixtures/transition-room.js', import.meta.url))

/**
 * Room left after start-up, measured in a child process. No major GC may run there (it would
 * clear dead transitions and hide a full table): a large initial old space and no memory
 * reducer keep V8 from one, and the fixture counts them to prove it.
 */
async function roomAfterStart (mode: 'edge' | 'node'): Promise<{ statuses: number[], room: number }> {
  const flags = ['--allow-natives-syntax', '--initial-old-space-size=512', '--no-memory-reducer']
  const { stdout } = await run(process.execPath, [...flags, fixture, mode], { timeout: 60_000 })
  const result = JSON.parse(stdout.trim().split('\n').pop()!) as { statuses: number[], room: number, majorGcs: number }
  assert.equal(result.majorGcs, 0, 'a major GC ran during the measurement, which could have hidden a full transition table')
  return result
}

// A bare Node process has room for about 1,500. Right after start-up a gateway leaves about
// 1,050 (edge, or two node gateways with mTLS); with ajv's optimiser on it left 0-25.
const MIN_ROOM = 500

test('an edge gateway that validated its config, compiled plugin options and served requests leaves the empty-object map room to grow', async () => {
  const { statuses, room } = await roomAfterStart('edge')
  assert.deepEqual(statuses, [200, 200, 200, 200, 200], 'the gateway served the requests and the admin API')
  assert.ok(room >= MIN_ROOM, `only ${room} new transitions left on the empty-object map: something in start-up filled V8's transition table`)
})

test('two node gateways that carried calls over mTLS (identity, authorization) leave the empty-object map room to grow', async () => {
  const { statuses, room } = await roomAfterStart('node')
  assert.deepEqual(statuses, [200, 200, 200, 200, 200], 'app → node A → mTLS → node B → upstream, and the admin API')
  assert.ok(room >= MIN_ROOM, `only ${room} new transitions left on the empty-object map: something in start-up filled V8's transition table`)
})
