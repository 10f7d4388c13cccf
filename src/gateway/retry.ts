// Route layer, retries: the compiled retry policy of a route (which failures and statuses
// are retried, for which methods, with what backoff) and its retry budget. Used only by the
// route layer: retries happen there and nowhere else (undici retries nothing by itself).
import { DEFAULT_RETRY_ON, type RouteConfig } from '../config/schema.js'
import type { FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { stateKind } from '../state/registry.js'
import type { RandomSource } from '../balancer/random.js'
import type { TryOutcome } from './exchange.js'

/** What went wrong with one try, as far as retrying is concerned. */
export type FailureKind = 'connect-failure' | 'refused' | 'reset' | 'timeout' | 'other'

/** Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])

/** undici / socket error codes that mean no connection was made (nothing was sent). */
const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'ERR_TLS_CERT_ALTNAME_INVALID', 'FASTMESH_ERR_PEER_IDENTITY', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_HAS_EXPIRED', 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA'])
const RESETS = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED'])
/** Connect failures below TLS: no TCP connection could be made to the endpoint at all. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN'])

/** A failed try's outcome as the policies name it (src/gateway/exchange.ts). */
export function tryOutcomeOf (kind: FailureKind): TryOutcome {
  switch (kind) {
    case 'connect-failure':
    case 'refused': return 'connect_error'
    case 'reset': return 'reset'
    case 'timeout': return 'timeout'
    default: return 'error'
  }
}

/** Classifies the cause of a failed try (the endpoint layer keeps undici's error as `cause`). */
export function failureKind (err: Error & { code?: string, cause?: unknown }): FailureKind {
  let e: unknown = err
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string') {
      if (code === 'ECONNREFUSED') return 'refused'
      if (CONNECT_FAILURES.has(code)) return 'connect-failure'
      if (RESETS.has(code)) return 'reset'
      if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'timeout'
    }
    e = (e as { cause?: unknown }).cause
  }
  return 'other'
}

/** Whether a try failed because no TCP connection could be made (the service layer then takes the endpoint out until a connect probe reaches it). */
export function isUnreachable (err: Error & { code?: string, cause?: unknown }): boolean {
  let e: unknown = err
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && UNREACHABLE.has(code)) return true
    e = (e as { cause?: unknown }).cause
  }
  return false
}

/** A failure before any connection was made: nothing reached the upstream. */
export function isConnectFailure (kind: FailureKind): boolean {
  return kind === 'refused' || kind === 'connect-failure'
}

/** Tries of one request at most, connect failures included (they do not count towards `attempts`). */
export const MAX_TRIES = 10

export interface CompiledRetryPolicy {
  readonly attempts: number
  readonly perTryTimeoutMs: number
  readonly requestTimeoutMs: number | undefined
  readonly bufferBodyBytes: number
  /** Whether a failed try of `method` that ended as `kind` may be tried again (budget aside). */
  retriesFailure(kind: FailureKind, method: string): boolean
  /** Whether an answer with `status` is retried (not relayed) for `method`. */
  retriesStatus(status: number, method: string): boolean
  /** Wait before try number `next` (2 for the first retry), full jitter. */
  backoffMs(next: number, random: RandomSource): number
  readonly budget: { readonly percent: number, readonly minPerSecond: number }
}

/**
 * The built-in policies of a config, by the route timeouts they depend on: routes without a
 * retry policy of their own or their service's share one (a thousand routes, a few policies).
 */
const builtInPolicies = new WeakMap<FastmeshConfig, Map<string, CompiledRetryPolicy>>()

/** The route's retry policy: its own, else its service's default, else the built-in one. */
export function compileRetryPolicy (route: RouteConfig, config: FastmeshConfig): CompiledRetryPolicy {
  const service = route.destination.service !== undefined ? config.services[route.destination.service] : undefined
  const p = route.retries ?? service?.retries
  if (p !== undefined) return retryPolicy(p, route)
  let shared = builtInPolicies.get(config)
  if (shared === undefined) builtInPolicies.set(config, shared = new Map())
  const key = `${route.timeout}|${route.requestTimeout ?? ''}`
  let policy = shared.get(key)
  if (policy === undefined) shared.set(key, policy = retryPolicy(undefined, route))
  return policy
}

function retryPolicy (p: RouteConfig['retries'], route: Pick<RouteConfig, 'timeout' | 'requestTimeout'>): CompiledRetryPolicy {
  const on = new Set<string>(p?.retryOn ?? DEFAULT_RETRY_ON)
  const statuses = new Set(p?.retriableStatusCodes ?? [])
  const nonIdempotent = p?.nonIdempotent ?? false
  const base = durationMs(p?.backoff.base ?? '25ms')
  const max = durationMs(p?.backoff.max ?? '250ms')
  const gatewayErrors = on.has('gateway-error') || on.has('5xx')
  const mayRepeat = (method: string): boolean => nonIdempotent || IDEMPOTENT.has(method)
  return {
    attempts: p?.attempts ?? 2,
    perTryTimeoutMs: durationMs(p?.perTryTimeout ?? route.timeout),
    // 0 means no limit, as everywhere in the config.
    requestTimeoutMs: route.requestTimeout !== undefined && durationMs(route.requestTimeout) > 0 ? durationMs(route.requestTimeout) : undefined,
    bufferBodyBytes: p?.bufferBodyBytes ?? 0,
    retriesFailure (kind, method) {
      // Nothing reached the upstream: safe for every method.
      if (kind === 'refused') return on.has('refused') || on.has('connect-failure') || gatewayErrors
      if (kind === 'connect-failure') return on.has('connect-failure') || gatewayErrors
      if (!mayRepeat(method)) return false
      if (kind === 'reset') return on.has('reset') || gatewayErrors
      if (kind === 'timeout') return gatewayErrors
      return false
    },
    retriesStatus (status, method) {
      if (!mayRepeat(method)) return false
      if (on.has('5xx') && status >= 500) return true
      if (on.has('gateway-error') && (status === 502 || status === 503 || status === 504)) return true
      return on.has('retriable-status-codes') && statuses.has(status)
    },
    backoffMs (next, random) {
      const ceiling = Math.min(max, base * 2 ** Math.max(0, next - 2))
      return Math.floor(random() * ceiling)
    },
    budget: { percent: p?.budget.percent ?? 20, minPerSecond: p?.budget.minPerSecond ?? 10 }
  }
}

const WINDOW_SLOTS = 10
const SLOT_MS = 1000

/**
 * A route's retry budget over the last 10 s: retries may add `percent` of the requests
 * plus `minPerSecond` per second. Ten one-second slots, so recording is O(1).
 */
export class RetryBudget {
  private readonly requests = new Array<number>(WINDOW_SLOTS).fill(0)
  private readonly retries = new Array<number>(WINDOW_SLOTS).fill(0)
  private slot = 0
  private slotStart = 0
  /** Retries refused by the budget, for the admin API. */
  exhausted = 0

  constructor (private readonly now: () => number = Date.now) {}

  private advance (): void {
    const t = this.now()
    if (this.slotStart === 0) { this.slotStart = t; return }
    let steps = Math.floor((t - this.slotStart) / SLOT_MS)
    if (steps <= 0) return
    this.slotStart += steps * SLOT_MS
    if (steps > WINDOW_SLOTS) steps = WINDOW_SLOTS
    while (steps-- > 0) {
      this.slot = (this.slot + 1) % WINDOW_SLOTS
      this.requests[this.slot] = 0
      this.retries[this.slot] = 0
    }
  }

  recordRequest (): void {
    this.advance()
    this.requests[this.slot]!++
  }

  /** Takes one retry from the budget if there is one left. */
  tryRetry (budget: CompiledRetryPolicy['budget']): boolean {
    this.advance()
    let requests = 0
    let retries = 0
    for (let i = 0; i < WINDOW_SLOTS; i++) { requests += this.requests[i]!; retries += this.retries[i]! }
    if (retries + 1 > (budget.percent / 100) * requests + budget.minPerSecond * WINDOW_SLOTS) {
      this.exhausted++
      return false
    }
    this.retries[this.slot]!++
    return true
  }
}

/** Retry budgets live in the state registry by route name: a reload keeps a route's budget. */
export const retryBudgetKind = stateKind('retryBudget', 'route', () => new RetryBudget())
