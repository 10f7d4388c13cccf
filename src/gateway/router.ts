// Route layer, matching: the routing table compiled once per config version into an
// ordered list of predicates (precedence in docs/routing.md), first match wins.
import type { IncomingHttpHeaders } from 'node:http'
import type { PathMatchConfig, RouteConfig } from '../config/schema.js'
import { compileTemplate } from '../config/path-template.js'

export type RouteParams = Record<string, string>

export interface RouteMatch {
  readonly route: CompiledRouteMatcher
  readonly params: RouteParams | undefined
  /** The normalised path (no query), as matched. */
  readonly path: string
  /** Everything from `?` on, or ''. */
  readonly search: string
}

export interface CompiledRouteMatcher {
  readonly name: string
  readonly config: RouteConfig
  /** Position in config order. */
  readonly index: number
  /** Sort key, most specific first; shown by the admin API. */
  readonly precedence: readonly number[]
  /** The path to send upstream (without query). */
  rewrite(match: RouteMatch): string
}

interface Predicate {
  readonly matcher: CompiledRouteMatcher
  readonly host: ((host: string) => boolean) | undefined
  readonly method: ReadonlySet<string> | undefined
  readonly path: ((path: string) => RouteParams | undefined | false) | undefined
  readonly headers: ReadonlyArray<(headers: IncomingHttpHeaders) => boolean>
  readonly query: ReadonlyArray<(query: URLSearchParams) => boolean>
}

type ValueTest = (value: string | undefined) => boolean

function valueTest (c: { exact?: string, prefix?: string, regex?: string, present?: boolean, invert?: boolean }): ValueTest {
  let test: ValueTest
  if (c.exact !== undefined) { const e = c.exact; test = (v) => v === e } else if (c.prefix !== undefined) { const p = c.prefix; test = (v) => v !== undefined && v.startsWith(p) } else if (c.regex !== undefined) { const r = new RegExp(`^(?:${c.regex})$`); test = (v) => v !== undefined && r.test(v) } else {
    const want = c.present !== false
    test = (v) => (v !== undefined) === want
  }
  return c.invert === true ? (v) => !test(v) : test
}

function hostTest (hosts: readonly string[]): { test: (host: string) => boolean, rank: number } {
  const exact = new Set<string>()
  const suffixes: string[] = []
  for (const h of hosts) {
    const name = h.toLowerCase().replace(/:[0-9]+$/, '').replace(/\.$/, '')
    if (name.startsWith('*.')) suffixes.push(name.slice(1))
    else exact.add(name)
  }
  const longest = Math.max(0, ...suffixes.map((s) => s.length))
  return {
    test: (host) => exact.has(host) || suffixes.some((s) => host.length > s.length && host.endsWith(s)),
    // Exact names outrank wildcards; longer wildcards outrank shorter ones.
    rank: suffixes.length === 0 ? 2000 : 1000 + longest
  }
}

interface PathRule {
  test: (path: string) => RouteParams | undefined | false
  rank: readonly [number, number]
  prefix?: string
}

function pathRule (p: PathMatchConfig): PathRule {
  if ('exact' in p) {
    const e = p.exact
    return { test: (path) => path === e ? undefined : false, rank: [4, e.length] }
  }
  if ('template' in p) {
    const t = compileTemplate(p.template)
    return {
      test: (path) => {
        const m = t.regex.exec(path)
        if (m === null) return false
        const params: RouteParams = {}
        t.params.forEach((name, i) => { params[name] = m[i + 1] ?? '' })
        return params
      },
      rank: [3, t.literalLength]
    }
  }
  if ('regex' in p) {
    const r = new RegExp(`^(?:${p.regex})$`)
    return {
      test: (path) => {
        const m = r.exec(path)
        if (m === null) return false
        return m.groups !== undefined ? { ...m.groups } : undefined
      },
      rank: [2, p.regex.length]
    }
  }
  // Segment-aware prefix: `/api` takes `/api` and `/api/...`, never `/apix`.
  const prefix = p.prefix.length > 1 && p.prefix.endsWith('/') ? p.prefix.slice(0, -1) : p.prefix
  const bare = prefix === '/'
  return {
    test: (path) => (bare || (path.startsWith(prefix) && (path.length === prefix.length || path.charCodeAt(prefix.length) === 47))) ? undefined : false,
    rank: [1, prefix.length],
    prefix
  }
}

function rewriter (route: RouteConfig, prefix: string | undefined): (m: RouteMatch) => string {
  const d = route.destination
  if (d.stripPrefix === true && prefix !== undefined && prefix !== '/') {
    const n = prefix.length
    return (m) => m.path.length === n ? '/' : m.path.slice(n)
  }
  if (d.rewritePath !== undefined) {
    const parts = d.rewritePath.split(/(:[a-zA-Z_$][\w$]*)/)
    return (m) => {
      let out = ''
      for (let i = 0; i < parts.length; i++) out += i % 2 === 1 ? (m.params?.[parts[i]!.slice(1)] ?? '') : parts[i]
      return out
    }
  }
  return (m) => m.path
}

export class Router {
  private readonly predicates: Predicate[]
  private readonly usesQuery: boolean

  constructor (routes: readonly RouteConfig[]) {
    const compiled = routes.map((route, index) => {
      const m = route.match ?? {}
      const host = m.hosts !== undefined ? hostTest(m.hosts) : undefined
      const path = m.path !== undefined ? pathRule(m.path) : undefined
      const precedence = [
        route.priority ?? 0,
        host?.rank ?? 0,
        path?.rank[0] ?? 0,
        path?.rank[1] ?? 0,
        m.methods !== undefined ? 1 : 0,
        m.headers?.length ?? 0,
        m.query?.length ?? 0,
        -index
      ]
      const matcher: CompiledRouteMatcher = { name: route.name, config: route, index, precedence, rewrite: rewriter(route, path?.prefix) }
      const predicate: Predicate = {
        matcher,
        host: host?.test,
        method: m.methods !== undefined ? new Set(m.methods) : undefined,
        path: path?.test,
        headers: (m.headers ?? []).map((c) => {
          const name = c.name.toLowerCase()
          const test = valueTest(c)
          return (h: IncomingHttpHeaders) => {
            const v = h[name]
            return test(Array.isArray(v) ? v.join(',') : v)
          }
        }),
        query: (m.query ?? []).map((c) => {
          const test = valueTest(c)
          return (q: URLSearchParams) => test(q.get(c.name) ?? undefined)
        })
      }
      return predicate
    })
    compiled.sort((a, b) => {
      const pa = a.matcher.precedence
      const pb = b.matcher.precedence
      for (let i = 0; i < pa.length; i++) if (pa[i] !== pb[i]) return pb[i]! - pa[i]!
      return 0
    })
    this.predicates = compiled
    this.usesQuery = compiled.some((p) => p.query.length > 0)
  }

  /** Routes in the order they are tried. */
  get ordered (): CompiledRouteMatcher[] {
    return this.predicates.map((p) => p.matcher)
  }

  /**
   * The first route that takes the request, or undefined. `path` is already normalised
   * (src/gateway/request-target.ts: every entry normalises once, before routing); `search`
   * is everything from `?` on, or ''.
   */
  match (method: string, hostHeader: string | undefined, path: string, search: string, headers: IncomingHttpHeaders): RouteMatch | undefined {
    const host = hostOf(hostHeader)
    let query: URLSearchParams | undefined
    for (const p of this.predicates) {
      if (p.method !== undefined && !p.method.has(method)) continue
      if (p.host !== undefined && !p.host(host)) continue
      let params: RouteParams | undefined
      if (p.path !== undefined) {
        const r = p.path(path)
        if (r === false) continue
        params = r
      }
      let ok = true
      for (const h of p.headers) if (!h(headers)) { ok = false; break }
      if (!ok) continue
      if (p.query.length > 0 && this.usesQuery) {
        query ??= new URLSearchParams(search)
        for (const t of p.query) if (!t(query)) { ok = false; break }
        if (!ok) continue
      }
      return { route: p.matcher, params, path, search }
    }
    return undefined
  }
}

/** Host header without port or trailing dot, lower-cased (`[::1]:80` → `[::1]`). */
export function hostOf (hostHeader: string | undefined): string {
  if (hostHeader === undefined) return ''
  let h = hostHeader
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']')
    h = end === -1 ? h : h.slice(0, end + 1)
  } else {
    const colon = h.indexOf(':')
    if (colon !== -1) h = h.slice(0, colon)
  }
  // `example.com.` (fully qualified) is the same host as `example.com`.
  if (h.length > 1 && h.charCodeAt(h.length - 1) === 46 /* . */) h = h.slice(0, -1)
  return h.toLowerCase()
}
