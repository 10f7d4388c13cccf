// The config schema: the single source of the config's TypeScript types, of its
// validation (ajv) and of the reference doc docs/config.md (src/config/docs.ts).
import { Type, type Static, type TSchema, type TString } from '@sinclair/typebox'
import { DURATION_PATTERN } from './duration.js'
import { ENDPOINT_ID_PATTERN, ENDPOINT_ID_RULE, SERVICE_NAME_PATTERN } from './names.js'
import { ENDPOINT_ADDRESS_RULE } from './addresses.js'
import { EWMA_DECAY, EWMA_DEFAULT_RTT, MAGLEV_TABLE_SIZE, POLICIES, RING_VIRTUAL_NODES } from './balancing-defaults.js'

/** Durations (the one syntax, from duration.ts): the docs show keys of this pattern as type `duration`. */
export const Duration = Type.String({
  pattern: DURATION_PATTERN,
  description: 'A duration such as `250ms`, `5s`, `1m`.',
  examples: ['5s']
})

const Port = Type.Integer({ minimum: 0, maximum: 65535, description: 'TCP port; 0 picks a free one.' })

function dur (value: string, description: string) {
  return Type.String({ ...Duration, default: value, description })
}

/** A string from a fixed set; ajv reports the allowed values in one clear error. */
function StringEnum<const T extends readonly string[]> (values: T, options: { default?: T[number], description?: string } = {}) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options })
}

/** A section that may be left out: ajv fills it with `value`, then fills its own defaults. */
function withDefault<T extends TSchema> (schema: T, value: unknown = {}): T {
  return { ...schema, default: value }
}

/**
 * A map keyed by names matching `key`'s pattern. A key that does not match is an error
 * (TypeBox's pattern-keyed records would otherwise let it through unvalidated).
 */
function NamedRecord<K extends TString, V extends TSchema> (key: K, value: V, options: { default?: unknown, description?: string } = {}) {
  return Type.Record(key, value, { ...options, additionalProperties: false })
}

function strict<T extends Record<string, TSchema>> (properties: T, options: { description?: string } = {}) {
  return Type.Object(properties, { additionalProperties: false, ...options })
}

export const ListenerSchema = strict({
  address: Type.String({ default: '127.0.0.1', description: 'Address to bind.' }),
  port: Port
}, { description: 'A TCP listener.' })

const ServiceName = Type.String({ pattern: SERVICE_NAME_PATTERN, description: 'A service name as in the catalog.' })

export const HealthCheckSchema = strict({
  path: Type.String({ pattern: '^/', default: '/health', description: 'HTTP path probed with GET; 2xx and 3xx are healthy.' }),
  interval: dur('5s', 'Time between probes of one endpoint.'),
  timeout: dur('1s', 'A probe that takes longer fails.'),
  healthyThreshold: Type.Integer({ minimum: 1, default: 1, description: 'Consecutive passing probes that bring an unhealthy endpoint back.' }),
  unhealthyThreshold: Type.Integer({ minimum: 1, default: 2, description: 'Consecutive failing probes that take an endpoint out of rotation.' })
}, { description: 'Active HTTP health check run by the gateway against every endpoint of the service.' })

export const StaticEndpointSchema = strict({
  id: Type.Optional(Type.String({ pattern: ENDPOINT_ID_PATTERN, description: `Stable endpoint id (${ENDPOINT_ID_RULE}); defaults to \`address:port\`.` })),
  address: Type.String({ minLength: 1, description: `The endpoint's address: ${ENDPOINT_ADDRESS_RULE}.` }),
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  weight: Type.Integer({ minimum: 1, default: 1, description: 'Relative weight: round robin sends this endpoint traffic in proportion to it.' }),
  tags: Type.Array(Type.String(), { default: [] }),
  meta: Type.Record(Type.String(), Type.String(), { default: {} })
})

export const EmbeddedServiceSchema = strict({
  endpoints: Type.Array(StaticEndpointSchema, { default: [], description: 'Endpoints known from config; more can be registered at run time through the admin API.' }),
  healthCheck: Type.Optional(HealthCheckSchema)
})

export const EmbeddedDiscoverySchema = strict({
  services: NamedRecord(ServiceName, EmbeddedServiceSchema, { default: {}, description: 'Services of the embedded registry, by name.' })
}, { description: 'The in-process registry: static endpoints plus runtime registrations, with active health checks.' })

export const ConsulCheckSchema = strict({
  http: Type.Optional(Type.String({ pattern: '^https?://', description: 'URL Consul probes with GET (2xx passing, 429 warning).' })),
  tcp: Type.Optional(Type.String({ pattern: '^[^:]+:[0-9]+$', description: '`host:port` Consul connects to.' })),
  ttl: Type.Optional({ ...Duration, description: 'TTL check: the service must report in within this time.' }),
  interval: dur('10s', 'Time between probes (http, tcp).'),
  timeout: dur('2s', 'A probe that takes longer fails.'),
  deregisterCriticalServiceAfter: Type.Optional({ ...Duration, description: 'Consul removes the instance after it has been critical this long.' })
}, { description: 'A Consul health check: exactly one of `http`, `tcp`, `ttl`.' })

export const ConsulRegistrationSchema = strict({
  name: ServiceName,
  id: Type.Optional(Type.String({ minLength: 1, description: 'Instance id; defaults to `name-address-port`.' })),
  address: Type.String({ minLength: 1, default: '127.0.0.1' }),
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  tags: Type.Array(Type.String(), { default: [] }),
  meta: Type.Record(Type.String(), Type.String(), { default: {} }),
  check: Type.Optional(ConsulCheckSchema)
}, { description: 'A local service this gateway registers in Consul at start and deregisters on graceful shutdown.' })

export const ConsulDiscoverySchema = strict({
  address: Type.Optional(Type.String({ minLength: 1, description: 'Agent address `host:port` or URL. Default: env CONSUL_HTTP_ADDR, else 127.0.0.1:8500.' })),
  token: Type.Optional(Type.String({ description: 'ACL token. Default: env CONSUL_HTTP_TOKEN. Shown as `<redacted>` by the admin API, like every value whose key names a secret.' })),
  datacenter: Type.Optional(Type.String({ minLength: 1, description: 'Datacenter to ask (default: the agent\'s).' })),
  includeWarning: Type.Boolean({ default: false, description: 'Also send traffic to instances whose worst check is `warning`.' }),
  wait: dur('30s', 'Longest wait of one blocking query, from `1s` to `10m` (Consul\'s limit); each query waits 75-100% of it, at random. Sent to Consul in milliseconds.'),
  maxConnections: Type.Integer({ minimum: 8, default: 128, description: 'Connections to the agent at most: keep it under the agent\'s `limits.http_max_conns_per_client` (200 by default). With `watch: auto`, services are watched one blocking query (one connection) each while they fit in three quarters of this, less 8; past that, through the whole catalog. Connect certificates and KV watches hold one each.' }),
  watch: StringEnum(['auto', 'service', 'catalog'], { default: 'auto', description: 'How services are watched. `service`: one blocking query per service, the quickest to follow a change (a few ms), one agent connection each. `catalog`: two blocking queries per datacenter on the whole catalog (every check\'s health, the service list), then a plain read of each service they show changed, six at a time: a handful of connections however many services, but each change costs a read of every check in the catalog (about 150 ms at 10,000 instances). `auto`: `service` while the watched services fit in the connection budget (see `maxConnections`), `catalog` from the first one that does not.' }),
  registerSelf: Type.Boolean({ default: true, description: 'Register this gateway (name, role, admin address) with a check on its admin `/ready`.' }),
  register: Type.Array(ConsulRegistrationSchema, { default: [], description: 'Local services to register at start and deregister on shutdown.' })
}, { description: 'Consul as the catalog: services not declared under `embedded` are watched in Consul.' })

export const DiscoverySchema = strict({
  embedded: withDefault(EmbeddedDiscoverySchema),
  consul: Type.Optional(ConsulDiscoverySchema)
}, { description: 'Where endpoints come from. `embedded` serves a one-machine mesh without Consul; with `consul`, every service not declared under `embedded` comes from the Consul catalog.' })

export const ConnectionPoolSchema = strict({
  connections: Type.Integer({ minimum: 1, default: 128, description: 'Maximum open connections to one endpoint.' }),
  pipelining: Type.Integer({ minimum: 1, default: 1, description: 'Requests in flight per connection (HTTP/1.1 pipelining; 1 = off).' }),
  connectTimeout: dur('2s', 'Time allowed to open a connection to an endpoint.'),
  keepAliveTimeout: dur('30s', 'How long an idle upstream connection is kept.')
}, { description: 'Upstream connection pool per endpoint.' })

export const HashOnSchema = Type.Union([
  strict({ header: Type.String({ minLength: 1, description: 'A request header (case-insensitive; repeated headers joined with `,`).' }) }),
  strict({ cookie: Type.String({ minLength: 1, description: 'A cookie of the request\'s Cookie header.' }) }),
  strict({ queryParameter: Type.String({ minLength: 1, description: 'A query parameter (case-sensitive; the first value counts).' }) }),
  strict({ clientAddress: Type.Literal(true, { description: 'The client\'s address (the connection\'s peer).' }) })
], { description: 'What `ring_hash` and `maglev` hash: exactly one of `header`, `cookie`, `queryParameter`, `clientAddress: true`. A request without that key goes to a random endpoint.' })

export const LocalitySchema = strict({
  enabled: Type.Boolean({ default: true, description: 'Prefer endpoints in the gateway\'s own zone (`gateway.zone`; nothing happens while it is unset).' }),
  zoneMetaKey: Type.String({ minLength: 1, default: 'zone', description: 'The endpoint meta key (Consul service meta) holding an endpoint\'s zone.' }),
  minLocalShare: Type.Number({ minimum: 0, maximum: 1, default: 0.7, description: 'Only the local zone\'s endpoints take traffic while at least this share of them (usable / known in the zone) is usable; below it, every usable endpoint does (spill-over). 0: local whenever one local endpoint is usable.' })
}, { description: 'Locality preference: same zone first, spill over when the zone is short of healthy endpoints. Admin `/services` shows which applies.' })

export const LoadBalancerSchema = strict({
  policy: StringEnum(POLICIES, { default: 'round_robin', description: 'Balancing algorithm over the healthy endpoints, all weighted by endpoint weight (Consul `Weights`). `round_robin`: in turn; `random`: drawn at random; `least_request`: the fewer attempts in flight of two random endpoints (power of two choices); `ewma`: the lower peak-EWMA latency × (in flight + 1) of two random endpoints (as Linkerd); `ring_hash` and `maglev`: consistent hashing of `hashOn`, so a key keeps its endpoint and adding or removing one of N endpoints moves about 1/N of the keys.' }),
  hashOn: Type.Optional(HashOnSchema),
  ringHash: Type.Optional(strict({
    virtualNodes: Type.Integer({ minimum: 1, maximum: 4096, default: RING_VIRTUAL_NODES, description: 'Points on the ring per endpoint of the smallest weight (heavier endpoints get proportionally more). More points: a more even spread, a bigger ring.' })
  }, { description: 'Settings of `ring_hash`.' })),
  maglev: Type.Optional(strict({
    tableSize: Type.Integer({ minimum: 7, maximum: 5000011, default: MAGLEV_TABLE_SIZE, description: 'Lookup table slots; must be a prime, well above the number of endpoints (at least 100× for an even spread).' })
  }, { description: 'Settings of `maglev`.' })),
  ewma: Type.Optional(strict({
    decay: dur(EWMA_DECAY, 'How fast an endpoint\'s latency estimate forgets: the time constant of its decay.'),
    defaultRtt: dur(EWMA_DEFAULT_RTT, 'The latency assumed for an endpoint before its first answer.')
  }, { description: 'Settings of `ewma`.' })),
  locality: withDefault(LocalitySchema)
}, { description: 'How one endpoint is chosen for each attempt.' })

export const SubsetSchema = strict({
  tags: Type.Array(Type.String(), { default: [], description: 'Only endpoints carrying every one of these tags.' }),
  meta: Type.Record(Type.String(), Type.String(), { default: {}, description: 'Only endpoints whose meta has all these values.' })
}, { description: 'Restricts the service to a subset of its endpoints.' })

export const RETRY_ON = ['connect-failure', 'refused', 'reset', 'gateway-error', '5xx', 'retriable-status-codes'] as const
/** Retried with nothing configured: nothing reached the upstream, or it broke off before answering (idempotent methods). */
export const DEFAULT_RETRY_ON = ['connect-failure', 'reset'] as const

export const RetryPolicySchema = strict({
  attempts: Type.Integer({ minimum: 1, maximum: 10, default: 2, description: 'Tries in all, the first included (1: no retry). Each retry picks another endpoint when one exists. A try that could not connect does not count (its retry goes to an endpoint not tried yet, at most 10 tries in all).' }),
  perTryTimeout: Type.Optional({ ...Duration, description: 'Time allowed for each try to get response headers (0s: no limit); default: the route\'s `timeout`. Timed precisely by the gateway, not by the HTTP client\'s coarse timers.' }),
  retryOn: Type.Array(StringEnum(RETRY_ON), { default: [...DEFAULT_RETRY_ON], description: 'When to retry: `connect-failure` (could not connect: refused, connect timeout, TLS failure; nothing reached the upstream, so any method), `refused` (connection refused only), `reset` (connection reset or closed before any response byte: idempotent methods only, as nginx\'s `error` and Envoy\'s `reset`), `gateway-error` (connect failure, reset, per-try timeout, or a 502/503/504 answer), `5xx` (any 5xx answer, and gateway errors), `retriable-status-codes` (the statuses in `retriableStatusCodes`). A retry after a connect failure goes to an endpoint not tried yet and uses up neither `attempts` nor the budget.' }),
  retriableStatusCodes: Type.Array(Type.Integer({ minimum: 100, maximum: 599 }), { default: [], description: 'Statuses retried with `retriable-status-codes`.' }),
  nonIdempotent: Type.Boolean({ default: false, description: 'Also retry POST, PATCH and other non-idempotent methods on conditions other than a connect failure (the upstream may have acted on the first try).' }),
  bufferBodyBytes: Type.Integer({ minimum: 0, default: 0, description: 'Buffer request bodies up to this many bytes (declared Content-Length) so they can be sent again; a larger or streamed body is retried only after a connect failure that sent none of it.' }),
  backoff: withDefault(strict({
    base: dur('25ms', 'First retry waits a random time up to this; each further retry doubles it.'),
    max: dur('250ms', 'Longest wait before one retry.')
  }, { description: 'Exponential backoff with full jitter between tries.' })),
  budget: withDefault(strict({
    percent: Type.Number({ minimum: 0, maximum: 100, default: 20, description: 'Retries may add at most this share of the route\'s request rate (counted over 10 s), plus `minPerSecond`.' }),
    minPerSecond: Type.Number({ minimum: 0, default: 10, description: 'Retries per second allowed beyond `percent`, so low-traffic routes can retry at all.' })
  }, { description: 'The retry budget (as Linkerd and Envoy budget retries): a route past it stops retrying instead of multiplying load on a failing service.' }))
}, { description: 'Retries of one route (or the default for every route to a service). With nothing configured, a connect failure (any method) and a reset before any response byte (idempotent methods) are retried once on another endpoint.' })

export const OutlierDetectionSchema = strict({
  enabled: Type.Boolean({ default: true, description: 'Passive outlier detection: the gateway watches every attempt\'s outcome and ejects endpoints that keep failing, even ones without a health check. On by default.' }),
  consecutiveGatewayErrors: Type.Integer({ minimum: 0, default: 5, description: 'Eject an endpoint after this many consecutive gateway errors: a connect failure, reset or timeout, or a 502, 503 or 504 answer (the endpoint, or what is in front of it, failed: Envoy\'s and Linkerd\'s gateway failures); 0 turns the rule off. 5 (as Envoy) lets a broken endpoint leave after five attempts on it, while one broken keep-alive connection or a short restart does not eject it. A connection refused is handled by `unreachable` when that is on.' }),
  consecutive5xx: Type.Integer({ minimum: 0, default: 0, description: 'Eject an endpoint after this many consecutive 5xx answers (a plain 500 included) or gateway errors; 0 (default) turns the rule off, because a 500 is often the application\'s answer to one request, not a sign of a broken instance. Envoy uses 5 when it is on.' }),
  baseEjectionTime: dur('30s', 'How long the first ejection lasts; the n-th in a row lasts n times this (at most `maxEjectionTime`). Each `baseEjectionTime` an endpoint stays back without being ejected lowers n by one. 30s as Envoy.'),
  maxEjectionTime: dur('5m', 'Longest single ejection.'),
  maxEjectionPercent: Type.Integer({ minimum: 0, maximum: 100, default: 50, description: 'At most this share of the service\'s endpoints is ejected at once (at least one, unless 0: no ejections). 50 keeps half in rotation should the failures be the gateway\'s own; Envoy uses 10, which for a small service also means one.' }),
  panicThreshold: Type.Integer({ minimum: 0, maximum: 100, default: 50, description: 'When fewer than this percentage of the endpoints are usable (neither ejected nor unreachable), ejections are ignored and every reachable endpoint is used (Envoy\'s healthy panic threshold); with failover targets, the next target is tried first. Unreachable endpoints are used only when every endpoint is. 0 turns panic off.' }),
  unreachable: withDefault(strict({
    enabled: Type.Boolean({ default: true, description: 'An endpoint no connection could be made to (refused, connect timeout, host unreachable; not a TLS failure) leaves rotation at once, whatever `maxEjectionPercent` says, and counts as not usable for panic and failover; it is back as soon as a TCP connect probe reaches it. So a failover target takes over without a health check, and the primary takes traffic back within `backoff.max` of listening again.' }),
    backoff: withDefault(strict({
      base: dur('250ms', 'First probe this long after the failed connection.'),
      max: dur('2s', 'Each failed probe doubles the wait, up to this.')
    }, { description: 'When an unreachable endpoint is probed. Probes run only while the service gets requests (no timer per endpoint).' }))
  }, { description: 'Unreachable endpoints (as Linkerd\'s endpoints in reconnect backoff): out of rotation until a connect probe succeeds.' })),
  successRate: Type.Optional(strict({
    enabled: Type.Boolean({ default: false, description: 'Turns the success-rate rule on. Off by default: consecutive gateway errors stay the default rule.' }),
    minimumHosts: Type.Integer({ minimum: 1, default: 5, description: 'The rule applies only when at least this many endpoints had `requestVolume` requests in the interval: fewer give no meaningful mean. 5 as Envoy.' }),
    requestVolume: Type.Integer({ minimum: 1, default: 100, description: 'Requests an endpoint needs in the interval to be judged (and to count towards the mean). 100 as Envoy.' }),
    stdevFactor: Type.Number({ minimum: 0, default: 1.9, description: 'An endpoint is ejected when its success rate is below mean − `stdevFactor` × standard deviation of the judged endpoints\' rates. 1.9 as Envoy (its 1900 / 1000).' }),
    interval: dur('10s', 'Length of one counting interval. The rates are judged when the first outcome after the interval arrives (no timer), then counting starts afresh. 10s as Envoy.')
  }, { description: 'Success-rate rule (as Envoy\'s): each interval, endpoints whose share of successes (answers below 500 that are not gateway errors; client aborts ignored) is far below the others\' are ejected, within `maxEjectionPercent`, for base time × ejections like the other rules.' }))
}, { description: 'Passive outlier detection: ejects endpoints whose attempts keep failing and lets them back after a while. Ejections and returns are logged and shown by admin `/services`.' })

export const CircuitBreakerSchema = strict({
  maxConnections: Type.Integer({ minimum: 1, default: 1024, description: 'Upstream connections (sockets, connecting ones included) to the destination at once, summed over all its endpoints: a hard cap, on top of each endpoint\'s `connectionPool.connections`. Each carries `connectionPool.pipelining` requests; a request beyond them waits for a connection: it is pending. With fewer connections than busy endpoints, an idle connection is closed to give an endpoint without one its turn.' }),
  maxPendingRequests: Type.Integer({ minimum: 0, default: 1024, description: 'Requests that may wait for a connection at once; past it the gateway answers 503 `FASTMESH_ERR_OVERFLOW` with `x-fastmesh-overflow: max-pending-requests` instead of queueing.' }),
  maxRequests: Type.Integer({ minimum: 1, default: 1024, description: 'Requests to the destination in flight at once; past it, 503 `FASTMESH_ERR_OVERFLOW` with `x-fastmesh-overflow: max-requests`.' }),
  maxRetries: Type.Integer({ minimum: 0, default: 1024, description: 'Retries to the destination in flight at once; past it a retry is not made (`x-fastmesh-overflow: max-retries`).' })
}, { description: 'Circuit breaking: limits per destination, answered at once with 503 `FASTMESH_ERR_OVERFLOW` (a header names the limit), never by queueing without bound. The defaults are generous (Envoy\'s 1024); set them from the destination\'s capacity.' })

export const FailoverTargetSchema = strict({
  subset: Type.Optional(SubsetSchema),
  service: Type.Optional({ ...ServiceName, description: 'Another service (its own `subset` and `datacenter` do not apply; give them here). Its own `failover` targets follow it in the chain.' }),
  datacenter: Type.Optional(Type.String({ minLength: 1, description: 'Another Consul datacenter.' }))
}, { description: 'A failover target: the primary with the given fields replaced (at least one). Without `service`, the primary\'s service; without `datacenter`, the primary\'s; without `subset`, the primary\'s subset, or the whole service when `service` is given.' })

export const ServicePolicySchema = strict({
  datacenter: Type.Optional(Type.String({ minLength: 1, description: 'Ask this Consul datacenter for the service\'s endpoints.' })),
  subset: Type.Optional(SubsetSchema),
  loadBalancer: withDefault(LoadBalancerSchema),
  connectionPool: withDefault(ConnectionPoolSchema),
  outlierDetection: withDefault(OutlierDetectionSchema),
  circuitBreaker: withDefault(CircuitBreakerSchema),
  failover: Type.Array(FailoverTargetSchema, { default: [], description: 'Ordered failover targets, used when the primary (and every earlier target) has no usable endpoint, and left as soon as it has one again. Admin `/services` shows which one serves.' }),
  retries: Type.Optional({ ...RetryPolicySchema, description: 'Default retries of every route to this service that sets no `retries` of its own.' })
}, { description: 'Traffic policy for one destination service (applies to every route that targets it).' })

const NamedMatch = (what: string, nameRule: string) => strict({
  name: Type.String({ minLength: 1, description: `${what} name (${nameRule}).` }),
  exact: Type.Optional(Type.String()),
  prefix: Type.Optional(Type.String()),
  regex: Type.Optional(Type.String({ description: 'ECMAScript regular expression, anchored at both ends.' })),
  present: Type.Optional(Type.Boolean({ description: '`true`: must be present; `false`: must be absent.' })),
  invert: Type.Optional(Type.Boolean({ description: 'Match when the condition does not hold.' }))
}, { description: `A ${what.toLowerCase()} condition: exactly one of exact, prefix, regex, present.` })

export const PathMatchSchema = Type.Union([
  strict({ exact: Type.String({ pattern: '^/' }) }),
  strict({ prefix: Type.String({ pattern: '^/', description: 'Segment-aware: `/api` matches `/api` and `/api/x`, not `/apix`.' }) }),
  strict({ template: Type.String({ pattern: '^/', description: 'Path with `:name` parameters and an optional trailing `*`, e.g. `/users/:id/*`.' }) }),
  strict({ regex: Type.String({ description: 'ECMAScript regular expression matched against the whole path; named groups become parameters.' }) })
], { description: 'Exactly one of `exact`, `prefix`, `template`, `regex`.' })

export const RouteMatchSchema = strict({
  hosts: Type.Optional(Type.Array(Type.String({ pattern: '^((\\*\\.)?[a-zA-Z0-9.-]+|\\[[0-9a-fA-F:.]+\\])(:[0-9]+)?$' }), { minItems: 1, description: 'Host names or `[IPv6]` literals (port ignored); `*.example.com` matches one or more labels.' })),
  path: Type.Optional(PathMatchSchema),
  methods: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Z]+$' }), { minItems: 1, description: 'Upper-case HTTP methods, among those Node\'s HTTP parser accepts (`http.METHODS`: GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, ...); others could never arrive. CONNECT is refused (501) by every listener.' })),
  headers: Type.Optional(Type.Array(NamedMatch('Header', 'case-insensitive; repeated headers are joined with `,`'), { description: 'All must hold.' })),
  query: Type.Optional(Type.Array(NamedMatch('Query parameter', 'case-sensitive; the first value counts'), { description: 'All must hold.' }))
}, { description: 'What a request must look like to take this route. Every given condition must hold; an empty match takes everything.' })

export const BackendSchema = strict({
  service: ServiceName,
  subset: Type.Optional({ ...SubsetSchema, description: 'Only these endpoints of the service (replaces `services.<name>.subset` for this backend), e.g. a version\'s tag.' }),
  weight: Type.Integer({ minimum: 0, maximum: 10000, description: 'Relative share of requests; 0 takes the backend out of rotation.' })
}, { description: 'One weighted backend of a split destination.' })

export const StickyOnSchema = strict({
  header: Type.Optional(Type.String({ minLength: 1, description: 'Request header whose value keeps a client on one backend.' })),
  cookie: Type.Optional(Type.String({ minLength: 1, description: 'Cookie whose value keeps a client on one backend.' }))
}, { description: 'Split by a hash of this key instead of at random: a client sending the same value stays on one backend while the weights are unchanged. Exactly one of `header`, `cookie`; requests without the key are split at random.' })

export const MirrorSchema = strict({
  service: ServiceName,
  subset: Type.Optional({ ...SubsetSchema, description: 'Only these endpoints of the mirror service.' }),
  percent: Type.Number({ minimum: 0, maximum: 100, default: 100, description: 'Share of the route\'s requests that are also sent to the mirror.' }),
  maxConcurrent: Type.Integer({ minimum: 1, default: 64, description: 'Mirrored requests in flight at most; beyond it a request is not mirrored (counted as skipped), never queued.' }),
  maxBodyBytes: Type.Integer({ minimum: 0, default: 65536, description: 'Requests with a body are mirrored only when they declare a `Content-Length` of at most this; the copy is taken as the body streams to the primary and held until the mirrored request ends. 0: bodyless requests only. All mirrors together hold at most `limits.mirrorBufferBytes`.' }),
  timeout: dur('5s', 'A mirrored request not answered (to its last byte) by then is abandoned and counted as failed.')
}, { description: 'Shadow traffic: a copy of a share of the requests goes to another service, fire-and-forget, with header `x-fastmesh-mirror: 1`. Its answer is discarded; it never delays or fails the primary request. A mirror service with no usable endpoint (all unhealthy or ejected) is skipped, never used in panic.' })

export const DestinationSchema = strict({
  service: Type.Optional({ ...ServiceName, description: 'The destination service. Exactly one of `service`, `backends`.' }),
  backends: Type.Optional(Type.Array(BackendSchema, { minItems: 1, description: 'A weighted split across services or subsets (canary, blue/green). Exactly one of `service`, `backends`.' })),
  stickyOn: Type.Optional(StickyOnSchema),
  stripPrefix: Type.Optional(Type.Boolean({ description: 'Remove the matched `path.prefix` before forwarding.' })),
  rewritePath: Type.Optional(Type.String({ pattern: '^/', description: 'Replace the path; `:name` is filled from template or regex parameters. The query string is kept.' })),
  rewriteHost: Type.Optional(Type.String({ minLength: 1, description: 'Host header sent upstream (default: the client\'s Host).' }))
}, { description: 'Where matching requests go.' })

export const PluginRefSchema = strict({
  name: Type.String({ minLength: 1, description: 'A built-in plugin (docs/plugins.md) or a key of `customPlugins`.' }),
  options: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'Validated against the plugin\'s own options schema.' }))
})

export const RouteSchema = strict({
  name: Type.String({ pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.-]*$', description: 'Unique route name; used in the access log and the admin API.' }),
  match: Type.Optional(RouteMatchSchema),
  destination: DestinationSchema,
  mirror: Type.Optional(MirrorSchema),
  timeout: dur('15s', 'Time allowed for the upstream to start answering (response headers) on one try (the default per-try timeout). 504 after it; 0s: no limit.'),
  requestTimeout: Type.Optional({ ...Duration, description: 'Time allowed for the whole request until response headers, every try and backoff included; default (or 0s): no limit beyond the tries\' own.' }),
  idleTimeout: dur('60s', 'Longest pause between body chunks from the upstream once it answered (0s: no limit).'),
  retries: Type.Optional(RetryPolicySchema),
  priority: Type.Optional(Type.Integer({ description: 'Overrides the automatic precedence: higher wins (default 0).' })),
  plugins: Type.Array(PluginRefSchema, { default: [], description: 'Plugins run in this order for this route only, after the gateway-wide ones (top-level `plugins`). Listing a gateway-wide plugin here replaces the gateway-wide one for this route.' }),
  disablePlugins: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'Names of gateway-wide plugins (top-level `plugins`) this route does without.' }))
})

export const CustomPluginSchema = strict({
  module: Type.String({ minLength: 1, description: 'Package name, or path of an ES module whose default export is a Fastify plugin (see docs/writing-plugins.md). A path starting with `.` is relative to the config file\'s directory; with `start --kv`, to the working directory.' })
})

export const LoggingSchema = strict({
  level: StringEnum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], { default: 'info', description: 'pino log level; env FASTMESH_LOG_LEVEL overrides.' }),
  accessLog: Type.Union([
    Type.Boolean(),
    strict({
      enabled: Type.Optional(Type.Boolean({ description: 'Write access-log lines (default `true`).' })),
      sampleRatio: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'Share of successful requests written (default 1: all). Every failure is written whatever the ratio: status 4xx/5xx, no answer, or a gateway error code, upstream cause or injected fault. The draw hashes the request id, so a request is written by every gateway it passes (they share `x-request-id`) or by none.' }))
    })
  ], { default: true, description: 'One structured line per request (docs/observability.md, "Access log"): `true`, `false`, or `{ enabled, sampleRatio }`. Credential-bearing query parameters are redacted in its `path`.' })
}, { description: 'pino logs on stdout, written asynchronously. Authorization, Cookie, Set-Cookie and Proxy-Authorization headers and query-string credentials never appear in them.' })

export const MetricsSchema = strict({
  enabled: Type.Boolean({ default: true, description: 'Count every request (fastmesh_requests_total, fastmesh_request_duration_seconds) and serve Prometheus metrics on the admin API (`GET /metrics`). `false`: no per-request cost, and `/metrics` answers 404.' })
}, { description: 'Prometheus metrics on the admin listener (docs/admin.md, "Metrics").' })

/** An HTTP header name (RFC 9110 token). */
const HEADER_NAME_PATTERN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"

export const OtlpExporterSchema = strict({
  endpoint: Type.String({ minLength: 1, default: 'http://127.0.0.1:4318', description: 'Base URL of the OpenTelemetry collector\'s OTLP/HTTP receiver (`http://` or `https://`); spans are POSTed as JSON to `<endpoint>/v1/traces`.' }),
  headers: NamedRecord(Type.String({ pattern: HEADER_NAME_PATTERN }), Type.String({ pattern: '^[\\x20-\\x7e]*$' }), { default: {}, description: 'Headers sent with every export (e.g. a vendor\'s API key). Every value is shown as `<redacted>` by the admin API.' }),
  timeout: dur('10s', 'Longest one export (one batch, retries included) may take; a slow or hanging collector costs dropped spans, never request latency.')
}, { description: 'Where spans go: OTLP over HTTP with JSON bodies.' })

export const TracingSchema = strict({
  enabled: Type.Boolean({ default: false, description: 'A server span per request and a client span per upstream try (retries, mirrored copies, upgrades), exported over OTLP/HTTP; trace context (W3C `traceparent`/`tracestate`, B3) continued from callers and sent upstream. `false`: no tracing code runs and trace headers pass through untouched.' }),
  serviceName: Type.Optional(Type.String({ minLength: 1, description: 'The `service.name` resource attribute of this gateway\'s spans. Default: `fastmesh-<gateway.name>`.' })),
  sampler: withDefault(strict({
    ratio: Type.Number({ minimum: 0, maximum: 1, default: 1, description: 'Share of new traces (requests without a sampled or unsampled caller context) that are recorded and exported, 0 to 1. A caller\'s decision (the sampled flag of its `traceparent` or B3 headers) is always followed, so one trace is whole or absent across the mesh. Set it at the edge (e.g. 0.01 under heavy traffic); node gateways mostly follow.' })
  }, { description: 'Parent-based ratio sampling.' })),
  otlp: withDefault(OtlpExporterSchema),
  maxQueueSize: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 2048, description: 'Ended spans held for export; when the collector is down or slow and the queue is full, new spans are dropped (memory stays bounded).' })
}, { description: 'OpenTelemetry tracing (docs/tracing.md). Off by default.' })

export const TelemetrySchema = strict({
  logging: withDefault(LoggingSchema),
  metrics: withDefault(MetricsSchema),
  tracing: withDefault(TracingSchema)
}, { description: 'Logs, Prometheus metrics and OpenTelemetry traces.' })

export const LimitsSchema = strict({
  maxHeaderBytes: Type.Integer({ minimum: 1024, default: 16384, description: 'Largest request header section accepted (431 beyond).' }),
  keepAliveTimeout: dur('72s', 'Idle time before a client connection is closed.'),
  headerTimeout: dur('10s', 'Longest time to receive a request\'s header section from a client, counted from its first byte (or from the connection for the first request); 408 after it, within about half a second. At most `requestTimeout` (0s: none).'),
  requestTimeout: dur('5m', 'Longest time to receive a whole request from a client, body included; 408 after it (0s: none).'),
  deregisterGrace: dur('500ms', 'On shutdown, how long listeners keep answering after leaving the Consul catalog, so peers stop choosing this gateway first.'),
  drainTimeout: dur('30s', 'On reload or shutdown, how long in-flight requests may take to finish.'),
  mirrorBufferBytes: Type.Integer({ minimum: 0, default: 67108864, description: 'Bytes of request bodies all mirrors of the gateway may hold at once (the copies taken for `routes[].mirror`); a body that does not fit is not mirrored (counted `skippedAtLimit`). Each route may hold up to its `mirror.maxConcurrent` × `mirror.maxBodyBytes`; `fastmesh validate` warns when that alone exceeds this. Default 64 MiB.' })
}, { description: 'Protective limits and timeouts of the listeners, and the memory mirrors may hold.' })

export const GatewaySchema = strict({
  name: Type.String({ minLength: 1, default: 'fastmesh', description: 'This gateway\'s name (logs, registration).' }),
  mode: StringEnum(['edge', 'node'], { default: 'edge', description: '`edge`: north-south gateway; `node`: node-local gateway.' }),
  trustForwardedHeaders: Type.Boolean({ default: false, description: 'Append to a client\'s X-Forwarded-For instead of replacing it. Only behind a trusted proxy.' }),
  escapedSlashes: StringEnum(['reject', 'unescape', 'keep'], { default: 'reject', description: 'What an escaped slash or backslash (`%2F`, `%5C`) in a request path does, on every listener. `reject`: 400; `unescape`: decoded to `/` before `..` is resolved, so routing, authorization and the upstream see the same segments; `keep`: forwarded encoded, not a separator (only for upstreams that never decode it before resolving `..`). See docs/routing.md.' }),
  zone: Type.Optional(Type.String({ minLength: 1, description: 'The zone this gateway runs in: services prefer endpoints of the same zone (see `services.<name>.loadBalancer.locality`).' })),
  workers: Type.Union([
    Type.Integer({ minimum: 1, maximum: 64 }),
    Type.Literal('auto')
  ], { default: 1, description: 'Processes that serve traffic: `1` (one process does everything), a number, or `auto` (one per available core). With more than one, a primary process keeps discovery, certificates, config watching, Consul registration and the admin API, and forks this many workers that share the listening ports (node:cluster); see docs/workers.md for what each worker keeps on its own. Read at start.' })
}, { description: 'Who this gateway is and which role it plays.' })

export const InboundListenerSchema = strict({
  address: Type.String({ default: '0.0.0.0', description: 'Address to bind.' }),
  port: Port,
  advertiseAddress: Type.Optional(Type.String({ minLength: 1, description: 'Address other gateways use to reach this listener (registered in Consul). Default: the bind address, or the first non-loopback IPv4 address when binding all addresses.' }))
}, { description: 'Node mode: the mTLS listener other gateways call (client certificate required in `strict`).' })

/** Admin Host allow-list entries: a host name or IP literal, without a port (ports are not compared). */
const ADMIN_HOST_PATTERN = '^([A-Za-z0-9_.-]+|\\[[0-9a-fA-F:.]+\\])$'

export const AdminListenerSchema = strict({
  address: Type.String({ default: '127.0.0.1', description: 'Address to bind. Anything but loopback (`127.0.0.1`, `::1`, `localhost`) requires `token`.' }),
  port: Port,
  token: Type.Optional(Type.String({ pattern: '^[\\x21-\\x7e]{16,}$', description: 'Bearer token the admin API requires (`Authorization: Bearer <token>`) on every path but `/live` and `/ready`: at least 16 visible ASCII characters, e.g. from `openssl rand -hex 32`. Required when `address` is not loopback; when set on loopback it is required too. Env FASTMESH_ADMIN_TOKEN overrides. Shown as `<redacted>`.' })),
  allowedHosts: Type.Array(Type.String({ pattern: ADMIN_HOST_PATTERN }), { default: [], description: 'More names the admin API answers to in the Host header (a DNS name or the container address it is called by), without port. Always accepted: on a loopback bind `localhost`, `127.0.0.1`, `[::1]` and the bound address; on a specific address, that address; on `0.0.0.0`/`::`, with this list set, loopback names and this host\'s interface addresses. On `0.0.0.0`/`::` with this list empty, Host is not checked (the token protects the API). Other Host values get 421 `FASTMESH_ERR_ADMIN_MISDIRECTED` (DNS rebinding).' })
}, { description: 'Admin API (keep it on loopback; see docs/admin.md, "Access"). Env FASTMESH_ADMIN_ADDRESS / FASTMESH_ADMIN_PORT / FASTMESH_ADMIN_TOKEN override.' })

export const OutboundListenerSchema = strict({
  ...ListenerSchema.properties,
  identity: Type.Optional(Type.String({ pattern: SERVICE_NAME_PATTERN, description: 'The `localServices` entry whose identity calls on this listener carry (config routes and by-Host routing): its leaf certificate and SPIFFE ID to the peer, and the `source` in metrics, traces and the service graph. For a host that runs one app. Needs `gateway.mode: node` and the mesh on. Default: the gateway\'s own identity (`gateway.name`). A reload applies it to new calls.' }))
}, { description: 'Node mode: where local apps send plain HTTP; the destination is the Host header (`orders`, `orders.mesh`) or an absolute-form URI (HTTP_PROXY). Env FASTMESH_OUTBOUND_PORT overrides.' })

export const ListenersSchema = strict({
  http: withDefault({ ...ListenerSchema, description: 'Edge listener for client traffic. Env FASTMESH_HTTP_ADDRESS / FASTMESH_HTTP_PORT override.' }, { port: 8080 }),
  admin: withDefault(AdminListenerSchema, { port: 15000 }),
  outbound: withDefault(OutboundListenerSchema, { port: 15001 }),
  inbound: withDefault(InboundListenerSchema, { port: 15443 })
}, { description: 'Where the gateway listens. An edge binds `http`; a node binds `outbound`, its per-upstream ports and (with the mesh on) `inbound`; both bind `admin`. Changes take effect on restart, but for `outbound.identity`.' })

export const AuthorizationRuleSchema = strict({
  source: Type.String({ minLength: 1, description: 'Calling service (from its verified identity), or `*`.' }),
  destination: Type.String({ minLength: 1, description: 'Called service, or `*`.' }),
  action: StringEnum(['allow', 'deny']),
  pathPrefixes: Type.Optional(Type.Array(Type.String({ pattern: '^/' }), { minItems: 1, description: 'L7: the rule applies only to these path prefixes.' })),
  methods: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Z]+$' }), { minItems: 1, description: 'L7: the rule applies only to these methods.' }))
}, { description: 'An authorization rule. The most specific rule that applies wins: exact source and destination over wildcards, L7 conditions over none, then deny over allow.' })

export const AuthorizationSchema = strict({
  provider: StringEnum(['consul', 'rules'], { default: 'consul', description: '`consul`: rules first, then Consul intentions (`/v1/agent/connect/authorize`); `rules`: only the rules below, then `defaultAction`.' }),
  defaultAction: StringEnum(['allow', 'deny'], { default: 'deny', description: 'What `rules` decides when no rule applies.' }),
  cacheTtl: dur('1s', 'How long a Consul authorization answer is reused.'),
  rules: Type.Array(AuthorizationRuleSchema, { default: [] })
})

export const IdentitySchema = strict({
  provider: StringEnum(['consul', 'files'], { default: 'consul', description: '`consul`: leaves and roots from the Connect CA; `files`: a CA directory made by `fastmesh certs`.' }),
  dir: Type.Optional(Type.String({ minLength: 1, description: 'For `files`: the directory with ca.pem and <service>.pem / <service>-key.pem. A relative path is relative to the config file\'s directory; with `start --kv`, to the working directory.' })),
  selfIssue: Type.Boolean({ default: true, description: 'For `files`: when the CA key (ca-key.pem) is in `dir`, issue missing leaves for the gateway and its local services and renew them before expiry, writing them to `dir`. Without the key the gateway only warns.' }),
  leafValidity: dur('72h', 'For `files` with the CA key: lifetime of the leaves the gateway issues.'),
  renewBefore: Type.Optional(Type.String({ ...Duration, description: 'For `files` with the CA key: renew a leaf this long before it expires. Default a third of `leafValidity` (renewal at two thirds of the lifetime); at most half of it.' })),
  warnBefore: dur('24h', 'Log a warning (once per leaf) and show `expiring` in admin /certs this long before a leaf expires, when it has not been renewed by then.')
})

export const UpstreamBindingSchema = strict({
  service: ServiceName,
  port: Type.Integer({ minimum: 1, maximum: 65535, description: 'Local port the app calls; calls carry the local service\'s identity.' }),
  address: Type.String({ default: '127.0.0.1' })
}, { description: 'A per-upstream listener (Consul Connect\'s upstreams model).' })

export const LocalServiceSchema = strict({
  name: ServiceName,
  address: Type.String({ default: '127.0.0.1', description: 'Where the local instance listens.' }),
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  tags: Type.Array(Type.String(), { default: [] }),
  meta: Type.Record(Type.String(), Type.String(), { default: {} }),
  check: Type.Optional(ConsulCheckSchema),
  upstreams: Type.Array(UpstreamBindingSchema, { default: [] })
}, { description: 'Node mode: an app instance on this host. It is registered in Consul with a connect-proxy pointing at this gateway\'s inbound listener.' })

export const MeshSchema = strict({
  mtls: StringEnum(['off', 'permissive', 'strict'], { default: 'off', description: '`strict`: gateways talk mTLS only; `permissive`: the inbound listener also takes plaintext (migration; plaintext calls skip authorization); `off`: no mesh, endpoints are called directly.' }),
  identity: withDefault(IdentitySchema),
  authorization: withDefault(AuthorizationSchema)
}, { description: 'East-west: identities, mTLS between gateways, authorization of callers.' })

export const ConfigSchema = strict({
  gateway: withDefault(GatewaySchema),
  listeners: withDefault(ListenersSchema),
  limits: withDefault(LimitsSchema),
  discovery: withDefault(DiscoverySchema),
  services: NamedRecord(ServiceName, ServicePolicySchema, { default: {}, description: 'Per-service traffic policy, by service name.' }),
  routes: Type.Array(RouteSchema, { default: [], description: 'The routing table; see docs/routing.md for precedence.' }),
  plugins: Type.Array(PluginRefSchema, { default: [], description: 'Gateway-wide plugins: applied to every route (the gateway\'s own inbound, per-upstream and by-Host routes too), in front of the route\'s own plugins, each name at most once. A route switches one off with `disablePlugins`, or replaces it by listing the same plugin itself. See docs/writing-plugins.md, "Gateway-wide plugins".' }),
  customPlugins: NamedRecord(Type.String({ pattern: '^[a-zA-Z0-9][a-zA-Z0-9_-]*$' }), CustomPluginSchema, { default: {}, description: 'Your own Fastify plugins, by the name routes use.' }),
  mesh: withDefault(MeshSchema),
  localServices: Type.Array(LocalServiceSchema, { default: [], description: 'Node mode: the apps on this host this gateway fronts.' }),
  telemetry: withDefault(TelemetrySchema)
}, { description: 'A fastmesh gateway configuration.' })

export type FastmeshConfigInput = Static<typeof ConfigSchema>
export type RouteConfig = Static<typeof RouteSchema>
export type RouteMatchConfig = Static<typeof RouteMatchSchema>
export type PathMatchConfig = Static<typeof PathMatchSchema>
export type HealthCheckConfig = Static<typeof HealthCheckSchema>
export type StaticEndpointConfig = Static<typeof StaticEndpointSchema>
export type ServicePolicyConfig = Static<typeof ServicePolicySchema>
export type PluginRefConfig = Static<typeof PluginRefSchema>
export type BackendConfig = Static<typeof BackendSchema>
export type MirrorConfig = Static<typeof MirrorSchema>
export type TracingConfig = Static<typeof TracingSchema>
export type StickyOnConfig = Static<typeof StickyOnSchema>
export type OutlierDetectionConfig = Static<typeof OutlierDetectionSchema>
export type CircuitBreakerConfig = Static<typeof CircuitBreakerSchema>
export type FailoverTargetConfig = Static<typeof FailoverTargetSchema>
