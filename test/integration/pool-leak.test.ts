// Endpoints that leave rotation and come back, hundreds of times under traffic: the pool
// closed at each exit must become garbage (counted exactly after forced GCs), and the heap
// after GC must not grow with the number of transitions.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { Agent } from 'undici'
import type { EndpointPool } from '../../src/upstream/endpoint-pool.js'
import { startGateway, eventually, type TestGateway } from '../helpers/gateway.js'
import { embeddedServices, startUpstream } from '../helpers/upstreams.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** Full collections with turns of the event loop between them, so finalizers run. */
async function collect (): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc()
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

interface Flippable {
  readonly port: number
  healthy: boolean
}

async function startFlippable (t: TestContext): Promise<Flippable> {
  const state = { healthy: true }
  const up = await startUpstream(t, (req, res) => {
    req.resume()
    req.on('end', () => {
      if (req.url === '/health') res.statusCode = state.healthy ? 200 : 503
      res.end('ok')
    })
  })
  return { port: up.port, get healthy () { return state.healthy }, set healthy (h) { state.healthy = h } }
}

/** Counts the pools the gateway has made that are still reachable. */
function countLivePools (g: TestGateway): { readonly live: number, readonly made: number } {
  const counts = { live: 0, made: 0 }
  const finalized = new FinalizationRegistry<undefined>(() => { counts.live-- })
  const seen = new WeakSet<EndpointPool>()
  const pools = g.gateway.services.pools
  const acquire = pools.acquire.bind(pools)
  pools.acquire = (...args) => {
    const pool = acquire(...args)
    if (!seen.has(pool)) {
      seen.add(pool)
      finalized.register(pool, undefined)
      counts.live++
      counts.made++
    }
    return pool
  }
  return counts
}

/**
 * Requests in a few parallel loops until stopped, so every endpoint in rotation gets a
 * pool. Its own client, closed on stop: client connections do not carry into a heap reading.
 */
function traffic (g: TestGateway, parallel: number): { stop(): Promise<number> } {
  const agent = new Agent()
  let stopped = false
  let failures = 0
  const loops = Array.from({ length: parallel }, async (_, k) => {
    while (!stopped) {
      const res = await agent.request({ origin: g.url, path: '/x', ...(k % 2 === 0 ? { method: 'GET' } : { method: 'POST', body: 'x'.repeat(512) }) })
      await res.body.dump()
      // 503 is expected in the instant both endpoints are out; anything else is not.
      if (res.statusCode !== 200 && res.statusCode !== 503) failures++
      await new Promise((resolve) => setImmediate(resolve))
    }
  })
  return {
    async stop () {
      stopped = true
      await Promise.all(loops)
      await agent.close()
      return failures
    }
  }
}

test('endpoints leaving and rejoining rotation do not keep their closed pools, or heap, alive', async (t) => {
  const ups = [await startFlippable(t), await startFlippable(t)]
  const g = await startGateway(t, {
    discovery: { embedded: { services: embeddedServices({ svc: ups }, { interval: '10ms', timeout: '1s', healthyThreshold: 1, unhealthyThreshold: 1 }) } },
    routes: [{ name: 'svc', match: { path: { prefix: '/' } }, destination: { service: 'svc' } }]
  }, { logLevel: 'warn' }) // captured log lines (access log) would grow the heap themselves
  const health = (i: number): string | undefined => g.gateway.registry.snapshot('svc')?.endpoints[i]?.health
  await eventually(() => health(0) === 'passing' && health(1) === 'passing', 'both endpoints to pass their first probe')
  const pools = countLivePools(g)
  let transitions = 0
  /** Takes endpoint i out of rotation and back in: two health transitions. */
  const flap = async (i: number): Promise<void> => {
    ups[i]!.healthy = false
    await eventually(() => health(i) === 'critical', `endpoint ${i} to leave rotation`, 5_000, 2)
    ups[i]!.healthy = true
    await eventually(() => health(i) === 'passing', `endpoint ${i} to rejoin rotation`, 5_000, 2)
    transitions += 2
  }
  /** Flaps both endpoints in turn under traffic, then lets closing pools finish. */
  const run = async (cycles: number): Promise<void> => {
    const load = traffic(g, 4)
    for (let c = 0; c < cycles; c++) await flap(c % 2)
    assert.equal(await load.stop(), 0, 'requests that failed other than with 503')
    // undici drops cleared timers (which point at their clients) on its next 0.5 s tick.
    await new Promise((resolve) => setTimeout(resolve, 1200))
  }

  await run(40)
  await collect()
  const heapBefore = process.memoryUsage().heapUsed
  const transitionsBefore = transitions
  await run(250)
  await collect()
  const perTransition = (process.memoryUsage().heapUsed - heapBefore) / (transitions - transitionsBefore)

  assert.ok(pools.made >= 250, `traffic made a pool at most rejoins (${pools.made} made)`)
  // Each endpoint in rotation keeps at most its one open pool; every closed one is gone.
  assert.ok(pools.live <= 2, `${pools.live} of ${pools.made} pools still reachable after GC`)
  // The leak this prevents cost 25-33 KiB per transition.
  assert.ok(perTransition < 2048, `heap after GC grew ${Math.round(perTransition)} bytes per health transition`)
})
