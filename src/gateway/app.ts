// Builds one config version: the assembled routes (route → service → endpoint layers), the
// gateway-wide policy chain, and one immutable Fastify instance in which each route with
// plugins has its own encapsulated context. A version never listens itself: the
// long-lived listeners hand it requests (src/gateway/gateway.ts). Building is pure: nothing
// live changes until the gateway swaps the new version in.
import { AJV_CODE_OPTIONS } from '../config/ajv-options.js'
import { createServer, METHODS, ServerResponse, type IncomingMessage, type Server } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Socket } from 'node:net'
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { FastmeshConfig } from '../config/validate.js'
import { pluginOptionProblems, formatProblems } from '../config/validate.js'
import { catalogue, fastmeshError, type ErrorKey, type FastmeshError, type ResponseError } from '../errors.js'
import { requestIdOf } from './request-id.js'
import { Router, type RouteMatch } from './router.js'
import { normalizeRequestTarget } from './request-target.js'
import { errorHeaders, errorPayload, responseErrorOf, writeError } from './respond.js'
import { Exchange, ExchangeFaults, PolicyChain, type Entry, type GatewayPolicy } from './exchange.js'
import { assemble, type Assembly, type MeshContext, type RouteBinding } from './assembly.js'
import type { ServiceTable } from '../balancer/service-table.js'
import type { StateRegistry } from '../state/registry.js'
import { routeStatsKind, type RouteStats } from '../telemetry/route-stats.js'
import { accessLogPolicy, type RequestRecorder } from '../telemetry/access-log.js'
import { builtinPlugins, type RoutePluginDefinition, type UpstreamHeadersEditor } from '../../plugins/index.js'

export type { Entry } from './exchange.js'
export type { MeshContext } from './assembly.js'
export { upstreamRouteName, inboundRouteName } from './assembly.js'

/** Internal URLs of the routes' Fastify contexts: never seen by plugins, logs or upstreams. */
const ROUTE_URL_PREFIX = '/.fastmesh-route/'
const kEntry = Symbol('fastmesh.entry')
const kExchange = Symbol('fastmesh.exchange')
const kMatch = Symbol('fastmesh.match')

interface GatewayRequest extends IncomingMessage {
  [kEntry]?: Entry
  [kExchange]?: Exchange
  [kMatch]?: RouteMatch
  upgradeHead?: Buffer
}

/** Marks the listener a request came in on (before `handle`). */
export function tagEntry (req: IncomingMessage, entry: Entry): void {
  (req as GatewayRequest)[kEntry] = entry
}

declare module 'fastify' {
  interface FastifyReply {
    upstreamHeaderEditors: UpstreamHeadersEditor[] | null
  }
  interface FastifyInstance {
    /** Makes the catalogue error `key` for a route plugin to throw (status, code and body as the gateway's own). */
    fastmeshError(key: ErrorKey, args?: unknown[]): FastmeshError
  }
}

export interface BuildOptions {
  readonly config: FastmeshConfig
  /** Where relative plugin module paths are resolved from. */
  readonly baseDir: string
  readonly services: ServiceTable
  /** State that outlives versions (route statistics, later balancer and limiter state). */
  readonly state: StateRegistry
  readonly log: Logger
  readonly recorder: RequestRecorder
  /** Where exceptions raised while serving an exchange are counted (outlives versions). */
  readonly faults?: ExchangeFaults
  readonly version: number
  /** Present when mesh.mtls is not `off`. */
  readonly mesh?: MeshContext
}

/** One compiled, ready config version. */
export interface GatewayVersion {
  readonly version: number
  readonly config: FastmeshConfig
  readonly router: Router
  /** Keys of the endpoint sets this version routes to (ServiceTable keys); grows with by-Host destinations. */
  readonly services: ReadonlySet<string>
  /** Names of this version's routes (state registry keys). */
  readonly routeNames: ReadonlySet<string>
  /** Failover chains by `primary > target > ...`, for the admin API. */
  readonly failovers: Assembly['failovers']
  /** The gateway-wide policies, in order. */
  readonly policies: readonly GatewayPolicy[]
  /** Handles a request from a listener. */
  handle(req: IncomingMessage, res: ServerResponse): void
  /** Handles an HTTP upgrade (WebSocket) through the same routes and plugins. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void
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


/** Route statistics as a gateway-wide policy; each route's slot is looked up on its first request. */
function routeStatsPolicy (state: StateRegistry): GatewayPolicy {
  const slots = new Map<string, RouteStats>()
  return {
    name: 'route-stats',
    onEnd (ex) {
      const route = ex.route
      if (route === undefined) return
      let stats = slots.get(route)
      if (stats === undefined) slots.set(route, stats = state.slot(routeStatsKind, route))
      stats.record(ex.status, ex.durationMs, ex.error, ex.attempts)
    }
  }
}

export async function buildGatewayVersion (opts: BuildOptions): Promise<GatewayVersion> {
  const { config } = opts
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

  // Gateway-wide policies, in order: they see every request of every listener.
  const policies: GatewayPolicy[] = [routeStatsPolicy(opts.state), accessLogPolicy(opts.recorder)]
  const faults = opts.faults ?? new ExchangeFaults()
  const faultLog = opts.log.child({ component: 'exchange' })
  const chain = new PolicyChain(policies, (ex, where, err) => {
    faults.record(ex, where, err)
    faultLog.error({ err, requestId: ex.requestId, route: ex.route, where }, 'exception while serving a request; the request ends, the gateway goes on')
  })
  const assembly = assemble({ config, router, services: opts.services, chain, mesh: opts.mesh, state: opts.state, log: opts.log.child({ component: 'failover' }) })
  try {
    return await compile(opts, router, custom, customOptions, policies, chain, assembly)
  } catch (err) {
    // A build that fails gives back what it took (its pools to local instances).
    assembly.close()
    throw err
  }
}

/** The Fastify instance and request entry points of a version over its assembled routes. */
async function compile (opts: BuildOptions, router: Router, custom: ReadonlyMap<string, RoutePluginDefinition>, customOptions: ReadonlyMap<object, Record<string, unknown>>, policies: GatewayPolicy[], chain: PolicyChain, assembly: Assembly): Promise<GatewayVersion> {
  const { config, log } = opts

  let fastifyHandler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
  const internalUrls = new Map<string, string>()
  const app = Fastify<Server, IncomingMessage, ServerResponse>({
    loggerInstance: log.child({ version: opts.version }),
    // The access log is ours; Fastify's per-request child loggers would cost an allocation each.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: (logger) => logger,
    genReqId: (req) => (req as GatewayRequest)[kExchange]?.requestId ?? requestIdOf(req),
    requestIdHeader: false,
    return503OnClosing: false,
    frameworkErrors: (error, request, reply) => {
      replyError(request as unknown as FastifyRequest, reply as unknown as FastifyReply, fastmeshError('BAD_REQUEST', [error.message]))
    },
    serverFactory: (h) => {
      fastifyHandler = h
      // Never listens: the gateway's listeners outlive every version.
      return createServer() as Server
    },
    routerOptions: { maxParamLength: 2048 },
    // Schemas a user's plugin declares compile without ajv's optimiser (src/config/ajv-options.ts):
    // request validation, and the ajv that response serialisation makes for anyOf/oneOf/if.
    ajv: { customOptions: { code: AJV_CODE_OPTIONS } },
    serializerOpts: { ajv: { code: AJV_CODE_OPTIONS } },
    // Our router picked the route already (host, path, method, headers, query, precedence);
    // the request reaches that route's encapsulated context under an internal URL
    // (find-my-way caps constrained handlers at 31 per node, so no `*` + constraint). The
    // onRequest hook below puts the client's URL back before any plugin runs.
    rewriteUrl (raw) {
      const req = raw as GatewayRequest
      const url = internalUrls.get(req[kExchange]?.route ?? '') ?? ROUTE_URL_PREFIX
      const search = req[kMatch]?.search ?? ''
      // The query stays on, so plugins reading request.query see the client's.
      return search === '' ? url : url + search
    }
  })
  app.addHook('onRequest', (request, _reply, done) => {
    const raw = request.raw as GatewayRequest & { originalUrl?: string }
    if (raw.originalUrl !== undefined) raw.url = raw.originalUrl
    done()
  })
  app.decorateReply('upstreamHeaderEditors', null)
  app.decorateReply('onUpstreamHeaders', function (this: FastifyReply, editor: UpstreamHeadersEditor) {
    (this.upstreamHeaderEditors ??= []).push(editor)
  })
  app.decorate('fastmeshError', (key: ErrorKey, args: unknown[] = []) => {
    if (!(key in catalogue)) throw fastmeshError('INTERNAL', [`unknown error key "${String(key)}"`])
    return fastmeshError(key, args)
  })
  // Bodies stream through untouched: no parser reads them.
  // A route without a method condition takes every method Node parses (PURGE, LINK, ...),
  // not only those Fastify knows by default. CONNECT never reaches a version.
  for (const method of METHODS) {
    if (method !== 'CONNECT' && !app.supportedMethods.includes(method)) app.addHttpMethod(method, { hasBody: true })
  }
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_req, _payload, done) => { done(null) })

  /**
   * A gateway error on the Fastify path: through the reply, so the headers plugins set
   * (Retry-After, WWW-Authenticate, CORS) stay and their onSend hooks run.
   */
  const replyError = (request: FastifyRequest, reply: FastifyReply, err: ResponseError): void => {
    const ex = (request.raw as GatewayRequest)[kExchange]
    if (ex !== undefined) ex.error = err.code
    if (reply.sent || reply.raw.headersSent) {
      writeError(reply.raw, err, request.id)
      return
    }
    void reply.code(err.statusCode).headers(errorHeaders(request.id)).send(errorPayload(err, request.id))
  }

  app.setErrorHandler((error: Error & { statusCode?: number, code?: string }, request, reply) => {
    const err = responseErrorOf(error)
    if (err.statusCode >= 500 && err.code === catalogue.INTERNAL.code) {
      request.log.error({ err: error, requestId: request.id, route: (request.raw as GatewayRequest)[kExchange]?.route }, 'request failed in the gateway')
    }
    replyError(request, reply, err)
  })
  app.setNotFoundHandler((request, reply) => {
    // Unreachable: a request reaches Fastify only with a route picked. Kept as a clear answer.
    replyError(request, reply, fastmeshError('NO_ROUTE', [request.method, request.url, request.headers.host ?? '-']))
  })

  /** Route handler on the Fastify path: after the route's plugins, guard then forward. */
  const forwardFromFastify = (binding: RouteBinding) => async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const raw = request.raw as GatewayRequest
    const ex = raw[kExchange]!
    if (binding.guard !== undefined) {
      const refusal = await binding.guard(ex)
      if (refusal !== undefined) { replyError(request, reply, refusal); return }
    }
    reply.hijack()
    const headers = reply.getHeaders()
    binding.layer.forward(ex, raw[kMatch]!, request.headers, reply.upstreamHeaderEditors, Object.keys(headers).length > 0 ? headers : null)
  }

  /**
   * Routes without plugins skip Fastify: nothing would run between the match and the
   * forward, and a Request/Reply pair and the hook chain cost more than the routing itself.
   * They behave the same (tests run both kinds).
   */
  const fastRoutes = new Map<string, (ex: Exchange, match: RouteMatch) => void>()
  const fastPath = (binding: RouteBinding) => {
    const { guard, layer } = binding
    if (guard === undefined) return (ex: Exchange, match: RouteMatch): void => { layer.forward(ex, match, ex.req.headers, null, null) }
    return (ex: Exchange, match: RouteMatch): void => {
      void guard(ex).then((refusal) => {
        if (refusal !== undefined) layer.answer(ex, refusal, null)
        else layer.forward(ex, match, ex.req.headers, null, null)
      }, (err: unknown) => { layer.answer(ex, responseErrorOf(err as Error), null) })
    }
  }

  for (const binding of assembly.routes.values()) {
    // Every route has a Fastify context (upgrades always take it); plugin-less ones also a fast path.
    await app.register(async (scope) => {
      for (const ref of binding.plugins) {
        const def = builtinPlugins.get(ref.name) ?? custom.get(ref.name)!
        // skip-override: the plugin's hooks and decorators land in this route's context,
        // which stays encapsulated from every other route.
        await scope.register(fp(def.plugin), customOptions.get(ref) ?? { ...(ref.options ?? {}) })
      }
      const url = `${ROUTE_URL_PREFIX}${internalUrls.size}`
      internalUrls.set(binding.name, url)
      scope.route({ method: scope.supportedMethods, url, handler: forwardFromFastify(binding) })
    })
    if (binding.plugins.length === 0) fastRoutes.set(binding.name, fastPath(binding))
  }
  await app.ready()
  const toFastify = fastifyHandler!
  const escapedSlashes = config.gateway.escapedSlashes

  /**
   * Normalises the request target, once and for every entry alike, and picks the route.
   * From here on `req.url` is the normalised target: routing, authorization, plugins, the
   * access log and the upstream all see the same path. Answers itself (and returns
   * undefined) when the request goes no further.
   */
  const route = (req: GatewayRequest, ex: Exchange): { binding: RouteBinding, match: RouteMatch } | undefined => {
    const url = req.url ?? '/'
    const target = normalizeRequestTarget(url, escapedSlashes)
    if ('problem' in target) { answer(ex, fastmeshError('BAD_REQUEST', [target.problem])); return undefined }
    if (target.target !== url) req.url = target.target
    const entry = ex.entry
    let binding: RouteBinding | undefined
    let match: RouteMatch | undefined
    if (entry !== undefined && entry.kind !== 'outbound') {
      binding = assembly.fixedRoute(entry)
      if (binding === undefined) {
        answer(ex, entry.kind === 'inbound' ? fastmeshError('UNKNOWN_LOCAL_SERVICE', [entry.service]) : fastmeshError('NO_ROUTE', [ex.method, target.target, req.headers.host ?? '-']))
        return undefined
      }
    } else {
      match = router.match(ex.method, req.headers.host, target.path, target.search, req.headers)
      binding = match !== undefined ? assembly.routes.get(match.route.name) : assembly.byHost
      if (binding === undefined) {
        answer(ex, fastmeshError('NO_ROUTE', [ex.method, target.target, req.headers.host ?? '-']))
        return undefined
      }
    }
    match ??= { route: binding.matcher, params: undefined, path: target.path, search: target.search }
    ex.route = binding.name
    req[kMatch] = match
    const refusal = chain.request(ex)
    if (refusal !== undefined) { answer(ex, refusal); return undefined }
    return { binding, match }
  }

  /** The gateway answers before any route's plugins ran. */
  const answer = (ex: Exchange, err: ResponseError): void => {
    writeError(ex.res, err, ex.requestId)
    chain.end(ex, err.statusCode, err.code)
  }

  /** An exception on the way in (routing, a policy, the fast path): this exchange ends with a JSON 500, counted and logged. */
  const internalFault = (ex: Exchange, where: string, err: unknown): void => {
    chain.fault(ex, where, err)
    if (ex.ended) { ex.res.destroy(); return }
    try {
      answer(ex, fastmeshError('INTERNAL', [`${where} failed`]))
    } catch {
      ex.res.destroy()
    }
  }

  let inFlight = 0
  /** On the response's close: the version's count, and the end of an exchange no layer ended (a plugin replied, the client left). */
  function onResponseClose (this: ServerResponse): void {
    inFlight--
    // Read through the request: a property added to every ServerResponse would change the
    // shape Node's own hot paths (writeHead, write, end) see.
    const ex = (this.req as GatewayRequest)[kExchange]
    if (ex === undefined || ex.ended) return
    // Closed before the response was complete: the client left (499), whatever was sent.
    if (this.writableFinished) chain.end(ex, this.statusCode, ex.error)
    else chain.end(ex, 499, 'client closed the connection')
  }
  const begin = (req: GatewayRequest, res: ServerResponse): Exchange => {
    const ex = new Exchange(req, res, requestIdOf(req), process.hrtime.bigint(), req[kEntry])
    req[kExchange] = ex
    inFlight++
    res.once('close', onResponseClose)
    return ex
  }

  return {
    version: opts.version,
    config,
    router,
    services: assembly.services,
    routeNames: new Set(assembly.routes.keys()),
    failovers: assembly.failovers,
    policies,
    get inFlight () { return inFlight },
    handle (req, res) {
      const r = req as GatewayRequest
      const ex = begin(r, res)
      try {
        const picked = route(r, ex)
        if (picked === undefined) return
        const fast = r.headers.upgrade === undefined ? fastRoutes.get(picked.binding.name) : undefined
        if (fast !== undefined) fast(ex, picked.match)
        else toFastify(req, res)
      } catch (err) {
        internalFault(ex, 'request', err)
      }
    },
    upgrade (req, socket, head) {
      // As @fastify/websocket does: a response bound to the socket lets the upgrade take
      // the route's plugin hooks; the endpoint layer then takes the socket over.
      const r = req as GatewayRequest
      r.upgradeHead = head
      const res = new ServerResponse(req)
      res.assignSocket(socket as Socket)
      res.once('finish', () => { if (res.statusCode !== 101) socket.destroy() })
      socket.once('close', () => { if (!res.writableFinished) res.emit('close') })
      const ex = begin(r, res)
      try {
        if (route(r, ex) === undefined) return
        toFastify(req, res)
      } catch (err) {
        internalFault(ex, 'upgrade', err)
      }
    },
    async close () {
      await app.close()
      assembly.close()
    }
  }
}
