// Passive outlier detection of one service, with a fake clock: what ejects an endpoint, for
// how long, how many may be out at once, panic, and what admin and the log see.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { OutlierDetector, OutlierStore, outlierSettings, outlierStoreKind, type OutlierEvent, type OutlierSettings } from '../../src/balancer/outlier.js'
import { StateRegistry } from '../../src/state/registry.js'
import type { AttemptOutcome } from '../../src/balancer/types.js'
import { Value } from '@sinclair/typebox/value'
import { OutlierDetectionSchema, type OutlierDetectionConfig } from '../../src/config/schema.js'

const GATEWAY_ERROR: AttemptOutcome = { status: 0, gatewayError: true, latencyMs: 1 }
const OK: AttemptOutcome = { status: 200, gatewayError: false, latencyMs: 1 }
const E500: AttemptOutcome = { status: 500, gatewayError: false, latencyMs: 1 }
const REFUSED: AttemptOutcome = { status: 0, gatewayError: true, unreachable: true, latencyMs: 1 }
const CLIENT_GONE: AttemptOutcome = { status: 0, gatewayError: false, latencyMs: 1 }

function settings (more: Partial<OutlierSettings> = {}): OutlierSettings {
  return { ...outlierSettings(), ...more }
}

function targets (n: number): Array<{ endpoint: { id: string } }> {
  return Array.from({ length: n }, (_, i) => ({ endpoint: { id: `e${i}` } }))
}

function ids (ts: readonly { endpoint: { id: string } }[]): string[] {
  return ts.map((t) => t.endpoint.id)
}

/** A detector over `n` candidates (so max ejection percent has its base), with its events. */
function detector (more: Partial<OutlierSettings> = {}, n = 10) {
  const events: OutlierEvent[] = []
  const d = new OutlierDetector('orders', settings(more), new OutlierStore(), { onChange: (e) => { events.push(e) } })
  const ts = targets(n)
  d.usable(ts, 0)
  return { d, events, ts }
}

function fail (d: OutlierDetector, id: string, times: number, now: number, outcome = GATEWAY_ERROR): void {
  for (let i = 0; i < times; i++) d.report(id, outcome, now)
}

test('defaults with no config: on, 5 consecutive gateway errors, 5xx rule off, 30s base, 50% max ejected, panic below 50%, unreachable probed from 250ms to 2s', () => {
  assert.deepEqual(outlierSettings(), {
    enabled: true,
    consecutiveGatewayErrors: 5,
    consecutive5xx: 0,
    baseEjectionTimeMs: 30_000,
    maxEjectionTimeMs: 300_000,
    maxEjectionPercent: 50,
    panicThreshold: 50,
    unreachable: { baseMs: 250, maxMs: 2000 }
  })
})

test('5 consecutive gateway errors eject an endpoint by default; 4 do not', () => {
  const { d } = detector()
  fail(d, 'e0', 4, 1000)
  assert.equal(d.isEjected('e0', 1000), false)
  fail(d, 'e0', 1, 1000)
  assert.equal(d.isEjected('e0', 1000), true)
  assert.equal(d.isEjected('e1', 1000), false)
})

test('a success resets the consecutive gateway error count', () => {
  const { d } = detector()
  fail(d, 'e0', 4, 0)
  d.report('e0', OK, 0)
  fail(d, 'e0', 4, 0)
  assert.equal(d.isEjected('e0', 0), false)
  assert.equal(d.view('e0', 0).consecutiveGatewayErrors, 4)
})

test('a client that went away (no status, no gateway error) neither counts nor resets', () => {
  const { d } = detector()
  fail(d, 'e0', 4, 0)
  d.report('e0', CLIENT_GONE, 0)
  fail(d, 'e0', 1, 0)
  assert.equal(d.isEjected('e0', 0), true)
})

test('regression: 502, 503 and 504 answers count as gateway errors, so an endpoint answering them to everything is ejected by default', () => {
  for (const status of [502, 503, 504]) {
    const { d } = detector()
    fail(d, 'e0', 4, 0, { status, gatewayError: false, latencyMs: 1 })
    assert.equal(d.isEjected('e0', 0), false)
    fail(d, 'e0', 1, 0, { status, gatewayError: false, latencyMs: 1 })
    assert.equal(d.isEjected('e0', 0), true, `${status}`)
    assert.equal(d.view('e0', 0).reason, '5 consecutive gateway errors')
  }
})

test('a plain 500 is not a gateway error: it breaks a run of them', () => {
  const { d } = detector()
  fail(d, 'e0', 4, 0, { status: 503, gatewayError: false, latencyMs: 1 })
  fail(d, 'e0', 1, 0, E500)
  fail(d, 'e0', 4, 0, { status: 502, gatewayError: false, latencyMs: 1 })
  assert.equal(d.isEjected('e0', 0), false)
})

test('5xx answers do not eject by default (the 5xx rule is off)', () => {
  const { d } = detector()
  fail(d, 'e0', 50, 0, E500)
  assert.equal(d.isEjected('e0', 0), false)
})

test('with consecutive5xx set, that many 5xx answers eject, gateway errors counting as 5xx', () => {
  const { d } = detector({ consecutive5xx: 3, consecutiveGatewayErrors: 0 })
  fail(d, 'e0', 2, 0, E500)
  fail(d, 'e0', 1, 0, GATEWAY_ERROR)
  assert.equal(d.isEjected('e0', 0), true)
  assert.equal(d.view('e0', 0).reason, '3 consecutive 5xx')
})

test('disabled detection never ejects', () => {
  const { d } = detector({ enabled: false })
  fail(d, 'e0', 100, 0)
  assert.equal(d.isEjected('e0', 0), false)
})

test('an ejected endpoint returns once base ejection time has passed, with its counts reset', () => {
  const { d, events } = detector({ baseEjectionTimeMs: 30_000 })
  fail(d, 'e0', 5, 1000)
  assert.equal(d.isEjected('e0', 30_999), true)
  assert.equal(d.isEjected('e0', 31_000), false)
  assert.deepEqual(events.map((e) => [e.type, e.endpointId]), [['ejected', 'e0'], ['returned', 'e0']])
  assert.equal(d.view('e0', 31_000).consecutiveGatewayErrors, 0)
})

test('the n-th ejection in a row lasts n times base ejection time, capped by max ejection time', () => {
  const { d, events } = detector({ baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 25_000 })
  let now = 0
  const durations: number[] = []
  for (let n = 0; n < 4; n++) {
    fail(d, 'e0', 5, now)
    const until = d.view('e0', now).until!
    durations.push(until - now)
    // Fail again right after it returns: no time back to lower the multiplier.
    now = until
    assert.equal(d.isEjected('e0', now), false)
  }
  assert.deepEqual(durations, [10_000, 20_000, 25_000, 25_000])
  assert.deepEqual(events.filter((e) => e.type === 'ejected').map((e) => e.ejections), [1, 2, 3, 4])
})

test('the multiplier falls by one for each base ejection time an endpoint stays back', () => {
  const { d } = detector({ baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 1_000_000 })
  fail(d, 'e0', 5, 0) // 1st: until 10s
  fail(d, 'e0', 5, 10_000) // 2nd: until 30s
  fail(d, 'e0', 5, 30_000) // 3rd: until 60s
  // Back at 60s; 20s later the multiplier has fallen from 3 to 1, so this one is the 2nd.
  assert.equal(d.isEjected('e0', 60_000), false)
  fail(d, 'e0', 5, 80_000)
  assert.equal(d.view('e0', 80_000).ejections, 2)
  assert.equal(d.view('e0', 80_000).until, 100_000)
})

test('outcomes of attempts in flight when an endpoint was ejected change nothing', () => {
  const { d } = detector()
  fail(d, 'e0', 5, 0)
  const until = d.view('e0', 0).until
  d.report('e0', OK, 10)
  fail(d, 'e0', 10, 10)
  assert.equal(d.view('e0', 10).until, until)
  assert.equal(d.view('e0', 10).ejections, 1)
})

test('usable leaves ejected endpoints out', () => {
  const { d, ts } = detector({}, 4)
  fail(d, 'e2', 5, 0)
  assert.deepEqual(ids(d.usable(ts, 0)), ['e0', 'e1', 'e3'])
  assert.deepEqual(ids(d.usable(ts, 30_000)), ['e0', 'e1', 'e2', 'e3'])
})

test('usable returns the very same array while nothing is ejected (no allocation per pick)', () => {
  const { d, ts } = detector({}, 4)
  assert.equal(d.usable(ts, 0), ts)
  fail(d, 'e0', 5, 0)
  const a = d.usable(ts, 1)
  assert.equal(d.usable(ts, 2), a, 'cached until an ejection or return')
})

test('max ejection percent: no more than that share of the endpoints is out at once', () => {
  const { d, ts, events } = detector({ maxEjectionPercent: 20 }, 10)
  for (const id of ['e0', 'e1', 'e2', 'e3']) fail(d, id, 5, 0)
  assert.deepEqual(ids(ts).filter((id) => d.isEjected(id, 0)), ['e0', 'e1'])
  assert.equal(events.length, 2)
  // When one returns, the next failure of a held-back endpoint ejects it.
  assert.equal(d.isEjected('e0', 30_000), false)
  fail(d, 'e2', 1, 30_000)
  assert.equal(d.isEjected('e2', 30_000), true)
})

test('max ejection percent always allows one ejection, even of a small service', () => {
  const { d } = detector({ maxEjectionPercent: 10 }, 3)
  fail(d, 'e0', 5, 0)
  fail(d, 'e1', 5, 0)
  assert.equal(d.isEjected('e0', 0), true)
  assert.equal(d.isEjected('e1', 0), false)
})

test('max ejection percent 0 ejects nothing', () => {
  const { d } = detector({ maxEjectionPercent: 0 }, 3)
  fail(d, 'e0', 5, 0)
  assert.equal(d.isEjected('e0', 0), false)
})

test('panic: below the panic threshold every endpoint is used, ejections ignored', () => {
  const { d, ts } = detector({ maxEjectionPercent: 100, panicThreshold: 50 }, 4)
  fail(d, 'e0', 5, 0)
  fail(d, 'e1', 5, 0)
  // 2 of 4 left = 50%: not below the threshold.
  assert.deepEqual(ids(d.usable(ts, 0)), ['e2', 'e3'])
  assert.equal(d.degraded(ts, 0), false)
  fail(d, 'e2', 5, 0)
  // 1 of 4 left = 25% < 50%: panic.
  assert.deepEqual(ids(d.usable(ts, 0)), ['e0', 'e1', 'e2', 'e3'])
  assert.equal(d.degraded(ts, 0), true)
  assert.equal(d.inPanic, true)
})

test('panic threshold 0: with every endpoint ejected none is usable', () => {
  const { d, ts } = detector({ maxEjectionPercent: 100, panicThreshold: 0 }, 2)
  fail(d, 'e0', 5, 0)
  fail(d, 'e1', 5, 0)
  assert.deepEqual(ids(d.usable(ts, 0)), [])
})

test('a single endpoint that dies is ejected, and panic keeps it in use (nothing else to try)', () => {
  const { d, ts } = detector({}, 1)
  fail(d, 'e0', 5, 0)
  assert.equal(d.isEjected('e0', 0), true)
  assert.deepEqual(ids(d.usable(ts, 0)), ['e0'])
  assert.equal(d.degraded(ts, 0), true)
})

test('snapshot shows each endpoint\'s state, until, reason and counts for admin', () => {
  const { d } = detector({ baseEjectionTimeMs: 30_000 })
  fail(d, 'e0', 5, 1000)
  fail(d, 'e1', 2, 1000)
  assert.deepEqual(d.snapshot(1000), {
    e0: { state: 'ejected', until: 31_000, reason: '5 consecutive gateway errors', ejections: 1, consecutive5xx: 5, consecutiveGatewayErrors: 5 },
    e1: { state: 'healthy', ejections: 0, consecutive5xx: 2, consecutiveGatewayErrors: 2 }
  })
  assert.deepEqual(d.view('e9', 1000), { state: 'healthy', ejections: 0, consecutive5xx: 0, consecutiveGatewayErrors: 0 })
  assert.equal(d.snapshot(31_000).e0!.state, 'healthy')
})

test('ejections and returns are logged through the logger passed in', () => {
  const lines: Array<[string, Record<string, unknown>, string]> = []
  const log = {
    warn: (o: Record<string, unknown>, m: string) => { lines.push(['warn', o, m]) },
    info: (o: Record<string, unknown>, m: string) => { lines.push(['info', o, m]) }
  }
  const d = new OutlierDetector('orders', settings(), new OutlierStore(), { log: log as never })
  d.usable(targets(4), 0)
  fail(d, 'e0', 5, 0)
  d.isEjected('e0', 30_000)
  assert.deepEqual(lines.map(([level, o, m]) => [level, o.service, o.endpoint, m]), [
    ['warn', 'orders', 'e0', 'outlier detection ejected an endpoint'],
    ['info', 'orders', 'e0', 'ejected endpoint returned to rotation']
  ])
  assert.equal(lines[0]![1].reason, '5 consecutive gateway errors')
})

test('ejections survive a reload: a new version\'s detector over the same stored state sees them', () => {
  const state = new StateRegistry()
  const key = '["orders",null,null,[],{}]'
  const v1 = new OutlierDetector('orders', settings(), state.slot(outlierStoreKind, key))
  v1.usable(targets(4), 0)
  fail(v1, 'e0', 5, 0)
  const v2 = new OutlierDetector('orders', settings({ baseEjectionTimeMs: 1000 }), state.slot(outlierStoreKind, key))
  assert.equal(v2.isEjected('e0', 10_000), true, 'the ejection made under v1 (30 s) still holds')
  assert.equal(v2.isEjected('e0', 30_000), false)
})

test('prune forgets endpoints discovery no longer lists, ejected ones included', () => {
  const { d } = detector()
  fail(d, 'e0', 5, 0)
  fail(d, 'e1', 3, 0)
  d.store.prune(['e1'])
  assert.deepEqual(Object.keys(d.snapshot(0)), ['e1'])
  assert.equal(d.store.ejected.size, 0)
})

// Success-rate rule (as Envoy's): judged once per interval, when an outcome arrives after it.
const SR = { minimumHosts: 5, requestVolume: 100, stdevFactor: 1.9, intervalMs: 10_000 }

/** Reports `[successes, 5xx answers]` on e0, e1, ... at `now`. */
function traffic (d: OutlierDetector, counts: ReadonlyArray<readonly [number, number]>, now: number): void {
  counts.forEach(([ok, failed], i) => {
    fail(d, `e${i}`, ok, now, OK)
    fail(d, `e${i}`, failed, now, E500)
  })
}

/** Five endpoints at about 99% success, the sixth at 50%, 100 requests each. */
const ONE_BAD: ReadonlyArray<readonly [number, number]> = [[99, 1], [98, 2], [99, 1], [100, 0], [99, 1], [50, 50]]

function ejectedIds (d: OutlierDetector, ts: readonly { endpoint: { id: string } }[], now: number): string[] {
  return ids(ts).filter((id) => d.isEjected(id, now))
}

test('success rate: is off by default, and successRate.enabled turns it on with Envoy\'s defaults', () => {
  assert.equal(outlierSettings().successRate, undefined)
  const on = Value.Default(OutlierDetectionSchema, { successRate: { enabled: true } }) as OutlierDetectionConfig
  assert.deepEqual(outlierSettings(on).successRate, SR)
  const off = Value.Default(OutlierDetectionSchema, { successRate: {} }) as OutlierDetectionConfig
  assert.equal(outlierSettings(off).successRate, undefined)
})

test('success rate: an endpoint far below the others is ejected when the interval ends, with the reason', () => {
  const { d, ts, events } = detector({ successRate: SR }, 6)
  traffic(d, ONE_BAD, 1000)
  assert.deepEqual(ejectedIds(d, ts, 10_999), [], 'nothing is judged before the interval ends')
  d.report('e0', OK, 11_000)
  assert.deepEqual(ejectedIds(d, ts, 11_000), ['e5'])
  assert.deepEqual(d.view('e5', 11_000), {
    state: 'ejected',
    until: 41_000,
    reason: 'success rate 0.50 below 0.56 (mean 0.91 − 1.9 × stdev 0.18)',
    ejections: 1,
    consecutive5xx: 50,
    consecutiveGatewayErrors: 0
  })
  assert.deepEqual(events.map((e) => [e.type, e.endpointId]), [['ejected', 'e5']])
})

test('success rate: the same traffic without the rule ejects nothing (off by default)', () => {
  const { d, ts } = detector({}, 6)
  traffic(d, ONE_BAD, 1000)
  d.report('e0', OK, 11_000)
  assert.deepEqual(ejectedIds(d, ts, 11_000), [])
})

test('success rate: endpoints below requestVolume are not judged', () => {
  // 100 requests each, one short of the volume.
  const { d, ts } = detector({ successRate: { ...SR, requestVolume: 101 } }, 6)
  traffic(d, ONE_BAD, 1000)
  d.report('e0', OK, 11_000)
  assert.deepEqual(ejectedIds(d, ts, 11_000), [])
})

test('success rate: fewer than minimumHosts judged endpoints eject nothing', () => {
  const { d, ts } = detector({ successRate: { ...SR, minimumHosts: 7 } }, 6)
  traffic(d, ONE_BAD, 1000)
  d.report('e0', OK, 11_000)
  assert.deepEqual(ejectedIds(d, ts, 11_000), [])
})

test('success rate: each interval counts afresh (requests of the last one do not add up)', () => {
  const half = ONE_BAD.map(([ok, failed]) => [Math.ceil(ok / 2), Math.ceil(failed / 2)] as const)
  const { d, ts } = detector({ successRate: SR }, 6)
  traffic(d, half, 1000)
  traffic(d, half, 11_000)
  d.report('e0', OK, 21_000)
  assert.deepEqual(ejectedIds(d, ts, 21_000), [])
})

test('success rate: client aborts count neither as requests nor as failures', () => {
  const { d, ts } = detector({ successRate: SR }, 6)
  traffic(d, ONE_BAD, 1000)
  fail(d, 'e5', 1000, 1000, CLIENT_GONE)
  d.report('e0', OK, 11_000)
  assert.match(d.view('e5', 11_000).reason ?? '', /^success rate 0\.50 /)
  assert.deepEqual(ejectedIds(d, ts, 11_000), ['e5'])
})

test('success rate: max ejection percent holds back outliers beyond the allowed share', () => {
  const counts = [...Array.from({ length: 18 }, () => [100, 0] as const), [50, 50] as const, [50, 50] as const]
  const { d, ts, events } = detector({ successRate: SR, maxEjectionPercent: 5 }, 20)
  traffic(d, counts, 1000)
  d.report('e0', OK, 11_000)
  assert.deepEqual(ejectedIds(d, ts, 11_000), ['e18'])
  assert.equal(events.length, 1)
})

// Unreachable endpoints: a connection could not be made. Out at once, back once a probe connects.

test('regression: a refused connection takes an endpoint out at once, beyond max ejection percent (which left a dead endpoint usable)', () => {
  const { d, ts, events } = detector({ maxEjectionPercent: 50 }, 3)
  d.report('e0', REFUSED, 0)
  d.report('e1', REFUSED, 0)
  assert.deepEqual(ids(d.usable(ts, 0)), ['e2'])
  assert.equal(d.isEjected('e0', 0), false, 'not an ejection: no ejection time, no multiplier')
  assert.equal(d.isUnreachable('e0'), true)
  assert.deepEqual(events.map((e) => [e.type, e.endpointId]), [['unreachable', 'e0'], ['unreachable', 'e1']])
  assert.equal(d.view('e0', 0).state, 'ejected')
  assert.match(d.view('e0', 0).reason ?? '', /^unreachable: /)
  assert.equal(d.view('e0', 0).until, 250)
})

test('regression: unreachable endpoints count as not usable for panic and failover (the panic threshold could never fire)', () => {
  const { d, ts } = detector({}, 3)
  d.report('e0', REFUSED, 0)
  assert.equal(d.degraded(ts, 0), false, '2 of 3 usable')
  d.report('e1', REFUSED, 0)
  assert.equal(d.degraded(ts, 0), true, '1 of 3 usable: below 50%')
  // Panic ignores ejections, never unreachability: the one reachable endpoint takes the traffic.
  assert.deepEqual(ids(d.usable(ts, 0)), ['e2'])
})

test('panic ignores ejections but still leaves unreachable endpoints out', () => {
  const { d, ts } = detector({}, 4)
  d.report('e0', REFUSED, 0)
  d.report('e1', REFUSED, 0)
  fail(d, 'e2', 5, 0)
  assert.equal(d.isEjected('e2', 0), true)
  assert.equal(d.degraded(ts, 0), true)
  assert.deepEqual(ids(d.usable(ts, 0)), ['e2', 'e3'])
})

test('with every endpoint unreachable, every endpoint is returned (a connect attempt is the last resort) and the layer is degraded', () => {
  const { d, ts } = detector({}, 2)
  d.report('e0', REFUSED, 0)
  d.report('e1', REFUSED, 0)
  assert.deepEqual(ids(d.usable(ts, 0)), ['e0', 'e1'])
  assert.equal(d.degraded(ts, 0), true)
})

test('a refused connection does not count towards consecutive gateway errors (no 30 s ejection once the endpoint listens again)', () => {
  const { d } = detector({}, 10)
  fail(d, 'e0', 4, 0)
  d.report('e0', REFUSED, 0)
  assert.equal(d.isEjected('e0', 0), false)
  assert.equal(d.view('e0', 0).consecutiveGatewayErrors, 4)
})

test('with unreachable off, a refused connection is one more gateway error', () => {
  const { d, ts } = detector({ unreachable: undefined }, 10)
  fail(d, 'e0', 5, 0, REFUSED)
  assert.equal(d.isUnreachable('e0'), false)
  assert.equal(d.isEjected('e0', 0), true)
  assert.deepEqual(d.dueProbes(1_000_000, () => true), [])
  assert.equal(ids(d.usable(ts, 0)).includes('e0'), false)
})

test('probes: due after the base wait, one at a time, only for endpoints the caller knows', () => {
  const { d } = detector({}, 3)
  d.report('e0', REFUSED, 1000)
  d.report('e1', REFUSED, 1000)
  assert.deepEqual(d.dueProbes(1249, () => true), [])
  assert.deepEqual(d.dueProbes(1250, (id) => id === 'e0'), ['e0'])
  assert.deepEqual(d.dueProbes(1250, () => true), [], 'e0 is being probed; e1 is not due again yet (not known a moment ago)')
  assert.deepEqual(d.dueProbes(1500, () => true), ['e1'])
})

test('a probe that connects brings the endpoint back; one that fails doubles the wait, up to the max', () => {
  const { d, ts, events } = detector({}, 3)
  d.report('e0', REFUSED, 0)
  const waits: number[] = []
  let now = 0
  for (let i = 0; i < 5; i++) {
    const due = d.view('e0', now).until!
    waits.push(due - now)
    now = due
    assert.deepEqual(d.dueProbes(now, () => true), ['e0'])
    d.probed('e0', false, now)
  }
  assert.deepEqual(waits, [250, 500, 1000, 2000, 2000])
  now = d.view('e0', now).until!
  assert.deepEqual(d.dueProbes(now, () => true), ['e0'])
  d.probed('e0', true, now)
  assert.equal(d.isUnreachable('e0'), false)
  assert.deepEqual(ids(d.usable(ts, now)), ['e0', 'e1', 'e2'])
  assert.deepEqual(events.map((e) => e.type), ['unreachable', 'reachable'])
})

test('an answer resets the probe backoff; a refusal after a probe connected (and no answer) keeps doubling it', () => {
  const { d } = detector({}, 3)
  d.report('e0', REFUSED, 0)
  d.dueProbes(250, () => true)
  d.probed('e0', true, 250)
  d.report('e0', REFUSED, 300)
  assert.equal(d.view('e0', 300).until, 800, 'second in a row: 500 ms')
  d.dueProbes(800, () => true)
  d.probed('e0', true, 800)
  d.report('e0', OK, 900)
  d.report('e0', REFUSED, 1000)
  assert.equal(d.view('e0', 1000).until, 1250, 'after an answer: the base wait again')
})

test('an abandoned probe (its endpoint set closed) leaves the endpoint unreachable and due at once', () => {
  const { d } = detector({}, 3)
  d.report('e0', REFUSED, 0)
  assert.deepEqual(d.dueProbes(250, () => true), ['e0'])
  d.probed('e0', undefined, 260)
  assert.equal(d.isUnreachable('e0'), true)
  assert.deepEqual(d.dueProbes(260, () => true), ['e0'])
})

test('refusals of attempts already on their way when the endpoint was marked change nothing', () => {
  const { d } = detector({}, 3)
  d.report('e0', REFUSED, 0)
  d.report('e0', REFUSED, 100)
  assert.equal(d.view('e0', 100).until, 250)
})

test('unreachable marks survive a reload (same stored state) and prune forgets them', () => {
  const state = new StateRegistry()
  const key = '["orders",null,null,[],{}]'
  const v1 = new OutlierDetector('orders', settings(), state.slot(outlierStoreKind, key))
  v1.report('e0', REFUSED, 0)
  const v2 = new OutlierDetector('orders', settings(), state.slot(outlierStoreKind, key))
  assert.deepEqual(ids(v2.usable(targets(3), 0)), ['e1', 'e2'])
  v2.store.prune(['e1', 'e2'])
  assert.equal(v2.isUnreachable('e0'), false)
})

test('adopt: an ejection made by another worker takes the endpoint out until the same time, without an event, within the max ejection share', () => {
  const { d, events, ts } = detector({ maxEjectionPercent: 20 }, 10)
  assert.equal(d.adopt('e1', 5_000, '5 consecutive gateway errors, seen by worker 2', 100), true)
  assert.deepEqual(events, [], 'the worker that ejected it counted it')
  assert.equal(d.isEjected('e1', 4_999), true)
  assert.equal(d.view('e1', 200).reason, '5 consecutive gateway errors, seen by worker 2')
  assert.ok(!ids(d.usable(ts, 200)).includes('e1'))
  // Already ejected here: nothing changes.
  assert.equal(d.adopt('e1', 9_000, 'again', 200), false)
  assert.equal(d.view('e1', 200).until, 5_000)
  // 20% of 10: a second one, not a third.
  assert.equal(d.adopt('e2', 5_000, 'x', 300), true)
  assert.equal(d.adopt('e3', 5_000, 'x', 300), false)
  // A time already past, or detection off, ejects nothing.
  assert.equal(d.adopt('e4', 300, 'x', 300), false)
  assert.equal(detector({ enabled: false }).d.adopt('e1', 5_000, 'x', 0), false)
  // Back at `until`, and its own failures count from zero.
  assert.equal(d.isEjected('e1', 5_000), false)
  assert.ok(ids(d.usable(ts, 5_000)).includes('e1'))
})
