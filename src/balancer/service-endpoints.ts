// Service layer: the usable endpoints of one destination service (a subset of it, in one
// datacenter), kept current from discovery, each with its endpoint pool, and the
// balancing choice among them.
import type { Pool } from 'undici'
import type { Discovery, Endpoint, ServiceSnapshot } from '../discovery/types.js'
import type { EndpointPools, EndpointTarget, MeshConnection, PoolSettings } from '../upstream/endpoint-pool.js'

export interface ServiceSelector {
  readonly service: string
  /** Through the mesh: to the service's node gateways over mTLS, as this caller identity. */
  readonly meshCaller?: string
  readonly datacenter?: string
  readonly subset?: { readonly tags: readonly string[], readonly meta: Readonly<Record<string, string>> }
}

export function selectorKey (s: ServiceSelector): string {
  return JSON.stringify([s.service, s.meshCaller ?? null, s.datacenter ?? null, s.subset?.tags ?? [], s.subset?.meta ?? {}])
}

function inSubset (e: Endpoint, subset: ServiceSelector['subset']): boolean {
  if (subset === undefined) return true
  for (const t of subset.tags) if (!e.tags.includes(t)) return false
  for (const [k, v] of Object.entries(subset.meta)) if (e.meta[k] !== v) return false
  return true
}

/** Where a target gets its pool from (the ServiceEndpoints that owns it). */
interface PoolSource {
  acquire(endpoint: Endpoint): Pool
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
class LazyTarget implements EndpointTarget {
  /** Smooth weighted round robin state. */
  current = 0
  readonly label: string
  acquired: Pool | undefined

  constructor (readonly endpoint: Endpoint, private readonly source: PoolSource, pool?: Pool) {
    this.label = `${endpoint.address}:${endpoint.port}`
    this.acquired = pool
  }

  get pool (): Pool {
    return (this.acquired ??= this.source.acquire(this.endpoint))
  }

  /** The same target for a newer copy of its endpoint (health, weight, tags may differ). */
  with (endpoint: Endpoint): LazyTarget {
    if (endpoint === this.endpoint) return this
    const t = new LazyTarget(endpoint, this.source, this.acquired)
    t.current = this.current
    return t
  }
}

export class ServiceEndpoints implements PoolSource {
  /** Usable endpoints in a stable order, ready for the balancer. */
  private targets: LazyTarget[] = []
  private weighted = false
  private totalWeight = 0
  private next = 0
  private snapshot: ServiceSnapshot | undefined
  /** Callers waiting for discovery's first answer (see `known`). */
  private firstAnswer: Array<() => void> = []
  private readonly unwatch: () => void
  private selectorKeyCache: string | undefined

  constructor (
    readonly selector: ServiceSelector,
    private readonly discovery: Discovery,
    private readonly pools: EndpointPools,
    readonly settings: PoolSettings,
    private readonly meshConnector?: (caller: string, destination: string, connectTimeoutMs: number) => MeshConnection['connector']
  ) {
    this.unwatch = discovery.watch(selector.service, (s) => { this.update(s) }, {
      ...(selector.datacenter !== undefined ? { datacenter: selector.datacenter } : {}),
      ...(selector.meshCaller !== undefined ? { connect: true } : {})
    })
  }

  get service (): string {
    return this.selector.service
  }

  /** The selector's stable key: the name service-scoped state is kept under. */
  get key (): string {
    return (this.selectorKeyCache ??= selectorKey(this.selector))
  }

  /**
   * Round robin over usable endpoints, weighted (smooth, as nginx does) when weights
   * differ; undefined when none is usable.
   */
  pick (): EndpointTarget | undefined {
    const targets = this.targets
    const n = targets.length
    if (n === 0) return undefined
    if (!this.weighted) {
      if (this.next >= n) this.next = 0
      return targets[this.next++]
    }
    let best = targets[0]!
    for (const t of targets) {
      t.current += t.endpoint.weight
      if (t.current > best.current) best = t
    }
    best.current -= this.totalWeight
    return best
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
        this.firstAnswer = this.firstAnswer.filter((w) => w !== done)
        resolve()
      }
      const timer = setTimeout(done, timeoutMs)
      this.firstAnswer.push(done)
    })
  }

  close (): void {
    this.unwatch()
    for (const w of [...this.firstAnswer]) w()
    this.targets = []
    this.pools.retainOnly(this, new Set())
  }

  private update (snapshot: ServiceSnapshot): void {
    this.snapshot = snapshot
    const previous = new Map(this.targets.map((t) => [t.endpoint.id, t]))
    const targets: LazyTarget[] = []
    const inUse = new Set<Pool>()
    let total = 0
    for (const endpoint of snapshot.endpoints) {
      if (!this.discovery.isUsable(endpoint) || !inSubset(endpoint, this.selector.subset)) continue
      const old = previous.get(endpoint.id)
      // Same address: keep the target and its pool (and balancer state). A set's pool
      // settings never change (other settings make another set: see ServiceTable.get).
      const target = old !== undefined && old.endpoint.address === endpoint.address && old.endpoint.port === endpoint.port
        ? old.with(endpoint)
        : new LazyTarget(endpoint, this)
      if (target.acquired !== undefined) inUse.add(target.acquired)
      targets.push(target)
      total += endpoint.weight
    }
    this.targets = targets
    this.totalWeight = total
    this.weighted = targets.some((t) => t.endpoint.weight !== targets[0]!.endpoint.weight)
    this.pools.retainOnly(this, inUse)
    for (const w of [...this.firstAnswer]) w()
  }

  /** The pool of one of this set's targets (called by the target on first use). */
  acquire (endpoint: Endpoint): Pool {
    const caller = this.selector.meshCaller
    const mesh = caller !== undefined && this.meshConnector !== undefined
      ? { caller, destination: this.selector.service, connector: this.meshConnector(caller, this.selector.service, this.settings.connectTimeoutMs) }
      : undefined
    return this.pools.acquire(endpoint, this.settings, this, mesh)
  }
}
