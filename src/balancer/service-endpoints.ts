// Service layer: the healthy endpoints of one destination service, kept current from
// discovery, each with its endpoint pool, and the balancing choice among them.
import type { Pool } from 'undici'
import type { Discovery, ServiceSnapshot } from '../discovery/types.js'
import type { EndpointPools, EndpointTarget, PoolSettings } from '../upstream/endpoint-pool.js'

export class ServiceEndpoints {
  /** Passing endpoints, in a stable order, ready for the balancer. */
  private targets: EndpointTarget[] = []
  private next = 0
  private snapshot: ServiceSnapshot | undefined
  private readonly unwatch: () => void

  constructor (
    readonly service: string,
    discovery: Discovery,
    private readonly pools: EndpointPools,
    private settings: PoolSettings
  ) {
    this.unwatch = discovery.watch(service, (s) => { this.update(s) })
  }

  /** Round robin over passing endpoints; undefined when none is passing. */
  pick (): EndpointTarget | undefined {
    const targets = this.targets
    const n = targets.length
    if (n === 0) return undefined
    if (this.next >= n) this.next = 0
    return targets[this.next++]
  }

  get healthyCount (): number {
    return this.targets.length
  }

  get current (): ServiceSnapshot | undefined {
    return this.snapshot
  }

  /** New pool settings (from a reload): pools are rebuilt only when settings differ. */
  setPoolSettings (settings: PoolSettings): void {
    if (JSON.stringify(settings) === JSON.stringify(this.settings)) return
    this.settings = settings
    if (this.snapshot !== undefined) this.update(this.snapshot)
  }

  close (): void {
    this.unwatch()
    this.targets = []
    this.pools.retainOnly(this, new Set())
  }

  private update (snapshot: ServiceSnapshot): void {
    this.snapshot = snapshot
    const targets: EndpointTarget[] = []
    const inUse = new Set<Pool>()
    for (const endpoint of snapshot.endpoints) {
      if (endpoint.health !== 'passing') continue
      const pool = this.pools.acquire(endpoint, this.settings, this)
      inUse.add(pool)
      targets.push({ endpoint, pool, label: `${endpoint.address}:${endpoint.port}` })
    }
    this.targets = targets
    this.pools.retainOnly(this, inUse)
  }
}
