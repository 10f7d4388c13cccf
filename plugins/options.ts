// The built-in route plugins' options, by the name a route's `plugins` list uses: what the
// config needs to check them (src/config/validate.ts, docs). Their code, and the libraries it
// runs on, are in plugins/index.ts, which only a version build loads.
import type { PluginOptionsDefinition } from './types.js'
import { headersOptions } from './headers/options.js'
import { rateLimitOptions } from './rate-limit/options.js'
import { faultInjectionOptions } from './fault-injection/options.js'
import { ipFilterOptions } from './ip-filter/options.js'
import { jwtOptions } from './jwt/options.js'
import { loadSheddingOptions } from './load-shedding/options.js'
import { corsOptions } from './cors/options.js'
import { bodyLimitOptions } from './body-limit/options.js'

export const builtinPluginOptions: ReadonlyMap<string, PluginOptionsDefinition> = new Map<string, PluginOptionsDefinition>(
  [headersOptions, rateLimitOptions, faultInjectionOptions, ipFilterOptions, jwtOptions, loadSheddingOptions, corsOptions, bodyLimitOptions].map((d) => [d.name, d as unknown as PluginOptionsDefinition])
)

export const builtinPluginNames: readonly string[] = [...builtinPluginOptions.keys()]
