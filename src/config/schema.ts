// The config schema: the single source of the config's TypeScript types, of its
// validation (ajv) and of the reference doc docs/config.md (src/config/docs.ts).
import { Type, type Static, type TSchema, type TString } from '@sinclair/typebox'
import { DURATION_PATTERN } from './duration.js'
import { SERVICE_NAME_PATTERN } from './names.js'

/** Durations (the one syntax, from duration.ts): the docs show keys of this pattern as type `duration`. */
export const Duration = Type.String({
  pattern: DURATION_PATTERN,
  description: 'A duration such as `250ms`, `5s`, `1m`.',
  examples: ['5s']
})

const Port = Type.Integer({ minimum: 0, maximum: 65535, description: 'TCP port; 0 picks a free one.' })
const Host = Type.String({ minLength: 1, description: 'IP address or hostname to bind or connect to.' })

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
  id: Type.Optional(Type.String({ minLength: 1, description: 'Stable endpoint id; defaults to `address:port`.' })),
  address: Host,
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
  maxConnections: Type.Integer({ minimum: 8, default: 128, description: 'Connections to the agent at most. Every watched service holds one during its blocking query; keep this under the agent\'s `limits.http_max_conns_per_client` (200 by default), and raise both to watch more services than this without delay.' }),
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

export const LoadBalancerSchema = strict({
  policy: StringEnum(['round_robin'], { default: 'round_robin', description: 'Balancing algorithm over the healthy endpoints; round robin is weighted by endpoint weight (Consul `Weights`).' })
}, { description: 'How one endpoint is chosen for each request.' })

export const SubsetSchema = strict({
  tags: Type.Array(Type.String(), { default: [], description: 'Only endpoints carrying every one of these tags.' }),
  meta: Type.Record(Type.String(), Type.String(), { default: {}, description: 'Only endpoints whose meta has all these values.' })
}, { description: 'Restricts the service to a subset of its endpoints.' })

export const ServicePolicySchema = strict({
  datacenter: Type.Optional(Type.String({ minLength: 1, description: 'Ask this Consul datacenter for the service\'s endpoints.' })),
  subset: Type.Optional(SubsetSchema),
  loadBalancer: withDefault(LoadBalancerSchema),
  connectionPool: withDefault(ConnectionPoolSchema)
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

export const DestinationSchema = strict({
  service: ServiceName,
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
  timeout: dur('15s', 'Time allowed for the upstream to start answering (response headers). 504 after it.'),
  idleTimeout: dur('60s', 'Longest pause between body chunks from the upstream once it answered.'),
  priority: Type.Optional(Type.Integer({ description: 'Overrides the automatic precedence: higher wins (default 0).' })),
  plugins: Type.Array(PluginRefSchema, { default: [], description: 'Plugins run in this order for this route only.' })
})

export const CustomPluginSchema = strict({
  module: Type.String({ minLength: 1, description: 'Package name, or path of an ES module whose default export is a Fastify plugin (see docs/writing-plugins.md). A path starting with `.` is relative to the config file\'s directory; with `start --kv`, to the working directory.' })
})

export const LoggingSchema = strict({
  level: StringEnum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], { default: 'info', description: 'pino log level; env FASTMESH_LOG_LEVEL overrides.' }),
  accessLog: Type.Boolean({ default: true, description: 'One structured line per request.' })
}, { description: 'pino logs on stdout, written asynchronously.' })

export const TelemetrySchema = strict({
  logging: withDefault(LoggingSchema)
}, { description: 'Logs. (No metrics or traces yet.)' })

export const LimitsSchema = strict({
  maxHeaderBytes: Type.Integer({ minimum: 1024, default: 16384, description: 'Largest request header section accepted (431 beyond).' }),
  keepAliveTimeout: dur('72s', 'Idle time before a client connection is closed.'),
  headerTimeout: dur('10s', 'Longest time to receive a request\'s header section from a client, counted from its first byte (or from the connection for the first request); 408 after it, within about half a second. At most `requestTimeout` (0s: none).'),
  requestTimeout: dur('5m', 'Longest time to receive a whole request from a client, body included; 408 after it (0s: none).'),
  deregisterGrace: dur('500ms', 'On shutdown, how long listeners keep answering after leaving the Consul catalog, so peers stop choosing this gateway first.'),
  drainTimeout: dur('30s', 'On reload or shutdown, how long in-flight requests may take to finish.')
}, { description: 'Protective limits and timeouts of the listeners.' })

export const GatewaySchema = strict({
  name: Type.String({ minLength: 1, default: 'fastmesh', description: 'This gateway\'s name (logs, registration).' }),
  mode: StringEnum(['edge', 'node'], { default: 'edge', description: '`edge`: north-south gateway; `node`: node-local gateway.' }),
  trustForwardedHeaders: Type.Boolean({ default: false, description: 'Append to a client\'s X-Forwarded-For instead of replacing it. Only behind a trusted proxy.' }),
  escapedSlashes: StringEnum(['reject', 'unescape', 'keep'], { default: 'reject', description: 'What an escaped slash or backslash (`%2F`, `%5C`) in a request path does, on every listener. `reject`: 400; `unescape`: decoded to `/` before `..` is resolved, so routing, authorization and the upstream see the same segments; `keep`: forwarded encoded, not a separator (only for upstreams that never decode it before resolving `..`). See docs/routing.md.' })
}, { description: 'Who this gateway is and which role it plays.' })

export const InboundListenerSchema = strict({
  address: Type.String({ default: '0.0.0.0', description: 'Address to bind.' }),
  port: Port,
  advertiseAddress: Type.Optional(Type.String({ minLength: 1, description: 'Address other gateways use to reach this listener (registered in Consul). Default: the bind address, or the first non-loopback IPv4 address when binding all addresses.' }))
}, { description: 'Node mode: the mTLS listener other gateways call (client certificate required in `strict`).' })

export const ListenersSchema = strict({
  http: withDefault({ ...ListenerSchema, description: 'Edge listener for client traffic. Env FASTMESH_HTTP_ADDRESS / FASTMESH_HTTP_PORT override.' }, { port: 8080 }),
  admin: withDefault({ ...ListenerSchema, description: 'Admin API (keep it on loopback). Env FASTMESH_ADMIN_ADDRESS / FASTMESH_ADMIN_PORT override.' }, { port: 15000 }),
  outbound: withDefault({ ...ListenerSchema, description: 'Node mode: where local apps send plain HTTP; the destination is the Host header (`orders`, `orders.mesh`) or an absolute-form URI (HTTP_PROXY). Env FASTMESH_OUTBOUND_PORT overrides.' }, { port: 15001 }),
  inbound: withDefault(InboundListenerSchema, { port: 15443 })
}, { description: 'Where the gateway listens. An edge binds `http`; a node binds `outbound`, its per-upstream ports and (with the mesh on) `inbound`; both bind `admin`. Changes take effect on restart.' })

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
