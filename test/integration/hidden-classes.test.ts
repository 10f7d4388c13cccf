// A started gateway leaves V8's empty-object map room for new hidden-class transitions.
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

test('a gateway that validated its config, compiled plugin options and served requests leaves the empty-object map room to grow', async () => {
  const { stdout } = await run(process.execPath, ['--allow-natives-syntax', fixture], { timeout: 60_000 })
  const { statuses, room } = JSON.parse(stdout.trim().split('\n').pop()!) as { statuses: number[], room: number }
  assert.deepEqual(statuses, [200, 200, 200, 200, 200], 'the gateway served the requests and the admin API')
  // A bare Node process has room for about 1,500; ajv's optimiser left 0-25.
  assert.ok(room >= 1000, `only ${room} new transitions left on the empty-object map: something in start-up filled V8's transition table`)
})
