// Consul registration of a gateway: the configured services, a node's local services with
// their connect proxies, and the gateway itself; retried in the background until it works,
// and removed at stop.
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { reachableAddress } from '../config/addresses.js'
import type { FastmeshConfig } from '../config/validate.js'
import type { ConsulClient } from '../discovery/consul/client.js'
import { deregisterService, registerConnectProxy, registerService } from '../discovery/consul/registration.js'

export interface ConsulRegistrationOptions {
  readonly client: ConsulClient | undefined
  /** The config in effect (registrations read only restart-only keys). */
  readonly config: () => FastmeshConfig
  readonly log: Logger
  /** Where a listener is bound (`inbound`), once bound. */
  readonly listenerAddress: (name: string) => AddressInfo | undefined
  /** The client-facing listener: edge http, or the node's outbound. */
  readonly httpAddress: () => AddressInfo
  /** The admin API as bound, and as other hosts reach it (`meta.admin`). */
  readonly admin: () => { readonly address: AddressInfo, readonly advertised: string }
}

export class ConsulRegistration {
  /** Consul service ids this gateway registered and removes on stop. */
  private readonly registered = new Set<string>()
  private registrationTimer: NodeJS.Timeout | undefined
  private halted = false

  constructor (private readonly options: ConsulRegistrationOptions) {}

  /** Something is registered now (and `deregister()` would remove it). */
  get any (): boolean {
    return this.registered.size > 0
  }

  /** The address other gateways use for the inbound listener. */
  private advertiseAddress (): string {
    const inbound = this.options.config().listeners.inbound
    return inbound.advertiseAddress ?? reachableAddress(inbound.address)
  }

  /** What this gateway registers in Consul: configured services, local services with their proxies, itself. */
  private registrations (): Array<() => Promise<string>> {
    const c = this.options.config()
    const consul = c.discovery.consul
    const client = this.options.client
    if (consul === undefined || client === undefined) return []
    const regs: Array<() => Promise<string>> = consul.register.map((r) => async () => await registerService(client, r))
    const node = c.gateway.mode === 'node'
    const inbound = this.options.listenerAddress('inbound')
    const advertise = this.advertiseAddress()
    for (const local of node ? c.localServices : []) {
      const id = `${local.name}-${c.gateway.name}`
      regs.push(async () => await registerService(client, { name: local.name, id, address: local.address, port: local.port, tags: local.tags, meta: { ...local.meta, gateway: c.gateway.name }, ...(local.check !== undefined ? { check: local.check } : {}) }))
      if (inbound !== undefined) {
        regs.push(async () => await registerConnectProxy(client, { destination: local.name, destinationId: id, address: advertise, port: inbound.port, localAddress: local.address, localPort: local.port, gateway: c.gateway.name, tags: local.tags, meta: local.meta }))
      }
    }
    if (consul.registerSelf) {
      const { address: admin, advertised } = this.options.admin()
      const adminHost = admin.address === '0.0.0.0' || admin.address === '::' ? '127.0.0.1' : admin.address
      // Node gateways are reached on their inbound listener; the edge on its http listener.
      const self = node && inbound !== undefined ? { address: advertise, port: inbound.port } : { address: this.options.httpAddress().address, port: this.options.httpAddress().port }
      const check = node && inbound !== undefined
        ? { tcp: `${advertise}:${inbound.port}`, interval: '5s', timeout: '2s', deregisterCriticalServiceAfter: '10m' }
        : { http: `http://${adminHost.includes(':') ? `[${adminHost}]` : adminHost}:${admin.port}/ready`, interval: '5s', timeout: '2s', deregisterCriticalServiceAfter: '10m' }
      regs.push(async () => await registerService(client, {
        name: c.gateway.name,
        id: `${c.gateway.name}-${self.address}-${self.port}`,
        address: self.address,
        port: self.port,
        tags: ['fastmesh', c.gateway.mode],
        meta: { role: c.gateway.mode, admin: advertised },
        check
      }))
    }
    return regs
  }

  /** Registers in the background until it works: Consul being down must not stop traffic. */
  async register (attempt = 1): Promise<void> {
    const client = this.options.client
    if (client === undefined || this.halted) return
    const pending = this.registrations()
    try {
      for (const register of pending) this.registered.add(await register())
      if (pending.length > 0) this.options.log.info({ services: [...this.registered] }, 'registered in Consul')
    } catch (err) {
      const retryIn = Math.min(30_000, 500 * 2 ** attempt)
      this.options.log.warn({ err: (err as Error).message, retryIn }, 'Consul registration failed; retrying')
      this.registrationTimer = setTimeout(() => { void this.register(attempt + 1) }, retryIn)
      this.registrationTimer.unref()
    }
  }

  /** No attempt starts from now on: the gateway is stopping. */
  halt (): void {
    this.halted = true
  }

  /** Removes what was registered; a failure is logged, and the rest still go. */
  async deregister (): Promise<void> {
    clearTimeout(this.registrationTimer)
    const client = this.options.client
    if (client === undefined) return
    for (const id of this.registered) {
      try {
        await deregisterService(client, id)
      } catch (err) {
        this.options.log.warn({ id, err: (err as Error).message }, 'Consul deregistration failed')
      }
    }
    if (this.registered.size > 0) this.options.log.info({ services: [...this.registered] }, 'deregistered from Consul')
    this.registered.clear()
  }
}
