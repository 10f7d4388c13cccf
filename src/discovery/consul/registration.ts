// Registering services in the local Consul agent (CLI `register`, a gateway's own
// services and itself), and removing them again.
import { goDuration } from '../../config/duration.js'
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

/**
 * The body Consul's agent API takes, in the consul client's lower-case option form. Check
 * durations go as whole milliseconds (goDuration): Consul gets exactly the time we validated.
 */
function toClientOptions (r: ServiceRegistration): Record<string, unknown> {
  const c = r.check
  let check: Record<string, unknown> | undefined
  if (c !== undefined) {
    check = {
      name: `${r.name} ${c.http !== undefined ? 'HTTP' : c.tcp !== undefined ? 'TCP' : 'TTL'} check`,
      ...(c.http !== undefined ? { http: c.http, interval: goDuration(c.interval ?? '10s') } : {}),
      ...(c.tcp !== undefined ? { tcp: c.tcp, interval: goDuration(c.interval ?? '10s') } : {}),
      ...(c.ttl !== undefined ? { ttl: goDuration(c.ttl) } : {}),
      ...(c.timeout !== undefined && c.ttl === undefined ? { timeout: goDuration(c.timeout) } : {}),
      ...(c.deregisterCriticalServiceAfter !== undefined ? { deregistercriticalserviceafter: goDuration(c.deregisterCriticalServiceAfter) } : {})
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

export interface ConnectProxyRegistration {
  /** The local service this gateway fronts. */
  readonly destination: string
  readonly destinationId: string
  /** This gateway's inbound (mTLS) listener, as other gateways reach it. */
  readonly address: string
  readonly port: number
  readonly localAddress: string
  readonly localPort: number
  readonly gateway: string
  /**
   * The local service's tags and meta: the proxy entry carries them, as Consul's own sidecars
   * do by default, so callers that select a subset (`tags: [v2]`, a version in meta) over
   * /v1/health/connect find the right instances.
   */
  readonly tags?: readonly string[]
  readonly meta?: Readonly<Record<string, string>>
}

/**
 * Registers this node gateway as the Connect proxy of a local service, so that
 * /v1/health/connect/<service> lists it. The consul client cannot send `Kind`, hence the
 * raw agent call; its TCP check follows the inbound listener.
 */
export async function registerConnectProxy (client: ConsulClient, p: ConnectProxyRegistration): Promise<string> {
  const id = `${p.destinationId}-fastmesh-proxy`
  await client.agentRequest('PUT', '/agent/service/register', {
    body: {
      Kind: 'connect-proxy',
      ID: id,
      Name: `${p.destination}-fastmesh-proxy`,
      Address: p.address,
      Port: p.port,
      Tags: [...new Set(['fastmesh', ...(p.tags ?? [])])],
      Meta: { ...p.meta, gateway: p.gateway },
      Proxy: {
        DestinationServiceName: p.destination,
        DestinationServiceID: p.destinationId,
        LocalServiceAddress: p.localAddress,
        LocalServicePort: p.localPort
      },
      Check: {
        Name: `fastmesh inbound listener of ${p.gateway}`,
        TCP: `${p.address.includes(':') ? `[${p.address}]` : p.address}:${p.port}`,
        Interval: '5s',
        Timeout: '2s',
        DeregisterCriticalServiceAfter: '10m'
      }
    }
  })
  return id
}
