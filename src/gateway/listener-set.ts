// The gateway's listening sockets, all but admin's: binds the ones its mode asks for (edge
// http; node outbound, per-upstream and inbound), says where each is bound, and closes them
// gracefully at stop.
import type { Server as NetServer, AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { MeshContext } from './app.js'
import { bind, httpListener, inboundListener, type CurrentVersion, type InboundListener, type ListenerLimits } from './listeners.js'
import type { IdentityProvider } from '../identity/types.js'
import type { FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'

export interface ListenerSetOptions {
  readonly config: FastmeshConfig
  /** The version each request goes to. */
  readonly current: CurrentVersion
  /** Present when mesh.mtls is not `off`, with the identity whose changes refresh the inbound TLS context. */
  readonly mesh?: { readonly context: MeshContext, readonly identity: IdentityProvider } | undefined
  readonly log: Logger
}

export class ListenerSet {
  /** Every listening socket but admin: edge http, or node outbound, per-upstream and inbound. */
  private readonly servers = new Map<string, NetServer>()
  private inbound: InboundListener | undefined

  /** Binds the listeners of the config's mode, one after the other; a bind failure throws (those bound stay, for `close`). */
  async open (opts: ListenerSetOptions): Promise<void> {
    const { config, current } = opts
    const limits: ListenerLimits = {
      maxHeaderBytes: config.limits.maxHeaderBytes,
      keepAliveTimeoutMs: durationMs(config.limits.keepAliveTimeout),
      headerTimeoutMs: durationMs(config.limits.headerTimeout),
      requestTimeoutMs: durationMs(config.limits.requestTimeout)
    }
    const l = config.listeners
    if (config.gateway.mode === 'edge') {
      await this.listen('http', httpListener(limits, current, undefined), l.http.address, l.http.port)
      return
    }
    await this.listen('outbound', httpListener(limits, current, { kind: 'outbound', caller: undefined }), l.outbound.address, l.outbound.port)
    for (const local of config.localServices) {
      for (const up of local.upstreams) {
        await this.listen(`upstream:${local.name}:${up.service}`, httpListener(limits, current, { kind: 'upstream', caller: local.name, service: up.service }), up.address, up.port)
      }
    }
    const mesh = opts.mesh
    if (mesh !== undefined) {
      const selfIdentity = mesh.context.selfIdentity
      const inbound = inboundListener({ limits, tls: mesh.context.tls, selfIdentity, mtls: mesh.context.mtls }, current)
      this.inbound = inbound
      // Rotated roots or a new gateway leaf apply to the default context of new connections.
      mesh.identity.onChange((c) => {
        if (c.kind === 'roots' || c.service === selfIdentity) {
          try { inbound.refreshDefaultContext() } catch (err) { opts.log.error({ err }, 'refreshing the inbound TLS context failed') }
        }
      })
      await this.listen('inbound', inbound.server, l.inbound.address, l.inbound.port)
    }
  }

  private async listen (name: string, server: NetServer, address: string, port: number): Promise<void> {
    await bind(server, address, port, name)
    this.servers.set(name, server)
  }

  /** At least one listener is bound and every one still listens. */
  get listening (): boolean {
    return this.servers.size > 0 && [...this.servers.values()].every((s) => s.listening)
  }

  /** Where the client-facing listener is bound: edge http, or the node's shared outbound port. */
  get httpAddress (): AddressInfo {
    return (this.servers.get('http') ?? this.servers.get('outbound'))!.address() as AddressInfo
  }

  /** Every bound listener, by name. */
  get bound (): Record<string, AddressInfo> {
    return Object.fromEntries([...this.servers].map(([name, server]) => [name, server.address() as AddressInfo]))
  }

  /** Where a named listener is bound (`http`, `outbound`, `inbound`, `upstream:<caller>:<service>`). */
  address (name: string): AddressInfo | undefined {
    return this.servers.get(name)?.address() as AddressInfo | undefined
  }

  /**
   * Stops accepting connections and closes idle ones; requests in progress go on. Resolves
   * when every listener has closed, which waits for `closeAllConnections` or their end.
   */
  stopAccepting (): Promise<void> {
    const servers = [...this.servers.values()]
    const closed = servers.map(async (server) => { await new Promise<void>((r) => { server.close(() => { r() }) }) })
    for (const server of servers) (server as NetServer & { closeIdleConnections?: () => void }).closeIdleConnections?.()
    return Promise.all(closed).then(() => undefined)
  }

  /** Ends every connection still open, busy or not (after the drain time). */
  closeAllConnections (): void {
    for (const server of this.servers.values()) (server as NetServer & { closeAllConnections?: () => void }).closeAllConnections?.()
    this.inbound?.closeAllConnections()
  }
}
