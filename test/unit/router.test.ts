// The route table: precedence, host/path/method/header/query matching and rewrites, on
// request targets normalised as every entry does (the normaliser's own specification is
// test/unit/request-target.test.ts). Routes go through config validation first, so defaults
// are filled as in use. Every table is built twice, scanned and indexed (large tables use the
// index), and every match is asked of both: they must agree, so these tests specify both.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { IncomingHttpHeaders } from 'node:http'
import { checkConfig } from '../../src/config/load.js'
import { hostOf, Router, type RouteMatch } from '../../src/gateway/router.js'
import { normalizeRequestTarget } from '../../src/gateway/request-target.js'

type RouteInput = Record<string, unknown> & { name: string }

type AnyRouter = Pick<Router, 'match' | 'ordered'>

function router (routes: RouteInput[]): AnyRouter {
  const doc = {
    discovery: { embedded: { services: { svc: { endpoints: [] } } } },
    routes: routes.map((r) => ({ destination: { service: 'svc' }, ...r }))
  }
  const config = checkConfig(doc, 'router-test', {}).config.routes
  const scanned = new Router(config, { index: false })
  const indexed = new Router(config, { index: true })
  return {
    get ordered () { return scanned.ordered },
    match (...args: Parameters<Router['match']>) {
      const a = scanned.match(...args)
      const b = indexed.match(...args)
      assert.deepEqual(b === undefined ? undefined : { name: b.route.name, params: b.params, path: b.path, search: b.search },
        a === undefined ? undefined : { name: a.route.name, params: a.params, path: a.path, search: a.search }, `indexed and scanned agree on ${JSON.stringify(args.slice(0, 4))}`)
      return a
    }
  }
}

function names (r: AnyRouter): string[] {
  return r.ordered.map((m) => m.name)
}

/** As the gateway does it: normalise the target (null: refused with 400), then match. */
function matchOf (r: AnyRouter, url: string, opts: { method?: string, host?: string, headers?: IncomingHttpHeaders } = {}): RouteMatch | undefined | null {
  const t = normalizeRequestTarget(url, 'reject')
  if ('problem' in t) return null
  return r.match(opts.method ?? 'GET', opts.host ?? 'example.com', t.path, t.search, opts.headers ?? {})
}

function nameOf (r: AnyRouter, url: string, opts: { method?: string, host?: string, headers?: IncomingHttpHeaders } = {}): string | undefined {
  const m = matchOf(r, url, opts)
  return m === null ? 'BAD PATH' : m?.route.name
}

function rewritten (r: AnyRouter, url: string): string | undefined {
  const m = matchOf(r, url)
  return m === null || m === undefined ? undefined : m.route.rewrite(m)
}

// ---------------------------------------------------------------- precedence

test('path kinds: exact > template > regex > prefix > none, whatever the config order', () => {
  const r = router([
    { name: 'none' },
    { name: 'prefix', match: { path: { prefix: '/a' } } },
    { name: 'regex', match: { path: { regex: '/a/[a-z]+' } } },
    { name: 'template', match: { path: { template: '/a/:x' } } },
    { name: 'exact', match: { path: { exact: '/a/b' } } }
  ])
  assert.deepEqual(names(r), ['exact', 'template', 'regex', 'prefix', 'none'])
  assert.equal(nameOf(r, '/a/b'), 'exact')
  assert.equal(nameOf(r, '/a/c'), 'template')
  assert.equal(nameOf(r, '/a/c/d'), 'prefix', 'the template takes one segment and the regex is anchored')
  assert.equal(nameOf(r, '/a'), 'prefix')
  assert.equal(nameOf(r, '/other'), 'none')
})

test('regex is tried before prefix', () => {
  const r = router([
    { name: 'prefix', match: { path: { prefix: '/v1' } } },
    { name: 'regex', match: { path: { regex: '/v1/[0-9]+' } } }
  ])
  assert.equal(nameOf(r, '/v1/42'), 'regex')
  assert.equal(nameOf(r, '/v1/x'), 'prefix')
})

test('a longer prefix is tried first', () => {
  const r = router([
    { name: 'root', match: { path: { prefix: '/' } } },
    { name: 'api', match: { path: { prefix: '/api' } } },
    { name: 'api-v2', match: { path: { prefix: '/api/v2' } } }
  ])
  assert.deepEqual(names(r), ['api-v2', 'api', 'root'])
  assert.equal(nameOf(r, '/api/v2/x'), 'api-v2')
  assert.equal(nameOf(r, '/api/v3'), 'api')
  assert.equal(nameOf(r, '/elsewhere'), 'root')
})

test('a template with more literal text is tried first', () => {
  const r = router([
    { name: 'any', match: { path: { template: '/:a/:b' } } },
    { name: 'users', match: { path: { template: '/users/:id' } } }
  ])
  assert.deepEqual(names(r), ['users', 'any'])
  assert.equal(nameOf(r, '/users/7'), 'users')
  assert.equal(nameOf(r, '/items/7'), 'any')
})

test('prefixes are segment-aware: /api takes /api and /api/x, never /apix', () => {
  const r = router([{ name: 'api', match: { path: { prefix: '/api' } } }])
  assert.equal(nameOf(r, '/api'), 'api')
  assert.equal(nameOf(r, '/api/'), 'api')
  assert.equal(nameOf(r, '/api/x'), 'api')
  assert.equal(nameOf(r, '/apix'), undefined)
})

test('a trailing / on a prefix is ignored', () => {
  const r = router([{ name: 'api', match: { path: { prefix: '/api/' } } }])
  assert.equal(nameOf(r, '/api'), 'api')
  assert.equal(nameOf(r, '/api/x'), 'api')
  assert.equal(nameOf(r, '/apix'), undefined)
})

test('hosts: exact > wildcard > none, and a longer wildcard before a shorter one', () => {
  const r = router([
    { name: 'none' },
    { name: 'wild', match: { hosts: ['*.example.com'] } },
    { name: 'wild-longer', match: { hosts: ['*.api.example.com'] } },
    { name: 'exact', match: { hosts: ['api.example.com'] } }
  ])
  assert.deepEqual(names(r), ['exact', 'wild-longer', 'wild', 'none'])
  assert.equal(nameOf(r, '/', { host: 'api.example.com' }), 'exact')
  assert.equal(nameOf(r, '/', { host: 'v1.api.example.com' }), 'wild-longer')
  assert.equal(nameOf(r, '/', { host: 'www.example.com' }), 'wild')
  assert.equal(nameOf(r, '/', { host: 'example.org' }), 'none')
})

test('host outranks path: a host route with a prefix beats a host-less exact path', () => {
  const r = router([
    { name: 'exact-path', match: { path: { exact: '/x' } } },
    { name: 'host-prefix', match: { hosts: ['api.example.com'], path: { prefix: '/' } } }
  ])
  assert.equal(nameOf(r, '/x', { host: 'api.example.com' }), 'host-prefix')
  assert.equal(nameOf(r, '/x', { host: 'other.example.com' }), 'exact-path')
})

test('with the same path, a route with methods is tried first', () => {
  const r = router([
    { name: 'any', match: { path: { exact: '/orders' } } },
    { name: 'post', match: { path: { exact: '/orders' }, methods: ['POST'] } }
  ])
  assert.deepEqual(names(r), ['post', 'any'])
  assert.equal(nameOf(r, '/orders', { method: 'POST' }), 'post')
  assert.equal(nameOf(r, '/orders', { method: 'GET' }), 'any')
})

test('more header conditions first, then more query conditions', () => {
  const r = router([
    { name: 'q1', match: { path: { prefix: '/' }, query: [{ name: 'a', present: true }] } },
    { name: 'h1', match: { path: { prefix: '/' }, headers: [{ name: 'x-a', present: true }] } },
    { name: 'h2', match: { path: { prefix: '/' }, headers: [{ name: 'x-a', present: true }, { name: 'x-b', present: true }] } },
    { name: 'h1q1', match: { path: { prefix: '/' }, headers: [{ name: 'x-a', present: true }], query: [{ name: 'a', present: true }] } },
    { name: 'q2', match: { path: { prefix: '/' }, query: [{ name: 'a', present: true }, { name: 'b', present: true }] } }
  ])
  assert.deepEqual(names(r), ['h2', 'h1q1', 'h1', 'q2', 'q1'])
  assert.equal(nameOf(r, '/?a=1', { headers: { 'x-a': '1' } }), 'h1q1')
  assert.equal(nameOf(r, '/?a=1&b=2'), 'q2')
})

test('priority overrides the automatic precedence, both ways', () => {
  const r = router([
    { name: 'exact', match: { path: { exact: '/a' } } },
    { name: 'catch-all', priority: 10 },
    { name: 'demoted', priority: -1, match: { hosts: ['example.com'], path: { exact: '/a' } } }
  ])
  assert.deepEqual(names(r), ['catch-all', 'exact', 'demoted'])
  assert.equal(nameOf(r, '/a'), 'catch-all')
  assert.deepEqual(r.ordered[0]!.precedence.slice(0, 1), [10])
})

test('config order breaks ties', () => {
  const r = router([
    { name: 'first', match: { path: { prefix: '/a' } } },
    { name: 'second', match: { path: { prefix: '/b' } } },
    { name: 'third', match: { path: { prefix: '/a' } } }
  ])
  assert.deepEqual(names(r), ['first', 'second', 'third'])
  assert.equal(nameOf(r, '/a'), 'first')
  assert.deepEqual(r.ordered.map((m) => m.index), [0, 1, 2])
})

test('no routes: nothing matches', () => {
  assert.equal(matchOf(router([]), '/'), undefined)
})

// ---------------------------------------------------------------- conditions

test('hosts are compared without port and case-insensitively', () => {
  const r = router([{ name: 'api', match: { hosts: ['API.example.com:8443'] } }])
  assert.equal(nameOf(r, '/', { host: 'api.example.com' }), 'api')
  assert.equal(nameOf(r, '/', { host: 'Api.Example.COM:8080' }), 'api')
  assert.equal(nameOf(r, '/', { host: 'api.example.com.evil' }), undefined)
})

test('a wildcard takes one or more labels but not the bare domain', () => {
  const r = router([{ name: 'wild', match: { hosts: ['*.example.com'] } }])
  assert.equal(nameOf(r, '/', { host: 'a.example.com' }), 'wild')
  assert.equal(nameOf(r, '/', { host: 'a.b.example.com:80' }), 'wild')
  assert.equal(nameOf(r, '/', { host: 'example.com' }), undefined)
  assert.equal(nameOf(r, '/', { host: 'badexample.com' }), undefined)
})

test('IPv6 literal hosts match with and without a port', () => {
  const r = router([{ name: 'v6', match: { hosts: ['[::1]'] } }, { name: 'rest' }])
  assert.equal(nameOf(r, '/', { host: '[::1]' }), 'v6')
  assert.equal(nameOf(r, '/', { host: '[::1]:8080' }), 'v6')
  assert.equal(nameOf(r, '/', { host: '[::2]:8080' }), 'rest')
})

test('a fully qualified Host (trailing dot) takes the route of the name (regression: host route bypass)', () => {
  const r = router([{ name: 'admin-host', match: { hosts: ['admin.example.com'] } }, { name: 'rest' }])
  assert.equal(nameOf(r, '/', { host: 'admin.example.com.' }), 'admin-host')
  assert.equal(nameOf(r, '/', { host: 'admin.example.com.:443' }), 'admin-host')
})

test('a request without Host takes only host-less routes', () => {
  const r = router([{ name: 'named', match: { hosts: ['a.test'] } }, { name: 'rest' }])
  assert.equal(r.match('GET', undefined, '/', '', {})?.route.name, 'rest')
})

test('hostOf strips the port, keeps IPv6 brackets, lower-cases', () => {
  assert.equal(hostOf('Example.COM:8080'), 'example.com')
  assert.equal(hostOf('example.com'), 'example.com')
  assert.equal(hostOf('[::1]:80'), '[::1]')
  assert.equal(hostOf('[2001:DB8::1]'), '[2001:db8::1]')
  assert.equal(hostOf('example.com.'), 'example.com')
  assert.equal(hostOf(undefined), '')
  assert.equal(hostOf(''), '')
})

test('methods: only the listed ones', () => {
  const r = router([{ name: 'read', match: { methods: ['GET', 'HEAD'] } }])
  assert.equal(nameOf(r, '/', { method: 'GET' }), 'read')
  assert.equal(nameOf(r, '/', { method: 'HEAD' }), 'read')
  assert.equal(nameOf(r, '/', { method: 'POST' }), undefined)
})

test('header conditions: exact, prefix, anchored regex, present, invert; names case-insensitive', () => {
  const r = router([
    { name: 'exact', match: { path: { prefix: '/exact' }, headers: [{ name: 'X-Beta', exact: '1' }] } },
    { name: 'prefix', match: { path: { prefix: '/prefix' }, headers: [{ name: 'x-tenant', prefix: 'acme-' }] } },
    { name: 'regex', match: { path: { prefix: '/regex' }, headers: [{ name: 'x-v', regex: '[0-9]+' }] } },
    { name: 'absent', match: { path: { prefix: '/absent' }, headers: [{ name: 'authorization', present: false }] } },
    { name: 'invert', match: { path: { prefix: '/invert' }, headers: [{ name: 'x-env', exact: 'prod', invert: true }] } }
  ])
  assert.equal(nameOf(r, '/exact', { headers: { 'x-beta': '1' } }), 'exact')
  assert.equal(nameOf(r, '/exact', { headers: { 'x-beta': '10' } }), undefined)
  assert.equal(nameOf(r, '/prefix', { headers: { 'x-tenant': 'acme-1' } }), 'prefix')
  assert.equal(nameOf(r, '/prefix', { headers: { 'x-tenant': 'other' } }), undefined)
  assert.equal(nameOf(r, '/regex', { headers: { 'x-v': '42' } }), 'regex')
  assert.equal(nameOf(r, '/regex', { headers: { 'x-v': 'v42' } }), undefined, 'the regex is anchored')
  assert.equal(nameOf(r, '/absent'), 'absent')
  assert.equal(nameOf(r, '/absent', { headers: { authorization: 'x' } }), undefined)
  assert.equal(nameOf(r, '/invert'), 'invert')
  assert.equal(nameOf(r, '/invert', { headers: { 'x-env': 'dev' } }), 'invert')
  assert.equal(nameOf(r, '/invert', { headers: { 'x-env': 'prod' } }), undefined)
})

test('a repeated header is matched as its comma-joined value', () => {
  const r = router([{ name: 'both', match: { headers: [{ name: 'x-a', exact: '1,2' }] } }])
  assert.equal(nameOf(r, '/', { headers: { 'x-a': ['1', '2'] } }), 'both')
})

test('query conditions read the decoded parameter', () => {
  const r = router([
    { name: 'debug', match: { query: [{ name: 'debug', exact: 'a b' }] } },
    { name: 'rest' }
  ])
  assert.equal(nameOf(r, '/x?debug=a%20b'), 'debug')
  assert.equal(nameOf(r, '/x?debug=a+b'), 'debug')
  assert.equal(nameOf(r, '/x?debug=1'), 'rest')
  assert.equal(nameOf(r, '/x'), 'rest')
})

test('the query string never takes part in path matching and is returned as search', () => {
  const r = router([{ name: 'exact', match: { path: { exact: '/a' } } }])
  const m = matchOf(r, '/a?x=/b&y=1')
  assert.equal(m?.route.name, 'exact')
  assert.equal(m?.path, '/a')
  assert.equal(m?.search, '?x=/b&y=1')
  assert.equal(matchOf(r, '/a')?.search, '')
})

test('template and regex parameters are returned', () => {
  const r = router([
    { name: 'user', match: { path: { template: '/users/:id/*' } } },
    { name: 'ver', match: { path: { regex: '/v(?<ver>[0-9]+)/.*' } } }
  ])
  assert.deepEqual(matchOf(r, '/users/7/a/b')?.params, { id: '7', '*': 'a/b' })
  assert.deepEqual(matchOf(r, '/users/7')?.params, { id: '7', '*': '' })
  assert.deepEqual(matchOf(r, '/v2/x')?.params, { ver: '2' })
})

// ---------------------------------------------------------------- normalisation

test('a dot-segment path is matched (and forwarded) as its normalised form', () => {
  const r = router([
    { name: 'admin', match: { path: { prefix: '/admin' } } },
    { name: 'public', match: { path: { prefix: '/public' } } }
  ])
  assert.equal(nameOf(r, '/public/../admin/x'), 'admin')
  assert.equal(nameOf(r, '/public/%2e%2e/admin'), 'admin')
  assert.equal(nameOf(r, '/public//x'), 'public')
  assert.equal(matchOf(r, '/public/./x?q=1')?.path, '/public/x')
})

test('an encoded-character path is matched as its decoded form: /%61dmin takes the /admin route', () => {
  const r = router([
    { name: 'admin', match: { path: { exact: '/admin' } } },
    { name: 'rest' }
  ])
  assert.equal(nameOf(r, '/%61dmin'), 'admin')
  assert.equal(nameOf(r, '/%2e%2e/admin'), 'admin')
  assert.equal(nameOf(r, '/..%2fadmin'), 'BAD PATH', 'an escaped slash is refused by default')
})

// ---------------------------------------------------------------- rewrites

test('without a rewrite the normalised path goes upstream', () => {
  const r = router([{ name: 'a', match: { path: { prefix: '/a' } } }])
  assert.equal(rewritten(r, '/a/./b?x=1'), '/a/b')
})

test('stripPrefix removes the prefix, leaving at least /', () => {
  const r = router([{ name: 'cat', match: { path: { prefix: '/catalog' } }, destination: { service: 'svc', stripPrefix: true } }])
  assert.equal(rewritten(r, '/catalog/items'), '/items')
  assert.equal(rewritten(r, '/catalog/items/'), '/items/')
  assert.equal(rewritten(r, '/catalog'), '/')
  assert.equal(rewritten(r, '/catalog/'), '/')
  assert.equal(rewritten(r, '/catalog/a?q=1'), '/a', 'the query is not part of the rewritten path')
})

test('stripPrefix with a prefix written with a trailing /', () => {
  const r = router([{ name: 'cat', match: { path: { prefix: '/catalog/' } }, destination: { service: 'svc', stripPrefix: true } }])
  assert.equal(rewritten(r, '/catalog/items'), '/items')
  assert.equal(rewritten(r, '/catalog'), '/')
})

test('stripPrefix of the root prefix keeps the path', () => {
  const r = router([{ name: 'all', match: { path: { prefix: '/' } }, destination: { service: 'svc', stripPrefix: true } }])
  assert.equal(rewritten(r, '/a/b'), '/a/b')
})

test('rewritePath fills template parameters', () => {
  const r = router([{ name: 'u', match: { path: { template: '/users/:id/posts/:post' } }, destination: { service: 'svc', rewritePath: '/v1/users/:id/p/:post' } }])
  assert.equal(rewritten(r, '/users/7/posts/9'), '/v1/users/7/p/9')
})

test('rewritePath fills regex named groups', () => {
  const r = router([{ name: 'v', match: { path: { regex: '/api/v(?<ver>[0-9]+)/(?<rest>.*)' } }, destination: { service: 'svc', rewritePath: '/:rest/version/:ver' } }])
  assert.equal(rewritten(r, '/api/v3/things/1'), '/things/1/version/3')
})

test('rewritePath without parameters replaces the path', () => {
  const r = router([{ name: 'h', match: { path: { exact: '/healthz' } }, destination: { service: 'svc', rewritePath: '/status/health' } }])
  assert.equal(rewritten(r, '/healthz?x=1'), '/status/health')
})
