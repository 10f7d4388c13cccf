// The services that routes point at, kept across config versions: a reload reuses each
// service's endpoint set and pools; services no route needs any more are released.
import type { Discovery } from '../discovery/types.js'
import type { FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { EndpointPools, type PoolSettings } from '../upstream/endpoint-pool.js'
import { ServiceEndpoints } from './service-endpoints.js'

export function poolSettingsFor (config: FastmeshConfig, service: string): PoolSettings {
  const p = config.services[service]?.connectionPool
  return {
    connections: p?.connections ?? 128,
    pipelining: p?.pipelining ?? 1,
    connectTimeoutMs: durationMs(p?.connectTimeout ?? '2s'),
    keepAliveTimeoutMs: durationMs(p?.keepAliveTimeout ?? '30s')
  }
}

export class ServiceTable {
  private readonly byName = new Map<string, ServiceEndpoints>()
  readonly pools = new EndpointPools()

  constructor (private readonly discovery: Discovery) {}

  /** The endpoint set of `service`, created on first use. */
  get (service: string, settings: PoolSettings): ServiceEndpoints {
    let s = this.byName.get(service)
    if (s === undefined) {
      s = new ServiceEndpoints(service, this.discovery, this.pools, settings)
      this.byName.set(service, s)
    } else {
      s.setPoolSettings(settings)
    }
    return s
  }

  /** After a swap: drop services the live version no longer routes to. */
  retain (services: ReadonlySet<string>): void {
    for (const [name, s] of this.byName) {
      if (services.has(name)) continue
      s.close()
      this.byName.delete(name)
    }
  }

  all (): ServiceEndpoints[] {
    return [...this.byName.values()]
  }

  async close (): Promise<void> {
    for (const s of this.byName.values()) s.close()
    this.byName.clear()
    await this.pools.close()
  }
}
