// The running gateway: long-lived listeners, discovery and upstream state, and the
// current config version, which a reload replaces atomically while the old one drains.
import type { Server as NetServer, AddressInfo } from 'node:net'
import { reachableAddress } from '../config/addresses.js'
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import { buildGatewayVersion, type GatewayVersion, type MeshContext } from './app.js'
import { ExchangeFaults } from './exchange.js'
import { bind, httpListener, inboundListener, type InboundListener, type ListenerLimits } from './listeners.js'
import type { IdentityProvider } from '../identity/types.js'
import { ConsulIdentityProvider } from '../identity/consul-provider.js'
import { MeshTls } from '../identity/mesh-tls.js'
import { Authorizer } from '../identity/authorization.js'
import { ServiceTable } from '../balancer/service-table.js'
import { StateRegistry } from '../state/registry.js'
import { EmbeddedRegistry } from '../discovery/embedded/registry.js'
import { ConfigError, configBaseDir, deepFreeze, type LoadedConfig } from '../config/load.js'
import { configInEffect, pendingRestart } from '../config/in-effect.js'
import type { ConfigProvider } from '../config/provider.js'
import { FileConfigProvider } from '../config/provider-file.js'
import { ConfigReconciler, type ReloadResult } from '../config/reconciler.js'
import type { FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { redactText } from '../config/redact.js'
import { accessLogRecorder, type RequestRecorder } from '../telemetry/access-log.js'
import { GatewayMetrics } from '../telemetry/metrics.js'
import { countEndpointStates } from '../balancer/endpoint-state.js'
import { retryBudgetKind } from './retry.js'
import { GatewayTracing } from '../telemetry/tracing.js'
import { fastmeshError } from '../errors.js'
import { startAdmin, type AdminServer } from '../admin/server.js'
import type { Discovery } from '../discovery/types.js'
import { CompositeDiscovery } from '../discovery/composite.js'
import { ConsulClient, resolveConsul } from '../discovery/consul/client.js'
import { ConsulDiscovery } from '../discovery/consul/discovery.js'
import { deregisterService, registerConnectProxy, registerService } from '../discovery/consul/registration.js'

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

export type { ReloadResult }

/** The outcome of the last reload attempt (file, SIGHUP, admin, Consul KV), for the admin API. */
export interface ReloadReport extends ReloadResult {
  /** ISO timestamp. */
  readonly at: string
  readonly reason: string
}

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
  /** Consul service ids this gateway registered and removes on shutdown. */
  private readonly registered = new Set<string>()
  private registrationTimer: NodeJS.Timeout | undefined
  private current: GatewayVersion | undefined
  /** The config in effect: the last accepted one, restart-only keys as at start. */
  private loaded: LoadedConfig
  /** The config the gateway started with (restart-only keys stay as in it). */
  private readonly started: FastmeshConfig
  /** The last accepted config as given, before restart-only keys were held back. */
  private latest: FastmeshConfig
  private lastReloadReport: ReloadReport | undefined
  private versionCounter = 0
  /** Every listening socket but admin: edge http, or node outbound, per-upstream and inbound. */
  private readonly servers = new Map<string, NetServer>()
  private inbound: InboundListener | undefined
  private mesh: MeshContext | undefined
  identity: IdentityProvider | undefined
  private admin: AdminServer | undefined
  private reconciler: ConfigReconciler | undefined
  private recorder: RequestRecorder
  private draining = false
  private readonly retiring = new Set<Promise<void>>()
  private readonly retiredVersions = new Set<GatewayVersion>()
  readonly reloads = { ok: 0, failed: 0 }
  /** Exceptions raised while serving requests, across versions. */
  readonly faults = new ExchangeFaults()
  /** Prometheus metrics, across versions (admin `GET /metrics`); counted only while `telemetry.metrics.enabled`. */
  readonly metrics: GatewayMetrics
  /** OpenTelemetry tracing, across versions: one provider per tracing settings (`telemetry.tracing`). */
  readonly tracing: GatewayTracing

  constructor (private readonly options: GatewayOptions) {
    this.log = options.log
    this.loaded = options.loaded
    this.started = options.loaded.config
    this.latest = options.loaded.config
    this.registry = new EmbeddedRegistry(this.log.child({ component: 'discovery' }))
    const consul = this.loaded.config.discovery.consul
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
    this.recorder = accessLogRecorder(this.log, this.loaded.config.telemetry.logging.accessLog)
    this.metrics = new GatewayMetrics({
      role: this.loaded.config.gateway.mode,
      configVersion: () => this.current?.version ?? 0,
      certificates: () => this.leafExpiries(),
      events: this.services.events,
      state: this.state,
      endpointStates: () => {
        const now = Date.now()
        const sets = this.services.all()
        return this.discovery.services().map((s) => countEndpointStates(s, sets, now))
      },
      retryBudgets: () => this.state.entries(retryBudgetKind).map(([route, budget]) => ({ route, exhausted: budget.exhausted })),
      authorization: () => this.meshContext?.authorizer.countRows() ?? [],
      discovery: () => ({
        services: this.discovery.services(),
        errors: this.consulDiscovery?.errors ?? 0,
        source: this.consulDiscovery !== undefined ? 'consul' : 'embedded'
      }),
      tracing: () => this.tracing.totals
    })
    this.tracing = new GatewayTracing({
      gatewayName: this.loaded.config.gateway.name,
      role: this.loaded.config.gateway.mode,
      log: this.log,
      spiffeIdOf: (service) => this.identity?.leaf(service)?.spiffeId
    })
  }

  /** The mesh leaf certificates this gateway holds (itself and its local services), for the expiry gauge. */
  private * leafExpiries (): Iterable<{ service: string, notAfter: Date }> {
    const identity = this.identity
    if (identity === undefined) return
    for (const service of [this.selfIdentity, ...this.loaded.config.localServices.map((s) => s.name)]) {
      const leaf = identity.leaf(service)
      if (leaf !== undefined) yield { service, notAfter: leaf.notAfter }
    }
  }

  /** The config in effect (restart-only keys as at start; see pendingRestart). */
  get config (): FastmeshConfig {
    return this.loaded.config
  }

  /** Where the config comes from: a file path or `kv:<key>`. */
  get configSource (): string {
    return this.loaded.source
  }

  /** Keys the last accepted config changes that wait for a restart, as dotted paths. */
  get pendingRestart (): readonly string[] {
    return pendingRestart(this.started, this.latest)
  }

  /** The last reload attempt and its outcome; undefined before the first one. */
  get lastReload (): ReloadReport | undefined {
    return this.lastReloadReport
  }

  get version (): GatewayVersion | undefined {
    return this.current
  }

  get ready (): boolean {
    return this.current !== undefined && this.servers.size > 0 && [...this.servers.values()].every((s) => s.listening) && !this.draining
  }

  /** Where the client-facing listener is bound: edge http, or the node's shared outbound port. */
  get httpAddress (): AddressInfo {
    return (this.servers.get('http') ?? this.servers.get('outbound'))!.address() as AddressInfo
  }

  /** Every bound listener but admin, by name. */
  get boundListeners (): Record<string, AddressInfo> {
    return Object.fromEntries([...this.servers].map(([name, server]) => [name, server.address() as AddressInfo]))
  }

  /** Where a named listener is bound (`http`, `outbound`, `inbound`, `upstream:<caller>:<service>`). */
  listenerAddress (name: string): AddressInfo | undefined {
    return this.servers.get(name)?.address() as AddressInfo | undefined
  }

  get meshContext (): MeshContext | undefined {
    return this.mesh
  }

  /** The identity of calls from the edge or the node's shared outbound port. */
  get selfIdentity (): string {
    return this.loaded.config.gateway.name
  }

  get adminAddress (): AddressInfo {
    return this.admin!.address
  }

  /** The admin API's `host:port` as registered in Consul (`meta.admin`): a wildcard bind is advertised as loopback. */
  get advertisedAdmin (): string {
    const admin = this.adminAddress
    // Bound to all addresses: one other hosts can reach (Prometheus, other gateways' /ui), not loopback.
    const host = reachableAddress(admin.address)
    return `${host.includes(':') ? `[${host}]` : host}:${admin.port}`
  }

  async start (): Promise<void> {
    const config = this.loaded.config
    this.registry.applyConfig(config.discovery.embedded.services)
    if (config.mesh.mtls !== 'off') await this.startMesh()
    this.current = await this.build(this.loaded)
    const limits: ListenerLimits = {
      maxHeaderBytes: config.limits.maxHeaderBytes,
      keepAliveTimeoutMs: durationMs(config.limits.keepAliveTimeout),
      headerTimeoutMs: durationMs(config.limits.headerTimeout),
      requestTimeoutMs: durationMs(config.limits.requestTimeout)
    }
    const current = (): GatewayVersion => this.current!
    const l = config.listeners
    if (config.gateway.mode === 'edge') {
      await this.listen('http', httpListener(limits, current, undefined), l.http.address, l.http.port)
    } else {
      await this.listen('outbound', httpListener(limits, current, { kind: 'outbound', caller: undefined }), l.outbound.address, l.outbound.port)
      for (const local of config.localServices) {
        for (const up of local.upstreams) {
          await this.listen(`upstream:${local.name}:${up.service}`, httpListener(limits, current, { kind: 'upstream', caller: local.name, service: up.service }), up.address, up.port)
        }
      }
      if (this.mesh !== undefined) {
        this.inbound = inboundListener({ limits, tls: this.mesh.tls, selfIdentity: this.selfIdentity, mtls: this.mesh.mtls }, current)
        const inbound = this.inbound
        // Rotated roots or a new gateway leaf apply to the default context of new connections.
        this.identity!.onChange((c) => {
          if (c.kind === 'roots' || c.service === this.selfIdentity) {
            try { inbound.refreshDefaultContext() } catch (err) { this.log.error({ err }, 'refreshing the inbound TLS context failed') }
          }
        })
        await this.listen('inbound', this.inbound.server, l.inbound.address, l.inbound.port)
      }
    }
    this.admin = await startAdmin(this, config.listeners.admin)
    this.configWatcher.start()
    if (this.options.handleSignals === true) this.installSignalHandlers()
    await this.registerInConsul()
    const listeners = Object.fromEntries([...this.servers].map(([name, s]) => [name, s.address()]))
    this.log.info({ mode: config.gateway.mode, listeners, admin: this.adminAddress, mtls: config.mesh.mtls, version: this.current.version, routes: config.routes.length }, 'fastmesh gateway listening')
  }

  /** Identity, TLS contexts and authorization; leaves for the gateway and each local service. */
  private async startMesh (): Promise<void> {
    const config = this.loaded.config
    const mesh = config.mesh
    const log = this.log.child({ component: 'identity' })
    if (mesh.identity.provider === 'consul') {
      if (this.consul === undefined) throw fastmeshError('IDENTITY_UNAVAILABLE', [this.selfIdentity, 'consul', 'mesh.identity.provider is consul but discovery.consul is not configured'])
      this.identity = new ConsulIdentityProvider(this.consul, log)
    } else {
      const dir = mesh.identity.dir
      if (dir === undefined) throw fastmeshError('IDENTITY_UNAVAILABLE', [this.selfIdentity, 'files', 'mesh.identity.dir is required with provider files'])
      const { FilesIdentityProvider } = await import('../identity/files-provider.js')
      const id = mesh.identity
      this.identity = new FilesIdentityProvider({
        dir: resolve(configBaseDir(this.loaded.source), dir),
        log,
        selfIssue: id.selfIssue,
        leafValidityMs: durationMs(id.leafValidity),
        warnBeforeMs: durationMs(id.warnBefore),
        ...(id.renewBefore !== undefined ? { renewBeforeMs: durationMs(id.renewBefore) } : {})
      })
    }
    await this.identity.start([this.selfIdentity, ...config.localServices.map((s) => s.name)])
    const tls = new MeshTls(this.identity, log)
    this.services.meshConnector = (caller, destination, connectTimeoutMs) => tls.connector(caller, destination, connectTimeoutMs)
    this.mesh = {
      mtls: mesh.mtls as 'strict' | 'permissive',
      tls,
      selfIdentity: this.selfIdentity,
      authorizer: new Authorizer({
        rules: mesh.authorization.rules,
        provider: mesh.authorization.provider,
        defaultAction: mesh.authorization.defaultAction,
        cacheTtlMs: durationMs(mesh.authorization.cacheTtl),
        consul: this.consul,
        log: this.log.child({ component: 'authorization' })
      })
    }
  }

  private async listen (name: string, server: NetServer, address: string, port: number): Promise<void> {
    await bind(server, address, port, name)
    this.servers.set(name, server)
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
    const current = (): GatewayVersion | undefined => this.current
    this.reconciler ??= new ConfigReconciler({
      provider: this.options.provider ?? new FileConfigProvider(this.options.loaded.source, { log: this.log }),
      initial: this.options.loaded,
      log: this.log,
      target: {
        get versionNumber () { return current()?.version ?? 0 },
        swap: async (loaded, reason) => await this.swapTo(loaded, reason),
        refuse: (err, reason) => this.refused(err, reason),
        restored: (reason) => this.restored(reason)
      }
    })
    return this.reconciler
  }

  private async swapTo (given: LoadedConfig, reason: string): Promise<ReloadResult> {
    if (this.draining) return { ok: false, version: this.current?.version ?? 0, error: 'shutting down' }
    // Keys read only at start keep their started values: the version is built, and
    // `config` shows, what actually runs.
    const loaded: LoadedConfig = { config: deepFreeze(configInEffect(this.started, given.config)), source: given.source, customPlugins: given.customPlugins }
    let next: GatewayVersion
    try {
      next = await this.build(loaded)
    } catch (err) {
      this.retainServices()
      this.settleTracing()
      return this.refused(err, reason)
    }
    const pending = pendingRestart(this.started, given.config)
    if (pending.length > 0) this.log.warn({ reason, pendingRestart: pending }, 'config keys changed that take effect on restart')
    this.registry.applyConfig(loaded.config.discovery.embedded.services)
    const old = this.current
    this.current = next
    this.loaded = loaded
    this.latest = given.config
    this.recorder.flush()
    this.recorder = accessLogRecorder(this.log, loaded.config.telemetry.logging.accessLog)
    this.log.level = loaded.config.telemetry.logging.level
    this.reloads.ok++
    this.metrics.reloads.inc({ result: 'success' })
    this.log.info({ reason, version: next.version, routes: loaded.config.routes.length }, 'config reloaded')
    if (old !== undefined) this.retire(old)
    this.retainServices()
    this.settleTracing()
    return this.report(reason, { ok: true, version: next.version, ...(pending.length > 0 ? { pendingRestart: pending } : {}) })
  }

  private refused (err: unknown, reason: string): ReloadResult {
    this.reloads.failed++
    this.metrics.reloads.inc({ result: 'failure' })
    const problems = err instanceof ConfigError ? err.problems : undefined
    // The message goes to the log, `lastReload` and the 409 answer: through the one redaction
    // rule. A ConfigError is logged without its cause: a YAML parser's cause quotes source lines.
    const error = redactText((err as Error).message)
    const logged = err instanceof ConfigError ? { code: err.code, message: error } : err
    this.log.error({ reason, err: logged, problems, version: this.current?.version }, 'config refused; the running config keeps serving')
    return this.report(reason, { ok: false, version: this.current?.version ?? 0, error, ...(problems !== undefined ? { problems } : {}) })
  }

  /** The config in effect was offered again after a refusal: say so, and clear the refusal. */
  private restored (reason: string): ReloadResult {
    const version = this.current?.version ?? 0
    this.log.info({ reason, version }, 'config restored: the config in effect was offered again, the last refusal no longer applies')
    const pending = this.pendingRestart
    return this.report(reason, { ok: true, version, restored: true, ...(pending.length > 0 ? { pendingRestart: pending } : {}) })
  }

  /** Keeps the outcome for the admin API (`GET /config` → `lastReload`). */
  private report (reason: string, result: ReloadResult): ReloadResult {
    this.lastReloadReport = { at: new Date().toISOString(), reason, ...result }
    return result
  }

  private async build (loaded: LoadedConfig): Promise<GatewayVersion> {
    const version = ++this.versionCounter
    return await buildGatewayVersion({
      compiled: loaded,
      services: this.services,
      state: this.state,
      log: this.log,
      // Read through `this` so a reload's access-log setting applies to every version.
      recorder: { record: (r) => { this.recorder.record(r) }, flush: () => { this.recorder.flush() } },
      faults: this.faults,
      metrics: this.metrics,
      tracing: this.tracing,
      version,
      ...(this.mesh !== undefined ? { mesh: this.mesh } : {})
    })
  }

  /** Tracing providers the serving config does not use stop once the old version had its drain time. */
  private settleTracing (): void {
    this.tracing.settle(this.loaded.config.telemetry.tracing, durationMs(this.loaded.config.limits.drainTimeout) + 1000)
  }

  /**
   * Keeps the endpoint sets of the serving version and of retired versions still draining
   * (their accepted requests may not have picked an endpoint yet); releases the rest.
   */
  private retainServices (): void {
    const live = [...(this.current !== undefined ? [this.current] : []), ...this.retiredVersions]
    const keys = new Set<string>()
    for (const v of live) for (const key of v.services) keys.add(key)
    this.services.retain(keys)
    // State goes with its name: kept while any live or draining version uses the name.
    const routes = new Set<string>()
    for (const v of live) for (const name of v.routeNames) routes.add(name)
    this.state.release({ route: routes, service: this.services.selectorKeys(keys) })
  }

  /** Lets the old version finish what it started, then closes it. */
  private retire (old: GatewayVersion): void {
    this.retiredVersions.add(old)
    const deadline = Date.now() + durationMs(this.loaded.config.limits.drainTimeout)
    const p = (async () => {
      while (old.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
      if (old.inFlight > 0) this.log.warn({ version: old.version, inFlight: old.inFlight }, 'drain timeout: closing a version with requests in flight')
      await old.close().catch((err: unknown) => { this.log.error({ err }, 'closing an old version failed') })
      this.retiredVersions.delete(old)
      if (!this.draining) this.retainServices()
    })()
    this.retiring.add(p)
    void p.finally(() => this.retiring.delete(p))
  }

  /** Graceful stop: refuse new connections, drain in-flight requests, close everything. */
  async stop (): Promise<void> {
    if (this.draining) return
    this.draining = true
    await this.reconciler?.close()
    // Leave the catalog before closing listeners: peers stop picking this gateway while it
    // still answers, instead of meeting a closed port until the deregistration reaches them.
    const wasRegistered = this.registered.size > 0
    await this.deregisterFromConsul()
    // Peers learn of the deregistration through their blocking queries; keep answering
    // for a moment so calls already on their way still land.
    const delay = durationMs(this.loaded.config.limits.deregisterGrace)
    if (wasRegistered && delay > 0) await new Promise((r) => setTimeout(r, delay))
    const servers = [...this.servers.values()]
    const closed = servers.map(async (server) => { await new Promise<void>((r) => { server.close(() => { r() }) }) })
    for (const server of servers) (server as NetServer & { closeIdleConnections?: () => void }).closeIdleConnections?.()
    const deadline = Date.now() + durationMs(this.loaded.config.limits.drainTimeout)
    while ((this.current?.inFlight ?? 0) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    for (const server of servers) (server as NetServer & { closeAllConnections?: () => void }).closeAllConnections?.()
    this.inbound?.closeAllConnections()
    await Promise.all(closed)
    await Promise.all(this.retiring)
    await this.current?.close()
    await this.admin?.close()
    // State outside versions is disposed with the gateway (plugins' connections, timers).
    this.state.clear()
    await this.services.close()
    await this.discovery.close()
    this.mesh?.tls.close()
    await this.identity?.close()
    // The last exchanges' spans and access lines go out before the stop line.
    await this.tracing.shutdown()
    this.recorder.flush()
    this.log.info('fastmesh gateway stopped')
  }

  /** The address other gateways use for the inbound listener. */
  private advertiseAddress (): string {
    const inbound = this.loaded.config.listeners.inbound
    return inbound.advertiseAddress ?? reachableAddress(inbound.address)
  }

  /** What this gateway registers in Consul: configured services, local services with their proxies, itself. */
  private registrations (): Array<() => Promise<string>> {
    const c = this.loaded.config
    const consul = c.discovery.consul
    const client = this.consul
    if (consul === undefined || client === undefined) return []
    const regs: Array<() => Promise<string>> = consul.register.map((r) => async () => await registerService(client, r))
    const node = c.gateway.mode === 'node'
    const inbound = this.servers.get('inbound')?.address() as AddressInfo | undefined
    const advertise = this.advertiseAddress()
    for (const local of node ? c.localServices : []) {
      const id = `${local.name}-${c.gateway.name}`
      regs.push(async () => await registerService(client, { name: local.name, id, address: local.address, port: local.port, tags: local.tags, meta: { ...local.meta, gateway: c.gateway.name }, ...(local.check !== undefined ? { check: local.check } : {}) }))
      if (inbound !== undefined) {
        regs.push(async () => await registerConnectProxy(client, { destination: local.name, destinationId: id, address: advertise, port: inbound.port, localAddress: local.address, localPort: local.port, gateway: c.gateway.name, tags: local.tags, meta: local.meta }))
      }
    }
    if (consul.registerSelf) {
      const admin = this.adminAddress
      const adminHost = admin.address === '0.0.0.0' || admin.address === '::' ? '127.0.0.1' : admin.address
      // Node gateways are reached on their inbound listener; the edge on its http listener.
      const self = node && inbound !== undefined ? { address: advertise, port: inbound.port } : { address: this.httpAddress.address, port: this.httpAddress.port }
      const check = node && inbound !== undefined
        ? { tcp: `${advertise}:${inbound.port}`, interval: '5s', timeout: '2s', deregisterCriticalServiceAfter: '10m' }
        : { http: `http://${adminHost.includes(':') ? `[${adminHost}]` : adminHost}:${admin.port}/ready`, interval: '5s', timeout: '2s', deregisterCriticalServiceAfter: '10m' }
      regs.push(async () => await registerService(client, {
        name: c.gateway.name,
        id: `${c.gateway.name}-${self.address}-${self.port}`,
        address: self.address,
        port: self.port,
        tags: ['fastmesh', c.gateway.mode],
        meta: { role: c.gateway.mode, admin: this.advertisedAdmin },
        check
      }))
    }
    return regs
  }

  /** Registers in the background until it works: Consul being down must not stop traffic. */
  private async registerInConsul (attempt = 1): Promise<void> {
    const client = this.consul
    if (client === undefined || this.draining) return
    const pending = this.registrations()
    try {
      for (const register of pending) this.registered.add(await register())
      if (pending.length > 0) this.log.info({ services: [...this.registered] }, 'registered in Consul')
    } catch (err) {
      const retryIn = Math.min(30_000, 500 * 2 ** attempt)
      this.log.warn({ err: (err as Error).message, retryIn }, 'Consul registration failed; retrying')
      this.registrationTimer = setTimeout(() => { void this.registerInConsul(attempt + 1) }, retryIn)
      this.registrationTimer.unref()
    }
  }

  private async deregisterFromConsul (): Promise<void> {
    clearTimeout(this.registrationTimer)
    const client = this.consul
    if (client === undefined) return
    for (const id of this.registered) {
      try {
        await deregisterService(client, id)
      } catch (err) {
        this.log.warn({ id, err: (err as Error).message }, 'Consul deregistration failed')
      }
    }
    if (this.registered.size > 0) this.log.info({ services: [...this.registered] }, 'deregistered from Consul')
    this.registered.clear()
  }

  private installSignalHandlers (): void {
    process.on('SIGHUP', () => { void this.reload('SIGHUP') })
    // The last resort. Every layer guards its own callbacks, so an exception that gets here
    // came from somewhere no guard reaches (a plugin's own timer, a library's callback): one
    // request's failure must not end every other request, so it is logged and counted, and
    // the gateway goes on. Log lines are limited to one a second of each kind (the count is exact).
    const lastResort = (kind: string): ((err: unknown) => void) => {
      let lastLogged = 0
      let unlogged = 0
      return (err) => {
        this.faults.uncaught++
        const now = Date.now()
        if (now - lastLogged < 1000) { unlogged++; return }
        lastLogged = now
        this.log.error({ err, code: 'FASTMESH_ERR_INTERNAL', kind, suppressed: unlogged, uncaught: this.faults.uncaught }, 'exception outside any request guard; the gateway goes on')
        unlogged = 0
      }
    }
    process.on('uncaughtException', lastResort('uncaughtException'))
    process.on('unhandledRejection', lastResort('unhandledRejection'))
    const shutdown = (signal: string): void => {
      this.log.info({ signal }, 'shutting down: draining in-flight requests')
      this.stop().then(() => { this.log.flush(); process.exit(0) }, (err: unknown) => {
        this.log.error({ err }, 'shutdown failed')
        this.recorder.flush()
        this.log.flush()
        process.exit(1)
      })
    }
    process.once('SIGTERM', () => { shutdown('SIGTERM') })
    process.once('SIGINT', () => { shutdown('SIGINT') })
  }
}

