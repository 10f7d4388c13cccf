// The narrow handles the admin API reads and drives, each a part of the gateway that serves
// it: admin depends on these, not on the composition root (src/gateway/gateway.ts).
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { GatewayVersion, MeshContext } from '../gateway/app.js'
import type { ReloadReport } from '../gateway/version-swap.js'
import type { ExchangeFaults } from '../gateway/exchange.js'
import type { ReloadResult } from '../config/reconciler.js'
import type { FastmeshConfig } from '../config/validate.js'
import type { IdentityProvider } from '../identity/types.js'
import type { Discovery } from '../discovery/types.js'
import type { EmbeddedRegistry } from '../discovery/embedded/registry.js'
import type { ConsulClient } from '../discovery/consul/client.js'
import type { ServiceTable } from '../balancer/service-table.js'
import type { StateRegistry } from '../state/registry.js'
import type { GatewayMetrics } from '../telemetry/metrics.js'
import type { WorkerReport } from '../workers/pool.js'

/** The serving config version (routes, plugins, failover chains) and readiness (`/ready`, `/routes`). */
export interface VersionHandle {
  readonly version: GatewayVersion | undefined
  /** Serving a version on every listener, and not stopping. */
  readonly ready: boolean
}

/** The config in effect and reloads (`/config`, `POST /reload`). */
export interface ReloadHandle {
  /** The config in effect (restart-only keys as at start). */
  readonly config: FastmeshConfig
  /** A file path or `kv:<key>`. */
  readonly configSource: string
  readonly pendingRestart: readonly string[]
  readonly lastReload: ReloadReport | undefined
  readonly reloads: { readonly ok: number, readonly failed: number }
  /** Reload now: the provider reads its source afresh. */
  reload(reason: string): Promise<ReloadResult>
}

/** Where the gateway's listeners (all but admin) are bound, by name (`/config` → `listening`). */
export interface ListenersHandle {
  readonly boundListeners: Record<string, AddressInfo>
}

/** Mesh certificates and what is checked with them (`/certs`, `/authz`, the graph's certificate rows). */
export interface CertificatesHandle {
  /** Undefined with mesh.mtls off. */
  readonly identity: IdentityProvider | undefined
  /** The gateway's own identity (its name). */
  readonly selfIdentity: string
  /** TLS handshake rejections and the authorizer; undefined with mesh.mtls off. */
  readonly meshContext: MeshContext | undefined
}

/** The tables that outlive versions: discovery, runtime registration, endpoint sets, per-name state. */
export interface TablesHandle {
  readonly discovery: Pick<Discovery, 'kind' | 'services' | 'snapshot' | 'consulWatch'>
  readonly registry: Pick<EmbeddedRegistry, 'snapshot' | 'register' | 'deregister'>
  readonly services: Pick<ServiceTable, 'all'>
  readonly state: Pick<StateRegistry, 'peek' | 'entries'>
  /** To list the mesh's other gateways (`/ui/graph`); undefined without discovery.consul. */
  readonly consul: ConsulClient | undefined
}

/** What the gateway counts across versions (`/metrics`, `/faults`, the graph's rates), and its log. */
export interface TelemetryHandle {
  readonly log: Logger
  readonly metrics: Pick<GatewayMetrics, 'contentType' | 'render' | 'snapshot'>
  readonly faults: Pick<ExchangeFaults, 'count' | 'uncaught' | 'last'>
}

/** The worker processes (`gateway.workers` > 1): `/workers`, and their share of `/faults`. */
export interface WorkersHandle {
  /** Undefined when one process serves alone. */
  workers(): Promise<WorkerReport[] | undefined>
}

/** Everything the admin API uses. */
export type AdminHandles = VersionHandle & ReloadHandle & ListenersHandle & CertificatesHandle & TablesHandle & TelemetryHandle & WorkersHandle
