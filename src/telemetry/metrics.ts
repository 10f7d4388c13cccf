// Prometheus metrics of one gateway: a prom-client registry that outlives config versions,
// the request counters and duration histogram fed by a policy on each version's chain, and
// gauges read at scrape time (config version, certificate expiry, Node process).
//
// The request series are kept here, not in prom-client's Counter/Histogram: those hash the
// label object into a string and look it up in a plain object on every inc/observe, which
// allocates per request and adds a hidden-class transition per series (docs/architecture.md).
// Here a request finds its series through nested Maps of config names and an array index,
// and the registry renders the series only when scraped.
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client'
import type { Exchange, GatewayPolicy, UpstreamTry } from '../gateway/exchange.js'
import { BY_HOST_ROUTE } from '../gateway/assembly.js'
import type { EndpointEvents } from '../balancer/events.js'
import type { EndpointStateCounts } from '../balancer/endpoint-state.js'
import { endpointStateKey, stateKind, type StateKind, type StateRegistry } from '../state/registry.js'

/** Upper bounds of the duration histogram, in seconds: 0.5 ms to 10 s. */
export const DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** The `route` label of a request no route took (no route matched, or refused before routing). */
export const NO_ROUTE_LABEL = '(none)'

const DIRECTIONS = ['edge', 'outbound', 'inbound'] as const
/** Index 0: a status outside 100-599 (e.g. 0, the exchange was cut before any answer). */
const STATUS_CLASSES = ['other', '1xx', '2xx', '3xx', '4xx', '5xx'] as const
const SLOTS = DIRECTIONS.length * STATUS_CLASSES.length
/** The error codes counted: the gateway's own (a bounded set); `client closed the connection` and the like are not answers. */
const isGatewayErrorCode = (error: string | undefined): error is string => error !== undefined && error.startsWith('FASTMESH_ERR_')

/** One series' label set; a class so every instance shares one hidden class. */
class RequestLabels {
  constructor (
    readonly role: string,
    readonly direction: string,
    readonly source: string,
    readonly destination: string,
    readonly route: string,
    readonly status_class: string
  ) {}
}

/** The requests of one label set: count, duration sum, bytes and (non-cumulative) bucket counts. */
class RequestSeries {
  count = 0
  sum = 0
  requestBytes = 0
  responseBytes = 0
  /** Requests the gateway answered itself (or broke off) with a FASTMESH_ERR_* code. */
  gatewayErrors = 0
  readonly buckets = new Float64Array(DURATION_BUCKETS.length)
  constructor (readonly labels: RequestLabels, readonly directionIndex: number, readonly statusClassIndex: number) {}

  observe (seconds: number): void {
    this.count++
    this.sum += seconds
    const b = DURATION_BUCKETS
    for (let i = 0; i < b.length; i++) {
      if (seconds <= b[i]!) { this.buckets[i]!++; return }
    }
  }
}

/** One request series as counted so far (cumulative), for windowed views such as the service graph. */
export interface RequestSeriesSnapshot {
  readonly direction: typeof DIRECTIONS[number]
  /** Verified caller (inbound), the local service of a per-upstream listener, else empty. */
  readonly source: string
  readonly destination: string
  readonly route: string
  readonly statusClass: typeof STATUS_CLASSES[number]
  readonly count: number
  readonly gatewayErrors: number
  readonly durationSumSeconds: number
  /** Non-cumulative counts per DURATION_BUCKETS bound (requests over the last bound are in none). */
  readonly buckets: readonly number[]
}

/** Everything counted so far. Series keep their index for the gateway's life (a later snapshot only appends). */
export interface MetricsSnapshot {
  readonly series: readonly RequestSeriesSnapshot[]
  /** Gateway-made errors by FASTMESH_ERR_* code (all routes), by code name. */
  readonly errors: ReadonlyArray<{ readonly code: string, readonly count: number }>
}

/** Try kinds (`kind` label of fastmesh_upstream_tries_total). */
const TRY_KINDS = ['first', 'retry', 'mirror'] as const
/** Try outcomes: a response by status class, or how the try failed (TryOutcome). */
const TRY_OUTCOMES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'connect_error', 'timeout', 'reset', 'error', 'cancelled'] as const
const TRY_FAILURE_BASE = 5
const TRY_SLOTS = TRY_KINDS.length * TRY_OUTCOMES.length

/** A counter of one label set, rendered at scrape; a class so every instance shares one hidden class. */
class Count {
  value = 0
  constructor (readonly labels: object) {}
}

/** The try counts of one endpoint of a destination, by try kind × outcome (made on its first try). */
class EndpointTries {
  readonly counts: Array<Count | undefined> = new Array<Count | undefined>(TRY_SLOTS).fill(undefined)
  constructor (readonly service: string, readonly endpoint: string) {}
}

class TryLabels {
  constructor (readonly role: string, readonly destination: string, readonly endpoint: string, readonly kind: string, readonly outcome: string) {}
}

class RouteCodeLabels {
  constructor (readonly role: string, readonly route: string, readonly code: string) {}
}

class PluginOutcomeLabels {
  constructor (readonly role: string, readonly route: string, readonly plugin: string, readonly outcome: string) {}
}

class RouteKindLabels {
  constructor (readonly role: string, readonly route: string, readonly kind: string) {}
}

/** The slot of a try's outcome in TRY_OUTCOMES. */
function tryOutcomeSlot (t: UpstreamTry): number {
  switch (t.outcome) {
    case 'response': {
      const c = (t.status / 100) | 0
      return c >= 1 && c <= 5 ? c - 1 : TRY_FAILURE_BASE + 3
    }
    case 'connect_error': return TRY_FAILURE_BASE
    case 'timeout': return TRY_FAILURE_BASE + 1
    case 'reset': return TRY_FAILURE_BASE + 2
    case 'cancelled': return TRY_FAILURE_BASE + 4
    default: return TRY_FAILURE_BASE + 3
  }
}

/** `outer` → `inner` → value, made on first use (config and identity names only). */
function nested<V> (outer: Map<string, Map<string, V>>, a: string, b: string, make: () => V): V {
  let inner = outer.get(a)
  if (inner === undefined) outer.set(a, inner = new Map())
  let v = inner.get(b)
  if (v === undefined) inner.set(b, v = make())
  return v
}

/** What the registry renders (the shape prom-client's own metrics give from get()). */
interface RenderedValue { readonly value: number, readonly labels: object, readonly metricName?: string }
interface RenderedMetric { readonly name: string, readonly help: string, readonly type: 'counter' | 'histogram', readonly aggregator: 'sum', readonly values: readonly RenderedValue[] }

export interface CertificateExpiry {
  readonly service: string
  readonly notAfter: Date
}

export interface GatewayMetricsOptions {
  /** `edge` or `node` (gateway.mode). */
  readonly role: string
  /** The serving config version, read at scrape time. */
  readonly configVersion?: () => number
  /** The current leaf certificates, read at scrape time (mesh on). */
  readonly certificates?: () => Iterable<CertificateExpiry>
  /** Node process and event-loop metrics (prom-client's defaults, `process_*`/`nodejs_*`); default true. */
  readonly processMetrics?: boolean
  /** The gateway's endpoint events (ejections, reachability, circuit overflows), counted as they come. */
  readonly events?: EndpointEvents
  /** Endpoints of each discovered service by state, read at scrape time. */
  readonly endpointStates?: () => Iterable<EndpointStateCounts>
  /** Retries each route's budget refused, read at scrape time. */
  readonly retryBudgets?: () => Iterable<{ readonly route: string, readonly exhausted: number }>
  /** Authorization decisions of inbound mesh calls (mesh on), read at scrape time. */
  readonly authorization?: () => Iterable<{ readonly source: string, readonly destination: string, readonly result: string, readonly count: number }>
  /** Discovery: which watched services serve stale endpoints, and failed queries to the source (Consul). */
  readonly discovery?: () => { readonly services: Iterable<{ readonly service: string, readonly stale: boolean }>, readonly errors: number, readonly source: string }
  /** Spans exported to the OTLP collector, and dropped because an export failed, since start. */
  readonly tracing?: () => { readonly exportedSpans: number, readonly failedSpans: number }
  /**
   * Where per-endpoint series are kept as endpoint-scoped state, so they go when their
   * endpoint leaves discovery (without: kept for the gateway's life).
   */
  readonly state?: StateRegistry
}

export class GatewayMetrics {
  readonly registry = new Registry()
  readonly reloads: Counter<'result'>
  private readonly role: string
  /** route → destination → source → series by direction × status class. */
  private readonly byRoute = new Map<string, Map<string, Map<string, Array<RequestSeries | undefined>>>>()
  private readonly series: RequestSeries[] = []
  /** destination → endpoint → counts by try kind × outcome. */
  private readonly tryCounts = new Map<string, Map<string, EndpointTries>>()
  /** The endpoint-scoped state kind of this gateway's try counts (they leave with their endpoint). */
  private readonly triesKind: StateKind<EndpointTries>
  private readonly state: StateRegistry | undefined
  /** route → code → count. */
  private readonly errorCounts = new Map<string, Map<string, Count>>()
  private readonly errors: Count[] = []
  /** route → plugin → outcome → count. */
  private readonly pluginCounts = new Map<string, Map<string, Map<string, Count>>>()
  private readonly pluginOutcomes: Count[] = []
  /** route → fault kind → count. */
  private readonly faultCounts = new Map<string, Map<string, Count>>()
  private readonly faults: Count[] = []

  constructor (opts: GatewayMetricsOptions) {
    this.role = opts.role
    this.state = opts.state
    this.triesKind = stateKind('upstreamTries', 'endpoint', (key) => {
      const at = key.indexOf(' ')
      return new EndpointTries(key.slice(0, at), key.slice(at + 1))
    }, (tries) => { this.forgetTries(tries) })
    // Rendered by the registry from get() at scrape time (its reset and aggregation are not used).
    this.registry.registerMetric({ name: 'fastmesh_requests_total', get: () => this.requestsMetric(), reset: () => {} } as never)
    this.registry.registerMetric({ name: 'fastmesh_request_duration_seconds', get: () => this.durationMetric(), reset: () => {} } as never)
    this.reloads = new Counter({ name: 'fastmesh_config_reloads_total', help: 'Config reloads by result: success (a new version serves) or failure (refused; the running one stays).', labelNames: ['result'], registers: [this.registry], aggregator: 'max' })
    // Both label values exist from the start, so a rate over failures is 0 rather than absent.
    this.reloads.inc({ result: 'success' }, 0)
    this.reloads.inc({ result: 'failure' }, 0)
    const configVersion = opts.configVersion
    if (configVersion !== undefined) {
      new Gauge({ name: 'fastmesh_config_version', help: 'The config version serving requests (1 at start, +1 per accepted reload).', registers: [this.registry], aggregator: 'max', collect () { this.set(configVersion()) } })
    }
    const certificates = opts.certificates
    if (certificates !== undefined) {
      new Gauge({
        name: 'fastmesh_certificate_expiry_seconds',
        help: 'Seconds until each mesh leaf certificate expires (negative: expired).',
        labelNames: ['service'],
        registers: [this.registry],
        collect () {
          this.reset()
          const now = Date.now()
          for (const c of certificates()) this.set({ service: c.service }, (c.notAfter.getTime() - now) / 1000)
        }
      })
    }
    this.registerRendered('fastmesh_request_bytes_total', 'Bytes received from clients (request line, headers and body), by the labels of fastmesh_requests_total.', () => this.series.map((s) => ({ value: s.requestBytes, labels: s.labels })))
    this.registerRendered('fastmesh_response_bytes_total', 'Bytes sent to clients (status line, headers and body), by the labels of fastmesh_requests_total.', () => this.series.map((s) => ({ value: s.responseBytes, labels: s.labels })))
    this.registerRendered('fastmesh_upstream_tries_total', 'Upstream tries by destination service, endpoint, kind (first, retry, mirror) and outcome (the response\'s status class, or connect_error, timeout, reset, error, cancelled).', () => this.triesValues())
    this.registerRendered('fastmesh_gateway_errors_total', 'Answers the gateway made itself, by route and FASTMESH_ERR_* code (rate-limited, shed, unauthenticated, forbidden, no healthy endpoint ...).', () => this.errors.map((c) => ({ value: c.value, labels: c.labels })))
    this.registerRendered('fastmesh_faults_injected_total', 'Faults injected by the fault-injection plugin, by route and kind (delay, abort, response).', () => this.faults.map((c) => ({ value: c.value, labels: c.labels })))
    this.registerRendered('fastmesh_plugin_outcomes_total', 'Outcomes route plugins count themselves (e.g. rate-limit store_fail_open: Redis could not count a request and it went through), by route, plugin and outcome.', () => this.pluginOutcomes.map((c) => ({ value: c.value, labels: c.labels })))
    this.eventMetrics(opts)
    this.stateMetrics(opts)
    if (opts.processMetrics !== false) {
      collectDefaultMetrics({ register: this.registry })
      // Gauges named like counters, which promtool's lint refuses; each is the sum of its
      // per-type gauge (nodejs_active_handles{type} ...), so nothing is lost.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name)
    }
  }

  /** Prometheus text format. */
  get contentType (): string {
    return this.registry.contentType
  }

  /**
   * With workers (src/workers/pool.ts): their metrics, added to this process's when rendered,
   * each metric by its aggregator (counters summed; versions and endpoint gauges their maximum).
   */
  workerMetrics: (() => Promise<unknown[][]>) | undefined = undefined

  async render (): Promise<string> {
    if (this.workerMetrics === undefined) return await this.registry.metrics()
    // The primary serves nothing and ejects nothing: its endpoint states would always win `max`.
    const own = (await this.registry.getMetricsAsJSON()).filter((m) => m.name !== 'fastmesh_endpoints')
    const workers = await this.workerMetrics() as Array<Array<MetricObjectWithValues<MetricValue<string>>>>
    return await AggregatorRegistry.aggregate([own, ...workers]).metrics()
  }

  /** A counter kept by this class and rendered at scrape. */
  private registerRendered (name: string, help: string, values: () => RenderedValue[]): void {
    this.registry.registerMetric({ name, get: () => ({ name, help, type: 'counter', aggregator: 'sum', values: values() }), reset: () => {} } as never)
  }

  /** Counters of the gateway's endpoint events: rare, so prom-client's own counters. */
  private eventMetrics (opts: GatewayMetricsOptions): void {
    const events = opts.events
    if (events === undefined) return
    const role = this.role
    const ejections = new Counter({ name: 'fastmesh_outlier_ejections_total', help: 'Endpoints ejected by outlier detection, by destination service.', labelNames: ['role', 'destination'], registers: [this.registry] })
    const unreachable = new Counter({ name: 'fastmesh_endpoint_unreachable_total', help: 'Endpoints taken out of rotation because no connection could be made, by destination service.', labelNames: ['role', 'destination'], registers: [this.registry] })
    const overflows = new Counter({ name: 'fastmesh_circuit_overflows_total', help: 'Requests and retries a circuit limit refused, by destination service and limit.', labelNames: ['role', 'destination', 'limit'], registers: [this.registry] })
    events.on((e) => {
      if (e.type === 'ejected') ejections.inc({ role, destination: e.service })
      else if (e.type === 'unreachable') unreachable.inc({ role, destination: e.service })
      else if (e.type === 'overflow') overflows.inc({ role, destination: e.service, limit: e.limit })
    })
  }

  /** Gauges and counters read from the gateway's state when scraped. */
  private stateMetrics (opts: GatewayMetricsOptions): void {
    const role = this.role
    const { endpointStates, retryBudgets, authorization, discovery, tracing } = opts
    if (tracing !== undefined) {
      new Counter({
        name: 'fastmesh_tracing_spans_total',
        help: 'Spans handed to the OTLP collector, by result: exported, or failed (the export failed and they were dropped; requests are not affected).',
        labelNames: ['role', 'result'],
        registers: [this.registry],
        collect () {
          this.reset()
          const t = tracing()
          this.inc({ role, result: 'exported' }, t.exportedSpans)
          this.inc({ role, result: 'failed' }, t.failedSpans)
        }
      })
    }
    if (endpointStates !== undefined) {
      new Gauge({
        name: 'fastmesh_endpoints',
        help: 'Endpoints of each destination service by state: healthy (in rotation), unhealthy (failing its health check), ejected (outlier detection, or unreachable).',
        labelNames: ['role', 'destination', 'state'],
        registers: [this.registry],
        // With workers each process sees the endpoints; ejections are each worker's own.
        aggregator: 'max',
        collect () {
          this.reset()
          for (const c of endpointStates()) {
            this.set({ role, destination: c.service, state: 'healthy' }, c.healthy)
            this.set({ role, destination: c.service, state: 'unhealthy' }, c.unhealthy)
            this.set({ role, destination: c.service, state: 'ejected' }, c.ejected)
          }
        }
      })
    }
    if (retryBudgets !== undefined) {
      new Counter({
        name: 'fastmesh_retry_budget_exhausted_total',
        help: 'Retries not made because the route\'s retry budget was spent, by route.',
        labelNames: ['role', 'route'],
        registers: [this.registry],
        collect () {
          this.reset()
          for (const b of retryBudgets()) this.inc({ role, route: b.route }, b.exhausted)
        }
      })
    }
    if (authorization !== undefined) {
      new Counter({
        name: 'fastmesh_authorization_decisions_total',
        help: 'Authorization decisions on inbound mesh calls, by verified source service, destination service and result (allow, deny).',
        labelNames: ['role', 'source', 'destination', 'result'],
        registers: [this.registry],
        collect () {
          this.reset()
          for (const d of authorization()) this.inc({ role, source: d.source, destination: d.destination, result: d.result }, d.count)
        }
      })
    }
    if (discovery !== undefined) {
      new Gauge({
        name: 'fastmesh_discovery_stale',
        help: '1 while a watched service is served from its last known endpoints because the discovery source cannot be reached.',
        labelNames: ['role', 'service'],
        registers: [this.registry],
        aggregator: 'max',
        collect () {
          this.reset()
          for (const s of discovery().services) this.set({ role, service: s.service }, s.stale ? 1 : 0)
        }
      })
      new Counter({
        name: 'fastmesh_discovery_errors_total',
        help: 'Failed queries to the discovery source (Consul), every watched service.',
        labelNames: ['role', 'source'],
        registers: [this.registry],
        collect () {
          this.reset()
          const d = discovery()
          this.inc({ role, source: d.source }, d.errors)
        }
      })
    }
  }

  /** Counts one outcome a plugin reports on a route (`fastify.fastmesh.countOutcome`). */
  readonly pluginOutcome = (route: string, plugin: string, outcome: string): void => {
    let byPlugin = this.pluginCounts.get(route)
    if (byPlugin === undefined) this.pluginCounts.set(route, byPlugin = new Map())
    let byOutcome = byPlugin.get(plugin)
    if (byOutcome === undefined) byPlugin.set(plugin, byOutcome = new Map())
    let c = byOutcome.get(outcome)
    if (c === undefined) {
      c = new Count(new PluginOutcomeLabels(this.role, route, plugin, outcome))
      byOutcome.set(outcome, c)
      this.pluginOutcomes.push(c)
    }
    c.value++
  }

  /** Counts one upstream try. No allocation once its label set has been seen. */
  recordTry (t: UpstreamTry): void {
    let byEndpoint = this.tryCounts.get(t.service)
    if (byEndpoint === undefined) this.tryCounts.set(t.service, byEndpoint = new Map())
    let tries = byEndpoint.get(t.endpoint)
    if (tries === undefined) {
      tries = this.state !== undefined ? this.state.slot(this.triesKind, endpointStateKey(t.service, t.endpoint)) : new EndpointTries(t.service, t.endpoint)
      byEndpoint.set(t.endpoint, tries)
    }
    const slots = tries.counts
    const kind = t.mirror ? 2 : t.attempt > 1 ? 1 : 0
    const slot = kind * TRY_OUTCOMES.length + tryOutcomeSlot(t)
    let c = slots[slot]
    if (c === undefined) {
      c = new Count(new TryLabels(this.role, t.service, t.endpoint, TRY_KINDS[kind]!, TRY_OUTCOMES[slot % TRY_OUTCOMES.length]!))
      slots[slot] = c
    }
    c.value++
  }

  /** An endpoint left: its try series are no longer rendered. */
  private forgetTries (tries: EndpointTries): void {
    const byEndpoint = this.tryCounts.get(tries.service)
    if (byEndpoint?.get(tries.endpoint) !== tries) return
    byEndpoint.delete(tries.endpoint)
    if (byEndpoint.size === 0) this.tryCounts.delete(tries.service)
  }

  private triesValues (): RenderedValue[] {
    const values: RenderedValue[] = []
    for (const byEndpoint of this.tryCounts.values()) {
      for (const tries of byEndpoint.values()) {
        for (const c of tries.counts) if (c !== undefined) values.push({ value: c.value, labels: c.labels })
      }
    }
    return values
  }

  /** Counts one ended request. No allocation once its label set has been seen. */
  record (ex: Exchange): void {
    const entry = ex.entry
    let direction = 0
    let source = ''
    if (entry !== undefined) {
      if (entry.kind === 'inbound') {
        direction = 2
        source = entry.peer?.service ?? ''
      } else {
        direction = 1
        // A per-upstream listener belongs to one local service of the config, and so does the
        // shared outbound port with `listeners.outbound.identity`; '': the gateway's own apps.
        source = entry.caller ?? ''
      }
    }
    const route = ex.route ?? NO_ROUTE_LABEL
    // The by-Host route's destination comes from a Host header: named only once discovery
    // knew it (a try reached an endpoint), so unknown Hosts do not make series.
    const destination = ex.destination === undefined || (route === BY_HOST_ROUTE && ex.endpoint === undefined) ? '' : ex.destination
    const c = (ex.status / 100) | 0
    const slot = direction * STATUS_CLASSES.length + (c >= 1 && c <= 5 ? c : 0)
    let byDestination = this.byRoute.get(route)
    if (byDestination === undefined) this.byRoute.set(route, byDestination = new Map())
    let bySource = byDestination.get(destination)
    if (bySource === undefined) byDestination.set(destination, bySource = new Map())
    let slots = bySource.get(source)
    if (slots === undefined) bySource.set(source, slots = new Array<RequestSeries | undefined>(SLOTS).fill(undefined))
    let series = slots[slot]
    if (series === undefined) {
      const statusClass = slot % STATUS_CLASSES.length
      series = new RequestSeries(new RequestLabels(this.role, DIRECTIONS[direction]!, source, destination, route, STATUS_CLASSES[statusClass]!), direction, statusClass)
      slots[slot] = series
      this.series.push(series)
    }
    series.observe(ex.durationMs / 1000)
    series.requestBytes += ex.requestBytes
    series.responseBytes += ex.responseBytes
    const error = ex.error
    if (isGatewayErrorCode(error)) {
      series.gatewayErrors++
      const role = this.role
      const c = nested(this.errorCounts, route, error, () => { const n = new Count(new RouteCodeLabels(role, route, error)); this.errors.push(n); return n })
      c.value++
    }
    const fault = ex.fault
    if (fault !== undefined) {
      const role = this.role
      const c = nested(this.faultCounts, route, fault, () => { const n = new Count(new RouteKindLabels(role, route, fault)); this.faults.push(n); return n })
      c.value++
    }
  }

  /** With workers: their request series (this process serves none), for `snapshot()`. */
  workerSnapshot: (() => MetricsSnapshot) | undefined = undefined

  /** A copy of every request series and error count so far (read-only; for the admin service graph). */
  snapshot (): MetricsSnapshot {
    if (this.workerSnapshot !== undefined) return this.workerSnapshot()
    const byCode = new Map<string, number>()
    for (const c of this.errors) {
      const code = (c.labels as RouteCodeLabels).code
      byCode.set(code, (byCode.get(code) ?? 0) + c.value)
    }
    return {
      series: this.series.map((s) => ({
        direction: DIRECTIONS[s.directionIndex]!,
        source: s.labels.source,
        destination: s.labels.destination,
        route: s.labels.route,
        statusClass: STATUS_CLASSES[s.statusClassIndex]!,
        count: s.count,
        gatewayErrors: s.gatewayErrors,
        durationSumSeconds: s.sum,
        buckets: Array.from(s.buckets)
      })),
      errors: [...byCode].map(([code, count]) => ({ code, count })).sort((a, b) => a.code.localeCompare(b.code))
    }
  }

  /** The metrics policy of a version's chain. */
  policy (): GatewayPolicy {
    return {
      name: 'metrics',
      onTryEnd: (_ex, t) => { this.recordTry(t) },
      onEnd: (ex) => { this.record(ex) }
    }
  }

  private requestsMetric (): RenderedMetric {
    return {
      name: 'fastmesh_requests_total',
      help: 'Requests ended, by gateway role, direction, verified source service, destination service, route and status class.',
      type: 'counter',
      aggregator: 'sum',
      values: this.series.map((s) => ({ value: s.count, labels: s.labels }))
    }
  }

  private durationMetric (): RenderedMetric {
    const values: RenderedValue[] = []
    for (const s of this.series) {
      const l = s.labels
      let cumulative = 0
      for (let i = 0; i < DURATION_BUCKETS.length; i++) {
        cumulative += s.buckets[i]!
        values.push({ metricName: 'fastmesh_request_duration_seconds_bucket', value: cumulative, labels: { ...l, le: DURATION_BUCKETS[i]! } })
      }
      values.push({ metricName: 'fastmesh_request_duration_seconds_bucket', value: s.count, labels: { ...l, le: '+Inf' } })
      values.push({ metricName: 'fastmesh_request_duration_seconds_sum', value: s.sum, labels: l })
      values.push({ metricName: 'fastmesh_request_duration_seconds_count', value: s.count, labels: l })
    }
    return {
      name: 'fastmesh_request_duration_seconds',
      help: 'Request duration in seconds, from the request reaching the gateway to its end, by the labels of fastmesh_requests_total.',
      type: 'histogram',
      aggregator: 'sum',
      values
    }
  }
}
