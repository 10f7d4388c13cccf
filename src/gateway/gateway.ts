// The running gateway: long-lived listeners, discovery and upstream state, and the
// current config version, which a reload replaces atomically while the old one drains.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { dirname, resolve } from 'node:path'
import type { Logger } from 'pino'
import { buildGatewayVersion, type GatewayVersion } from './app.js'
import { ServiceTable } from '../balancer/service-table.js'
import { EmbeddedRegistry } from '../discovery/embedded/registry.js'
import { ConfigError, checkConfig, loadConfigFile, type LoadedConfig } from '../config/load.js'
import type { KvConfigSource } from '../config/kv-source.js'
import type { ConfigProblem, FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import { accessLogRecorder, type RequestRecorder } from '../telemetry/access-log.js'
import { errorBody, fastmeshError } from '../errors.js'
import { ConfigWatcher } from '../config/watch.js'
import { startAdmin, type AdminServer } from '../admin/server.js'
import type { Discovery } from '../discovery/types.js'
import { CompositeDiscovery } from '../discovery/composite.js'
import { ConsulClient, resolveConsul } from '../discovery/consul/client.js'
import { ConsulDiscovery } from '../discovery/consul/discovery.js'
import { deregisterService, registerService, type ServiceRegistration } from '../discovery/consul/registration.js'

export interface GatewayOptions {
  readonly loaded: LoadedConfig
  readonly log: Logger
  /** Watch the config file and reload on change (and on SIGHUP). */
  readonly watch?: boolean
  /** Register SIGHUP/SIGTERM/SIGINT handlers (the CLI does; tests do not). */
  readonly handleSignals?: boolean
  /** Config from Consul KV instead of (or over) the file: reloads re-read it. */
  readonly kv?: KvConfigSource
}

export interface ReloadResult {
  readonly ok: boolean
  readonly version: number
  readonly problems?: readonly ConfigProblem[]
  readonly error?: string
}

export class Gateway {
  readonly log: Logger
  readonly registry: EmbeddedRegistry
  readonly discovery: Discovery
  readonly consul: ConsulClient | undefined
  readonly services: ServiceTable
  /** Consul service ids this gateway registered and removes on shutdown. */
  private readonly registered = new Set<string>()
  private registrationTimer: NodeJS.Timeout | undefined
  private current: GatewayVersion | undefined
  private loaded: LoadedConfig
  private versionCounter = 0
  private httpServer: Server | undefined
  private admin: AdminServer | undefined
  private watcher: ConfigWatcher | undefined
  private recorder: RequestRecorder
  private reloading: Promise<ReloadResult> = Promise.resolve({ ok: true, version: 0 })
  private draining = false
  private readonly retiring = new Set<Promise<void>>()
  readonly reloads = { ok: 0, failed: 0 }

  constructor (private readonly options: GatewayOptions) {
    this.log = options.log
    this.loaded = options.loaded
    this.registry = new EmbeddedRegistry(this.log.child({ component: 'discovery' }))
    const consul = this.loaded.config.discovery.consul
    if (consul !== undefined) {
      this.consul = new ConsulClient(resolveConsul(consul))
      this.discovery = new CompositeDiscovery(this.registry, new ConsulDiscovery({
        client: this.consul,
        log: this.log.child({ component: 'consul' }),
        includeWarning: consul.includeWarning,
        wait: consul.wait
      }))
    } else {
      this.consul = undefined
      this.discovery = new CompositeDiscovery(this.registry, undefined)
    }
    this.services = new ServiceTable(this.discovery)
    this.recorder = accessLogRecorder(this.log, this.loaded.config.telemetry.logging.accessLog)
  }

  get config (): FastmeshConfig {
    return this.loaded.config
  }

  get version (): GatewayVersion | undefined {
    return this.current
  }

  get ready (): boolean {
    return this.current !== undefined && this.httpServer?.listening === true && !this.draining
  }

  /** Where the HTTP listener is bound (after start). */
  get httpAddress (): AddressInfo {
    return this.httpServer!.address() as AddressInfo
  }

  get adminAddress (): AddressInfo {
    return this.admin!.address
  }

  async start (): Promise<void> {
    const config = this.loaded.config
    this.registry.applyConfig(config.discovery.embedded.services)
    this.current = await this.build(this.loaded)
    const limits = config.limits
    const server = createServer({
      maxHeaderSize: limits.maxHeaderBytes,
      keepAliveTimeout: durationMs(limits.keepAliveTimeout),
      requestTimeout: durationMs(limits.requestTimeout),
      // The version handles requests; the listener only hands them over.
      noDelay: true
    }, (req: IncomingMessage, res: ServerResponse) => { this.current!.handle(req, res) })
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => { this.current!.upgrade(req, socket, head) })
    server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
      if (!socket.writable) { socket.destroy(); return }
      const e = err.code === 'HPE_HEADER_OVERFLOW'
        ? fastmeshError('REQUEST_HEADERS_TOO_LARGE', [limits.maxHeaderBytes])
        : fastmeshError('BAD_REQUEST', [err.code ?? err.message])
      const body = errorBody(e, '-')
      socket.end(`HTTP/1.1 ${e.statusCode} ${e.statusCode === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
    })
    const listen = config.listeners.http
    await this.bind(server, listen.address, listen.port)
    this.httpServer = server
    this.admin = await startAdmin(this, config.listeners.admin)
    if (this.options.watch === true && !this.loaded.source.startsWith('kv:')) {
      this.watcher = new ConfigWatcher(this.loaded.source, () => { void this.reload('file change') }, this.log)
    }
    if (this.options.handleSignals === true) this.installSignalHandlers()
    await this.registerInConsul()
    this.log.info({ http: this.httpAddress, admin: this.adminAddress, version: this.current.version, routes: config.routes.length }, 'fastmesh gateway listening')
  }

  /** Reloads from the config file; the running version stays when anything is wrong. */
  async reload (reason: string): Promise<ReloadResult> {
    // Reloads run one at a time, in order.
    this.reloading = this.reloading.then(async () => await this.reloadNow(reason))
    return await this.reloading
  }

  /** Applies an already-parsed config (from a file, or from Consul KV later). */
  async apply (loaded: LoadedConfig, reason: string): Promise<ReloadResult> {
    this.reloading = this.reloading.then(async () => await this.swapTo(loaded, reason))
    return await this.reloading
  }

  /** Validates and applies a parsed document (Consul KV); refused like a bad file. */
  async applyDocument (doc: unknown, source: string, reason: string): Promise<ReloadResult> {
    this.reloading = this.reloading.then(async () => {
      let loaded: LoadedConfig
      try {
        loaded = checkConfig(doc, source)
      } catch (err) {
        return this.refused(err, reason)
      }
      return await this.swapTo(loaded, reason)
    })
    return await this.reloading
  }

  /** Counts and logs a config that was refused before it reached the gateway (unparseable KV value). */
  refuse (err: unknown, reason: string): ReloadResult {
    return this.refused(err, reason)
  }

  private async reloadNow (reason: string): Promise<ReloadResult> {
    let loaded: LoadedConfig
    try {
      const kv = this.options.kv
      loaded = kv !== undefined ? checkConfig(await kv.initial(), kv.source) : await loadConfigFile(this.loaded.source)
    } catch (err) {
      return this.refused(err, reason)
    }
    return await this.swapTo(loaded, reason)
  }

  private async swapTo (loaded: LoadedConfig, reason: string): Promise<ReloadResult> {
    if (this.draining) return { ok: false, version: this.current?.version ?? 0, error: 'shutting down' }
    let next: GatewayVersion
    try {
      next = await this.build(loaded)
    } catch (err) {
      this.services.retain(this.current?.services ?? new Set())
      return this.refused(err, reason)
    }
    const listenerChanged = JSON.stringify(loaded.config.listeners) !== JSON.stringify(this.loaded.config.listeners)
    if (listenerChanged) this.log.warn({ reason }, 'listener addresses changed in config; they take effect on restart')
    if (JSON.stringify(loaded.config.discovery.consul) !== JSON.stringify(this.loaded.config.discovery.consul)) {
      this.log.warn({ reason }, 'discovery.consul changed in config; it takes effect on restart')
    }
    this.registry.applyConfig(loaded.config.discovery.embedded.services)
    const old = this.current
    this.current = next
    this.loaded = loaded
    this.recorder = accessLogRecorder(this.log, loaded.config.telemetry.logging.accessLog)
    this.log.level = loaded.config.telemetry.logging.level
    this.services.retain(next.services)
    this.reloads.ok++
    this.log.info({ reason, version: next.version, routes: loaded.config.routes.length }, 'config reloaded')
    if (old !== undefined) this.retire(old)
    return { ok: true, version: next.version }
  }

  private refused (err: unknown, reason: string): ReloadResult {
    this.reloads.failed++
    const problems = err instanceof ConfigError ? err.problems : undefined
    this.log.error({ reason, err, problems, version: this.current?.version }, 'config refused; the running config keeps serving')
    return { ok: false, version: this.current?.version ?? 0, error: (err as Error).message, ...(problems !== undefined ? { problems } : {}) }
  }

  private async build (loaded: LoadedConfig): Promise<GatewayVersion> {
    const version = ++this.versionCounter
    return await buildGatewayVersion({
      config: loaded.config,
      baseDir: loaded.source.startsWith('kv:') ? process.cwd() : dirname(resolve(loaded.source)),
      services: this.services,
      log: this.log,
      // Read through `this` so a reload's access-log setting applies to every version.
      recorder: { record: (r) => { this.recorder.record(r) } },
      version
    })
  }

  /** Lets the old version finish what it started, then closes it. */
  private retire (old: GatewayVersion): void {
    const deadline = Date.now() + durationMs(this.loaded.config.limits.drainTimeout)
    const p = (async () => {
      while (old.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
      if (old.inFlight > 0) this.log.warn({ version: old.version, inFlight: old.inFlight }, 'drain timeout: closing a version with requests in flight')
      await old.close().catch((err: unknown) => { this.log.error({ err }, 'closing an old version failed') })
    })()
    this.retiring.add(p)
    void p.finally(() => this.retiring.delete(p))
  }

  private async bind (server: Server, address: string, port: number): Promise<void> {
    server.listen(port, address)
    try {
      await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw err })])
    } catch (cause) {
      throw fastmeshError('LISTEN', [`${address}:${port}`, (cause as Error).message], cause)
    }
  }

  /** Graceful stop: refuse new connections, drain in-flight requests, close everything. */
  async stop (): Promise<void> {
    if (this.draining) return
    this.draining = true
    this.watcher?.close()
    await this.options.kv?.close()
    const server = this.httpServer
    if (server !== undefined) {
      const closed = new Promise<void>((r) => { server.close(() => { r() }) })
      server.closeIdleConnections()
      const deadline = Date.now() + durationMs(this.loaded.config.limits.drainTimeout)
      while ((this.current?.inFlight ?? 0) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
      server.closeAllConnections()
      await closed
    }
    await Promise.all(this.retiring)
    await this.deregisterFromConsul()
    await this.current?.close()
    await this.admin?.close()
    await this.services.close()
    await this.discovery.close()
    this.log.info('fastmesh gateway stopped')
  }

  /** What this gateway registers in Consul: its configured local services and itself. */
  private registrations (): ServiceRegistration[] {
    const c = this.loaded.config
    const consul = c.discovery.consul
    if (consul === undefined) return []
    const regs: ServiceRegistration[] = [...consul.register]
    if (consul.registerSelf) {
      const http = this.httpAddress
      const admin = this.adminAddress
      const adminHost = admin.address === '0.0.0.0' || admin.address === '::' ? '127.0.0.1' : admin.address
      regs.push({
        name: c.gateway.name,
        id: `${c.gateway.name}-${http.address}-${http.port}`,
        address: http.address,
        port: http.port,
        tags: ['fastmesh', c.gateway.mode],
        meta: { role: c.gateway.mode, admin: `${adminHost}:${admin.port}` },
        check: { http: `http://${adminHost.includes(':') ? `[${adminHost}]` : adminHost}:${admin.port}/ready`, interval: '5s', timeout: '2s', deregisterCriticalServiceAfter: '10m' }
      })
    }
    return regs
  }

  /** Registers in the background until it works: Consul being down must not stop traffic. */
  private async registerInConsul (attempt = 1): Promise<void> {
    const client = this.consul
    if (client === undefined || this.draining) return
    const pending = this.registrations()
    try {
      for (const r of pending) this.registered.add(await registerService(client, r))
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
    const shutdown = (signal: string): void => {
      this.log.info({ signal }, 'shutting down: draining in-flight requests')
      this.stop().then(() => { this.log.flush(); process.exit(0) }, (err: unknown) => {
        this.log.error({ err }, 'shutdown failed')
        this.log.flush()
        process.exit(1)
      })
    }
    process.once('SIGTERM', () => { shutdown('SIGTERM') })
    process.once('SIGINT', () => { shutdown('SIGINT') })
  }
}
