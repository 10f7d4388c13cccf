// The built-in route plugins, by the name a route's `plugins` list uses. Each one's options
// contract is also in plugins/options.ts, which the config checks against without loading
// these modules.
import type { RoutePluginDefinition } from './types.js'
import { headers } from './headers/index.js'
import { rateLimitDefinition } from './rate-limit/index.js'
import { faultInjectionDefinition } from './fault-injection/index.js'
import { ipFilterDefinition } from './ip-filter/index.js'
import { jwtDefinition } from './jwt/index.js'
import { loadSheddingDefinition } from './load-shedding/index.js'
import { corsDefinition } from './cors/index.js'
import { bodyLimitDefinition } from './body-limit/index.js'

export const builtinPlugins: ReadonlyMap<string, RoutePluginDefinition> = new Map<string, RoutePluginDefinition>([
  [headers.name, headers as unknown as RoutePluginDefinition],
  [rateLimitDefinition.name, rateLimitDefinition as unknown as RoutePluginDefinition],
  [faultInjectionDefinition.name, faultInjectionDefinition as unknown as RoutePluginDefinition],
  [ipFilterDefinition.name, ipFilterDefinition as unknown as RoutePluginDefinition],
  [jwtDefinition.name, jwtDefinition as unknown as RoutePluginDefinition],
  [loadSheddingDefinition.name, loadSheddingDefinition as unknown as RoutePluginDefinition],
  [corsDefinition.name, corsDefinition as unknown as RoutePluginDefinition],
  [bodyLimitDefinition.name, bodyLimitDefinition as unknown as RoutePluginDefinition]
])

export { builtinPluginNames } from './options.js'

export type { RoutePluginDefinition, PluginOptionsDefinition, PluginOptionProblem, RoutePluginContext, RequestContext, UpstreamHeadersEditor, InjectedFault, UpstreamFaultInjector, GatewayPolicyContext, GatewayPolicyInstance, PolicyRequest, Refusal } from './types.js'
