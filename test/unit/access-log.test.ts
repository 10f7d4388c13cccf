// The access log recorder: lines gather for one event-loop turn and reach the log
// destination as one write; a large batch goes at once; flush() writes what is pending.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setImmediate as nextTurn } from 'node:timers/promises'
import pino from 'pino'
import { accessLogRecorder, type RequestRecord } from '../../src/telemetry/access-log.js'

function destination (): { writes: string[], write(line: string): void } {
  const writes: string[] = []
  return { writes, write (line) { writes.push(line) } }
}

const record = (i: number): RequestRecord => ({ requestId: `req-${i}`, method: 'GET', path: `/p/${i}`, route: 'r', destination: 'svc', endpoint: '127.0.0.1:1', status: 200, durationMs: 0.5 })

test('lines of one event-loop turn reach the destination as one write, in order, each a JSON line', async () => {
  const dest = destination()
  const recorder = accessLogRecorder(pino({ level: 'info' }, dest), true)
  for (let i = 0; i < 5; i++) recorder.record(record(i))
  assert.equal(dest.writes.length, 0, 'nothing written before the turn ends')
  await nextTurn()
  assert.equal(dest.writes.length, 1)
  const lines = dest.writes[0]!.split('\n').filter((l) => l !== '')
  assert.deepEqual(lines.map((l) => (JSON.parse(l) as { requestId: string }).requestId), ['req-0', 'req-1', 'req-2', 'req-3', 'req-4'])
})

test('a batch that reaches 8 KiB is written at once; flush() writes the rest without waiting for the turn', async () => {
  const dest = destination()
  const recorder = accessLogRecorder(pino({ level: 'info' }, dest), true)
  let i = 0
  while (dest.writes.length === 0) recorder.record(record(i++))
  assert.ok(dest.writes[0]!.length >= 8192, `first write ${dest.writes[0]!.length} chars`)
  assert.ok(i > 10 && i < 100, `${i} lines made the first batch`)
  recorder.record(record(i))
  recorder.flush()
  assert.equal(dest.writes.length, 2)
  assert.equal((JSON.parse(dest.writes[1]!.trim()) as { requestId: string }).requestId, `req-${i}`)
  await nextTurn()
  assert.equal(dest.writes.length, 2, 'the scheduled flush finds nothing left')
})

test('no line is recorded when the level is above info, and a disabled access log writes nothing', async () => {
  const dest = destination()
  const logger = pino({ level: 'info' }, dest)
  const recorder = accessLogRecorder(logger, true)
  logger.level = 'warn'
  recorder.record(record(1))
  const off = accessLogRecorder(pino({ level: 'info' }, dest), false)
  off.record(record(2))
  off.flush()
  await nextTurn()
  assert.deepEqual(dest.writes, [])
})

test('lines still pending when the process exits (process.exit, a crash) are written out', async () => {
  const { execFile } = await import('node:child_process')
  const { promisify } = await import('node:util')
  const { fileURLToPath } = await import('node:url')
  const accessLog = fileURLToPath(new URL('../../src/telemetry/access-log.js', import.meta.url))
  const logger = fileURLToPath(new URL('../../src/telemetry/logger.js', import.meta.url))
  // The gateway's own destination (asynchronous, 12 KiB buffer); exit before the turn ends.
  const script = `
    const { accessLogRecorder } = await import(${JSON.stringify(accessLog)})
    const { createLogger } = await import(${JSON.stringify(logger)})
    const recorder = accessLogRecorder(createLogger({ level: 'info' }), true)
    for (let i = 0; i < 3; i++) recorder.record({ requestId: 'exit-' + i, method: 'GET', path: '/', route: 'r', destination: undefined, endpoint: undefined, status: 200, durationMs: 1 })
    process.exit(0)`
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 })
  const ids = stdout.split('\n').filter((l) => l.includes('"log":"access"')).map((l) => (JSON.parse(l) as { requestId: string }).requestId)
  assert.deepEqual(ids, ['exit-0', 'exit-1', 'exit-2'])
})
