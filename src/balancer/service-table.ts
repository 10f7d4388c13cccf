// The destination services that routes point at, kept across config versions: a reload
// reuses each service's endpoint set and pools; those no route needs any more are released.
// Getting a set never changes one in use: a version whose pool settings differ gets its own
// set, so building a version (even one that then fails) leaves the live version untouched.
import type { Discovery } from '../discovery/types.js'
import type { FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { EndpointPools, type MeshConnection, type PoolSettings } from '../upstream/endpoint-pool.js'
import { endpointLabel, ServiceEndpoints } from './service-endpoints.js'
import { selectorKey, type ServiceSelector } from '../config/selectors.js'
import { DEFAULT_BALANCING, EWMA_DECAY, EWMA_DEFAULT_RTT, MAGLEV_TABLE_SIZE, RING_VIRTUAL_NODES, type BalancingSettings, type PolicyContext } from './policies/index.js'
import { defaultRandom } from './random.js'
import { OutlierDetector, outlierSettings, outlierStoreKind, type OutlierEvent, type OutlierSettings } from './outlier.js'
import { CircuitLimits, circuitCountersKind, circuitSettings, type CircuitSettings, type OverflowLimit } from './circuit.js'
import { endpointStateKey, StateRegistry } from '../state/registry.js'
import { EndpointEvents } from './events.js'
import type { Logger } from 'pino'

/** The pool settings of every service without `connectionPool`: one object for all of them. */
const DEFAULT_POOL_SETTINGS: PoolSettings = Object.freeze({ connections: 128, pipelining: 1, connectTimeoutMs: durationMs('2s'), keepAliveTimeoutMs: durationMs('30s') })

export function poolSettingsFor (config: FastmeshConfig, service: string): PoolSettings {
  const p = config.services[service]?.connectionPool
  if (p === undefined) return DEFAULT_POOL_SETTINGS
  return {
    connections: p?.connections ?? 128,
    pipelining: p?.pipelining ?? 1,
    connectTimeoutMs: durationMs(p?.connectTimeout ?? '2s'),
    keepAliveTimeoutMs: durationMs(p?.keepAliveTimeout ?? '30s')
  }
}

/** Outlier detection and circuit limits of a destination. */
export interface ResilienceSettings {
  readonly outlier: OutlierSettings
  readonly circuit: CircuitSettings
}

let sharedDefaultResilience: ResilienceSettings | undefined

function defaultResilience (pool: PoolSettings): ResilienceSettings {
  if (pool.pipelining === 1) return (sharedDefaultResilience ??= Object.freeze({ outlier: outlierSettings(), circuit: circuitSettings() }))
  return { outlier: outlierSettings(), circuit: circuitSettings(undefined, pool.pipelining) }
}

/** `services.<name>.outlierDetection` and `.circuitBreaker`, defaults filled (services without them share one object). */
export function resilienceFor (config: FastmeshConfig, service: string): ResilienceSettings {
  const policy = config.services[service]
  const pool = poolSettingsFor(config, service)
  if (policy?.outlierDetection === undefined && policy?.circuitBreaker === undefined) return defaultResilience(pool)
  return { outlier: outlierSettings(policy?.outlierDetection), circuit: circuitSettings(policy?.circuitBreaker, pool.pipelining) }
}

/** The balancing policy of `service` (services.<name>.loadBalancer, gateway.zone). */
export function balancingFor (config: FastmeshConfig, service: string): BalancingSettings {
  const lb = config.services[service]?.loadBalancer
  const zone = config.gateway.zone
  if (lb === undefined && zone === undefined) return DEFAULT_BALANCING
  const locality = lb?.locality
  return {
    policy: lb?.policy ?? 'round_robin',
    ...(lb?.hashOn !== undefined ? { hashOn: lb.hashOn } : {}),
    virtualNodes: lb?.ringHash?.virtualNodes ?? RING_VIRTUAL_NODES,
    tableSize: lb?.maglev?.tableSize ?? MAGLEV_TABLE_SIZE,
    decayMs: durationMs(lb?.ewma?.decay ?? EWMA_DECAY),
    defaultRttMs: durationMs(lb?.ewma?.defaultRtt ?? EWMA_DEFAULT_RTT),
    ...(zone !== undefined && locality?.enabled !== false
      ? { locality: { zone, metaKey: locality?.zoneMetaKey ?? 'zone', minLocalShare: locality?.minLocalShare ?? 0.7 } }
      : {})
  }
}

/** JSON of a settings object, kept while the object lives (shared defaults are written once). */
const settingsJson = new WeakMap<object, string>()

function jsonOf (settings: object): string {
  let json = settingsJson.get(settings)
  if (json === undefined) settingsJson.set(settings, json = JSON.stringify(settings))
  return json
}

export class ServiceTable {
  private readonly byKey = new Map<string, ServiceEndpoints>()
  /**
   * A number per distinct combination of pool, balancing and resilience settings: a set's
   * key names its settings by it, so a thousand sets do not each keep their settings' JSON.
   */
  private readonly settingsIds = new Map<string, number>()
  readonly pools = new EndpointPools()
  /** Ejections, returns, reachability and circuit overflows of every destination, across versions. */
  readonly events = new EndpointEvents()

  /** Set when the mesh is on: builds the mTLS connector of a pool. */
  meshConnector: ((caller: string, destination: string, connectTimeoutMs: number) => MeshConnection['connector']) | undefined

  /**
   * `context`: the random source and clock of every set's balancer (seeded in tests).
   * `state`: where outlier and circuit state is kept by selector, so sets that replace one
   * another (new pool or policy settings) and reloads keep ejections and in-flight counts.
   */
  constructor (
    readonly discovery: Discovery,
    private readonly context: PolicyContext = { random: defaultRandom, now: () => performance.now() },
    private readonly state: StateRegistry = new StateRegistry(),
    private readonly log?: Logger
  ) {}

  /**
   * The endpoint set for `selector` under pool `settings`, created on first use, with its
   * key. Side-effect free for sets in use: an existing set is returned as it is, and other
   * settings make another set (the old one stays with the versions using it until `retain`).
   */
  get (selector: ServiceSelector, settings: PoolSettings, balancing: BalancingSettings = DEFAULT_BALANCING, resilience: ResilienceSettings = defaultResilience(settings)): { key: string, endpoints: ServiceEndpoints } {
    // A set per selector and settings: sets with other settings never share pools, and a
    // policy change gives a fresh balancer (its statistics start over).
    const json = `${jsonOf(settings)}|${jsonOf(balancing)}|${jsonOf(resilience)}`
    let settingsId = this.settingsIds.get(json)
    if (settingsId === undefined) this.settingsIds.set(json, settingsId = this.settingsIds.size)
    const key = `${selectorKey(selector)}|${settingsId}`
    let s = this.byKey.get(key)
    if (s === undefined) {
      const stateKey = selectorKey(selector)
      s = new ServiceEndpoints(selector, this.discovery, this.pools, settings, this.meshConnector, balancing, this.context, {
        outlier: new OutlierDetector(selector.service, resilience.outlier, this.state.slot(outlierStoreKind, stateKey), { ...(this.log !== undefined ? { log: this.log } : {}), onChange: this.emitEvent }),
        circuit: new CircuitLimits(selector.service, resilience.circuit, this.state.slot(circuitCountersKind, stateKey), this.emitOverflow)
      }, this.endpointsLeft)
      this.byKey.set(key, s)
    }
    return { key, endpoints: s }
  }

  private closing = false

  // One of each for every set (not a closure per destination).
  private readonly emitEvent = (event: OutlierEvent): void => { this.events.emit(event) }
  private readonly emitOverflow = (limit: OverflowLimit, service: string): void => { this.events.emit({ type: 'overflow', service, limit }) }

  /**
   * Endpoints one set no longer lists (discovery dropped them, or the set closed): their
   * endpoint-scoped state goes, unless another open set of the service still lists them.
   */
  private readonly endpointsLeft = (set: ServiceEndpoints, labels: readonly string[]): void => {
    if (this.closing) return
    let gone = labels
    for (const other of this.byKey.values()) {
      if (other === set || other.service !== set.service || other.current === undefined) continue
      const listed = new Set(other.current.endpoints.map(endpointLabel))
      gone = gone.filter((l) => !listed.has(l))
      if (gone.length === 0) return
    }
    this.state.forget('endpoint', gone.map((l) => endpointStateKey(set.service, l)))
  }

  /** The selector keys (stable across pool settings: state is kept by them) of table `keys`. */
  selectorKeys (keys: Iterable<string>): Set<string> {
    const out = new Set<string>()
    for (const key of keys) {
      const s = this.byKey.get(key)
      if (s !== undefined) out.add(s.key)
    }
    return out
  }

  /** After a swap: drop endpoint sets the live version no longer routes to. */
  retain (keys: ReadonlySet<string>): void {
    for (const [key, s] of this.byKey) {
      if (keys.has(key)) continue
      s.close()
      this.byKey.delete(key)
    }
  }

  /** Another worker ejected `endpointId` of `service`: every endpoint set of the service that has it ejects it too, until the same time. */
  adoptEjection (service: string, endpointId: string, until: number, reason: string): void {
    const now = Date.now()
    for (const set of this.byKey.values()) {
      if (set.service === service && set.hasEndpoint(endpointId)) set.outlier.adopt(endpointId, until, reason, now)
    }
  }

  all (): ServiceEndpoints[] {
    return [...this.byKey.values()]
  }

  async close (): Promise<void> {
    // The gateway is stopping: its state goes as a whole, not endpoint by endpoint.
    this.closing = true
    for (const s of this.byKey.values()) s.close()
    this.byKey.clear()
    await this.pools.close()
  }
}
