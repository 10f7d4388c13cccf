// Builds one config version: an immutable Fastify instance, each route in its own
// encapsulated context with its plugins in config order, never listening itself:
// the long-lived listeners hand it requests (src/gateway/gateway.ts).
import { createServer, METHODS, ServerResponse, type IncomingMessage, type Server } from 'node:http'
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { FastmeshConfig } from '../config/validate.js'
import { pluginOptionProblems, formatProblems } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { fastmeshError, isFastmeshError, type ResponseError } from '../errors.js'
import { requestIdOf } from './request-id.js'
import { Router, hostOf, type CompiledRouteMatcher, type RouteMatch } from './router.js'
import { normalizeRequestTarget, type RequestTarget } from './request-target.js'
import { writeError } from './respond.js'
import { forward, type ForwardContext } from '../upstream/proxy.js'
import type { EndpointTarget } from '../upstream/endpoint-pool.js'
import type { MeshTls } from '../identity/mesh-tls.js'
import type { Authorizer } from '../identity/authorization.js'
import type { RouteConfig } from '../config/schema.js'
import type { ServiceTable } from '../balancer/service-table.js'
import { poolSettingsFor, selectorFor } from '../balancer/service-table.js'
import type { RequestRecorder } from '../telemetry/access-log.js'
import { elapsedMs } from '../telemetry/access-log.js'
import { builtinPlugins, type RoutePluginDefinition, type UpstreamHeadersEditor } from '../../plugins/index.js'

/** Internal URLs of the routes' contexts: never seen by clients, plugins or upstreams. */
const ROUTE_URL_PREFIX = '/.fastmesh-route/'
const NO_ROUTE_URL = '/.fastmesh-no-route'
const kMatch = Symbol('fastmesh.match')
const kStart = Symbol('fastmesh.start')
const kEntry = Symbol('fastmesh.entry')
/** The route `handle` or `upgrade` picked, so Fastify's rewriteUrl does not match again. */
const kPicked = Symbol('fastmesh.picked')

/**
 * Which listener a request came in on, set by the listener before the version sees it.
 * No entry: the edge listener (config routes only).
 */
export type Entry =
  /** Node mode, shared outbound port: config routes, then the destination named by Host. */
  | { readonly kind: 'outbound' }
  /** Node mode, a per-upstream listener: always `service`, as `caller`. */
  | { readonly kind: 'upstream', readonly caller: string, readonly service: string }
  /** Node mode, the inbound listener: for local `service`; `peer` is the verified caller (mTLS). */
  | { readonly kind: 'inbound', readonly service: string, readonly peer: { readonly service: string, readonly uri: string } | undefined }

interface GatewayRequest extends IncomingMessage {
  [kMatch]?: RouteMatch
  [kStart]?: bigint
  [kEntry]?: Entry
  [kPicked]?: { readonly name: string | undefined }
  upgradeHead?: Buffer
}

/** Marks the listener a request came in on (before `handle`). */
export function tagEntry (req: IncomingMessage, entry: Entry): void {
  (req as GatewayRequest)[kEntry] = entry
}

export const upstreamRouteName = (caller: string, service: string): string => `upstream:${caller}:${service}`
export const inboundRouteName = (service: string): string => `inbound:${service}`
const BY_HOST_ROUTE = 'outbound:by-host'
const SERVICE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/
/** How long a request to a destination discovery has not answered for yet waits for it. */
const FIRST_DISCOVERY_WAIT_MS = 5_000

/** The mesh parts a version needs when mTLS is on. */
export interface MeshContext {
  readonly mtls: 'strict' | 'permissive'
  readonly tls: MeshTls
  readonly authorizer: Authorizer
  /** Identity of calls from the edge and from the node's shared outbound port. */
  readonly selfIdentity: string
}

/** A route the gateway makes itself (per-upstream, inbound, by-host), with default timeouts. */
function syntheticRoute (name: string, service: string): { matcher: CompiledRouteMatcher, config: RouteConfig } {
  const config: RouteConfig = { name, destination: { service }, timeout: '15s', idleTimeout: '60s', plugins: [] }
  return { config, matcher: { name, config, index: -1, precedence: [], rewrite: (m) => m.path } }
}

function syntheticMatch (matcher: CompiledRouteMatcher, target: RequestTarget): RouteMatch {
  return { route: matcher, params: undefined, path: target.path, search: target.search }
}

declare module 'fastify' {
  interface FastifyReply {
    upstreamHeaderEditors: UpstreamHeadersEditor[] | null
  }
}

export interface BuildOptions {
  readonly config: FastmeshConfig
  /** Where relative plugin module paths are resolved from. */
  readonly baseDir: string
  readonly services: ServiceTable
  readonly log: Logger
  readonly recorder: RequestRecorder
  readonly version: number
  /** Present when mesh.mtls is not `off`. */
  readonly mesh?: MeshContext
}

/** One compiled, ready config version. */
export interface GatewayVersion {
  readonly version: number
  readonly config: FastmeshConfig
  readonly router: Router
  /** Keys of the endpoint sets this version routes to (ServiceTable keys). */
  readonly services: ReadonlySet<string>
  /** Handles a request from a listener (`proto` is what the client spoke). */
  handle(req: IncomingMessage, res: ServerResponse): void
  /** Handles an HTTP upgrade (WebSocket) through the same routes and plugins. */
  upgrade(req: IncomingMessage, socket: import('node:stream').Duplex, head: Buffer): void
  /** Requests started on this version and not finished. */
  readonly inFlight: number
  close(): Promise<void>
}

async function loadCustomPlugin (name: string, module: string, baseDir: string): Promise<RoutePluginDefinition> {
  const spec = module.startsWith('.') || isAbsolute(module) ? pathToFileURL(resolve(baseDir, module)).href : module
  let mod: Record<string, unknown>
  try {
    mod = await import(spec) as Record<string, unknown>
  } catch (cause) {
    throw fastmeshError('PLUGIN_LOAD', [name, module, (cause as Error).message], cause)
  }
  const plugin = mod.default ?? mod.plugin
  if (typeof plugin !== 'function') throw fastmeshError('PLUGIN_LOAD', [name, module, 'the module has no default export that is a Fastify plugin function'])
  return {
    name,
    description: typeof mod.description === 'string' ? mod.description : `custom plugin from ${module}`,
    optionsSchema: (mod.optionsSchema ?? { type: 'object' }) as RoutePluginDefinition['optionsSchema'],
    plugin: plugin as RoutePluginDefinition['plugin']
  }
}

const timeoutCache = new WeakMap<RouteConfig, { headersTimeoutMs: number, bodyTimeoutMs: number }>()
function timeouts (route: RouteConfig): { headersTimeoutMs: number, bodyTimeoutMs: number } {
  let t = timeoutCache.get(route)
  if (t === undefined) {
    t = { headersTimeoutMs: durationMs(route.timeout), bodyTimeoutMs: durationMs(route.idleTimeout) }
    timeoutCache.set(route, t)
  }
  return t
}

export async function buildGatewayVersion (opts: BuildOptions): Promise<GatewayVersion> {
  // Owns this version's pools to local instances (inbound), released when it closes.
  const localPoolsUser = {}
  const { config, services, log, recorder } = opts
  const router = new Router(config.routes)

  // Custom plugins are imported, and their options checked, before anything is built.
  const custom = new Map<string, RoutePluginDefinition>()
  for (const [name, c] of Object.entries(config.customPlugins)) custom.set(name, await loadCustomPlugin(name, c.module, opts.baseDir))
  // Checked on a copy (the config is frozen), which the plugin then gets: schema defaults land in it.
  const customOptions = new Map<object, Record<string, unknown>>()
  const problems = config.routes.flatMap((route, i) => route.plugins.flatMap((ref, j) => {
    const def = custom.get(ref.name)
    if (def === undefined) return []
    const options = structuredClone(ref.options ?? {})
    customOptions.set(ref, options)
    return pluginOptionProblems(ref.name, def.optionsSchema, options, `$.routes[${i}].plugins[${j}].options`)
  }))
  if (problems.length > 0) throw fastmeshError('CONFIG_INVALID', ['plugin options', formatProblems(problems)])

  const mesh = opts.mesh
  const fixedRoutes = new Map<string, CompiledRouteMatcher>()
  const byHost = syntheticRoute(BY_HOST_ROUTE, '(from Host)')
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
  const internalUrls = new Map<string, string>()
  const escapedSlashes = config.gateway.escapedSlashes
  /**
   * Normalises the request target, once and for every entry alike, and picks the route.
   * From here on `req.url` is the normalised target: routing, authorization, plugins, the
   * access log and the upstream all see the same path. A target that cannot be normalised
   * gives its problem (answered 400).
   */
  const pickRoute = (req: GatewayRequest): string | undefined | { problem: string } => {
    const url = req.url ?? '/'
    const target = normalizeRequestTarget(url, escapedSlashes)
    if ('problem' in target) return target
    if (target.target !== url) req.url = target.target
    const entry = req[kEntry]
    if (entry !== undefined && entry.kind !== 'outbound') {
      const synthetic = fixedRoutes.get(entry.kind === 'upstream' ? upstreamRouteName(entry.caller, entry.service) : inboundRouteName(entry.service))
      req[kMatch] = synthetic === undefined ? undefined : syntheticMatch(synthetic, target)
      return synthetic?.name
    }
    const m = router.match(req.method ?? 'GET', req.headers.host, target.path, target.search, req.headers)
    if (m === undefined && entry?.kind === 'outbound') {
      req[kMatch] = syntheticMatch(byHost.matcher, target)
      return BY_HOST_ROUTE
    }
    req[kMatch] = m
    return m?.route.name
  }
  const app = Fastify<Server, IncomingMessage, ServerResponse>({
    loggerInstance: log.child({ version: opts.version }),
    // The access log is ours; Fastify's per-request child loggers would cost an allocation each.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: (logger) => logger,
    genReqId: requestIdOf,
    requestIdHeader: false,
    return503OnClosing: false,
    // URLs find-my-way refuses itself (bad percent-encoding) get our error body, not Fastify's.
    frameworkErrors: (error, request, reply) => {
      respondError(request as unknown as FastifyRequest, reply as unknown as FastifyReply, fastmeshError('BAD_REQUEST', [error.message]))
    },
    serverFactory: (h) => {
      handler = h
      // Never listens: the gateway's listeners outlive every version.
      return createServer() as Server
    },
    routerOptions: { maxParamLength: 2048 },
    // Our router picks the route (host, path, method, headers, query, precedence); the
    // request is then handed to that route's encapsulated context under an internal URL
    // (find-my-way caps constrained handlers at 31 per node, so no `*` + constraint).
    rewriteUrl (raw) {
      const req = raw as GatewayRequest
      // `handle` and `upgrade` picked the route (and answered a bad target) already.
      const name = req[kPicked]?.name
      const url = name !== undefined ? internalUrls.get(name) : undefined
      if (url === undefined) return NO_ROUTE_URL
      // The query stays on, so plugins reading request.query see the client's.
      const search = req[kMatch]?.search ?? ''
      return search === '' ? url : url + search
    }
  })
  // Everyone after routing (plugins, handlers, logs) sees the client's URL again.
  app.addHook('onRequest', (request, _reply, done) => {
    const raw = request.raw as GatewayRequest & { originalUrl?: string }
    if (raw.originalUrl !== undefined) raw.url = raw.originalUrl
    done()
  })

  app.decorateReply('upstreamHeaderEditors', null)
  app.decorateReply('onUpstreamHeaders', function (this: FastifyReply, editor: UpstreamHeadersEditor) {
    (this.upstreamHeaderEditors ??= []).push(editor)
  })
  // Bodies stream through untouched: no parser reads them.
  // A route without a method condition takes every method Node parses (PURGE, LINK, ...),
  // not only those Fastify knows by default. CONNECT never reaches the request handler.
  for (const method of METHODS) {
    if (method !== 'CONNECT' && !app.supportedMethods.includes(method)) app.addHttpMethod(method, { hasBody: true })
  }
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_req, _payload, done) => { done(null) })

  /** Writes a gateway error and its access-log line (Fastify path and fast path alike). */
  const answerError = (raw: GatewayRequest, res: ServerResponse, requestId: string, err: ResponseError, route?: string, service?: string): void => {
    writeError(res, err, requestId)
    recorder.record({
      requestId,
      method: raw.method ?? '',
      path: raw.url ?? '',
      route,
      destination: service,
      endpoint: undefined,
      status: err.statusCode,
      durationMs: elapsedMs(raw[kStart] ?? process.hrtime.bigint()),
      error: err.code
    })
  }
  const respondError = (request: FastifyRequest, reply: FastifyReply, err: ResponseError, route?: string, service?: string): void => {
    reply.hijack()
    answerError(request.raw as GatewayRequest, reply.raw, request.id, err, route, service)
  }

  app.setNotFoundHandler((request, reply) => {
    const raw = request.raw as GatewayRequest
    const entry = raw[kEntry]
    const err = entry?.kind === 'inbound'
      ? fastmeshError('UNKNOWN_LOCAL_SERVICE', [entry.service])
      : fastmeshError('NO_ROUTE', [raw.method, raw.url, raw.headers.host ?? '-'])
    respondError(request, reply, err)
  })

  app.setErrorHandler((error: Error & { statusCode?: number, code?: string }, request, reply) => {
    const raw = request.raw as GatewayRequest
    const m = raw[kMatch]
    // Plugin errors with a client status (401, 429, ...) keep status and code; anything else is a 500 of ours.
    const status = error.statusCode
    const err: ResponseError = isFastmeshError(error)
      ? error
      : status !== undefined && status >= 400 && status < 500
        ? { statusCode: status, code: error.code ?? 'FASTMESH_ERR_BAD_REQUEST', message: error.message }
        : fastmeshError('INTERNAL', [error.message], error)
    if (err.statusCode >= 500) request.log.error({ err: error, requestId: request.id, route: m?.route.name }, 'request failed in the gateway')
    respondError(request, reply, err, m?.route.name, m?.route.config.destination.service)
  })

  const trustForwarded = config.gateway.trustForwardedHeaders
  const referenced = new Set<string>()

  /** Sends the matched request to a target, or answers 503 when there is none. */
  const proxyTo = (request: FastifyRequest, reply: FastifyReply, matcher: CompiledRouteMatcher, service: string, target: EndpointTarget | undefined, extra?: Partial<ForwardContext>): void => {
    const route = matcher.config
    if (target === undefined) {
      respondError(request, reply, fastmeshError('NO_HEALTHY_ENDPOINT', [service]), route.name, service)
      return
    }
    const raw = request.raw as GatewayRequest
    reply.hijack()
    const replyHeaders = reply.getHeaders()
    forward(raw, reply.raw, request.headers, target, forwardContext(raw, request.id, matcher, service, reply.upstreamHeaderEditors, Object.keys(replyHeaders).length > 0 ? replyHeaders : null, extra))
  }

  const forwardContext = (raw: GatewayRequest, requestId: string, matcher: CompiledRouteMatcher, service: string, editors: UpstreamHeadersEditor[] | null, replyHeaders: Record<string, unknown> | null, extra?: Partial<ForwardContext>): ForwardContext => {
    const route = matcher.config
    const match = raw[kMatch]!
    const { headersTimeoutMs, bodyTimeoutMs } = timeouts(route)
    const ctx: ForwardContext = {
      requestId,
      route: route.name,
      service,
      path: matcher.rewrite(match) + match.search,
      headersTimeoutMs,
      bodyTimeoutMs,
      rewriteHost: route.destination.rewriteHost,
      trustForwarded,
      proto: 'http',
      start: raw[kStart] ?? process.hrtime.bigint(),
      recorder,
      editors,
      replyHeaders
    }
    return extra === undefined ? ctx : { ...ctx, ...extra }
  }

  /**
   * Routes without plugins skip Fastify: nothing would run between the match and the
   * forward, and a Request/Reply pair, the hook chain and a second lookup cost more than
   * the routing itself. They behave the same (tests run both kinds).
   */
  const fastRoutes = new Map<string, (req: GatewayRequest, res: ServerResponse) => void>()
  const fastForward = (matcher: CompiledRouteMatcher, service: string, endpoints: { pick(): EndpointTarget | undefined }) => (req: GatewayRequest, res: ServerResponse): void => {
    const requestId = requestIdOf(req)
    const target = endpoints.pick()
    if (target === undefined) {
      answerError(req, res, requestId, fastmeshError('NO_HEALTHY_ENDPOINT', [service]), matcher.name, service)
      return
    }
    forward(req, res, req.headers, target, forwardContext(req, requestId, matcher, service, null, null))
  }

  /** One route: its own encapsulated context, its plugins in order, then the handler. */
  const registerRoute = async (name: string, plugins: RouteConfig['plugins'], handler: (request: FastifyRequest, reply: FastifyReply) => void | Promise<void>): Promise<void> => {
    await app.register(async (scope) => {
      for (const ref of plugins) {
        const def = builtinPlugins.get(ref.name) ?? custom.get(ref.name)!
        // skip-override: the plugin's hooks and decorators land in this route's context,
        // which stays encapsulated from every other route.
        await scope.register(fp(def.plugin), customOptions.get(ref) ?? { ...(ref.options ?? {}) })
      }
      const url = `${ROUTE_URL_PREFIX}${internalUrls.size}`
      internalUrls.set(name, url)
      scope.route({ method: scope.supportedMethods, url, handler })
    })
  }

  // Config routes (edge listener, node shared outbound port). With the mesh on they reach
  // the destination's node gateways over mTLS as this gateway's own identity.
  for (const matcher of router.ordered) {
    const route = matcher.config
    const service = route.destination.service
    const { key, endpoints } = services.get(selectorFor(config, service, mesh?.selfIdentity), poolSettingsFor(config, service))
    referenced.add(key)
    await registerRoute(route.name, route.plugins, (request, reply) => { proxyTo(request, reply, matcher, service, endpoints.pick()) })
    if (route.plugins.length === 0) fastRoutes.set(route.name, fastForward(matcher, service, endpoints))
  }

  if (config.gateway.mode === 'node') {
    // Shared outbound port, no config route matched: the Host header names the service.
    const byHostServices = new Map<string, ReturnType<ServiceTable['get']>['endpoints']>()
    await registerRoute(BY_HOST_ROUTE, [], async (request, reply) => {
      let host = hostOf(request.headers.host)
      if (host.endsWith('.mesh')) host = host.slice(0, -5)
      if (!SERVICE_NAME.test(host)) {
        respondError(request, reply, fastmeshError('NO_ROUTE', [request.method, request.url, request.headers.host ?? '-']))
        return
      }
      let endpoints = byHostServices.get(host)
      if (endpoints === undefined) {
        endpoints = services.get(selectorFor(config, host, mesh?.selfIdentity), poolSettingsFor(config, host)).endpoints
        byHostServices.set(host, endpoints)
      }
      // The first call to a service starts its discovery watch: wait for its first answer.
      if (endpoints.current === undefined) await endpoints.known(FIRST_DISCOVERY_WAIT_MS)
      proxyTo(request, reply, byHost.matcher, host, endpoints.pick())
    })

    for (const local of config.localServices) {
      // Per-upstream listeners: the call carries the local service's identity.
      for (const up of local.upstreams) {
        const synthetic = syntheticRoute(upstreamRouteName(local.name, up.service), up.service)
        fixedRoutes.set(synthetic.matcher.name, synthetic.matcher)
        const { key, endpoints } = services.get(selectorFor(config, up.service, mesh !== undefined ? local.name : undefined), poolSettingsFor(config, up.service))
        referenced.add(key)
        await registerRoute(synthetic.matcher.name, [], (request, reply) => { proxyTo(request, reply, synthetic.matcher, up.service, endpoints.pick()) })
        fastRoutes.set(synthetic.matcher.name, fastForward(synthetic.matcher, up.service, endpoints))
      }
      if (mesh === undefined) continue
      // Inbound: authorize the verified caller, then hand the call to the local instance.
      const synthetic = syntheticRoute(inboundRouteName(local.name), local.name)
      fixedRoutes.set(synthetic.matcher.name, synthetic.matcher)
      const endpoint = { id: `local:${local.name}`, service: local.name, address: local.address, port: local.port, weight: 1, tags: local.tags, meta: local.meta, health: 'passing' as const, origin: 'local' }
      const target: EndpointTarget = { endpoint, pool: services.pools.acquire(endpoint, poolSettingsFor(config, local.name), localPoolsUser), label: `${local.address}:${local.port}` }
      await registerRoute(synthetic.matcher.name, [], async (request, reply) => {
        const entry = (request.raw as GatewayRequest)[kEntry]
        const peer = entry?.kind === 'inbound' ? entry.peer : undefined
        if (peer !== undefined) {
          const decision = await mesh.authorizer.authorize({ source: peer.service, sourceUri: peer.uri, destination: local.name, method: request.method, path: (request.raw as GatewayRequest)[kMatch]?.path ?? '/' })
          if (!decision.allowed) {
            respondError(request, reply, fastmeshError('FORBIDDEN', [peer.service, local.name, decision.reason]), synthetic.matcher.name, local.name)
            return
          }
        } else if (mesh.mtls === 'strict') {
          // Unreachable with a verified handshake; kept so a listener bug cannot open the door.
          respondError(request, reply, fastmeshError('FORBIDDEN', ['an unauthenticated caller', local.name, 'mTLS is strict']), synthetic.matcher.name, local.name)
          return
        }
        proxyTo(request, reply, synthetic.matcher, local.name, target, {
          // The calling gateway is authenticated: keep the forwarding headers it set.
          trustForwarded: true,
          proto: 'https',
          clientCert: peer?.uri
        })
      })
    }
  }

  await app.ready()
  const route = handler!
  let inFlight = 0
  const finished = (): void => { inFlight-- }

  return {
    version: opts.version,
    config,
    router,
    services: referenced,
    get inFlight () { return inFlight },
    handle (req, res) {
      const r = req as GatewayRequest
      r[kStart] = process.hrtime.bigint()
      inFlight++
      res.once('close', finished)
      const name = pickRoute(r)
      if (typeof name === 'object') {
        answerError(r, res, requestIdOf(r), fastmeshError('BAD_REQUEST', [name.problem]))
        return
      }
      const fast = name !== undefined ? fastRoutes.get(name) : undefined
      if (fast !== undefined && r.headers.upgrade === undefined) {
        fast(r, res)
        return
      }
      r[kPicked] = { name }
      route(req, res)
    },
    upgrade (req, socket, head) {
      // As @fastify/websocket does: a response bound to the socket lets the upgrade take
      // the normal route lookup and plugin hooks; the proxy then takes the socket over.
      const r = req as GatewayRequest
      r[kStart] = process.hrtime.bigint()
      r.upgradeHead = head
      const res = new ServerResponse(req)
      res.assignSocket(socket as import('node:net').Socket)
      res.once('finish', () => { if (res.statusCode !== 101) socket.destroy() })
      inFlight++
      res.once('close', finished)
      socket.once('close', () => { if (!res.writableFinished) res.emit('close') })
      const name = pickRoute(r)
      if (typeof name === 'object') {
        answerError(r, res, requestIdOf(r), fastmeshError('BAD_REQUEST', [name.problem]))
        return
      }
      r[kPicked] = { name }
      route(req, res)
    },
    async close () {
      await app.close()
      services.pools.retainOnly(localPoolsUser, new Set())
    }
  }
}

