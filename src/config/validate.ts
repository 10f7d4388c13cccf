// Config validation: the schema check (ajv, every error) turned into problems with a
// JSON path and a hint, then the checks a schema cannot express (names, references, regexes).
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import { closest, distance } from 'fastest-levenshtein'
import { ConfigSchema, type FastmeshConfigInput } from './schema.js'
import { compileTemplate } from '../gateway/path-template.js'
import { builtinPluginNames, builtinPlugins } from '../../plugins/index.js'

export type FastmeshConfig = FastmeshConfigInput

export interface ConfigProblem {
  /** JSON path of the offending value, like `$.routes[2].match.path`. */
  readonly path: string
  readonly message: string
  readonly hint?: string
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true })
const validateSchema = ajv.compile<FastmeshConfig>(ConfigSchema)

/** `/routes/0/match` → `$.routes[0].match` */
export function jsonPath (instancePath: string, extra?: string): string {
  let out = '$'
  const parts = instancePath === '' ? [] : instancePath.slice(1).split('/')
  if (extra !== undefined) parts.push(extra)
  for (const raw of parts) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    if (/^[0-9]+$/.test(part)) out += `[${part}]`
    else if (/^[a-zA-Z_$][\w$]*$/.test(part)) out += `.${part}`
    else out += `[${JSON.stringify(part)}]`
  }
  return out
}

function didYouMean (word: string, candidates: string[]): string | undefined {
  if (candidates.length === 0) return undefined
  const best = closest(word, candidates)
  return distance(word, best) <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined
}

function describeValue (v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'object') return 'an object'
  return `${typeof v} ${JSON.stringify(v)}`
}

/** One problem per ajv error, with unions collapsed into a single readable line. */
function schemaProblems (errors: ErrorObject[]): ConfigProblem[] {
  // An anyOf failure at a path explains itself better than each branch's failure below it.
  const unionPaths = errors.filter((e) => e.keyword === 'anyOf').map((e) => ({ instancePath: e.instancePath, schemaPath: e.schemaPath.replace(/\/anyOf$/, '/anyOf/') }))
  const problems: ConfigProblem[] = []
  const seen = new Set<string>()
  for (const e of errors) {
    if (e.keyword !== 'anyOf' && unionPaths.some((u) => e.schemaPath.startsWith(u.schemaPath) && e.instancePath.startsWith(u.instancePath))) continue
    const p = problemFor(e)
    const key = `${p.path}\n${p.message}`
    if (seen.has(key)) continue
    seen.add(key)
    problems.push(p)
  }
  return problems
}

function problemFor (e: ErrorObject): ConfigProblem {
  const parent = e.parentSchema as { description?: string, properties?: Record<string, unknown>, anyOf?: Array<{ properties?: Record<string, unknown> }> } | undefined
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = (e.params as { additionalProperty: string }).additionalProperty
      const allowed = Object.keys(parent?.properties ?? {})
      const guess = didYouMean(key, allowed)
      return {
        path: jsonPath(e.instancePath, key),
        message: `unknown key "${key}"`,
        hint: guess !== undefined ? `did you mean "${guess}"?` : `allowed keys: ${allowed.join(', ')}`
      }
    }
    case 'required': {
      const key = (e.params as { missingProperty: string }).missingProperty
      return { path: jsonPath(e.instancePath, key), message: 'is required', hint: describe(parent?.properties?.[key]) }
    }
    case 'type':
      return { path: jsonPath(e.instancePath), message: `must be ${(e.params as { type: string }).type}, got ${describeValue(e.data)}`, hint: describe(e.schema === undefined ? undefined : parent) }
    case 'enum': {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues.map(String)
      const guess = typeof e.data === 'string' ? didYouMean(e.data, allowed) : undefined
      return {
        path: jsonPath(e.instancePath),
        message: `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${describeValue(e.data)}`,
        ...(guess !== undefined ? { hint: `did you mean "${guess}"?` } : {})
      }
    }
    case 'pattern':
      return { path: jsonPath(e.instancePath), message: `${describeValue(e.data)} does not match ${(e.params as { pattern: string }).pattern}`, hint: describe(parent) }
    case 'anyOf': {
      const keys = (parent?.anyOf ?? []).flatMap((b) => Object.keys(b.properties ?? {}))
      const given = e.data !== null && typeof e.data === 'object' && !Array.isArray(e.data) ? Object.keys(e.data) : []
      const wrong = given.filter((k) => !keys.includes(k))
      const guess = wrong.length > 0 ? didYouMean(wrong[0]!, keys) : undefined
      return {
        path: jsonPath(e.instancePath),
        message: given.length > 1 ? `has ${given.map((k) => `"${k}"`).join(' and ')}; give exactly one` : `is not valid: ${parent?.description ?? 'no alternative matches'}`,
        hint: guess !== undefined ? `unknown key "${wrong[0]}"; did you mean "${guess}"?` : (parent?.description ?? `expected one of the keys ${keys.join(', ')}`)
      }
    }
    default:
      return { path: jsonPath(e.instancePath), message: e.message ?? e.keyword, hint: describe(parent) }
  }
}

function describe (schema: unknown): string | undefined {
  const d = (schema as { description?: string } | undefined)?.description
  return d
}

function regexProblem (source: string, path: string): ConfigProblem | undefined {
  try {
    new RegExp(source)
    return undefined
  } catch (err) {
    return { path, message: `invalid regular expression: ${(err as Error).message}`, hint: 'ECMAScript syntax; escape backslashes in YAML double-quoted strings' }
  }
}

/** Checks that need the whole document: unique names, references that resolve, regexes that compile. */
function semanticProblems (config: FastmeshConfig, customPluginNames: readonly string[]): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const routeNames = new Map<string, number>()
  const embedded = config.discovery.embedded.services
  const knownServices = Object.keys(embedded)
  const plugins = [...builtinPluginNames, ...customPluginNames]
  config.routes.forEach((route, i) => {
    const at = `$.routes[${i}]`
    const first = routeNames.get(route.name)
    if (first !== undefined) problems.push({ path: `${at}.name`, message: `duplicate route name "${route.name}"`, hint: `already used by $.routes[${first}]; route names must be unique` })
    else routeNames.set(route.name, i)

    const service = route.destination.service
    if (!knownServices.includes(service)) {
      const guess = didYouMean(service, knownServices)
      problems.push({
        path: `${at}.destination.service`,
        message: `unknown service "${service}"`,
        hint: guess !== undefined ? `did you mean "${guess}"?` : `declare it under discovery.embedded.services (known: ${knownServices.join(', ') || 'none'})`
      })
    }
    const match = route.match
    const path = match?.path
    let params: string[] = []
    if (path !== undefined && 'regex' in path) {
      const p = regexProblem(path.regex, `${at}.match.path.regex`)
      if (p !== undefined) problems.push(p)
      else params = [...path.regex.matchAll(/\(\?<([a-zA-Z_$][\w$]*)>/g)].map((m) => m[1]!)
    }
    if (path !== undefined && 'template' in path) {
      try {
        params = compileTemplate(path.template).params
      } catch (err) {
        problems.push({ path: `${at}.match.path.template`, message: (err as Error).message, hint: 'segments are literal text, `:name`, or a final `*`' })
      }
    }
    if (route.destination.stripPrefix === true && (path === undefined || !('prefix' in path))) {
      problems.push({ path: `${at}.destination.stripPrefix`, message: 'needs match.path.prefix', hint: 'stripPrefix removes the matched prefix; use rewritePath for other path kinds' })
    }
    if (route.destination.stripPrefix === true && route.destination.rewritePath !== undefined) {
      problems.push({ path: `${at}.destination`, message: 'stripPrefix and rewritePath are exclusive', hint: 'keep one of them' })
    }
    if (route.destination.rewritePath !== undefined) {
      for (const m of route.destination.rewritePath.matchAll(/:([a-zA-Z_$][\w$]*)/g)) {
        if (!params.includes(m[1]!)) problems.push({ path: `${at}.destination.rewritePath`, message: `parameter ":${m[1]}" is not captured by match.path`, hint: params.length > 0 ? `captured: ${params.map((p) => ':' + p).join(', ')}` : 'use a path template (/users/:id) or a regex with named groups' })
      }
    }
    for (const kind of ['headers', 'query'] as const) {
      (match?.[kind] ?? []).forEach((cond, j) => {
        const cpath = `${at}.match.${kind}[${j}]`
        const set = (['exact', 'prefix', 'regex', 'present'] as const).filter((k) => cond[k] !== undefined)
        if (set.length !== 1) problems.push({ path: cpath, message: set.length === 0 ? 'has no condition' : `has ${set.join(' and ')}; give exactly one`, hint: 'one of exact, prefix, regex, present' })
        if (cond.regex !== undefined) {
          const p = regexProblem(cond.regex, `${cpath}.regex`)
          if (p !== undefined) problems.push(p)
        }
      })
    }
    route.plugins.forEach((ref, j) => {
      const builtin = builtinPlugins.get(ref.name)
      if (builtin !== undefined) {
        ref.options ??= {}
        problems.push(...pluginOptionProblems(builtin.name, builtin.optionsSchema, ref.options, `${at}.plugins[${j}].options`))
      } else if (!plugins.includes(ref.name)) {
        const guess = didYouMean(ref.name, plugins)
        problems.push({ path: `${at}.plugins[${j}].name`, message: `unknown plugin "${ref.name}"`, hint: guess !== undefined ? `did you mean "${guess}"?` : `built in: ${builtinPluginNames.join(', ')}; declare your own under customPlugins` })
      }
    })
  })
  for (const [name, svc] of Object.entries(embedded)) {
    const ids = new Set<string>()
    svc.endpoints.forEach((ep, j) => {
      const id = ep.id ?? `${ep.address}:${ep.port}`
      if (ids.has(id)) problems.push({ path: `$.discovery.embedded.services[${JSON.stringify(name)}].endpoints[${j}]`, message: `duplicate endpoint "${id}"`, hint: 'each endpoint of a service needs its own address:port or id' })
      ids.add(id)
    })
  }
  return problems
}

const pluginValidators = new WeakMap<object, ValidateFunction>()

/** Checks (and fills defaults of) a plugin's options against the plugin's own schema. */
export function pluginOptionProblems (plugin: string, schema: object, options: unknown, at: string): ConfigProblem[] {
  let validate = pluginValidators.get(schema)
  if (validate === undefined) {
    validate = ajv.compile(schema)
    pluginValidators.set(schema, validate)
  }
  if (validate(options)) return []
  return schemaProblems(validate.errors ?? []).map((p) => ({
    ...p,
    path: at + p.path.slice(1),
    hint: p.hint ?? `see the options of plugin "${plugin}" in docs/plugins.md`
  }))
}

export interface ValidationResult {
  readonly config?: FastmeshConfig
  readonly problems: readonly ConfigProblem[]
}

/**
 * Validates a parsed document (defaults are filled in place, so pass a copy you own).
 * Returns every problem; `config` only when there are none.
 */
export function validateConfigDocument (doc: unknown): ValidationResult {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    return { problems: [{ path: '$', message: `must be a mapping, got ${describeValue(doc)}`, hint: 'a config file is a YAML/JSON object with keys like routes, discovery' }] }
  }
  if (!validateSchema(doc)) {
    return { problems: schemaProblems(validateSchema.errors ?? []) }
  }
  const config = doc
  const problems = semanticProblems(config, Object.keys(config.customPlugins))
  return problems.length > 0 ? { problems } : { config, problems }
}

export function formatProblems (problems: readonly ConfigProblem[]): string {
  return problems.map((p) => `  ${p.path}: ${p.message}${p.hint !== undefined ? ` (${p.hint})` : ''}`).join('\n')
}
