// The Discovery interface: where endpoints of a service come from (embedded registry, Consul).
// Discovery owns health as the catalog reports it; balancers only read it.

export type HealthStatus = 'passing' | 'warning' | 'critical'

export interface Endpoint {
  /** Unique within its service. */
  readonly id: string
  readonly service: string
  readonly address: string
  readonly port: number
  readonly weight: number
  readonly tags: readonly string[]
  readonly meta: Readonly<Record<string, string>>
  readonly health: HealthStatus
  /** Why it is not passing, when it is not (last probe error, check output). */
  readonly healthDetail?: string
  /** Where it came from: `config`, `admin`, `consul`. */
  readonly origin: string
  /** The catalog node it runs on, when known. */
  readonly node?: string
}

export interface ServiceSnapshot {
  readonly service: string
  /** Every known endpoint, passing or not; consumers filter. Immutable: a change is a new snapshot. */
  readonly endpoints: readonly Endpoint[]
  /** True while the source cannot be reached and these are the last known endpoints. */
  readonly stale: boolean
  readonly updatedAt: number
  /** The last error talking to the source, while stale. */
  readonly error?: string
  readonly datacenter?: string
}

export interface WatchOptions {
  /** Ask another datacenter (Consul); ignored by the embedded registry. */
  readonly datacenter?: string
  /** The mesh gateways (connect-proxies) in front of the service instead of its instances (Consul). */
  readonly connect?: boolean
}

export type SnapshotListener = (snapshot: ServiceSnapshot) => void

export interface Discovery {
  readonly kind: string
  /**
   * Calls `listener` with the current snapshot (when known) and on every change after.
   * Returns the function that stops watching.
   */
  watch(service: string, listener: SnapshotListener, options?: WatchOptions): () => void
  snapshot(service: string, options?: WatchOptions): ServiceSnapshot | undefined
  /** Whether traffic may go to this endpoint (passing; for Consul optionally warning too). */
  isUsable(endpoint: Endpoint): boolean
  /** Every service this discovery knows or watches, for the admin API. */
  services(): ServiceSnapshot[]
  /**
   * How Consul is watched in each datacenter (`default`: the agent's own): one query per
   * service, or the whole catalog. Undefined without Consul.
   */
  consulWatch?(): Readonly<Record<string, 'service' | 'catalog'>> | undefined
  close(): Promise<void>
}
