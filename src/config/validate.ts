// Config validation: the schema check (ajv, every error) turned into problems with a
// JSON path and a hint, then the checks a schema cannot express (names, references, regexes).
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import { closest, distance } from 'fastest-levenshtein'
import { ConfigSchema, type FastmeshConfigInput, type RouteConfig } from './schema.js'
import { AJV_CODE_OPTIONS } from './ajv-options.js'
import { REDACTED, redactAt, redactText } from './redact.js'
import { CONSUL_ADDRESS_FORM, parseConsulAddress } from './consul-address.js'
import { ENDPOINT_ADDRESS_RULE, endpointAddressProblem, isLoopbackAddress } from './addresses.js'
import { METHODS } from 'node:http'
import { compileTemplate } from './path-template.js'
import { DURATION_PATTERN, MAX_TIMER_MS, durationMs, isDuration } from './duration.js'
import { waitProblem } from './consul-wait.js'
import { builtinPluginNames, builtinPluginOptions } from '../../plugins/options.js'
import type { PluginOptionsDefinition } from '../../plugins/types.js'
import { pluginRefs } from './plugin-refs.js'
import { failoverTarget, selectorFor, selectorKey } from './selectors.js'

export type FastmeshConfig = FastmeshConfigInput

export interface ConfigProblem {
  /** JSON path of the offending value, like `$.routes[2].match.path`. */
  readonly path: string
  readonly message: string
  readonly hint?: string
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true, code: AJV_CODE_OPTIONS })
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

/**
 * The value an ajv error is about, as a message may quote it: secrets (by the one rule of
 * src/config/redact.ts) show their type only, so a refusal never echoes them.
 */
function quoteValue (e: ErrorObject, doc: unknown): string {
  const shown = redactAt(doc, e.instancePath, e.data)
  return shown === REDACTED && e.data !== REDACTED && e.data !== null && typeof e.data !== 'object' ? `${typeof e.data} ${REDACTED}` : describeValue(shown)
}

type ParentSchema = {
  description?: string
  properties?: Record<string, unknown>
  patternProperties?: Record<string, unknown>
  anyOf?: Array<{ properties?: Record<string, unknown>, const?: unknown, type?: unknown }>
} | undefined

function isMapping (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** `inner` is `outer` or a path below it (`/routes/1` is not below `/routes/10`). */
function within (inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(outer + '/')
}

interface UnionFailure {
  readonly instancePath: string
  /** Schema path of the anyOf with a trailing `/`: branch errors start with it. */
  readonly branches: string
  /** The one branch the value was meant for (its keys belong to that branch only), if any. */
  readonly chosen: number | undefined
}

/** The branch of an object union that `data`'s keys point at, when exactly one fits. */
function chosenBranch (e: ErrorObject): number | undefined {
  const branches = (e.parentSchema as ParentSchema)?.anyOf ?? []
  if (!isMapping(e.data)) return undefined
  const given = Object.keys(e.data)
  if (given.length === 0) return undefined
  const fits = branches.flatMap((b, i) => b.properties !== undefined && given.every((k) => Object.hasOwn(b.properties!, k)) ? [i] : [])
  return fits.length === 1 ? fits[0] : undefined
}

/**
 * One problem per ajv error. A union (anyOf) gives one readable problem: the errors of the
 * branch its keys select (`{ prefix: 5 }` → `prefix` must be a string), or else one line
 * about the union itself (two keys given, an unknown key, not an object).
 */
function schemaProblems (errors: ErrorObject[], doc: unknown): ConfigProblem[] {
  const unions: UnionFailure[] = errors.filter((e) => e.keyword === 'anyOf').map((e) => ({
    instancePath: e.instancePath,
    branches: e.schemaPath + '/',
    chosen: chosenBranch(e)
  }))
  const unionOf = (e: ErrorObject): UnionFailure | undefined => unions.find((u) => e.schemaPath.startsWith(u.branches) && within(e.instancePath, u.instancePath))
  // A misspelt required key shows up twice (unknown key + missing key); keep the unknown key,
  // whose hint names the missing one.
  const explained = new Set<string>()
  for (const e of errors) {
    if (e.keyword !== 'additionalProperties') continue
    const allowed = Object.keys((e.parentSchema as ParentSchema)?.properties ?? {})
    const guess = didYouMean((e.params as { additionalProperty: string }).additionalProperty, allowed)
    if (guess !== undefined) explained.add(`${e.instancePath}\n${guess}`)
  }
  const problems: ConfigProblem[] = []
  const seen = new Set<string>()
  for (const e of errors) {
    // An if/then rule failed: the `then` branch's own errors say where and why.
    if (e.keyword === 'if') continue
    if (e.keyword === 'anyOf') {
      if (unions.find((u) => u.instancePath === e.instancePath && u.branches === e.schemaPath + '/')?.chosen !== undefined) continue
    } else {
      const u = unionOf(e)
      if (u !== undefined && (u.chosen === undefined || !e.schemaPath.startsWith(`${u.branches}${u.chosen}/`))) continue
    }
    if (e.keyword === 'required' && explained.has(`${e.instancePath}\n${(e.params as { missingProperty: string }).missingProperty}`)) continue
    const p = problemFor(e, doc)
    const key = `${p.path}\n${p.message}`
    if (seen.has(key)) continue
    seen.add(key)
    problems.push(p)
  }
  return problems
}

function problemFor (e: ErrorObject, doc: unknown): ConfigProblem {
  const parent = e.parentSchema as ParentSchema
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = (e.params as { additionalProperty: string }).additionalProperty
      const keyPatterns = Object.keys(parent?.patternProperties ?? {})
      if (parent?.properties === undefined && keyPatterns.length > 0) {
        // A map (Type.Record) whose key is not a valid name.
        return { path: jsonPath(e.instancePath, key), message: `"${key}" is not a valid name here`, hint: `names must match ${keyPatterns.join(' or ')}` }
      }
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
      return { path: jsonPath(e.instancePath), message: `must be ${(e.params as { type: string }).type}, got ${quoteValue(e, doc)}`, hint: describe(e.schema === undefined ? undefined : parent) }
    case 'enum': {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues.map(String)
      const guess = typeof e.data === 'string' ? didYouMean(e.data, allowed) : undefined
      return {
        path: jsonPath(e.instancePath),
        message: `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${quoteValue(e, doc)}`,
        hint: guess !== undefined ? `did you mean "${guess}"?` : describe(parent)
      }
    }
    case 'not':
      return { path: jsonPath(e.instancePath), message: `${quoteValue(e, doc)} is not allowed here`, hint: describe(parent) }
    case 'pattern':
      return { path: jsonPath(e.instancePath), message: `${quoteValue(e, doc)} does not match ${(e.params as { pattern: string }).pattern}`, hint: describe(parent) }
    case 'anyOf': {
      // Reached only when no single branch is meant (see schemaProblems).
      const branches = parent?.anyOf ?? []
      // A union of literals (TypeBox's usual enum, `Type.Union([Type.Literal('open'), ...])`): read as an enum.
      if (branches.length > 0 && branches.every((b) => 'const' in b)) {
        const allowed = branches.map((b) => String(b.const))
        const guess = typeof e.data === 'string' ? didYouMean(e.data, allowed) : undefined
        return { path: jsonPath(e.instancePath), message: `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${quoteValue(e, doc)}`, hint: guess !== undefined ? `did you mean "${guess}"?` : describe(parent) }
      }
      // A union of types none of which is a mapping with keys (`string or array`): name the types.
      if (!branches.some((b) => b.properties !== undefined)) {
        const types = [...new Set(branches.flatMap((b) => 'const' in b ? [JSON.stringify(b.const)] : typeof b.type === 'string' ? [b.type] : []))]
        return { path: jsonPath(e.instancePath), message: `must be ${types.join(' or ')}, got ${quoteValue(e, doc)}`, hint: describe(parent) }
      }
      const keys = branches.flatMap((b) => Object.keys(b.properties ?? {}))
      const oneOf = `one of the keys ${keys.join(', ')}`
      if (!isMapping(e.data)) {
        // A union of a scalar and a mapping (`accessLog: true` or `{ sampleRatio }`) names both.
        const scalars = [...new Set(branches.filter((b) => b.properties === undefined).flatMap((b) => typeof b.type === 'string' ? [b.type] : []))]
        return { path: jsonPath(e.instancePath), message: `must be ${[...scalars, `a mapping with ${oneOf}`].join(' or ')}, got ${quoteValue(e, doc)}`, hint: describe(parent) }
      }
      const given = Object.keys(e.data)
      const wrong = given.find((k) => !keys.includes(k))
      if (wrong !== undefined) {
        const guess = didYouMean(wrong, keys)
        return { path: jsonPath(e.instancePath, wrong), message: `unknown key "${wrong}"`, hint: guess !== undefined ? `did you mean "${guess}"?` : `allowed keys: ${keys.join(', ')}` }
      }
      return {
        path: jsonPath(e.instancePath),
        message: given.length === 0 ? `is empty; give ${oneOf}` : `has ${given.map((k) => `"${k}"`).join(' and ')}; give exactly one`,
        hint: describe(parent)
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

/** What a route may name in `match.methods`: Node's methods (http.METHODS) but CONNECT. */
const ROUTABLE_METHODS = METHODS.filter((m) => m !== 'CONNECT' && /^[A-Z]+$/.test(m))

/**
 * Checks that need the whole document: unique names, references that resolve, regexes that
 * compile. `clean(instancePath)` says whether that part passed the schema; parts that did not
 * are skipped (their schema problems are reported), so every problem shows up in one run.
 */
function semanticProblems (config: FastmeshConfig, customPluginNames: readonly string[], plugins: ReadonlyMap<string, PluginOptionsDefinition>, clean: (instancePath: string) => boolean = () => true): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const routeNames = new Map<string, number>()
  const discoveryClean = clean('/discovery')
  const embedded = discoveryClean ? config.discovery.embedded.services : {}
  const knownServices = Object.keys(embedded)
  // A custom plugin may not take a built-in's name: the route would silently get the built-in.
  for (const name of customPluginNames) {
    if (builtinPluginOptions.has(name)) problems.push({ path: jsonPath(`/customPlugins/${name}`), message: `"${name}" is the name of a built-in plugin`, hint: `give your plugin another name (built in: ${builtinPluginNames.join(', ')})` })
  }
  // Gateway-wide plugins: each name once, since routes switch them off and replace them by name.
  const globalsClean = clean('/plugins')
  const globalPlugins = globalsClean && Array.isArray(config.plugins) ? config.plugins.map((ref) => ref.name) : []
  if (globalsClean && Array.isArray(config.plugins)) {
    config.plugins.forEach((ref, i) => {
      const first = globalPlugins.indexOf(ref.name)
      if (first !== i) problems.push({ path: `$.plugins[${i}].name`, message: `"${ref.name}" is already a gateway-wide plugin`, hint: `see $.plugins[${first}]; a gateway-wide plugin is listed once (a route may list its own use of it instead)` })
    })
  }
  ;(Array.isArray(config.routes) ? config.routes : []).forEach((route, i) => {
    if (!clean(`/routes/${i}`)) return
    const at = `$.routes[${i}]`
    const first = routeNames.get(route.name)
    if (first !== undefined) problems.push({ path: `${at}.name`, message: `duplicate route name "${route.name}"`, hint: `already used by $.routes[${first}]; route names must be unique` })
    else routeNames.set(route.name, i)

    for (const { service, path: refPath } of serviceReferences(route, at)) {
      if (!discoveryClean || config.discovery.consul !== undefined || knownServices.includes(service)) continue
      const guess = didYouMean(service, knownServices)
      problems.push({
        path: refPath,
        message: `unknown service "${service}"`,
        hint: guess !== undefined ? `did you mean "${guess}"?` : `declare it under discovery.embedded.services (known: ${knownServices.join(', ') || 'none'})`
      })
    }
    problems.push(...splitProblems(route, at))
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
    // Node's parser refuses methods it does not know (400/501 before routing) and the
    // listeners refuse CONNECT: a route naming one could never match.
    ;(match?.methods ?? []).forEach((method, j) => {
      const mpath = `${at}.match.methods[${j}]`
      if (method === 'CONNECT') problems.push({ path: mpath, message: 'CONNECT is never routed', hint: 'the gateway does not tunnel; every listener answers CONNECT with 501' })
      else if (!METHODS.includes(method)) {
        const guess = didYouMean(method, ROUTABLE_METHODS)
        problems.push({ path: mpath, message: `unknown method "${method}": Node's HTTP parser refuses it, so the route could never match`, hint: guess !== undefined ? `did you mean "${guess}"?` : `methods Node accepts: ${ROUTABLE_METHODS.join(', ')}` })
      }
    })
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
    ;(route.disablePlugins ?? []).forEach((name, j) => {
      if (!globalsClean || globalPlugins.includes(name)) return
      const guess = didYouMean(name, globalPlugins)
      problems.push({ path: `${at}.disablePlugins[${j}]`, message: `"${name}" is not a gateway-wide plugin`, hint: guess !== undefined ? `did you mean "${guess}"?` : `disablePlugins names plugins of the top-level plugins list (${globalPlugins.length > 0 ? globalPlugins.join(', ') : 'empty'})` })
    })
  })
  problems.push(...pluginRefProblems(config, customPluginNames, plugins, clean))
  for (const [name, svc] of Object.entries(embedded)) {
    const ids = new Set<string>()
    svc.endpoints.forEach((ep, j) => {
      const addressProblem = endpointAddressProblem(ep.address)
      if (addressProblem !== undefined) problems.push({ path: jsonPath(`/discovery/embedded/services/${name}/endpoints/${j}/address`), message: `${describeValue(redactText(ep.address))} ${addressProblem}`, hint: `an endpoint address is ${ENDPOINT_ADDRESS_RULE}` })
      const id = ep.id ?? `${ep.address}:${ep.port}`
      if (ids.has(id)) problems.push({ path: jsonPath(`/discovery/embedded/services/${name}/endpoints/${j}`), message: `duplicate endpoint "${id}"`, hint: 'each endpoint of a service needs its own address:port or id' })
      ids.add(id)
    })
  }
  ;(discoveryClean ? config.discovery.consul?.register : undefined)?.forEach((reg, i) => {
    const c = reg.check
    if (c === undefined) return
    const kinds = (['http', 'tcp', 'ttl'] as const).filter((k) => c[k] !== undefined)
    if (kinds.length !== 1) problems.push({ path: `$.discovery.consul.register[${i}].check`, message: kinds.length === 0 ? 'has no check kind' : `has ${kinds.join(' and ')}; give exactly one`, hint: 'one of http, tcp, ttl' })
  })
  // Checked even when other keys of discovery failed the schema: its problem is reported in the same run.
  const rawAddress = isMapping(config.discovery) && isMapping(config.discovery.consul) ? config.discovery.consul.address : undefined
  const consulAddress = typeof rawAddress === 'string' && clean('/discovery/consul/address') ? rawAddress : undefined
  const parsedAddress = consulAddress !== undefined ? parseConsulAddress(consulAddress) : undefined
  if (parsedAddress !== undefined && 'problem' in parsedAddress) {
    problems.push({ path: '$.discovery.consul.address', message: parsedAddress.problem, hint: `the agent's HTTP address: ${CONSUL_ADDRESS_FORM}` })
  }
  const wait = discoveryClean ? config.discovery.consul?.wait : undefined
  const waitTooLong = wait !== undefined ? waitProblem(wait) : undefined
  if (waitTooLong !== undefined) problems.push({ path: '$.discovery.consul.wait', message: waitTooLong, hint: 'give a duration from 1s to 10m, e.g. 30s or 5m' })
  problems.push(...meshProblems(config, clean))
  problems.push(...durationProblems(config, clean))
  problems.push(...adminProblems(config, clean))
  problems.push(...tracingProblems(config, clean))
  problems.push(...retryProblems(config))
  problems.push(...failoverProblems(config, clean))
  problems.push(...loadBalancerProblems(config, clean))
  return problems
}

function isPrime (n: number): boolean {
  if (n < 2) return false
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false
  return true
}

/** Balancing settings that contradict the policy (services.<name>.loadBalancer). */
function loadBalancerProblems (config: FastmeshConfig, clean: (instancePath: string) => boolean): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  for (const [name, svc] of Object.entries(isMapping(config.services) ? config.services : {})) {
    if (!clean(`/services/${name}`) || !isMapping(svc.loadBalancer)) continue
    const lb = svc.loadBalancer
    const at = jsonPath(`/services/${name}/loadBalancer`)
    const hashing = lb.policy === 'ring_hash' || lb.policy === 'maglev'
    if (hashing && lb.hashOn === undefined) problems.push({ path: `${at}.hashOn`, message: `is required with policy "${lb.policy}"`, hint: 'what to hash: { header: NAME }, { cookie: NAME }, { queryParameter: NAME } or { clientAddress: true }' })
    if (!hashing && lb.hashOn !== undefined) problems.push({ path: `${at}.hashOn`, message: `is only for policies "ring_hash" and "maglev", not "${lb.policy}"`, hint: 'remove hashOn, or set policy: ring_hash or maglev' })
    for (const [key, policy] of [['ringHash', 'ring_hash'], ['maglev', 'maglev'], ['ewma', 'ewma']] as const) {
      if (lb[key] !== undefined && lb.policy !== policy) problems.push({ path: `${at}.${key}`, message: `is only for policy "${policy}", not "${lb.policy}"`, hint: `remove ${key}, or set policy: ${policy}` })
    }
    const size = lb.maglev?.tableSize
    if (size !== undefined && !isPrime(size)) problems.push({ path: `${at}.maglev.tableSize`, message: `${size} is not a prime`, hint: 'maglev needs a prime table size, e.g. 65537 or 655373' })
  }
  return problems
}

type RouteSubset = { readonly tags: readonly string[], readonly meta: Readonly<Record<string, string>> }

/** The services a route names (destination, split backends, mirror), each with its JSON path. */
function serviceReferences (route: RouteConfig, at: string): Array<{ service: string, path: string }> {
  const d = route.destination
  const refs: Array<{ service: string, path: string }> = []
  if (d.service !== undefined) refs.push({ service: d.service, path: `${at}.destination.service` })
  d.backends?.forEach((b, j) => { refs.push({ service: b.service, path: `${at}.destination.backends[${j}].service` }) })
  if (route.mirror !== undefined) refs.push({ service: route.mirror.service, path: `${at}.mirror.service` })
  return refs
}

function sameSubset (a: RouteSubset | undefined, b: RouteSubset | undefined): boolean {
  return JSON.stringify([a?.tags ?? [], a?.meta ?? {}]) === JSON.stringify([b?.tags ?? [], b?.meta ?? {}])
}

/** Weighted splits, sticky keys and mirrors: the contradictions the schema cannot see. */
function splitProblems (route: RouteConfig, at: string): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const d = route.destination
  const backends = d.backends
  if ((d.service === undefined) === (backends === undefined)) {
    problems.push({ path: `${at}.destination`, message: d.service === undefined ? 'has neither service nor backends' : 'has both service and backends', hint: 'give exactly one: `service` for one destination, `backends` for a weighted split' })
  }
  if (backends !== undefined) {
    if (backends.every((b) => b.weight === 0)) problems.push({ path: `${at}.destination.backends`, message: 'every weight is 0: no request could be sent anywhere', hint: 'give at least one backend a weight above 0' })
    backends.forEach((b, j) => {
      const first = backends.findIndex((o) => o.service === b.service && sameSubset(o.subset, b.subset))
      if (first !== j) problems.push({ path: `${at}.destination.backends[${j}]`, message: `same service and subset as backends[${first}]`, hint: 'merge them into one backend with the summed weight' })
    })
  }
  if (d.stickyOn !== undefined) {
    const keys = (['header', 'cookie'] as const).filter((k) => d.stickyOn![k] !== undefined)
    if (keys.length !== 1) problems.push({ path: `${at}.destination.stickyOn`, message: keys.length === 0 ? 'has no key' : 'has header and cookie; give exactly one', hint: 'one of header, cookie' })
    if (backends === undefined) problems.push({ path: `${at}.destination.stickyOn`, message: 'needs destination.backends', hint: 'stickyOn keeps a client on one backend of a split; a single service has nothing to choose' })
  }
  const m = route.mirror
  if (m !== undefined) {
    const own = backends ?? (d.service !== undefined ? [{ service: d.service, subset: undefined, weight: 1 }] : [])
    const live = own.filter((b) => b.weight > 0)
    if (live.length === 1 && live[0]!.service === m.service && sameSubset(live[0]!.subset, m.subset)) {
      problems.push({ path: `${at}.mirror.service`, message: `mirrors to the route's own destination "${m.service}"`, hint: 'a mirror is another service or subset (e.g. the next version); mirroring to the destination itself only doubles its load' })
    }
  }
  return problems
}

/**
 * Durations whose `0` means "no limit" (as in Envoy): time limits a request or a drain may
 * do without. Every other duration is a period or a limit something relies on, where 0 is
 * refused rather than read as "at once".
 */
const ZERO_MEANS_NONE = [
  /^\$\.routes\[\d+\]\.(timeout|requestTimeout|idleTimeout)$/,
  /\.retries\.perTryTimeout$/,
  /\.retries\.backoff\.(base|max)$/,
  /^\$\.limits\.(headerTimeout|requestTimeout|deregisterGrace|drainTimeout)$/,
  /\.connectionPool\.connectTimeout$/,
  /^\$\.mesh\.authorization\.cacheTtl$/
]

/** Certificate lifetimes are planned in steps (src/identity), never one timer: no timer bound. */
const NOT_A_TIMER = /^\$\.mesh\.identity\./

/** Every duration value of `value` under `schema`, with its JSON path. */
function durationsIn (schema: unknown, value: unknown, path: string, out: Map<string, string>): void {
  if (schema === null || typeof schema !== 'object') return
  const s = schema as { pattern?: string, properties?: Record<string, unknown>, patternProperties?: Record<string, unknown>, additionalProperties?: unknown, items?: unknown, anyOf?: unknown[], oneOf?: unknown[] }
  if (s.pattern === DURATION_PATTERN && typeof value === 'string') { out.set(path, value); return }
  for (const branch of [...(s.anyOf ?? []), ...(s.oneOf ?? [])]) durationsIn(branch, value, path, out)
  if (Array.isArray(value)) {
    if (s.items !== undefined) value.forEach((v, i) => { durationsIn(s.items, v, `${path}[${i}]`, out) })
    return
  }
  if (!isMapping(value)) return
  for (const [key, v] of Object.entries(value)) {
    const at = /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`
    const own = s.properties?.[key]
    if (own !== undefined) { durationsIn(own, v, at, out); continue }
    for (const sub of Object.values(s.patternProperties ?? {})) durationsIn(sub, v, at, out)
    if (typeof s.additionalProperties === 'object') durationsIn(s.additionalProperties, v, at, out)
  }
}

/**
 * One meaning of 0 everywhere (no limit, where a limit may be off; refused elsewhere), no
 * duration a timer cannot wait, and service-wide per-try timeouts that fit every route's
 * whole-request timeout.
 */
function durationProblems (config: FastmeshConfig, clean: (instancePath: string) => boolean): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const found = new Map<string, string>()
  durationsIn(ConfigSchema, config, '$', found)
  for (const [path, value] of found) {
    if (!isDuration(value)) continue
    const ms = durationMs(value)
    if (ms === 0 && !ZERO_MEANS_NONE.some((re) => re.test(path))) {
      problems.push({ path, message: `(${value}) must be longer than 0`, hint: 'this duration cannot be switched off; 0 means "no limit" only for request time limits (routes\' timeout, requestTimeout, idleTimeout, perTryTimeout, limits.*Timeout)' })
    } else if (ms > MAX_TIMER_MS && !NOT_A_TIMER.test(path)) {
      problems.push({ path, message: `(${value}) is longer than the longest timer (596h, about 24.8 days)`, hint: 'use a shorter duration, or 0s where it means no limit' })
    }
  }
  if (!clean('/routes') || !clean('/services')) return problems
  ;(Array.isArray(config.routes) ? config.routes : []).forEach((route, i) => {
    if (route.retries !== undefined || route.requestTimeout === undefined || route.destination.service === undefined) return
    const perTry = config.services?.[route.destination.service]?.retries?.perTryTimeout
    const whole = durationMs(route.requestTimeout)
    if (perTry !== undefined && whole > 0 && durationMs(perTry) > whole) {
      problems.push({ path: `$.routes[${i}].requestTimeout`, message: `(${route.requestTimeout}) is shorter than the per-try timeout of service "${route.destination.service}" (${perTry}), whose retry policy this route uses`, hint: 'lengthen requestTimeout, shorten services.<name>.retries.perTryTimeout, or give the route its own retries' })
    }
  })
  return problems
}

/** Node mode and mesh settings that only make sense together. */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])

type RetryConfig = NonNullable<RouteConfig['retries']>

/** Retry policies that contradict themselves or their route. */
function retryProblems (config: FastmeshConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const check = (r: RetryConfig, at: string, route?: RouteConfig): void => {
    const on = new Set<string>(r.retryOn)
    if (on.has('retriable-status-codes') && r.retriableStatusCodes.length === 0) problems.push({ path: `${at}.retriableStatusCodes`, message: 'is empty but retryOn has "retriable-status-codes"', hint: 'list the statuses to retry, e.g. [503]' })
    if (!on.has('retriable-status-codes') && r.retriableStatusCodes.length > 0) problems.push({ path: `${at}.retryOn`, message: 'lacks "retriable-status-codes", so retriableStatusCodes is never used', hint: 'add "retriable-status-codes" to retryOn, or drop retriableStatusCodes' })
    if (r.perTryTimeout !== undefined && route?.requestTimeout !== undefined && durationMs(route.requestTimeout) > 0 && durationMs(r.perTryTimeout) > durationMs(route.requestTimeout)) problems.push({ path: `${at}.perTryTimeout`, message: `(${r.perTryTimeout}) is longer than the route's requestTimeout (${route.requestTimeout})`, hint: 'a try can never take longer than the whole request; shorten perTryTimeout' })
    if (r.backoff !== undefined && durationMs(r.backoff.base) > durationMs(r.backoff.max)) problems.push({ path: `${at}.backoff.base`, message: `(${r.backoff.base}) is longer than backoff.max (${r.backoff.max})`, hint: 'base is the first wait; max caps every wait' })
    // Only connect failures are retried for any method: nothing reached the upstream.
    const beyondConnect = [...on].some((c) => c !== 'connect-failure' && c !== 'refused')
    const methods = route?.match?.methods
    if (route !== undefined && beyondConnect && r.attempts > 1 && !r.nonIdempotent && methods !== undefined && methods.every((m) => !IDEMPOTENT_METHODS.has(m))) {
      problems.push({ path: `${at}.retryOn`, message: `retries ${[...on].filter((c) => c !== 'connect-failure' && c !== 'refused').join(', ')} on a route for ${methods.join(', ')} only, which are not idempotent: they would never be retried`, hint: 'set retries.nonIdempotent: true if the upstream tolerates repeats, or retry on connect-failure only' })
    }
  }
  if (Array.isArray(config.routes)) config.routes.forEach((route, i) => { if (route?.retries !== undefined) check(route.retries, `$.routes[${i}].retries`, route) })
  for (const [name, policy] of Object.entries(config.services ?? {})) if (policy.retries !== undefined) check(policy.retries, jsonPath(`/services/${name}/retries`))
  return problems
}

function meshProblems (config: FastmeshConfig, clean: (instancePath: string) => boolean): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  if (!clean('/mesh') || !clean('/localServices') || !clean('/gateway') || !clean('/discovery') || !clean('/listeners')) return problems
  const mesh = config.mesh
  if (mesh.mtls !== 'off' && mesh.identity.provider === 'consul' && config.discovery.consul === undefined) {
    problems.push({ path: '$.mesh.identity.provider', message: 'is "consul" but discovery.consul is not configured', hint: 'add discovery.consul, or use provider "files" with a dir made by `fastmesh certs init`' })
  }
  if (mesh.mtls !== 'off' && mesh.identity.provider === 'files' && mesh.identity.dir === undefined) {
    problems.push({ path: '$.mesh.identity.dir', message: 'is required with provider "files"', hint: 'a directory made by `fastmesh certs init --dir DIR`' })
  }
  if (config.gateway.mode !== 'node' && config.localServices.length > 0) {
    problems.push({ path: '$.localServices', message: 'is only for gateway.mode "node"', hint: 'an edge gateway fronts no local apps; set gateway.mode: node' })
  }
  const names = new Map<string, number>()
  const ports = new Map<string, string>([[`${config.listeners.outbound.address}:${config.listeners.outbound.port}`, '$.listeners.outbound']])
  config.localServices.forEach((local, i) => {
    const at = `$.localServices[${i}]`
    const first = names.get(local.name)
    if (first !== undefined) problems.push({ path: `${at}.name`, message: `duplicate local service "${local.name}"`, hint: `already declared at $.localServices[${first}]` })
    else names.set(local.name, i)
    if (local.name === config.gateway.name) problems.push({ path: `${at}.name`, message: `"${local.name}" is the gateway's own identity (gateway.name)`, hint: 'give the gateway or the service another name' })
    local.upstreams.forEach((up, j) => {
      const key = `${up.address}:${up.port}`
      const taken = ports.get(key)
      if (taken !== undefined && up.port !== 0) problems.push({ path: `${at}.upstreams[${j}].port`, message: `${key} is already used by ${taken}`, hint: 'each per-upstream listener needs its own port' })
      ports.set(key, `${at}.upstreams[${j}]`)
    })
  })
  const identity = config.listeners.outbound.identity
  if (identity !== undefined) {
    const at = '$.listeners.outbound.identity'
    if (config.gateway.mode !== 'node') problems.push({ path: at, message: 'is only for gateway.mode "node"', hint: 'an edge gateway has no shared outbound listener; its calls carry gateway.name' })
    else if (mesh.mtls === 'off') problems.push({ path: at, message: 'needs the mesh on (mesh.mtls is "off")', hint: 'an identity is a leaf certificate; set mesh.mtls to strict or permissive, or remove identity' })
    else if (!names.has(identity)) {
      const known = [...names.keys()]
      const guess = didYouMean(identity, known)
      problems.push({ path: at, message: `"${identity}" is not a local service of this gateway`, hint: guess !== undefined ? `did you mean "${guess}"?` : `name a localServices entry (declared: ${known.join(', ') || 'none'})` })
    }
  }
  return problems
}

/**
 * The admin API can change routing: off loopback it needs a token, checked here so that
 * `fastmesh validate` and `start` refuse the same configs (environment overrides applied).
 */
function adminProblems (config: FastmeshConfig, clean: (instancePath: string) => boolean): ConfigProblem[] {
  if (!clean('/listeners')) return []
  const admin = config.listeners.admin
  if (admin.token !== undefined || isLoopbackAddress(admin.address)) return []
  return [{
    path: '$.listeners.admin.token',
    message: `is required: the admin listener binds ${admin.address}, which is not loopback, and the admin API can change routing`,
    hint: 'set listeners.admin.token or env FASTMESH_ADMIN_TOKEN to a secret of 16+ characters (e.g. `openssl rand -hex 32`); clients send `Authorization: Bearer <token>`. Or bind the admin listener to 127.0.0.1'
  }]
}

/** The OTLP endpoint is an http(s) base URL the exporter can append `/v1/traces` to. */
function tracingProblems (config: FastmeshConfig, clean: (instancePath: string) => boolean): ConfigProblem[] {
  if (!clean('/telemetry')) return []
  const endpoint = config.telemetry.tracing.otlp.endpoint
  const problem = otlpEndpointProblem(endpoint)
  if (problem === undefined) return []
  return [{ path: '$.telemetry.tracing.otlp.endpoint', message: `${describeValue(redactText(endpoint))} ${problem}`, hint: 'the collector\'s OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (spans go to <endpoint>/v1/traces)' }]
}

export function otlpEndpointProblem (endpoint: string): string | undefined {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    return 'is not a URL'
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `has scheme "${url.protocol.slice(0, -1)}"; OTLP/HTTP takes http or https`
  if (url.search !== '' || url.hash !== '') return 'has a query or fragment; give the base URL only'
  return undefined
}

/**
 * Every plugin reference (src/config/plugin-refs.ts): it names a known plugin, and its options
 * (defaults filled in place) pass that plugin's schema and `checkOptions`. `plugins` are the
 * plugins whose options can be checked: the built-ins, and the custom ones once imported.
 */
function pluginRefProblems (config: FastmeshConfig, customPluginNames: readonly string[], plugins: ReadonlyMap<string, PluginOptionsDefinition>, clean: (instancePath: string) => boolean): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const known = [...builtinPluginNames, ...customPluginNames]
  for (const { ref, path, instancePath } of pluginRefs(config)) {
    if (!clean(instancePath)) continue
    const definition = plugins.get(ref.name)
    if (definition !== undefined) {
      ref.options ??= {}
      problems.push(...pluginOptionProblems(definition, ref.options, `${path}.options`))
    } else if (clean('/customPlugins') && !known.includes(ref.name)) {
      const guess = didYouMean(ref.name, known)
      problems.push({ path: `${path}.name`, message: `unknown plugin "${ref.name}"`, hint: guess !== undefined ? `did you mean "${guess}"?` : `built in: ${builtinPluginNames.join(', ')}; declare your own under customPlugins` })
    }
  }
  return problems
}

const pluginValidators = new WeakMap<object, ValidateFunction>()

/**
 * Checks (and fills defaults of) a plugin's options against the plugin's schema, then, when
 * they pass it, its own checks. Problems' paths start at `at`, the JSON path of the options.
 */
export function pluginOptionProblems (plugin: PluginOptionsDefinition, options: unknown, at: string): ConfigProblem[] {
  let validate = pluginValidators.get(plugin.optionsSchema)
  if (validate === undefined) {
    try {
      validate = ajv.compile(plugin.optionsSchema)
    } catch (err) {
      // A custom module's schema is code we do not own: a broken one refuses the config, never crashes it.
      return [{ path: at, message: `cannot be checked: the optionsSchema of plugin "${plugin.name}" is not a valid JSON Schema (${(err as Error).message})`, hint: 'fix the plugin\'s optionsSchema export' }]
    }
    pluginValidators.set(plugin.optionsSchema, validate)
  }
  const seeDocs = `see the options of plugin "${plugin.name}" in docs/plugins.md`
  const below = (p: { path: string, message: string, hint?: string }): ConfigProblem => ({ path: at + p.path.slice(1), message: p.message, hint: p.hint ?? seeDocs })
  if (!validate(options)) return schemaProblems(validate.errors ?? [], options).map(below)
  if (plugin.checkOptions === undefined) return []
  try {
    return plugin.checkOptions(options).map(below)
  } catch (err) {
    // Likewise its checkOptions: a failure is a problem, not a crash.
    return [{ path: at, message: `plugin "${plugin.name}" could not check its options: ${(err as Error).message}`, hint: 'its checkOptions threw; see the plugin\'s documentation' }]
  }
}

export interface ValidationResult {
  readonly config?: FastmeshConfig
  readonly problems: readonly ConfigProblem[]
  /** A valid config's settings that work, but not as an operator may expect (e.g. memory bounds that cut in). */
  readonly warnings?: readonly ConfigProblem[]
}

/** `67108864` → `64 MiB`, `1536` → `1.5 KiB`. */
export function formatBytes (n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++ }
  return u === 0 ? `${n} bytes` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`
}

/**
 * Mirrors that could hold more body bytes than the gateway allows all of them together
 * (`limits.mirrorBufferBytes`): valid — the gateway-wide limit holds, bodies beyond it are
 * not mirrored — but the route's own bounds then never apply in full.
 */
function mirrorWarnings (config: FastmeshConfig): ConfigProblem[] {
  const warnings: ConfigProblem[] = []
  const limit = config.limits.mirrorBufferBytes
  config.routes.forEach((route, i) => {
    const m = route.mirror
    if (m === undefined) return
    const at = `$.routes[${i}].mirror`
    if (m.maxBodyBytes > limit) {
      warnings.push({ path: `${at}.maxBodyBytes`, message: `${formatBytes(m.maxBodyBytes)} is more than limits.mirrorBufferBytes (${formatBytes(limit)}): bodies above ${formatBytes(limit)} are never mirrored`, hint: 'lower maxBodyBytes, or raise limits.mirrorBufferBytes if the gateway has the memory' })
      return
    }
    const product = m.maxConcurrent * m.maxBodyBytes
    if (product > limit) {
      warnings.push({ path: at, message: `may hold up to ${formatBytes(product)} of request bodies (maxConcurrent ${m.maxConcurrent} × maxBodyBytes ${formatBytes(m.maxBodyBytes)}), more than limits.mirrorBufferBytes (${formatBytes(limit)}) allows all mirrors together: bodies beyond it are not mirrored (counted skippedAtLimit)`, hint: 'lower maxConcurrent or maxBodyBytes, or raise limits.mirrorBufferBytes if the gateway has the memory' })
    }
  })
  return warnings
}

/**
 * A route's `disablePlugins` naming a plugin the route lists itself: the route's own use
 * already replaces the gateway-wide one and still runs, which `disablePlugins` reads as if
 * it would not.
 */
function disablePluginWarnings (config: FastmeshConfig): ConfigProblem[] {
  const warnings: ConfigProblem[] = []
  config.routes.forEach((route, i) => {
    (route.disablePlugins ?? []).forEach((name, j) => {
      const own = route.plugins.findIndex((ref) => ref.name === name)
      if (own < 0) return
      warnings.push({ path: `$.routes[${i}].disablePlugins[${j}]`, message: `switches off the gateway-wide "${name}", but the route lists its own "${name}" (plugins[${own}]), which still runs`, hint: `to run without ${name} here, drop it from the route's plugins; to run the route's own, drop it from disablePlugins (a route's own use replaces the gateway-wide one anyway)` })
    })
  })
  return warnings
}

/**
 * A `rate-limit` without `store.redis` on a gateway with workers: each worker counts its own
 * connections' requests, so the gateway as a whole lets up to `workers` × `max` through.
 */
function workerWarnings (config: FastmeshConfig): ConfigProblem[] {
  const workers = config.gateway.workers
  if (workers === 1) return []
  const warnings: ConfigProblem[] = []
  const check = (uses: FastmeshConfig['plugins'], at: string): void => {
    uses.forEach((use, j) => {
      if (use.name !== 'rate-limit' || (use.options as { store?: { redis?: unknown } } | undefined)?.store?.redis !== undefined) return
      warnings.push({ path: `${at}[${j}]`, message: `counts in each worker's memory: with gateway.workers ${String(workers)}, the gateway as a whole admits up to ${workers === 'auto' ? 'one `max` per core' : `${workers} × max`} per window`, hint: 'set store.redis for one count across workers (and gateways), or divide max by the workers (docs/workers.md)' })
    })
  }
  check(config.plugins, '$.plugins')
  config.routes.forEach((route, i) => { check(route.plugins, `$.routes[${i}].plugins`) })
  return warnings
}

/**
 * Validates a parsed document (defaults are filled in place, so pass a copy you own).
 * Returns every problem; `config` only when there are none. Plugin options are checked for
 * the plugins in `plugins` (the built-ins unless told); src/config/compile.ts adds the custom
 * plugins it imported, so a document is checked whole in one pass.
 */
export function validateConfigDocument (doc: unknown, plugins: ReadonlyMap<string, PluginOptionsDefinition> = builtinPluginOptions): ValidationResult {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    return { problems: [{ path: '$', message: `must be a mapping, got ${describeValue(doc)}`, hint: 'a config file is a YAML/JSON object with keys like routes, discovery' }] }
  }
  if (!validateSchema(doc)) {
    // Report the schema's problems and those of the parts that passed it, all in one go.
    const errors = validateSchema.errors ?? []
    const clean = (at: string) => !errors.some((e) => within(e.instancePath, at))
    const declared = (doc as { customPlugins?: unknown }).customPlugins
    const custom = isMapping(declared) ? Object.keys(declared) : []
    return { problems: redactProblems([...schemaProblems(errors, doc), ...semanticProblems(doc as FastmeshConfig, custom, plugins, clean)]) }
  }
  const config = doc
  const problems = redactProblems(semanticProblems(config, Object.keys(config.customPlugins), plugins))
  if (problems.length > 0) return { problems }
  const warnings = [...mirrorWarnings(config), ...disablePluginWarnings(config), ...workerWarnings(config)]
  return warnings.length > 0 ? { config, problems, warnings } : { config, problems }
}

/** The last pass over every problem's text: what redactText recognises on its own (URL userinfo) is hidden. */
function redactProblems (problems: ConfigProblem[]): ConfigProblem[] {
  return problems.map((p) => ({ path: p.path, message: redactText(p.message), ...(p.hint !== undefined ? { hint: redactText(p.hint) } : {}) }))
}

export function formatProblems (problems: readonly ConfigProblem[]): string {
  return problems.map((p) => `  ${p.path}: ${p.message}${p.hint !== undefined ? ` (${p.hint})` : ''}`).join('\n')
}

/**
 * Failover targets (`services.<name>.failover`): each names something other than its
 * primary, resolvable with the discovery configured, and chains have no loop.
 */
function failoverProblems (config: FastmeshConfig, clean: (instancePath: string) => boolean): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  if (!clean('/services') || !clean('/discovery')) return problems
  const consul = config.discovery.consul !== undefined
  const known = Object.keys(config.discovery.embedded.services)
  /** Service → the other services its targets name, with the JSON path of each reference. */
  const edges = new Map<string, Array<{ to: string, path: string }>>()
  for (const [name, policy] of Object.entries(config.services)) {
    const primary = selectorFor(config, name)
    const seen = new Map<string, number>([[selectorKey(primary), -1]])
    const out: Array<{ to: string, path: string }> = []
    policy.failover.forEach((t, i) => {
      const at = jsonPath(`/services/${name}/failover/${i}`)
      if (t.subset === undefined && t.service === undefined && t.datacenter === undefined) {
        problems.push({ path: at, message: 'is empty', hint: 'give at least one of subset, service, datacenter' })
        return
      }
      if (t.datacenter !== undefined && !consul) {
        problems.push({ path: `${at}.datacenter`, message: 'needs discovery.consul', hint: 'datacenters are Consul\'s; the embedded registry has one' })
      }
      if (t.service !== undefined && !consul && !known.includes(t.service)) {
        const guess = didYouMean(t.service, known)
        problems.push({ path: `${at}.service`, message: `unknown service "${t.service}"`, hint: guess !== undefined ? `did you mean "${guess}"?` : `declare it under discovery.embedded.services (known: ${known.join(', ') || 'none'})` })
      }
      const key = selectorKey(failoverTarget(primary, t))
      const earlier = seen.get(key)
      if (earlier === -1) problems.push({ path: at, message: `fails over to "${name}" itself`, hint: 'a target must differ from the primary in service, subset or datacenter' })
      else if (earlier !== undefined) problems.push({ path: at, message: 'repeats an earlier target', hint: `same as ${jsonPath(`/services/${name}/failover/${earlier}`)}` })
      else seen.set(key, i)
      if (t.service !== undefined && t.service !== name) out.push({ to: t.service, path: `${at}.service` })
    })
    edges.set(name, out)
  }
  // A loop through other services (A → B → A): each reported once, at its first edge.
  const reported = new Set<string>()
  const walk = (start: string, node: string, trail: string[], paths: string[]): void => {
    for (const e of edges.get(node) ?? []) {
      if (e.to === start) {
        const cycle = [...trail, node]
        const id = [...cycle].sort().join('\u0000')
        if (!reported.has(id)) {
          reported.add(id)
          problems.push({ path: paths[0] ?? e.path, message: `failover loop: ${[...cycle, start].join(' → ')}`, hint: 'a service\'s failover chain includes the chains of the services it names; remove one of these targets' })
        }
      } else if (!trail.includes(e.to) && e.to !== node) {
        walk(start, e.to, [...trail, node], [...paths, e.path])
      }
    }
  }
  for (const name of edges.keys()) walk(name, name, [], [])
  return problems
}
