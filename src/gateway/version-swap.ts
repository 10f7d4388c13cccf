// The version swap: builds each config version, swaps the serving pointer to it, and lets the
// old one drain and retire; it keeps the config in effect and each reload's outcome.
import type { Logger } from 'pino'
import { buildGatewayVersion, type GatewayVersion, type MeshContext } from './app.js'
import type { ExchangeFaults } from './exchange.js'
import type { ServiceTable } from '../balancer/service-table.js'
import type { StateRegistry } from '../state/registry.js'
import type { EmbeddedRegistry } from '../discovery/embedded/registry.js'
import { ConfigError, deepFreeze, type LoadedConfig } from '../config/load.js'
import { configInEffect, pendingRestart } from '../config/in-effect.js'
import type { ReconcileTarget, ReloadResult } from '../config/reconciler.js'
import type { FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { redactText } from '../config/redact.js'
import { accessLogRecorder, type RequestRecorder } from '../telemetry/access-log.js'
import type { GatewayMetrics } from '../telemetry/metrics.js'
import type { GatewayTracing } from '../telemetry/tracing.js'

/** The outcome of the last reload attempt (file, SIGHUP, admin, Consul KV), for the admin API. */
export interface ReloadReport extends ReloadResult {
  /** ISO timestamp. */
  readonly at: string
  readonly reason: string
}

/** A version built by `prepare` that does not serve yet. */
export interface PreparedVersion {
  readonly built: GatewayVersion
  /** The config in effect once committed (restart-only keys as at start). */
  readonly loaded: LoadedConfig
  /** The config as given. */
  readonly given: FastmeshConfig
}

export interface VersionSwapOptions {
  /** The config the gateway starts with. */
  readonly loaded: LoadedConfig
  readonly log: Logger
  readonly services: ServiceTable
  readonly state: StateRegistry
  /** Takes each accepted config's embedded services, before the swap. */
  readonly registry: Pick<EmbeddedRegistry, 'applyConfig'>
  readonly faults: ExchangeFaults
  readonly metrics: GatewayMetrics
  readonly tracing: GatewayTracing
  /** The mesh's TLS and authorization, once started (undefined with mesh.mtls off). */
  readonly mesh: () => MeshContext | undefined
}

export class VersionSwap implements ReconcileTarget {
  private current: GatewayVersion | undefined
  /** The config in effect: the last accepted one, restart-only keys as at start. */
  private loaded: LoadedConfig
  /** The config the gateway started with (restart-only keys stay as in it). */
  private readonly started: FastmeshConfig
  /** The last accepted config as given, before restart-only keys were held back. */
  private latest: FastmeshConfig
  private lastReloadReport: ReloadReport | undefined
  private versionCounter = 0
  private recorder: RequestRecorder
  private stopping = false
  private readonly retiring = new Set<Promise<void>>()
  private readonly retiredVersions = new Set<GatewayVersion>()
  readonly reloads = { ok: 0, failed: 0 }
  private readonly log: Logger

  constructor (private readonly options: VersionSwapOptions) {
    this.log = options.log
    this.loaded = options.loaded
    this.started = options.loaded.config
    this.latest = options.loaded.config
    this.recorder = accessLogRecorder(this.log, this.loaded.config.telemetry.logging.accessLog)
  }

  /** The serving version; undefined before the first build. */
  get version (): GatewayVersion | undefined {
    return this.current
  }

  /** The serving version's number (0 before the first). */
  get versionNumber (): number {
    return this.current?.version ?? 0
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

  /** Builds the first version from the config the gateway starts with (`version`: the number a primary gave it). */
  async start (version?: number): Promise<GatewayVersion> {
    this.current = await this.build(this.loaded, version)
    return this.current
  }

  async swap (given: LoadedConfig, reason: string): Promise<ReloadResult> {
    if (this.stopping) return { ok: false, version: this.current?.version ?? 0, error: 'shutting down' }
    let prepared: PreparedVersion
    try {
      prepared = await this.prepare(given)
    } catch (err) {
      return this.refuse(err, reason)
    }
    return this.commit(prepared, reason)
  }

  /**
   * The first phase of a swap: builds a version from `given` (restart-only keys held back)
   * without serving it. Throws what the build threw, having released what it took. A
   * gateway with workers prepares on every process before any commits; `version` is then
   * the number the primary gave it, so every process calls a config version the same.
   */
  async prepare (given: LoadedConfig, version?: number): Promise<PreparedVersion> {
    // Keys read only at start keep their started values: the version is built, and
    // `config` shows, what actually runs.
    const loaded: LoadedConfig = { config: deepFreeze(configInEffect(this.started, given.config)), source: given.source, customPlugins: given.customPlugins }
    try {
      return { built: await this.build(loaded, version), loaded, given: given.config }
    } catch (err) {
      this.retainServices()
      this.settleTracing()
      throw err
    }
  }

  /** The second phase: the prepared version serves from now on; the old one drains and retires. */
  commit (prepared: PreparedVersion, reason: string): ReloadResult {
    if (this.stopping) {
      void this.abandon(prepared)
      return { ok: false, version: this.current?.version ?? 0, error: 'shutting down' }
    }
    const { built: next, loaded, given } = prepared
    const pending = pendingRestart(this.started, given)
    if (pending.length > 0) this.log.warn({ reason, pendingRestart: pending }, 'config keys changed that take effect on restart')
    this.options.registry.applyConfig(loaded.config.discovery.embedded.services)
    const old = this.current
    this.current = next
    this.loaded = loaded
    this.latest = given
    this.recorder.flush()
    this.recorder = accessLogRecorder(this.log, loaded.config.telemetry.logging.accessLog)
    this.log.level = loaded.config.telemetry.logging.level
    this.reloads.ok++
    this.options.metrics.reloads.inc({ result: 'success' })
    this.log.info({ reason, version: next.version, routes: loaded.config.routes.length }, 'config reloaded')
    if (old !== undefined) this.retire(old)
    this.retainServices()
    this.settleTracing()
    return this.report(reason, { ok: true, version: next.version, ...(pending.length > 0 ? { pendingRestart: pending } : {}) })
  }

  /** A prepared version that will not serve (another worker refused it): closed, its endpoint sets and state released. */
  async abandon (prepared: PreparedVersion): Promise<void> {
    await prepared.built.close().catch((err: unknown) => { this.log.error({ err }, 'closing an abandoned version failed') })
    if (!this.stopping) {
      this.retainServices()
      this.settleTracing()
    }
  }

  refuse (err: unknown, reason: string): ReloadResult {
    this.reloads.failed++
    this.options.metrics.reloads.inc({ result: 'failure' })
    const problems = err instanceof ConfigError ? err.problems : undefined
    // The message goes to the log, `lastReload` and the 409 answer: through the one redaction
    // rule. A ConfigError is logged without its cause: a YAML parser's cause quotes source lines.
    const error = redactText((err as Error).message)
    const logged = err instanceof ConfigError ? { code: err.code, message: error } : err
    this.log.error({ reason, err: logged, problems, version: this.current?.version }, 'config refused; the running config keeps serving')
    return this.report(reason, { ok: false, version: this.current?.version ?? 0, error, ...(problems !== undefined ? { problems } : {}) })
  }

  /** The config in effect was offered again after a refusal: say so, and clear the refusal. */
  restored (reason: string): ReloadResult {
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

  private async build (loaded: LoadedConfig, given?: number): Promise<GatewayVersion> {
    const version = given ?? ++this.versionCounter
    if (version > this.versionCounter) this.versionCounter = version
    const mesh = this.options.mesh()
    return await buildGatewayVersion({
      compiled: loaded,
      services: this.options.services,
      state: this.options.state,
      log: this.log,
      // Read through `this` so a reload's access-log setting applies to every version.
      recorder: { record: (r) => { this.recorder.record(r) }, flush: () => { this.recorder.flush() } },
      faults: this.options.faults,
      metrics: this.options.metrics,
      tracing: this.options.tracing,
      version,
      ...(mesh !== undefined ? { mesh } : {})
    })
  }

  /** Tracing providers the serving config does not use stop once the old version had its drain time. */
  private settleTracing (): void {
    this.options.tracing.settle(this.loaded.config.telemetry.tracing, durationMs(this.loaded.config.limits.drainTimeout) + 1000)
  }

  /**
   * Keeps the endpoint sets of the serving version and of retired versions still draining
   * (their accepted requests may not have picked an endpoint yet); releases the rest.
   */
  private retainServices (): void {
    const live = [...(this.current !== undefined ? [this.current] : []), ...this.retiredVersions]
    const keys = new Set<string>()
    for (const v of live) for (const key of v.services) keys.add(key)
    const services = this.options.services
    services.retain(keys)
    // State goes with its name: kept while any live or draining version uses the name.
    const routes = new Set<string>()
    for (const v of live) for (const name of v.routeNames) routes.add(name)
    this.options.state.release({ route: routes, service: services.selectorKeys(keys) })
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
      if (!this.stopping) this.retainServices()
    })()
    this.retiring.add(p)
    void p.finally(() => this.retiring.delete(p))
  }

  /** After `halt()`: the gateway is stopping. */
  get halted (): boolean {
    return this.stopping
  }

  /** Refuses further swaps (they answer "shutting down"); retiring versions stop releasing state. */
  halt (): void {
    this.stopping = true
  }

  /** After `halt()`: waits for retiring versions, then closes the serving one. */
  async close (): Promise<void> {
    await Promise.all(this.retiring)
    await this.current?.close()
  }

  /** Writes the access lines gathered so far. */
  flushAccessLog (): void {
    this.recorder.flush()
  }
}
