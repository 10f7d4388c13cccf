// Registering services in the local Consul agent (CLI `register`, a gateway's own
// services and itself), and removing them again.
import type { ConsulClient } from './client.js'

export interface CheckDefinition {
  readonly http?: string
  readonly tcp?: string
  readonly ttl?: string
  readonly interval?: string
  readonly timeout?: string
  readonly deregisterCriticalServiceAfter?: string
}

export interface ServiceRegistration {
  readonly name: string
  readonly id?: string
  readonly address: string
  readonly port: number
  readonly tags?: readonly string[]
  readonly meta?: Readonly<Record<string, string>>
  readonly check?: CheckDefinition
}

export function registrationId (r: ServiceRegistration): string {
  return r.id ?? `${r.name}-${r.address}-${r.port}`
}

/** The body Consul's agent API takes, in the consul client's lower-case option form. */
function toClientOptions (r: ServiceRegistration): Record<string, unknown> {
  const c = r.check
  let check: Record<string, unknown> | undefined
  if (c !== undefined) {
    check = {
      name: `${r.name} ${c.http !== undefined ? 'HTTP' : c.tcp !== undefined ? 'TCP' : 'TTL'} check`,
      ...(c.http !== undefined ? { http: c.http, interval: c.interval ?? '10s' } : {}),
      ...(c.tcp !== undefined ? { tcp: c.tcp, interval: c.interval ?? '10s' } : {}),
      ...(c.ttl !== undefined ? { ttl: c.ttl } : {}),
      ...(c.timeout !== undefined && c.ttl === undefined ? { timeout: c.timeout } : {}),
      ...(c.deregisterCriticalServiceAfter !== undefined ? { deregistercriticalserviceafter: c.deregisterCriticalServiceAfter } : {})
    }
  }
  return {
    name: r.name,
    id: registrationId(r),
    address: r.address,
    port: r.port,
    tags: [...(r.tags ?? [])],
    meta: { ...(r.meta ?? {}) },
    ...(check !== undefined ? { check } : {})
  }
}

export async function registerService (client: ConsulClient, r: ServiceRegistration): Promise<string> {
  await (client.consul.agent.service.register as unknown as (o: Record<string, unknown>) => Promise<unknown>)(toClientOptions(r))
  return registrationId(r)
}

export async function deregisterService (client: ConsulClient, id: string): Promise<void> {
  await client.consul.agent.service.deregister(id)
}
