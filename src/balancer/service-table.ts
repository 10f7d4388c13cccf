// The destination services that routes point at, kept across config versions: a reload
// reuses each service's endpoint set and pools; those no route needs any more are released.
// Getting a set never changes one in use: a version whose pool settings differ gets its own
// set, so building a version (even one that then fails) leaves the live version untouched.
import type { Discovery } from '../discovery/types.js'
import type { FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { EndpointPools, type MeshConnection, type PoolSettings } from '../upstream/endpoint-pool.js'
import { ServiceEndpoints, selectorKey, type ServiceSelector } from './service-endpoints.js'

export function poolSettingsFor (config: FastmeshConfig, service: string): PoolSettings {
  const p = config.services[service]?.connectionPool
  return {
    connections: p?.connections ?? 128,
    pipelining: p?.pipelining ?? 1,
    connectTimeoutMs: durationMs(p?.connectTimeout ?? '2s'),
    keepAliveTimeoutMs: durationMs(p?.keepAliveTimeout ?? '30s')
  }
}

export function selectorFor (config: FastmeshConfig, service: string, meshCaller?: string): ServiceSelector {
  const policy = config.services[service]
  return {
    service,
    ...(meshCaller !== undefined ? { meshCaller } : {}),
    ...(policy?.datacenter !== undefined ? { datacenter: policy.datacenter } : {}),
    ...(policy?.subset !== undefined ? { subset: policy.subset } : {})
  }
}

/** A set per selector and pool settings: sets with other settings never share pools. */
function tableKey (selector: ServiceSelector, s: PoolSettings): string {
  return `${selectorKey(selector)}|${s.connections}/${s.pipelining}/${s.connectTimeoutMs}/${s.keepAliveTimeoutMs}`
}

export class ServiceTable {
  private readonly byKey = new Map<string, ServiceEndpoints>()
  readonly pools = new EndpointPools()

  /** Set when the mesh is on: builds the mTLS connector of a pool. */
  meshConnector: ((caller: string, destination: string, connectTimeoutMs: number) => MeshConnection['connector']) | undefined

  constructor (readonly discovery: Discovery) {}

  /**
   * The endpoint set for `selector` under pool `settings`, created on first use, with its
   * key. Side-effect free for sets in use: an existing set is returned as it is, and other
   * settings make another set (the old one stays with the versions using it until `retain`).
   */
  get (selector: ServiceSelector, settings: PoolSettings): { key: string, endpoints: ServiceEndpoints } {
    const key = tableKey(selector, settings)
    let s = this.byKey.get(key)
    if (s === undefined) {
      s = new ServiceEndpoints(selector, this.discovery, this.pools, settings, this.meshConnector)
      this.byKey.set(key, s)
    }
    return { key, endpoints: s }
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

  all (): ServiceEndpoints[] {
    return [...this.byKey.values()]
  }

  async close (): Promise<void> {
    for (const s of this.byKey.values()) s.close()
    this.byKey.clear()
    await this.pools.close()
  }
}
