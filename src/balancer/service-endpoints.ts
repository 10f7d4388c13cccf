// Service layer: the usable endpoints of one destination service (a subset of it, in one
// datacenter), kept current from discovery, each with its endpoint pool, and the
// balancing choice among them (the service's policy, preferring the gateway's own zone).
import { createConnection, type Socket } from 'node:net'
import { OutlierDetector, outlierSettings } from './outlier.js'
import { CircuitLimits, circuitSettings } from './circuit.js'
import type { Discovery, Endpoint, ServiceSnapshot } from '../discovery/types.js'
import type { ResponseError } from '../errors.js'
import type { EndpointPool, EndpointPools, EndpointTarget, MeshConnection, PoolSettings } from '../upstream/endpoint-pool.js'
import { createBalancer, DEFAULT_BALANCING, TargetStats, randomUntried, wasTried, type Balancer, type BalancedTarget, type BalancingSettings, type PolicyContext } from './policies/index.js'
import { defaultRandom } from './random.js'
import type { AdmissionKind, AttemptOutcome, PickRequest, ServiceLayer } from './types.js'
import { selectorKey, type ServiceSelector } from '../config/selectors.js'

function inSubset (e: Endpoint, subset: ServiceSelector['subset']): boolean {
  if (subset === undefined) return true
  for (const t of subset.tags) if (!e.tags.includes(t)) return false
  for (const [k, v] of Object.entries(subset.meta)) if (e.meta[k] !== v) return false
  return true
}

/** `address:port`: the endpoint as metrics, logs and errors name it. */
export function endpointLabel (e: Endpoint): string {
  return `${e.address}:${e.port}`
}

/** The endpoints (`address:port`) of `before` that `after` no longer lists. */
function leftEndpoints (before: ServiceSnapshot, after: ServiceSnapshot): string[] {
  if (before.endpoints.length === 0) return []
  const now = new Set(after.endpoints.map(endpointLabel))
  const left: string[] = []
  for (const e of before.endpoints) {
    const label = endpointLabel(e)
    if (!now.has(label)) left.push(label)
  }
  return left
}

/** Where a target gets its pool from (the ServiceEndpoints that owns it). */
interface PoolSource {
  acquire(endpoint: Endpoint): EndpointPool
}

/**
 * An endpoint ready for the balancer. Its pool is made on first use: a gateway watching
 * thousands of endpoints pays only for those it sends traffic to (an idle undici Pool
 * costs about 16 KiB).
 *
 * It holds its owner, never a closure: a closure made in `update` would keep that call's
 * whole scope (the target list, the previous targets) alive, and each target carried into
 * the next update would chain every older list, with their closed pools, forever.
 */
class LazyTarget implements BalancedTarget {
  acquired: EndpointPool | undefined
  /** `label`, made on first use: most endpoints of a large gateway never see a request. */
  private labelText: string | undefined = undefined

  constructor (readonly endpoint: Endpoint, private readonly source: PoolSource, pool?: EndpointPool, readonly stats = new TargetStats()) {
    this.acquired = pool
  }

  get label (): string {
    return (this.labelText ??= endpointLabel(this.endpoint))
  }

  get pool (): EndpointPool {
    return (this.acquired ??= this.source.acquire(this.endpoint))
  }

  /** The same target for a newer copy of its endpoint (health, weight, tags may differ). */
  with (endpoint: Endpoint): LazyTarget {
    if (endpoint === this.endpoint) return this
    return new LazyTarget(endpoint, this.source, this.acquired, this.stats)
  }
}

/** Which endpoints the balancer chooses among, with locality on (admin shows it). */
export type LocalityState = 'off' | 'local' | 'spill-over'

const defaultContext: PolicyContext = { random: defaultRandom, now: () => performance.now() }

/**
 * From this many endpoints, a policy with a stepped `rebuild` (ring_hash, maglev: several ms
 * at 1,000 endpoints) rebuilds off the request path: in slices of REBUILD_SLICE_MS on later
 * event-loop turns, serving the previous table meanwhile. Smaller sets rebuild at once.
 */
export const SLICED_REBUILD_MIN_TARGETS = 256
/** Event-loop time one slice of a rebuild takes at most (plus one step), ms. */
const REBUILD_SLICE_MS = 1

/** A rebuild of the balancer under way in slices (see SLICED_REBUILD_MIN_TARGETS). */
interface PendingRebuild {
  /** The newest set: only its endpoints may be picked until it is applied. */
  targets: readonly LazyTarget[]
  members: ReadonlySet<LazyTarget>
  /** The set the rebuild under way applies, and its steps (made at its first slice). */
  building: readonly LazyTarget[]
  steps: Generator<void, void, void> | undefined
  immediate: NodeJS.Immediate
}

export class ServiceEndpoints implements PoolSource, ServiceLayer {
  /** Usable endpoints in a stable order. */
  private targets: LazyTarget[] = []
  /** The ones the balancer chooses among: all usable, or the local zone's (locality). */
  private active: readonly LazyTarget[] = []
  private localityState: LocalityState = 'off'
  /** Endpoints of the own zone that discovery knows (usable or not), for the local share. */
  private localKnown = 0
  private readonly balancer: Balancer<LazyTarget>
  private snapshot: ServiceSnapshot | undefined
  /** Callers waiting for discovery's first answer (see `known`); made when one waits. */
  private firstAnswer: Array<() => void> | undefined
  private readonly unwatch: () => void
  private selectorKeyCache: string | undefined

  /** Passive health: endpoints failing in a row leave the balancer for a while. */
  readonly outlier: OutlierDetector
  /** Admission under the destination's circuit limits. */
  readonly circuit: CircuitLimits
  /** What the balancer was last given: `active` less the ejected endpoints. */
  private balanced: readonly LazyTarget[] = []
  private closed = false
  /** Endpoints discovery stopped listing while tries on them were under way (see `report`). */
  private departing: Set<LazyTarget> | undefined
  /** Connect probes of unreachable endpoints under way (destroyed on close); made with the first. */
  private probes: Set<Socket> | undefined
  /** What the balancer serves now (its last applied update). */
  private applied: readonly LazyTarget[] = []
  private pending: PendingRebuild | undefined
  private readonly random: () => number

  constructor (
    readonly selector: ServiceSelector,
    private readonly discovery: Discovery,
    private readonly pools: EndpointPools,
    readonly settings: PoolSettings,
    private readonly meshConnector?: (caller: string, destination: string, connectTimeoutMs: number) => MeshConnection['connector'],
    readonly balancing: BalancingSettings = DEFAULT_BALANCING,
    context: PolicyContext = defaultContext,
    resilience?: { readonly outlier: OutlierDetector, readonly circuit: CircuitLimits },
    /** Told of the endpoints (`address:port`) discovery stopped listing, and of all on close. */
    private readonly onLeft?: (set: ServiceEndpoints, labels: readonly string[]) => void
  ) {
    this.outlier = resilience?.outlier ?? new OutlierDetector(selector.service, outlierSettings())
    this.circuit = resilience?.circuit ?? new CircuitLimits(selector.service, circuitSettings(undefined, settings.pipelining))
    this.balancer = createBalancer<LazyTarget>(balancing, context)
    this.random = context.random
    this.circuit.setConnectionGauge(() => this.pools.openConnections(this.connectionLimit))
    this.unwatch = discovery.watch(selector.service, (s) => { this.update(s) }, {
      ...(selector.datacenter !== undefined ? { datacenter: selector.datacenter } : {}),
      ...(selector.meshCaller !== undefined ? { connect: true } : {})
    })
  }

  /** Whether discovery lists `endpointId` in this set now. */
  hasEndpoint (endpointId: string): boolean {
    return this.targets.some((t) => t.endpoint.id === endpointId)
  }

  get service (): string {
    return this.selector.service
  }

  /** The selector's stable key: the name service-scoped state is kept under. */
  get key (): string {
    return (this.selectorKeyCache ??= selectorKey(this.selector))
  }

  /**
   * An endpoint for one attempt, by the service's policy, among the usable endpoints (of the
   * local zone while locality holds); one not in `request.tried` when one exists (with
   * `untriedOnly`, none otherwise, nor an unreachable one tried as a last resort); undefined
   * when none is usable. Every target returned must be `report`ed once.
   */
  pick (request?: PickRequest): BalancedTarget | undefined {
    // The same array while no ejection changed: the balancer is rebuilt only when one did.
    const healthy = this.usableNow(Date.now())
    if (healthy !== this.balanced) this.rebalance(healthy)
    let t = this.balancer.pick(request)
    // While a rebuild is under way the previous table still names endpoints that left (their
    // pools closed): those keys go to a random endpoint of the new set until it is applied.
    const pending = this.pending
    if (pending !== undefined && (t === undefined || !pending.members.has(t))) t = randomUntried(pending.targets, request, this.random)
    if (t === undefined) return undefined
    if (request?.untriedOnly === true && (wasTried(request, t) || this.outlier.isUnreachable(t.endpoint.id))) return undefined
    t.stats.inFlight++
    return t
  }

  /** Ends the attempt on `target` that `pick` began (in-flight count, latency estimate). */
  report (target: EndpointTarget, outcome: AttemptOutcome): void {
    // Only this set's own targets come back here (the contract of ServiceLayer).
    const t = target as LazyTarget
    if (t.stats.inFlight > 0) t.stats.inFlight--
    if (this.departing !== undefined && t.stats.inFlight === 0 && this.departing.delete(t)) this.departed(t)
    this.balancer.observe?.(t, outcome.latencyMs, outcome.gatewayError)
    this.outlier.report(t.endpoint.id, outcome, Date.now())
  }

  admit (kind: AdmissionKind): ResponseError | undefined {
    return this.circuit.admit(kind)
  }

  release (kind: AdmissionKind): void {
    this.circuit.release(kind)
  }

  /** Serving only through outlier panic (too few usable endpoints left): a failover target may do better. */
  degraded (): boolean {
    const now = Date.now()
    this.usableNow(now)
    return this.outlier.degraded(this.targets, now)
  }

  /** The endpoints outlier detection lets through; starts the connect probes that are due. */
  private usableNow (now: number): readonly LazyTarget[] {
    if (now >= this.outlier.store.nextProbe) {
      for (const id of this.outlier.dueProbes(now, (id) => this.targets.some((t) => t.endpoint.id === id))) {
        const target = this.targets.find((t) => t.endpoint.id === id)
        if (target !== undefined) this.probe(target)
      }
    }
    return this.outlier.usable(this.targets, now)
  }

  /**
   * A TCP connect to an unreachable endpoint (no request, no TLS): connected means it listens
   * again. Bounded by the connect timeout; the result goes to outlier detection.
   */
  private probe (target: LazyTarget): void {
    const { id, address, port } = target.endpoint
    const socket = createConnection({ host: address, port })
    const probes = (this.probes ??= new Set())
    probes.add(socket)
    let done = false
    const end = (reachable: boolean | undefined): void => {
      if (done) return
      done = true
      probes.delete(socket)
      socket.destroy()
      this.outlier.probed(id, reachable, Date.now())
    }
    socket.setTimeout(this.settings.connectTimeoutMs, () => { end(false) })
    socket.once('connect', () => { end(true) })
    socket.once('error', () => { end(false) })
    // Destroyed by close(): abandoned, not failed (another set of the service may probe it).
    socket.once('close', () => { end(undefined) })
  }

  /** Which endpoints the balancer uses: `local` zone only, all (`spill-over`), or `off`. */
  get locality (): LocalityState {
    return this.localityState
  }

  /** Per endpoint id: attempts in flight and the latency estimate (ms; undefined before any), for admin. */
  balancerStats (): Map<string, { inFlight: number, rttMs: number | undefined, active: boolean }> {
    const active = new Set(this.active)
    return new Map(this.targets.map((t) => [t.endpoint.id, { inFlight: t.stats.inFlight, rttMs: t.stats.rtt < 0 ? undefined : t.stats.rtt, active: active.has(t) }]))
  }

  get healthyCount (): number {
    return this.targets.length
  }

  get current (): ServiceSnapshot | undefined {
    return this.snapshot
  }

  /**
   * Resolves once discovery has answered for this service at least once, or after
   * `timeoutMs`: a set created on first use (a destination named by Host) has no endpoints
   * until its watch answers, and its first request must not fail for that.
   */
  async known (timeoutMs: number): Promise<void> {
    if (this.snapshot !== undefined) return
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.firstAnswer = this.firstAnswer?.filter((w) => w !== done)
        resolve()
      }
      const timer = setTimeout(done, timeoutMs)
      this.firstAnswer ??= []
      this.firstAnswer.push(done)
    })
  }

  close (): void {
    this.unwatch()
    this.closed = true
    this.leave(this.snapshot?.endpoints.map(endpointLabel) ?? [])
    for (const socket of [...this.probes ?? []]) socket.destroy()
    this.answered()
    this.targets = []
    this.active = []
    this.balanced = []
    this.applyToBalancer([])
    this.pools.retainOnly(this, new Set())
  }

  private update (snapshot: ServiceSnapshot): void {
    const before = this.snapshot
    this.snapshot = snapshot
    if (before !== undefined) this.leave(leftEndpoints(before, snapshot))
    const previous = new Map(this.targets.map((t) => [t.endpoint.id, t]))
    const targets: LazyTarget[] = []
    const inUse = new Set<EndpointPool>()
    const locality = this.balancing.locality
    let localKnown = 0
    for (const endpoint of snapshot.endpoints) {
      if (!inSubset(endpoint, this.selector.subset)) continue
      if (locality !== undefined && endpoint.meta[locality.metaKey] === locality.zone) localKnown++
      if (!this.discovery.isUsable(endpoint)) continue
      const old = previous.get(endpoint.id)
      // Same address: keep the target and its pool (and balancer state). A set's pool
      // settings never change (other settings make another set: see ServiceTable.get).
      const target = old !== undefined && old.endpoint.address === endpoint.address && old.endpoint.port === endpoint.port
        ? old.with(endpoint)
        : new LazyTarget(endpoint, this)
      if (target.acquired !== undefined) inUse.add(target.acquired)
      targets.push(target)
    }
    this.targets = targets
    this.localKnown = localKnown
    this.rebalance(this.outlier.usable(targets, Date.now()))
    this.circuit.setEndpointConnections(targets.length * this.settings.connections)
    this.outlier.store.prune(snapshot.endpoints.map((e) => e.id))
    this.pools.retainOnly(this, inUse)
    this.answered()
  }

  /**
   * Endpoints (`address:port`) this set no longer lists. Tries still under way on one are
   * counted when they end, so its state goes after the last of them (see `report`).
   */
  private leave (labels: readonly string[]): void {
    if (labels.length === 0 || this.onLeft === undefined) return
    let now = labels
    for (const t of this.targets) {
      if (t.stats.inFlight === 0 || !now.includes(t.label)) continue
      now = now.filter((l) => l !== t.label)
      this.departing ??= new Set()
      this.departing.add(t)
    }
    if (now.length > 0) this.onLeft(this, now)
  }

  /**
   * The last try on an endpoint that left has ended: its state goes once the try's end has
   * been counted (the route layer reports to this layer first, then to the policy chain),
   * unless discovery has listed it again meanwhile.
   */
  private departed (t: LazyTarget): void {
    queueMicrotask(() => {
      if (!this.closed && this.snapshot?.endpoints.some((e) => endpointLabel(e) === t.label) === true) return
      this.onLeft?.(this, [t.label])
    })
  }

  /** Wakes the callers of `known`. */
  private answered (): void {
    const waiting = this.firstAnswer
    if (waiting === undefined) return
    this.firstAnswer = undefined
    for (const w of waiting) w()
  }

  /**
   * Gives the balancer the endpoints to choose among: the usable ones not ejected, and of
   * those only the own zone's while at least `minLocalShare` of the zone's known endpoints
   * are among them (an ejection can tip a zone into spill-over).
   */
  private rebalance (healthy: readonly LazyTarget[]): void {
    this.balanced = healthy
    this.active = healthy
    this.localityState = 'off'
    const locality = this.balancing.locality
    if (locality !== undefined && this.localKnown > 0) {
      // Prefer the own zone while enough of it is usable; below that share, every usable
      // endpoint (local ones included) takes traffic, so the local ones are not overrun.
      const local = healthy.filter((t) => t.endpoint.meta[locality.metaKey] === locality.zone)
      if (local.length > 0 && local.length / this.localKnown >= locality.minLocalShare) {
        this.active = local
        this.localityState = 'local'
      } else {
        this.localityState = 'spill-over'
      }
    }
    this.applyToBalancer(this.active)
  }

  /**
   * Gives the balancer `targets`: at once, or for a large set of a policy with a stepped
   * rebuild, in slices on the next event-loop turns. Changes during a rebuild only replace
   * the set to apply next, so a burst of changes costs at most two rebuilds, and the one
   * under way always finishes (a steady stream of changes cannot starve it). At once too
   * when nothing is served yet.
   */
  private applyToBalancer (targets: readonly LazyTarget[]): void {
    const pending = this.pending
    if (this.balancer.rebuild === undefined || targets.length < SLICED_REBUILD_MIN_TARGETS || this.applied.length === 0) {
      if (pending !== undefined) clearImmediate(pending.immediate)
      this.pending = undefined
      this.balancer.update(targets)
      this.applied = targets
      return
    }
    if (pending !== undefined) {
      pending.targets = targets
      pending.members = new Set(targets)
      if (pending.steps === undefined) pending.building = targets
      return
    }
    const next: PendingRebuild = { targets, members: new Set(targets), building: targets, steps: undefined, immediate: setImmediate(() => { this.rebuildSlice(next) }) }
    this.pending = next
  }

  /** About REBUILD_SLICE_MS of the rebuild; the next slice waits for the next turn. */
  private rebuildSlice (pending: PendingRebuild): void {
    if (this.pending !== pending) return
    const until = performance.now() + REBUILD_SLICE_MS
    do {
      pending.steps ??= this.balancer.rebuild!(pending.building)
      if (pending.steps.next().done === true) {
        this.applied = pending.building
        if (pending.building === pending.targets) {
          this.pending = undefined
          return
        }
        // A newer set came during this rebuild: build it next.
        pending.building = pending.targets
        pending.steps = undefined
      }
    } while (performance.now() < until)
    pending.immediate = setImmediate(() => { this.rebuildSlice(pending) })
  }

  /** The pool of one of this set's targets (called by the target on first use). */
  acquire (endpoint: Endpoint): EndpointPool {
    const caller = this.selector.meshCaller
    const mesh = caller !== undefined && this.meshConnector !== undefined
      ? { caller, destination: this.selector.service, connector: this.meshConnector(caller, this.selector.service, this.settings.connectTimeoutMs) }
      : undefined
    // Every pool of this destination draws from one budget of circuitBreaker.maxConnections.
    return this.pools.acquire(endpoint, this.settings, this, mesh, this.connectionLimit)
  }

  /** The destination's connection budget: by selector (as the circuit counters) and cap. */
  private get connectionLimit (): { group: string, maxConnections: number } {
    return { group: this.key, maxConnections: this.circuit.settings.maxConnections }
  }
}
