// The admin API of a running gateway: liveness, readiness, routes in match order,
// services with health, reload, and the config in effect (secrets redacted, pending
// restart keys, the last reload's outcome).
import test from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, eventually, plainRequest, assertErrorResponse } from '../helpers/gateway.js'
import { startEcho, startSample, startHeldUpstream, embeddedServices, meshConfig } from '../helpers/upstreams.js'
import { freePort } from '../helpers/ports.js'

interface RoutesBody { version: number, routes: Array<{ name: string, precedence: number[], plugins: string[], destination: { service: string } }> }

test('GET /live answers 200 live', async (t) => {
  const echo = await startEcho(t, 'svc')
  // Started from YAML text, as a config file is written.
  const g = await startGateway(t, `
discovery:
  embedded:
    services:
      svc:
        endpoints: [{ address: 127.0.0.1, port: ${echo.port} }]
routes:
  - name: all
    destination: { service: svc }
`)
  const res = await g.admin('GET', '/live')
  assert.equal(res.status, 200)
  assert.deepEqual(res.json(), { status: 'live' })
})

test('GET /ready answers 200 ready with the serving config version', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await g.admin('GET', '/ready')
  assert.equal(res.status, 200)
  assert.deepEqual(res.json(), { status: 'ready', version: 1 })
})

test('GET /ready answers 503 while the gateway drains for shutdown', async (t) => {
  const held = await startHeldUpstream(t)
  const g = await startGateway(t, meshConfig({ slow: [held] }, [{ name: 'slow', destination: { service: 'slow' } }]))
  const inFlight = g.request('/slow')
  await held.waitForArrivals(1)
  const stopping = g.gateway.stop()
  const res = await eventually(async () => {
    const r = await g.admin('GET', '/ready')
    return r.status === 503 ? r : undefined
  }, '/ready to answer 503')
  assert.equal(res.json<{ status: string }>().status, 'not ready')
  held.release()
  assert.equal((await inFlight).status, 200)
  await stopping
})

test('GET /routes lists routes in the order they are matched', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'catch-all', destination: { service: 'svc' } },
    { name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'svc' } },
    { name: 'api-v2', match: { path: { prefix: '/api/v2' } }, destination: { service: 'svc' } },
    { name: 'api-beta', match: { path: { prefix: '/api' }, headers: [{ name: 'x-beta', exact: '1' }] }, destination: { service: 'svc' } },
    { name: 'login', match: { path: { exact: '/login' } }, destination: { service: 'svc' }, plugins: [{ name: 'headers', options: { response: { set: { 'cache-control': 'no-store' } } } }] },
    { name: 'user', match: { path: { template: '/users/:id' } }, destination: { service: 'svc' } },
    { name: 'shop-host', match: { hosts: ['shop.example.com'] }, destination: { service: 'svc' } },
    { name: 'pinned', priority: 5, match: { path: { prefix: '/' } }, destination: { service: 'svc' } }
  ]))
  const res = await g.admin('GET', '/routes')
  assert.equal(res.status, 200)
  const body = res.json<RoutesBody>()
  assert.equal(body.version, 1)
  assert.deepEqual(body.routes.map((r) => r.name), ['pinned', 'shop-host', 'login', 'user', 'api-v2', 'api-beta', 'api', 'catch-all'])
  assert.deepEqual(body.routes.find((r) => r.name === 'login')?.plugins, ['headers'])
  assert.equal(body.routes[0]?.destination.service, 'svc')
})

test('GET /services shows each endpoint with its health and origin', async (t) => {
  const good = await startSample(t, 'orders', 'orders-good')
  const bad = await startSample(t, 'orders', 'orders-bad')
  bad.healthy = false
  const g = await startGateway(t, {
    discovery: { embedded: { services: embeddedServices({ orders: [good, bad] }, { path: '/health', interval: '100ms', timeout: '500ms', unhealthyThreshold: 1, healthyThreshold: 1 }) } },
    routes: [{ name: 'orders', destination: { service: 'orders' } }]
  })
  interface Svc { name: string, healthy: number, stale: boolean, endpoints: Array<{ id: string, port: number, health: string, healthDetail?: string, origin: string }> }
  const orders = await eventually(async () => {
    const s = (await g.admin('GET', '/services')).json<{ discovery: string, services: Svc[] }>()
    const o = s.services.find((x) => x.name === 'orders')
    return o?.healthy === 1 && o.endpoints.every((e) => e.healthDetail !== 'waiting for the first health check') ? o : undefined
  }, 'both endpoints to be probed')
  assert.equal(orders.stale, false)
  assert.deepEqual(orders.endpoints.map((e) => [e.id, e.port, e.health, e.origin]), [
    ['orders-1', good.port, 'passing', 'config'],
    ['orders-2', bad.port, 'critical', 'config']
  ])
  assert.equal(orders.endpoints[0]?.healthDetail, undefined)
  assert.equal(orders.endpoints[1]?.healthDetail, 'GET /health answered 503')
})

test('GET /services/:service of an unknown service answers 404 FASTMESH_ERR_ADMIN_NOT_FOUND', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await g.admin('GET', '/services/nope')
  assert.equal(res.status, 404)
  assert.equal(res.json<{ error: { code: string } }>().error.code, 'FASTMESH_ERR_ADMIN_NOT_FOUND')
})

test('POST /reload applies the changed config file and answers the new version', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const g = await startGateway(t, config)
  assert.equal((await g.request('/new')).status, 404)
  await g.writeConfig({ ...config, routes: [{ name: 'new', match: { path: { prefix: '/new' } }, destination: { service: 'svc' } }] })
  const res = await g.admin('POST', '/reload')
  assert.equal(res.status, 200)
  assert.deepEqual(res.json(), { status: 'reloaded', version: 2 })
  assert.equal((await g.request('/new')).status, 200)
  assert.equal((await g.request('/old')).status, 404)
  assert.deepEqual((await g.admin('GET', '/routes')).json<RoutesBody>().routes.map((r) => r.name), ['new'])
})

test('GET /config shows the running config with defaults filled', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const body = (await g.admin('GET', '/config')).json<{ version: number, source: string, config: { routes: Array<{ timeout: string }>, limits: { maxHeaderBytes: number } } }>()
  assert.equal(body.version, 1)
  assert.equal(body.source, g.configPath)
  assert.equal(body.config.routes[0]?.timeout, '15s')
  assert.equal(body.config.limits.maxHeaderBytes, 16384)
})

interface ConfigBody {
  version: number
  config: { listeners: { http: { port: number } }, discovery: { consul?: { token?: string } } }
  listening: Record<string, { address: string, port: number }>
  pendingRestart: string[]
  lastReload: { at: string, reason: string, ok: boolean, version: number, problems?: Array<{ path: string }> } | null
  reloads: { ok: number, failed: number }
}

test('regression: GET /config does not reveal the Consul ACL token', async (t) => {
  const echo = await startEcho(t, 'svc')
  const token = 'f3a1c9e2-consul-acl-token'
  // No agent needed: routes use the embedded registry and nothing registers.
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }], {
    discovery: { embedded: { services: embeddedServices({ svc: [echo] }) }, consul: { address: `127.0.0.1:${await freePort()}`, token, registerSelf: false } }
  }))
  const res = await g.admin('GET', '/config')
  assert.equal(res.status, 200)
  assert.ok(!res.text.includes(token), 'the token is not in the /config answer')
  assert.equal(res.json<ConfigBody>().config.discovery.consul?.token, '<redacted>')
})

test('after a reload that changes a listener port, GET /config shows the bound port and lists the change as pending restart', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }])
  const g = await startGateway(t, config)
  const bound = g.gateway.httpAddress.port
  const newPort = await freePort()
  await g.writeConfig({ ...config, listeners: { http: { address: '127.0.0.1', port: newPort }, admin: { address: '127.0.0.1', port: 0 } } })
  const reloaded = await g.admin('POST', '/reload')
  assert.deepEqual(reloaded.json(), { status: 'reloaded', version: 2, pendingRestart: ['listeners.http.port'] })
  const body = (await g.admin('GET', '/config')).json<ConfigBody>()
  assert.equal(body.version, 2)
  assert.equal(body.config.listeners.http.port, 0, 'the config in effect, as started')
  assert.deepEqual(body.listening.http, { address: '127.0.0.1', port: bound })
  assert.deepEqual(body.pendingRestart, ['listeners.http.port'])
  assert.equal(body.lastReload?.ok, true)
  assert.equal((await g.request('/')).status, 200, 'the old port still serves')
})

test('a refused file reload shows in GET /config as lastReload ok:false with its problems', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  await g.writeConfig({ routes: [{ name: 'broken', destinaton: { service: 'svc' } }] })
  assert.equal((await g.gateway.reload('file change')).ok, false)
  const body = (await g.admin('GET', '/config')).json<ConfigBody>()
  assert.equal(body.version, 1)
  assert.equal(body.lastReload?.ok, false)
  assert.equal(body.lastReload?.reason, 'file change')
  assert.equal(body.lastReload?.version, 1)
  assert.ok(!Number.isNaN(Date.parse(body.lastReload?.at ?? '')), 'at is a timestamp')
  assert.ok(body.lastReload?.problems?.some((p) => p.path === '$.routes[0].destinaton'), JSON.stringify(body.lastReload))
  assert.deepEqual(body.reloads, { ok: 0, failed: 1 })
})

test('GET /config shows lastReload null before any reload', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const body = (await g.admin('GET', '/config')).json<ConfigBody>()
  assert.equal(body.lastReload, null)
  assert.deepEqual(body.pendingRestart, [])
  assert.deepEqual(body.reloads, { ok: 0, failed: 0 })
})

test('an unknown admin path answers 404 FASTMESH_ERR_ADMIN_NOT_FOUND', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }]))
  const res = await plainRequest(g.adminUrl, '/nothing-here')
  assert.equal(res.status, 404)
  assert.equal(res.json<{ error: { code: string } }>().error.code, 'FASTMESH_ERR_ADMIN_NOT_FOUND')
})

// --- secrets in every view ------------------------------------------------------------------

test('regression: GET /config and GET /routes hide route header and query match values of credential-bearing names', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{
    name: 'internal',
    match: { headers: [{ name: 'x-internal-token', exact: 'hdr-s3cret-1' }, { name: 'x-beta', exact: 'yes' }], query: [{ name: 'access_token', exact: 'qs-s3cret-2' }] },
    destination: { service: 'svc' }
  }]))
  for (const path of ['/config', '/routes', '/routes/internal']) {
    const res = await g.admin('GET', path)
    assert.equal(res.status, 200)
    assert.ok(!res.text.includes('hdr-s3cret-1') && !res.text.includes('qs-s3cret-2'), `${path}: ${res.text}`)
    assert.ok(res.text.includes('"x-beta","exact":"yes"'), `${path} shows other match values`)
  }
  // The route still matches on the real value.
  assert.equal((await g.request('/?access_token=qs-s3cret-2', { headers: { 'x-internal-token': 'hdr-s3cret-1', 'x-beta': 'yes' } })).status, 200)
})

test('regression: GET /config hides passwords inside URLs and cookie and x-auth header values', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{
    name: 'r',
    destination: { service: 'svc' },
    plugins: [{ name: 'headers', options: { request: { set: { cookie: 'sid=cookie-s3cret', 'x-auth': 'xauth-s3cret', 'x-callback': 'https://svc:url-s3cret@hooks.example/cb' } } } }]
  }]))
  const res = await g.admin('GET', '/config')
  for (const secret of ['cookie-s3cret', 'xauth-s3cret', 'url-s3cret']) assert.ok(!res.text.includes(secret), `${secret} in ${res.text}`)
  assert.ok(res.text.includes('https://<redacted>@hooks.example/cb'), 'the URL is shown without its userinfo')
})

test('regression: GET /services and GET /services/:service hide endpoint meta api_key, as /config does', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, {
    discovery: { embedded: { services: { svc: { endpoints: [{ id: 'svc-1', address: '127.0.0.1', port: echo.port, meta: { api_key: 'meta-s3cret', zone: 'z1' } }] } } } },
    routes: [{ name: 'r', destination: { service: 'svc' } }]
  })
  const registered = await g.admin('POST', '/services/svc/endpoints', { id: 'svc-2', address: '127.0.0.1', port: echo.port, meta: { password: 'reg-s3cret' } })
  assert.equal(registered.status, 201)
  assert.ok(!registered.text.includes('reg-s3cret'), registered.text)
  for (const path of ['/services', '/services/svc', '/config']) {
    const res = await g.admin('GET', path)
    assert.ok(!res.text.includes('meta-s3cret') && !res.text.includes('reg-s3cret'), `${path}: ${res.text}`)
    if (path !== '/config') assert.ok(res.text.includes('"api_key":"<redacted>","zone":"z1"'), `${path}: ${res.text}`)
  }
})

test('regression: a refused reload does not echo a secret in the 409 answer, in lastReload or in the log', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }])
  const g = await startGateway(t, config)
  await g.writeConfig({
    ...config,
    discovery: { ...(config.discovery as object), consul: { address: 'http://fastmesh:pw-s3cret-1@consul.internal:8500', token: 31415926535 } },
    routes: [{ name: 'all', match: { headers: [{ name: 'authorization', exact: 27182818284 }] }, destination: { service: 'svc' } }]
  })
  const res = await g.admin('POST', '/reload')
  assertErrorResponse(res, 409, 'FASTMESH_ERR_ADMIN_RELOAD_FAILED')
  const problems = res.json<{ problems: Array<{ path: string }> }>().problems.map((p) => p.path).sort()
  assert.deepEqual(problems, ['$.discovery.consul.address', '$.discovery.consul.token', '$.routes[0].match.headers[0].exact'])
  const config409 = (await g.admin('GET', '/config')).text
  const logs = g.logs.lines.join('\n')
  for (const secret of ['pw-s3cret-1', '31415926535', '27182818284']) {
    assert.ok(!res.text.includes(secret), `409 answer: ${res.text}`)
    assert.ok(!config409.includes(secret), `lastReload: ${config409}`)
    assert.ok(!logs.includes(secret), `log: ${logs}`)
  }
  assert.equal(g.logs.withMessage('config refused; the running config keeps serving').length, 1)
})

test('regression: the good config put back after a refused reload clears lastReload (ok, restored) with an info log line', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'all', destination: { service: 'svc' } }])
  const g = await startGateway(t, config, { watch: true })
  await g.writeConfig({ routes: [{ name: 'broken', destinaton: { service: 'svc' } }] })
  await eventually(async () => (await g.admin('GET', '/config')).json<ConfigBody>().lastReload?.ok === false, 'the broken file to be refused')
  await g.writeConfig(config)
  const last = await eventually(async () => {
    const l = (await g.admin('GET', '/config')).json<ConfigBody>().lastReload
    return l?.ok === true ? l : undefined
  }, 'the restored file to clear the refusal')
  assert.equal((last as { restored?: boolean }).restored, true)
  assert.equal(last.version, 1, 'nothing was rebuilt')
  assert.equal(last.reason, 'file change')
  const line = g.logs.withMessage('config restored: the config in effect was offered again, the last refusal no longer applies')
  assert.equal(line.length, 1)
  assert.equal(line[0]!.level, 'info')
  assert.deepEqual((await g.admin('GET', '/config')).json<ConfigBody>().reloads, { ok: 0, failed: 1 })
})

// --- one service, the same view as in the list ----------------------------------------------

test('regression: GET /services/:service shows the same service object as GET /services (state, layers, failover)', async (t) => {
  const users = await startEcho(t, 'users')
  const orders = await startEcho(t, 'orders')
  const g = await startGateway(t, meshConfig({ users: [users], orders: [orders] }, [{ name: 'users', destination: { service: 'users' } }], {
    services: { users: { failover: [{ service: 'orders' }] } }
  }))
  assert.equal((await g.request('/')).status, 200)
  interface ServiceView { name: string, endpoints: Array<{ state: string }>, layers: unknown[], [key: string]: unknown }
  const list = (await g.admin('GET', '/services')).json<{ discovery: string, services: ServiceView[], failover: Array<{ chain: string, active: string }> }>()
  const one = (await g.admin('GET', '/services/users')).json<ServiceView & { discovery: string, failover: Array<{ chain: string }> }>()
  const { discovery, failover, ...service } = one
  assert.equal(discovery, list.discovery)
  assert.deepEqual(service, list.services.find((s) => s.name === 'users'))
  assert.equal(service.endpoints[0]?.state, 'healthy')
  assert.ok(service.layers.length >= 1, 'the service layer is shown')
  assert.deepEqual(failover, list.failover.filter((c) => c.chain.startsWith('users')))
  assert.equal(failover.length, 1)
})
