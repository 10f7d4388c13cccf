// Prometheus metrics of one gateway: a prom-client registry that outlives config versions,
// the request counters and duration histogram fed by a policy on each version's chain, and
// gauges read at scrape time (config version, certificate expiry, Node process).
//
// The request series are kept here, not in prom-client's Counter/Histogram: those hash the
// label object into a string and look it up in a plain object on every inc/observe, which
// allocates per request and adds a hidden-class transition per series (docs/architecture.md).
// Here a request finds its series through nested Maps of config names and an array index,
// and the registry renders the series only when scraped.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import type { Exchange, GatewayPolicy } from '../gateway/exchange.js'
import { BY_HOST_ROUTE } from '../gateway/assembly.js'

/** Upper bounds of the duration histogram, in seconds: 0.5 ms to 10 s. */
export const DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** The `route` label of a request no route took (no route matched, or refused before routing). */
export const NO_ROUTE_LABEL = '(none)'

const DIRECTIONS = ['edge', 'outbound', 'inbound'] as const
/** Index 0: a status outside 100-599 (e.g. 0, the exchange was cut before any answer). */
const STATUS_CLASSES = ['other', '1xx', '2xx', '3xx', '4xx', '5xx'] as const
const SLOTS = DIRECTIONS.length * STATUS_CLASSES.length

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

/** The requests of one label set: count, duration sum and (non-cumulative) bucket counts. */
class RequestSeries {
  count = 0
  sum = 0
  readonly buckets = new Float64Array(DURATION_BUCKETS.length)
  constructor (readonly labels: RequestLabels) {}

  observe (seconds: number): void {
    this.count++
    this.sum += seconds
    const b = DURATION_BUCKETS
    for (let i = 0; i < b.length; i++) {
      if (seconds <= b[i]!) { this.buckets[i]!++; return }
    }
  }
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
}

export class GatewayMetrics {
  readonly registry = new Registry()
  readonly reloads: Counter<'result'>
  private readonly role: string
  /** route → destination → source → series by direction × status class. */
  private readonly byRoute = new Map<string, Map<string, Map<string, Array<RequestSeries | undefined>>>>()
  private readonly series: RequestSeries[] = []

  constructor (opts: GatewayMetricsOptions) {
    this.role = opts.role
    // Rendered by the registry from get() at scrape time (its reset and aggregation are not used).
    this.registry.registerMetric({ name: 'fastmesh_requests_total', get: () => this.requestsMetric(), reset: () => {} } as never)
    this.registry.registerMetric({ name: 'fastmesh_request_duration_seconds', get: () => this.durationMetric(), reset: () => {} } as never)
    this.reloads = new Counter({ name: 'fastmesh_config_reloads_total', help: 'Config reloads by result: success (a new version serves) or failure (refused; the running one stays).', labelNames: ['result'], registers: [this.registry] })
    // Both label values exist from the start, so a rate over failures is 0 rather than absent.
    this.reloads.inc({ result: 'success' }, 0)
    this.reloads.inc({ result: 'failure' }, 0)
    const configVersion = opts.configVersion
    if (configVersion !== undefined) {
      new Gauge({ name: 'fastmesh_config_version', help: 'The config version serving requests (1 at start, +1 per accepted reload).', registers: [this.registry], collect () { this.set(configVersion()) } })
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

  async render (): Promise<string> {
    return await this.registry.metrics()
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
        // A per-upstream listener belongs to one local service of the config.
        if (entry.kind === 'upstream') source = entry.caller
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
      series = new RequestSeries(new RequestLabels(this.role, DIRECTIONS[direction]!, source, destination, route, STATUS_CLASSES[slot % STATUS_CLASSES.length]!))
      slots[slot] = series
      this.series.push(series)
    }
    series.observe(ex.durationMs / 1000)
  }

  /** The metrics policy of a version's chain. */
  policy (): GatewayPolicy {
    return { name: 'metrics', onEnd: (ex) => { this.record(ex) } }
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
