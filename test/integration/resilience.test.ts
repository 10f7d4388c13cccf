// Resilience end to end, through a real gateway over real upstreams on loopback: passive
// outlier detection (an instance killed by PID under load; an endpoint without a health
// check that stops listening, with nothing configured), circuit limits answered at once,
// failover to another subset or service and back, an ejection kept across a reload, and
// `fastmesh validate` refusing each feature's contradictions with their JSON paths.
// Dead endpoints under the default config, and failover without health checks:
// test/integration/dead-endpoints.test.ts.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { startGateway, eventually, assertErrorResponse, type ConfigDoc, type TestGateway } from '../helpers/gateway.js'
import { startEcho, startSample, startHeldUpstream, startUpstream, startUpstreamProcess, meshConfig, type Upstream, type UpstreamProcess } from '../helpers/upstreams.js'
import { spawnCli } from '../helpers/cli.js'
import { load, failures, describeFailures } from '../helpers/load.js'
import type { SampleService } from '../../src/demo/sample-service.js'

const FAST_CHECK = { path: '/health', interval: '100ms', timeout: '500ms', unhealthyThreshold: 1, healthyThreshold: 1 }
/** The default of `outlierDetection.consecutiveGatewayErrors`. */
const EJECT_AFTER = 5
/** The ejection reasons: by the consecutive gateway errors rule, or a refused connection (unreachable until a probe connects). */
const BY_ERRORS = /consecutive gateway errors/
const UNREACHABLE = /^unreachable: /

interface AdminEndpoint { id: string, port: number, health: string, state: string, ejectedUntil?: string, ejectionReason?: string }
interface AdminServices {
  services: Array<{ name: string, healthy: number, inRotation: number, endpoints: AdminEndpoint[] }>
  failover: Array<{ chain: string, active: { index: number, target: string } }>
}

async function services (g: TestGateway): Promise<AdminServices> {
  const res = await g.admin('GET', '/services')
  assert.equal(res.status, 200)
  return res.json<AdminServices>()
}

async function endpointOf (g: TestGateway, service: string, port: number): Promise<AdminEndpoint> {
  const s = (await services(g)).services.find((x) => x.name === service)
  const e = s?.endpoints.find((x) => x.port === port)
  assert.ok(e !== undefined, `${service} endpoint on port ${port} is listed`)
  return e
}

/** Asserts admin shows the endpoint on `port` out of rotation (`reason`), with an end in the future. */
async function assertEjected (g: TestGateway, service: string, port: number, reason: RegExp): Promise<AdminEndpoint> {
  const e = await endpointOf(g, service, port)
  assert.equal(e.state, 'ejected', JSON.stringify(e))
  assert.match(String(e.ejectionReason), reason)
  // An unreachable endpoint's ejectedUntil is its next probe, which runs when traffic comes (it may be due already).
  if (!UNREACHABLE.test(String(e.ejectionReason))) assert.ok(Date.parse(String(e.ejectedUntil)) > Date.now(), `ejectedUntil ${e.ejectedUntil} is in the future`)
  else assert.ok(Number.isFinite(Date.parse(String(e.ejectedUntil))), `ejectedUntil ${e.ejectedUntil} is a time`)
  const s = (await services(g)).services.find((x) => x.name === service)!
  assert.equal(s.inRotation, s.healthy - 1, 'the service counts the ejected endpoint out of rotation')
  return e
}

/** Upstreams in their own processes (test/fixtures/upstream-process.ts), killed after the test. */
async function upstreamProcesses (t: TestContext, n: number): Promise<UpstreamProcess[]> {
  const out = []
  for (let i = 0; i < n; i++) out.push(await startUpstreamProcess(t, `u${i}`))
  return out
}

test('an instance killed under load with retries off: client errors stop once outlier detection takes it out, bounded', async (t) => {
  const ups = await upstreamProcesses(t, 3)
  const g = await startGateway(t, meshConfig({ api: ups }, [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 1 } }]))
  const CONCURRENCY = 8
  const outcomes = await load(g, 1200, CONCURRENCY, new Map([[400, () => { ups[1]!.kill() }]]))
  const errors = failures(outcomes)
  t.diagnostic(`${outcomes.length} requests, ${errors.length} client-visible errors`)
  const LAST = 200
  assert.ok(errors.length > 0, 'with retries off the killed instance is seen failing')
  // Its first refused connection takes it out (five consecutive failures would eject it too);
  // at most the attempts already on their way to it add to them.
  assert.ok(errors.length <= EJECT_AFTER + CONCURRENCY, `${errors.length} client-visible errors: ${describeFailures(errors)}`)
  assert.equal(failures(outcomes.slice(-LAST)).length, 0, `the last ${LAST} requests all succeeded`)
  // Out by its first refused connection, or ejected first if five requests in flight on it were reset.
  await assertEjected(g, 'api', ups[1]!.port, new RegExp(`${UNREACHABLE.source}|${BY_ERRORS.source}`))
})

test('with nothing configured, an endpoint without a health check that stops listening leaves rotation at its first refused connection: no client error, and it is not tried again', async (t) => {
  const live = await startEcho(t, 'live', { connection: 'close' })
  // Closing each connection after its answer: every try opens a new one, so a stopped
  // listener is a refused connection (retried by default), never a stale keep-alive socket.
  const doomed = await startEcho(t, 'doomed', { connection: 'close' })
  const g = await startGateway(t, meshConfig({ api: [live, doomed] }, [{ name: 'api', destination: { service: 'api' } }]))
  for (let i = 0; i < 4; i++) assert.equal((await g.request('/')).status, 200)
  assert.ok(doomed.seen.length > 0, 'the endpoint served before it stopped')
  await new Promise<void>((resolve) => { doomed.server.close(() => { resolve() }) })

  for (let i = 0; i < 30; i++) {
    const res = await g.request('/', { headers: { 'x-request-id': `after-${i}` } })
    assert.equal(res.status, 200, `request ${i}: ${res.text}`)
    assert.equal(res.headers['x-served-by'], 'live')
  }
  const attempts = Array.from({ length: 30 }, (_, i) => {
    const line = g.logs.entries().find((e) => e.log === 'access' && e.requestId === `after-${i}`)
    assert.ok(line !== undefined, `access line of request ${i}`)
    // The access log names `attempts` only when there was more than one.
    return line.attempts ?? 1
  })
  assert.equal(attempts.filter((a) => a === 2).length, 1, `retried requests: ${JSON.stringify(attempts)}`)
  // Round robin reaches it on the first or second request after it stopped.
  assert.deepEqual(attempts.slice(2), Array(28).fill(1), 'once unreachable it is no longer tried (connect probes are not requests)')
  const e = await assertEjected(g, 'api', doomed.port, UNREACHABLE)
  assert.equal(e.health, 'passing', 'no health check says otherwise: only outlier detection knows')
})

test('regression: an endpoint without a health check that stops listening no longer answers "200 502 200 502 ..." forever (retries off)', async (t) => {
  const live = await startEcho(t, 'live', { connection: 'close' })
  const doomed = await startEcho(t, 'doomed', { connection: 'close' })
  const g = await startGateway(t, meshConfig({ api: [live, doomed] }, [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 1 } }]))
  await new Promise<void>((resolve) => { doomed.server.close(() => { resolve() }) })
  const statuses: number[] = []
  for (let i = 0; i < 40; i++) {
    const res = await g.request('/')
    statuses.push(res.status)
    if (res.status !== 200) assertErrorResponse(res, 502, 'FASTMESH_ERR_UPSTREAM_FAILURE')
  }
  // One refused connection takes it out (it took five before refused connections counted as unreachable).
  assert.equal(statuses.filter((s) => s !== 200).length, 1, statuses.join(' '))
  assert.deepEqual(statuses.slice(-20), Array(20).fill(200))
  await assertEjected(g, 'api', doomed.port, UNREACHABLE)
})

test('past circuitBreaker.maxRequests a request is answered 503 FASTMESH_ERR_OVERFLOW at once, and requests pass again once the held ones finish', async (t) => {
  const held = await startHeldUpstream(t)
  const g = await startGateway(t, meshConfig({ api: [held] }, [{ name: 'api', destination: { service: 'api' } }], {
    services: { api: { circuitBreaker: { maxRequests: 2 } } }
  }))
  const first = [g.request('/a'), g.request('/b')]
  await held.waitForArrivals(2)
  const started = performance.now()
  const third = await g.request('/c')
  const elapsed = performance.now() - started
  assertErrorResponse(third, 503, 'FASTMESH_ERR_OVERFLOW')
  assert.equal(third.headers['x-fastmesh-overflow'], 'max-requests')
  // The route timeout is 15 s; an answer "at once" on loopback takes milliseconds.
  assert.ok(elapsed < 1000, `overflow answered after ${elapsed.toFixed(0)} ms`)
  assert.equal(held.arrived, 2, 'the refused request never reached the upstream')
  held.release()
  for (const res of await Promise.all(first)) assert.equal(res.status, 200)
  for (let i = 0; i < 3; i++) assert.equal((await g.request('/d')).status, 200)
})

/** Embedded endpoints with tags; each answers `x-served-by: <instance>`. */
function tagged (list: Array<{ s: SampleService, tags: string[] }>): Array<Record<string, unknown>> {
  return list.map(({ s, tags }) => ({ id: s.instance, address: '127.0.0.1', port: s.port, tags }))
}

async function waitForHealth (g: TestGateway, service: string, ports: number[], health: string): Promise<void> {
  await eventually(async () => {
    const s = (await services(g)).services.find((x) => x.name === service)
    return ports.every((p) => s?.endpoints.find((e) => e.port === p)?.health === health)
  }, `${service} endpoints ${ports.join(',')} to be ${health}`)
}

/** Who served `n` sequential requests (every one must be a 200). */
async function servedBy (g: TestGateway, n: number): Promise<Set<string>> {
  const out = new Set<string>()
  for (let i = 0; i < n; i++) {
    const res = await g.request('/')
    assert.equal(res.status, 200, `request ${i}: ${res.text}`)
    out.add(String(res.headers['x-served-by']))
  }
  return out
}

async function activeFailover (g: TestGateway): Promise<{ chain: string, active: { index: number, target: string } }> {
  const f = (await services(g)).failover
  assert.equal(f.length, 1, JSON.stringify(f))
  return f[0]!
}

test('failover to another subset: traffic moves to the backup subset while the primary has no healthy endpoint, and back when it recovers', async (t) => {
  const p1 = await startSample(t, 'api', 'primary-1')
  const p2 = await startSample(t, 'api', 'primary-2')
  const b1 = await startSample(t, 'api', 'backup-1')
  const g = await startGateway(t, {
    discovery: { embedded: { services: { api: { endpoints: tagged([{ s: p1, tags: ['primary'] }, { s: p2, tags: ['primary'] }, { s: b1, tags: ['backup'] }]), healthCheck: FAST_CHECK } } } },
    services: { api: { subset: { tags: ['primary'] }, failover: [{ subset: { tags: ['backup'] } }] } },
    routes: [{ name: 'api', destination: { service: 'api' } }]
  })
  await waitForHealth(g, 'api', [p1.port, p2.port, b1.port], 'passing')
  assert.deepEqual(await servedBy(g, 6), new Set(['primary-1', 'primary-2']))
  assert.equal((await activeFailover(g)).active.index, 0)

  p1.healthy = false
  p2.healthy = false
  await waitForHealth(g, 'api', [p1.port, p2.port], 'critical')
  assert.deepEqual(await servedBy(g, 6), new Set(['backup-1']))
  const during = await activeFailover(g)
  assert.equal(during.active.index, 1)
  assert.equal(during.active.target, 'api[tag=backup]')

  p1.healthy = true
  p2.healthy = true
  await waitForHealth(g, 'api', [p1.port, p2.port], 'passing')
  assert.deepEqual(await servedBy(g, 6), new Set(['primary-1', 'primary-2']))
  assert.equal((await activeFailover(g)).active.index, 0)
})

test('failover to another service: traffic moves to it while the primary has no healthy endpoint, and back when it recovers', async (t) => {
  const a = await startSample(t, 'api', 'api-1')
  const spare = await startSample(t, 'spare', 'spare-1')
  const g = await startGateway(t, {
    discovery: { embedded: { services: { api: { endpoints: tagged([{ s: a, tags: [] }]), healthCheck: FAST_CHECK }, spare: { endpoints: tagged([{ s: spare, tags: [] }]), healthCheck: FAST_CHECK } } } },
    services: { api: { failover: [{ service: 'spare' }] } },
    routes: [{ name: 'api', destination: { service: 'api' } }]
  })
  await waitForHealth(g, 'api', [a.port], 'passing')
  await waitForHealth(g, 'spare', [spare.port], 'passing')
  assert.deepEqual(await servedBy(g, 3), new Set(['api-1']))

  a.healthy = false
  await waitForHealth(g, 'api', [a.port], 'critical')
  assert.deepEqual(await servedBy(g, 3), new Set(['spare-1']))
  assert.deepEqual((await activeFailover(g)).active, { index: 1, target: 'spare' })

  a.healthy = true
  await waitForHealth(g, 'api', [a.port], 'passing')
  assert.deepEqual(await servedBy(g, 3), new Set(['api-1']))
  assert.equal((await activeFailover(g)).active.index, 0)
})

/**
 * A gateway over `api` = [live, broken] with retries off, after outlier detection ejected the
 * broken endpoint (it accepts connections and resets them: gateway errors, not unreachable).
 */
async function withBrokenEndpointEjected (t: TestContext): Promise<{ g: TestGateway, live: Awaited<ReturnType<typeof startEcho>>, broken: Upstream, routes: ConfigDoc[], before: Awaited<ReturnType<typeof assertEjected>> }> {
  const live = await startEcho(t, 'live', { connection: 'close' })
  const broken = await startUpstream(t, (req) => { req.socket.destroy() })
  const routes = [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 1 } }]
  const g = await startGateway(t, meshConfig({ api: [live, broken] }, routes))
  let errors = 0
  for (let i = 0; i < 20; i++) if ((await g.request('/')).status !== 200) errors++
  assert.equal(errors, EJECT_AFTER)
  const before = await assertEjected(g, 'api', broken.port, BY_ERRORS)
  return { g, live, broken, routes, before }
}

test('an ejection survives a config reload that keeps the service', async (t) => {
  const { g, live, broken, routes, before } = await withBrokenEndpointEjected(t)

  // A new version: one more route, the service and its policy unchanged.
  await g.writeConfig(meshConfig({ api: [live, broken] }, [...routes, { name: 'other', match: { path: { prefix: '/other' } }, destination: { service: 'api' } }]))
  const reload = await g.admin('POST', '/reload')
  assert.equal(reload.status, 200, reload.text)
  assert.equal(reload.json<{ version: number }>().version, 2)

  const after = await assertEjected(g, 'api', broken.port, BY_ERRORS)
  assert.equal(after.ejectedUntil, before.ejectedUntil, 'the same ejection, not a new one')
  // Retries are off: a 200 for every request means the new version never tries the ejected endpoint.
  for (let i = 0; i < 10; i++) assert.equal((await g.request(i % 2 === 0 ? '/' : '/other')).status, 200)
})

test('an ejection survives a reload that changes the service\'s balancing policy (a new endpoint set, the same outlier records)', async (t) => {
  const { g, live, broken, routes, before } = await withBrokenEndpointEjected(t)

  await g.writeConfig(meshConfig({ api: [live, broken] }, routes, { services: { api: { loadBalancer: { policy: 'least_request' } } } }))
  const reload = await g.admin('POST', '/reload')
  assert.equal(reload.status, 200, reload.text)

  const after = await assertEjected(g, 'api', broken.port, BY_ERRORS)
  assert.equal(after.ejectedUntil, before.ejectedUntil, 'the same ejection, not a new one')
  for (let i = 0; i < 10; i++) assert.equal((await g.request('/')).status, 200)
})

test('fastmesh validate refuses a hash key on a non-hash policy, a failover loop and all-zero split weights, each at its JSON path', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-resilience-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, 'contradictions.yaml')
  await writeFile(file, stringify({
    discovery: { embedded: { services: { users: { endpoints: [{ address: '127.0.0.1', port: 9301 }] }, orders: { endpoints: [{ address: '127.0.0.1', port: 9302 }] } } } },
    services: {
      users: { loadBalancer: { policy: 'round_robin', hashOn: { header: 'x-user' } }, failover: [{ service: 'orders' }] },
      orders: { failover: [{ service: 'users' }] }
    },
    routes: [{ name: 'split', destination: { backends: [{ service: 'users', weight: 0 }, { service: 'orders', weight: 0 }] } }]
  }))
  const r = await spawnCli(['validate', file])
  assert.equal(r.code, 2, r.stderr)
  assert.equal(r.stdout, '')
  assert.match(r.stderr, /FASTMESH_ERR_CONFIG_INVALID: 3 problems/)
  assert.ok(r.stderr.includes(`${file}: $.services.users.loadBalancer.hashOn:`), r.stderr)
  assert.ok(r.stderr.includes(`${file}: $.services.users.failover[0].service: failover loop: users → orders → users`), r.stderr)
  assert.ok(r.stderr.includes(`${file}: $.routes[0].destination.backends: every weight is 0`), r.stderr)
})
