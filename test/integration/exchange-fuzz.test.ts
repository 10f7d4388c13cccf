// Exchange fuzzing (issue 13): no exception raised while serving one exchange may end the
// gateway. `fastmesh start` runs as a child process (an exit is seen as an exit), in front of
// real loopback upstreams whose behaviour per request the client picks (test/helpers/
// fuzz-upstream.ts: 5xx, resets before and during the body, close before headers, slow, hang,
// garbage) and an address that refuses connections. Raw-socket clients (test/helpers/
// raw-exchange.ts) send seeded random methods, bodies (none, small, above the retry buffer,
// chunked, slow, large) and aborts over routes with different retry policies, and every
// exchange is checked: the gateway never exits, every answer is well-formed HTTP (a gateway-made
// one a JSON FASTMESH_ERR_* error with the request id), an upstream's answer that is not
// retried goes back as it is, no request is repeated when its body could not be re-sent or its
// method may not repeat, every repeated body is intact, each exchange is logged once, and none
// is left holding a circuit slot. First, the issue's scenarios one by one.
//
// FUZZ_SEED, FUZZ_COUNT, FUZZ_CONCURRENCY and FUZZ_TIME_MS override the run (the seed is printed).
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { request as undiciRequest } from 'undici'
import { tempDir, withTestListeners, type ConfigDoc } from '../helpers/gateway.js'
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js'
import { startEcho } from '../helpers/upstreams.js'
import { freePort } from '../helpers/ports.js'
import {
  FuzzRecorder, startFuzzUpstream, mulberry32, requestBody, responseBody, behaviourStatus, SLOW_MS,
  type Arrival, type Behaviour
} from '../helpers/fuzz-upstream.js'
import { rawExchange, parseResponse, header, type BodySend, type ClientMode, type RawOutcome, type ParsedResponse } from '../helpers/raw-exchange.js'
import { catalogue } from '../../src/errors.js'

/** `bufferBodyBytes` of the routes that buffer. */
const BUF = 1024
/** Large enough that the fuzz run's retries are not stopped by the retry budget. */
const BUDGET = { percent: 100, minPerSecond: 1000 }
const TIMEOUT_MS = 800

interface Policy {
  readonly attempts: number
  readonly retryOn: readonly string[]
  readonly nonIdempotent?: boolean
  readonly bufferBodyBytes?: number
  readonly perTryTimeout?: string
  readonly backoff?: { readonly base: string, readonly max: string }
}

/** Route policies by name; `default` has no `retries` (the built-in connect-failure retry). */
const POLICIES: Record<string, Policy | undefined> = {
  none: { attempts: 1, retryOn: ['connect-failure'] },
  default: undefined,
  // The issue's route: status retries, default backoff, nothing buffered.
  gw: { attempts: 3, retryOn: ['gateway-error'] },
  gw0: { attempts: 3, retryOn: ['gateway-error'], backoff: { base: '0ms', max: '0ms' } },
  buf: { attempts: 3, retryOn: ['gateway-error'], bufferBodyBytes: BUF },
  nonidem: { attempts: 3, retryOn: ['5xx'], nonIdempotent: true, bufferBodyBytes: BUF },
  'nonidem-unbuf': { attempts: 3, retryOn: ['5xx'], nonIdempotent: true },
  reset: { attempts: 3, retryOn: ['reset', '5xx', 'connect-failure'], bufferBodyBytes: BUF, perTryTimeout: '200ms', backoff: { base: '5ms', max: '20ms' } }
}
/** `services.svc.retries`: the default of the `svc` route, which has none of its own. */
const SERVICE_POLICY: Policy = { attempts: 3, retryOn: ['gateway-error', 'reset'] }
const BUILT_IN: Policy = { attempts: 2, retryOn: ['connect-failure'] }

interface RouteModel {
  readonly name: string
  readonly prefix: string
  readonly policy: Policy
  readonly perTryMs: number
}

/**
 * Each policy on `fz` (two fuzz upstreams and a refused address, outlier detection off so the
 * refused one stays in rotation) and on `pair` (the two fuzz upstreams only); `svc` takes its
 * retries from the service.
 */
function routeModels (): RouteModel[] {
  const out: RouteModel[] = []
  for (const [name, p] of Object.entries(POLICIES)) {
    for (const service of ['fz', 'pair']) {
      const policy = p ?? BUILT_IN
      out.push({ name: `${service}-${name}`, prefix: `/${service}/${name}`, policy, perTryMs: perTry(policy) })
    }
  }
  out.push({ name: 'svc', prefix: '/svc', policy: SERVICE_POLICY, perTryMs: perTry(SERVICE_POLICY) })
  return out
}

function perTry (p: Policy): number {
  return p.perTryTimeout !== undefined ? Number(p.perTryTimeout.replace('ms', '')) : TIMEOUT_MS
}

const ROUTES = routeModels()

function gatewayConfig (fuzzPorts: number[], refused: number, healthyPort: number): ConfigDoc {
  const ep = (service: string, ports: number[]): unknown => ({ endpoints: ports.map((port, i) => ({ id: `${service}-${i}`, address: '127.0.0.1', port })) })
  const timeouts = { timeout: `${TIMEOUT_MS}ms`, idleTimeout: `${TIMEOUT_MS}ms`, requestTimeout: '2500ms' }
  const routes: unknown[] = []
  for (const [name, p] of Object.entries(POLICIES)) {
    for (const service of ['fz', 'pair']) {
      routes.push({
        name: `${service}-${name}`,
        match: { path: { prefix: `/${service}/${name}` } },
        destination: { service },
        ...timeouts,
        ...(p !== undefined ? { retries: { ...p, budget: BUDGET } } : {})
      })
    }
  }
  routes.push({ name: 'svc', match: { path: { prefix: '/svc' } }, destination: { service: 'svc' }, ...timeouts })
  routes.push({ name: 'healthy', match: { path: { prefix: '/healthy' } }, destination: { service: 'healthy' } })
  return withTestListeners({
    limits: { drainTimeout: '1s', deregisterGrace: '0s' },
    discovery: {
      embedded: {
        services: {
          fz: ep('fz', [...fuzzPorts, refused]),
          pair: ep('pair', fuzzPorts),
          svc: ep('svc', fuzzPorts),
          healthy: ep('healthy', [healthyPort])
        }
      }
    },
    services: {
      fz: { outlierDetection: { enabled: false } },
      svc: { retries: { ...SERVICE_POLICY, budget: BUDGET } }
    },
    routes
  })
}

interface FuzzGateway {
  readonly gw: GatewayProcess
  readonly port: number
  readonly recorder: FuzzRecorder
}

/** Two fuzz upstreams, a refused port, a healthy echo and `fastmesh start` in a child process. */
async function startFuzzGateway (t: TestContext): Promise<FuzzGateway> {
  const recorder = new FuzzRecorder()
  const ups = [await startFuzzUpstream(t, 0, recorder), await startFuzzUpstream(t, 1, recorder)]
  const healthy = await startEcho(t, 'healthy')
  const refused = await freePort()
  const dir = await tempDir(t)
  const file = join(dir, 'fastmesh.yaml')
  await writeFile(file, stringify(gatewayConfig(ups.map((u) => u.port), refused, healthy.port)))
  const gw = await startGatewayProcess(t, ['--config', file])
  return { gw, port: Number(new URL(gw.url).port), recorder }
}

// ---------------------------------------------------------------------------------------------
// The policy model: what the docs promise for a request (docs/routing.md, Retries).

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])

interface BodySpec {
  readonly kind: BodySend['kind']
  readonly len: number
}

/** The route reads this body whole before the first try, so every try can send it. */
function buffered (p: Policy, body: BodySpec): boolean {
  return p.attempts > 1 && (body.kind === 'length' || body.kind === 'slow') && body.len > 0 && body.len <= (p.bufferBodyBytes ?? 0)
}

/** Whether the request may reach upstreams more than once (a retry after it was sent). */
function mayRepeat (p: Policy, method: string, body: BodySpec): boolean {
  if (p.attempts <= 1) return false
  if (!p.retryOn.some((c) => c === 'reset' || c === 'gateway-error' || c === '5xx' || c === 'retriable-status-codes')) return false
  if (p.nonIdempotent !== true && !IDEMPOTENT.has(method)) return false
  return body.kind === 'none' || buffered(p, body)
}

/** Whether an upstream's answer with `status` is dropped for a retry (budget and tries left aside). */
function retriesStatus (p: Policy, method: string, body: BodySpec, status: number): boolean {
  if (!mayRepeat(p, method, body)) return false
  if (p.retryOn.includes('5xx') && status >= 500) return true
  return p.retryOn.includes('gateway-error') && (status === 502 || status === 503 || status === 504)
}

/** Whether a per-try timeout of this request may be retried. */
function retriesTimeout (p: Policy, method: string, body: BodySpec): boolean {
  return mayRepeat(p, method, body) && (p.retryOn.includes('gateway-error') || p.retryOn.includes('5xx'))
}

// ---------------------------------------------------------------------------------------------
// One exchange: spec, outcome and checks.

interface Spec {
  readonly id: number
  readonly route: RouteModel
  readonly method: string
  readonly body: BodySpec
  readonly send: BodySend
  readonly mode: ClientMode
  readonly reset: boolean
  readonly plan: string
}

interface Done {
  readonly spec: Spec
  readonly outcome: RawOutcome
  readonly requestId: string
}

function requestIdOf (seed: number, id: number): string {
  return `fz-${seed}-${id}`
}

function sendOf (id: number, kind: BodySend['kind'], len: number): BodySend {
  switch (kind) {
    case 'none': return { kind }
    case 'length': return { kind, body: requestBody(id, len) }
    case 'slow': return { kind, body: requestBody(id, len), pieces: 3, gapMs: 40 }
    case 'chunked': return { kind, body: requestBody(id, len), chunks: 2 + (id % 4) }
  }
}

async function run (port: number, seed: number, spec: Spec): Promise<Done> {
  const requestId = requestIdOf(seed, spec.id)
  const outcome = await rawExchange({
    port,
    method: spec.method,
    target: `${spec.route.prefix}/${spec.id}`,
    headers: [
      ['host', 'fuzz.test'],
      ['x-request-id', requestId],
      ['x-fuzz-id', String(spec.id)],
      ['x-fuzz-len', String(spec.body.len)],
      ['x-fuzz-plan', spec.plan]
    ],
    body: spec.send,
    mode: spec.mode,
    reset: spec.reset,
    timeoutMs: 10_000
  })
  return { spec, outcome, requestId }
}

/** Behaviours that break an answer off once it started. */
const CUTS_MID_BODY = new Set<Behaviour>(['reset-during-body', '200-then-hang'])
/** Gateway-made answers expected while fuzzing, with their status. */
const EXPECTED_CODES = new Map<string, number>([catalogue.UPSTREAM_FAILURE, catalogue.UPSTREAM_TIMEOUT, catalogue.NO_HEALTHY_ENDPOINT, catalogue.OVERFLOW].map((e) => [e.code, e.statusCode]))
/** Text of a JavaScript exception, which must never be an answer's message. */
const EXCEPTION_TEXT = /TypeError|ReferenceError|RangeError|Cannot read propert|Cannot set propert|is not a function|is not defined|is not iterable/

interface Verdict {
  readonly violations: string[]
  /** What the client got, for the summary. */
  readonly kind: string
  /** A relaxed check, with why. */
  readonly excused?: string
  /** An upstream's answer that is not retried was checked to go back as it is. */
  readonly asIs?: boolean
  readonly parsed?: ParsedResponse
}

function describe (d: Done, arrivals: Arrival[]): string {
  const got = d.outcome.received.subarray(0, 240).toString('latin1').replace(/\r\n/g, '⏎')
  return `${specText(d.spec)} ` +
    `requestId=${d.requestId}; arrivals=[${arrivals.map((a) => `t${a.n}@e${a.endpoint}:${a.behaviour}:${a.bytes}B${a.complete ? '' : ' incomplete'}`).join(', ')}]; ` +
    `sentAll=${d.outcome.sentAll} socketError=${d.outcome.socketError ?? '-'} received=${d.outcome.received.length}B ${JSON.stringify(got)}`
}

/** Every check of one exchange, against what the upstreams recorded. */
function verdict (d: Done, arrivals: Arrival[]): Verdict {
  const v: string[] = []
  const { spec, outcome } = d
  const p = spec.route.policy
  const repeatable = mayRepeat(p, spec.method, spec.body)
  // Never repeated when its body could not be re-sent or its method may not repeat.
  const most = repeatable ? p.attempts : 1
  if (arrivals.length > most) v.push(`reached upstreams ${arrivals.length} times (at most ${most}: ${repeatable ? 'tries' : 'a non-repeatable request'})`)
  for (const a of arrivals) {
    if (a.corruptAt !== undefined) v.push(`try ${a.n} carried a corrupt body from byte ${a.corruptAt}`)
    if (a.complete && a.bytes !== spec.body.len) v.push(`try ${a.n} carried a ${a.bytes}-byte body, not ${spec.body.len}`)
    if (a.method !== spec.method) v.push(`try ${a.n} went out as ${a.method}`)
    // A buffered body is whole before the first try: every try carries all of it.
    if (buffered(p, spec.body) && spec.mode === 'normal' && !a.cutByUpstream && !a.complete) v.push(`try ${a.n} of a buffered body arrived without all of it (${a.bytes} of ${spec.body.len} bytes)`)
  }
  if (spec.mode !== 'normal') return { violations: v, kind: `client ${spec.mode}` }
  if (outcome.timedOut) {
    v.push('the gateway neither finished nor closed the exchange within 10 s')
    return { violations: v, kind: 'hung' }
  }
  if (outcome.received.length === 0) {
    // A gateway that answers before reading the whole body closes with unread bytes: the
    // kernel resets the connection and the client may lose the answer (Node's http server).
    if (spec.body.kind !== 'none' && (outcome.socketError === 'ECONNRESET' || outcome.socketError === 'EPIPE')) return { violations: v, kind: 'reset while sending the body' }
    v.push(`connection closed without an answer (${outcome.socketError ?? 'FIN'})`)
    return { violations: v, kind: 'no answer' }
  }
  let res: ParsedResponse
  try {
    res = parseResponse(outcome.received, spec.method)
  } catch (err) {
    v.push(`malformed answer: ${(err as Error).message}`)
    return { violations: v, kind: 'malformed' }
  }
  if (res.extra > 0) v.push(`${res.extra} bytes after the answer`)
  if (header(res, 'x-request-id') !== d.requestId) v.push(`x-request-id ${header(res, 'x-request-id')} is not the request's`)
  const by = header(res, 'x-fuzz-by')
  let kind: string
  let relayed: Arrival | undefined
  if (by !== undefined) {
    // An upstream's answer, relayed.
    kind = `upstream ${res.status}${res.complete ? '' : ' (cut)'}`
    if (header(res, 'x-fuzz-id') !== String(spec.id)) v.push(`answer of exchange ${header(res, 'x-fuzz-id')} relayed to exchange ${spec.id}`)
    const n = Number(header(res, 'x-fuzz-arrival'))
    relayed = arrivals.find((a) => a.n === n)
    if (relayed === undefined) v.push(`relayed answer of try ${n}, which the upstreams never saw`)
    else {
      const want = behaviourStatus(relayed.behaviour) ?? 200
      if (res.status !== want) v.push(`relayed ${res.status} for try ${n} (${relayed.behaviour}), which answered ${want}`)
      if (n !== arrivals.length) v.push(`try ${n}'s answer was relayed but ${arrivals.length - n} more tries were made`)
      const expect = responseBody(spec.id)
      if (spec.method !== 'HEAD') {
        if (res.complete && !res.body.equals(expect)) v.push(`relayed body differs from the upstream's (${res.body.length} of ${expect.length} bytes)`)
        if (!res.complete && !expect.subarray(0, res.body.length).equals(res.body)) v.push('relayed body (cut) is not a prefix of the upstream\'s')
        if (!res.complete && !CUTS_MID_BODY.has(relayed.behaviour)) v.push(`answer cut after ${res.body.length} bytes although try ${n} (${relayed.behaviour}) sent it whole`)
      }
    }
  } else {
    // The gateway's own answer.
    let code = '?'
    if (spec.method === 'HEAD') {
      code = '(HEAD: no body)'
      if (![502, 503, 504].includes(res.status)) v.push(`gateway answered HEAD with ${res.status}`)
    } else if (!res.complete) {
      v.push(`gateway's own answer ${res.status} cut after ${res.body.length} bytes`)
    } else {
      const type = header(res, 'content-type') ?? ''
      if (!type.startsWith('application/json')) v.push(`gateway answer ${res.status} has content-type ${type}`)
      try {
        const body = JSON.parse(res.body.toString('utf8')) as { error?: { code?: unknown, message?: unknown, requestId?: unknown } }
        code = String(body.error?.code)
        const status = EXPECTED_CODES.get(code)
        if (!/^FASTMESH_ERR_[A-Z_]+$/.test(code)) v.push(`gateway answer ${res.status} without a FASTMESH_ERR_* code: ${res.body.toString('utf8').slice(0, 200)}`)
        else if (status === undefined) v.push(`unexpected gateway answer ${res.status} ${code}: ${String(body.error?.message)}`)
        else if (status !== res.status) v.push(`${code} answered with status ${res.status}, not ${status}`)
        if (body.error?.requestId !== d.requestId) v.push(`error body's requestId ${String(body.error?.requestId)} is not the request's`)
        if (typeof body.error?.message !== 'string' || body.error.message === '') v.push('error body without a message')
        else if (EXCEPTION_TEXT.test(body.error.message)) v.push(`an exception answered as ${code}: ${body.error.message}`)
      } catch {
        v.push(`gateway answer ${res.status} is not JSON: ${res.body.toString('utf8').slice(0, 200)}`)
      }
    }
    kind = `gateway ${res.status} ${code}`
  }
  // An upstream's complete answer that the policy does not retry goes back as it is.
  let excused: string | undefined
  let asIs = false
  for (const a of arrivals) {
    const status = behaviourStatus(a.behaviour)
    if (status === undefined || !a.answered) continue
    if (a.behaviour === 'slow' && SLOW_MS + 200 > spec.route.perTryMs) continue
    if (retriesStatus(p, spec.method, spec.body, status)) continue
    if (relayed === a) { asIs = true; break }
    // The gateway's try may have timed out before the answer came (a loaded machine): then a
    // 504, or another try where timeouts are retried, is what it should do.
    const late = (a.answeredAfterMs ?? 0) > 50
    const timeoutAnswer = by === undefined && kind.includes(catalogue.UPSTREAM_TIMEOUT.code)
    if (late && (timeoutAnswer || (arrivals.length > a.n && retriesTimeout(p, spec.method, spec.body)))) { excused = `try ${a.n} answered after ${Math.round(a.answeredAfterMs ?? 0)} ms`; break }
    v.push(`try ${a.n} answered ${status} (${a.behaviour}), which this route does not retry for ${spec.method} with body ${spec.body.kind}:${spec.body.len}, but the client got ${kind}${relayed !== undefined ? ` from try ${relayed.n}` : ''}`)
    break
  }
  return { violations: v, kind, excused, asIs, parsed: res }
}

// ---------------------------------------------------------------------------------------------
// The issue's scenarios, one gateway each (so a crash fails only its own test).

interface Scenario {
  readonly method: string
  readonly route: string
  readonly body: BodySpec
  readonly plan: string
}

let scenarioId = 1_000_000

async function scenario (fz: FuzzGateway, s: Scenario): Promise<{ done: Done, arrivals: Arrival[], res: ParsedResponse }> {
  const route = ROUTES.find((r) => r.prefix === s.route)
  assert.ok(route !== undefined, s.route)
  const id = scenarioId++
  const spec: Spec = { id, route, method: s.method, body: s.body, send: sendOf(id, s.body.kind, s.body.len), mode: 'normal', reset: false, plan: s.plan }
  const done = await run(fz.port, 1, spec)
  // Let a crash that follows the answer (a retry timer) happen before judging.
  await new Promise((resolve) => setTimeout(resolve, 300))
  const arrivals = fz.recorder.of(id)
  assert.equal(fz.gw.exited, false, `the gateway exited while serving ${describe(done, arrivals)}:\n${tail(fz.gw.stderr)}`)
  const v = verdict(done, arrivals)
  assert.deepEqual(v.violations, [], describe(done, arrivals))
  assert.ok(v.parsed !== undefined, `${v.kind}: ${describe(done, arrivals)}`)
  await assertStillServes(fz)
  return { done, arrivals, res: v.parsed }
}

/** The gateway still answers plain requests on a healthy route. */
async function assertStillServes (fz: FuzzGateway): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const res = await undiciRequest(`${fz.gw.url}/healthy/${i}`, { headers: { 'x-request-id': `after-${i}` } })
    await res.body.dump()
    assert.equal(res.statusCode, 200, 'a plain GET to a healthy route after the scenario')
  }
  assert.equal(fz.gw.exited, false, tail(fz.gw.stderr))
}

function tail (text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n')
}

/** Asserts the client got the 503 of the first try as it was, and nothing was tried again. */
function assertRelayedAsIs (r: { done: Done, arrivals: Arrival[], res: ParsedResponse }): void {
  const what = describe(r.done, r.arrivals)
  assert.equal(r.res.status, 503, what)
  assert.equal(header(r.res, 'x-fuzz-arrival'), '1', `the first try's own answer: ${what}`)
  assert.equal(r.arrivals.length, 1, `not tried again: ${what}`)
  assert.ok(r.arrivals[0]!.complete && r.arrivals[0]!.bytes === r.done.spec.body.len, `the one try carried the whole body: ${what}`)
}

/** Asserts the 503 was dropped and the body re-sent, whole, to the other endpoint, which answered 200. */
function assertResentIntact (r: { done: Done, arrivals: Arrival[], res: ParsedResponse }): void {
  const what = describe(r.done, r.arrivals)
  assert.equal(r.res.status, 200, what)
  assert.equal(r.arrivals.length, 2, what)
  assert.notEqual(r.arrivals[0]!.endpoint, r.arrivals[1]!.endpoint, `the retry took the other endpoint: ${what}`)
  for (const a of r.arrivals) assert.ok(a.complete && a.bytes === r.done.spec.body.len && a.corruptAt === undefined, `try ${a.n} carried the whole body intact: ${what}`)
}

const FIRST_503 = 't1=503;*=ok'
const small = (kind: BodySpec['kind'] = 'length'): BodySpec => ({ kind, len: 9 })

test('issue 13: a PUT with a 9-byte body on a gateway-error retry route does not stop the gateway; without a retry buffer its 503 goes back as it is', async (t) => {
  const fz = await startFuzzGateway(t)
  assertRelayedAsIs(await scenario(fz, { method: 'PUT', route: '/pair/gw', body: small(), plan: FIRST_503 }))
})

test('issue 13: with zero backoff, the retry of a streamed PUT body never goes out without its body', async (t) => {
  const fz = await startFuzzGateway(t)
  assertRelayedAsIs(await scenario(fz, { method: 'PUT', route: '/pair/gw0', body: small(), plan: FIRST_503 }))
})

test('issue 13: a DELETE with a body on a gateway-error retry route: its 503 goes back as it is', async (t) => {
  const fz = await startFuzzGateway(t)
  assertRelayedAsIs(await scenario(fz, { method: 'DELETE', route: '/pair/gw', body: small(), plan: FIRST_503 }))
})

test('issue 13: a PUT larger than bufferBodyBytes is not retried: the 503 goes back as it is', async (t) => {
  const fz = await startFuzzGateway(t)
  assertRelayedAsIs(await scenario(fz, { method: 'PUT', route: '/pair/buf', body: { kind: 'length', len: BUF + 1 }, plan: FIRST_503 }))
  assertRelayedAsIs(await scenario(fz, { method: 'PUT', route: '/pair/buf', body: { kind: 'chunked', len: 9 }, plan: FIRST_503 }))
})

test('issue 13: an unbuffered POST on a route with nonIdempotent: true is not retried once its body was sent', async (t) => {
  const fz = await startFuzzGateway(t)
  assertRelayedAsIs(await scenario(fz, { method: 'POST', route: '/pair/nonidem-unbuf', body: small(), plan: FIRST_503 }))
})

test('issue 13: service-level retries (services.<name>.retries) do not stop the gateway on a PUT with a body', async (t) => {
  const fz = await startFuzzGateway(t)
  assertRelayedAsIs(await scenario(fz, { method: 'PUT', route: '/svc', body: small(), plan: FIRST_503 }))
})

test('issue 13: a body that fits the retry buffer is re-sent intact (PUT, DELETE, opted-in POST), and a bodyless GET is still retried', async (t) => {
  const fz = await startFuzzGateway(t)
  assertResentIntact(await scenario(fz, { method: 'PUT', route: '/pair/buf', body: small(), plan: FIRST_503 }))
  assertResentIntact(await scenario(fz, { method: 'DELETE', route: '/pair/buf', body: small(), plan: FIRST_503 }))
  assertResentIntact(await scenario(fz, { method: 'PUT', route: '/pair/buf', body: { kind: 'length', len: BUF }, plan: FIRST_503 }))
  assertResentIntact(await scenario(fz, { method: 'POST', route: '/pair/nonidem', body: small(), plan: FIRST_503 }))
  assertResentIntact(await scenario(fz, { method: 'PUT', route: '/pair/reset', body: small(), plan: 't1=reset-before-headers;*=ok' }))
  const get = await scenario(fz, { method: 'GET', route: '/pair/gw', body: { kind: 'none', len: 0 }, plan: FIRST_503 })
  assert.equal(get.res.status, 200, describe(get.done, get.arrivals))
  assert.equal(get.arrivals.length, 2)
})

// ---------------------------------------------------------------------------------------------
// The randomized run.

const METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH'] as const
const BEHAVIOUR_WEIGHTS: Array<[Behaviour, number]> = [
  ['ok', 28], ['503', 14], ['500', 6], ['502', 4], ['ok-chunked', 5], ['reset-early', 5], ['reset-before-headers', 6],
  ['close-before-headers', 6], ['reset-during-body', 5], ['200-then-hang', 3], ['slow', 5], ['hang', 3], ['garbage', 3]
]

function weighted<T> (rnd: () => number, items: Array<[T, number]>): T {
  const total = items.reduce((s, [, w]) => s + w, 0)
  let x = rnd() * total
  for (const [item, w] of items) { if ((x -= w) < 0) return item }
  return items[items.length - 1]![0]
}

function makeSpec (rnd: () => number, id: number): Spec {
  const route = ROUTES[Math.floor(rnd() * ROUTES.length)]!
  const method = METHODS[Math.floor(rnd() * METHODS.length)]!
  let body: BodySpec
  if (method === 'HEAD' || (method === 'GET' && rnd() < 0.8)) body = { kind: 'none', len: 0 }
  else {
    body = weighted<BodySpec>(rnd, [
      [{ kind: 'none', len: 0 }, 25],
      [{ kind: 'length', len: 9 }, 20],
      [{ kind: 'length', len: BUF + 1 + Math.floor(rnd() * 1500) }, 15],
      [{ kind: 'chunked', len: 1 + Math.floor(rnd() * 3000) }, 15],
      [{ kind: 'slow', len: 9 + Math.floor(rnd() * 2000) }, 10],
      [{ kind: 'length', len: 65_536 + Math.floor(rnd() * 65_536) }, 5],
      [{ kind: 'length', len: 1 + Math.floor(rnd() * BUF) }, 10]
    ])
  }
  const mode = weighted<ClientMode>(rnd, [['normal', 80], ['abort-after-headers', 6], ['abort-mid-body', 7], ['abort-after-first-byte', 7]])
  const pick = (): Behaviour => weighted(rnd, BEHAVIOUR_WEIGHTS)
  const plan = rnd() < 0.25 ? `t1=${pick()};t2=${pick()};*=${pick()}` : `e0=${pick()};e1=${pick()}`
  return { id, route, method, body, send: sendOf(id, body.kind, body.len), mode, reset: rnd() < 0.5, plan }
}

function envInt (name: string, fallback: number): number {
  const v = process.env[name]
  return v !== undefined && v !== '' ? Number.parseInt(v, 10) : fallback
}

function specText (s: Spec): string {
  return `#${s.id} ${s.method} ${s.route.prefix}/${s.id} body=${s.body.kind}:${s.body.len} client=${s.mode}${s.reset && s.mode !== 'normal' ? '(rst)' : ''} plan="${s.plan}"`
}

/**
 * The exchanges in flight when the gateway died, replayed one at a time on a fresh gateway:
 * the first after which it exits (a repro of one request), if any. Bounded to 40 exchanges.
 */
async function replayAlone (t: TestContext, suspects: Spec[]): Promise<{ spec: Spec, stderr: string } | undefined> {
  const fz = await startFuzzGateway(t)
  for (const spec of [...suspects].sort((a, b) => a.id - b.id).slice(0, 40)) {
    await run(fz.port, 0, spec)
    await new Promise((resolve) => setTimeout(resolve, 300))
    if (fz.gw.exited) return { spec, stderr: fz.gw.stderr }
  }
  return undefined
}

interface AdminServices {
  services: Array<{ name: string, layers?: Array<{ circuit?: { requests: number, retries: number } }> }>
}

test('exchange fuzz: thousands of random exchanges never stop the gateway, and every answer is well-formed and faithful', async (t) => {
  const seed = envInt('FUZZ_SEED', Math.floor(Math.random() * 2 ** 31))
  const count = envInt('FUZZ_COUNT', 2500)
  const concurrency = envInt('FUZZ_CONCURRENCY', 24)
  const timeBudgetMs = envInt('FUZZ_TIME_MS', 35_000)
  console.log(`exchange fuzz: FUZZ_SEED=${seed} FUZZ_COUNT=${count} FUZZ_CONCURRENCY=${concurrency} FUZZ_TIME_MS=${timeBudgetMs}`)
  const fz = await startFuzzGateway(t)
  const rnd = mulberry32(seed)
  const specs: Spec[] = []
  for (let i = 1; i <= count; i++) specs.push(makeSpec(rnd, i))

  const started = performance.now()
  const done: Done[] = []
  const inFlight = new Map<number, Spec>()
  let next = 0
  // The exchanges in flight when the gateway exited (polled, so the list stays short).
  let exitSeen: { inFlight: Spec[], afterDone: number } | undefined
  const watch = setInterval(() => {
    if (fz.gw.exited && exitSeen === undefined) exitSeen = { inFlight: [...inFlight.values()], afterDone: done.length }
  }, 5)
  const worker = async (): Promise<void> => {
    while (next < specs.length && exitSeen === undefined && performance.now() - started < timeBudgetMs) {
      const spec = specs[next++]!
      inFlight.set(spec.id, spec)
      const d = await run(fz.port, seed, spec)
      // Kept in flight a little longer: a crash can follow the answer (a retry timer).
      setTimeout(() => { inFlight.delete(spec.id) }, 300)
      done.push(d)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  clearInterval(watch)
  const elapsed = performance.now() - started
  console.log(`exchange fuzz: ${done.length} of ${count} exchanges in ${Math.round(elapsed)} ms (seed ${seed})`)

  if (fz.gw.exited || exitSeen !== undefined) {
    const suspects = exitSeen?.inFlight ?? []
    const culprit = await replayAlone(t, suspects)
    assert.fail(`the gateway exited after ${exitSeen?.afterDone ?? done.length} exchanges (FUZZ_SEED=${seed}).\n` +
      `${culprit !== undefined ? `Replayed alone on a fresh gateway, this one stops it: ${specText(culprit.spec)}\n${tail(culprit.stderr, 12)}\n` : 'No exchange replayed alone stops a fresh gateway.\n'}` +
      `In flight when it exited:\n${suspects.map((x) => `  ${specText(x)}`).join('\n')}\nstderr:\n${tail(fz.gw.stderr)}`)
  }

  // Answers still under way at the gateway (client aborts over hanging upstreams) end by its timeouts.
  await new Promise((resolve) => setTimeout(resolve, 500))
  const violations: string[] = []
  const kinds = new Map<string, number>()
  let excused = 0
  let asIs = 0
  let repeated = 0
  let repeatedBodies = 0
  const verdicts = new Map<number, Verdict>()
  for (const d of done) {
    const arrivals = fz.recorder.of(d.spec.id)
    const v = verdict(d, arrivals)
    verdicts.set(d.spec.id, v)
    kinds.set(v.kind, (kinds.get(v.kind) ?? 0) + 1)
    if (v.excused !== undefined) excused++
    if (v.asIs === true) asIs++
    if (arrivals.length > 1) repeated++
    if (arrivals.length > 1 && d.spec.body.len > 0 && arrivals.every((a) => a.complete)) repeatedBodies++
    if (v.violations.length > 0) violations.push(`${v.violations.join('; ')}\n    ${describe(d, arrivals)}`)
  }
  // Each exchange is logged once, with the status the client saw.
  const access = new Map<string, Array<{ status?: number }>>()
  for (const e of fz.gw.logs()) {
    if (e.log !== 'access') continue
    const id = String(e.requestId)
    const list = access.get(id) ?? []
    list.push(e as { status?: number })
    access.set(id, list)
  }
  for (const d of done) {
    const lines = access.get(d.requestId) ?? []
    const v = verdicts.get(d.spec.id)!
    const what = (): string => describe(d, fz.recorder.of(d.spec.id))
    if (lines.length > 1) violations.push(`access log has ${lines.length} lines for one exchange\n    ${what()}`)
    if (v.parsed?.complete === true && d.spec.mode === 'normal') {
      if (lines.length === 0) violations.push(`no access log line for an answered exchange\n    ${what()}`)
      else if (lines[0]!.status !== v.parsed.status) violations.push(`access log status ${lines[0]!.status} but the client got ${v.parsed.status}\n    ${what()}`)
    }
  }
  const summary = [...kinds].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}: ${n}`).join(', ')
  console.log(`exchange fuzz: outcomes ${summary}`)
  console.log(`exchange fuzz: ${repeated} exchanges reached upstreams more than once (${repeatedBodies} re-sent a body whole), ` +
    `${asIs} upstream answers checked to go back as they were (${excused} excused as answered after a try's timeout), ` +
    `${[...access.values()].reduce((n, l) => n + l.length, 0)} access lines; ${violations.length} violations`)

  // The gateway still serves, and no exchange holds a circuit slot.
  for (let i = 0; i < 5; i++) {
    const res = await undiciRequest(`${fz.gw.url}/healthy/${i}`, { headers: { 'x-request-id': `after-fuzz-${i}` } })
    await res.body.dump()
    assert.equal(res.statusCode, 200, 'a plain GET to a healthy route after the run')
  }
  const busyNow = async (): Promise<string[]> => {
    const res = await undiciRequest(`${fz.gw.adminUrl}/services`)
    const body = await res.body.json() as AdminServices
    return body.services.flatMap((s) => (s.layers ?? [])
      .filter((l) => (l.circuit?.requests ?? 0) > 0 || (l.circuit?.retries ?? 0) > 0)
      .map((l) => `${s.name}: ${JSON.stringify(l.circuit)}`))
  }
  let busy = await busyNow()
  for (let i = 0; i < 50 && busy.length > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    busy = await busyNow()
  }
  if (busy.length > 0) violations.push(`exchanges left holding circuit slots 5 s after the run: ${busy.join('; ')}`)

  assert.equal(fz.gw.exited, false, tail(fz.gw.stderr))
  assert.ok(done.length >= Math.min(count, 200), `only ${done.length} exchanges ran within ${timeBudgetMs} ms`)
  assert.equal(violations.length, 0, `${violations.length} exchanges went wrong (FUZZ_SEED=${seed}); the first 25:\n${violations.slice(0, 25).join('\n')}`)
})
