// The route index against the scan it replaces on large tables: on random tables (hosts exact
// and wildcard, paths exact, prefix, template and regex, methods, headers, query, priorities)
// and random requests, the indexed router takes exactly the route the scan in precedence
// order takes, with the same parameters. Seeded, so a failure repeats; the seed is in the message.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { checkConfig } from '../../src/config/load.js'
import { Router, ROUTE_INDEX_THRESHOLD } from '../../src/gateway/router.js'
import { seededRandom } from '../../src/balancer/random.js'

const SEGMENTS = ['api', 'v1', 'v2', 'users', 'orders', 'a', 'ab', 'x']
const HOSTS = ['example.com', 'a.example.com', 'b.a.example.com', 'other.org', '[::1]']
const ROUTE_HOSTS = ['example.com', 'a.example.com', '*.example.com', '*.a.example.com', 'other.org', '*.org', '[::1]']

function tableAndRequests (seed: number): { routes: Array<Record<string, unknown>>, requests: Array<{ method: string, host: string | undefined, path: string, search: string, headers: Record<string, string> }> } {
  const rnd = seededRandom(seed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!
  const pathOf = (max: number): string => '/' + Array.from({ length: Math.floor(rnd() * (max + 1)) }, () => pick(SEGMENTS)).join('/')
  const count = 1 + Math.floor(rnd() * 60)
  const routes = Array.from({ length: count }, (_, i) => {
    const match: Record<string, unknown> = {}
    if (rnd() < 0.3) match.hosts = Array.from({ length: 1 + Math.floor(rnd() * 2) }, () => pick(ROUTE_HOSTS))
    const kind = rnd()
    if (kind < 0.25) match.path = { exact: pathOf(3) }
    else if (kind < 0.7) match.path = { prefix: pathOf(2) + (rnd() < 0.2 ? '/' : '') }
    else if (kind < 0.8) match.path = { template: `/${pick(SEGMENTS)}/{id}` }
    else if (kind < 0.88) match.path = { regex: `/${pick(SEGMENTS)}/[a-z]+` }
    if (rnd() < 0.2) match.methods = [pick(['GET', 'POST', 'PUT'])]
    if (rnd() < 0.2) match.headers = [{ name: 'x-tier', exact: pick(['gold', 'silver']) }]
    if (rnd() < 0.1) match.query = [{ name: 'v', exact: pick(['1', '2']) }]
    return { name: `r${i}`, match, destination: { service: 'svc' }, ...(rnd() < 0.1 ? { priority: Math.floor(rnd() * 3) - 1 } : {}) }
  })
  const requests = Array.from({ length: 60 }, () => ({
    method: pick(['GET', 'POST', 'PUT', 'DELETE']),
    host: rnd() < 0.1 ? undefined : pick(HOSTS) + (rnd() < 0.2 ? ':8080' : ''),
    path: pathOf(4) + (rnd() < 0.1 ? '/' : ''),
    search: rnd() < 0.3 ? `?v=${pick(['1', '2', '3'])}` : '',
    headers: (rnd() < 0.4 ? { 'x-tier': pick(['gold', 'silver', 'bronze']) } : {}) as Record<string, string>
  }))
  return { routes, requests }
}

test('on random tables, the index takes exactly the route (and parameters) the scan takes', () => {
  let compared = 0
  let matched = 0
  for (let seed = 1; seed <= 400; seed++) {
    const { routes, requests } = tableAndRequests(seed)
    const config = checkConfig({ discovery: { embedded: { services: { svc: { endpoints: [] } } } }, routes }, `seed ${seed}`, {}).config.routes
    const scanned = new Router(config, { index: false })
    const indexed = new Router(config, { index: true })
    assert.equal(indexed.indexed, true)
    for (const q of requests) {
      const a = scanned.match(q.method, q.host, q.path, q.search, q.headers)
      const b = indexed.match(q.method, q.host, q.path, q.search, q.headers)
      assert.deepEqual(b === undefined ? undefined : { name: b.route.name, params: b.params },
        a === undefined ? undefined : { name: a.route.name, params: a.params },
        `seed ${seed}: ${q.method} ${q.host ?? '(no Host)'} ${q.path}${q.search} ${JSON.stringify(q.headers)}`)
      compared++
      if (a !== undefined) matched++
    }
  }
  // The draws exercise both outcomes: most requests match some route, many match none.
  assert.ok(matched > compared * 0.3 && matched < compared * 0.95, `${matched} of ${compared} matched`)
})

test('large tables are indexed by default, small ones scanned', () => {
  const table = (n: number): Router => new Router(checkConfig({
    discovery: { embedded: { services: { svc: { endpoints: [] } } } },
    routes: Array.from({ length: n }, (_, i) => ({ name: `r${i}`, match: { path: { prefix: `/p${i}` } }, destination: { service: 'svc' } }))
  }, 'sizes', {}).config.routes)
  assert.equal(table(ROUTE_INDEX_THRESHOLD - 1).indexed, false)
  assert.equal(table(ROUTE_INDEX_THRESHOLD).indexed, true)
  const big = table(1000)
  assert.equal(big.match('GET', 'example.com', '/p999/x', '', {})?.route.name, 'r999')
  assert.equal(big.match('GET', 'example.com', '/p1000', '', {}), undefined)
})
