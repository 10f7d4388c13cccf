// Service selectors: which endpoints of which service (subset, datacenter, mesh caller) a
// destination or failover target means. Pure functions of the config, shared by validation
// (failover targets that repeat or loop) and the service layer (src/balancer), so config
// needs nothing from the forwarding code.
import type { FailoverTargetConfig } from './schema.js'
import type { FastmeshConfig } from './validate.js'

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

/** The selector of `service` as its policy (`services.<name>`) narrows it. */
export function selectorFor (config: FastmeshConfig, service: string, meshCaller?: string): ServiceSelector {
  const policy = config.services[service]
  return {
    service,
    ...(meshCaller !== undefined ? { meshCaller } : {}),
    ...(policy?.datacenter !== undefined ? { datacenter: policy.datacenter } : {}),
    ...(policy?.subset !== undefined ? { subset: policy.subset } : {})
  }
}

/** The primary's selector with a failover target's fields replaced (see `services.<name>.failover`). */
export function failoverTarget (primary: ServiceSelector, t: FailoverTargetConfig): ServiceSelector {
  const subset = t.subset ?? (t.service !== undefined ? undefined : primary.subset)
  const datacenter = t.datacenter ?? primary.datacenter
  return {
    service: t.service ?? primary.service,
    ...(primary.meshCaller !== undefined ? { meshCaller: primary.meshCaller } : {}),
    ...(datacenter !== undefined ? { datacenter } : {}),
    ...(subset !== undefined ? { subset } : {})
  }
}

/** A short name of a selector for logs and admin: `orders[tag=v2,zone=a]@dc2`. */
export function describeSelector (s: ServiceSelector): string {
  const parts = [...(s.subset?.tags ?? []).map((t) => `tag=${t}`), ...Object.entries(s.subset?.meta ?? {}).map(([k, v]) => `${k}=${v}`)]
  return `${s.service}${parts.length > 0 ? `[${parts.join(',')}]` : ''}${s.datacenter !== undefined ? `@${s.datacenter}` : ''}`
}

/**
 * The selectors of `service`'s failover chain, primary first. A target naming another
 * service brings that service's own targets right after it; a selector already in the
 * chain is not added twice (validation refuses loops; this only keeps a chain finite).
 */
export function failoverSelectors (config: FastmeshConfig, service: string, meshCaller?: string): ServiceSelector[] {
  const primary = selectorFor(config, service, meshCaller)
  const chain = [primary]
  const seen = new Set([selectorKey(primary)])
  const visited = new Set([service])
  const expand = (base: ServiceSelector, name: string): void => {
    for (const t of config.services[name]?.failover ?? []) {
      const selector = failoverTarget(base, t)
      const key = selectorKey(selector)
      if (!seen.has(key)) { seen.add(key); chain.push(selector) }
      if (t.service !== undefined && !visited.has(t.service)) {
        visited.add(t.service)
        expand(selector, t.service)
      }
    }
  }
  expand(primary, service)
  return chain
}
