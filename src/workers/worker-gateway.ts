// A worker's composition: listeners and config versions over a discovery and an identity the
// primary relays. The primary (src/gateway/gateway.ts with src/workers/pool.ts) keeps what
// must happen once per gateway: config watching, discovery, certificates, Consul
// registration and the admin API. What a worker keeps on its own is in docs/workers.md.
import type { Logger } from 'pino'
import type { MeshContext } from '../gateway/app.js'
import { ExchangeFaults } from '../gateway/exchange.js'
import { ListenerSet } from '../gateway/listener-set.js'
import { VersionSwap, type PreparedVersion } from '../gateway/version-swap.js'
import { meshContextFor } from '../gateway/mesh-identity.js'
import { servingMetricSources } from '../gateway/metric-sources.js'
import { ServiceTable } from '../balancer/service-table.js'
import { ejectionOf } from '../balancer/endpoint-state.js'
import { StateRegistry } from '../state/registry.js'
import { compileConfig, ConfigError, type LoadedConfig } from '../config/load.js'
import { ConsulClient, resolveConsul } from '../discovery/consul/client.js'
import { redactText } from '../config/redact.js'
import { GatewayMetrics } from '../telemetry/metrics.js'
import { GatewayTracing } from '../telemetry/tracing.js'
import { RelayedDiscovery } from './relayed-discovery.js'
import { RelayedIdentityProvider } from './relayed-identity.js'
import type { FromWorker, ToWorker, WorkerStatus } from './messages.js'

type Init = Extract<ToWorker, { t: 'init' }>

export class WorkerGateway {
  readonly faults = new ExchangeFaults()
  private readonly state = new StateRegistry()
  private readonly discovery: RelayedDiscovery
  private readonly services: ServiceTable
  private readonly listeners = new ListenerSet()
  private readonly metrics: GatewayMetrics
  private readonly tracing: GatewayTracing
  private identity: RelayedIdentityProvider | undefined
  private mesh: MeshContext | undefined
  private versions: VersionSwap | undefined
  /** Versions built by `prepare` and waiting for the primary's commit or abandon. */
  private readonly prepared = new Map<number, PreparedVersion>()
  /** Prepares the primary gave up on before this worker finished building them. */
  private readonly abandoned = new Set<number>()
  private readonly building = new Set<number>()
  private stopped: Promise<void> | undefined

  constructor (private readonly init: Init, private readonly log: Logger, private readonly send: (m: FromWorker) => void) {
    const config = init.config
    this.discovery = new RelayedDiscovery(send, config.discovery.consul?.includeWarning ?? false)
    // Made now, so a certificate change sent while the config compiles is not lost.
    if (init.identity !== undefined) this.identity = new RelayedIdentityProvider(init.identity, send)
    this.services = new ServiceTable(this.discovery, undefined, this.state, log.child({ component: 'outlier' }))
    // What only the primary knows (certificates, discovery errors) it counts itself; the
    // admin API adds each worker's series to the primary's (src/workers/pool.ts).
    this.metrics = new GatewayMetrics({
      role: config.gateway.mode,
      configVersion: () => this.versions?.versionNumber ?? 0,
      ...servingMetricSources({ services: this.services, discovery: this.discovery, state: this.state, mesh: () => this.mesh, tracing: () => this.tracing })
    })
    // Ejections are shared: the others stop sending to an endpoint one worker found failing,
    // instead of each paying the failures to find it out (docs/workers.md).
    this.services.events.on((e) => {
      if (e.type === 'ejected' && e.until !== undefined) send({ t: 'ejected', service: e.service, endpoint: e.endpointId, until: e.until, reason: e.reason ?? 'ejected' })
    })
    this.tracing = new GatewayTracing({
      gatewayName: config.gateway.name,
      role: config.gateway.mode,
      log,
      spiffeIdOf: (service) => this.identity?.leaf(service)?.spiffeId
    })
  }

  async start (): Promise<void> {
    const loaded = await compileConfig(this.init.config, this.init.source)
    const config = loaded.config
    if (config.mesh.mtls !== 'off') {
      if (this.identity === undefined) throw new Error('the primary sent no mesh identity')
      // Consul intentions are asked by each worker (cached per worker); endpoints and leaves are not.
      const consul = config.discovery.consul !== undefined ? new ConsulClient(resolveConsul(config.discovery.consul)) : undefined
      const mesh = meshContextFor(config, this.identity, consul, this.log)
      this.services.meshConnector = (caller, destination, connectTimeoutMs) => mesh.tls.connector(caller, destination, connectTimeoutMs)
      this.mesh = mesh
    }
    const versions = this.versions = new VersionSwap({
      loaded,
      log: this.log,
      services: this.services,
      state: this.state,
      // The primary's embedded registry takes each config's services; its snapshots come here.
      registry: { applyConfig: () => {} },
      faults: this.faults,
      metrics: this.metrics,
      tracing: this.tracing,
      mesh: () => this.mesh
    })
    await versions.start(this.init.version)
    const mesh = this.mesh !== undefined ? { context: this.mesh, identity: this.identity! } : undefined
    await this.listeners.open({ config, current: () => versions.version!, mesh, log: this.log })
    this.send({ t: 'ready', listeners: this.listeners.bound })
  }

  /** One message from the primary. */
  async receive (m: ToWorker): Promise<void> {
    switch (m.t) {
      case 'snapshot': this.discovery.receive(m.key, m.snapshot); return
      case 'identity': this.identity?.receive(m.identity); return
      case 'eject': this.services.adoptEjection(m.service, m.endpoint, m.until, m.reason); return
      case 'prepare': await this.prepare(m); return
      case 'commit': {
        const p = this.prepared.get(m.prepared)
        this.prepared.delete(m.prepared)
        let ok = false
        try {
          if (p !== undefined) ok = this.versions!.commit(p, m.reason).ok
        } finally {
          this.send({ t: 'committed', id: m.id, ok })
        }
        return
      }
      case 'abandon': {
        const p = this.prepared.get(m.prepared)
        this.prepared.delete(m.prepared)
        if (p !== undefined) await this.versions!.abandon(p)
        // Still building (the primary stopped waiting): closed when the build ends.
        else if (this.building.has(m.prepared)) this.abandoned.add(m.prepared)
        return
      }
      case 'status': this.send({ t: 'status', id: m.id, status: this.status() }); return
      case 'metrics': this.send({ t: 'metrics', id: m.id, metrics: await this.metrics.registry.getMetricsAsJSON() }); return
      case 'requests': this.send({ t: 'requests', id: m.id, snapshot: this.metrics.snapshot() }); return
      case 'stop': await this.stop(m.drainMs); return
      case 'init': return
    }
  }

  private async prepare (m: Extract<ToWorker, { t: 'prepare' }>): Promise<void> {
    let given: LoadedConfig
    this.building.add(m.id)
    try {
      given = await compileConfig(m.config, m.source)
      const prepared = await this.versions!.prepare(given, m.version)
      if (this.abandoned.delete(m.id)) {
        await this.versions!.abandon(prepared)
        return
      }
      this.prepared.set(m.id, prepared)
      this.send({ t: 'prepared', id: m.id, ok: true })
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : undefined
      this.log.error({ err: err instanceof ConfigError ? { code: err.code, message: err.message } : err, version: m.version }, 'this worker could not build the new config version; no worker will serve it')
      this.send({ t: 'prepared', id: m.id, ok: false, error: redactText((err as Error).message), ...(problems !== undefined ? { problems } : {}) })
    } finally {
      this.building.delete(m.id)
      this.abandoned.delete(m.id)
    }
  }

  private status (): WorkerStatus {
    const v = this.versions?.version
    const mem = process.memoryUsage()
    const now = Date.now()
    const sets = this.services.all()
    const ejected: Array<WorkerStatus['ejected'][number]> = []
    for (const s of this.discovery.services()) {
      const layers = sets.filter((set) => set.service === s.service)
      for (const e of s.endpoints) {
        const v = ejectionOf(e, layers, now)
        if (v !== undefined) ejected.push({ service: s.service, endpoint: e.id, reason: v.reason, until: v.until })
      }
    }
    return {
      ejected,
      version: v?.version ?? 0,
      inFlight: v?.inFlight ?? 0,
      ready: v !== undefined && this.listeners.listening && this.stopped === undefined,
      faults: { count: this.faults.count, uncaught: this.faults.uncaught, last: this.faults.last },
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed
    }
  }

  /** Stops accepting, lets requests in flight finish (at most `drainMs`), closes everything; a second call waits for the first. */
  async stop (drainMs: number): Promise<void> {
    this.stopped ??= this.drainAndClose(drainMs)
    await this.stopped
  }

  private async drainAndClose (drainMs: number): Promise<void> {
    this.versions?.halt()
    const closed = this.listeners.stopAccepting()
    const deadline = Date.now() + drainMs
    while ((this.versions?.version?.inFlight ?? 0) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    this.listeners.closeAllConnections()
    await closed
    for (const p of this.prepared.values()) await p.built.close().catch(() => {})
    await this.versions?.close()
    this.state.clear()
    await this.services.close()
    await this.discovery.close()
    this.mesh?.tls.close()
    await this.tracing.shutdown()
    this.versions?.flushAccessLog()
  }
}
