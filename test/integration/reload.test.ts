// Hot reload: file watch, explicit reload (the SIGHUP and POST /reload path: the provider
// re-reads the file), refusal of broken configs with the old version serving on, in-flight
// requests across a swap, reloads under load. A real SIGHUP: test/integration/config-providers.test.ts.
import test from 'node:test'
import assert from 'node:assert/strict'
import { Agent } from 'undici'
import { startGateway, eventually, defer, tempDir, fixturePlugin } from '../helpers/gateway.js'
import { startEcho, startHeldUpstream, meshConfig, type EchoRecord } from '../helpers/upstreams.js'
import { gate } from '../fixtures/plugins/gates.js'

interface ProblemsBody {
  error: { code: string, message: string, requestId: string }
  problems: Array<{ path: string, message: string, hint?: string }>
}

test('a change of the watched config file makes a new route live', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const g = await startGateway(t, config, { watch: true })
  assert.equal((await g.request('/new')).status, 404)
  await g.writeConfig({ ...config, routes: [...config.routes as unknown[], { name: 'new', match: { path: { prefix: '/new' } }, destination: { service: 'svc' } }] })
  await eventually(async () => (await g.request('/new')).status === 200, 'the new route to answer')
  assert.equal((await g.request('/old')).status, 200)
  assert.equal(g.gateway.version?.version, 2)
})

test('reload() (what SIGHUP calls) re-reads the file and swaps to the new version', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const g = await startGateway(t, config)
  await g.writeConfig({ ...config, routes: [{ name: 'new', match: { path: { prefix: '/new' } }, destination: { service: 'svc' } }] })
  const result = await g.gateway.reload('test')
  assert.deepEqual(result, { ok: true, version: 2 })
  assert.equal((await g.request('/new/x')).status, 200)
  assert.equal((await g.request('/old/x')).status, 404)
  assert.equal(g.logs.withMessage('config reloaded').length, 1)
})

test('POST /reload of an unchanged file still builds a new version (reload now is never dropped as unchanged)', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }]))
  const res = await g.admin('POST', '/reload')
  assert.equal(res.status, 200, res.text)
  assert.deepEqual(res.json(), { status: 'reloaded', version: 2 })
  assert.deepEqual([g.gateway.lastReload?.reason, g.gateway.lastReload?.ok], ['admin API', true])
  assert.equal((await g.request('/old/x')).status, 200)
})

test('a reload of malformed YAML is refused and the old routes keep serving', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }]))
  await g.writeRawConfig('routes:\n  - name: broken\n    match: { path: { prefix: /x }\n')
  const result = await g.gateway.reload('test')
  assert.equal(result.ok, false)
  assert.equal(result.version, 1)
  assert.ok((result.problems?.length ?? 0) > 0, 'the problems are listed')
  assert.match(String(result.problems?.[0]?.hint), /line \d+, column \d+/)
  assert.equal((await g.request('/old/x')).status, 200)
  assert.equal(g.gateway.version?.version, 1)
  assert.deepEqual(g.gateway.reloads, { ok: 0, failed: 1 })
  assert.equal(g.logs.withMessage('config refused; the running config keeps serving').length, 1)
})

test('a reload with an unknown key is refused with its JSON path and the old routes keep serving', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const g = await startGateway(t, config)
  await g.writeConfig({ ...config, routes: [{ name: 'new', timeoutt: '5s', match: { path: { prefix: '/new' } }, destination: { service: 'svc' } }] })
  const result = await g.gateway.reload('test')
  assert.equal(result.ok, false)
  assert.deepEqual(result.problems?.map((p) => [p.path, p.message, p.hint]), [['$.routes[0].timeoutt', 'unknown key "timeoutt"', 'did you mean "timeout"?']])
  assert.equal((await g.request('/old/x')).status, 200)
  assert.equal((await g.request('/new/x')).status, 404)
})

test('POST /reload of a broken file answers 409 FASTMESH_ERR_ADMIN_RELOAD_FAILED with the problems list', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const g = await startGateway(t, config)
  await g.writeConfig({ ...config, routes: [{ name: 'new', match: { path: { prefx: '/new' } }, destination: { service: 'missing' } }] })
  const res = await g.admin('POST', '/reload')
  assert.equal(res.status, 409)
  const body = res.json<ProblemsBody>()
  assert.equal(body.error.code, 'FASTMESH_ERR_ADMIN_RELOAD_FAILED')
  assert.match(body.error.message, /running config stays/)
  assert.ok(body.problems.length > 0)
  assert.ok(body.problems.every((p) => p.path.startsWith('$') && p.message.length > 0), JSON.stringify(body.problems))
  assert.ok(body.problems.some((p) => p.path === '$.routes[0].match.path.prefx' && p.hint === 'did you mean "prefix"?'), JSON.stringify(body.problems))
  assert.equal((await g.request('/old/x')).status, 200)
  assert.equal((await g.admin('GET', '/ready')).status, 200)
})

test('POST /reload of malformed YAML answers 409 with the parse problem', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }]))
  await g.writeRawConfig('routes: [ { name: x\n')
  const res = await g.admin('POST', '/reload')
  assert.equal(res.status, 409)
  const body = res.json<ProblemsBody>()
  assert.equal(body.error.code, 'FASTMESH_ERR_ADMIN_RELOAD_FAILED')
  assert.ok(body.problems.length > 0)
  assert.equal(body.problems[0]?.path, '$')
  assert.equal((await g.request('/old/x')).status, 200)
})

test('a broken file written under watch is refused, and the next good write is applied', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const g = await startGateway(t, config, { watch: true })
  await g.writeRawConfig('routes: [ { name: x\n')
  await eventually(() => g.gateway.reloads.failed === 1, 'the broken file to be refused')
  assert.equal((await g.request('/old/x')).status, 200)
  await g.writeConfig({ ...config, routes: [{ name: 'new', match: { path: { prefix: '/new' } }, destination: { service: 'svc' } }] })
  await eventually(async () => (await g.request('/new/x')).status === 200, 'the good file to be applied')
  assert.equal(g.gateway.reloads.ok, 1)
})

test('regression: a config change written right after start is not lost by the file watcher', async (t) => {
  // Before the fix the watcher read the starting content asynchronously; a write landing
  // first was taken for the starting content, and never applied.
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const g = await startGateway(t, config, { watch: true })
  await g.writeConfig({ ...config, routes: [{ name: 'new', match: { path: { prefix: '/new' } }, destination: { service: 'svc' } }] })
  await eventually(async () => (await g.request('/new/x')).status === 200, 'the change to be applied')
  assert.equal(g.gateway.reloads.ok, 1)
})

test('a request in flight during a reload completes with 200 on the old version', async (t) => {
  const held = await startHeldUpstream(t, 'answer from before the reload')
  const echo = await startEcho(t, 'other')
  const config = meshConfig({ slow: [held], other: [echo] }, [{ name: 'slow', match: { path: { prefix: '/slow' } }, destination: { service: 'slow' } }])
  const g = await startGateway(t, config)
  const inFlight = g.request('/slow/report')
  await held.waitForArrivals(1)
  // The new version no longer has the route nor the service the in-flight request uses.
  await g.writeConfig({ ...config, routes: [{ name: 'other', match: { path: { prefix: '/other' } }, destination: { service: 'other' } }] })
  assert.deepEqual(await g.gateway.reload('test'), { ok: true, version: 2 })
  assert.equal((await g.request('/slow/report')).status, 404, 'new requests see the new version')
  held.release()
  const res = await inFlight
  assert.equal(res.status, 200)
  assert.equal(res.text, 'answer from before the reload')
})

test('regression: a request still in a plugin hook when a reload drops its service is forwarded on the old version', async (t) => {
  // Before the fix a swap released the old version's services at once: a request the old
  // version had accepted, still in an async plugin hook, then found no endpoint (503).
  const a = await startEcho(t, 'svc-a')
  const b = await startEcho(t, 'svc-b')
  const dir = await tempDir(t)
  const customPlugins = { hold: { module: fixturePlugin(dir, 'hold.js') } }
  const g = await startGateway(t, meshConfig({ 'svc-a': [a], 'svc-b': [b] }, [
    { name: 'api', destination: { service: 'svc-a' }, plugins: [{ name: 'hold', options: { gate: 'reload-drops-service' } }] }
  ], { customPlugins }), { dir })
  const held = gate('reload-drops-service')
  const inFlight = g.request('/api/slow-auth')
  await held.waitForEntered(1)
  await g.writeConfig(meshConfig({ 'svc-a': [a], 'svc-b': [b] }, [{ name: 'api-b', destination: { service: 'svc-b' } }], { customPlugins }))
  assert.deepEqual(await g.gateway.reload('test'), { ok: true, version: 2 })
  assert.equal((await g.request('/api/new')).json<EchoRecord>().service, 'svc-b', 'new requests use the new version')
  held.open()
  const res = await inFlight
  assert.equal(res.status, 200, res.text)
  assert.equal(res.json<EchoRecord>().service, 'svc-a')
})

test('regression: a refused reload while an old version drains keeps that version\'s services', async (t) => {
  // Before the fix a reload that failed to build kept only the serving version's services,
  // dropping those a draining version still had requests for.
  const a = await startEcho(t, 'svc-a')
  const b = await startEcho(t, 'svc-b')
  const dir = await tempDir(t)
  const customPlugins = {
    hold: { module: fixturePlugin(dir, 'hold.js') },
    token: { module: fixturePlugin(dir, 'require-token.js') }
  }
  const services = { 'svc-a': [a], 'svc-b': [b] }
  const g = await startGateway(t, meshConfig(services, [
    { name: 'api', destination: { service: 'svc-a' }, plugins: [{ name: 'hold', options: { gate: 'refused-while-draining' } }] }
  ], { customPlugins }), { dir })
  const held = gate('refused-while-draining')
  const inFlight = g.request('/api/slow-auth')
  await held.waitForEntered(1)
  await g.writeConfig(meshConfig(services, [{ name: 'api-b', destination: { service: 'svc-b' } }], { customPlugins }))
  assert.equal((await g.gateway.reload('good')).ok, true)
  // Fails while building (the custom plugin's options), after the schema check.
  await g.writeConfig(meshConfig(services, [{ name: 'api-b', destination: { service: 'svc-b' }, plugins: [{ name: 'token', options: {} }] }], { customPlugins }))
  assert.equal((await g.gateway.reload('bad')).ok, false)
  held.open()
  const res = await inFlight
  assert.equal(res.status, 200, res.text)
  assert.equal(res.json<EchoRecord>().service, 'svc-a')
})

test('20 reloads while traffic flows: zero failed requests', async (t) => {
  const a = await startEcho(t, 'svc-a')
  const b = await startEcho(t, 'svc-b')
  const services = { 'svc-a': [a], 'svc-b': [b] }
  // Two valid configs routing the same paths to disjoint services (each swap releases the
  // other service's endpoint set and pools while requests are in flight), with and without a plugin.
  const configA = meshConfig(services, [
    { name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'svc-a' } },
    { name: 'fallback', destination: { service: 'svc-a' } }
  ])
  const configB = meshConfig(services, [
    { name: 'api-v2', match: { path: { prefix: '/api' } }, destination: { service: 'svc-b' }, plugins: [{ name: 'headers', options: { response: { set: { 'x-config': 'b' } } } }] },
    { name: 'fallback-v2', match: { path: { prefix: '/' } }, destination: { service: 'svc-b' }, timeout: '10s' }
  ])
  const g = await startGateway(t, configA)
  const agent = new Agent({ connections: 8, keepAliveTimeout: 10_000 })
  defer(t, async () => { await agent.destroy() })

  const failures: string[] = []
  let completed = 0
  let stop = false
  const client = async (id: number): Promise<void> => {
    for (let i = 0; !stop; i++) {
      const path = i % 2 === 0 ? `/api/items/${id}-${i}` : `/page/${id}-${i}`
      try {
        const res = await agent.request({ origin: g.url, path, method: i % 3 === 0 ? 'POST' : 'GET', body: i % 3 === 0 ? 'payload' : undefined })
        const text = await res.body.text()
        if (res.statusCode !== 200) failures.push(`${path}: ${res.statusCode} ${text}`)
      } catch (err) {
        failures.push(`${path}: ${(err as Error).message}`)
      }
      completed++
    }
  }
  const clients = Array.from({ length: 8 }, async (_, id) => { await client(id) })
  try {
    for (let i = 0; i < 20; i++) {
      await g.writeConfig(i % 2 === 0 ? configB : configA)
      const result = await g.gateway.reload(`reload ${i + 1}`)
      assert.equal(result.ok, true, `reload ${i + 1}: ${result.error}`)
      // Let some traffic through on this version before the next swap.
      const seen = completed
      await eventually(() => completed >= seen + 8, 'requests on the new version', 10_000, 1)
    }
  } finally {
    stop = true
    await Promise.all(clients)
  }
  assert.equal(g.gateway.reloads.ok, 20)
  assert.ok(completed > 0)
  assert.ok(a.seen.length > 0 && b.seen.length > 0, 'both configs served traffic')
  assert.deepEqual(failures, [], `${failures.length} of ${completed} requests failed`)
})
