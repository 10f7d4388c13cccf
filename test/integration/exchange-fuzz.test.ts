// Exchange fuzzing (issue 13): no exception raised while serving one exchange may end the
// gateway. `fastmesh start` runs as a child process (an exit is seen as an exit), in front of
// real loopback upstreams whose behaviour per request the client picks (test/helpers/
// fuzz-upstream.ts: 5xx, resets before and during the body, close before headers, slow, hang,
// an early 503, 103 hints, garbage) and an address that refuses connections. Raw-socket clients
// (test/helpers/raw-exchange.ts) send seeded random methods, bodies (none, small, above the
// retry buffer, chunked, slow, large), aborts and kept connections over routes with different
// retry policies (one with a plugin, one with a mirror), and every exchange is checked: the
// gateway never exits and logs no exception; every answer is well-formed HTTP (a gateway-made
// one a JSON FASTMESH_ERR_* error with the request id); an upstream's answer that is not
// retried goes back as it is; no request is repeated when its body could not be re-sent or its
// method may not repeat; every repeated or mirrored body is intact; a kept connection serves
// its next request (or is closed); each exchange is logged once; none is left holding a
// circuit slot. First, the issue's scenarios one by one.
//
// FUZZ_SEED, FUZZ_COUNT, FUZZ_CONCURRENCY, FUZZ_TIME_MS and FUZZ_KEEPALIVE_PERCENT (the share of
// exchanges that keep their connection for a second request) override the run (all are printed).
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { request as undiciRequest } from 'undici'
import { tempDir, withTestListeners, fixturePlugin, type ConfigDoc } from '../helpers/gateway.js'
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js'
import { startEcho } from '../helpers/upstreams.js'
import { freePort } from '../helpers/ports.js'
import {
  FuzzRecorder, startFuzzUpstream, mulberry32, requestBody, responseBody, behaviourStatus, headStatus, CUTS_MID_BODY, SLOW_MS,
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

/** Route policies by name; `default` has no `retries` (the built-in connect-failure and reset retry). */
const POLICIES: Record<string, Policy | undefined> = {
  none: { attempts: 1, retryOn: ['connect-failure'] },
  default: undefined,
  // The issue's route: status retries, default backoff, nothing buffered.
  gw: { attempts: 3, retryOn: ['gateway-error'] },
  gw0: { attempts: 3, retryOn: ['gateway-error'], backoff: { base: '0ms', max: '0ms' } },
  // A long backoff: clients leave while a retry waits.
  gwslow: { attempts: 3, retryOn: ['gateway-error'], backoff: { base: '300ms', max: '300ms' } },
  buf: { attempts: 3, retryOn: ['gateway-error'], bufferBodyBytes: BUF },
  nonidem: { attempts: 3, retryOn: ['5xx'], nonIdempotent: true, bufferBodyBytes: BUF },
  'nonidem-unbuf': { attempts: 3, retryOn: ['5xx'], nonIdempotent: true },
  reset: { attempts: 3, retryOn: ['reset', '5xx', 'connect-failure'], bufferBodyBytes: BUF, perTryTimeout: '200ms', backoff: { base: '5ms', max: '20ms' } }
}
/** `services.svc.retries`: the default of the `svc` route, which has none of its own. */
const SERVICE_POLICY: Policy = { attempts: 3, retryOn: ['gateway-error', 'reset'] }
// As src/config/schema.ts: a connect failure, and a reset before any response byte (idempotent methods), once.
const BUILT_IN: Policy = { attempts: 2, retryOn: ['connect-failure', 'reset'] }

interface RouteModel {
  readonly name: string
  readonly prefix: string
  readonly service: string
  /** The route's own `retries`; undefined: the service's, else the built-in policy. */
  readonly retries: Policy | undefined
  /** The policy in effect. */
  readonly policy: Policy
  readonly perTryMs: number
  /** Runs the `headers` plugin (the Fastify path): sets `x-fuzz-via-plugin` upstream and `x-fuzz-plugin` on answers. */
  readonly plugin?: boolean
  /** Mirrors every request to `pair` (bodies up to MIRROR_BODY_BYTES). */
  readonly mirror?: boolean
  /** Runs test/fixtures/plugins/fuzz-faults.ts: a plugin bug chosen per request (`x-fuzz-fault`). */
  readonly faults?: boolean
}

/** Where the fuzz-faults plugin throws (see the fixture); `none`: it does not. */
const FAULTS = ['none', 'on-request', 'on-request-sync', 'pre-handler', 'upstream-headers', 'on-response'] as const
type Fault = typeof FAULTS[number]
/** Faults that end the exchange before any try. */
const FAULTS_BEFORE_FORWARDING = new Set<Fault>(['on-request', 'on-request-sync', 'pre-handler'])

const MIRROR_BODY_BYTES = 4096

/**
 * Each policy on `fz` (two fuzz upstreams and a refused address, outlier detection off so the
 * refused one stays in rotation) and on `pair` (the two fuzz upstreams only); `svc` takes its
 * retries from the service; a route with a plugin and one with a mirror.
 */
function routeModels (): RouteModel[] {
  const out: RouteModel[] = []
  const route = (name: string, service: string, retries: Policy | undefined, extra: Partial<RouteModel> = {}): RouteModel => {
    const policy = retries ?? (service === 'svc' ? SERVICE_POLICY : BUILT_IN)
    return { name, prefix: `/${name.replace('-', '/')}`, service, retries, policy, perTryMs: perTry(policy), ...extra }
  }
  for (const [name, p] of Object.entries(POLICIES)) {
    for (const service of ['fz', 'pair']) out.push(route(`${service}-${name}`, service, p))
  }
  out.push(route('svc', 'svc', undefined))
  out.push(route('fz-plugin', 'fz', POLICIES.buf, { plugin: true }))
  out.push(route('fz-mirror', 'fz', POLICIES.gw, { mirror: true }))
  out.push(route('fz-faults', 'fz', POLICIES.buf, { faults: true }))
  return out
}

function perTry (p: Policy): number {
  return p.perTryTimeout !== undefined ? Number(p.perTryTimeout.replace('ms', '')) : TIMEOUT_MS
}

const ROUTES = routeModels()

function gatewayConfig (dir: string, fuzzPorts: number[], refused: number, healthyPort: number): ConfigDoc {
  const ep = (service: string, ports: number[]): unknown => ({ endpoints: ports.map((port, i) => ({ id: `${service}-${i}`, address: '127.0.0.1', port })) })
  const routes: unknown[] = ROUTES.map((r) => ({
    name: r.name,
    match: { path: { prefix: r.prefix } },
    destination: { service: r.service },
    timeout: `${TIMEOUT_MS}ms`,
    idleTimeout: `${TIMEOUT_MS}ms`,
    requestTimeout: '2500ms',
    ...(r.retries !== undefined ? { retries: { ...r.retries, budget: BUDGET } } : {}),
    ...(r.plugin === true ? { plugins: [{ name: 'headers', options: { request: { set: { 'x-fuzz-via-plugin': '1' } }, response: { set: { 'x-fuzz-plugin': '1' } } } }] } : {}),
    ...(r.faults === true ? { plugins: [{ name: 'fuzz-faults' }] } : {}),
    ...(r.mirror === true ? { mirror: { service: 'pair', percent: 100, maxBodyBytes: MIRROR_BODY_BYTES, timeout: '1s' } } : {})
  }))
  routes.push({ name: 'healthy', match: { path: { prefix: '/healthy' } }, destination: { service: 'healthy' } })
  return withTestListeners({
    limits: { drainTimeout: '1s', deregisterGrace: '0s' },
    customPlugins: { 'fuzz-faults': { module: fixturePlugin(dir, 'fuzz-faults.js') } },
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
      // The scenarios assert which endpoint a retry takes: no ejection left by an earlier one may change it.
      pair: { outlierDetection: { enabled: false } },
      svc: { retries: { ...SERVICE_POLICY, budget: BUDGET } }
    },
    routes
  })
}

interface FuzzGateway {
  readonly gw: GatewayProcess
  readonly port: number
  readonly recorder: FuzzRecorder
  /** Request ids of scenarios that injected no fault: nothing may be logged as an error for them. */
  readonly clean: Set<string>
}

/** Two fuzz upstreams, a refused port, a healthy echo and `fastmesh start` in a child process. */
async function startFuzzGateway (t: TestContext): Promise<FuzzGateway> {
  const recorder = new FuzzRecorder()
  const ups = [await startFuzzUpstream(t, 0, recorder), await startFuzzUpstream(t, 1, recorder)]
  const healthy = await startEcho(t, 'healthy')
  const refused = await freePort()
  const dir = await tempDir(t)
  const file = join(dir, 'fastmesh.yaml')
  await writeFile(file, stringify(gatewayConfig(dir, ups.map((u) => u.port), refused, healthy.port)))
  const gw = await startGatewayProcess(t, ['--config', file])
  return { gw, port: Number(new URL(gw.url).port), recorder, clean: new Set() }
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
  /** Keep the connection and send a plain GET on it after the answer. */
  readonly keepAlive: boolean
  /** On a `faults` route: where its plugin throws. */
  readonly fault: Fault
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

async function run (port: number, seed: number, spec: Spec, timeoutMs = 6_000): Promise<Done> {
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
      ['x-fuzz-plan', spec.plan],
      ...(spec.fault !== 'none' ? [['x-fuzz-fault', spec.fault] as const] : [])
    ],
    body: spec.send,
    mode: spec.mode,
    reset: spec.reset,
    timeoutMs,
    ...(spec.keepAlive ? { followUp: `GET /healthy/${spec.id} HTTP/1.1\r\nhost: fuzz.test\r\nx-request-id: ${requestId}-next\r\nconnection: close\r\n\r\n` } : {})
  })
  return { spec, outcome, requestId }
}

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
  /** The message of a gateway-made answer. */
  readonly message?: string
  readonly parsed?: ParsedResponse
}

function describe (d: Done, arrivals: Arrival[], mirrors: Arrival[] = []): string {
  const got = d.outcome.received.subarray(0, 240).toString('latin1').replace(/\r\n/g, '⏎')
  const list = (l: Arrival[]): string => l.map((a) => `t${a.n}@e${a.endpoint}:${a.behaviour}:${a.bytes}B${a.complete ? '' : ' incomplete'}`).join(', ')
  return `${specText(d.spec)} ` +
    `requestId=${d.requestId}; arrivals=[${list(arrivals)}]${mirrors.length > 0 ? `; mirrored=[${list(mirrors)}]` : ''}; ` +
    `sentAll=${d.outcome.sentAll} socketError=${d.outcome.socketError ?? '-'} received=${d.outcome.received.length}B ${JSON.stringify(got)}`
}

/** Every check of one exchange, against what the upstreams recorded. */
function verdict (d: Done, arrivals: Arrival[], mirrors: Arrival[]): Verdict {
  const v: string[] = []
  const { spec, outcome } = d
  const p = spec.route.policy
  // A mirror gets at most one copy, only of bodies it may copy, and the copy is intact.
  if (spec.route.mirror !== true && mirrors.length > 0) v.push(`${mirrors.length} mirrored copies from a route without a mirror`)
  if (mirrors.length > 1) v.push(`mirrored ${mirrors.length} times`)
  if (mirrors.length > 0 && (spec.body.kind === 'chunked' || spec.body.len > MIRROR_BODY_BYTES)) v.push(`a ${spec.body.kind} body of ${spec.body.len} bytes was mirrored (maxBodyBytes ${MIRROR_BODY_BYTES})`)
  for (const m of mirrors) {
    if (m.corruptAt !== undefined) v.push(`the mirrored copy carried a corrupt body from byte ${m.corruptAt}`)
    if (m.complete && m.bytes !== spec.body.len) v.push(`the mirrored copy carried a ${m.bytes}-byte body, not ${spec.body.len}`)
    if (m.method !== spec.method) v.push(`the mirrored copy went out as ${m.method}`)
  }
  const repeatable = mayRepeat(p, spec.method, spec.body)
  // Never repeated when its body could not be re-sent or its method may not repeat.
  const most = repeatable ? p.attempts : 1
  if (arrivals.length > most) v.push(`reached upstreams ${arrivals.length} times (at most ${most}: ${repeatable ? 'tries' : 'a non-repeatable request'})`)
  for (const a of arrivals) {
    if (a.corruptAt !== undefined) v.push(`try ${a.n} carried a corrupt body from byte ${a.corruptAt}`)
    if (a.complete && a.bytes !== spec.body.len) v.push(`try ${a.n} carried a ${a.bytes}-byte body, not ${spec.body.len}`)
    if (a.method !== spec.method) v.push(`try ${a.n} went out as ${a.method}`)
    if (spec.route.plugin === true && a.headers['x-fuzz-via-plugin'] !== '1') v.push(`try ${a.n} went out without the plugin's request header`)
    if (a.headers['x-request-id'] !== d.requestId) v.push(`try ${a.n} went out with x-request-id ${String(a.headers['x-request-id'])}`)
    // A buffered body is whole before the first try: every try carries all of it.
    if (buffered(p, spec.body) && spec.mode === 'normal' && !a.cutByUpstream && !a.complete) v.push(`try ${a.n} of a buffered body arrived without all of it (${a.bytes} of ${spec.body.len} bytes)`)
  }
  if (FAULTS_BEFORE_FORWARDING.has(spec.fault) && arrivals.length > 0) v.push(`forwarded although the route's plugin failed (${spec.fault})`)
  if (spec.mode !== 'normal') return { violations: v, kind: `client ${spec.mode}` }
  if (outcome.timedOut) {
    v.push(spec.keepAlive && outcome.followUpSent
      ? `the next request on the kept connection was neither answered nor the connection closed within ${Math.round(outcome.durationMs / 1000)} s`
      : `the gateway neither finished nor closed the exchange within ${Math.round(outcome.durationMs / 1000)} s`)
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
  // On a kept connection, what follows the answer is the answer to the plain GET sent after it.
  if (spec.keepAlive && outcome.followUpSent && res.complete) {
    const rest = outcome.received.subarray(res.length)
    if (rest.length > 0) {
      try {
        const next = parseResponse(rest, 'GET')
        if (next.status !== 200 || !next.complete || header(next, 'x-request-id') !== `${d.requestId}-next`) v.push(`the next request on the kept connection got ${next.status}${next.complete ? '' : ' (cut)'} with x-request-id ${header(next, 'x-request-id')}`)
        if (next.extra > 0) v.push(`${next.extra} bytes after the answer to the next request on the kept connection`)
      } catch (err) {
        v.push(`the next request on the kept connection got a malformed answer: ${(err as Error).message}`)
      }
    }
  } else if (res.extra > 0) v.push(`${res.extra} bytes after the answer`)
  if (header(res, 'x-request-id') !== d.requestId) v.push(`x-request-id ${header(res, 'x-request-id')} is not the request's`)
  const by = header(res, 'x-fuzz-by')
  let kind: string
  let relayed: Arrival | undefined
  let errorMessage: string | undefined
  if (by !== undefined) {
    // An upstream's answer, relayed.
    kind = `upstream ${res.status}${res.complete ? '' : ' (cut)'}`
    if (spec.route.plugin === true && header(res, 'x-fuzz-plugin') !== '1') v.push('relayed answer without the plugin\'s response header')
    if (header(res, 'x-fuzz-id') !== String(spec.id)) v.push(`answer of exchange ${header(res, 'x-fuzz-id')} relayed to exchange ${spec.id}`)
    const n = Number(header(res, 'x-fuzz-arrival'))
    relayed = arrivals.find((a) => a.n === n)
    if (relayed === undefined) v.push(`relayed answer of try ${n}, which the upstreams never saw`)
    else {
      const want = headStatus(relayed.behaviour)
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
    let message: string | undefined
    if (spec.method === 'HEAD') {
      code = '(HEAD: no body)'
      const allowed = FAULTS_BEFORE_FORWARDING.has(spec.fault) ? [500] : spec.fault === 'upstream-headers' ? [500, 502, 503, 504] : [502, 503, 504]
      if (!allowed.includes(res.status)) v.push(`gateway answered HEAD with ${res.status}`)
    } else if (!res.complete) {
      v.push(`gateway's own answer ${res.status} cut after ${res.body.length} bytes`)
    } else {
      const type = header(res, 'content-type') ?? ''
      if (!type.startsWith('application/json')) v.push(`gateway answer ${res.status} has content-type ${type}`)
      try {
        const body = JSON.parse(res.body.toString('utf8')) as { error?: { code?: unknown, message?: unknown, requestId?: unknown } }
        code = String(body.error?.code)
        message = typeof body.error?.message === 'string' ? body.error.message : undefined
        // A plugin's bug is the gateway's: 500 FASTMESH_ERR_INTERNAL, never blamed on an upstream.
        // (An edit of the upstream's headers that throws is answered as the gateway's own 500, its text not echoed.)
        const pluginBug = FAULTS_BEFORE_FORWARDING.has(spec.fault) || (spec.fault === 'upstream-headers' && code === catalogue.INTERNAL.code) || (typeof body.error?.message === 'string' && body.error.message.includes('fixture:'))
        const status = pluginBug ? (code === catalogue.INTERNAL.code ? catalogue.INTERNAL.statusCode : undefined) : EXPECTED_CODES.get(code)
        if (!/^FASTMESH_ERR_[A-Z_]+$/.test(code)) v.push(`gateway answer ${res.status} without a FASTMESH_ERR_* code: ${res.body.toString('utf8').slice(0, 200)}`)
        else if (status === undefined) v.push(`unexpected gateway answer ${res.status} ${code}${pluginBug ? ' to a plugin\'s exception' : ''}: ${String(body.error?.message)}`)
        else if (status !== res.status) v.push(`${code} answered with status ${res.status}, not ${status}`)
        if (body.error?.requestId !== d.requestId) v.push(`error body's requestId ${String(body.error?.requestId)} is not the request's`)
        if (typeof body.error?.message !== 'string' || body.error.message === '') v.push('error body without a message')
        else if (EXCEPTION_TEXT.test(body.error.message)) v.push(`an exception answered as ${code}: ${body.error.message}`)
      } catch {
        v.push(`gateway answer ${res.status} is not JSON: ${res.body.toString('utf8').slice(0, 200)}`)
      }
    }
    kind = `gateway ${res.status} ${code}`
    if (message !== undefined) errorMessage = message
  }
  if (FAULTS_BEFORE_FORWARDING.has(spec.fault) && by !== undefined) v.push(`an upstream's answer relayed although the route's plugin failed (${spec.fault})`)
  if (spec.fault === 'upstream-headers' && by !== undefined) v.push('an upstream\'s answer relayed although the plugin\'s edit of its headers failed')
  // The policy model below knows nothing of plugin faults that end the exchange.
  if (spec.fault !== 'none' && spec.fault !== 'on-response') return { violations: v, kind: `${kind} (fault ${spec.fault})`, parsed: res, message: errorMessage }
  // An upstream's complete answer that the policy does not retry goes back as it is.
  let excused: string | undefined
  let asIs = false
  for (const a of arrivals) {
    const status = behaviourStatus(a.behaviour)
    if (status === undefined || !a.answered) continue
    if (a.behaviour === 'slow' && SLOW_MS + 200 > spec.route.perTryMs) continue
    if (retriesStatus(p, spec.method, spec.body, status)) continue
    if (relayed === a) { asIs = true; break }
    // The gateway's try may have timed out before the answer reached it (the test process,
    // which runs clients and upstreams, lagging on a loaded machine): then a 504 after at least
    // the per-try time, or the next try no sooner than this try's time was up where timeouts
    // are retried, is right. (A dropped answer would be retried at once.)
    const timeoutAnswer = by === undefined && kind.includes(catalogue.UPSTREAM_TIMEOUT.code) && outcome.durationMs >= 0.9 * spec.route.perTryMs
    const after = arrivals.find((x) => x.n === a.n + 1)
    const retriedTimeout = after !== undefined && retriesTimeout(p, spec.method, spec.body) && after.at - outcome.startedAt >= 0.9 * spec.route.perTryMs * a.n
    if (timeoutAnswer || retriedTimeout) { excused = `try ${a.n} answered, but the gateway's try had timed out`; break }
    v.push(`try ${a.n} answered ${status} (${a.behaviour}), which this route does not retry for ${spec.method} with body ${spec.body.kind}:${spec.body.len}, but the client got ${kind}${relayed !== undefined ? ` from try ${relayed.n}` : ''}`)
    break
  }
  return { violations: v, kind, excused, asIs, parsed: res, message: errorMessage }
}

// ---------------------------------------------------------------------------------------------
// The issue's scenarios.

interface Scenario {
  readonly method: string
  readonly route: string
  readonly body: BodySpec
  readonly plan: string
  readonly mode?: ClientMode
  readonly fault?: Fault
}

let scenarioId = 1_000_000

async function scenario (fz: FuzzGateway, s: Scenario): Promise<{ done: Done, arrivals: Arrival[], res: ParsedResponse | undefined }> {
  const route = ROUTES.find((r) => r.prefix === s.route)
  assert.ok(route !== undefined, s.route)
  const id = scenarioId++
  const spec: Spec = { id, route, method: s.method, body: s.body, send: sendOf(id, s.body.kind, s.body.len), mode: s.mode ?? 'normal', reset: false, plan: s.plan, keepAlive: (s.mode ?? 'normal') === 'normal', fault: s.fault ?? 'none' }
  const done = await run(fz.port, 1, spec, 3_000)
  // Let a crash that follows the answer (a retry timer) happen before judging.
  await new Promise((resolve) => setTimeout(resolve, 300))
  const arrivals = fz.recorder.of(id)
  assert.equal(fz.gw.exited, false, `the gateway exited while serving ${describe(done, arrivals)}:\n${tail(fz.gw.stderr)}`)
  const v = verdict(done, arrivals, fz.recorder.mirrorsOf(id))
  assert.deepEqual(v.violations, [], describe(done, arrivals))
  if (spec.fault === 'none') fz.clean.add(done.requestId)
  else {
    // The log is flushed every second.
    for (let i = 0; i < 25 && !errorLogs(fz.gw).some((e) => e.requestId === done.requestId); i++) await new Promise((resolve) => setTimeout(resolve, 100))
    assert.ok(errorLogs(fz.gw).some((e) => e.requestId === done.requestId), `the plugin's exception (${spec.fault}) is logged with the request id: ${describe(done, arrivals)}`)
  }
  await assertStillServes(fz)
  if (spec.mode !== 'normal') return { done, arrivals, res: undefined }
  assert.ok(v.parsed !== undefined, `${v.kind}: ${describe(done, arrivals)}`)
  return { done, arrivals, res: v.parsed }
}

interface AdminServices {
  services: Array<{ name: string, layers?: Array<{ circuit?: { requests: number, retries: number } }> }>
}

/** Circuit admissions still held, per service layer; waits up to `waitMs` for them to be given back. */
async function heldCircuits (fz: FuzzGateway, waitMs: number): Promise<string[]> {
  const now = async (): Promise<string[]> => {
    const res = await undiciRequest(`${fz.gw.adminUrl}/services`)
    const body = await res.body.json() as AdminServices
    // Guards the check itself: admin must show the counts it reads.
    if (!body.services.some((s) => (s.layers ?? []).some((l) => l.circuit !== undefined))) return ['admin /services shows no circuit counts (layers[].circuit)']
    return body.services.flatMap((s) => (s.layers ?? [])
      .filter((l) => (l.circuit?.requests ?? 0) > 0 || (l.circuit?.retries ?? 0) > 0)
      .map((l) => `${s.name}: requests ${l.circuit!.requests}, retries ${l.circuit!.retries}`))
  }
  let held = await now()
  for (const deadline = Date.now() + waitMs; held.length > 0 && Date.now() < deadline;) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    held = await now()
  }
  return held
}

/** Nothing was logged as an error for the scenarios without an injected fault (nor without a request id). */
async function assertNoErrorsLogged (fz: FuzzGateway): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 1_200)) // the log is flushed every second
  const errors = errorLogs(fz.gw).filter((e) => e.requestId === undefined || fz.clean.has(e.requestId))
  assert.deepEqual(errors, [], 'the gateway logged errors for exchanges without an injected fault')
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

/**
 * The gateway's error log lines (a guard's "exception while serving a request", Fastify's
 * "request failed in the gateway", the last resort's "exception outside any request guard"):
 * outside injected plugin faults each is a bug, even when the exchange ended well, since the
 * gateway no longer exits on them.
 */
function errorLogs (gw: GatewayProcess): Array<{ requestId: string | undefined, text: string }> {
  return gw.logs()
    .filter((e) => e.level === 'error' || e.level === 'fatal')
    .map((e) => {
      const err = e.err as { type?: string, message?: string, stack?: string } | undefined
      const stack = (err?.stack ?? '').split('\n').slice(0, 4).join(' | ')
      return { requestId: typeof e.requestId === 'string' ? e.requestId : undefined, text: `${String(e.msg)} (where: ${String(e.where ?? e.kind)}): ${stack !== '' ? stack : String(err?.message)}` }
    })
}

function tail (text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n')
}

/** Asserts the client got the 503 of the first try as it was, and nothing was tried again. */
function assertRelayedAsIs (r: { done: Done, arrivals: Arrival[], res: ParsedResponse | undefined }): void {
  const what = describe(r.done, r.arrivals)
  assert.equal(r.res?.status, 503, what)
  assert.equal(header(r.res!, 'x-fuzz-arrival'), '1', `the first try's own answer: ${what}`)
  assert.equal(r.arrivals.length, 1, `not tried again: ${what}`)
  assert.ok(r.arrivals[0]!.complete && r.arrivals[0]!.bytes === r.done.spec.body.len, `the one try carried the whole body: ${what}`)
}

/** Asserts the 503 was dropped and the body re-sent, whole, to the other endpoint, which answered 200. */
function assertResentIntact (r: { done: Done, arrivals: Arrival[], res: ParsedResponse | undefined }): void {
  const what = describe(r.done, r.arrivals)
  assert.equal(r.res?.status, 200, what)
  assert.equal(r.arrivals.length, 2, what)
  assert.notEqual(r.arrivals[0]!.endpoint, r.arrivals[1]!.endpoint, `the retry took the other endpoint: ${what}`)
  for (const a of r.arrivals) assert.ok(a.complete && a.bytes === r.done.spec.body.len && a.corruptAt === undefined, `try ${a.n} carried the whole body intact: ${what}`)
}

const FIRST_503 = 't1=503;*=ok'
const small = (kind: BodySpec['kind'] = 'length'): BodySpec => ({ kind, len: 9 })

test('issue 13 scenario by scenario, and what the fuzz run found: no exchange stops the gateway, a body that cannot be re-sent is not retried, one that can is re-sent intact', async (t) => {
  // One gateway for all, restarted when a scenario stopped it, so each scenario fails alone.
  let fz: FuzzGateway | undefined
  const gateway = async (): Promise<FuzzGateway> => {
    if (fz === undefined || fz.gw.exited) fz = await startFuzzGateway(t)
    return fz
  }
  await t.test('a PUT with a 9-byte body on a gateway-error retry route (default backoff, no retry buffer): not retried, the 503 goes back', async () => {
    assertRelayedAsIs(await scenario(await gateway(), { method: 'PUT', route: '/pair/gw', body: small(), plan: FIRST_503 }))
  })
  await t.test('the same with zero backoff: no retry goes out without its body', async () => {
    assertRelayedAsIs(await scenario(await gateway(), { method: 'PUT', route: '/pair/gw0', body: small(), plan: FIRST_503 }))
  })
  await t.test('a DELETE with a body', async () => {
    assertRelayedAsIs(await scenario(await gateway(), { method: 'DELETE', route: '/pair/gw', body: small(), plan: FIRST_503 }))
  })
  await t.test('a PUT larger than bufferBodyBytes, and a chunked one', async () => {
    assertRelayedAsIs(await scenario(await gateway(), { method: 'PUT', route: '/pair/buf', body: { kind: 'length', len: BUF + 1 }, plan: FIRST_503 }))
    assertRelayedAsIs(await scenario(await gateway(), { method: 'PUT', route: '/pair/buf', body: { kind: 'chunked', len: 9 }, plan: FIRST_503 }))
  })
  await t.test('an unbuffered POST on a route with nonIdempotent: true', async () => {
    assertRelayedAsIs(await scenario(await gateway(), { method: 'POST', route: '/pair/nonidem-unbuf', body: small(), plan: FIRST_503 }))
  })
  await t.test('service-level retries (services.<name>.retries)', async () => {
    assertRelayedAsIs(await scenario(await gateway(), { method: 'PUT', route: '/svc', body: small(), plan: FIRST_503 }))
  })
  await t.test('a body that fits the retry buffer is re-sent intact (PUT, DELETE, opted-in POST, after a reset), and a bodyless GET is still retried', async () => {
    assertResentIntact(await scenario(await gateway(), { method: 'PUT', route: '/pair/buf', body: small(), plan: FIRST_503 }))
    assertResentIntact(await scenario(await gateway(), { method: 'DELETE', route: '/pair/buf', body: small(), plan: FIRST_503 }))
    assertResentIntact(await scenario(await gateway(), { method: 'PUT', route: '/pair/buf', body: { kind: 'length', len: BUF }, plan: FIRST_503 }))
    assertResentIntact(await scenario(await gateway(), { method: 'POST', route: '/pair/nonidem', body: small(), plan: FIRST_503 }))
    assertResentIntact(await scenario(await gateway(), { method: 'PUT', route: '/pair/reset', body: small(), plan: 't1=reset-before-headers;*=ok' }))
    const get = await scenario(await gateway(), { method: 'GET', route: '/pair/gw', body: { kind: 'none', len: 0 }, plan: FIRST_503 })
    assert.equal(get.res?.status, 200, describe(get.done, get.arrivals))
    assert.equal(get.arrivals.length, 2)
  })
  // Found by the fuzz run: the upstream resets the try before reading the body, and the gateway
  // answers 502 while the client is still sending it; the connection must not be left stuck.
  await t.test('after an answer given before the request body was read, the kept connection serves the next request or is closed', async () => {
    await scenario(await gateway(), { method: 'PATCH', route: '/pair/default', body: { kind: 'slow', len: 1500 }, plan: '*=reset-early' })
    await scenario(await gateway(), { method: 'PUT', route: '/pair/default', body: { kind: 'length', len: 300_000 }, plan: '*=reset-early' })
    // The upstream's own early answer relayed while the body still comes (seed 982360314, #1244).
    await scenario(await gateway(), { method: 'POST', route: '/fz/default', body: { kind: 'slow', len: 1100 }, plan: '*=early-503' })
  })
  await t.test('a plugin\'s exception in a hook ends only its exchange: a JSON 500, logged with the request id', async () => {
    const g = await gateway()
    await Promise.all((['on-request', 'on-request-sync', 'pre-handler'] as const).map(async (fault) => {
      const r = await scenario(g, { method: 'GET', route: '/fz/faults', body: { kind: 'none', len: 0 }, plan: '*=ok', fault })
      assert.equal(r.res?.status, 500, `${fault}: ${describe(r.done, r.arrivals)}`)
    }))
  })
  // Found by the fuzz run: route plugins' bugs outside Fastify's hook guards.
  await t.test('a plugin\'s exception while editing the upstream\'s response headers: a JSON 500 logged with the request id, not an upstream failure', async () => {
    const r = await scenario(await gateway(), { method: 'GET', route: '/fz/faults', body: { kind: 'none', len: 0 }, plan: '*=ok', fault: 'upstream-headers' })
    assert.equal(r.res?.status, 500, describe(r.done, r.arrivals))
  })
  await t.test('a plugin\'s exception in onResponse, after the answer went out, is logged with the request id', async () => {
    const r = await scenario(await gateway(), { method: 'GET', route: '/fz/faults', body: { kind: 'none', len: 0 }, plan: '*=ok', fault: 'on-response' })
    assert.equal(r.res?.status, 200, describe(r.done, r.arrivals))
  })
  // Found by the fuzz run: admissions held by an exchange whose client left during a retry's backoff.
  await t.test('a client that leaves while a retry waits out its backoff gives back its circuit admissions', async () => {
    const g = await gateway()
    for (let i = 0; i < 3; i++) await scenario(g, { method: 'GET', route: '/pair/gwslow', body: { kind: 'none', len: 0 }, plan: '*=503', mode: 'abort-while-waiting' })
    assert.deepEqual(await heldCircuits(g, 2_000), [], 'every admission is given back once the exchanges ended')
  })
  await t.test('nothing is logged as an error for the scenarios without an injected fault', async () => {
    await assertNoErrorsLogged(await gateway())
  })
})

// ---------------------------------------------------------------------------------------------
// The randomized run.

const METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH'] as const
const BEHAVIOUR_WEIGHTS: Array<[Behaviour, number]> = [
  ['ok', 28], ['503', 14], ['500', 6], ['502', 4], ['ok-chunked', 5], ['reset-early', 5], ['reset-before-headers', 6],
  ['close-before-headers', 6], ['reset-during-body', 5], ['200-then-hang', 3], ['503-then-hang', 3], ['early-503', 4], ['hints-then-ok', 3],
  ['slow', 5], ['hang', 3], ['garbage', 3]
]

function weighted<T> (rnd: () => number, items: Array<[T, number]>): T {
  const total = items.reduce((s, [, w]) => s + w, 0)
  let x = rnd() * total
  for (const [item, w] of items) { if ((x -= w) < 0) return item }
  return items[items.length - 1]![0]
}

function makeSpec (rnd: () => number, id: number, keepAliveShare: number): Spec {
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
  const mode = weighted<ClientMode>(rnd, [['normal', 76], ['abort-after-headers', 6], ['abort-mid-body', 6], ['abort-after-first-byte', 6], ['abort-while-waiting', 6]])
  const pick = (): Behaviour => weighted(rnd, BEHAVIOUR_WEIGHTS)
  const plan = rnd() < 0.25 ? `t1=${pick()};t2=${pick()};*=${pick()}` : `e0=${pick()};e1=${pick()}`
  return { id, route, method, body, send: sendOf(id, body.kind, body.len), mode, reset: rnd() < 0.5, plan, keepAlive: mode === 'normal' && rnd() < keepAliveShare, fault: route.faults === true ? FAULTS[Math.floor(rnd() * FAULTS.length)]! : 'none' }
}

/** Violations grouped by their first line with numbers and addresses blanked: a count and up to 3 examples per kind. */
function byKind (violations: string[]): string {
  const groups = new Map<string, string[]>()
  for (const v of violations) {
    const first = v.split('\n')[0]!
    const key = (first.includes(': ') ? first.slice(0, first.indexOf(': ')) : first).replace(/\d+(\.\d+)*(:\d+)?/g, 'N').slice(0, 100)
    const list = groups.get(key) ?? []
    list.push(v)
    groups.set(key, list)
  }
  return [...groups.values()].sort((a, b) => b.length - a.length)
    .map((list) => `${list.length} x ${list[0]!.split('\n')[0]}\n${list.slice(0, 3).map((x) => `  - ${x}`).join('\n')}`).join('\n')
}

function envInt (name: string, fallback: number): number {
  const v = process.env[name]
  return v !== undefined && v !== '' ? Number.parseInt(v, 10) : fallback
}

function specText (s: Spec): string {
  return `#${s.id} ${s.method} ${s.route.prefix}/${s.id} body=${s.body.kind}:${s.body.len} client=${s.mode}${s.reset && s.mode !== 'normal' ? '(rst)' : ''}${s.keepAlive ? '+keep-alive' : ''} plan="${s.plan}"${s.fault !== 'none' ? ` x-fuzz-fault=${s.fault}` : ''}`
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

test('exchange fuzz: thousands of random exchanges never stop the gateway, and every answer is well-formed and faithful', async (t) => {
  const seed = envInt('FUZZ_SEED', Math.floor(Math.random() * 2 ** 31))
  const count = envInt('FUZZ_COUNT', 2000)
  const concurrency = envInt('FUZZ_CONCURRENCY', 24)
  const timeBudgetMs = envInt('FUZZ_TIME_MS', 20_000)
  const keepAliveShare = envInt('FUZZ_KEEPALIVE_PERCENT', 30) / 100
  console.log(`exchange fuzz: FUZZ_SEED=${seed} FUZZ_COUNT=${count} FUZZ_CONCURRENCY=${concurrency} FUZZ_TIME_MS=${timeBudgetMs} FUZZ_KEEPALIVE_PERCENT=${keepAliveShare * 100}`)
  const fz = await startFuzzGateway(t)
  const rnd = mulberry32(seed)
  const specs: Spec[] = []
  for (let i = 1; i <= count; i++) specs.push(makeSpec(rnd, i, keepAliveShare))

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
  let mirrored = 0
  const verdicts = new Map<number, Verdict>()
  for (const d of done) {
    const arrivals = fz.recorder.of(d.spec.id)
    const mirrors = fz.recorder.mirrorsOf(d.spec.id)
    const v = verdict(d, arrivals, mirrors)
    verdicts.set(d.spec.id, v)
    kinds.set(v.kind, (kinds.get(v.kind) ?? 0) + 1)
    if (v.excused !== undefined) excused++
    if (v.asIs === true) asIs++
    if (arrivals.length > 1) repeated++
    if (mirrors.length > 0) mirrored++
    if (arrivals.length > 1 && d.spec.body.len > 0 && arrivals.every((a) => a.complete)) repeatedBodies++
    if (v.violations.length > 0) violations.push(`${v.violations.join('; ')}\n    ${describe(d, arrivals, mirrors)}`)
  }
  // Each exchange is logged once, with the status the client saw. The gateway's log is
  // buffered (flushed every second), so wait until every answered exchange has its line.
  const answered = done.filter((d) => d.spec.mode === 'normal' && verdicts.get(d.spec.id)!.parsed?.complete === true)
  const accessLines = (): Map<string, Array<{ status?: number }>> => {
    const out = new Map<string, Array<{ status?: number }>>()
    for (const e of fz.gw.logs()) {
      if (e.log !== 'access') continue
      const id = String(e.requestId)
      const list = out.get(id) ?? []
      list.push(e as { status?: number })
      out.set(id, list)
    }
    return out
  }
  let access = accessLines()
  for (let i = 0; i < 20 && answered.some((d) => !access.has(d.requestId)); i++) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    access = accessLines()
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
  // Exceptions: an injected plugin fault is logged with its request id; nothing else is logged.
  const byRequestId = new Map(done.map((d) => [d.requestId, d]))
  const errors = errorLogs(fz.gw)
  const logged = new Set(errors.map((x) => x.requestId))
  for (const d of done) {
    const v = verdicts.get(d.spec.id)!
    const threw = FAULTS_BEFORE_FORWARDING.has(d.spec.fault) || (d.spec.fault === 'on-response' && v.parsed?.complete === true) || (d.spec.fault === 'upstream-headers' && v.parsed?.status === 500) || (v.message ?? '').includes('fixture:')
    if (d.spec.mode === 'normal' && threw && !logged.has(d.requestId)) violations.push(`the plugin's exception (${d.spec.fault}) was not logged with the request id\n    ${describe(d, fz.recorder.of(d.spec.id))}`)
  }
  const unexpected = errors.filter((x) => x.requestId === undefined || (byRequestId.get(x.requestId)?.spec.fault ?? 'none') === 'none')
  for (const x of unexpected.slice(0, 10)) {
    const d = x.requestId !== undefined ? byRequestId.get(x.requestId) : undefined
    violations.push(`gateway logged: ${x.text}\n    ${d !== undefined ? describe(d, fz.recorder.of(d.spec.id)) : `request ${x.requestId ?? '(none)'}`}`)
  }
  if (unexpected.length > 10) violations.push(`... and ${unexpected.length - 10} more error lines logged`)
  const summary = [...kinds].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}: ${n}`).join(', ')
  console.log(`exchange fuzz: outcomes ${summary}`)
  console.log(`exchange fuzz: ${repeated} exchanges reached upstreams more than once (${repeatedBodies} re-sent a body whole), ` +
    `${asIs} upstream answers checked to go back as they were (${excused} excused as answered after a try's timeout), ` +
    `${mirrored} mirrored, ${[...access.values()].reduce((n, l) => n + l.length, 0)} access lines; ${violations.length} violations`)

  // The gateway still serves, and no exchange holds a circuit slot.
  for (let i = 0; i < 5; i++) {
    const res = await undiciRequest(`${fz.gw.url}/healthy/${i}`, { headers: { 'x-request-id': `after-fuzz-${i}` } })
    await res.body.dump()
    assert.equal(res.statusCode, 200, 'a plain GET to a healthy route after the run')
  }
  const busy = await heldCircuits(fz, 3_000)
  if (busy.length > 0) violations.push(`exchanges left holding circuit admissions 3 s after the run: ${busy.join('; ')}`)

  assert.equal(fz.gw.exited, false, tail(fz.gw.stderr))
  assert.ok(done.length >= Math.min(count, 200), `only ${done.length} exchanges ran within ${timeBudgetMs} ms`)
  assert.equal(violations.length, 0, `${violations.length} violations (FUZZ_SEED=${seed}), by kind (up to 3 examples each):\n${byKind(violations)}`)
})
