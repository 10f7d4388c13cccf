// WorkerSnapshots: the workers' request series as one snapshot for the service graph. Adds
// workers up, keeps each series at its first index, and never lets a count go down when a
// worker is replaced (its last counts stay in a base).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { WorkerSnapshots } from '../../src/workers/worker-snapshots.js'
import type { MetricsSnapshot, RequestSeriesSnapshot } from '../../src/telemetry/metrics.js'

function series (route: string, count: number, statusClass: RequestSeriesSnapshot['statusClass'] = '2xx'): RequestSeriesSnapshot {
  return { direction: 'edge', source: '', destination: 'up', route, statusClass, count, gatewayErrors: statusClass === '5xx' ? count : 0, durationSumSeconds: count / 100, buckets: [count, 0, count] }
}

function snap (list: RequestSeriesSnapshot[], errors: Record<string, number> = {}): MetricsSnapshot {
  return { series: list, errors: Object.entries(errors).map(([code, count]) => ({ code, count })) }
}

test('two workers add up per series and per error code; series keep the index they were first seen at', () => {
  const w = new WorkerSnapshots()
  w.update(1, 101, snap([series('a', 3)], { FASTMESH_ERR_OVERFLOW: 1 }))
  w.update(2, 102, snap([series('b', 5), series('a', 2)], { FASTMESH_ERR_OVERFLOW: 2, FASTMESH_ERR_FORBIDDEN: 4 }))
  const m = w.merged()
  assert.deepEqual(m.series.map((s) => [s.route, s.count, s.buckets]), [['a', 5, [5, 0, 5]], ['b', 5, [5, 0, 5]]])
  assert.ok(Math.abs(m.series[0]!.durationSumSeconds - 0.05) < 1e-9)
  assert.deepEqual(m.errors, [{ code: 'FASTMESH_ERR_FORBIDDEN', count: 4 }, { code: 'FASTMESH_ERR_OVERFLOW', count: 3 }])
  // A new series of worker 1 is appended; the old ones keep their places.
  w.update(1, 101, snap([series('a', 4), series('c', 1, '5xx')]))
  assert.deepEqual(w.merged().series.map((s) => [s.route, s.count, s.gatewayErrors]), [['a', 6, 0], ['b', 5, 0], ['c', 1, 1]])
})

test('a replaced worker\'s counts stay: the merged counts never go down', () => {
  const w = new WorkerSnapshots()
  w.update(1, 101, snap([series('a', 10)], { FASTMESH_ERR_OVERFLOW: 2 }))
  w.update(2, 102, snap([series('a', 7)]))
  assert.equal(w.merged().series[0]!.count, 17)
  // Slot 1 has a new process, which starts from zero.
  w.update(1, 201, snap([]))
  const after = w.merged()
  assert.equal(after.series[0]!.count, 17)
  assert.deepEqual(after.errors, [{ code: 'FASTMESH_ERR_OVERFLOW', count: 2 }])
  w.update(1, 201, snap([series('a', 1)]))
  assert.equal(w.merged().series[0]!.count, 18)
  // The same process reporting again replaces its own last snapshot, it does not add to it.
  w.update(2, 102, snap([series('a', 8)]))
  assert.equal(w.merged().series[0]!.count, 19)
})
