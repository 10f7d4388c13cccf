// The messages between a gateway's primary and its workers over the cluster IPC channel
// (structured clone: Dates and nested objects arrive as sent). The primary holds the
// control plane (config, discovery, identity, registration, admin); a worker holds
// listeners and config versions, and learns everything else from these.
import type { AddressInfo } from 'node:net'
import type { ExchangeFaults } from '../gateway/exchange.js'
import type { MetricsSnapshot } from '../telemetry/metrics.js'
import type { ConfigProblem, FastmeshConfig } from '../config/validate.js'
import type { ServiceSnapshot, WatchOptions } from '../discovery/types.js'
import type { LeafCertificate, TrustBundle } from '../identity/types.js'

/** The identity a worker holds: the primary's provider kind, roots and leaves. */
export interface IdentityState {
  readonly kind: string
  readonly roots: TrustBundle
  readonly leaves: readonly LeafCertificate[]
}

/** What a worker reports of itself (admin `GET /workers`). */
export interface WorkerStatus {
  readonly version: number
  readonly inFlight: number
  readonly ready: boolean
  readonly faults: { readonly count: number, readonly uncaught: number, readonly last: ExchangeFaults['last'] }
  /** Endpoints this worker's outlier detection has out of rotation (each worker ejects on what it sees). */
  readonly ejected: ReadonlyArray<{ readonly service: string, readonly endpoint: string, readonly reason: string | undefined, readonly until: number | undefined }>
  readonly rssBytes: number
  readonly heapUsedBytes: number
}

export type ToWorker =
  /** Start serving: the config in effect (compiled again in the worker: custom plugins are modules), its version number. */
  | { readonly t: 'init', readonly worker: number, readonly config: FastmeshConfig, readonly source: string, readonly version: number, readonly identity: IdentityState | undefined }
  /** Build a version of this config, do not serve it yet (phase one of a reload). */
  | { readonly t: 'prepare', readonly id: number, readonly config: FastmeshConfig, readonly source: string, readonly version: number }
  /** Serve the version prepared as `prepared` (phase two); answered with `committed` and this `id`. */
  | { readonly t: 'commit', readonly id: number, readonly prepared: number, readonly reason: string }
  /** Another process refused it: close the version prepared as `prepared`. */
  | { readonly t: 'abandon', readonly prepared: number }
  | { readonly t: 'snapshot', readonly key: string, readonly snapshot: ServiceSnapshot }
  | { readonly t: 'identity', readonly identity: IdentityState }
  | { readonly t: 'status', readonly id: number }
  | { readonly t: 'metrics', readonly id: number }
  /** The request series so far (the admin service graph's rates). */
  | { readonly t: 'requests', readonly id: number }
  /** Another worker's outlier detection ejected this endpoint: eject it here too. */
  | { readonly t: 'eject', readonly service: string, readonly endpoint: string, readonly until: number, readonly reason: string }
  /** Stop accepting, drain, exit. */
  | { readonly t: 'stop', readonly drainMs: number }

export type FromWorker =
  /** Listening for messages: the primary sends `init` on this (one sent before is lost). */
  | { readonly t: 'hello' }
  | { readonly t: 'ready', readonly listeners: Record<string, AddressInfo> }
  | { readonly t: 'start-failed', readonly error: string }
  | { readonly t: 'prepared', readonly id: number, readonly ok: boolean, readonly error?: string, readonly problems?: readonly ConfigProblem[] }
  | { readonly t: 'committed', readonly id: number, readonly ok: boolean }
  | { readonly t: 'watch', readonly key: string, readonly service: string, readonly options: WatchOptions | undefined }
  | { readonly t: 'unwatch', readonly key: string }
  | { readonly t: 'ensure', readonly service: string }
  /** This worker's outlier detection ejected an endpoint (the primary tells the others). */
  | { readonly t: 'ejected', readonly service: string, readonly endpoint: string, readonly until: number, readonly reason: string }
  | { readonly t: 'status', readonly id: number, readonly status: WorkerStatus }
  | { readonly t: 'metrics', readonly id: number, readonly metrics: unknown[] }
  | { readonly t: 'requests', readonly id: number, readonly snapshot: MetricsSnapshot }

/** One key per watched (service, datacenter, connect) triple. */
export function watchKey (service: string, options: WatchOptions | undefined): string {
  return `${options?.datacenter ?? ''}|${options?.connect === true ? 'c' : ''}|${service}`
}
