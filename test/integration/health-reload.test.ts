// Active health checks across config reloads: a reload that lands while a probe is in
// flight must neither end that endpoint's probe loop nor start a second one beside it.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { embeddedServices, startUpstream } from '../helpers/upstreams.js'
import type { HealthStatus } from '../../src/discovery/types.js'

type HealthMode = 'ok' | 'fail' | 'hold'

interface ProbedUpstream {
  readonly port: number
  /** How `/health` answers from now on: 200, 503, or held until `release`. */
  mode: HealthMode
  /** Probes that reached `/health` so far. */
  readonly probes: number
  /** Resolves once `n` probes have arrived in total. */
  probesReached(n: number): Promise<void>
  /** Answers every held probe with 200. */
  release(): void
}

async function startProbedUpstream (t: TestContext): Promise<ProbedUpstream> {
  let probes = 0
  const held: Array<() => void> = []
  const state = { mode: 'ok' as HealthMode }
  const up = await startUpstream(t, (req, res) => {
    req.resume()
    if (req.url !== '/health') { res.end('ok'); return }
    probes++
    if (state.mode === 'hold') { held.push(() => { res.end('ok') }); return }
    res.statusCode = state.mode === 'ok' ? 200 : 503
    res.end(state.mode)
  })
  return {
    port: up.port,
    get mode () { return state.mode },
    set mode (m: HealthMode) { state.mode = m },
    get probes () { return probes },
    async probesReached (n) { await eventually(() => probes >= n, `${n} health probe(s) at the upstream (${probes} so far)`) },
    release () { for (const answer of held.splice(0)) answer() }
  }
}

function configWith (port: number, healthCheck: Record<string, unknown>): Record<string, unknown> {
  return {
    discovery: { embedded: { services: embeddedServices({ svc: [port] }, healthCheck) } },
    routes: [{ name: 'svc', match: { path: { prefix: '/' } }, destination: { service: 'svc' } }]
  }
}

function health (g: TestGateway): HealthStatus | undefined {
  return g.gateway.registry.snapshot('svc')?.endpoints[0]?.health
}

// Probes time out long after the waits below, so a held probe stays in flight throughout.
const check = { interval: '50ms', timeout: '5s', healthyThreshold: 1, unhealthyThreshold: 1 }

test('a reload while a health probe is in flight does not stop that endpoint\'s health checks', async (t) => {
  const up = await startProbedUpstream(t)
  const config = configWith(up.port, check)
  const g = await startGateway(t, config)
  await eventually(() => health(g) === 'passing', 'the endpoint to pass its first probe')

  up.mode = 'hold'
  await up.probesReached(up.probes + 1)
  await g.writeConfig(config)
  assert.equal((await g.gateway.reload('test')).ok, true)
  up.mode = 'fail'
  up.release()

  await eventually(() => health(g) === 'critical', 'the failing endpoint to leave rotation after the reload', 5_000)
  up.mode = 'ok'
  await eventually(() => health(g) === 'passing', 'the endpoint to come back after the reload', 5_000)
})

test('reloads landing on in-flight probes, again and again, keep the probe loop alive', async (t) => {
  const up = await startProbedUpstream(t)
  const config = configWith(up.port, check)
  const g = await startGateway(t, config)
  await eventually(() => health(g) === 'passing', 'the endpoint to pass its first probe')
  for (let i = 0; i < 5; i++) {
    up.mode = 'hold'
    await up.probesReached(up.probes + 1)
    await g.writeConfig(config)
    assert.equal((await g.gateway.reload(`test ${i}`)).ok, true)
    up.mode = 'ok'
    up.release()
  }
  const before = up.probes
  await up.probesReached(before + 3)
  up.mode = 'fail'
  await eventually(() => health(g) === 'critical', 'a health change after five reloads to be noticed', 5_000)
})

test('a reload that changes the health check during a probe leaves one probe loop, not two', async (t) => {
  const up = await startProbedUpstream(t)
  const g = await startGateway(t, configWith(up.port, check))
  await eventually(() => health(g) === 'passing', 'the endpoint to pass its first probe')

  up.mode = 'hold'
  await up.probesReached(up.probes + 1)
  await g.writeConfig(configWith(up.port, { ...check, interval: '60ms' }))
  assert.equal((await g.gateway.reload('test')).ok, true)
  // The changed check probes at once (a second probe in flight is expected here), then
  // the abandoned one is answered.
  await up.probesReached(up.probes + 1)
  up.mode = 'ok'
  up.release()
  await up.probesReached(up.probes + 2)

  // One loop waits on its held probe and sends nothing else; a second loop would probe on.
  up.mode = 'hold'
  await up.probesReached(up.probes + 1)
  const held = up.probes
  await new Promise((resolve) => setTimeout(resolve, 600))
  assert.equal(up.probes, held, 'no probe was sent while the only loop waits on its probe')
  up.mode = 'ok'
  up.release()
})
