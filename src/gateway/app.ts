// Version: builds one config version — the assembled routes (route → service → endpoint
// layers), the gateway-wide policy chain, the Fastify host of the routes' plugin contexts
// (src/gateway/fastify-host.ts) and the entry that takes a listener's requests
// (src/gateway/entry.ts). A version never listens itself: the long-lived listeners hand it
// requests (src/gateway/listener-set.ts). Building is pure: nothing live changes until the
// version swap (src/gateway/version-swap.ts) puts the new version in.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { FastmeshConfig } from '../config/validate.js'
import type { CompiledConfig } from '../config/compile.js'
import { Router } from './router.js'
import { ExchangeFaults, PolicyChain, type GatewayPolicy } from './exchange.js'
import { assemble, type Assembly, type MeshContext } from './assembly.js'
import { buildFastifyHost } from './fastify-host.js'
import { createEntry } from './entry.js'
import type { ServiceTable } from '../balancer/service-table.js'
import type { StateRegistry } from '../state/registry.js'
import type { RequestRecorder } from '../telemetry/access-log.js'
import { builtinPoliciesFor } from './policies.js'
import type { GatewayMetrics } from '../telemetry/metrics.js'
import type { GatewayTracing } from '../telemetry/tracing.js'
import { builtinPlugins } from '../../plugins/index.js'
import { resolveVersionPlugins, type RoutePluginUse, type VersionPlugins } from './route-plugins.js'

import { exchangeOf } from './gateway-request.js'
export { tagEntry } from './gateway-request.js'
export type { Entry } from './exchange.js'
export type { MeshContext } from './assembly.js'
export { upstreamRouteName, inboundRouteName } from './assembly.js'

export interface BuildOptions {
  /** The config as src/config/compile.ts made it: checked whole, plugin options included; nothing is checked again. */
  readonly compiled: CompiledConfig
  readonly services: ServiceTable
  /** State that outlives versions (route statistics, later balancer and limiter state). */
  readonly state: StateRegistry
  readonly log: Logger
  readonly recorder: RequestRecorder
  /** Where exceptions raised while serving an exchange are counted (outlives versions). */
  readonly faults?: ExchangeFaults
  readonly version: number
  /** Where requests are counted (outlives versions); the policy is left out when `telemetry.metrics.enabled` is false. */
  readonly metrics?: GatewayMetrics
  /** Where spans go (providers outlive versions); the policy is left out when `telemetry.tracing.enabled` is false. */
  readonly tracing?: GatewayTracing
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
  /** The plugins a route of this version runs, in order (gateway-wide ones included); undefined for an unknown route. */
  routePlugins(route: string): readonly RoutePluginUse[] | undefined
  /** Handles a request from a listener. */
  handle(req: IncomingMessage, res: ServerResponse): void
  /** Handles an HTTP upgrade (WebSocket) through the same routes and plugins. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void
  /** Requests started on this version and not finished. */
  readonly inFlight: number
  close(): Promise<void>
}

export async function buildGatewayVersion (opts: BuildOptions): Promise<GatewayVersion> {
  const { config } = opts.compiled
  const router = new Router(config.routes)

  // Which plugins each route runs; gateway-wide plugins with a policy form become policies.
  // Options were checked (defaults filled) by the compile step; each use gets its own copy of the frozen config's.
  const { customPlugins } = opts.compiled
  const plugins = await resolveVersionPlugins({
    config,
    definitionOf: (name) => builtinPlugins.get(name) ?? customPlugins.get(name)!,
    optionsOf: (ref) => structuredClone(ref.options ?? {}) as Record<string, unknown>,
    log: opts.log
  })

  // Gateway-wide policies, in order: they see every request of every listener.
  const policies: GatewayPolicy[] = [
    ...builtinPoliciesFor({ config, state: opts.state, recorder: opts.recorder, metrics: opts.metrics, tracing: opts.tracing, log: opts.log }),
    ...plugins.policies
  ]
  const faults = opts.faults ?? new ExchangeFaults()
  const faultLog = opts.log.child({ component: 'exchange' })
  const chain = new PolicyChain(policies, (ex, where, err) => {
    faults.record(ex, where, err)
    faultLog.error({ err, requestId: ex.requestId, route: ex.route, where }, 'exception while serving a request; the request ends, the gateway goes on')
  })
  let assembly: Assembly | undefined
  try {
    assembly = assemble({ config, router, services: opts.services, chain, mesh: opts.mesh, state: opts.state, log: opts.log.child({ component: 'failover' }) })
    return await compile(opts, router, plugins, policies, chain, assembly)
  } catch (err) {
    // A build that fails gives back what it took (its pools to local instances, its policies' timers).
    assembly?.close()
    await plugins.close()
    throw err
  }
}

/** The Fastify host and the entry of a version over its assembled routes. */
async function compile (opts: BuildOptions, router: Router, plugins: VersionPlugins, policies: GatewayPolicy[], chain: PolicyChain, assembly: Assembly): Promise<GatewayVersion> {
  const { config } = opts.compiled
  const host = await buildFastifyHost({
    log: opts.log,
    version: opts.version,
    state: opts.state,
    trustForwardedHeaders: config.gateway.trustForwardedHeaders,
    ...(config.telemetry.metrics.enabled && opts.metrics !== undefined ? { countOutcome: opts.metrics.pluginOutcome } : {}),
    onFault: (req, where, err) => {
      const ex = exchangeOf(req)
      if (ex !== undefined) chain.fault(ex, where, err)
    },
    routes: assembly.routes.values(),
    pluginsOf: plugins.ofRoute
  })
  const entry = createEntry({ router, assembly, chain, host, pluginsOf: plugins.ofRoute, escapedSlashes: config.gateway.escapedSlashes, outboundCaller: assembly.outboundCaller })
  return {
    version: opts.version,
    config,
    router,
    services: assembly.services,
    routeNames: new Set(assembly.routes.keys()),
    failovers: assembly.failovers,
    policies,
    routePlugins (route) {
      const binding = assembly.routes.get(route)
      return binding !== undefined ? plugins.describe(binding) : undefined
    },
    get inFlight () { return entry.inFlight },
    handle: entry.handle,
    upgrade: entry.upgrade,
    async close () {
      await host.close()
      await plugins.close()
      assembly.close()
    }
  }
}
