// The contract of a route plugin: an ordinary Fastify plugin plus a typed options schema,
// and what the gateway offers it (the route it runs on, state that outlives reloads, who is
// calling). Protocol-neutral: nothing here is HTTP/1-specific.
import type { Static, TSchema } from '@sinclair/typebox'
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import type { ResponseError } from '../src/errors.js'

/** A problem of a plugin's options; `path` is a JSON path within the options (`$.allow[2]`). */
export interface PluginOptionProblem {
  readonly path: string
  readonly message: string
  readonly hint?: string
}

/**
 * What checking a config needs of a plugin: its name, its options schema and the checks a
 * schema cannot express. Apart from the plugin's code, so `fastmesh validate` never loads a
 * plugin's run-time libraries.
 */
export interface PluginOptionsDefinition<S extends TSchema = TSchema> {
  readonly name: string
  /** One line for docs/plugins.md. */
  readonly description: string
  /** A `plugins` list using it (a route's, or the top-level one), in YAML, for docs/plugins.md. */
  readonly example?: string
  /** Options are validated against it (ajv, defaults filled) before the plugin is registered. */
  readonly optionsSchema: S
  /** Checks on options that passed the schema (a CIDR range, a duration above 0); none: fine. */
  readonly checkOptions?: (options: Static<S>) => PluginOptionProblem[]
}

export interface RoutePluginDefinition<S extends TSchema = TSchema> extends PluginOptionsDefinition<S> {
  /** Registered with options that passed the schema and `checkOptions`: it need not check them again. */
  readonly plugin: FastifyPluginAsync<Static<S> & Record<string, unknown>>
  /**
   * The plugin's gateway-policy form, for a plugin that must see every request (load
   * shedding). When the plugin is in the top-level `plugins` list and has this form, the
   * gateway runs it on the version's policy chain, right after the route is chosen: routes
   * without plugins keep their fast path. Without it, a gateway-wide plugin is registered in
   * every route's Fastify context instead. Called once per config version; `close` when the
   * version is retired.
   */
  readonly gatewayPolicy?: (options: Static<S> & Record<string, unknown>, context: GatewayPolicyContext) => GatewayPolicyInstance | Promise<GatewayPolicyInstance>
}

/** What the gateway offers a plugin's gateway-policy form when a version is built. */
export interface GatewayPolicyContext {
  /** The gateway's logger, bound to the plugin's name. */
  readonly log: FastifyBaseLogger
  /** Whether X-Forwarded-For from clients may be believed (`gateway.trustForwardedHeaders`). */
  readonly trustForwardedHeaders: boolean
}

/** One request as a gateway policy sees it: protocol-neutral, read-only. */
export interface PolicyRequest {
  readonly requestId: string
  /** The route's name (config routes, and the gateway's own `inbound:<service>` ...). */
  readonly route: string | undefined
  readonly method: string
  /** The normalised request target. */
  readonly path: string
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  /** The verified caller of an inbound mesh call (its SPIFFE ID); undefined elsewhere. */
  readonly caller: string | undefined
  /** The address of the peer that opened the connection (never a header's claim). */
  readonly clientAddress: string
}

/** A policy's answer in place of the route: status, code and message as any gateway error, and headers of its own (Retry-After). */
export interface Refusal extends ResponseError {
  readonly headers?: Readonly<Record<string, string>>
}

/** One exchange once it ended, as a gateway policy's `onEnd` sees it. */
export interface PolicyExchange extends PolicyRequest {
  /** The status answered (499: the client left first; 0: cut before any answer). */
  readonly status: number
  readonly durationMs: number
  /** The `FASTMESH_ERR_*` code when the gateway answered itself, or why the exchange broke. */
  readonly error: string | undefined
  /** The destination service, once chosen. */
  readonly destination: string | undefined
  /** Upstream tries made. */
  readonly attempts: number
}

/**
 * How one upstream try ended: the endpoint answered (`response`, see `status`), or no
 * answer came — `connect_error` (no connection: refused, TLS handshake, connect timeout),
 * `timeout` (no response headers in time), `reset` (the connection broke), `error`
 * (anything else the endpoint did), `cancelled` (ended by our side: the client left, the
 * body limit, a per-exchange fault).
 */
export type TryOutcome = 'response' | 'connect_error' | 'timeout' | 'reset' | 'error' | 'cancelled'

/**
 * One upstream try as gateway policies see it: a try of the route (the first, or a retry)
 * or a mirrored copy. Protocol-neutral: an HTTP/2 or gRPC try fills the same fields.
 */
export interface UpstreamTry {
  /** 1 for the first try, 2, 3 ... for retries; a mirrored copy is 1. */
  readonly attempt: number
  /** A mirrored copy (fire-and-forget), not a try of the exchange. */
  readonly mirror: boolean
  /** The destination service. */
  readonly service: string
  /** `address:port` of the endpoint tried. */
  readonly endpoint: string
  /** When the try started (performance.now()). */
  readonly startedAt: number
  /** Set when the try ended; undefined while it runs. */
  readonly outcome: TryOutcome | undefined
  /** The endpoint's status for `response` (101 for an upgrade); 0 otherwise. */
  readonly status: number
  /** How long the try took until its outcome was known (response headers, or the failure), in ms. */
  readonly durationMs: number
  /** The try's failure as the gateway names it (`ECONNREFUSED`, `UND_ERR_SOCKET` ...), when it failed. */
  readonly cause: string | undefined
  /** A policy's state for this try (tracing's client span); one slot, so every try keeps one shape. */
  span: unknown
}

/**
 * The hooks of a gateway policy, all optional and synchronous: they run for every request
 * (the fast path too) and every upstream try, so keep each to a few comparisons. A hook that
 * throws is logged with the request id and counted; the exchange goes on without that step.
 * `Req`/`Ex`: what the policy is shown (plugins: the read-only views below).
 */
export interface PolicyHooks<Req extends PolicyRequest = PolicyRequest, Ex extends PolicyExchange = PolicyExchange> {
  /**
   * Runs once the request's route is chosen, before the route's plugins: a refusal answers
   * at once (with its headers), undefined lets the request go on.
   */
  onRequest?(request: Req): Refusal | undefined
  /** An upstream try is about to be sent to `t.endpoint` (each retry, each mirrored copy, an upgrade). */
  onTryStart?(request: Req, t: UpstreamTry): void
  /**
   * While the try's request headers are built (after `onTryStart`): push `name, value` pairs
   * (lower-case names) onto `headers`. Names listed in `upstreamHeaderNames` are taken out
   * of the client's headers first, so the policy's replace them.
   */
  onUpstreamHeaders?(request: Req, t: UpstreamTry, headers: string[]): void
  /** Header names this policy sets upstream (lower case): the client's copies are not forwarded. */
  readonly upstreamHeaderNames?: readonly string[]
  /** The try's outcome is known (`t.outcome`): response headers arrived, or it failed. Once per try. */
  onTryEnd?(request: Req, t: UpstreamTry): void
  /** Once, when the exchange has ended (answered, forwarded, refused or cut). */
  onEnd?(exchange: Ex): void
}

/** A gateway policy of one config version, as a plugin's gateway-policy form makes it. */
export interface GatewayPolicyInstance extends PolicyHooks {
  /** Releases timers and connections when the version is retired. */
  close?(): void | Promise<void>
}

/** What a response-side plugin gets: the upstream's headers, to edit in place before they go out. */
export type UpstreamHeadersEditor = (headers: Record<string, string | string[] | undefined>, statusCode: number) => void

/**
 * A fault a plugin puts in place of one upstream try: the route layer takes it exactly as
 * the picked endpoint's answer (`status`) or failure (`reset`: closed before any response
 * byte), so retries, outlier detection and statistics react to it as to a real one.
 */
export type InjectedFault = { readonly status: number } | { readonly reset: true }

/** Asked before each try (`attempt` 1, 2, ...): a fault to inject, or undefined to go to the endpoint. */
export type UpstreamFaultInjector = (attempt: number) => InjectedFault | undefined

/** What the gateway offers a route plugin at registration, as `fastify.fastmesh`. */
export interface RoutePluginContext {
  /** The route's name in the config. */
  readonly route: string
  /**
   * State that outlives config versions: under `name` on this route (prefix it with the
   * plugin's name: every plugin of the route shares the namespace), the same object on
   * every reload that keeps the route (made by `create` on first use). Dropped, with
   * `dispose`, once no live or draining version has the route. Use it for counters and
   * caches a reload must not reset (a rate limiter's windows, a JWKS cache).
   */
  state<T>(name: string, create: () => T, dispose?: (value: T) => void): T
  /** Whether X-Forwarded-For from clients may be believed (`gateway.trustForwardedHeaders`). */
  readonly trustForwardedHeaders: boolean
  /**
   * Counts one `outcome` of `plugin` on this route in the gateway's metrics
   * (`fastmesh_plugin_outcomes_total{route, plugin, outcome}`): things no answer shows, such
   * as a store that failed open. Use a small fixed set of outcome names, never values taken
   * from requests (each name is a series). A no-op when metrics are off.
   */
  countOutcome(plugin: string, outcome: string): void
}

/** What the gateway offers a route plugin about one request, as `request.fastmesh`. */
export interface RequestContext {
  readonly requestId: string
  /** The route's name in the config. */
  readonly route: string | undefined
  /** The verified caller of an inbound mesh call (its SPIFFE ID), from the mTLS handshake; undefined elsewhere. */
  readonly caller: string | undefined
  /** The address of the peer that opened the connection (never a header's claim). */
  readonly clientAddress: string
  /** Records that the plugin injected a fault (`delay`, `abort`, ...): the access log says so. */
  noteFault(kind: string): void
}

declare module 'fastify' {
  interface FastifyReply {
    /** Registers an edit of the upstream response headers (runs before they are written). */
    onUpstreamHeaders(editor: UpstreamHeadersEditor): void
    /** Puts faults in place of upstream tries of this request (fault injection; see InjectedFault). */
    injectUpstreamFault(injector: UpstreamFaultInjector): void
    /**
     * Bounds the request body at `maxBytes`, counted as it streams to the upstream (never
     * buffered), on every try: past it the exchange ends, 413 FASTMESH_ERR_BODY_TOO_LARGE when
     * no answer has begun (the upstream's request aborted), else cut; the connection closes.
     * The lowest of several calls holds.
     */
    limitRequestBody(maxBytes: number): void
  }
  interface FastifyInstance {
    /** The route this plugin runs on and the gateway's services for it (see RoutePluginContext). */
    readonly fastmesh: RoutePluginContext
  }
  interface FastifyRequest {
    /** Who is calling, on which route (see RequestContext). */
    readonly fastmesh: RequestContext
  }
}
