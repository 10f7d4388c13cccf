// The one step from a config document to what a version is built from, used alike by
// `fastmesh validate`, the start of the gateway and every reload (file watch, SIGHUP, admin,
// Consul KV): defaults filled, the schema and the cross-checks run, the custom plugins
// imported, and every plugin reference's options (built-in and custom) checked with their
// JSON paths. A build takes its result and checks nothing again.
// It imports nothing of the forwarding code, and no built-in plugin's run-time libraries.
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { fastmeshError } from '../errors.js'
import { builtinPluginOptions } from '../../plugins/options.js'
import type { PluginOptionsDefinition, RoutePluginDefinition } from '../../plugins/types.js'
import { redactText } from './redact.js'
import { jsonPath, validateConfigDocument, type ConfigProblem, type FastmeshConfig } from './validate.js'

export interface CompiledConfig {
  /** Every default filled (plugin options too) and every check passed. */
  readonly config: FastmeshConfig
  /** The custom plugins by their `customPlugins` name; built-ins are found by name in plugins/index.ts. */
  readonly customPlugins: ReadonlyMap<string, RoutePluginDefinition>
  /** A valid config's settings that work, but not as an operator may expect. */
  readonly warnings?: readonly ConfigProblem[]
}

export interface CompileRefusal {
  /** FASTMESH_ERR_PLUGIN_LOAD when a custom plugin module could not be used, else FASTMESH_ERR_CONFIG_INVALID. */
  readonly code: 'FASTMESH_ERR_PLUGIN_LOAD' | 'FASTMESH_ERR_CONFIG_INVALID'
  /** One line for the refusal: the first module that failed to load, or undefined for config problems. */
  readonly message?: string
  /** Every problem, with its JSON path. */
  readonly problems: readonly ConfigProblem[]
}

export type CompileResult = CompiledConfig | CompileRefusal

export interface CompileOptions {
  /** Where relative `customPlugins.<name>.module` paths are resolved from. */
  readonly baseDir: string
}

function isMapping (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

async function importCustomPlugin (name: string, module: string, baseDir: string): Promise<RoutePluginDefinition> {
  const spec = module.startsWith('.') || isAbsolute(module) ? pathToFileURL(resolve(baseDir, module)).href : module
  let mod: Record<string, unknown>
  try {
    mod = await import(spec) as Record<string, unknown>
  } catch (cause) {
    throw fastmeshError('PLUGIN_LOAD', [name, module, (cause as Error).message], cause)
  }
  const plugin = mod.default ?? mod.plugin
  if (typeof plugin !== 'function') throw fastmeshError('PLUGIN_LOAD', [name, module, 'the module has no default export that is a Fastify plugin function'])
  if (mod.checkOptions !== undefined && typeof mod.checkOptions !== 'function') throw fastmeshError('PLUGIN_LOAD', [name, module, 'its checkOptions export is not a function'])
  return {
    name,
    description: typeof mod.description === 'string' ? mod.description : `custom plugin from ${module}`,
    optionsSchema: (mod.optionsSchema ?? { type: 'object' }) as RoutePluginDefinition['optionsSchema'],
    ...(mod.checkOptions !== undefined ? { checkOptions: mod.checkOptions as NonNullable<RoutePluginDefinition['checkOptions']> } : {}),
    plugin: plugin as RoutePluginDefinition['plugin'],
    ...(typeof mod.gatewayPolicy === 'function' ? { gatewayPolicy: mod.gatewayPolicy as NonNullable<RoutePluginDefinition['gatewayPolicy']> } : {})
  }
}

/**
 * Compiles a parsed document (defaults are filled in place, so pass a copy you own): either
 * the config ready to build, or every problem found, custom plugin modules that cannot be
 * imported included (at their `customPlugins.<name>.module` path).
 */
export async function compile (doc: unknown, opts: CompileOptions): Promise<CompileResult> {
  // Custom plugins are imported first so their options are checked in the same pass as the
  // rest; a declaration the schema refuses (or a built-in's name) is left to validation.
  const declared = isMapping(doc) && isMapping(doc.customPlugins) ? doc.customPlugins : {}
  const customPlugins = new Map<string, RoutePluginDefinition>()
  const loadProblems: ConfigProblem[] = []
  let firstLoadError: string | undefined
  for (const [name, entry] of Object.entries(declared)) {
    const module = isMapping(entry) ? entry.module : undefined
    if (typeof module !== 'string' || module === '' || builtinPluginOptions.has(name)) continue
    try {
      customPlugins.set(name, await importCustomPlugin(name, module, opts.baseDir))
    } catch (err) {
      firstLoadError ??= redactText((err as Error).message)
      loadProblems.push({ path: jsonPath(`/customPlugins/${name.replace(/~/g, '~0').replace(/\//g, '~1')}/module`), message: redactText((err as Error).message), hint: 'a package name, or a path to an ES module relative to the config file, whose default export is a Fastify plugin (docs/writing-plugins.md)' })
    }
  }
  const plugins = new Map<string, PluginOptionsDefinition>([...customPlugins, ...builtinPluginOptions])
  const result = validateConfigDocument(doc, plugins)
  const problems = [...loadProblems, ...result.problems]
  if (result.config === undefined || problems.length > 0) {
    return loadProblems.length > 0
      ? { code: 'FASTMESH_ERR_PLUGIN_LOAD', message: firstLoadError!, problems }
      : { code: 'FASTMESH_ERR_CONFIG_INVALID', problems }
  }
  return { config: result.config, customPlugins, ...(result.warnings !== undefined ? { warnings: result.warnings } : {}) }
}

export function isRefusal (result: CompileResult): result is CompileRefusal {
  return 'problems' in result
}
