// The composition root: makes a gateway's parts and wires them (discovery and endpoint sets,
// mesh identity, the version swap, listeners, the admin API, Consul registration, signals),
// starts them in order and stops them in reverse.
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { GatewayVersion, MeshContext } from './app.js'
import { ExchangeFaults } from './exchange.js'
import { ListenerSet } from './listener-set.js'
import { VersionSwap, type ReloadReport } from './version-swap.js'
import { ConsulRegistration } from './consul-registration.js'
import { identityProviderFor, meshContextFor, meshIdentities } from './mesh-identity.js'
import { installSignalHandlers } from './signals.js'
import type { IdentityProvider } from '../identity/types.js'
import { ServiceTable } from '../balancer/service-table.js'
import { StateRegistry } from '../state/registry.js'
import { EmbeddedRegistry } from '../discovery/embedded/registry.js'
import type { LoadedConfig } from '../config/load.js'
import type { ConfigProvider } from '../config/provider.js'
import { FileConfigProvider } from '../config/provider-file.js'
import { ConfigReconciler, type ReloadResult } from '../config/reconciler.js'
import type { FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { GatewayMetrics } from '../telemetry/metrics.js'
import { servingMetricSources } from './metric-sources.js'
import { GatewayTracing } from '../telemetry/tracing.js'
import { startAdmin, type AdminServer } from '../admin/server.js'
import type { Discovery } from '../discovery/types.js'
import { CompositeDiscovery } from '../discovery/composite.js'
import { ConsulClient, resolveConsul } from '../discovery/consul/client.js'
import { ConsulDiscovery } from '../discovery/consul/discovery.js'
import { WorkerPool, workerCount, type WorkerReport } from '../workers/pool.js'
import { ClusterSwap } from '../workers/cluster-swap.js'

export interface GatewayOptions {
  readonly loaded: LoadedConfig
  readonly log: Logger
  /**
   * Where config versions come from (a file, watched or not; Consul KV): its snapshots go
   * through one ConfigReconciler to the swap, and `reload()` asks it for a fresh one.
   * Default: the file `loaded.source`, re-read on reload, not watched.
   */
  readonly provider?: ConfigProvider
  /** Register SIGHUP (reload now)/SIGTERM/SIGINT handlers (the CLI does; tests do not). */
  readonly handleSignals?: boolean
}

export type { ReloadResult, ReloadReport }

export class Gateway {
  readonly log: Logger
  readonly registry: EmbeddedRegistry
  readonly discovery: Discovery
  readonly consul: ConsulClient | undefined
  /** Consul's side of discovery (its error count for metrics), when Consul is configured. */
  private readonly consulDiscovery: ConsulDiscovery | undefined = undefined
  readonly services: ServiceTable
  /** Per-name state (route statistics, ...) that outlives config versions. */
  readonly state = new StateRegistry()
  /** Config versions: the serving one, those draining, the config in effect, reload outcomes. */
  private readonly versions: VersionSwap
  private readonly listeners = new ListenerSet()
  /** With `gateway.workers` > 1: the processes that listen and serve (this one does not). */
  private pool: WorkerPool | undefined
  private readonly registration: ConsulRegistration
  private mesh: MeshContext | undefined
  identity: IdentityProvider | undefined
  private admin: AdminServer | undefined
  private reconciler: ConfigReconciler | undefined
  private draining = false
  /** Exceptions raised while serving requests, across versions. */
  readonly faults = new ExchangeFaults()
  /** Prometheus metrics, across versions (admin `GET /metrics`); counted only while `telemetry.metrics.enabled`. */
  readonly metrics: GatewayMetrics
  /** OpenTelemetry tracing, across versions: one provider per tracing settings (`telemetry.tracing`). */
  readonly tracing: GatewayTracing

  constructor (private readonly options: GatewayOptions) {
    this.log = options.log
    const config = options.loaded.config
    this.registry = new EmbeddedRegistry(this.log.child({ component: 'discovery' }))
    const consul = config.discovery.consul
    if (consul !== undefined) {
      this.consul = new ConsulClient(resolveConsul(consul))
      this.consulDiscovery = new ConsulDiscovery({
        client: this.consul,
        log: this.log.child({ component: 'consul' }),
        includeWarning: consul.includeWarning,
        wait: consul.wait,
        mode: consul.watch
      })
      this.discovery = new CompositeDiscovery(this.registry, this.consulDiscovery)
    } else {
      this.consul = undefined
      this.discovery = new CompositeDiscovery(this.registry, undefined)
    }
    this.services = new ServiceTable(this.discovery, undefined, this.state, this.log.child({ component: 'outlier' }))
    this.metrics = new GatewayMetrics({
      role: config.gateway.mode,
      configVersion: () => this.versions.versionNumber,
      certificates: () => this.leafExpiries(),
      ...servingMetricSources({ services: this.services, discovery: this.discovery, state: this.state, mesh: () => this.mesh, tracing: () => this.tracing }),
      discovery: () => ({
        services: this.discovery.services(),
        errors: this.consulDiscovery?.errors ?? 0,
        source: this.consulDiscovery !== undefined ? 'consul' : 'embedded'
      })
    })
    this.tracing = new GatewayTracing({
      gatewayName: config.gateway.name,
      role: config.gateway.mode,
      log: this.log,
      spiffeIdOf: (service) => this.identity?.leaf(service)?.spiffeId
    })
    this.versions = new VersionSwap({
      loaded: options.loaded,
      log: this.log,
      services: this.services,
      state: this.state,
      registry: this.registry,
      faults: this.faults,
      metrics: this.metrics,
      tracing: this.tracing,
      mesh: () => this.mesh
    })
    this.registration = new ConsulRegistration({
      client: this.consul,
      config: () => this.config,
      log: this.log,
      listenerAddress: (name) => this.listenerAddress(name),
      httpAddress: () => this.httpAddress,
      admin: () => ({ address: this.adminAddress, advertised: this.advertisedAdmin })
    })
  }

  /** The mesh leaf certificates this gateway holds (itself and its local services), for the expiry gauge. */
  private * leafExpiries (): Iterable<{ service: string, notAfter: Date }> {
    const identity = this.identity
    if (identity === undefined) return
    for (const service of meshIdentities(this.config)) {
      const leaf = identity.leaf(service)
      if (leaf !== undefined) yield { service, notAfter: leaf.notAfter }
    }
  }

  /** The config in effect (restart-only keys as at start; see pendingRestart). */
  get config (): FastmeshConfig {
    return this.versions.config
  }

  /** Where the config comes from: a file path or `kv:<key>`. */
  get configSource (): string {
    return this.versions.configSource
  }

  /** Keys the last accepted config changes that wait for a restart, as dotted paths. */
  get pendingRestart (): readonly string[] {
    return this.versions.pendingRestart
  }

  /** The last reload attempt and its outcome; undefined before the first one. */
  get lastReload (): ReloadReport | undefined {
    return this.versions.lastReload
  }

  /** Reloads applied and refused since start. */
  get reloads (): { readonly ok: number, readonly failed: number } {
    return this.versions.reloads
  }

  get version (): GatewayVersion | undefined {
    return this.versions.version
  }

  get ready (): boolean {
    return this.versions.version !== undefined && (this.pool?.ready ?? this.listeners.listening) && !this.draining
  }

  /** Where the client-facing listener is bound: edge http, or the node's shared outbound port. */
  get httpAddress (): AddressInfo {
    if (this.pool === undefined) return this.listeners.httpAddress
    const bound = this.pool.bound
    return (bound.http ?? bound.outbound)!
  }

  /** Every bound listener but admin, by name (with workers: as they bound them, every one alike). */
  get boundListeners (): Record<string, AddressInfo> {
    return this.pool?.bound ?? this.listeners.bound
  }

  /** Where a named listener is bound (`http`, `outbound`, `inbound`, `upstream:<caller>:<service>`). */
  listenerAddress (name: string): AddressInfo | undefined {
    return this.pool !== undefined ? this.pool.bound[name] : this.listeners.address(name)
  }

  /** Each worker's pid, state, restarts, version and load; undefined when this process serves alone. */
  async workers (): Promise<WorkerReport[] | undefined> {
    return await this.pool?.describe()
  }

  get meshContext (): MeshContext | undefined {
    return this.mesh
  }

  /** The identity of calls from the edge or the node's shared outbound port. */
  get selfIdentity (): string {
    return this.config.gateway.name
  }

  get adminAddress (): AddressInfo {
    return this.admin!.address
  }

  /** The admin API's `host:port` as registered in Consul (`meta.admin`): a wildcard bind is advertised as this host's reachable address. */
  get advertisedAdmin (): string {
    return this.admin!.advertised
  }

  async start (): Promise<void> {
    const config = this.config
    this.registry.applyConfig(config.discovery.embedded.services)
    if (config.mesh.mtls !== 'off') await this.startMesh()
    const first = await this.versions.start()
    const workers = workerCount(config.gateway.workers)
    if (workers > 1) {
      // This process keeps the control plane; its version serves the admin API's views and
      // refuses a config before any worker builds it.
      const pool = this.pool = new WorkerPool({
        count: workers,
        log: this.log,
        discovery: this.discovery,
        identity: this.identity,
        identities: meshIdentities(config),
        current: () => ({ config: this.versions.config, source: this.versions.configSource, version: this.versions.versionNumber }),
        drainMs: () => durationMs(this.config.limits.drainTimeout),
        // `/services` then shows what the workers route around.
        onEjected: (service, endpoint, until, reason) => { this.services.adoptEjection(service, endpoint, until, reason) }
      })
      this.metrics.workerMetrics = async () => await pool.metrics()
      this.metrics.workerSnapshot = () => pool.requestSnapshot()
      await pool.start()
    } else {
      const current = (): GatewayVersion => this.versions.version!
      const mesh = this.mesh !== undefined ? { context: this.mesh, identity: this.identity! } : undefined
      await this.listeners.open({ config, current, mesh, log: this.log })
    }
    this.admin = await startAdmin(this, config.listeners.admin)
    this.configWatcher.start()
    if (this.options.handleSignals === true) installSignalHandlers({ log: this.log, faults: this.faults, reload: async (reason) => await this.reload(reason), stop: async () => { await this.stop() }, flushAccessLog: () => { this.versions.flushAccessLog() } })
    await this.registration.register()
    this.log.info({ mode: config.gateway.mode, listeners: this.boundListeners, workers, admin: this.adminAddress, mtls: config.mesh.mtls, version: first.version, routes: config.routes.length }, 'fastmesh gateway listening')
  }

  /** Identity, TLS contexts and authorization; leaves for the gateway and each local service. */
  private async startMesh (): Promise<void> {
    const config = this.config
    this.identity = await identityProviderFor(config, this.configSource, this.consul, this.log.child({ component: 'identity' }))
    await this.identity.start(meshIdentities(config))
    const mesh = meshContextFor(config, this.identity, this.consul, this.log)
    this.services.meshConnector = (caller, destination, connectTimeoutMs) => mesh.tls.connector(caller, destination, connectTimeoutMs)
    this.mesh = mesh
  }

  /**
   * Reload now (SIGHUP, `POST /reload`, tests): the provider reads its source afresh and the
   * snapshot goes through the same path as a watched change; the running version stays when
   * anything is wrong.
   */
  async reload (reason: string): Promise<ReloadResult> {
    return await this.configWatcher.reload(reason)
  }

  /** The one path from the provider to the swap (made on first use: `stop()` may come before `start()`). */
  private get configWatcher (): ConfigReconciler {
    this.reconciler ??= new ConfigReconciler({
      provider: this.options.provider ?? new FileConfigProvider(this.options.loaded.source, { log: this.log }),
      initial: this.options.loaded,
      log: this.log,
      target: this.pool !== undefined ? new ClusterSwap(this.versions, this.pool) : this.versions
    })
    return this.reconciler
  }

  /** Graceful stop: refuse new connections, drain in-flight requests, close everything. */
  async stop (): Promise<void> {
    if (this.draining) return
    this.draining = true
    this.versions.halt()
    this.registration.halt()
    // Workers that exit from here on (a SIGTERM to the whole process group) are not replaced.
    this.pool?.halt()
    await this.reconciler?.close()
    // Leave the catalog before closing listeners: peers stop picking this gateway while it
    // still answers, instead of meeting a closed port until the deregistration reaches them.
    const wasRegistered = this.registration.any
    await this.registration.deregister()
    // Peers learn of the deregistration through their blocking queries; keep answering
    // for a moment so calls already on their way still land.
    const delay = durationMs(this.config.limits.deregisterGrace)
    if (wasRegistered && delay > 0) await new Promise((r) => setTimeout(r, delay))
    if (this.pool !== undefined) {
      await this.pool.stop()
    } else {
      const closed = this.listeners.stopAccepting()
      const deadline = Date.now() + durationMs(this.config.limits.drainTimeout)
      while ((this.versions.version?.inFlight ?? 0) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
      this.listeners.closeAllConnections()
      await closed
    }
    await this.versions.close()
    await this.admin?.close()
    // State outside versions is disposed with the gateway (plugins' connections, timers).
    this.state.clear()
    await this.services.close()
    await this.discovery.close()
    this.mesh?.tls.close()
    await this.identity?.close()
    // The last exchanges' spans and access lines go out before the stop line.
    await this.tracing.shutdown()
    this.versions.flushAccessLog()
    this.log.info('fastmesh gateway stopped')
  }
}
