// One run of the balancing-policy micro-benchmark, in its own process so each policy gets a
// fresh JIT (another policy's run never makes the call sites polymorphic): the service
// layer's `pick` + `report` (src/balancer/service-endpoints.ts, outlier detection included)
// over N endpoints of the real EmbeddedRegistry, never connected to (no pool is made).
// Also times one endpoint change (registry update → balancer rebuild). Prints one JSON line.
//   node dist/bench/policy-cost.js --policy ewma [--endpoints 1000] [--picks 200000]
//     [--batches 5] [--in-flight 32] [--mixed-weights]
import { parseArgs } from 'node:util'
import pino from 'pino'
import { EmbeddedRegistry, type EmbeddedServiceInput } from '../src/discovery/embedded/registry.js'
import { ServiceEndpoints } from '../src/balancer/service-endpoints.js'
import { DEFAULT_BALANCING, POLICIES, type PolicyName } from '../src/balancer/policies/index.js'
import type { PickRequest } from '../src/balancer/types.js'
import { EndpointPools, type EndpointTarget, type PoolSettings } from '../src/upstream/endpoint-pool.js'

const { values } = parseArgs({
  options: {
    policy: { type: 'string' },
    endpoints: { type: 'string', default: '1000' },
    picks: { type: 'string', default: '200000' },
    batches: { type: 'string', default: '5' },
    'in-flight': { type: 'string', default: '32' },
    // Weights 1, 2, 3 in turn instead of all 1 (round robin then runs its weighted path).
    'mixed-weights': { type: 'boolean', default: false }
  }
})
const policy = values.policy as PolicyName
if (!POLICIES.includes(policy)) throw new Error(`--policy must be one of ${POLICIES.join(', ')}`)
const endpointCount = Number(values.endpoints)
const picksPerBatch = Number(values.picks)
const batches = Number(values.batches)
// Attempts outstanding at once: each pick is reported `inFlight` picks later, so the
// load-aware policies see non-zero in-flight counts, as under concurrent traffic.
const inFlight = Number(values['in-flight'])

const SETTINGS: PoolSettings = { connections: 4, pipelining: 1, connectTimeoutMs: 1_000, keepAliveTimeoutMs: 4_000 }

function endpoints (n: number, skip = -1): EmbeddedServiceInput['endpoints'] {
  const out: Array<EmbeddedServiceInput['endpoints'][number]> = []
  // Ports nothing listens on; only the balancer's choice is measured.
  for (let i = 0; i < n; i++) if (i !== skip) out.push({ id: `shop-${i}`, address: '127.0.0.1', port: 20_000 + i, weight: values['mixed-weights'] ? 1 + (i % 3) : 1, tags: [], meta: {} })
  return out
}

const registry = new EmbeddedRegistry(pino({ level: 'silent' }))
const pools = new EndpointPools()
registry.applyConfig({ shop: { endpoints: endpoints(endpointCount) } })
const service = new ServiceEndpoints({ service: 'shop' }, registry, pools, SETTINGS, undefined, { ...DEFAULT_BALANCING, policy })
if (service.healthyCount !== endpointCount) throw new Error(`expected ${endpointCount} usable endpoints, got ${service.healthyCount}`)

// Distinct client addresses, so the hash policies hash different keys (the default hashOn).
const requests: PickRequest[] = Array.from({ length: 1024 }, (_, i) => ({
  headers: {},
  clientAddress: `10.0.${i >> 8}.${i & 255}`,
  search: '',
  tried: undefined
}))
const window: Array<EndpointTarget | undefined> = new Array<EndpointTarget | undefined>(inFlight).fill(undefined)
// Latencies vary by endpoint (1 to 2.8 ms) so peak EWMA has something to tell apart.
const latencyOf = (t: EndpointTarget): number => 1 + (t.endpoint.port % 10) * 0.2
const outcome = (t: EndpointTarget): { status: number, gatewayError: boolean, latencyMs: number } => ({ status: 200, gatewayError: false, latencyMs: latencyOf(t) })

let slot = 0
function run (n: number): void {
  for (let i = 0; i < n; i++) {
    const done = window[slot]
    if (done !== undefined) service.report(done, outcome(done))
    const t = service.pick(requests[i & 1023])
    if (t === undefined) throw new Error('no endpoint picked')
    window[slot] = t
    slot = (slot + 1) % inFlight
  }
}

run(picksPerBatch) // warm-up: JIT, EWMA estimates, outlier state
const nsPerPick: number[] = []
for (let b = 0; b < batches; b++) {
  const t0 = process.hrtime.bigint()
  run(picksPerBatch)
  nsPerPick.push(Number(process.hrtime.bigint() - t0) / picksPerBatch)
}

// One endpoint leaving and coming back: the registry publishes, the balancer rebuilds.
const updateMs: number[] = []
for (let k = 0; k < 6; k++) {
  const t0 = process.hrtime.bigint()
  registry.applyConfig({ shop: { endpoints: endpoints(endpointCount, k % 2 === 0 ? k : -1) } })
  service.pick(requests[0])
  updateMs.push(Number(process.hrtime.bigint() - t0) / 1e6)
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2 }
for (const t of window) if (t !== undefined) service.report(t, outcome(t))
service.close()
await pools.close()
await registry.close()
process.stdout.write(JSON.stringify({
  policy,
  endpoints: endpointCount,
  mixed_weights: values['mixed-weights'],
  picks: picksPerBatch * batches,
  ns_per_pick: median(nsPerPick),
  ns_per_pick_batches: nsPerPick,
  update_ms: median(updateMs),
  pools: pools.size
}) + '\n')
