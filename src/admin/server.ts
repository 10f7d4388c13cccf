// The admin API on its own listener (loopback by default): liveness, readiness, routes,
// services with endpoint health, runtime endpoint registration, reload, config dump (secrets redacted).
import Fastify, { LogController } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import type { AddressInfo } from 'node:net'
import type { Gateway } from '../gateway/gateway.js'
import { fastmeshError, type FastmeshError } from '../errors.js'
import { errorHeaders, errorPayload } from '../gateway/respond.js'
import { SERVICE_NAME_PATTERN } from '../config/names.js'
import { describeSelector } from '../balancer/failover.js'
import { MirrorStats, mirrorStatsKind } from '../gateway/mirror.js'
import { durationMs } from '../config/duration.js'
import { leafState } from '../identity/validity.js'
import { redactSecrets } from '../config/redact.js'
import { AJV_CODE_OPTIONS } from '../config/ajv-options.js'
import { RouteStats, routeStatsKind, type RouteStatsSnapshot } from '../telemetry/route-stats.js'
import type { CompiledRouteMatcher } from '../gateway/router.js'

export interface AdminServer {
  readonly address: AddressInfo
  close(): Promise<void>
}

const RegistrationBody = Type.Object({
  id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  address: Type.String({ minLength: 1, maxLength: 255 }),
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  weight: Type.Optional(Type.Integer({ minimum: 1 })),
  tags: Type.Optional(Type.Array(Type.String())),
  meta: Type.Optional(Type.Record(Type.String(), Type.String()))
}, { additionalProperties: false })

const ServiceParams = Type.Object({ service: Type.String({ pattern: SERVICE_NAME_PATTERN }) })
const EndpointParams = Type.Object({ service: Type.String(), id: Type.String() })
const RouteParams = Type.Object({ name: Type.String({ minLength: 1 }) })
/** What a route with no counted request reports. */
const noStats = new RouteStats()

function send (reply: import('fastify').FastifyReply, err: FastmeshError) {
  return reply.code(err.statusCode).headers(errorHeaders(reply.request.id)).send(errorPayload(err, reply.request.id))
}

export async function startAdmin (gateway: Gateway, listen: { address: string, port: number }): Promise<AdminServer> {
  const app = Fastify({
    loggerInstance: gateway.log.child({ component: 'admin' }),
    logController: new LogController({ disableRequestLogging: true }),
    ajv: { customOptions: { allErrors: true, removeAdditional: false, coerceTypes: false, code: AJV_CODE_OPTIONS } },
    serializerOpts: { ajv: { code: AJV_CODE_OPTIONS } }
  })

  app.setErrorHandler((error: Error & { validation?: unknown, statusCode?: number }, _request, reply) => {
    if (error.validation !== undefined || (error.statusCode ?? 500) < 500) {
      return send(reply, fastmeshError('ADMIN_BAD_REQUEST', [error.message]))
    }
    gateway.log.error({ err: error }, 'admin request failed')
    return send(reply, fastmeshError('INTERNAL', [error.message]))
  })
  app.setNotFoundHandler((request, reply) => send(reply, fastmeshError('ADMIN_NOT_FOUND', [`no admin resource ${request.method} ${request.url}`])))

  app.get('/live', async () => ({ status: 'live' }))

  app.get('/ready', async (_request, reply) => {
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

  app.get('/services', async () => {
    const now = Date.now()
    const sets = gateway.services.all()
    return {
      discovery: gateway.discovery.kind,
      services: gateway.discovery.services().map((s) => {
        // The service layer's view of this service: every endpoint set (selector) using it.
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
            const ejected = layers.map((l) => l.outlier.view(e.id, now)).find((v) => v.state === 'ejected')
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
              state: e.health !== 'passing' && e.health !== 'warning' ? 'unhealthy' : ejected !== undefined ? 'ejected' : 'healthy',
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
      }),
      failover: [...(gateway.version?.failovers ?? new Map())].map(([chain, c]) => ({ chain, active: c.active }))
    }
  })

  app.get<{ Params: Static<typeof ServiceParams> }>('/services/:service', { schema: { params: ServiceParams } }, async (request, reply) => {
    const s = gateway.discovery.snapshot(request.params.service)
    if (s === undefined) return send(reply, fastmeshError('ADMIN_NOT_FOUND', [`no service "${request.params.service}"`]))
    return { name: s.service, stale: s.stale, endpoints: s.endpoints }
  })

  app.post<{ Params: Static<typeof ServiceParams>, Body: Static<typeof RegistrationBody> }>('/services/:service/endpoints', {
    schema: { params: ServiceParams, body: RegistrationBody }
  }, async (request, reply) => {
    const endpoint = gateway.registry.register(request.params.service, request.body)
    return reply.code(201).send(endpoint)
  })

  app.delete<{ Params: Static<typeof EndpointParams> }>('/services/:service/endpoints/:id', { schema: { params: EndpointParams } }, async (request, reply) => {
    const removed = gateway.registry.deregister(request.params.service, request.params.id)
    if (!removed) return send(reply, fastmeshError('ADMIN_NOT_FOUND', [`no endpoint "${request.params.id}" in service "${request.params.service}"`]))
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

  app.get('/authz', async () => ({ decisions: gateway.meshContext?.authorizer.countRows() ?? [] }))

  // Secrets never leave through the admin API (src/config/redact.ts says which values).
  app.get('/config', async () => {
    const last = gateway.lastReload
    const address = (a: AddressInfo) => ({ address: a.address, port: a.port })
    return {
      version: gateway.version?.version,
      source: gateway.configSource,
      // Restart-only keys (listeners, discovery.consul, mesh, ...) as the gateway started with them.
      config: redactSecrets(gateway.config),
      listening: { ...Object.fromEntries(Object.entries(gateway.boundListeners).map(([name, a]) => [name, address(a)])), admin: address(gateway.adminAddress) },
      pendingRestart: gateway.pendingRestart,
      lastReload: last === undefined
        ? null
        : { at: last.at, reason: last.reason, ok: last.ok, version: last.version, ...(last.error !== undefined ? { error: last.error } : {}), ...(last.problems !== undefined ? { problems: last.problems } : {}), ...(last.pendingRestart !== undefined ? { pendingRestart: last.pendingRestart } : {}) },
      reloads: { ...gateway.reloads }
    }
  })

  try {
    await app.listen({ host: listen.address, port: listen.port })
  } catch (cause) {
    throw fastmeshError('LISTEN', [`${listen.address}:${listen.port} (admin)`, (cause as Error).message], cause)
  }
  return {
    address: app.server.address() as AddressInfo,
    close: async () => { await app.close() }
  }
}
