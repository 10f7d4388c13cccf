// Version, Fastify host: the one Fastify instance of a config version, which never listens.
// Each route with plugins gets its own encapsulated context, reached under an internal URL
// named after the route; the host restores the client's URL before any plugin runs, gives
// plugins the reply decorations they use, and turns their errors into the gateway's answers
// (status and headers kept). After the plugins, the route's guard runs and the route layer
// forwards.
import { AJV_CODE_OPTIONS } from '../config/ajv-options.js'
import { createServer, METHODS, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { catalogue, fastmeshError, type ErrorKey, type FastmeshError, type ResponseError } from '../errors.js'
import { bodyUnread, errorHeaders, errorPayload, responseErrorOf, writeError } from './respond.js'
import { requestIdOf } from './request-id.js'
import { exchangeOf, matchOf, type GatewayRequest } from './gateway-request.js'
import type { RouteBinding } from './assembly.js'
import type { RoutePluginContext, RoutePluginDefinition, UpstreamFaultInjector, UpstreamHeadersEditor } from '../../plugins/index.js'
import { stateKind, type StateKind, type StateRegistry } from '../state/registry.js'

/** Internal URLs of the routes' Fastify contexts: never seen by plugins, logs or upstreams. */
const ROUTE_URL_PREFIX = '/.fastmesh-route/'

/**
 * A route's internal URL, from its name (hex: route names may hold `:` and `/`, which a URL
 * path would read). The final slash keeps one route's URL from being the start of another's.
 */
function internalUrl (routeName: string): string {
  return ROUTE_URL_PREFIX + Buffer.from(routeName).toString('hex') + '/'
}

/**
 * The one context of every route without plugins (it only carries their WebSocket upgrades:
 * their plain requests take the fast path in src/gateway/entry.ts). Not hex, so no route's
 * own URL. A context per route costs ~50 KB (a find-my-way handler per HTTP method, hooks, a
 * schema controller): 50 MB at 1,000 routes, for nothing.
 */
const PLAIN_ROUTES_URL = ROUTE_URL_PREFIX + 'plain/'

declare module 'fastify' {
  interface FastifyReply {
    upstreamHeaderEditors: UpstreamHeadersEditor[] | null
    upstreamFault: UpstreamFaultInjector | null
    requestBodyLimit: number
  }
  interface FastifyInstance {
    /** Makes the catalogue error `key` for a route plugin to throw (status, code and body as the gateway's own). */
    fastmeshError(key: ErrorKey, args?: unknown[]): FastmeshError
  }
}

export interface FastifyHostOptions {
  readonly log: Logger
  readonly version: number
  /** Where plugins keep state across versions (`fastify.fastmesh.state`). */
  readonly state: StateRegistry
  readonly trustForwardedHeaders: boolean
  /** Where `fastify.fastmesh.countOutcome` counts (the gateway's metrics); default: nowhere. */
  readonly countOutcome?: PluginOutcomeCounter
  /** Told of an exception a plugin raised where no answer can carry it any more (an onResponse hook). */
  readonly onFault: (request: IncomingMessage, where: string, err: unknown) => void
  readonly routes: Iterable<RouteBinding>
  /** A route's plugins, each with its definition and checked options, in config order. */
  readonly pluginsOf: (binding: RouteBinding) => ReadonlyArray<{ readonly def: RoutePluginDefinition, readonly options: Record<string, unknown> }>
}

export interface FastifyHost {
  /** Runs a request whose exchange and match are tagged through its route's context. */
  dispatch(req: IncomingMessage, res: ServerResponse): void
  close(): Promise<void>
}

/** A plugin's state under one name: filled on first use, disposed with the route's name. */
interface PluginStateBox { value: unknown, filled: boolean, dispose: ((value: never) => void) | undefined }

/** One state kind per name plugins use, keyed by route (released with the route's name). */
const pluginStateKinds = new Map<string, StateKind<PluginStateBox>>()
export function pluginStateKind (name: string): StateKind<PluginStateBox> {
  let kind = pluginStateKinds.get(name)
  if (kind === undefined) {
    kind = stateKind<PluginStateBox>(`plugin:${name}`, 'route', () => ({ value: undefined, filled: false, dispose: undefined }), (box) => { if (box.filled) box.dispose?.(box.value as never) })
    pluginStateKinds.set(name, kind)
  }
  return kind
}

/** Counts a plugin's outcome on a route (GatewayMetrics.pluginOutcome). */
export type PluginOutcomeCounter = (route: string, plugin: string, outcome: string) => void

/** What a route's plugins see as `fastify.fastmesh`. */
function routePluginContext (route: string, registry: StateRegistry, trustForwardedHeaders: boolean, countOutcome: PluginOutcomeCounter): RoutePluginContext {
  return {
    route,
    trustForwardedHeaders,
    countOutcome (plugin, outcome) { countOutcome(route, plugin, outcome) },
    state<T> (name: string, create: () => T, dispose?: (value: T) => void): T {
      const box = registry.slot(pluginStateKind(name), route)
      if (!box.filled) {
        box.value = create()
        box.filled = true
        box.dispose = dispose as PluginStateBox['dispose']
      }
      return box.value as T
    }
  }
}

/**
 * A plugin as Fastify should register it in a route's context: with skip-override, so its
 * hooks apply to the route. One that `fastify-plugin` wrapped already keeps its own metadata
 * (name, dependencies, decorators), so Fastify's checks of them run; a bare function is
 * wrapped under the name the config gives it.
 */
function asRoutePlugin (def: RoutePluginDefinition): RoutePluginDefinition['plugin'] {
  const plugin = def.plugin as RoutePluginDefinition['plugin'] & { [key: symbol]: unknown }
  if (plugin[Symbol.for('skip-override')] === true) return plugin
  return fp(plugin, { name: def.name })
}

/**
 * Fastify's request log lines are off (the access log is ours), but an error Fastify reports
 * at the end of a request — a plugin's onResponse hook that threw, after the answer went out
 * — is a fault of that exchange: logged with its request id and counted.
 */
class FaultLogController extends LogController {
  constructor (private readonly onFault: FastifyHostOptions['onFault']) {
    super({ disableRequestLogging: true })
  }

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest): void {
    if (error != null) this.onFault(request.raw, 'after the answer (onResponse)', error)
  }
}

export async function buildFastifyHost (opts: FastifyHostOptions): Promise<FastifyHost> {
  let fastifyHandler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
  /** The handlers of routes without plugins, by route name: they share one context (PLAIN_ROUTES_URL). */
  const plainRoutes = new Map<string, (request: FastifyRequest, reply: FastifyReply) => Promise<void>>()
  const app = Fastify<Server, IncomingMessage, ServerResponse>({
    loggerInstance: opts.log.child({ version: opts.version }),
    // The access log is ours; Fastify's per-request child loggers would cost an allocation each.
    logController: new FaultLogController(opts.onFault),
    childLoggerFactory: (logger) => logger,
    genReqId: (req) => exchangeOf(req)?.requestId ?? requestIdOf(req),
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
    // the request reaches that route's encapsulated context under its internal URL
    // (find-my-way caps constrained handlers at 31 per node, so no `*` + constraint). The
    // onRequest hook below puts the client's URL back before any plugin runs.
    rewriteUrl (raw) {
      const route = exchangeOf(raw)?.route
      const url = route === undefined ? ROUTE_URL_PREFIX : plainRoutes.has(route) ? PLAIN_ROUTES_URL : internalUrl(route)
      const search = matchOf(raw)?.search ?? ''
      // The query stays on, so plugins reading request.query see the client's.
      return search === '' ? url : url + search
    }
  })
  // Plugins see who calls on which route as `request.fastmesh`: the exchange itself, read-only.
  app.decorateRequest('fastmesh', null as never)
  app.addHook('onRequest', (request, _reply, done) => {
    const raw = request.raw as GatewayRequest & { originalUrl?: string }
    if (raw.originalUrl !== undefined) raw.url = raw.originalUrl
    ;(request as { fastmesh: unknown }).fastmesh = exchangeOf(raw)
    done()
  })
  app.decorateReply('upstreamHeaderEditors', null)
  app.decorateReply('upstreamFault', null)
  app.decorateReply('injectUpstreamFault', function (this: FastifyReply, injector: UpstreamFaultInjector) {
    this.upstreamFault = injector
  })
  // -1: no limit (a number, so the reply's shape never changes).
  app.decorateReply('requestBodyLimit', -1)
  app.decorateReply('limitRequestBody', function (this: FastifyReply, maxBytes: number) {
    if (this.requestBodyLimit < 0 || maxBytes < this.requestBodyLimit) this.requestBodyLimit = maxBytes
  })
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
    const ex = exchangeOf(request.raw)
    if (ex !== undefined) ex.error = err.code
    if (reply.sent || reply.raw.headersSent) {
      writeError(reply.raw, err, request.id)
      return
    }
    // As every gateway answer: given before the body was all read, the connection closes (a
    // refused upload is not read to its end; see writeError).
    if (bodyUnread(request.raw)) reply.raw.shouldKeepAlive = false
    void reply.code(err.statusCode).headers(errorHeaders(request.id)).send(errorPayload(err, request.id))
  }

  app.setErrorHandler((error: Error & { statusCode?: number, code?: string }, request, reply) => {
    const err = responseErrorOf(error)
    if (err.statusCode >= 500 && err.code === catalogue.INTERNAL.code) {
      request.log.error({ err: error, requestId: request.id, route: exchangeOf(request.raw)?.route }, 'request failed in the gateway')
    }
    replyError(request, reply, err)
  })
  app.setNotFoundHandler((request, reply) => {
    // Unreachable: a request reaches Fastify only with a route picked. Kept as a clear answer.
    replyError(request, reply, fastmeshError('NO_ROUTE', [request.method, request.url, request.headers.host ?? '-']))
  })

  /** Route handler: after the route's plugins, guard then forward. */
  const forwardFromFastify = (binding: RouteBinding) => async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const ex = exchangeOf(request.raw)!
    if (binding.guard !== undefined) {
      const refusal = await binding.guard(ex)
      if (refusal !== undefined) { replyError(request, reply, refusal); return }
    }
    reply.hijack()
    if (reply.upstreamFault !== null) ex.upstreamFault = reply.upstreamFault
    if (reply.requestBodyLimit >= 0) ex.requestBodyLimit = reply.requestBodyLimit
    const headers = reply.getHeaders()
    binding.layer.forward(ex, matchOf(request.raw)!, request.headers, reply.upstreamHeaderEditors, Object.keys(headers).length > 0 ? headers : null)
  }

  try {
    // A route with plugins has its own context; every request it takes goes through it.
    for (const binding of opts.routes) {
      if (opts.pluginsOf(binding).length === 0) { plainRoutes.set(binding.name, forwardFromFastify(binding)); continue }
      // Each context under its route's internal URL as a prefix: a route a plugin adds itself
      // (@fastify/cors's `OPTIONS *`) stays under it, never clashing with another route's.
      await app.register(async (scope) => {
        scope.decorate('fastmesh', routePluginContext(binding.name, opts.state, opts.trustForwardedHeaders, opts.countOutcome ?? (() => {})))
        for (const { def, options } of opts.pluginsOf(binding)) {
          // skip-override: the plugin's hooks and decorators land in this route's context,
          // which stays encapsulated from every other route.
          await scope.register(asRoutePlugin(def), options)
        }
        scope.route({ method: scope.supportedMethods, url: '', handler: forwardFromFastify(binding) })
      }, { prefix: internalUrl(binding.name) })
    }
    // Routes without plugins share one context (upgrades): the route is the one the request was tagged with.
    if (plainRoutes.size > 0) {
      await app.register(async (scope) => {
        scope.route({
          method: scope.supportedMethods,
          url: '',
          handler: async (request, reply) => { await plainRoutes.get(exchangeOf(request.raw)!.route!)!(request, reply) }
        })
      }, { prefix: PLAIN_ROUTES_URL })
    }
    await app.ready()
  } catch (err) {
    // A build that fails late: the plugins registered so far release what they opened (onClose).
    await app.close().catch(() => {})
    throw err
  }
  const dispatch = fastifyHandler!
  return {
    dispatch,
    async close () { await app.close() }
  }
}
