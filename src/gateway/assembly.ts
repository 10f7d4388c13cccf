// Assembly: the routes each entry gets, all built from the same layers — a route layer over
// a destination (service layer → endpoint pools), the route's plugins and, inbound, an
// authorization guard. Edge and node, outbound and inbound differ only in this wiring.
import type { FastmeshConfig } from '../config/validate.js'
import type { RouteConfig } from '../config/schema.js'
import { durationMs } from '../config/duration.js'
import { fastmeshError, type ResponseError } from '../errors.js'
import type { ServiceTable } from '../balancer/service-table.js'
import { balancingFor, poolSettingsFor, resilienceFor } from '../balancer/service-table.js'
import { describeSelector, failoverSelectors, selectorFor, type ServiceSelector } from '../config/selectors.js'
import type { EndpointTarget } from '../upstream/endpoint-pool.js'
import type { MeshTls } from '../identity/mesh-tls.js'
import type { Authorizer } from '../identity/authorization.js'
import { isServiceName } from '../config/names.js'
import type { Entry, Exchange, PolicyChain } from './exchange.js'
import { hostOf, type CompiledRouteMatcher, type Router } from './router.js'
import { RouteLayer, type Destination, type DestinationFor } from './route-layer.js'
import { compileRetryPolicy, retryBudgetKind } from './retry.js'
import { FailoverChain } from '../balancer/failover.js'
import type { ServiceEndpoints } from '../balancer/service-endpoints.js'
import type { Logger } from 'pino'
import { routeBackends, weightedDestination, type BackendRef } from './split.js'
import { MIRROR_BUFFER_KEY, Mirror, mirrorBufferKind, mirrorStatsKind } from './mirror.js'
import type { StateRegistry } from '../state/registry.js'

/** The mesh parts a version needs when mTLS is on. */
export interface MeshContext {
  readonly mtls: 'strict' | 'permissive'
  readonly tls: MeshTls
  readonly authorizer: Authorizer
  /** Identity of calls from the edge and from the node's shared outbound port. */
  readonly selfIdentity: string
}

/** One route as a version serves it. */
export interface RouteBinding {
  readonly name: string
  readonly matcher: CompiledRouteMatcher
  /** Route plugins in config order; none: the route may skip Fastify (the fast path). */
  readonly plugins: RouteConfig['plugins']
  readonly layer: RouteLayer
  /** Checked before forwarding (inbound: the verified caller against authorization). */
  readonly guard: ((ex: Exchange) => Promise<ResponseError | undefined>) | undefined
  /**
   * The destination service when the route always has the same one (one backend, inbound,
   * per-upstream), so a request refused before forwarding is still counted against it;
   * undefined when chosen per request (splits, by Host).
   */
  readonly service: string | undefined
}

export interface Assembly {
  /** Every route of the version, by name. */
  readonly routes: ReadonlyMap<string, RouteBinding>
  /** Node mode, shared outbound port: the destination named by Host when no config route matched. */
  readonly byHost: RouteBinding | undefined
  /** The local service whose identity calls on the shared outbound port carry (`listeners.outbound.identity`); undefined: the gateway's. */
  readonly outboundCaller: string | undefined
  /** The route of a fixed-destination entry (per-upstream, inbound). */
  fixedRoute(entry: Exclude<Entry, { kind: 'outbound' }>): RouteBinding | undefined
  /** Keys of the endpoint sets the version uses; grows as by-Host destinations are first named. */
  readonly services: Set<string>
  /** Failover chains, by `primary > target > ...`: which target serves now. */
  readonly failovers: ReadonlyMap<string, FailoverChain>
  /** Releases what the version holds by itself (its pools to local instances). */
  close(): void
}

export const upstreamRouteName = (caller: string, service: string): string => `upstream:${caller}:${service}`
export const inboundRouteName = (service: string): string => `inbound:${service}`
export const BY_HOST_ROUTE = 'outbound:by-host'

/** A route the gateway makes itself (per-upstream, inbound, by-host), with default timeouts. */
function syntheticMatcher (name: string, service: string): CompiledRouteMatcher {
  const config: RouteConfig = { name, destination: { service }, timeout: '15s', idleTimeout: '60s', plugins: [] }
  return { name, config, index: -1, precedence: [], rewrite: (m) => m.path }
}

export interface AssemblyOptions {
  readonly config: FastmeshConfig
  readonly router: Router
  readonly services: ServiceTable
  readonly chain: PolicyChain
  readonly mesh: MeshContext | undefined
  readonly state: StateRegistry
  readonly log?: Logger
}

/**
 * `listeners.outbound.identity` as this version can serve it. Validation checked the config
 * as given; the version runs the started gateway's mesh and local services (restart-only),
 * so a reload naming another service, or one while the mesh is off, is refused here.
 */
function outboundCallerOf (config: FastmeshConfig, mesh: MeshContext | undefined): string | undefined {
  const identity = config.gateway.mode === 'node' ? config.listeners.outbound.identity : undefined
  if (identity === undefined) return undefined
  if (mesh === undefined) throw fastmeshError('IDENTITY_UNAVAILABLE', [identity, 'mesh', 'listeners.outbound.identity needs the mesh on, and the running gateway started with mesh.mtls off (a restart applies mesh)'])
  if (!config.localServices.some((s) => s.name === identity)) throw fastmeshError('IDENTITY_UNAVAILABLE', [identity, mesh.tls.provider.kind, 'listeners.outbound.identity names no local service the running gateway started with (a restart applies localServices)'])
  return identity
}

export function assemble (opts: AssemblyOptions): Assembly {
  const { config, router, services, chain, mesh, state } = opts
  const outboundCaller = outboundCallerOf(config, mesh)
  /** Who config routes and by-Host calls speak as over the mesh: the outbound identity, or the gateway. */
  const sharedCaller = mesh !== undefined ? outboundCaller ?? mesh.selfIdentity : undefined
  const routes = new Map<string, RouteBinding>()
  const used = new Set<string>()
  /** Failover chains of this version, by their targets (admin shows which one serves). */
  const failovers = new Map<string, FailoverChain>()
  /** Owns this version's pools to local instances (inbound), released when it closes. */
  const localPoolsUser = {}

  const layerOf = (selector: ServiceSelector): ServiceEndpoints => {
    const { key, endpoints } = services.get(selector, poolSettingsFor(config, selector.service), balancingFor(config, selector.service), resilienceFor(config, selector.service))
    used.add(key)
    return endpoints
  }

  /**
   * The service layer for `service` (as `caller` over the mesh): its endpoint set, or, with
   * `services.<name>.failover`, a chain that serves from the first target with a usable
   * endpoint. A backend's own subset replaces the service's (and its failover).
   */
  const endpointsOf = (service: string, caller: string | undefined, subset?: BackendRef['subset']): Destination => {
    if (subset !== undefined) return layerOf({ ...selectorFor(config, service, caller), subset })
    const selectors = failoverSelectors(config, service, caller)
    if (selectors.length === 1) return layerOf(selectors[0]!)
    const key = selectors.map((sel) => describeSelector(sel)).join(' > ')
    let chain = failovers.get(key)
    if (chain === undefined) {
      chain = new FailoverChain(selectors.map(layerOf), selectors.map(describeSelector), opts.log)
      failovers.set(key, chain)
    }
    return chain
  }

  /** A config route's destination: its one service, or a weighted (or sticky) split over backends. */
  const routeDestination = (route: RouteConfig): DestinationFor => {
    const backends = routeBackends(route.destination)
    const layers = backends.map((b) => endpointsOf(b.service, sharedCaller, b.subset))
    if (layers.length === 1) return fixed(layers[0]!)
    const choose = weightedDestination(layers.map((layer, i) => ({ layer, weight: backends[i]!.weight })), { stickyOn: route.destination.stickyOn })
    return (ex) => choose(ex.req.headers)
  }

  const mirrorOf = (route: RouteConfig): Mirror | undefined => {
    const m = route.mirror
    if (m === undefined) return undefined
    const layer = endpointsOf(m.service, sharedCaller, m.subset)
    const settings = { percent: m.percent, maxConcurrent: m.maxConcurrent, maxBodyBytes: m.maxBodyBytes, timeoutMs: durationMs(m.timeout), bufferLimitBytes: config.limits.mirrorBufferBytes }
    return new Mirror(layer, settings, state.slot(mirrorStatsKind, route.name), state.slot(mirrorBufferKind, MIRROR_BUFFER_KEY), chain)
  }

  const bind = (matcher: CompiledRouteMatcher, destination: DestinationFor, how: { proto?: string, trustForwarded?: boolean, forwardClientCert?: boolean, guard?: RouteBinding['guard'], mirror?: Mirror | undefined, service?: string } = {}): RouteBinding => {
    const route = matcher.config
    const layer = new RouteLayer({
      name: matcher.name,
      rewrite: matcher.rewrite,
      destination,
      retry: compileRetryPolicy(route, config),
      // Looked up on first use, by a live version: the build stays pure.
      budget: () => state.slot(retryBudgetKind, matcher.name),
      forwarding: {
        bodyTimeoutMs: durationMs(route.idleTimeout),
        rewriteHost: route.destination.rewriteHost,
        trustForwarded: how.trustForwarded ?? config.gateway.trustForwardedHeaders,
        proto: how.proto ?? 'http'
      },
      forwardClientCert: how.forwardClientCert ?? false,
      mirror: how.mirror,
      chain
    })
    const backends = matcher.index >= 0 ? routeBackends(route.destination) : undefined
    const service = backends === undefined ? how.service : backends.length === 1 ? backends[0]!.service : undefined
    const binding: RouteBinding = { name: matcher.name, matcher, plugins: route.plugins, layer, guard: how.guard, service }
    routes.set(binding.name, binding)
    return binding
  }
  const fixed = (d: Destination): DestinationFor => () => d

  // Config routes (edge listener, node shared outbound port). With the mesh on they reach
  // the destination's node gateways over mTLS as this gateway's own identity or, on a node
  // with `listeners.outbound.identity`, as that local service.
  for (const matcher of router.ordered) bind(matcher, routeDestination(matcher.config), { mirror: mirrorOf(matcher.config) })

  let byHost: RouteBinding | undefined
  const fixedRoutes = new Map<string, RouteBinding>()
  if (config.gateway.mode === 'node') {
    // Shared outbound port, no config route matched: the Host header names the service. Its
    // endpoint set is made on first use and belongs to this version from then on.
    const named = new Map<string, Destination>()
    byHost = bind(syntheticMatcher(BY_HOST_ROUTE, '(from Host)'), (ex) => {
      let host = hostOf(ex.req.headers.host)
      if (host.endsWith('.mesh')) host = host.slice(0, -5)
      if (!isServiceName(host)) return fastmeshError('NO_ROUTE', [ex.method, ex.path, ex.req.headers.host ?? '-'])
      let d = named.get(host)
      if (d === undefined) named.set(host, d = endpointsOf(host, sharedCaller))
      return d
    })

    for (const local of config.localServices) {
      // Per-upstream listeners: the call carries the local service's identity.
      for (const up of local.upstreams) {
        const name = upstreamRouteName(local.name, up.service)
        fixedRoutes.set(name, bind(syntheticMatcher(name, up.service), fixed(endpointsOf(up.service, mesh !== undefined ? local.name : undefined)), { service: up.service }))
      }
      if (mesh === undefined) continue
      // Inbound: authorize the verified caller, then hand the call to the local instance.
      const name = inboundRouteName(local.name)
      const endpoint = { id: `local:${local.name}`, service: local.name, address: local.address, port: local.port, weight: 1, tags: local.tags, meta: local.meta, health: 'passing' as const, origin: 'local' }
      const target: EndpointTarget = { endpoint, pool: services.pools.acquire(endpoint, poolSettingsFor(config, local.name), localPoolsUser), label: `${local.address}:${local.port}` }
      // The local instance: one fixed endpoint, no balancing or limits of its own.
      const instance: Destination = { service: local.name, current: target, pick: () => target, report: () => {}, admit: () => undefined, release: () => {}, known: async () => {} }
      fixedRoutes.set(name, bind(syntheticMatcher(name, local.name), fixed(instance), {
        // The calling gateway is authenticated: keep the forwarding headers it set.
        trustForwarded: true,
        proto: 'https',
        forwardClientCert: true,
        service: local.name,
        guard: async (ex) => await authorizeInbound(mesh, local.name, ex)
      }))
    }
  }

  return {
    routes,
    byHost,
    outboundCaller,
    fixedRoute: (entry) => fixedRoutes.get(entry.kind === 'upstream' ? upstreamRouteName(entry.caller, entry.service) : inboundRouteName(entry.service)),
    services: used,
    failovers,
    close: () => { services.pools.retainOnly(localPoolsUser, new Set()) }
  }
}

/** The inbound guard: the verified caller may call `service` with this method and path. */
async function authorizeInbound (mesh: MeshContext, service: string, ex: Exchange): Promise<ResponseError | undefined> {
  const peer = ex.entry?.kind === 'inbound' ? ex.entry.peer : undefined
  if (peer === undefined) {
    // Unreachable in strict mode with a verified handshake; kept so a listener bug cannot open the door.
    return mesh.mtls === 'strict' ? fastmeshError('FORBIDDEN', ['an unauthenticated caller', service, 'mTLS is strict']) : undefined
  }
  const q = ex.path.indexOf('?')
  const decision = await mesh.authorizer.authorize({ source: peer.service, sourceUri: peer.uri, destination: service, method: ex.method, path: q === -1 ? ex.path : ex.path.slice(0, q) })
  return decision.allowed ? undefined : fastmeshError('FORBIDDEN', [peer.service, service, decision.reason])
}
