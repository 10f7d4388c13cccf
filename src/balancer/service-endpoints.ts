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

interface WeightedTarget extends EndpointTarget {
  current: number
}

export class ServiceEndpoints {
  /** Usable endpoints in a stable order, ready for the balancer. */
  private targets: WeightedTarget[] = []
  private weighted = false
  private totalWeight = 0
  private next = 0
  private snapshot: ServiceSnapshot | undefined
  /** Callers waiting for discovery's first answer (see `known`). */
  private firstAnswer: Array<() => void> = []
  private readonly unwatch: () => void

  constructor (
    readonly selector: ServiceSelector,
    private readonly discovery: Discovery,
    private readonly pools: EndpointPools,
    private settings: PoolSettings,
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

  /** New pool settings (from a reload): pools are rebuilt only when settings differ. */
  setPoolSettings (settings: PoolSettings): void {
    if (JSON.stringify(settings) === JSON.stringify(this.settings)) return
    this.settings = settings
    if (this.snapshot !== undefined) this.update(this.snapshot)
  }

  close (): void {
    this.unwatch()
    for (const w of [...this.firstAnswer]) w()
    this.targets = []
    this.pools.retainOnly(this, new Set())
  }

  private update (snapshot: ServiceSnapshot): void {
    this.snapshot = snapshot
    const targets: WeightedTarget[] = []
    const inUse = new Set<Pool>()
    let total = 0
    for (const endpoint of snapshot.endpoints) {
      if (!this.discovery.isUsable(endpoint) || !inSubset(endpoint, this.selector.subset)) continue
      const caller = this.selector.meshCaller
      const mesh = caller !== undefined && this.meshConnector !== undefined
        ? { caller, destination: this.selector.service, connector: this.meshConnector(caller, this.selector.service, this.settings.connectTimeoutMs) }
        : undefined
      const pool = this.pools.acquire(endpoint, this.settings, this, mesh)
      inUse.add(pool)
      targets.push({ endpoint, pool, label: `${endpoint.address}:${endpoint.port}`, current: 0 })
      total += endpoint.weight
    }
    this.targets = targets
    this.totalWeight = total
    this.weighted = targets.some((t) => t.endpoint.weight !== targets[0]!.endpoint.weight)
    this.pools.retainOnly(this, inUse)
    for (const w of [...this.firstAnswer]) w()
  }
}
