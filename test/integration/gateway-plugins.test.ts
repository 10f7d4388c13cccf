// Gateway-wide plugins (the top-level `plugins` list): applied to every route in front of the
// route's own, switched off per route by name, replaced by a route's own use of the same
// plugin; a plugin's gateway-policy form on the policy chain (routes without plugins too,
// refusals with headers, closed with its version); and config errors with their JSON paths.
import test from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { IncomingMessage } from 'node:http'
import WebSocket from 'ws'
import { startGateway, createGateway, tempDir, fixturePlugin, assertErrorResponse, eventually, defer } from '../helpers/gateway.js'
import { startEcho, meshConfig, type EchoRecord } from '../helpers/upstreams.js'
import { validateConfigDocument, formatProblems } from '../../src/config/validate.js'
import * as policyGate from '../fixtures/plugins/policy-gate.js'

const trail = (res: { json<T>(): T }): unknown => res.json<EchoRecord>().headers['x-trail']

test('a gateway-wide plugin runs on a plugin-less route and in front of a route\'s own plugins; a route can switch it off or replace it', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'bare', match: { path: { prefix: '/bare' } }, destination: { service: 'svc' } },
    { name: 'own', match: { path: { prefix: '/own' } }, destination: { service: 'svc' }, plugins: [{ name: 'headers', options: { request: { add: { 'x-trail': 'route' } } } }] },
    { name: 'off', match: { path: { prefix: '/off' } }, destination: { service: 'svc' }, disablePlugins: ['stamp'] },
    { name: 'mine', match: { path: { prefix: '/mine' } }, destination: { service: 'svc' }, plugins: [{ name: 'stamp', options: { value: 'route-own' } }] }
  ], {
    customPlugins: { stamp: { module: fixturePlugin(dir, 'stamp.js') } },
    plugins: [{ name: 'stamp', options: { value: 'gateway' } }]
  }), { dir })

  assert.equal(trail(await g.request('/bare')), 'gateway', 'a route without plugins gets the gateway-wide one')
  // The route's `headers` plugin appends after the gateway-wide stamp: gateway-wide first.
  assert.equal(trail(await g.request('/own')), 'gateway, route')
  assert.equal(trail(await g.request('/off')), undefined, 'disablePlugins switches it off')
  assert.equal(trail(await g.request('/mine')), 'route-own', 'the route\'s own use replaces the gateway-wide one (it runs once, with the route\'s options)')
  assert.equal(echo.seen.length, 4)
})

test('a gateway-wide plugin with a policy form runs on the policy chain: plugin-less routes (fast path) and upgrades are refused with its headers, opted-out routes are not', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const config = meshConfig({ svc: [echo] }, [
    { name: 'bare', match: { path: { prefix: '/bare' } }, destination: { service: 'svc' } },
    { name: 'off', match: { path: { prefix: '/off' } }, destination: { service: 'svc' }, disablePlugins: ['gate'] },
    { name: 'own', match: { path: { prefix: '/own' } }, destination: { service: 'svc' }, plugins: [{ name: 'gate', options: { retryAfter: '9' } }] }
  ], {
    customPlugins: { gate: { module: fixturePlugin(dir, 'policy-gate.js') } },
    plugins: [{ name: 'gate', options: {} }]
  })
  const g = await startGateway(t, config, { dir })
  assert.equal(policyGate.openPolicies, 1, 'one policy instance for the version')

  const ok = await g.request('/bare')
  assert.equal(ok.status, 200)
  assert.equal(ok.headers['x-gate'], undefined, 'the Fastify form did not run on the route: the policy did')
  const refused = await g.request('/bare/x', { headers: { 'x-refuse': '1', 'x-request-id': 'gw-refusal' } })
  const body = assertErrorResponse(refused, 429, 'FIXTURE_GATE')
  assert.equal(body.error.requestId, 'gw-refusal')
  assert.equal(refused.headers['retry-after'], '3', 'a gateway-wide refusal carries its headers')
  assert.equal(refused.headers['x-gate'], 'policy')
  assert.equal(echo.seen.some((r) => r.url === '/bare/x'), false, 'the upstream never saw the refused request')

  assert.equal((await g.request('/off', { headers: { 'x-refuse': '1' } })).status, 200, 'disablePlugins passes the policy by')
  // The route's own use replaces the policy there: its Fastify form answers.
  const own = await g.request('/own', { headers: { 'x-refuse': '1' } })
  assertErrorResponse(own, 429, 'FIXTURE_GATE')
  assert.equal(own.headers['retry-after'], '9')
  assert.equal(own.headers['x-gate'], undefined)
  assert.equal((await g.request('/own')).headers['x-gate'], 'fastify')

  // A WebSocket upgrade meets the policy too, before any tunnel is opened.
  const ws = new WebSocket(`${g.url.replace('http:', 'ws:')}/bare/ws`, { headers: { 'x-refuse': '1' } })
  defer(t, () => { ws.on('error', () => {}); ws.terminate() })
  const [, res] = await once(ws, 'unexpected-response') as [unknown, IncomingMessage]
  assert.equal(res.statusCode, 429)
  assert.equal(res.headers['retry-after'], '3')
  res.resume()
  assert.equal(echo.seen.some((r) => r.url === '/bare/ws'), false)

  // A reload makes the next version's instance and closes the retired one's.
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  await eventually(() => policyGate.openPolicies === 1, 'the retired version\'s policy to be closed')
  // Without the gateway-wide plugin, a route may no longer name it in disablePlugins.
  await g.writeConfig({ ...config, plugins: [], routes: (config.routes as Array<Record<string, unknown>>).map(({ disablePlugins: _, ...route }) => route) })
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  await eventually(() => policyGate.openPolicies === 0, 'the policy to be closed once no version uses it')
  assert.equal((await g.request('/bare', { headers: { 'x-refuse': '1' } })).status, 200)
})

test('a gateway-wide plugin\'s config errors name their JSON paths', () => {
  const base = meshConfig({ svc: [1234] }, [
    { name: 'a', destination: { service: 'svc' }, disablePlugins: ['rate-limit', 'ratelimit'] },
    { name: 'b', destination: { service: 'svc' }, disablePlugins: ['cors'] }
  ])
  const result = validateConfigDocument({
    ...base,
    plugins: [
      { name: 'rate-limit', options: { timeWindow: 'soon' } },
      { name: 'headers', options: { request: { remove: 'x-a' } } },
      { name: 'rate-limit', options: { max: 1 } },
      { name: 'load-shedding', options: { maxEventLoopUtilization: 2 } },
      { name: 'rate-limitt' }
    ]
  })
  const text = formatProblems(result.problems)
  const paths = result.problems.map((p) => p.path)
  for (const path of [
    '$.plugins[0].options.max',
    '$.plugins[0].options.timeWindow',
    '$.plugins[1].options.request.remove',
    '$.plugins[2].name',
    '$.plugins[3].options.maxEventLoopUtilization',
    '$.plugins[4].name',
    '$.routes[0].disablePlugins[1]',
    '$.routes[1].disablePlugins[0]'
  ]) assert.ok(paths.includes(path), `${path} is reported; got:\n${text}`)
  assert.ok(!paths.includes('$.routes[0].disablePlugins[0]'), text)
  assert.match(text, /\$\.plugins\[2\]\.name: "rate-limit" is already a gateway-wide plugin/)
  assert.match(text, /\$\.plugins\[4\]\.name: unknown plugin "rate-limitt" \(did you mean "rate-limit"\?\)/)
  assert.match(text, /\$\.routes\[0\]\.disablePlugins\[1\]: "ratelimit" is not a gateway-wide plugin \(did you mean "rate-limit"\?\)/)
})

test('a gateway-wide custom plugin\'s options are checked against its schema, with JSON paths', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  await assert.rejects(createGateway(t, meshConfig({ svc: [echo] }, [{ name: 'r', destination: { service: 'svc' } }], {
    customPlugins: { stamp: { module: fixturePlugin(dir, 'stamp.js') } },
    plugins: [{ name: 'stamp', options: { value: '', colour: 'blue' } }]
  }), { dir }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'FASTMESH_ERR_CONFIG_INVALID')
    assert.match(err.message, /\$\.plugins\[0\]\.options\.value/)
    assert.match(err.message, /\$\.plugins\[0\]\.options\.colour/)
    return true
  })
})

test('a gateway-wide plugin without a policy form is registered on each route, with per-route state: each route counts for itself', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'a', match: { path: { prefix: '/a' } }, destination: { service: 'svc' } },
    { name: 'b', match: { path: { prefix: '/b' } }, destination: { service: 'svc' } }
  ], { plugins: [{ name: 'rate-limit', options: { max: 1, timeWindow: '1h', keyBy: 'route' } }] }))
  assert.equal((await g.request('/a')).status, 200)
  assertErrorResponse(await g.request('/a'), 429, 'FASTMESH_ERR_RATE_LIMITED')
  assert.equal((await g.request('/b')).status, 200, 'route b has its own counters')
})

test('the gateway-policy example of docs/writing-plugins.md loads as written: gateway-wide it refuses every route with its status and headers while its flag file exists, and on a route it works too', async (t) => {
  // The module exactly as the docs show it, so a reader who copies it gets a plugin that loads.
  const docs = await readFile(new URL('../../../docs/writing-plugins.md', import.meta.url), 'utf8')
  const section = docs.slice(docs.indexOf('A custom module gets a gateway-policy form'))
  const code = /```js\n([\s\S]*?)```/.exec(section)?.[1]
  assert.ok(code !== undefined, 'the section shows a js module')
  const dir = await tempDir(t)
  await writeFile(join(dir, 'maintenance.mjs'), code)
  const flagFile = join(dir, 'down')
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'plain', match: { path: { prefix: '/plain' } }, destination: { service: 'svc' } },
    { name: 'own', match: { path: { prefix: '/own' } }, destination: { service: 'svc' }, plugins: [{ name: 'maintenance', options: { flagFile } }] }
  ], {
    customPlugins: { maintenance: { module: './maintenance.mjs' } },
    plugins: [{ name: 'maintenance', options: { flagFile } }]
  }), { dir })
  assert.equal((await g.request('/plain')).status, 200)
  assert.equal((await g.request('/own')).status, 200)
  await writeFile(flagFile, '')
  for (const path of ['/plain', '/own']) {
    const down = await eventually(async () => { const r = await g.request(path); return r.status === 503 ? r : undefined }, `${path} to be refused while the flag file exists`)
    assertErrorResponse(down, 503, 'MAINTENANCE')
    assert.equal(down.headers['retry-after'], '60')
  }
})

test('a route that disables a gateway-wide plugin it also lists itself is warned: its own use still runs', () => {
  const result = validateConfigDocument({
    ...meshConfig({ svc: [1234] }, [
      { name: 'a', destination: { service: 'svc' }, disablePlugins: ['rate-limit'], plugins: [{ name: 'rate-limit', options: { max: 5 } }] },
      { name: 'b', destination: { service: 'svc' }, disablePlugins: ['rate-limit'] }
    ]),
    plugins: [{ name: 'rate-limit', options: { max: 1 } }]
  })
  assert.deepEqual(result.problems, [])
  assert.deepEqual(result.warnings?.map((w) => [w.path, w.message]), [
    ['$.routes[0].disablePlugins[0]', 'switches off the gateway-wide "rate-limit", but the route lists its own "rate-limit" (plugins[0]), which still runs']
  ])
})

test('admin GET /routes shows what each route runs: gateway-wide policies first, then its Fastify plugins with where each came from', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'bare', match: { path: { prefix: '/bare' } }, destination: { service: 'svc' } },
    { name: 'own', match: { path: { prefix: '/own' } }, destination: { service: 'svc' }, plugins: [{ name: 'headers', options: { request: { add: { 'x-a': '1' } } } }] },
    { name: 'off', match: { path: { prefix: '/off' } }, destination: { service: 'svc' }, disablePlugins: ['stamp', 'gate'] }
  ], {
    customPlugins: { stamp: { module: fixturePlugin(dir, 'stamp.js') }, gate: { module: fixturePlugin(dir, 'policy-gate.js') } },
    plugins: [{ name: 'gate', options: {} }, { name: 'stamp', options: { value: 'gateway' } }]
  }), { dir })
  type Routes = { routes: Array<{ name: string, plugins: string[], effectivePlugins: Array<{ name: string, from: string, runs: string }> }> }
  const routes = new Map((await g.admin('GET', '/routes')).json<Routes>().routes.map((r) => [r.name, r]))
  assert.deepEqual(routes.get('bare')!.effectivePlugins, [
    { name: 'gate', from: 'gateway', runs: 'policy' },
    { name: 'stamp', from: 'gateway', runs: 'route' }
  ])
  assert.deepEqual(routes.get('own')!.plugins, ['headers'], '`plugins` stays the route\'s own list')
  assert.deepEqual(routes.get('own')!.effectivePlugins, [
    { name: 'gate', from: 'gateway', runs: 'policy' },
    { name: 'stamp', from: 'gateway', runs: 'route' },
    { name: 'headers', from: 'route', runs: 'route' }
  ])
  assert.deepEqual(routes.get('off')!.effectivePlugins, [])
})
