// OpenTelemetry tracing of one gateway: a tracer provider per tracing config (outliving the
// config versions that share it), and the gateway-wide policy that makes a SERVER span per
// exchange and a CLIENT span per upstream try (retries, mirrored copies, upgrades), continues
// the caller's trace (W3C trace context, B3 single or multi) and sends the try's context
// upstream.
//
// The trace SDK is used directly, not @opentelemetry/sdk-node: sdk-node (and the 3.x/0.300
// packages) need Node 22, and it installs process-global providers and a context manager,
// while one process may run several gateways (tests, the demo), each with its own config and
// reloads. Here each gateway owns its provider, nothing is registered globally, and contexts
// are passed explicitly (trace.setSpan(ROOT_CONTEXT, span)): no AsyncLocalStorage on the
// request path.
import { randomUUID } from 'node:crypto'
import type { TLSSocket } from 'node:tls'
import type { IncomingHttpHeaders } from 'node:http'
import type { Logger } from 'pino'
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, isSpanContextValid, trace, type Context, type Span, type SpanContext, type SpanOptions, type TextMapGetter, type TextMapSetter, type Tracer } from '@opentelemetry/api'
import { CompositePropagator, ExportResultCode, W3CTraceContextPropagator, type ExportResult } from '@opentelemetry/core'
import { B3InjectEncoding, B3Propagator } from '@opentelemetry/propagator-b3'
import { AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, RandomIdGenerator, SamplingDecision, TraceIdRatioBasedSampler, type IdGenerator, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources'
import {
  ATTR_CLIENT_ADDRESS, ATTR_ERROR_TYPE, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_REQUEST_RESEND_COUNT, ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_NETWORK_PEER_ADDRESS, ATTR_NETWORK_PEER_PORT, ATTR_NETWORK_PROTOCOL_VERSION, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT,
  ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME, ATTR_URL_PATH, ATTR_URL_SCHEME, ATTR_USER_AGENT_ORIGINAL
} from '@opentelemetry/semantic-conventions'
import type { TracingConfig } from '../config/schema.js'
import { durationMs } from '../config/duration.js'
import type { Exchange, GatewayPolicy, UpstreamTry } from '../gateway/exchange.js'

/** fastmesh's own span and resource attributes. */
export const TRACE_ATTR = {
  route: 'fastmesh.route',
  destination: 'fastmesh.destination',
  endpoint: 'fastmesh.endpoint',
  requestId: 'fastmesh.request_id',
  /** `edge`, `outbound` (a node's shared outbound port or a per-upstream listener) or `inbound`. */
  direction: 'fastmesh.direction',
  attempts: 'fastmesh.attempts',
  /** The gateway's error code (`FASTMESH_ERR_*`) or why the exchange broke. */
  error: 'fastmesh.error',
  /** Inbound: the caller's verified SPIFFE ID and service (mTLS). */
  callerSpiffeId: 'fastmesh.caller.spiffe_id',
  callerService: 'fastmesh.caller.service',
  /** Inbound: the local service called. */
  localService: 'fastmesh.local_service',
  /** The service a mesh call speaks for (a per-upstream listener's local service, or the gateway itself). */
  sourceService: 'fastmesh.source.service',
  sourceSpiffeId: 'fastmesh.source.spiffe_id',
  mirror: 'fastmesh.mirror',
  tryOutcome: 'fastmesh.try.outcome',
  gatewayName: 'fastmesh.gateway.name',
  gatewayRole: 'fastmesh.gateway.role',
  gatewaySpiffeId: 'fastmesh.gateway.spiffe_id'
} as const

/** The caller spoke B3 (and in which encoding): its trace context goes upstream in B3 too. */
const enum B3Dialect { None, Single, Multi }

const headerGetter: TextMapGetter<IncomingHttpHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key]
}

/** Pushes `name, value` pairs onto an upstream request's header list. */
const headerPusher: TextMapSetter<string[]> = {
  set: (carrier, key, value) => { carrier.push(key, value) }
}

/** Tracing's state of one exchange (Exchange.trace): its server span and whether it is recorded. */
export class ExchangeTrace {
  /** Whether the trace is recorded: the access log writes the ids of sampled traces only. */
  readonly sampled: boolean
  private parentContext: Context | undefined = undefined

  constructor (readonly span: Span, readonly b3: B3Dialect) {
    this.sampled = span.isRecording()
  }

  /** The server span as the parent of its client spans (made once, and only for a recorded trace). */
  get context (): Context {
    return (this.parentContext ??= trace.setSpan(ROOT_CONTEXT, this.span))
  }

  get traceId (): string {
    return this.span.spanContext().traceId
  }

  get spanId (): string {
    return this.span.spanContext().spanId
  }
}

/** How the exports of one tracer setup went (for tests and the log). */
export class ExportStats {
  exportedSpans = 0
  failedExports = 0
  failedSpans = 0
}

/**
 * The exporter as the batch processor sees it: counts and logs failed exports (at most one
 * line a minute) instead of the SDK's process-global diag logger, which this gateway does
 * not own.
 */
class ObservedExporter implements SpanExporter {
  private lastLogged = 0
  private unlogged = 0

  constructor (private readonly inner: SpanExporter, readonly stats: ExportStats, private readonly total: ExportStats, private readonly log: Logger, private readonly url: string) {}

  export (spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.inner.export(spans, (result) => {
      if (result.code === ExportResultCode.SUCCESS) {
        this.stats.exportedSpans += spans.length
        this.total.exportedSpans += spans.length
      } else {
        this.stats.failedExports++
        this.stats.failedSpans += spans.length
        this.total.failedExports++
        this.total.failedSpans += spans.length
        const now = Date.now()
        if (now - this.lastLogged >= 60_000) {
          this.lastLogged = now
          this.log.warn({ url: this.url, spans: spans.length, suppressed: this.unlogged, err: result.error?.message }, 'span export failed; those spans are dropped (requests are not affected)')
          this.unlogged = 0
        } else {
          this.unlogged++
        }
      }
      done(result)
    })
  }

  async shutdown (): Promise<void> {
    await this.inner.shutdown()
  }

  async forceFlush (): Promise<void> {
    await this.inner.forceFlush?.()
  }
}

/**
 * The ids of a tracer setup: random (the SDK's generator), except that a new trace the policy
 * decided to record starts with the trace id the decision was made on (`next`), so the SDK
 * records exactly the traces the ratio picked.
 */
class TraceIdSource implements IdGenerator {
  private readonly random = new RandomIdGenerator()
  /** The trace id the next root span the SDK starts takes; set just before the policy starts it. */
  next: string | undefined = undefined

  generateTraceId (): string {
    const id = this.next
    if (id === undefined) return this.random.generateTraceId()
    this.next = undefined
    return id
  }

  generateSpanId (): string {
    return this.random.generateSpanId()
  }

  /** A fresh trace id, whatever `next` holds. */
  freshTraceId (): string {
    return this.random.generateTraceId()
  }
}

/**
 * One tracing config's provider, tracer and exporter. New traces are sampled by the policy
 * (the ratio sampler, asked directly) and only sampled ones reach the SDK; so the provider's
 * own sampler records roots it is given and follows a caller's decision.
 */
class TracerSetup {
  readonly tracer: Tracer
  readonly ids = new TraceIdSource()
  readonly rootSampler: TraceIdRatioBasedSampler
  readonly stats = new ExportStats()
  readonly ratio: number
  private readonly provider: BasicTracerProvider
  private closing: Promise<void> | undefined

  constructor (settings: TracingConfig, identity: GatewayTracingOptions, instanceId: string, log: Logger, total: ExportStats) {
    const timeoutMs = durationMs(settings.otlp.timeout)
    const url = settings.otlp.endpoint.replace(/\/+$/, '') + '/v1/traces'
    const exporter = new OTLPTraceExporter({ url, headers: { ...settings.otlp.headers }, timeoutMillis: timeoutMs })
    const selfId = identity.spiffeIdOf?.(identity.gatewayName)
    const resource = defaultResource().merge(resourceFromAttributes({
      [ATTR_SERVICE_NAME]: settings.serviceName ?? `fastmesh-${identity.gatewayName}`,
      [ATTR_SERVICE_INSTANCE_ID]: instanceId,
      [TRACE_ATTR.gatewayName]: identity.gatewayName,
      [TRACE_ATTR.gatewayRole]: identity.role,
      ...(selfId !== undefined ? { [TRACE_ATTR.gatewaySpiffeId]: selfId } : {})
    }))
    this.ratio = settings.sampler.ratio
    this.rootSampler = new TraceIdRatioBasedSampler(settings.sampler.ratio)
    this.provider = new BasicTracerProvider({
      resource,
      idGenerator: this.ids,
      sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
      spanProcessors: [new BatchSpanProcessor(new ObservedExporter(exporter, this.stats, total, log, url), {
        maxQueueSize: settings.maxQueueSize,
        maxExportBatchSize: Math.min(512, settings.maxQueueSize),
        scheduledDelayMillis: 1000,
        exportTimeoutMillis: timeoutMs
      })]
    })
    this.tracer = this.provider.getTracer('fastmesh')
  }

  /** Exports what is queued (waiting at most `timeoutMs`), then stops; spans ended later are dropped. */
  async shutdown (timeoutMs: number): Promise<void> {
    this.closing ??= (async () => {
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs); timer.unref() })
      await Promise.race([this.provider.shutdown().catch(() => {}), late])
      clearTimeout(timer)
    })()
    await this.closing
  }
}

export interface GatewayTracingOptions {
  readonly gatewayName: string
  /** `edge` or `node` (gateway.mode). */
  readonly role: string
  readonly log: Logger
  /** The SPIFFE ID of the gateway's or a local service's leaf certificate, when the mesh is on. */
  readonly spiffeIdOf?: (service: string) => string | undefined
}

/** How long `stop()` waits for the last spans to reach the collector. */
const STOP_FLUSH_MS = 3000

/**
 * Tracing of one gateway, across config versions: the versions whose tracing settings are the
 * same share one provider (its batch queue and exporter connection); a reload that changes
 * them starts a new provider and retires the old one once the old version had time to drain.
 */
export class GatewayTracing {
  /** By the settings they were made from (JSON). */
  private readonly setups = new Map<string, TracerSetup>()
  private readonly instanceId = randomUUID()
  private readonly log: Logger
  /** Exports of every provider this gateway ran, since it started (metrics). */
  readonly totals = new ExportStats()

  constructor (private readonly options: GatewayTracingOptions) {
    this.log = options.log.child({ component: 'tracing' })
  }

  /** The version's tracing policy, or undefined when `settings` turn tracing off. */
  policy (settings: TracingConfig): GatewayPolicy | undefined {
    if (!settings.enabled) return undefined
    const key = JSON.stringify(settings)
    let setup = this.setups.get(key)
    if (setup === undefined) this.setups.set(key, setup = new TracerSetup(settings, this.options, this.instanceId, this.log, this.totals))
    return new TracingPolicy(setup, this.options.role === 'node' ? this.options.spiffeIdOf : undefined, this.options.gatewayName)
  }

  /** Export statistics of the provider `settings` use (undefined: none running). */
  stats (settings: TracingConfig): ExportStats | undefined {
    return this.setups.get(JSON.stringify(settings))?.stats
  }

  /**
   * The serving config is `settings`: providers made for other settings (an older version, or
   * a reload that was refused) are shut down after `graceMs`, when their versions have drained.
   */
  settle (settings: TracingConfig, graceMs: number): void {
    const keep = settings.enabled ? JSON.stringify(settings) : undefined
    for (const [key, setup] of this.setups) {
      if (key === keep) continue
      this.setups.delete(key)
      const timer = setTimeout(() => { void setup.shutdown(STOP_FLUSH_MS) }, graceMs)
      timer.unref()
    }
  }

  /** Flushes and stops every provider (gateway stop), waiting a bounded time for the collector. */
  async shutdown (): Promise<void> {
    const setups = [...this.setups.values()]
    this.setups.clear()
    await Promise.all(setups.map(async (s) => { await s.shutdown(STOP_FLUSH_MS) }))
  }
}

/** Extraction takes B3 (single or multi) and W3C trace context; W3C wins when both came. */
const extractor = new CompositePropagator({ propagators: [new B3Propagator(), new W3CTraceContextPropagator()] })
const w3c = new W3CTraceContextPropagator()
const b3Single = new B3Propagator({ injectEncoding: B3InjectEncoding.SINGLE_HEADER })
const b3Multi = new B3Propagator({ injectEncoding: B3InjectEncoding.MULTI_HEADER })
/** Every trace header tracing reads and writes: the client's copies never go upstream as they came. */
const TRACE_HEADERS: readonly string[] = [...new Set([...w3c.fields(), ...b3Single.fields(), ...b3Multi.fields(), ...extractor.fields()])]

/** Span names of spans that are not recorded: never seen, so never built. */
const UNRECORDED = 'fastmesh'

/** `address:port` (or `[v6]:port`) into its parts; undefined when the label is an endpoint id. */
function splitEndpoint (label: string): { address: string, port: number } | undefined {
  const i = label.lastIndexOf(':')
  if (i <= 0) return undefined
  const port = Number(label.slice(i + 1))
  if (!Number.isInteger(port) || port <= 0 || port > 65535) return undefined
  const host = label.slice(0, i)
  return { address: host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host, port }
}

/** The performance.now() reading of an hrtime instant (the exchange's start). */
function performanceTimeOf (hrtime: bigint): number {
  return performance.now() - Number(process.hrtime.bigint() - hrtime) / 1e6
}

/** A span that is not recorded: only its context, which goes upstream (the API's own wrapper). */
function unrecorded (traceId: string, spanId: string, traceFlags: number, parent?: SpanContext): Span {
  return trace.wrapSpanContext(parent?.traceState !== undefined ? { traceId, spanId, traceFlags, traceState: parent.traceState } : { traceId, spanId, traceFlags })
}

/** The W3C `traceparent` of a span context (version 00). */
function traceparent (sc: SpanContext): string {
  const flags = sc.traceFlags & 0xff
  return `00-${sc.traceId}-${sc.spanId}-${flags < 16 ? '0' : ''}${flags.toString(16)}`
}

/**
 * The tracing policy of one version. An exchange's server span starts when its route is
 * chosen (dated back to the exchange's start) or, for one answered before routing, when it
 * ends. Only recorded traces go through the SDK: most requests are not sampled (at a ratio of
 * 0.01, 99 in 100), and for them the policy draws the ids, asks the ratio sampler, and sends
 * a `traceparent` upstream — what the SDK would do for a non-recording span, without its
 * per-span bookkeeping, contexts and propagator passes (they cost the edge about 10% of its
 * CPU per request when every request went through them).
 */
class TracingPolicy implements GatewayPolicy {
  readonly name = 'tracing'
  readonly upstreamHeaderNames = TRACE_HEADERS
  private readonly tracer: Tracer
  private readonly ids: TraceIdSource
  private readonly rootSampler: TraceIdRatioBasedSampler

  constructor (
    setup: TracerSetup,
    /** Node gateways in a mesh: the SPIFFE ID a mesh call speaks with. */
    private readonly spiffeIdOf: ((service: string) => string | undefined) | undefined,
    private readonly gatewayName: string
  ) {
    this.tracer = setup.tracer
    this.ids = setup.ids
    this.rootSampler = setup.rootSampler
  }

  onRequest (ex: Exchange): undefined {
    if (ex.trace === undefined) this.begin(ex)
    return undefined
  }

  onTryStart (ex: Exchange, t: UpstreamTry): void {
    const parent = ex.trace === undefined ? this.begin(ex) : ex.trace as ExchangeTrace
    if (!parent.sampled) {
      // Not recorded: the try's own span id under the same trace, as the SDK's ParentBased sampler would make it.
      const sc = parent.span.spanContext()
      t.span = unrecorded(sc.traceId, this.ids.generateSpanId(), sc.traceFlags, sc)
      return
    }
    const span = this.tracer.startSpan(UNRECORDED, { kind: SpanKind.CLIENT }, parent.context)
    t.span = span
    if (!span.isRecording()) return
    span.updateName(`${ex.method} ${t.service}`)
    span.setAttribute(ATTR_HTTP_REQUEST_METHOD, ex.method)
    span.setAttribute(TRACE_ATTR.destination, t.service)
    span.setAttribute(TRACE_ATTR.endpoint, t.endpoint)
    if (ex.route !== undefined) span.setAttribute(TRACE_ATTR.route, ex.route)
    const peer = splitEndpoint(t.endpoint)
    if (peer !== undefined) {
      span.setAttribute(ATTR_SERVER_ADDRESS, peer.address)
      span.setAttribute(ATTR_SERVER_PORT, peer.port)
      span.setAttribute(ATTR_NETWORK_PEER_ADDRESS, peer.address)
      span.setAttribute(ATTR_NETWORK_PEER_PORT, peer.port)
    }
    if (t.attempt > 1) span.setAttribute(ATTR_HTTP_REQUEST_RESEND_COUNT, t.attempt - 1)
    if (t.mirror) span.setAttribute(TRACE_ATTR.mirror, true)
    const entry = ex.entry
    // Calls out of a node gateway speak for the gateway or, from a per-upstream listener or
    // the shared port with `listeners.outbound.identity`, a local service; calls inbound go
    // to the local app, in plain HTTP.
    if (this.spiffeIdOf !== undefined && entry !== undefined && entry.kind !== 'inbound') {
      const source = entry.caller ?? this.gatewayName
      span.setAttribute(TRACE_ATTR.sourceService, source)
      const id = this.spiffeIdOf(source)
      if (id !== undefined) span.setAttribute(TRACE_ATTR.sourceSpiffeId, id)
    }
  }

  onUpstreamHeaders (ex: Exchange, t: UpstreamTry, headers: string[]): void {
    const state = ex.trace as ExchangeTrace | undefined
    const span = t.span as Span | undefined
    if (state === undefined || span === undefined) return
    const sc = span.spanContext()
    // The common case (W3C only, no tracestate): the header as the propagator would write it.
    if (state.b3 === B3Dialect.None && sc.traceState === undefined) {
      headers.push('traceparent', traceparent(sc))
      return
    }
    const context = trace.setSpan(ROOT_CONTEXT, span)
    w3c.inject(context, headers, headerPusher)
    if (state.b3 === B3Dialect.Single) b3Single.inject(context, headers, headerPusher)
    else if (state.b3 === B3Dialect.Multi) b3Multi.inject(context, headers, headerPusher)
  }

  onTryEnd (_ex: Exchange, t: UpstreamTry): void {
    const span = t.span as Span | undefined
    if (span === undefined) return
    if (span.isRecording()) {
      span.setAttribute(TRACE_ATTR.tryOutcome, t.outcome ?? 'unknown')
      if (t.outcome === 'response') {
        span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, t.status)
        if (t.status >= 500) {
          span.setAttribute(ATTR_ERROR_TYPE, String(t.status))
          span.setStatus({ code: SpanStatusCode.ERROR })
        }
      } else {
        span.setAttribute(ATTR_ERROR_TYPE, t.cause ?? t.outcome ?? 'unknown')
        span.setStatus({ code: SpanStatusCode.ERROR, message: t.cause ?? t.outcome })
      }
    }
    span.end()
  }

  onEnd (ex: Exchange): void {
    const state = ex.trace === undefined ? this.begin(ex) : ex.trace as ExchangeTrace
    const span = state.span
    if (span.isRecording()) {
      const status = ex.status
      if (status > 0) span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status)
      if (ex.destination !== undefined) span.setAttribute(TRACE_ATTR.destination, ex.destination)
      if (ex.endpoint !== undefined) span.setAttribute(TRACE_ATTR.endpoint, ex.endpoint)
      if (ex.attempts > 0) span.setAttribute(TRACE_ATTR.attempts, ex.attempts)
      const error = ex.error
      if (error !== undefined) span.setAttribute(TRACE_ATTR.error, error)
      // Semantic conventions: a server span is an error for 5xx (and here for a cut exchange), not for 4xx.
      if (status >= 500 || status === 0) {
        span.setAttribute(ATTR_ERROR_TYPE, error !== undefined && error.startsWith('FASTMESH_ERR_') ? error : status === 0 ? 'cut' : String(status))
        span.setStatus({ code: SpanStatusCode.ERROR, ...(error !== undefined ? { message: error } : {}) })
      }
    }
    span.end()
  }

  /**
   * The exchange's server span, continuing the caller's trace when it sent one (its sampled
   * flag decides), else starting a new trace sampled at the configured ratio.
   */
  private begin (ex: Exchange): ExchangeTrace {
    const headers = ex.headers
    const b3 = headers.b3 !== undefined ? B3Dialect.Single : headers['x-b3-traceid'] !== undefined ? B3Dialect.Multi : B3Dialect.None
    let span: Span
    const parent = b3 !== B3Dialect.None || headers.traceparent !== undefined ? extractor.extract(ROOT_CONTEXT, headers, headerGetter) : undefined
    const parentContext = parent !== undefined ? trace.getSpanContext(parent) : undefined
    if (parent !== undefined && parentContext !== undefined && isSpanContextValid(parentContext)) {
      span = (parentContext.traceFlags & TraceFlags.SAMPLED) !== 0
        ? this.tracer.startSpan(UNRECORDED, { kind: SpanKind.SERVER, startTime: performanceTimeOf(ex.start) }, parent)
        : unrecorded(parentContext.traceId, this.ids.generateSpanId(), parentContext.traceFlags, parentContext)
    } else {
      // A new trace (no context, or one that does not parse): the ratio decides on its id.
      const traceId = this.ids.freshTraceId()
      if (this.rootSampler.shouldSample(ROOT_CONTEXT, traceId).decision === SamplingDecision.RECORD_AND_SAMPLED) {
        this.ids.next = traceId
        const options: SpanOptions = { kind: SpanKind.SERVER, startTime: performanceTimeOf(ex.start) }
        try {
          span = this.tracer.startSpan(UNRECORDED, options, ROOT_CONTEXT)
        } finally {
          // Taken by the SDK for this root; never left for another trace.
          this.ids.next = undefined
        }
      } else {
        span = unrecorded(traceId, this.ids.generateSpanId(), TraceFlags.NONE)
      }
    }
    const state = new ExchangeTrace(span, b3)
    ex.trace = state
    if (state.sampled) this.describe(ex, span)
    return state
  }

  /** The request's attributes, read while the exchange runs (the socket is detached once it ended). */
  private describe (ex: Exchange, span: Span): void {
    const route = ex.route
    span.updateName(route !== undefined ? `${ex.method} ${route}` : ex.method)
    const req = ex.req
    const path = ex.path
    const q = path.indexOf('?')
    span.setAttribute(ATTR_HTTP_REQUEST_METHOD, ex.method)
    // The path only: a query string may carry tokens.
    span.setAttribute(ATTR_URL_PATH, q >= 0 ? path.slice(0, q) : path)
    span.setAttribute(ATTR_URL_SCHEME, (req.socket as TLSSocket | null)?.encrypted === true ? 'https' : 'http')
    span.setAttribute(ATTR_NETWORK_PROTOCOL_VERSION, req.httpVersion)
    const host = req.headers.host
    if (host !== undefined) {
      const authority = splitEndpoint(host)
      span.setAttribute(ATTR_SERVER_ADDRESS, authority?.address ?? host)
      if (authority !== undefined) span.setAttribute(ATTR_SERVER_PORT, authority.port)
    }
    if (ex.clientAddress !== '') span.setAttribute(ATTR_CLIENT_ADDRESS, ex.clientAddress)
    const agent = req.headers['user-agent']
    if (agent !== undefined) span.setAttribute(ATTR_USER_AGENT_ORIGINAL, agent)
    span.setAttribute(TRACE_ATTR.requestId, ex.requestId)
    if (route !== undefined) span.setAttribute(TRACE_ATTR.route, route)
    const entry = ex.entry
    span.setAttribute(TRACE_ATTR.direction, entry === undefined ? 'edge' : entry.kind === 'inbound' ? 'inbound' : 'outbound')
    if (entry?.kind === 'inbound') {
      span.setAttribute(TRACE_ATTR.localService, entry.service)
      if (entry.peer !== undefined) {
        span.setAttribute(TRACE_ATTR.callerSpiffeId, entry.peer.uri)
        span.setAttribute(TRACE_ATTR.callerService, entry.peer.service)
      }
    } else if (entry?.caller !== undefined) {
      span.setAttribute(TRACE_ATTR.sourceService, entry.caller)
    }
  }
}
