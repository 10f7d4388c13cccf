// Reading a config file: parse (YAML or JSON), apply environment overrides, compile
// (src/config/compile.ts), freeze.
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import { fastmeshError } from '../errors.js'
import { formatProblems, validateConfigDocument, type ConfigProblem, type FastmeshConfig } from './validate.js'
import { compile, isRefusal, type CompiledConfig } from './compile.js'

/** A document checked alone: schema, cross-checks and built-in plugin options, no plugin module imported. */
export interface CheckedConfig {
  readonly config: FastmeshConfig
  /** Where it came from: a file path, or `kv:<key>[+<key>]` for Consul KV. */
  readonly source: string
  /** What validation warned about (the config is valid): shown by `fastmesh validate`, logged on load. */
  readonly warnings?: readonly ConfigProblem[]
}

/** A compiled config (src/config/compile.ts) and where it came from: what a gateway runs. */
export interface LoadedConfig extends CheckedConfig, CompiledConfig {}

/**
 * The directory relative paths in a config (`mesh.identity.dir`, `customPlugins.<name>.module`)
 * are resolved from: the config file's directory, or for a Consul KV config (`start --kv`,
 * with or without a `--config` base file) the working directory of the process.
 */
export function configBaseDir (source: string): string {
  return source.startsWith('kv:') ? process.cwd() : dirname(resolve(source))
}

export class ConfigError extends Error {
  constructor (readonly code: string, message: string, readonly problems: readonly ConfigProblem[], options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'ConfigError'
  }
}

/** Parses YAML (a superset of JSON); syntax errors name the line and column. */
export function parseConfigText (text: string, source: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true })
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => ({
      path: '$',
      // The position goes in the hint; yaml appends it (and a code excerpt) to the message.
      message: e.message.split('\n')[0]!.replace(/ at line [0-9]+, column [0-9]+:?$/, ''),
      hint: e.linePos !== undefined ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : undefined
    }))
    const err = fastmeshError('CONFIG_PARSE', [source, problems.map((p) => `${p.message}${p.hint !== undefined ? ` (${p.hint})` : ''}`).join('; ')])
    throw new ConfigError(err.code, err.message, problems, { cause: doc.errors[0] })
  }
  return doc.toJS()
}

/** Environment variables that override listener addresses, the admin token, the log level and tracing. */
export function applyEnvOverrides (doc: unknown, env: NodeJS.ProcessEnv = process.env): unknown {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return doc
  const d = doc as Record<string, Record<string, unknown> | undefined>
  const section = (key: string): Record<string, unknown> => {
    const cur = d[key]
    if (cur !== undefined && cur !== null && typeof cur === 'object' && !Array.isArray(cur)) return cur
    const fresh: Record<string, unknown> = {}
    d[key] = fresh
    return fresh
  }
  const defaultPorts = { http: 8080, admin: 15000, outbound: 15001, inbound: 15443 }
  const listener = (name: keyof typeof defaultPorts, prefix: string) => {
    const address = env[`${prefix}_ADDRESS`]
    const port = env[`${prefix}_PORT`]
    if (address === undefined && port === undefined) return
    const listeners = section('listeners')
    const l = (listeners[name] ??= { port: defaultPorts[name] }) as Record<string, unknown>
    if (address !== undefined) l.address = address
    // A non-numeric port stays a string so validation names the env var's path.
    if (port !== undefined) l.port = /^[0-9]+$/.test(port) ? Number(port) : port
  }
  listener('http', 'FASTMESH_HTTP')
  listener('admin', 'FASTMESH_ADMIN')
  listener('outbound', 'FASTMESH_OUTBOUND')
  listener('inbound', 'FASTMESH_INBOUND')
  // docker-compose passes the admin token this way (an empty value is "not set").
  const adminToken = env.FASTMESH_ADMIN_TOKEN
  if (adminToken !== undefined && adminToken !== '') {
    const listeners = section('listeners')
    const admin = (listeners.admin ??= { port: defaultPorts.admin }) as Record<string, unknown>
    admin.token = adminToken
  }
  const level = env.FASTMESH_LOG_LEVEL
  if (level !== undefined) {
    const telemetry = section('telemetry')
    const logging = (telemetry.logging ??= {}) as Record<string, unknown>
    logging.level = level
  }
  // Tracing switched on by the environment (docker-compose points every gateway at its
  // collector this way); the config's other tracing settings stay.
  const tracingEndpoint = env.FASTMESH_TRACING_ENDPOINT
  const tracingRatio = env.FASTMESH_TRACING_RATIO
  const hasEndpoint = tracingEndpoint !== undefined && tracingEndpoint !== ''
  const hasRatio = tracingRatio !== undefined && tracingRatio !== ''
  if (hasEndpoint || hasRatio) {
    const telemetry = section('telemetry')
    const tracing = (telemetry.tracing ??= {}) as Record<string, unknown>
    if (hasEndpoint) {
      tracing.enabled = true
      const otlp = (tracing.otlp ??= {}) as Record<string, unknown>
      otlp.endpoint = tracingEndpoint
    }
    // A value that is not a number stays a string, so validation names the path.
    if (hasRatio) ((tracing.sampler ??= {}) as Record<string, unknown>).ratio = /^[0-9.]+$/.test(tracingRatio) ? Number(tracingRatio) : tracingRatio
  }
  return doc
}

/** Freezes a config and everything in it (a config version is immutable). */
export function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}

/**
 * A copy of a parsed document in which every mapping and list is its own. A YAML alias
 * (`admin: *loopback`) reads back as the very object it names; validation fills defaults and
 * environment overrides in place, so each place it is used would get the others' keys.
 * Throws on an alias inside the node it names (a document that contains itself).
 */
function ownTree (value: unknown, ancestors: Set<object> = new Set()): unknown {
  if (value === null || typeof value !== 'object') return value
  if (ancestors.has(value)) throw new Error('a YAML alias refers to a node that contains it')
  ancestors.add(value)
  let out: unknown
  if (Array.isArray(value)) {
    out = value.map((v) => ownTree(v, ancestors))
  } else {
    const copy: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) copy[k] = ownTree(v, ancestors)
    out = copy
  }
  ancestors.delete(value)
  return out
}

/** A copy of `doc` the caller's copy does not share, with environment overrides applied. */
function ownDocument (doc: unknown, source: string, env: NodeJS.ProcessEnv): unknown {
  let own: unknown
  try {
    own = ownTree(doc)
  } catch (cause) {
    const err = fastmeshError('CONFIG_INVALID', [source, `  $: ${(cause as Error).message}`])
    throw new ConfigError(err.code, err.message, [{ path: '$', message: (cause as Error).message }], { cause })
  }
  return applyEnvOverrides(own, env)
}

/**
 * Checks a parsed document alone (the caller's copy is left as it was), importing no plugin
 * module: custom plugins' options are not checked. Throws ConfigError listing every problem.
 * `compileConfig` is the whole check.
 */
export function checkConfig (doc: unknown, source: string, env: NodeJS.ProcessEnv = process.env): CheckedConfig {
  const result = validateConfigDocument(ownDocument(doc, source, env))
  if (result.config === undefined) {
    const err = fastmeshError('CONFIG_INVALID', [source, formatProblems(result.problems)])
    throw new ConfigError(err.code, err.message, result.problems)
  }
  return { config: deepFreeze(result.config), source, ...(result.warnings !== undefined ? { warnings: result.warnings } : {}) }
}

/**
 * Compiles a parsed document (the caller's copy is left as it was; relative plugin modules
 * are resolved from the source's directory) into a frozen config a gateway runs. Throws
 * ConfigError listing every problem.
 */
export async function compileConfig (doc: unknown, source: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  const result = await compile(ownDocument(doc, source, env), { baseDir: configBaseDir(source) })
  if (isRefusal(result)) {
    const message = result.message ?? fastmeshError('CONFIG_INVALID', [source, formatProblems(result.problems)]).message
    throw new ConfigError(result.code, message, result.problems)
  }
  return { ...result, config: deepFreeze(result.config), source }
}

/** Parses and checks config text alone (see checkConfig). */
export function loadConfigText (text: string, source: string, env: NodeJS.ProcessEnv = process.env): CheckedConfig {
  return checkConfig(parseConfigText(text, source), source, env)
}

async function readConfigFile (path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (cause) {
    const err = fastmeshError('CONFIG_READ', [path, (cause as Error).message])
    throw new ConfigError(err.code, err.message, [{ path: '$', message: (cause as Error).message }], { cause })
  }
}

/** Reads, parses and compiles a config file (see compileConfig). */
export async function loadConfigFile (path: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  return await compileConfig(parseConfigText(await readConfigFile(path), path), path, env)
}
