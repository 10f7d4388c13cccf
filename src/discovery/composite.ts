// The gateway's discovery: a service declared in (or registered with) the embedded
// registry is served by it; every other service comes from Consul when Consul is configured.
import type { Discovery, Endpoint, ServiceSnapshot, SnapshotListener, WatchOptions } from './types.js'
import type { EmbeddedRegistry } from './embedded/registry.js'

export class CompositeDiscovery implements Discovery {
  readonly kind: string

  constructor (private readonly embedded: EmbeddedRegistry, private readonly consul: Discovery | undefined) {
    this.kind = consul === undefined ? 'embedded' : 'embedded+consul'
  }

  private sourceOf (service: string, options: WatchOptions | undefined): Discovery {
    if (this.consul === undefined) return this.embedded
    // Mesh gateways in front of a service are only known to Consul.
    if (options?.connect === true) return this.consul
    return this.embedded.has(service) ? this.embedded : this.consul
  }

  watch (service: string, listener: SnapshotListener, options?: WatchOptions): () => void {
    return this.sourceOf(service, options).watch(service, listener, options)
  }

  snapshot (service: string, options?: WatchOptions): ServiceSnapshot | undefined {
    return this.sourceOf(service, options).snapshot(service, options)
  }

  isUsable (endpoint: Endpoint): boolean {
    return endpoint.origin === 'consul' && this.consul !== undefined ? this.consul.isUsable(endpoint) : this.embedded.isUsable(endpoint)
  }

  services (): ServiceSnapshot[] {
    return [...this.embedded.services(), ...(this.consul?.services() ?? [])]
  }

  consulWatch (): Readonly<Record<string, 'service' | 'catalog'>> | undefined {
    return this.consul?.consulWatch?.()
  }

  async close (): Promise<void> {
    await Promise.all([this.embedded.close(), this.consul?.close()])
  }
}
