// The access log recorder: lines gather for one event-loop turn and reach the log
// destination as one write; a large batch goes at once; flush() writes what is pending.
// Its lines: trace ids when given, query-string credentials redacted; sampling keeps failures.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setImmediate as nextTurn } from 'node:timers/promises'
import pino from 'pino'
import { accessLogRecorder, accessLogSettings, formatAccessLine, type RequestRecord } from '../../src/telemetry/access-log.js'
import { REDACTED } from '../../src/config/redact.js'

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

test('traceId and spanId are written when the record has them, and absent otherwise', () => {
  const traced = JSON.parse(formatAccessLine({ ...record(1), traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7' }, 1)) as Record<string, unknown>
  assert.equal(traced.traceId, '4bf92f3577b34da6a3ce929d0e0e4736')
  assert.equal(traced.spanId, '00f067aa0ba902b7')
  const plain = JSON.parse(formatAccessLine(record(1), 1)) as Record<string, unknown>
  assert.equal('traceId' in plain, false)
  assert.equal('spanId' in plain, false)
})

test('credential-bearing query parameters are redacted in the path; the rest of the target is kept as sent', () => {
  const line = (path: string): string => (JSON.parse(formatAccessLine({ ...record(1), path }, 1)) as { path: string }).path
  assert.equal(line('/p/1'), '/p/1')
  assert.equal(line('/p?page=2&q=x'), '/p?page=2&q=x')
  assert.equal(line('/p?access_token=S1&page=2'), `/p?access_token=${REDACTED}&page=2`)
  assert.equal(line('/p?page=2&API_KEY=S2&sig=S3&code=S4&password=S5&id_token=S6&refresh_token=S7&client_secret=S8&auth=S9&Signature=S10&key=S11'),
    `/p?page=2&API_KEY=${REDACTED}&sig=${REDACTED}&code=${REDACTED}&password=${REDACTED}&id_token=${REDACTED}&refresh_token=${REDACTED}&client_secret=${REDACTED}&auth=${REDACTED}&Signature=${REDACTED}&key=${REDACTED}`)
  assert.equal(line('/p?access%5Ftoken=S1&page=2'), `/p?access%5Ftoken=${REDACTED}&page=2`, 'a percent-encoded name is judged decoded')
})

test('accessLog: true/false and { enabled, sampleRatio } mean what they say', () => {
  assert.deepEqual(accessLogSettings(true), { enabled: true, sampleRatio: 1 })
  assert.deepEqual(accessLogSettings(false), { enabled: false, sampleRatio: 1 })
  assert.deepEqual(accessLogSettings({}), { enabled: true, sampleRatio: 1 })
  assert.deepEqual(accessLogSettings({ sampleRatio: 0.25 }), { enabled: true, sampleRatio: 0.25 })
  assert.deepEqual(accessLogSettings({ enabled: false, sampleRatio: 0.25 }), { enabled: false, sampleRatio: 0.25 })
})

/** Records `records` through a recorder with `sampleRatio` and returns the request ids written. */
async function written (sampleRatio: number, records: RequestRecord[]): Promise<string[]> {
  const dest = destination()
  const recorder = accessLogRecorder(pino({ level: 'info' }, dest), { sampleRatio })
  for (const r of records) recorder.record(r)
  recorder.flush()
  await nextTurn()
  return dest.writes.join('').split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { requestId: string }).requestId)
}

const success = (i: number): RequestRecord => ({ ...record(i), requestId: `ok-${i}` })
/** Failures of every kind that must be written: 4xx, 5xx, no answer, gateway error code, upstream cause, injected fault. */
const failure = (i: number): RequestRecord => {
  const base = { ...record(i), requestId: `fail-${i}` }
  switch (i % 6) {
    case 0: return { ...base, status: 404, error: 'FASTMESH_ERR_NO_ROUTE' }
    case 1: return { ...base, status: 503 }
    case 2: return { ...base, status: 0, error: 'FASTMESH_ERR_CLIENT_CLOSED' }
    case 3: return { ...base, status: 200, error: 'FASTMESH_ERR_INTERNAL' }
    case 4: return { ...base, status: 200, cause: 'reset: ECONNRESET' }
    default: return { ...base, status: 200, fault: 'delay' }
  }
}

test('sampling at 0.1: every failure is written, and successes within binomial bounds', async () => {
  const N = 5000
  const M = 300
  const records: RequestRecord[] = []
  for (let i = 0; i < N; i++) records.push(success(i))
  for (let i = 0; i < M; i++) records.splice(i * 17, 0, failure(i))
  const ids = await written(0.1, records)
  const failures = ids.filter((id) => id.startsWith('fail-'))
  const successes = ids.filter((id) => id.startsWith('ok-'))
  assert.equal(failures.length, M, 'every failure written')
  // Binomial(5000, 0.1): mean 500, sd 21.2; ±5 sd. Ids differ in their last characters only,
  // which a weak hash would cluster.
  assert.ok(successes.length > 394 && successes.length < 606, `${successes.length} of ${N} successes written`)
})

test('sampling is decided by the request id: the same ids give the same lines; ratio 0 writes failures only, ratio 1 everything', async () => {
  const records = Array.from({ length: 400 }, (_, i) => success(i))
  const first = await written(0.3, records)
  assert.deepEqual(await written(0.3, records), first)
  assert.ok(first.length > 0 && first.length < 400)
  assert.deepEqual(await written(0, [...records, failure(1), failure(4)]), ['fail-1', 'fail-4'])
  assert.equal((await written(1, records)).length, 400)
})

test('a logger without a stream to append to (not pino\'s own) gets the same redacted, sampled record', () => {
  const entries: Array<Record<string, unknown>> = []
  const bindings: Array<Record<string, unknown>> = []
  const foreign = { child (b: Record<string, unknown>) { bindings.push(b); return { info (o: Record<string, unknown>) { entries.push(o) } } } }
  const recorder = accessLogRecorder(foreign as unknown as Parameters<typeof accessLogRecorder>[0], { sampleRatio: 0 })
  recorder.record({ ...record(1), path: '/x?token=S1&page=2' })
  recorder.record({ ...failure(1), path: '/x?token=S2&page=2' })
  assert.deepEqual(bindings, [{ log: 'access' }])
  assert.equal(entries.length, 1)
  assert.equal(entries[0]!.requestId, 'fail-1')
  assert.equal(entries[0]!.path, `/x?token=${REDACTED}&page=2`)
})
