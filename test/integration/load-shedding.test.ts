// The `load-shedding` plugin on @fastify/under-pressure: gateway-wide (a gateway policy that
// protects routes without plugins too) and on a route; 503 FASTMESH_ERR_OVERLOADED with
// Retry-After before the upstream; the admin listener never shed; one sampler per set of
// thresholds across reloads; and a gateway process whose event loop is really blocked sheds,
// then recovers by itself.
import test from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { stringify } from 'yaml'
import { startGateway, createGateway, tempDir, fixturePlugin, assertErrorResponse, eventually, withTestListeners, defer } from '../helpers/gateway.js'
import { startGatewayProcess } from '../helpers/gateway-process.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'
import { runningSamplers } from '../../plugins/load-shedding/pressure.js'

const OVERLOADED_LOG = 'load shedding: the gateway is overloaded, refusing requests with 503 until it recovers'
const RECOVERED_LOG = 'load shedding: the gateway recovered, requests go through again'

// A heap of more than one byte is always "overloaded": shedding without timing games.
const alwaysOver = { maxHeapUsedBytes: 1, sampleInterval: '10ms', retryAfter: '1.5s' }
const neverOver = { maxRssBytes: 2 ** 50, sampleInterval: '10ms' }

test('gateway-wide load shedding refuses requests on a plugin-less route with 503 and Retry-After before the upstream; opted-out routes, the admin listener and a route\'s own settings are not shed', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [
    { name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'svc' } },
    { name: 'status', match: { path: { prefix: '/status' } }, destination: { service: 'svc' }, disablePlugins: ['load-shedding'] },
    { name: 'own', match: { path: { prefix: '/own' } }, destination: { service: 'svc' }, plugins: [{ name: 'load-shedding', options: neverOver }] }
  ], { plugins: [{ name: 'load-shedding', options: alwaysOver }] })
  const g = await startGateway(t, config)

  // The first sample comes one sampleInterval after the sampler starts.
  const shed = await eventually(async () => { const r = await g.request('/api/first'); return r.status === 503 ? r : undefined }, 'the first sample to shed')
  assertErrorResponse(shed, 503, 'FASTMESH_ERR_OVERLOADED')
  assert.equal(shed.headers['retry-after'], '2', 'Retry-After in whole seconds, rounded up')
  assert.match(shed.json<{ error: { message: string } }>().error.message, /heap used \d+ bytes > 1/)
  for (let i = 0; i < 5; i++) assertErrorResponse(await g.request(`/api/${i}`), 503, 'FASTMESH_ERR_OVERLOADED')
  assert.equal(echo.seen.filter((r) => /^\/api\/\d$/.test(r.url)).length, 0, 'no shed request reached the upstream')

  assert.equal((await g.request('/status')).status, 200, 'disablePlugins: [load-shedding]')
  assert.equal((await g.request('/own')).status, 200, 'the route\'s own load-shedding (never over) replaces the gateway-wide one')
  assert.equal((await g.admin('GET', '/ready')).status, 200, 'readiness is never shed')
  assert.equal((await g.admin('GET', '/live')).status, 200)
  assert.equal((await g.admin('GET', '/routes')).status, 200, 'nor is the admin API')

  // Logged once per transition, not per request; the refusals are counted per route.
  assert.equal(g.logs.withMessage(OVERLOADED_LOG).length, 1)
  const routes = (await g.admin('GET', '/routes')).json<{ routes: Array<{ name: string, stats: { errors: Record<string, number> } }> }>().routes
  assert.ok((routes.find((r) => r.name === 'api')?.stats.errors.FASTMESH_ERR_OVERLOADED ?? 0) >= 6, JSON.stringify(routes))

  // One sampler per set of thresholds: the gateway-wide one and the route's own.
  assert.equal(runningSamplers(), 2)
  for (let i = 0; i < 3; i++) assert.equal((await g.admin('POST', '/reload')).status, 200)
  await eventually(() => runningSamplers() === 2, 'reloads with the same settings to keep the same two samplers')
  await g.writeConfig({ ...config, routes: [{ name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'svc' } }], plugins: [{ name: 'load-shedding', options: { ...alwaysOver, maxRssBytes: 2 ** 50 } }] })
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  await eventually(() => runningSamplers() === 1, 'the retired version\'s samplers to stop')
  await g.gateway.stop()
  assert.equal(runningSamplers(), 0, 'stopping the gateway stops the last sampler')
})

test('load-shedding on a route sheds that route only, with the same answer', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [
    { name: 'heavy', match: { path: { prefix: '/heavy' } }, destination: { service: 'svc' }, plugins: [{ name: 'load-shedding', options: alwaysOver }] },
    { name: 'light', match: { path: { prefix: '/light' } }, destination: { service: 'svc' } }
  ]))
  const shed = await eventually(async () => { const r = await g.request('/heavy'); return r.status === 503 ? r : undefined }, 'the route to shed')
  assertErrorResponse(shed, 503, 'FASTMESH_ERR_OVERLOADED')
  assert.equal(shed.headers['retry-after'], '2')
  assert.equal((await g.request('/light')).status, 200)
  assert.equal(echo.seen.filter((r) => r.url === '/heavy').length, 0)
})

test('a version build that fails after a route\'s load-shedding was registered stops its sampler', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const plain = meshConfig({ svc: [echo] }, [{ name: 'r', destination: { service: 'svc' } }])
  const g = await startGateway(t, plain, { dir })
  assert.equal(runningSamplers(), 0)
  await g.writeConfig(meshConfig({ svc: [echo] }, [
    { name: 'shed', match: { path: { prefix: '/shed' } }, destination: { service: 'svc' }, plugins: [{ name: 'load-shedding', options: alwaysOver }] },
    { name: 'broken', destination: { service: 'svc' }, plugins: [{ name: 'broken' }] }
  ], { customPlugins: { broken: { module: fixturePlugin(dir, 'fail-register.js') } } }))
  const result = await g.gateway.reload('test')
  assert.equal(result.ok, false)
  assert.match(result.error ?? '', /fixture plugin refuses to register/)
  assert.equal(runningSamplers(), 0, 'the failed build\'s sampler was stopped')
  assert.equal((await g.request('/')).status, 200)
})

test('load-shedding without any threshold refuses the config', async (t) => {
  const echo = await startEcho(t, 'svc')
  await assert.rejects(createGateway(t, meshConfig({ svc: [echo] }, [{ name: 'r', destination: { service: 'svc' } }], { plugins: [{ name: 'load-shedding', options: { retryAfter: '5s' } }] })), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'FASTMESH_ERR_CONFIG_INVALID')
    assert.match(err.message, /\$\.plugins\[0\]\.options: load-shedding needs at least one threshold/)
    return true
  })
})

test('a gateway process whose event loop is blocked answers 503 FASTMESH_ERR_OVERLOADED at once, keeps answering /ready, and recovers by itself', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const path = join(dir, 'fastmesh.yaml')
  await writeFile(path, stringify(withTestListeners(meshConfig({ svc: [echo] }, [
    // Requests here spin the gateway's CPU; this route is not shed, so the overload goes on.
    { name: 'burn', match: { path: { prefix: '/burn' } }, destination: { service: 'svc' }, plugins: [{ name: 'busy' }], disablePlugins: ['load-shedding'] },
    { name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'svc' } }
  ], {
    customPlugins: { busy: { module: fixturePlugin(dir, 'busy-loop.js') } },
    plugins: [{ name: 'load-shedding', options: { maxEventLoopDelay: '40ms', sampleInterval: '50ms', retryAfter: '3s' } }]
  }))))
  const gw = await startGatewayProcess(t, ['--config', path])
  const agent = new Agent({ connections: 8 })
  defer(t, async () => { await agent.close() })
  const get = async (origin: string, p: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: Record<string, unknown>, body: string, ms: number }> => {
    const start = performance.now()
    const r = await request(origin + p, { dispatcher: agent, headers })
    return { status: r.statusCode, headers: r.headers, body: await r.body.text(), ms: performance.now() - start }
  }
  assert.equal((await get(gw.url, '/api/warm')).status, 200, 'not overloaded at rest')

  // Two clients keep the gateway's event loop busy, 150 ms per request, back to back.
  let burning = true
  const burners = [0, 1].map(async () => {
    while (burning) await get(gw.url, '/burn', { 'x-busy-ms': '150' })
  })
  try {
    let n = 0
    const shed = await eventually(async () => {
      const r = await get(gw.url, `/api/probe-${n++}`)
      return r.status === 503 ? r : undefined
    }, 'a request to be shed while the event loop is blocked', 30_000, 10)
    const body = JSON.parse(shed.body) as { error: { code: string, message: string } }
    assert.equal(body.error.code, 'FASTMESH_ERR_OVERLOADED')
    assert.match(body.error.message, /event-loop delay/)
    assert.equal(shed.headers['retry-after'], '3')
    // At once: at most the blocked loop's own wait (a burn or two), never a queue of them.
    assert.ok(shed.ms < 2000, `answered in ${Math.round(shed.ms)} ms`)
    const shedPath = `/api/probe-${n - 1}`
    assert.equal(echo.seen.some((r) => r.url === shedPath), false, 'the shed request never reached the upstream')
    // The admin listener is never shed: it answers, if late, while the overload goes on.
    assert.equal((await get(gw.adminUrl, '/ready')).status, 200)
  } finally {
    burning = false
    await Promise.all(burners)
  }
  // Nothing else to do: it recovers by itself.
  await eventually(async () => (await get(gw.url, '/api/after')).status === 200, 'the gateway to recover', 30_000, 50)
  const logs = gw.logs()
  const overloaded = logs.filter((e) => e.msg === OVERLOADED_LOG)
  assert.ok(overloaded.length >= 1, 'the overload was logged')
  const refusals = logs.filter((e) => e.log === 'access' && e.error === 'FASTMESH_ERR_OVERLOADED').length
  assert.ok(refusals >= 1)
  assert.ok(overloaded.length <= refusals, 'logged per transition, not more often than requests were shed')
  await eventually(() => gw.logs().some((e) => e.msg === RECOVERED_LOG), 'the recovery to be logged', 5000)
  assert.equal(gw.exited, false, gw.stderr)
})
