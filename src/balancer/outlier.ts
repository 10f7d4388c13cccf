// Service layer: passive outlier detection for one destination. It watches each attempt's
// outcome, ejects endpoints that keep failing (for base time × ejections), lets them back
// when the time is up, and filters the balancer's candidates (max ejection percent, panic).
// Rules: consecutive gateway errors (502/503/504 answers included), consecutive 5xx, and
// optionally success rate (as Envoy's). Apart from them, an endpoint no connection can be made
// to is unreachable: out at once, whatever the share, until a connect probe reaches it.
import type { Logger } from 'pino'
import { Value } from '@sinclair/typebox/value'
import { OutlierDetectionSchema, type OutlierDetectionConfig } from '../config/schema.js'
import { durationMs } from '../config/duration.js'
import { stateKind } from '../state/registry.js'
import type { AttemptOutcome } from './types.js'

export interface OutlierSettings {
  readonly enabled: boolean
  /** 0: rule off. */
  readonly consecutiveGatewayErrors: number
  /** 0: rule off. */
  readonly consecutive5xx: number
  readonly baseEjectionTimeMs: number
  readonly maxEjectionTimeMs: number
  readonly maxEjectionPercent: number
  readonly panicThreshold: number
  /** Absent: the success-rate rule is off. */
  readonly successRate?: SuccessRateSettings
  /** Absent: an endpoint refusing connections is only counted by the rules above. */
  readonly unreachable?: UnreachableSettings
}

/** How often an unreachable endpoint is probed: after `baseMs`, doubling per failed probe up to `maxMs`. */
export interface UnreachableSettings {
  readonly baseMs: number
  readonly maxMs: number
}

export interface SuccessRateSettings {
  readonly minimumHosts: number
  readonly requestVolume: number
  readonly stdevFactor: number
  readonly intervalMs: number
}

/** The schema's defaults, made once: every service without a policy shares them (thousands of destinations, one object). */
let defaultOutlierSettings: OutlierSettings | undefined

/** Settings from `services.<name>.outlierDetection`; the schema's defaults when it is absent (a service with no policy). */
export function outlierSettings (config?: OutlierDetectionConfig): OutlierSettings {
  if (config === undefined) return (defaultOutlierSettings ??= Object.freeze(settingsOf(Value.Default(OutlierDetectionSchema, {}) as OutlierDetectionConfig)))
  return settingsOf(config)
}

function settingsOf (c: OutlierDetectionConfig): OutlierSettings {
  return {
    enabled: c.enabled,
    consecutiveGatewayErrors: c.consecutiveGatewayErrors,
    consecutive5xx: c.consecutive5xx,
    baseEjectionTimeMs: durationMs(c.baseEjectionTime),
    maxEjectionTimeMs: durationMs(c.maxEjectionTime),
    maxEjectionPercent: c.maxEjectionPercent,
    panicThreshold: c.panicThreshold,
    ...(c.successRate?.enabled === true
      ? {
          successRate: {
            minimumHosts: c.successRate.minimumHosts,
            requestVolume: c.successRate.requestVolume,
            stdevFactor: c.successRate.stdevFactor,
            intervalMs: durationMs(c.successRate.interval)
          }
        }
      : {}),
    ...(c.unreachable.enabled
      ? { unreachable: { baseMs: durationMs(c.unreachable.backoff.base), maxMs: durationMs(c.unreachable.backoff.max) } }
      : {})
  }
}

/** One endpoint's record. */
interface EndpointRecord {
  consecutive5xx: number
  consecutiveGatewayErrors: number
  /** The ejection multiplier: ejections in a row, lowered while the endpoint stays back. */
  ejections: number
  /** Ejected until this time (ms); 0 while not ejected. */
  until: number
  /** Why it was last ejected. */
  reason: string | undefined
  /** When it last came back (ms); 0 if never ejected. */
  returnedAt: number
  /** Success-rate rule: outcomes counted in the current interval, and the successes among them. */
  requests: number
  successes: number
  /** Unreachable (a connection could not be made): when its next connect probe is due (ms); 0 while reachable. */
  probeAt: number
  /** A connect probe is under way. */
  probing: boolean
  /** Connect failures and failed probes since the last answer: each doubles the probe interval. */
  unreachableStreak: number
}

/**
 * The per-endpoint records of one destination, shared by the detectors of every config
 * version (a detector is per version: its settings are that version's), so ejections
 * survive reloads. Kept in the state registry by the service's selector key.
 */
export class OutlierStore {
  readonly records = new Map<string, EndpointRecord>()
  readonly ejected = new Set<string>()
  /** Endpoints no connection could be made to, until a connect probe succeeds. */
  readonly unreachable = new Set<string>()
  /** Bumped on every ejection and return, unreachable or reachable again (detectors cache `usable` results by it). */
  version = 0
  /** Earliest `until` among the ejected; Infinity when none is. */
  nextExpiry = Infinity
  /** Earliest `probeAt` among the unreachable not being probed; Infinity when none is. */
  nextProbe = Infinity
  /** Candidates the balancer last had (the base of max ejection percent). */
  hostCount = 0
  /** Success-rate rule: when the current counting interval began (ms); -Infinity before the first outcome. */
  intervalStart = -Infinity

  /** Forgets endpoints discovery no longer lists (pass every known id, passing or not). */
  prune (ids: Iterable<string>): void {
    const keep = new Set(ids)
    for (const id of this.records.keys()) {
      if (keep.has(id)) continue
      this.records.delete(id)
      if (this.ejected.delete(id)) this.version++
      if (this.unreachable.delete(id)) this.version++
    }
  }
}

/** Outlier records by service selector key (src/balancer/service-endpoints.ts `key`). */
export const outlierStoreKind = stateKind('outlier', 'service', () => new OutlierStore())

export interface OutlierEvent {
  readonly type: 'ejected' | 'returned' | 'unreachable' | 'reachable'
  readonly service: string
  readonly endpointId: string
  /** Ejections in a row (the multiplier of this ejection). */
  readonly ejections: number
  /** For `ejected`: until when (ms); for `unreachable`: when it is probed (ms). */
  readonly until?: number
  readonly reason?: string
}

/** One endpoint as admin `/services` shows it (an unreachable one is out of rotation too: `ejected`). */
export interface OutlierView {
  readonly state: 'ejected' | 'healthy'
  /** While ejected: until when (ms since the epoch with the default clock); unreachable: its next probe. */
  readonly until?: number
  /** While ejected: why. */
  readonly reason?: string
  readonly ejections: number
  readonly consecutive5xx: number
  readonly consecutiveGatewayErrors: number
}

const HEALTHY: OutlierView = { state: 'healthy', ejections: 0, consecutive5xx: 0, consecutiveGatewayErrors: 0 }
const NO_PROBES: readonly string[] = []

/** Why an unreachable endpoint is out of rotation (admin, log). */
export const UNREACHABLE_REASON = 'unreachable: a connection could not be made; back once a connect probe succeeds'

/** Answers that say the endpoint, or what is in front of it, failed: gateway failures as Envoy counts them. */
function isGatewayStatus (status: number): boolean {
  return status === 502 || status === 503 || status === 504
}

export interface OutlierOptions {
  readonly log?: Logger
  readonly onChange?: (event: OutlierEvent) => void
}

/**
 * Outlier detection of one destination under one config version's settings. Every method
 * takes `now` (ms; Date.now() in production, a fake clock in tests): ejections end lazily,
 * when a method sees their time has passed, so no timer runs per endpoint.
 */
export class OutlierDetector {
  private cacheIn: readonly unknown[] | undefined
  private cacheOut: readonly unknown[] | undefined
  private cacheVersion = -1
  private panicking = false

  constructor (
    readonly service: string,
    readonly settings: OutlierSettings,
    readonly store: OutlierStore = new OutlierStore(),
    private readonly options: OutlierOptions = {}
  ) {}

  /** Counts one attempt's outcome on `endpointId`; may eject it, or mark it unreachable. */
  report (endpointId: string, outcome: AttemptOutcome, now: number): void {
    const s = this.settings
    if (!s.enabled) return
    const gatewayError = outcome.gatewayError
    const is5xx = gatewayError || outcome.status >= 500
    // No status and no gateway error: the client went away; says nothing about the endpoint.
    if (!gatewayError && outcome.status === 0) return
    // Nothing reached it: out of rotation at once (not counted by the rules below, whose
    // ejections last far longer than an endpoint that listens again needs).
    if (outcome.unreachable === true && s.unreachable !== undefined) {
      this.markUnreachable(endpointId, s.unreachable, now)
      return
    }
    const sr = s.successRate
    // The interval that ended is judged before this outcome opens the next one.
    if (sr !== undefined && now - this.store.intervalStart >= sr.intervalMs) this.judgeSuccessRates(sr, now)
    let r = this.store.records.get(endpointId)
    if (r === undefined) {
      // Without the success-rate rule only failures need a record (no allocation per healthy endpoint).
      if (!is5xx && sr === undefined) return
      r = newRecord()
      this.store.records.set(endpointId, r)
    }
    if (r.until !== 0) {
      // Attempts that were in flight when it was ejected change nothing.
      if (now < r.until) return
      this.restore(endpointId, r, now)
    }
    if (sr !== undefined) {
      r.requests++
      if (!is5xx) r.successes++
    }
    // Any answer shows a connection could be made.
    if (outcome.status !== 0) r.unreachableStreak = 0
    r.consecutiveGatewayErrors = gatewayError || isGatewayStatus(outcome.status) ? r.consecutiveGatewayErrors + 1 : 0
    r.consecutive5xx = is5xx ? r.consecutive5xx + 1 : 0
    let reason: string | undefined
    if (s.consecutiveGatewayErrors > 0 && r.consecutiveGatewayErrors >= s.consecutiveGatewayErrors) reason = `${r.consecutiveGatewayErrors} consecutive gateway errors`
    else if (s.consecutive5xx > 0 && r.consecutive5xx >= s.consecutive5xx) reason = `${r.consecutive5xx} consecutive 5xx`
    if (reason !== undefined) this.eject(endpointId, r, reason, now)
  }

  /**
   * Another process of this gateway (a worker) ejected `endpointId` until `until`: it leaves
   * rotation here too, within the same max ejection share, without an event (the ejecting
   * process counted and reported it). Returns whether it was ejected here.
   */
  adopt (endpointId: string, until: number, reason: string, now: number): boolean {
    const s = this.settings
    if (!s.enabled || until <= now) return false
    const store = this.store
    if (now >= store.nextExpiry) this.sweep(now)
    let r = store.records.get(endpointId)
    if (r === undefined) {
      r = newRecord()
      store.records.set(endpointId, r)
    }
    if (r.until > now) return false
    const allowed = s.maxEjectionPercent === 0 ? 0 : Math.max(1, Math.floor(store.hostCount * s.maxEjectionPercent / 100))
    if (store.ejected.size >= allowed) return false
    r.ejections++
    r.until = until
    r.reason = reason
    r.consecutive5xx = 0
    r.consecutiveGatewayErrors = 0
    store.ejected.add(endpointId)
    if (until < store.nextExpiry) store.nextExpiry = until
    store.version++
    this.options.log?.info({ service: this.service, endpoint: endpointId, reason, until: new Date(until).toISOString() }, 'outlier detection: endpoint ejected by another worker')
    return true
  }

  isEjected (endpointId: string, now: number): boolean {
    const r = this.store.records.get(endpointId)
    if (r === undefined || r.until === 0) return false
    if (now < r.until) return true
    this.restore(endpointId, r, now)
    return false
  }

  /**
   * The balancer's candidates without the ejected and the unreachable ones. When fewer than
   * `panicThreshold` percent would be left (both count as not usable), panic: ejections are
   * ignored, but an unreachable endpoint is still left out; only when every endpoint is
   * unreachable are they all returned (a connect attempt costs little, and is retried on
   * another endpoint). Allocation-free while every endpoint is usable, and cached for the
   * same `targets` array until an ejection, return, or change of reachability.
   */
  usable<T extends { endpoint: { id: string } }> (targets: readonly T[], now: number): readonly T[] {
    const store = this.store
    store.hostCount = targets.length
    if (!this.settings.enabled || (store.ejected.size === 0 && store.unreachable.size === 0)) return this.calm(targets)
    if (now >= store.nextExpiry) this.sweep(now)
    if (store.ejected.size === 0 && store.unreachable.size === 0) return this.calm(targets)
    if (targets === this.cacheIn && this.cacheVersion === store.version) return this.cacheOut as readonly T[]
    const reachable = store.unreachable.size === 0 ? targets : targets.filter((t) => !store.unreachable.has(t.endpoint.id))
    const healthy = store.ejected.size === 0 ? reachable : reachable.filter((t) => !store.ejected.has(t.endpoint.id))
    const panic = healthy.length < targets.length && healthy.length * 100 < this.settings.panicThreshold * targets.length
    let out = panic ? reachable : healthy
    if (reachable.length === 0) out = targets
    this.cacheIn = targets
    this.cacheOut = out
    this.cacheVersion = store.version
    this.setPanic(panic || reachable.length === 0, targets.length, now)
    return out
  }

  /**
   * Whether `usable(targets)` serves below the panic threshold (ejections ignored) or with
   * every endpoint unreachable: a failover chain then tries its next target first.
   */
  degraded (targets: readonly { endpoint: { id: string } }[], now: number): boolean {
    this.usable(targets, now)
    return this.panicking
  }

  /**
   * The unreachable endpoints whose connect probe is due, among those `known` (the caller
   * can reach them: it has their address); each is marked as being probed and must get one
   * `probed`. Cheap when none is due (one comparison).
   */
  dueProbes (now: number, known: (endpointId: string) => boolean): readonly string[] {
    const store = this.store
    const unreachable = this.settings.unreachable
    if (now < store.nextProbe || unreachable === undefined) return NO_PROBES
    let out: string[] | undefined
    let next = Infinity
    for (const id of store.unreachable) {
      const r = store.records.get(id)
      if (r === undefined || r.probing) continue
      if (now >= r.probeAt) {
        if (known(id)) {
          r.probing = true
          if (out === undefined) out = []
          out.push(id)
          continue
        }
        // Not this caller's to probe (say, discovery no longer lists it as passing): later.
        r.probeAt = now + probeWait(unreachable, r.unreachableStreak)
      }
      if (r.probeAt < next) next = r.probeAt
    }
    store.nextProbe = next
    return out ?? NO_PROBES
  }

  /**
   * The result of a connect probe `dueProbes` asked for: reachable again, or probed again
   * later (the wait doubled); undefined: abandoned (its set closed), due again at once.
   */
  probed (endpointId: string, reachable: boolean | undefined, now: number): void {
    const store = this.store
    const r = store.records.get(endpointId)
    if (r === undefined || !r.probing) return
    r.probing = false
    if (r.probeAt === 0) return
    if (reachable === undefined) {
      if (r.probeAt < store.nextProbe) store.nextProbe = r.probeAt
      return
    }
    if (reachable) {
      r.probeAt = 0
      store.unreachable.delete(endpointId)
      store.version++
      this.options.log?.info({ service: this.service, endpoint: endpointId }, 'unreachable endpoint accepts connections again: back in rotation')
      this.options.onChange?.({ type: 'reachable', service: this.service, endpointId, ejections: r.ejections })
      return
    }
    r.unreachableStreak++
    r.probeAt = now + probeWait(this.settings.unreachable ?? { baseMs: 0, maxMs: 0 }, r.unreachableStreak)
    if (r.probeAt < store.nextProbe) store.nextProbe = r.probeAt
  }

  /** Whether `endpointId` is out of rotation as unreachable. */
  isUnreachable (endpointId: string): boolean {
    return this.store.unreachable.has(endpointId)
  }

  /** Every endpoint with a record (others are healthy with zero counts: see `view`). */
  snapshot (now: number): Record<string, OutlierView> {
    this.sweep(now)
    const out: Record<string, OutlierView> = {}
    for (const [id, r] of this.store.records) out[id] = viewOf(r)
    return out
  }

  /** One endpoint as admin shows it. */
  view (endpointId: string, now: number): OutlierView {
    this.isEjected(endpointId, now)
    const r = this.store.records.get(endpointId)
    return r === undefined ? HEALTHY : viewOf(r)
  }

  private markUnreachable (endpointId: string, settings: UnreachableSettings, now: number): void {
    const store = this.store
    let r = store.records.get(endpointId)
    if (r === undefined) {
      r = newRecord()
      store.records.set(endpointId, r)
    }
    // Attempts that were on their way when it was marked change nothing.
    if (r.probeAt !== 0) return
    r.unreachableStreak++
    r.probeAt = now + probeWait(settings, r.unreachableStreak)
    store.unreachable.add(endpointId)
    store.version++
    if (r.probeAt < store.nextProbe) store.nextProbe = r.probeAt
    this.options.log?.warn({ service: this.service, endpoint: endpointId, probeAt: new Date(r.probeAt).toISOString() }, 'endpoint unreachable (connection failed): out of rotation until a connect probe succeeds')
    this.options.onChange?.({ type: 'unreachable', service: this.service, endpointId, ejections: r.ejections, until: r.probeAt, reason: UNREACHABLE_REASON })
  }

  /** Whether the last `usable` call ignored ejections (panic). */
  get inPanic (): boolean {
    return this.panicking
  }

  private calm<T> (targets: readonly T[]): readonly T[] {
    if (this.panicking) this.setPanic(false, targets.length, 0)
    return targets
  }

  private eject (endpointId: string, r: EndpointRecord, reason: string, now: number): void {
    const s = this.settings
    const store = this.store
    if (now >= store.nextExpiry) this.sweep(now)
    // Never more than the share allowed (at least one, unless the share is 0).
    const allowed = s.maxEjectionPercent === 0 ? 0 : Math.max(1, Math.floor(store.hostCount * s.maxEjectionPercent / 100))
    if (store.ejected.size >= allowed) return
    // The multiplier falls by one for each base time the endpoint has stayed back.
    if (r.returnedAt > 0 && s.baseEjectionTimeMs > 0) r.ejections = Math.max(0, r.ejections - Math.floor((now - r.returnedAt) / s.baseEjectionTimeMs))
    r.ejections++
    r.until = now + Math.min(s.baseEjectionTimeMs * r.ejections, Math.max(s.maxEjectionTimeMs, s.baseEjectionTimeMs))
    // A zero ejection time still ejects for 1 ms: `until` 0 means "not ejected".
    if (r.until <= now) r.until = now + 1
    r.reason = reason
    store.ejected.add(endpointId)
    if (r.until < store.nextExpiry) store.nextExpiry = r.until
    store.version++
    this.options.log?.warn({ service: this.service, endpoint: endpointId, reason, ejections: r.ejections, until: new Date(r.until).toISOString() }, 'outlier detection ejected an endpoint')
    this.options.onChange?.({ type: 'ejected', service: this.service, endpointId, ejections: r.ejections, until: r.until, reason })
  }

  /**
   * Success-rate rule, once per interval: among the endpoints with enough requests (if there
   * are enough of them), ejects those whose success rate is below mean − factor × stdev; then
   * starts a new interval. O(endpoints) once per interval, nothing per outcome.
   */
  private judgeSuccessRates (sr: SuccessRateSettings, now: number): void {
    const store = this.store
    store.intervalStart = now
    let hosts = 0
    let sum = 0
    for (const r of store.records.values()) {
      if (r.until === 0 && r.requests >= sr.requestVolume) { hosts++; sum += r.successes / r.requests }
    }
    if (hosts >= sr.minimumHosts) {
      const mean = sum / hosts
      let squares = 0
      for (const r of store.records.values()) {
        if (r.until === 0 && r.requests >= sr.requestVolume) squares += (r.successes / r.requests - mean) ** 2
      }
      const stdev = Math.sqrt(squares / hosts)
      const threshold = mean - sr.stdevFactor * stdev
      for (const [id, r] of store.records) {
        if (r.until !== 0 || r.requests < sr.requestVolume) continue
        const rate = r.successes / r.requests
        // rate < threshold, with a margin so that rates equal up to rounding never count as below.
        if (mean - rate > sr.stdevFactor * stdev + 1e-9) {
          this.eject(id, r, `success rate ${rate.toFixed(2)} below ${threshold.toFixed(2)} (mean ${mean.toFixed(2)} − ${sr.stdevFactor} × stdev ${stdev.toFixed(2)})`, now)
        }
      }
    }
    for (const r of store.records.values()) { r.requests = 0; r.successes = 0 }
  }

  private restore (endpointId: string, r: EndpointRecord, now: number): void {
    r.until = 0
    r.returnedAt = now
    r.consecutive5xx = 0
    r.consecutiveGatewayErrors = 0
    const store = this.store
    store.ejected.delete(endpointId)
    store.version++
    if (store.ejected.size === 0) store.nextExpiry = Infinity
    this.options.log?.info({ service: this.service, endpoint: endpointId, ejections: r.ejections }, 'ejected endpoint returned to rotation')
    this.options.onChange?.({ type: 'returned', service: this.service, endpointId, ejections: r.ejections })
  }

  /** Ends every ejection whose time is up; recomputes the next expiry. */
  private sweep (now: number): void {
    const store = this.store
    let next = Infinity
    for (const id of [...store.ejected]) {
      const r = store.records.get(id)
      if (r === undefined) { store.ejected.delete(id); continue }
      if (now >= r.until) this.restore(id, r, now)
      else if (r.until < next) next = r.until
    }
    store.nextExpiry = next
  }

  private setPanic (panic: boolean, candidates: number, now: number): void {
    if (panic === this.panicking) return
    this.panicking = panic
    if (panic) this.options.log?.warn({ service: this.service, candidates, ejected: this.store.ejected.size, unreachable: this.store.unreachable.size, panicThreshold: this.settings.panicThreshold, at: now }, 'outlier detection in panic: too few usable endpoints left, ejections ignored')
    else this.options.log?.info({ service: this.service }, 'outlier detection left panic')
  }
}

function newRecord (): EndpointRecord {
  return { consecutive5xx: 0, consecutiveGatewayErrors: 0, ejections: 0, until: 0, reason: undefined, returnedAt: 0, requests: 0, successes: 0, probeAt: 0, probing: false, unreachableStreak: 0 }
}

/** Time to the next probe of an endpoint unreachable `streak` times in a row. */
function probeWait (s: UnreachableSettings, streak: number): number {
  return Math.max(1, Math.min(s.baseMs * 2 ** Math.max(0, Math.min(streak - 1, 30)), Math.max(s.maxMs, s.baseMs)))
}

function viewOf (r: EndpointRecord): OutlierView {
  const base = { ejections: r.ejections, consecutive5xx: r.consecutive5xx, consecutiveGatewayErrors: r.consecutiveGatewayErrors }
  if (r.until !== 0) return { state: 'ejected', until: r.until, ...(r.reason !== undefined ? { reason: r.reason } : {}), ...base }
  if (r.probeAt !== 0) return { state: 'ejected', until: r.probeAt, reason: UNREACHABLE_REASON, ...base }
  return { state: 'healthy', ...base }
}
