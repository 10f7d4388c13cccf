// The admin API on its own listener (loopback by default): liveness, readiness, routes,
// services with endpoint health, runtime endpoint registration, reload, config dump, metrics
// and the service-graph page (`/ui`, data from service-graph.ts). Every
// answer is redacted by the one rule (src/config/redact.ts); access rules are in access.ts.
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import type { AddressInfo } from 'node:net'
import type { AdminHandles } from './handles.js'
import { fastmeshError, type FastmeshError } from '../errors.js'
import { errorHeaders, errorPayload } from '../gateway/respond.js'
import { ENDPOINT_ID_PATTERN, ENDPOINT_ID_RE, ENDPOINT_ID_RULE, SERVICE_NAME_PATTERN } from '../config/names.js'
import { endpointAddressProblem, reachableAddress } from '../config/addresses.js'
import type { FailoverChain } from '../balancer/failover.js'
import { describeSelector } from '../config/selectors.js'
import { MirrorStats, mirrorStatsKind } from '../gateway/mirror.js'
import { durationMs } from '../config/duration.js'
import { leafState } from '../identity/validity.js'
import { redactedJson } from '../config/redact.js'
import { AdminAccess, isJsonContentType } from './access.js'
import type { ServiceSnapshot } from '../discovery/types.js'
import type { ServiceEndpoints } from '../balancer/service-endpoints.js'
import { ejectionOf, endpointState } from '../balancer/endpoint-state.js'
import { AJV_CODE_OPTIONS } from '../config/ajv-options.js'
import { RouteStats, routeStatsKind, type RouteStatsSnapshot } from '../telemetry/route-stats.js'
import type { CompiledRouteMatcher } from '../gateway/router.js'
import { Agent } from 'undici'
import { RequestWindow } from '../telemetry/request-window.js'
import { localGraph, mergeGraphs, peerGraph, registeredGateways, type CertificateRow, type GatewayAnswer, type LocalGraph, type ServiceHealth } from './service-graph.js'
import { loadServiceGraphPage } from './service-graph-page.js'

export interface AdminServer {
  readonly address: AddressInfo
  /** `host:port` as other hosts reach it (Consul `meta.admin`, peers' `/ui`): a wildcard bind is advertised as this host's reachable address. */
  readonly advertised: string
  close(): Promise<void>
}

/** The admin API's `host:port` as registered in Consul (`meta.admin`): a wildcard bind is advertised as this host's reachable address. */
function advertisedAddress (admin: AddressInfo): string {
  // Bound to all addresses: one other hosts can reach (Prometheus, other gateways' /ui), not loopback.
  const host = reachableAddress(admin.address)
  return `${host.includes(':') ? `[${host}]` : host}:${admin.port}`
}

const RegistrationBody = Type.Object({
  id: Type.Optional(Type.String({ pattern: ENDPOINT_ID_PATTERN })),
  address: Type.String({ minLength: 1, maxLength: 253 }),
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  weight: Type.Optional(Type.Integer({ minimum: 1 })),
  tags: Type.Optional(Type.Array(Type.String())),
  meta: Type.Optional(Type.Record(Type.String(), Type.String()))
}, { additionalProperties: false })

const ServiceParams = Type.Object({ service: Type.String({ pattern: SERVICE_NAME_PATTERN }) })
const EndpointParams = Type.Object({ service: Type.String({ pattern: SERVICE_NAME_PATTERN }), id: Type.String({ pattern: ENDPOINT_ID_PATTERN }) })
const RouteParams = Type.Object({ name: Type.String({ minLength: 1 }) })
/** What a route with no counted request reports. */
const noStats = new RouteStats()

/** How long the mesh view waits for each peer gateway's data before listing it as unreachable. */
const PEER_TIMEOUT_MS = 1500

/** An endpoint registration is a few hundred bytes; nothing the admin API takes is near this. */
const BODY_LIMIT_BYTES = 64 * 1024

declare module 'fastify' {
  /** Per-route admin settings (Fastify route `config`); only the admin app sets them. */
  interface FastifyContextConfig {
    /** Answered without Host check or token: read-only, revealing nothing (health checkers call by IP). */
    adminProbe?: boolean
    /** Takes a JSON body: any other (or no) content type is 415. */
    adminJsonBody?: boolean
    /** A static page holding no data (the `/ui` shell): Host checked, no token asked (its own fetches carry it). */
    adminShell?: boolean
  }
}

function send (reply: FastifyReply, err: FastmeshError) {
  return reply.code(err.statusCode).headers(errorHeaders(reply.request.id)).send(errorPayload(err, reply.request.id))
}

/**
 * The access rules, in order: Host (DNS rebinding), token, same origin for changes, JSON
 * bodies only. The probes (`/live`, `/ready`) skip them. Returns the refusal, if any.
 */
function refusal (access: AdminAccess, request: FastifyRequest): FastmeshError | undefined {
  const route = request.routeOptions.config ?? {}
  if (route.adminProbe === true) return undefined
  const host = request.headers.host
  const hostProblem = access.hostProblem(request.raw.rawHeaders, request.raw.httpVersion, host)
  if (hostProblem !== undefined) return fastmeshError('ADMIN_MISDIRECTED', [JSON.stringify(host ?? ''), hostProblem])
  if (route.adminShell === true && (request.method === 'GET' || request.method === 'HEAD')) return undefined
  if (!access.authorized(request.headers.authorization)) return fastmeshError('ADMIN_UNAUTHORIZED', ['a valid token: send `Authorization: Bearer <listeners.admin.token>`'])
  if (request.method === 'GET' || request.method === 'HEAD') return undefined
  if (access.crossOrigin(request.headers.origin, host)) return fastmeshError('ADMIN_CROSS_ORIGIN', [JSON.stringify(request.headers.origin)])
  const hasBody = request.headers['transfer-encoding'] !== undefined || Number(request.headers['content-length'] ?? 0) > 0
  const type = request.headers['content-type']
  if ((hasBody || route.adminJsonBody === true) && !isJsonContentType(type)) return fastmeshError('ADMIN_UNSUPPORTED_MEDIA_TYPE', [type === undefined ? 'no Content-Type' : JSON.stringify(type)])
  return undefined
}

export async function startAdmin (gateway: AdminHandles, listen: { address: string, port: number, token?: string | undefined, allowedHosts?: readonly string[] }): Promise<AdminServer> {
  const app = Fastify({
    loggerInstance: gateway.log.child({ component: 'admin' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT_BYTES,
    ajv: { customOptions: { allErrors: true, removeAdditional: false, coerceTypes: false, code: AJV_CODE_OPTIONS } },
    serializerOpts: { ajv: { code: AJV_CODE_OPTIONS } }
  })
  // Every object the admin API answers with, errors included, is serialized through the one
  // redaction rule: no view can forget it.
  app.setReplySerializer((payload) => redactedJson(payload))

  // Where the admin API itself is bound: replaced by the bound address before any request comes.
  let bound: AddressInfo = { address: listen.address, family: '', port: listen.port }
  const accessFor = (boundAddress: string) => new AdminAccess({ address: listen.address, boundAddress, token: listen.token, allowedHosts: listen.allowedHosts ?? [] })
  // Replaced once bound: a name bind (`localhost`) then also answers to the address it got.
  let access = accessFor(listen.address)
  app.addHook('onRequest', async (request, reply) => {
    const refused = refusal(access, request)
    if (refused === undefined) return
    if (refused.statusCode === 401) void reply.header('www-authenticate', 'Bearer realm="fastmesh-admin"')
    return send(reply, refused)
  })

  app.setErrorHandler((error: Error & { validation?: unknown, statusCode?: number }, request, reply) => {
    // Fastify's own body refusals, in the catalogue's terms.
    if (error.statusCode === 413) return send(reply, fastmeshError('ADMIN_BODY_TOO_LARGE', [BODY_LIMIT_BYTES]))
    if (error.statusCode === 415) return send(reply, fastmeshError('ADMIN_UNSUPPORTED_MEDIA_TYPE', [JSON.stringify(request.headers['content-type'] ?? '')]))
    if (error.validation !== undefined || (error.statusCode ?? 500) < 500) {
      return send(reply, fastmeshError('ADMIN_BAD_REQUEST', [error.message]))
    }
    gateway.log.error({ err: error }, 'admin request failed')
    return send(reply, fastmeshError('INTERNAL', [error.message]))
  })
  app.setNotFoundHandler((request, reply) => send(reply, fastmeshError('ADMIN_NOT_FOUND', [`no admin resource ${request.method} ${request.url}`])))

  const probe = { adminProbe: true }
  app.get('/live', { config: probe }, async () => ({ status: 'live' }))

  app.get('/ready', { config: probe }, async (_request, reply) => {
    const ready = gateway.ready
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', version: gateway.version?.version ?? 0 })
  })

  // Request statistics live in the state registry by route name: they survive reloads
  // that keep the name. A route with no traffic yet has zero counts.
  const routeStats = (name: string): RouteStatsSnapshot => (gateway.state.peek(routeStatsKind, name) ?? noStats).snapshot()
  const describeRoute = (r: CompiledRouteMatcher) => ({
    name: r.name,
    precedence: r.precedence,
    match: r.config.match ?? {},
    destination: r.config.destination,
    timeout: r.config.timeout,
    plugins: r.config.plugins.map((p) => p.name),
    // What the route runs, gateway-wide plugins included, in order.
    effectivePlugins: gateway.version?.routePlugins(r.name) ?? [],
    ...(r.config.retries !== undefined ? { retries: r.config.retries } : {}),
    stats: routeStats(r.name),
    ...(r.config.mirror !== undefined ? { mirror: { service: r.config.mirror.service, percent: r.config.mirror.percent, stats: gateway.state.peek(mirrorStatsKind, r.name)?.snapshot() ?? new MirrorStats().snapshot() } } : {})
  })

  app.get('/routes', async () => {
    const ordered = gateway.version?.router.ordered ?? []
    const configured = new Set(ordered.map((r) => r.name))
    return {
      version: gateway.version?.version,
      // In the order they are tried.
      routes: ordered.map(describeRoute),
      // Routes the gateway makes itself (node mode: per-upstream, inbound, by Host) that have counted requests.
      gatewayRoutes: gateway.state.entries(routeStatsKind).filter(([name]) => !configured.has(name)).map(([name, stats]) => ({ name, stats: stats.snapshot() }))
    }
  })

  app.get<{ Params: Static<typeof RouteParams> }>('/routes/:name', { schema: { params: RouteParams } }, async (request, reply) => {
    const r = gateway.version?.router.ordered.find((x) => x.name === request.params.name)
    if (r === undefined) return send(reply, fastmeshError('ADMIN_NOT_FOUND', [`no route "${request.params.name}"`]))
    return { version: gateway.version?.version, ...describeRoute(r) }
  })

  /**
   * One service as traffic sees it: endpoints with health and ejection state, the service
   * layer (every endpoint set using it) and the failover chains it takes part in. The same
   * object in `GET /services` and `GET /services/:service`.
   */
  const describeService = (s: ServiceSnapshot, sets: readonly ServiceEndpoints[], now: number) => {
    const layers = sets.filter((set) => set.service === s.service)
    return {
      name: s.service,
      ...(s.datacenter !== undefined ? { datacenter: s.datacenter } : {}),
      stale: s.stale,
      ...(s.error !== undefined ? { error: s.error } : {}),
      updatedAt: new Date(s.updatedAt).toISOString(),
      healthy: s.endpoints.filter((e) => e.health === 'passing').length,
      // Passing and not ejected: what takes traffic now.
      inRotation: s.endpoints.filter((e) => e.health === 'passing' && !layers.some((l) => l.outlier.view(e.id, now).state === 'ejected')).length,
      endpoints: s.endpoints.map((e) => {
        const ejected = ejectionOf(e, layers, now)
        return {
          id: e.id,
          address: e.address,
          port: e.port,
          weight: e.weight,
          tags: e.tags,
          meta: e.meta,
          health: e.health,
          ...(e.healthDetail !== undefined ? { healthDetail: e.healthDetail } : {}),
          // What traffic sees: out of rotation by health, ejected by outlier detection, or healthy.
          state: endpointState(e, ejected),
          ...(ejected !== undefined ? { ejectedUntil: ejected.until !== undefined ? new Date(ejected.until).toISOString() : undefined, ejectionReason: ejected.reason, ejections: ejected.ejections } : {}),
          origin: e.origin,
          ...(e.node !== undefined ? { node: e.node } : {})
        }
      }),
      layers: layers.map((l) => ({
        selector: describeSelector(l.selector),
        policy: l.balancing.policy,
        locality: l.locality,
        outlierPanic: l.outlier.inPanic,
        circuit: l.circuit.snapshot(),
        balancer: Object.fromEntries(l.balancerStats())
      }))
    }
  }

  /** Failover chains of the serving version with their active target; `service`: only chains it is part of. */
  const failoverChains = (service?: string) => [...(gateway.version?.failovers ?? new Map<string, FailoverChain>())]
    .filter(([, c]) => service === undefined || c.layers.some((l) => l.service === service))
    .map(([chain, c]) => ({ chain, active: c.active }))

  app.get('/services', async () => {
    const now = Date.now()
    const sets = gateway.services.all()
    const consulWatch = gateway.discovery.consulWatch?.()
    return {
      discovery: gateway.discovery.kind,
      ...(consulWatch !== undefined ? { consulWatch } : {}),
      services: gateway.discovery.services().map((s) => describeService(s, sets, now)),
      failover: failoverChains()
    }
  })

  app.get<{ Params: Static<typeof ServiceParams> }>('/services/:service', { schema: { params: ServiceParams } }, async (request, reply) => {
    const s = gateway.discovery.snapshot(request.params.service)
    if (s === undefined) return send(reply, fastmeshError('ADMIN_NOT_FOUND', [`no service "${request.params.service}"`]))
    return { discovery: gateway.discovery.kind, ...describeService(s, gateway.services.all(), Date.now()), failover: failoverChains(s.service) }
  })

  /** Runtime registration adds endpoints to services the config declares in the embedded registry, nothing else. */
  const embeddedService = (service: string): boolean => Object.hasOwn(gateway.config.discovery.embedded.services, service)
  const notEmbedded = (service: string) => fastmeshError('ADMIN_NOT_FOUND', [`no service "${service}" in the embedded registry: runtime registration adds endpoints to services declared under discovery.embedded.services`])
  const endpointOrigin = (service: string, id: string): string | undefined => gateway.registry.snapshot(service)?.endpoints.find((e) => e.id === id)?.origin

  app.post<{ Params: Static<typeof ServiceParams>, Body: Static<typeof RegistrationBody> }>('/services/:service/endpoints', {
    config: { adminJsonBody: true },
    schema: { params: ServiceParams, body: RegistrationBody }
  }, async (request, reply) => {
    const { service } = request.params
    const body = request.body
    const addressProblem = endpointAddressProblem(body.address)
    if (addressProblem !== undefined) return send(reply, fastmeshError('ADMIN_BAD_REQUEST', [`body/address ${addressProblem}`]))
    if (!embeddedService(service)) return send(reply, notEmbedded(service))
    const id = body.id ?? `${body.address}:${body.port}`
    if (body.id === undefined && !ENDPOINT_ID_RE.test(id)) return send(reply, fastmeshError('ADMIN_BAD_REQUEST', [`body/id is required: the default "address:port" is not a valid id (${ENDPOINT_ID_RULE})`]))
    if (endpointOrigin(service, id) === 'config') {
      return send(reply, fastmeshError('ADMIN_CONFLICT', [`endpoint "${id}" of service "${service}" comes from the config file; change it there, or register under another id`]))
    }
    const endpoint = gateway.registry.register(service, { ...body, id })
    return reply.code(201).send(endpoint)
  })

  app.delete<{ Params: Static<typeof EndpointParams> }>('/services/:service/endpoints/:id', { schema: { params: EndpointParams } }, async (request, reply) => {
    const { service, id } = request.params
    const origin = endpointOrigin(service, id)
    if (origin === undefined) return send(reply, fastmeshError('ADMIN_NOT_FOUND', [`no endpoint "${id}" in service "${service}"`]))
    if (origin === 'config') return send(reply, fastmeshError('ADMIN_CONFLICT', [`endpoint "${id}" of service "${service}" comes from the config file; remove it there`]))
    gateway.registry.deregister(service, id)
    return reply.code(204).send()
  })

  app.post('/reload', async (_request, reply) => {
    const result = await gateway.reload('admin API')
    if (!result.ok) {
      const err = fastmeshError('ADMIN_RELOAD_FAILED', [result.error ?? 'unknown error'])
      return reply.code(err.statusCode).headers(errorHeaders(reply.request.id)).send({ ...errorPayload(err, reply.request.id), problems: result.problems ?? [] })
    }
    return { status: 'reloaded', version: result.version, ...(result.pendingRestart !== undefined ? { pendingRestart: result.pendingRestart } : {}) }
  })

  app.get('/certs', async () => {
    const identity = gateway.identity
    if (identity === undefined) return { mtls: gateway.config.mesh.mtls, provider: null, roots: [], leaves: [] }
    const now = Date.now()
    const days = (d: Date | undefined) => d === undefined ? null : Math.floor((d.getTime() - now) / 86_400_000 * 10) / 10
    const services = [gateway.selfIdentity, ...gateway.config.localServices.map((s) => s.name)]
    const warnBeforeMs = durationMs(gateway.config.mesh.identity.warnBefore)
    const roots = identity.roots()
    return {
      mtls: gateway.config.mesh.mtls,
      provider: identity.kind,
      trustDomain: roots.trustDomain,
      roots: { count: roots.rootsPem.length, notAfter: roots.notAfter?.toISOString() ?? null, daysLeft: days(roots.notAfter) },
      leaves: services.map((service) => {
        const leaf = identity.leaf(service)
        const r = identity.renewalStatus?.(service) ?? { renewal: identity.kind === 'consul' ? 'consul' : 'manual' }
        const renewal = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v]))
        return leaf === undefined
          ? { service, missing: true, renewal }
          : { service, spiffeId: leaf.spiffeId, serial: leaf.serial, notBefore: leaf.notBefore.toISOString(), notAfter: leaf.notAfter.toISOString(), daysLeft: days(leaf.notAfter), state: leafState(leaf, now, warnBeforeMs), renewal }
      }),
      // Inbound handshakes refused (no certificate, unknown CA, expired, not exactly one URI SAN), by reason.
      handshakeRejections: gateway.meshContext?.tls.rejections() ?? { total: 0, byReason: {}, last: null }
    }
  })

  // Prometheus scrape: behind the same access rules as every other read.
  app.get('/metrics', async (_request, reply) => {
    if (!gateway.config.telemetry.metrics.enabled) return send(reply, fastmeshError('ADMIN_NOT_FOUND', ['metrics are off (telemetry.metrics.enabled: false)']))
    return reply.header('content-type', gateway.metrics.contentType).send(await gateway.metrics.render())
  })

  app.get('/authz', async () => ({ decisions: gateway.meshContext?.authorizer.countRows() ?? [] }))

  // Exceptions raised while serving requests: each ended its own exchange, the gateway went on.
  app.get('/faults', async () => {
    const f = gateway.faults
    let caught = f.count
    let uncaught = f.uncaught
    let last = f.last
    // With workers, the exchanges (and their faults) are theirs.
    for (const w of await gateway.workers() ?? []) {
      const wf = w.status?.faults
      if (wf === undefined) continue
      caught += wf.count
      uncaught += wf.uncaught
      if (wf.last !== undefined && (last === undefined || wf.last.at > last.at)) last = wf.last
    }
    return { caught, uncaught, last: last ?? null }
  })

  app.get('/workers', async () => {
    const workers = await gateway.workers()
    if (workers === undefined) return { primary: process.pid, workers: [], note: 'gateway.workers is 1: this process serves' }
    return {
      primary: process.pid,
      version: gateway.version?.version,
      workers: workers.map((w) => ({
        index: w.index,
        pid: w.pid ?? null,
        state: w.state,
        startedAt: w.startedAt,
        restarts: w.restarts,
        version: w.status?.version ?? null,
        ready: w.status?.ready ?? false,
        inFlight: w.status?.inFlight ?? null,
        rssBytes: w.status?.rssBytes ?? null,
        heapUsedBytes: w.status?.heapUsedBytes ?? null,
        ejected: w.status?.ejected.map((e) => ({ service: e.service, endpoint: e.endpoint, ...(e.reason !== undefined ? { reason: e.reason } : {}), ...(e.until !== undefined ? { until: new Date(e.until).toISOString() } : {}) })) ?? null,
        faults: w.status !== undefined ? { caught: w.status.faults.count, uncaught: w.status.faults.uncaught } : null
      }))
    }
  })

  // Secrets never leave through the admin API: the reply serializer redacts (src/config/redact.ts).
  app.get('/config', async () => {
    const last = gateway.lastReload
    const address = (a: AddressInfo) => ({ address: a.address, port: a.port })
    return {
      version: gateway.version?.version,
      source: gateway.configSource,
      // Restart-only keys (listeners, discovery.consul, mesh, ...) as the gateway started with them.
      config: gateway.config,
      listening: { ...Object.fromEntries(Object.entries(gateway.boundListeners).map(([name, a]) => [name, address(a)])), admin: address(bound) },
      pendingRestart: gateway.pendingRestart,
      lastReload: last === undefined
        ? null
        : { at: last.at, reason: last.reason, ok: last.ok, version: last.version, ...(last.restored === true ? { restored: true } : {}), ...(last.error !== undefined ? { error: last.error } : {}), ...(last.problems !== undefined ? { problems: last.problems } : {}), ...(last.pendingRestart !== undefined ? { pendingRestart: last.pendingRestart } : {}) },
      reloads: { ...gateway.reloads }
    }
  })

  // --- the service-graph page ---
  // Recent rates come from snapshots of the cumulative request series, kept while the admin API runs.
  const recent = new RequestWindow(() => gateway.metrics.snapshot())
  recent.start()
  const peers = new Agent({ keepAliveTimeout: 10_000, connections: 4 })
  app.addHook('onClose', async () => { recent.stop(); await peers.close() })
  // A missing page file (a broken install) costs the page, not the admin API.
  const page = await loadServiceGraphPage().catch((err: unknown) => err as Error)

  const serviceHealth = (): ServiceHealth[] => {
    const now = Date.now()
    const sets = gateway.services.all()
    return gateway.discovery.services().map((s) => {
      const d = describeService(s, sets, now)
      return {
        name: d.name,
        stale: d.stale,
        healthy: d.healthy,
        inRotation: d.inRotation,
        endpoints: d.endpoints.map((e) => ({
          id: e.id,
          address: `${e.address}:${e.port}`,
          state: e.state,
          ...(e.ejectionReason !== undefined ? { ejectionReason: e.ejectionReason, ejections: e.ejections, ejectedUntil: e.ejectedUntil } : {})
        }))
      }
    })
  }
  const certificateRows = (): CertificateRow[] => {
    const identity = gateway.identity
    if (identity === undefined) return []
    const now = Date.now()
    const warnBeforeMs = durationMs(gateway.config.mesh.identity.warnBefore)
    const days = (d: Date) => Math.floor((d.getTime() - now) / 86_400_000 * 10) / 10
    const roots = identity.roots().notAfter
    return [
      ...(roots !== undefined ? [{ service: '(trust roots)', notAfter: roots.toISOString(), daysLeft: days(roots), state: roots.getTime() < now ? 'expired' : 'valid' }] : []),
      ...[gateway.selfIdentity, ...gateway.config.localServices.map((s) => s.name)].map((service) => {
        const leaf = identity.leaf(service)
        return leaf === undefined
          ? { service, notAfter: null, daysLeft: null, state: 'missing' }
          : { service, notAfter: leaf.notAfter.toISOString(), daysLeft: days(leaf.notAfter), state: leafState(leaf, now, warnBeforeMs) }
      })
    ]
  }
  const describeDestination = (d: CompiledRouteMatcher['config']['destination']): string =>
    d.service ?? (d.backends ?? []).map((b) => `${b.service}${b.subset !== undefined ? ` (subset)` : ''} ${b.weight}`).join(', ')
  const ownGraph = (): LocalGraph => localGraph({
    gateway: { name: gateway.selfIdentity, role: gateway.config.gateway.mode },
    localServices: gateway.config.localServices.map((s) => s.name),
    window: recent.view(),
    services: serviceHealth(),
    routes: (gateway.version?.router.ordered ?? []).map((r) => ({ name: r.name, match: r.config.match ?? {}, destination: describeDestination(r.config.destination) })),
    certificates: certificateRows()
  })

  // The page itself: the same for everyone, no data in it (see adminShell).
  app.get('/ui', { config: { adminShell: true } }, async (_request, reply) => page instanceof Error
    ? send(reply, fastmeshError('INTERNAL', [`the service-graph page could not be read: ${page.message}`]))
    : reply.headers(page.headers).send(page.html))

  // This gateway's own view, with histograms so that a caller can merge percentiles: what peers read.
  app.get('/ui/graph/local', async () => ownGraph())

  // The mesh: this gateway and every gateway registered in Consul (or this one alone).
  app.get('/ui/graph', async () => {
    const self = { name: gateway.selfIdentity, role: gateway.config.gateway.mode, admin: advertisedAddress(bound), self: true, status: 'ok' as const }
    const answers: GatewayAnswer[] = [{ status: self, graph: ownGraph() }]
    let discoveryError: string | undefined
    const consul = gateway.consul
    if (consul !== undefined) {
      try {
        const others = (await registeredGateways(consul)).filter((g) => g.admin !== self.admin)
        answers.push(...await Promise.all(others.map(async (g) => await peerGraph(g, { token: listen.token, timeoutMs: PEER_TIMEOUT_MS, dispatcher: peers }))))
      } catch (err) {
        discoveryError = `the gateways registered in Consul could not be listed: ${(err as Error).message}`
      }
    }
    return { ...mergeGraphs(answers), ...(discoveryError !== undefined ? { discoveryError } : {}) }
  })

  try {
    await app.listen({ host: listen.address, port: listen.port })
  } catch (cause) {
    throw fastmeshError('LISTEN', [`${listen.address}:${listen.port} (admin)`, (cause as Error).message], cause)
  }
  bound = app.server.address() as AddressInfo
  access = accessFor(bound.address)
  const address = bound
  return {
    address,
    get advertised () { return advertisedAddress(address) },
    close: async () => { await app.close() }
  }
}
