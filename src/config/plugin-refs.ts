// Every place a config names a plugin (the gateway-wide `plugins` list, each route's `plugins`),
// with the JSON path of each reference: the one list the checks of plugin names and options
// walk, so a new place is added here and is checked like the rest.
import type { PluginRefConfig } from './schema.js'

export interface PluginRefAt {
  readonly ref: PluginRefConfig
  /** JSON path of the reference, like `$.routes[2].plugins[0]`. */
  readonly path: string
  /** The same place as an ajv instance path (`/routes/2/plugins/0`), to ask whether it passed the schema. */
  readonly instancePath: string
}

function isMapping (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** The plugin references of a config, in config order; tolerant of a document that failed the schema. */
export function pluginRefs (config: unknown): PluginRefAt[] {
  const out: PluginRefAt[] = []
  // Gateway-wide plugins first: they run in front of each route's own.
  const global = isMapping(config) && Array.isArray(config.plugins) ? config.plugins as unknown[] : []
  global.forEach((ref, i) => {
    if (isMapping(ref) && typeof ref.name === 'string') out.push({ ref: ref as PluginRefConfig, path: `$.plugins[${i}]`, instancePath: `/plugins/${i}` })
  })
  const routes = isMapping(config) && Array.isArray(config.routes) ? config.routes as unknown[] : []
  routes.forEach((route, i) => {
    const plugins = isMapping(route) && Array.isArray(route.plugins) ? route.plugins as unknown[] : []
    plugins.forEach((ref, j) => {
      if (isMapping(ref) && typeof ref.name === 'string') out.push({ ref: ref as PluginRefConfig, path: `$.routes[${i}].plugins[${j}]`, instancePath: `/routes/${i}/plugins/${j}` })
    })
  })
  return out
}
