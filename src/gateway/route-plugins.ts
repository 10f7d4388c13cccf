// Version, route plugins: which plugins each route of a version runs. The top-level
// `plugins` list applies to every route, in front of the route's own, unless the route
// switches one off by name (`disablePlugins`) or lists its own use of the same plugin, which
// then replaces the gateway-wide one for that route (Kong's rule). A gateway-wide plugin with
// a gateway-policy form runs on the version's policy chain (every request, the fast path
// too); one without it is registered in every route's Fastify context.
import type { Logger } from 'pino'
import type { FastmeshConfig } from '../config/validate.js'
import type { PluginRefConfig, RouteConfig } from '../config/schema.js'
import type { GatewayPolicyInstance, RoutePluginDefinition } from '../../plugins/types.js'
import type { Exchange, GatewayPolicy, UpstreamTry } from './exchange.js'
import type { RouteBinding } from './assembly.js'

/** A plugin as a route's Fastify context registers it: its definition and checked options. */
export interface ResolvedPlugin {
  readonly def: RoutePluginDefinition
  readonly options: Record<string, unknown>
  /** Where the route got it: the top-level list, or its own `plugins`. */
  readonly from: 'gateway' | 'route'
}

/** One plugin a route runs, as the admin API shows it. */
export interface RoutePluginUse {
  readonly name: string
  readonly from: 'gateway' | 'route'
  /** `policy`: on the version's policy chain, before routing's plugins (the fast path kept); `route`: in the route's Fastify context. */
  readonly runs: 'policy' | 'route'
}

export interface VersionPlugins {
  /** The plugins a route runs in its Fastify context, in order; none: the route keeps the fast path. */
  ofRoute(binding: RouteBinding): readonly ResolvedPlugin[]
  /** The gateway-wide plugins that run as gateway policies, in config order. */
  readonly policies: readonly GatewayPolicy[]
  /** Every plugin the route runs, in the order it runs them (policies first). */
  describe(binding: RouteBinding): readonly RoutePluginUse[]
  /** Closes the gateway policies (their timers); once the version is retired. */
  close(): Promise<void>
}

export interface VersionPluginsOptions {
  readonly config: FastmeshConfig
  readonly definitionOf: (name: string) => RoutePluginDefinition
  /** A reference's checked options (defaults filled). */
  readonly optionsOf: (ref: PluginRefConfig) => Record<string, unknown>
  readonly log: Logger
}

/** Names of the gateway-wide plugins `route` does not take from the top-level list. */
function excludedBy (route: RouteConfig): ReadonlySet<string> {
  const out = new Set<string>(route.disablePlugins ?? [])
  for (const ref of route.plugins) out.add(ref.name)
  return out
}

/**
 * The plugins of a version: its gateway policies are made here (before the version's policy
 * chain); each route's Fastify list is worked out from its config when the route is bound.
 */
export async function resolveVersionPlugins (opts: VersionPluginsOptions): Promise<VersionPlugins> {
  const { config } = opts
  const global = config.plugins.map((ref) => ({ ref, def: opts.definitionOf(ref.name) }))
  const inFastify = global.filter((g) => g.def.gatewayPolicy === undefined)

  const perRoute = new Map<string, readonly ResolvedPlugin[]>()
  const ofRoute = (binding: RouteBinding): readonly ResolvedPlugin[] => {
    let list = perRoute.get(binding.name)
    if (list !== undefined) return list
    const route = binding.matcher.config
    const excluded = excludedBy(route)
    list = corsFirst([
      ...inFastify.filter((g) => !excluded.has(g.ref.name)).map((g) => ({ def: g.def, options: opts.optionsOf(g.ref), from: 'gateway' as const })),
      ...route.plugins.map((ref) => ({ def: opts.definitionOf(ref.name), options: opts.optionsOf(ref), from: 'route' as const }))
    ])
    perRoute.set(binding.name, list)
    return list
  }

  const instances: GatewayPolicyInstance[] = []
  const close = async (): Promise<void> => {
    for (const instance of instances.splice(0)) await instance.close?.()
  }
  const policies: GatewayPolicy[] = []
  try {
    for (const g of global) {
      if (g.def.gatewayPolicy === undefined) continue
      // Only config routes can switch a gateway-wide plugin off (the gateway's own routes have no config).
      const skip = new Set(config.routes.filter((route) => excludedBy(route).has(g.ref.name)).map((route) => route.name))
      const context = { log: opts.log.child({ plugin: g.ref.name }), trustForwardedHeaders: config.gateway.trustForwardedHeaders }
      const instance = await g.def.gatewayPolicy(opts.optionsOf(g.ref), context)
      instances.push(instance)
      policies.push(gatewayPolicyOf(g.ref.name, instance, skip))
    }
  } catch (err) {
    await close()
    throw err
  }
  const asPolicies = global.filter((g) => g.def.gatewayPolicy !== undefined)
  const describe = (binding: RouteBinding): readonly RoutePluginUse[] => {
    const excluded = excludedBy(binding.matcher.config)
    return [
      ...asPolicies.filter((g) => !excluded.has(g.ref.name)).map((g) => ({ name: g.ref.name, from: 'gateway' as const, runs: 'policy' as const })),
      ...ofRoute(binding).map((p) => ({ name: p.def.name, from: p.from, runs: 'route' as const }))
    ]
  }
  return { ofRoute, policies, describe, close }
}

/**
 * The built-in `cors` runs first on its route, wherever it is listed (gateway-wide or the
 * route's own, before or after other plugins), as in Kong: a browser's preflight carries no
 * credentials (Fetch standard), so an authenticating plugin in front of it would refuse every
 * preflight; and the refusals of the other plugins (401, 403, 429, 413) need the CORS headers
 * for the page to read them. It lets nothing through that would not pass otherwise: it answers
 * preflights itself (the upstream is not called) and only adds headers to the rest.
 */
function corsFirst (list: ResolvedPlugin[]): ResolvedPlugin[] {
  const cors = list.findIndex((p) => p.def.name === 'cors')
  return cors <= 0 ? list : [list[cors]!, ...list.slice(0, cors), ...list.slice(cors + 1)]
}

/** A plugin's policy on the chain; routes that switched it off (or replaced it) are passed by. */
function gatewayPolicyOf (name: string, instance: GatewayPolicyInstance, skip: ReadonlySet<string>): GatewayPolicy {
  const on = skip.size === 0 ? (_ex: Exchange) => true : (ex: Exchange) => ex.route === undefined || !skip.has(ex.route)
  const { onRequest, onTryStart, onUpstreamHeaders, onTryEnd, onEnd } = instance
  return {
    name,
    ...(onRequest !== undefined ? { onRequest: (ex: Exchange) => on(ex) ? onRequest.call(instance, ex) : undefined } : {}),
    ...(onTryStart !== undefined ? { onTryStart: (ex: Exchange, t: UpstreamTry) => { if (on(ex)) onTryStart.call(instance, ex, t) } } : {}),
    ...(onUpstreamHeaders !== undefined ? { onUpstreamHeaders: (ex: Exchange, t: UpstreamTry, headers: string[]) => { if (on(ex)) onUpstreamHeaders.call(instance, ex, t, headers) } } : {}),
    ...(instance.upstreamHeaderNames !== undefined ? { upstreamHeaderNames: instance.upstreamHeaderNames } : {}),
    ...(onTryEnd !== undefined ? { onTryEnd: (ex: Exchange, t: UpstreamTry) => { if (on(ex)) onTryEnd.call(instance, ex, t) } } : {}),
    ...(onEnd !== undefined ? { onEnd: (ex: Exchange) => { if (on(ex)) onEnd.call(instance, ex) } } : {})
  }
}
