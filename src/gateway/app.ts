// Builds one config version: an immutable Fastify instance, each route in its own
// encapsulated context with its plugins in config order, never listening itself:
// the long-lived listeners hand it requests (src/gateway/gateway.ts).
import { createServer, ServerResponse, type IncomingMessage, type Server } from 'node:http'
import { randomUUID } from 'node:crypto'
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { FastmeshConfig } from '../config/validate.js'
import { pluginOptionProblems, formatProblems } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { fastmeshError, isFastmeshError, type ResponseError } from '../errors.js'
import { Router, type RouteMatch } from './router.js'
import { writeError } from './respond.js'
import { forward } from '../upstream/proxy.js'
import type { ServiceTable } from '../balancer/service-table.js'
import { poolSettingsFor, selectorFor } from '../balancer/service-table.js'
import type { RequestRecorder } from '../telemetry/access-log.js'
import { elapsedMs } from '../telemetry/access-log.js'
import { builtinPlugins, type RoutePluginDefinition, type UpstreamHeadersEditor } from '../../plugins/index.js'

const kMatch = Symbol('fastmesh.match')
const kStart = Symbol('fastmesh.start')

interface GatewayRequest extends IncomingMessage {
  [kMatch]?: RouteMatch | null
  [kStart]?: bigint
  upgradeHead?: Buffer
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

const REQUEST_ID = /^[\w.:@=+/-]{1,128}$/

function requestIdOf (req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
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

export async function buildGatewayVersion (opts: BuildOptions): Promise<GatewayVersion> {
  const { config, services, log, recorder } = opts
  const router = new Router(config.routes)

  // Custom plugins are imported, and their options checked, before anything is built.
  const custom = new Map<string, RoutePluginDefinition>()
  for (const [name, c] of Object.entries(config.customPlugins)) custom.set(name, await loadCustomPlugin(name, c.module, opts.baseDir))
  const problems = config.routes.flatMap((route, i) => route.plugins.flatMap((ref, j) => {
    const def = custom.get(ref.name)
    return def === undefined ? [] : pluginOptionProblems(ref.name, def.optionsSchema, ref.options ?? {}, `$.routes[${i}].plugins[${j}].options`)
  }))
  if (problems.length > 0) throw fastmeshError('CONFIG_INVALID', ['plugin options', formatProblems(problems)])

  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
  const app = Fastify<Server, IncomingMessage, ServerResponse>({
    loggerInstance: log.child({ version: opts.version }),
    // The access log is ours; Fastify's per-request child loggers would cost an allocation each.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: (logger) => logger,
    genReqId: requestIdOf,
    requestIdHeader: false,
    return503OnClosing: false,
    serverFactory: (h) => {
      handler = h
      // Never listens: the gateway's listeners outlive every version.
      return createServer() as Server
    },
    routerOptions: {
      maxParamLength: 2048,
      constraints: {
      // Our router picks the route (host, path, method, headers, query, precedence);
      // find-my-way then only has to find that route's encapsulated context.
      fastmeshRoute: {
        name: 'fastmeshRoute',
        mustMatchWhenDerived: true,
        storage<H> () {
          const byName = new Map<unknown, H>()
          return {
            get: (name: unknown): H | null => byName.get(name) ?? null,
            set: (name: unknown, store: H): void => { byName.set(name, store) }
          }
        },
        deriveConstraint (req: GatewayRequest) {
          const m = router.match(req.method ?? 'GET', req.headers.host, req.url ?? '/', req.headers)
          req[kMatch] = m
          return m?.route.name as string
        },
        validate () {}
      }
      }
    }
  })

  app.decorateReply('upstreamHeaderEditors', null)
  app.decorateReply('onUpstreamHeaders', function (this: FastifyReply, editor: UpstreamHeadersEditor) {
    (this.upstreamHeaderEditors ??= []).push(editor)
  })
  // Bodies stream through untouched: no parser reads them.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_req, _payload, done) => { done(null) })

  const respondError = (request: FastifyRequest, reply: FastifyReply, err: ResponseError, route?: string, service?: string): void => {
    reply.hijack()
    writeError(reply.raw, err, request.id)
    const raw = request.raw as GatewayRequest
    recorder.record({
      requestId: request.id,
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

  app.setNotFoundHandler((request, reply) => {
    const raw = request.raw as GatewayRequest
    const err = raw[kMatch] === null
      ? fastmeshError('BAD_REQUEST', [`path of ${raw.url} cannot be normalised`])
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
  for (const matcher of router.ordered) {
    const route = matcher.config
    const service = route.destination.service
    const { key, endpoints } = services.get(selectorFor(config, service), poolSettingsFor(config, service))
    referenced.add(key)
    const headersTimeoutMs = durationMs(route.timeout)
    const bodyTimeoutMs = durationMs(route.idleTimeout)
    const rewriteHost = route.destination.rewriteHost

    const proxyHandler = (request: FastifyRequest, reply: FastifyReply): void => {
      const raw = request.raw as GatewayRequest
      const match = raw[kMatch]!
      const target = endpoints.pick()
      if (target === undefined) {
        respondError(request, reply, fastmeshError('NO_HEALTHY_ENDPOINT', [service]), route.name, service)
        return
      }
      reply.hijack()
      const replyHeaders = reply.getHeaders()
      forward(raw, reply.raw, request.headers, target, {
        requestId: request.id,
        route: route.name,
        service,
        path: matcher.rewrite(match) + match.search,
        headersTimeoutMs,
        bodyTimeoutMs,
        rewriteHost,
        trustForwarded,
        proto: 'http',
        start: raw[kStart] ?? process.hrtime.bigint(),
        recorder,
        editors: reply.upstreamHeaderEditors,
        replyHeaders: Object.keys(replyHeaders).length > 0 ? replyHeaders : null
      })
    }

    await app.register(async (scope) => {
      for (const ref of route.plugins) {
        const def = builtinPlugins.get(ref.name) ?? custom.get(ref.name)!
        // skip-override: the plugin's hooks and decorators land in this route's context,
        // which stays encapsulated from every other route.
        await scope.register(fp(def.plugin), { ...(ref.options ?? {}) })
      }
      scope.route({
        method: scope.supportedMethods,
        url: '*',
        constraints: { fastmeshRoute: route.name },
        handler: proxyHandler
      })
    })
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
      (req as GatewayRequest)[kStart] = process.hrtime.bigint()
      inFlight++
      res.once('close', finished)
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
      route(req, res)
    },
    async close () {
      await app.close()
    }
  }
}

