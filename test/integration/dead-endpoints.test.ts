// Endpoints that die with no health check watching, under the default config, through a real
// gateway over real upstreams on loopback (processes killed by PID with SIGKILL): what the
// clients see while the gateway finds out (requests in flight reset, connections refused,
// answers 502/503/504) and when the dead come back. Counts and shares only, never timings.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, eventually, assertErrorResponse, type ConfigDoc, type TestGateway } from '../helpers/gateway.js'
import { startEcho, startUpstream, startUpstreamProcess, meshConfig, type UpstreamProcess } from '../helpers/upstreams.js'
import { freePort } from '../helpers/ports.js'
import { retryBudgetKind } from '../../src/gateway/retry.js'
import { load, requestOnce, failures, describeFailures, type Outcome } from '../helpers/load.js'

/** The default of `outlierDetection.consecutiveGatewayErrors`. */
const EJECT_AFTER = 5

async function processes (t: TestContext, prefix: string, n: number): Promise<UpstreamProcess[]> {
  const out: UpstreamProcess[] = []
  for (let i = 0; i < n; i++) out.push(await startUpstreamProcess(t, `${prefix}${i}`))
  return out
}

const api = [{ name: 'api', destination: { service: 'api' } }]

test('regression: an instance SIGKILLed under load costs no GET with the default config (a reset before any response byte is retried on another endpoint)', async (t) => {
  const ups = await processes(t, 'u', 3)
  const g = await startGateway(t, meshConfig({ api: ups }, api))
  const TOTAL = 1500
  const outcomes = await load(g, TOTAL, 8, new Map([[500, () => { ups[1]!.kill() }]]))
  const errors = failures(outcomes)
  t.diagnostic(`${TOTAL} requests, ${errors.length} client-visible errors`)
  assert.equal(errors.length, 0, describeFailures(errors))
  assert.ok(outcomes.slice(-500).every((o) => o.served !== 'u1'), 'the killed instance serves nothing at the end')
})

test('regression: a GET whose connection is reset before any response byte is retried on another endpoint by default; a POST is not', async (t) => {
  const resetter = await startUpstream(t, (req) => { req.socket.destroy() })
  const live = await startEcho(t, 'live')
  const g = await startGateway(t, meshConfig({ api: [resetter, live] }, api))
  // Round robin from the first endpoint: every other request starts on the resetter (until it is ejected).
  const gets = []
  for (let i = 0; i < 4; i++) gets.push(await g.request('/', { headers: { 'x-request-id': `get-${i}` } }))
  assert.deepEqual(gets.map((r) => r.status), [200, 200, 200, 200])
  const retried = g.logs.entries().filter((e) => e.log === 'access' && String(e.requestId).startsWith('get-') && e.attempts === 2)
  assert.ok(retried.length >= 1, 'a reset GET was retried')
  assert.deepEqual(retried[0]!.endpoints, [`127.0.0.1:${resetter.port}`, `127.0.0.1:${live.port}`])
  const posts = []
  for (let i = 0; i < 2; i++) posts.push((await g.request('/', { method: 'POST' })).status)
  assert.deepEqual(posts.sort(), [200, 502], 'a POST the upstream may have seen is not sent again')
})

/** Kills the whole primary under load, then brings it back; the backup is `backupName`'s instances. */
async function killPrimaryUnderLoad (t: TestContext, g: TestGateway, primary: UpstreamProcess[], isBackup: (served: string) => boolean): Promise<void> {
  const TOTAL = 2000
  const KILL_AT = 400
  const outcomes = await load(g, TOTAL, 8, new Map([[KILL_AT, () => { for (const p of primary) p.kill() }]]))
  const errors = failures(outcomes)
  const firstBackup = outcomes.findIndex((o) => isBackup(o.served))
  t.diagnostic(`${TOTAL} requests, primary killed before request ${KILL_AT}: ${errors.length} client-visible errors; the backup served from request ${firstBackup}${errors.length > 0 ? `; ${describeFailures(errors)}` : ''}`)
  const early = outcomes.slice(0, KILL_AT - 8).findIndex((o) => o.status !== 200 || isBackup(o.served))
  assert.equal(early, -1, `the primary served while it lived; request ${early}: ${JSON.stringify(outcomes[early])}`)
  assert.ok(errors.length < TOTAL / 100, `under 1% errors: ${errors.length} (${describeFailures(errors)})`)
  const after = outcomes.slice(KILL_AT + 100)
  assert.deepEqual(failures(after).length, 0, `no error once switched: ${describeFailures(after)}`)
  assert.ok(after.every((o) => isBackup(o.served)), 'the backup serves everything once switched')

  for (const p of primary) await p.restart()
  // Back within seconds (a refusing endpoint is re-probed), not after a 30 s ejection; no error meanwhile.
  const during: Outcome[] = []
  await eventually(async () => {
    const o = await requestOnce(g)
    during.push(o)
    return o.status === 200 && !isBackup(o.served)
  }, 'the primary to serve again', 10_000)
  assert.equal(failures(during).length, 0, describeFailures(during))
  const back = await load(g, 200, 4)
  assert.equal(failures(back).length, 0, describeFailures(back))
  t.diagnostic(`back on the primary after ${during.length} sequential requests; then ${back.filter((o) => isBackup(o.served)).length} of 200 on the backup`)
  assert.ok(back.slice(-100).every((o) => !isBackup(o.served)), 'the primary serves everything again')
  const failover = (await g.admin('GET', '/services')).json<{ failover: Array<{ active: { index: number } }> }>().failover
  assert.equal(failover[0]?.active.index, 0)
}

test('regression: without health checks, a primary killed under load fails over to another service (under 1% errors, none once switched) and takes traffic back soon after it returns', async (t) => {
  const primary = await processes(t, 'p', 3)
  const backup = await processes(t, 'b', 2)
  const g = await startGateway(t, meshConfig({ api: primary, spare: backup }, api, { services: { api: { failover: [{ service: 'spare' }] } } }))
  await killPrimaryUnderLoad(t, g, primary, (s) => s.startsWith('b'))
})

test('regression: without health checks, a primary subset killed under load fails over to the backup subset (under 1% errors, none once switched) and takes traffic back soon after it returns', async (t) => {
  const primary = await processes(t, 'p', 3)
  const backup = await processes(t, 'b', 2)
  const endpoints = [...primary.map((p) => ({ p, tags: ['primary'] })), ...backup.map((p) => ({ p, tags: ['backup'] }))]
    .map(({ p, tags }) => ({ id: p.name, address: '127.0.0.1', port: p.port, tags }))
  const g = await startGateway(t, {
    discovery: { embedded: { services: { api: { endpoints } } } },
    services: { api: { subset: { tags: ['primary'] }, failover: [{ subset: { tags: ['backup'] } }] } },
    routes: api
  })
  await killPrimaryUnderLoad(t, g, primary, (s) => s.startsWith('b'))
})

/**
 * A gateway over three instances, two of them dead: killed after the first requests set up
 * keep-alive connections to them, and gone before the next requests. (Two of three killed
 * with requests in flight on both is harsher: a reset is retried once, and that retry may
 * meet the other dying instance.)
 */
async function twoOfThreeDead (t: TestContext, extra: ConfigDoc = {}): Promise<{ g: TestGateway, ups: UpstreamProcess[] }> {
  const ups = await processes(t, 'u', 3)
  const g = await startGateway(t, meshConfig({ api: ups }, api, extra))
  assert.equal(failures(await load(g, 30, 3)).length, 0)
  ups[0]!.kill()
  ups[1]!.kill()
  await Promise.all([ups[0]!.exited(), ups[1]!.exited()])
  return { g, ups }
}

test('regression: with two of three instances killed and no health check, sequential requests see no error', async (t) => {
  const { g } = await twoOfThreeDead(t)
  const outcomes = await load(g, 300, 1)
  const errors = failures(outcomes)
  t.diagnostic(`${errors.length} of 300 sequential requests failed`)
  assert.equal(errors.length, 0, describeFailures(errors))
  assert.ok(outcomes.every((o) => o.served === 'u2'))
})

test('regression: with two of three instances killed and no health check, parallel requests see no error', async (t) => {
  const { g } = await twoOfThreeDead(t)
  const outcomes = await load(g, 800, 8)
  const errors = failures(outcomes)
  t.diagnostic(`${errors.length} of 800 parallel requests failed`)
  assert.equal(errors.length, 0, describeFailures(errors))
})

test('regression: a refused connection is retried even once the route\'s retry budget is spent (it never reached the upstream), and draws nothing from it', async (t) => {
  const live = await startEcho(t, 'live')
  const dead = [await freePort(), await freePort(), await freePort()]
  const budget = { percent: 0, minPerSecond: 0.1 }
  const g = await startGateway(t, meshConfig({ api: [...dead, live] }, [{ name: 'api', destination: { service: 'api' }, retries: { budget } }]))
  // The budget allows one retry in its 10 s window: spend it, and see it refuse the next.
  const routeBudget = g.gateway.state.slot(retryBudgetKind, 'api')
  assert.equal(routeBudget.tryRetry(budget), true)
  assert.equal(routeBudget.tryRetry(budget), false)
  const exhausted = routeBudget.exhausted
  const outcomes = await load(g, 80, 4)
  const errors = failures(outcomes)
  assert.equal(errors.length, 0, describeFailures(errors))
  assert.equal(routeBudget.exhausted, exhausted, 'no retry after a refused connection asked the budget')
})

test('retries after refused connections are bounded by the endpoints: with every endpoint dead, one try each, then one try a request once all are known unreachable', async (t) => {
  const dead = [await freePort(), await freePort(), await freePort()]
  const g = await startGateway(t, meshConfig({ api: dead }, api))
  const first = assertErrorResponse(await g.request('/'), 502, 'FASTMESH_ERR_UPSTREAM_FAILURE')
  assert.match(first.error.message, /ECONNREFUSED \(after 3 tries: /)
  for (let i = 0; i < 3; i++) {
    const later = assertErrorResponse(await g.request('/'), 502, 'FASTMESH_ERR_UPSTREAM_FAILURE')
    assert.doesNotMatch(later.error.message, /after/, 'a last-resort try is not retried on another unreachable endpoint')
  }
})

test('attempts: 1 still turns every retry off, after a refused connection too', async (t) => {
  const live = await startEcho(t, 'live')
  const dead = await freePort()
  const g = await startGateway(t, meshConfig({ api: [dead, live] }, [{ name: 'api', destination: { service: 'api' }, retries: { attempts: 1 } }]))
  const res = await g.request('/')
  assertErrorResponse(res, 502, 'FASTMESH_ERR_UPSTREAM_FAILURE')
  assert.equal(live.seen.length, 0)
})

/** An upstream answering 502, 503 and 504 in turn to everything. */
async function gatewayErrors (t: TestContext): Promise<{ port: number, hits: number }> {
  const state = { port: 0, hits: 0 }
  const statuses = [502, 503, 504]
  const up = await startUpstream(t, (req, res) => {
    req.resume()
    res.writeHead(statuses[state.hits++ % 3]!, { 'content-length': 4 }).end('sick')
  })
  state.port = up.port
  return state
}

test('regression: an endpoint answering 502/503/504 to everything is ejected by default after 5 in a row (consecutive gateway errors), not left in rotation for good', async (t) => {
  const a = await startEcho(t, 'a')
  const b = await startEcho(t, 'b')
  const sick = await gatewayErrors(t)
  const g = await startGateway(t, meshConfig({ api: [a, b, sick] }, api))
  const statuses: number[] = []
  for (let i = 0; i < 90; i++) statuses.push((await g.request('/')).status)
  assert.equal(statuses.filter((s) => s !== 200).length, EJECT_AFTER, statuses.join(' '))
  assert.deepEqual(statuses.slice(-60), Array(60).fill(200))
  assert.equal(sick.hits, EJECT_AFTER)
  const services = (await g.admin('GET', '/services')).json<{ services: Array<{ name: string, endpoints: Array<{ port: number, state: string, ejectionReason?: string }> }> }>().services
  const e = services.find((s) => s.name === 'api')!.endpoints.find((x) => x.port === sick.port)!
  assert.equal(e.state, 'ejected')
  assert.match(String(e.ejectionReason), /5 consecutive gateway errors/)
})

test('an endpoint answering plain 500 to everything is not ejected by default (the application\'s answer; consecutive5xx is opt-in)', async (t) => {
  const a = await startEcho(t, 'a')
  const sick = await startUpstream(t, (req, res) => { req.resume(); res.writeHead(500, { 'content-length': 4 }).end('oops') })
  const g = await startGateway(t, meshConfig({ api: [a, sick] }, api))
  const statuses: number[] = []
  for (let i = 0; i < 40; i++) statuses.push((await g.request('/')).status)
  assert.equal(statuses.filter((s) => s === 500).length, 20, statuses.join(' '))
})
