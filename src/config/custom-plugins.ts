// Custom route plugins named under `customPlugins`: their modules imported, and the options
// every route and the gateway-wide list give them checked against the module's schema (with
// JSON paths, defaults filled).
// One step for `fastmesh validate` and for a version build, so both say the same.
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { fastmeshError } from '../errors.js'
import type { RoutePluginDefinition } from '../../plugins/types.js'
import { pluginOptionProblems, type ConfigProblem, type FastmeshConfig } from './validate.js'

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
    plugin: plugin as RoutePluginDefinition['plugin'],
    ...(typeof mod.gatewayPolicy === 'function' ? { gatewayPolicy: mod.gatewayPolicy as NonNullable<RoutePluginDefinition['gatewayPolicy']> } : {})
  }
}

export interface CustomPlugins {
  /** The definitions by the name `customPlugins` gives them. */
  readonly definitions: ReadonlyMap<string, RoutePluginDefinition>
  /** Each route's checked options (a copy, defaults filled), by its plugin reference. */
  readonly options: ReadonlyMap<object, Record<string, unknown>>
  /** Problems of the options, with their JSON paths; none when the plugins may be built. */
  readonly problems: readonly ConfigProblem[]
}

/** Imports the custom plugins of `config` (paths relative to `baseDir`) and checks their options. Throws FASTMESH_ERR_PLUGIN_LOAD for a module that cannot be used. */
export async function loadCustomPlugins (config: FastmeshConfig, baseDir: string): Promise<CustomPlugins> {
  const definitions = new Map<string, RoutePluginDefinition>()
  for (const [name, c] of Object.entries(config.customPlugins)) definitions.set(name, await loadCustomPlugin(name, c.module, baseDir))
  // Checked on a copy (the config is frozen), which the plugin then gets: schema defaults land in it.
  const options = new Map<object, Record<string, unknown>>()
  const check = (ref: FastmeshConfig['plugins'][number], at: string): ConfigProblem[] => {
    const def = definitions.get(ref.name)
    if (def === undefined) return []
    const copy = structuredClone(ref.options ?? {})
    options.set(ref, copy)
    return pluginOptionProblems(ref.name, def.optionsSchema, copy, `${at}.options`)
  }
  const problems = [
    ...config.plugins.flatMap((ref, i) => check(ref, `$.plugins[${i}]`)),
    ...config.routes.flatMap((route, i) => route.plugins.flatMap((ref, j) => check(ref, `$.routes[${i}].plugins[${j}]`)))
  ]
  return { definitions, options, problems }
}
