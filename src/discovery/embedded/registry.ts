// The embedded registry: a Discovery served from config plus runtime registrations
// (admin API), with active HTTP health checks standing in for Consul's checks.
import { EventEmitter } from 'node:events'
import { Agent, request } from 'undici'
import type { Logger } from 'pino'
import type { Discovery, Endpoint, HealthStatus, ServiceSnapshot, SnapshotListener } from '../types.js'
import type { HealthCheckConfig, StaticEndpointConfig } from '../../config/schema.js'
import { durationMs } from '../../config/duration.js'

export interface EndpointRegistration {
  id?: string
  address: string
  port: number
  weight?: number
  tags?: string[]
  meta?: Record<string, string>
}

interface HealthCheckSettings {
  path: string
  intervalMs: number
  timeoutMs: number
  healthyThreshold: number
  unhealthyThreshold: number
}

interface EndpointState {
  endpoint: Endpoint
  successes: number
  failures: number
  timer?: NodeJS.Timeout
  /**
   * Bumped whenever the probe loop is restarted or stopped: a probe whose answer arrives
   * after that belongs to an ended loop and must neither record nor reschedule.
   */
  loop: number
}

interface ServiceState {
  name: string
  endpoints: Map<string, EndpointState>
  check?: HealthCheckSettings
  snapshot: ServiceSnapshot
}

export interface EmbeddedServiceInput {
  endpoints: readonly StaticEndpointConfig[]
  healthCheck?: HealthCheckConfig
}

function checkSettings (c: HealthCheckConfig | undefined): HealthCheckSettings | undefined {
  if (c === undefined) return undefined
  return {
    path: c.path,
    intervalMs: durationMs(c.interval),
    timeoutMs: durationMs(c.timeout),
    healthyThreshold: c.healthyThreshold,
    unhealthyThreshold: c.unhealthyThreshold
  }
}

function sameCheck (a: HealthCheckSettings | undefined, b: HealthCheckSettings | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

export class EmbeddedRegistry implements Discovery {
  readonly kind = 'embedded'
  private readonly servicesByName = new Map<string, ServiceState>()
  private readonly events = new EventEmitter()
  // Probes use their own small agent so they never compete with traffic pools.
  private readonly probeAgent = new Agent({ connections: 2, keepAliveTimeout: 10_000, connect: { timeout: 2_000 } })
  private closed = false
  private declared = new Set<string>()

  constructor (private readonly log: Logger) {
    this.events.setMaxListeners(0)
  }

  /** Makes the config's services and static endpoints current; runtime registrations stay. */
  applyConfig (services: Readonly<Record<string, EmbeddedServiceInput>>): void {
    this.declared = new Set(Object.keys(services))
    for (const [name, input] of Object.entries(services)) {
      const svc = this.service(name)
      const check = checkSettings(input.healthCheck)
      const checkChanged = !sameCheck(svc.check, check)
      // Unchanged settings keep their object: probes in flight compare against it.
      if (checkChanged) svc.check = check
      const wanted = new Map<string, StaticEndpointConfig>()
      for (const ep of input.endpoints) wanted.set(ep.id ?? `${ep.address}:${ep.port}`, ep)
      for (const [id, state] of svc.endpoints) {
        if (state.endpoint.origin === 'config' && !wanted.has(id)) this.removeEndpoint(svc, id)
      }
      for (const [id, ep] of wanted) {
        const cur = svc.endpoints.get(id)
        if (cur === undefined || cur.endpoint.address !== ep.address || cur.endpoint.port !== ep.port ||
            cur.endpoint.weight !== ep.weight || JSON.stringify(cur.endpoint.tags) !== JSON.stringify(ep.tags) ||
            JSON.stringify(cur.endpoint.meta) !== JSON.stringify(ep.meta)) {
          this.upsertEndpoint(svc, { ...ep, id }, 'config')
        }
      }
      if (checkChanged) {
        for (const state of svc.endpoints.values()) this.restartProbe(svc, state)
      }
      this.publish(svc)
    }
    // Services dropped from config keep only their runtime registrations.
    for (const svc of this.servicesByName.values()) {
      if (services[svc.name] !== undefined) continue
      for (const [id, state] of svc.endpoints) if (state.endpoint.origin === 'config') this.removeEndpoint(svc, id)
      if (svc.check !== undefined) {
        svc.check = undefined
        for (const state of svc.endpoints.values()) this.restartProbe(svc, state)
      }
      this.publish(svc)
    }
  }

  /** Runtime registration (admin API). Re-registering an id replaces it. */
  register (service: string, reg: EndpointRegistration): Endpoint {
    const svc = this.service(service)
    const id = reg.id ?? `${reg.address}:${reg.port}`
    const endpoint = this.upsertEndpoint(svc, {
      id,
      address: reg.address,
      port: reg.port,
      weight: reg.weight ?? 1,
      tags: reg.tags ?? [],
      meta: reg.meta ?? {}
    }, 'admin')
    this.publish(svc)
    return endpoint
  }

  /** Returns false when there was no such endpoint. */
  deregister (service: string, id: string): boolean {
    const svc = this.servicesByName.get(service)
    if (svc === undefined || !svc.endpoints.has(id)) return false
    this.removeEndpoint(svc, id)
    this.publish(svc)
    return true
  }

  isUsable (endpoint: Endpoint): boolean {
    return endpoint.health === 'passing'
  }

  /** Whether the registry serves `service` (declared in config or registered at run time). */
  has (service: string): boolean {
    const svc = this.servicesByName.get(service)
    return svc !== undefined && (svc.endpoints.size > 0 || this.declared.has(service))
  }

  watch (service: string, listener: SnapshotListener): () => void {
    const svc = this.service(service)
    this.events.on(service, listener)
    listener(svc.snapshot)
    return () => { this.events.off(service, listener) }
  }

  snapshot (service: string): ServiceSnapshot | undefined {
    return this.servicesByName.get(service)?.snapshot
  }

  services (): ServiceSnapshot[] {
    return [...this.servicesByName.values()].map((s) => s.snapshot)
  }

  async close (): Promise<void> {
    this.closed = true
    for (const svc of this.servicesByName.values()) {
      for (const state of svc.endpoints.values()) this.stopProbe(state)
    }
    this.events.removeAllListeners()
    await this.probeAgent.close()
  }

  private service (name: string): ServiceState {
    let svc = this.servicesByName.get(name)
    if (svc === undefined) {
      svc = { name, endpoints: new Map(), snapshot: { service: name, endpoints: [], stale: false, updatedAt: Date.now() } }
      this.servicesByName.set(name, svc)
    }
    return svc
  }

  private upsertEndpoint (svc: ServiceState, ep: Required<Omit<StaticEndpointConfig, 'id'>> & { id: string }, origin: string): Endpoint {
    const prev = svc.endpoints.get(ep.id)
    if (prev !== undefined) this.stopProbe(prev)
    // With a health check, a new endpoint waits for its first passing probe (as Envoy does);
    // an endpoint whose address did not change keeps the health it had.
    const keepHealth = prev !== undefined && prev.endpoint.address === ep.address && prev.endpoint.port === ep.port
    const health: HealthStatus = keepHealth ? prev.endpoint.health : (svc.check !== undefined ? 'critical' : 'passing')
    const endpoint: Endpoint = {
      id: ep.id,
      service: svc.name,
      address: ep.address,
      port: ep.port,
      weight: ep.weight,
      tags: Object.freeze([...ep.tags]),
      meta: Object.freeze({ ...ep.meta }),
      health,
      ...(health === 'critical' && !keepHealth ? { healthDetail: 'waiting for the first health check' } : {}),
      origin
    }
    const state: EndpointState = { endpoint, successes: 0, failures: 0, loop: 0 }
    svc.endpoints.set(ep.id, state)
    this.restartProbe(svc, state)
    return endpoint
  }

  private removeEndpoint (svc: ServiceState, id: string): void {
    const state = svc.endpoints.get(id)
    if (state === undefined) return
    this.stopProbe(state)
    svc.endpoints.delete(id)
  }

  /** Ends the endpoint's probe loop, including a probe in flight (its answer is dropped). */
  private stopProbe (state: EndpointState): void {
    clearTimeout(state.timer)
    state.timer = undefined
    state.loop++
  }

  private restartProbe (svc: ServiceState, state: EndpointState): void {
    this.stopProbe(state)
    state.successes = 0
    state.failures = 0
    if (svc.check === undefined) {
      if (state.endpoint.health !== 'passing') this.setHealth(svc, state, 'passing', undefined)
      return
    }
    this.scheduleProbe(svc, state, state.loop, 0)
  }

  private scheduleProbe (svc: ServiceState, state: EndpointState, loop: number, delayMs: number): void {
    state.timer = setTimeout(() => {
      state.timer = undefined
      this.probe(svc, state, loop).catch((err: unknown) => {
        // Never silent, and never the end of the loop: a failure here is a bug to see in the log.
        this.log.error({ err, service: svc.name, endpoint: state.endpoint.id }, 'health probe failed unexpectedly; probing goes on')
        const check = svc.check
        if (state.loop === loop && state.timer === undefined && !this.closed && check !== undefined) this.scheduleProbe(svc, state, loop, check.intervalMs)
      })
    }, delayMs)
    state.timer.unref()
  }

  private async probe (svc: ServiceState, state: EndpointState, loop: number): Promise<void> {
    const check = svc.check
    if (check === undefined || this.closed || state.loop !== loop) return
    const { address, port } = state.endpoint
    const host = address.includes(':') ? `[${address}]` : address
    let ok = false
    let detail: string | undefined
    try {
      const res = await request(`http://${host}:${port}${check.path}`, {
        dispatcher: this.probeAgent,
        headersTimeout: check.timeoutMs,
        bodyTimeout: check.timeoutMs,
        signal: AbortSignal.timeout(check.timeoutMs),
        headers: { 'user-agent': 'fastmesh-health-check' }
      })
      await res.body.dump()
      ok = res.statusCode >= 200 && res.statusCode < 400
      if (!ok) detail = `GET ${check.path} answered ${res.statusCode}`
    } catch (err) {
      detail = `GET ${check.path} failed: ${(err as Error).message}`
    }
    // Only a restart or stop of this loop (new settings, endpoint replaced or removed,
    // shutdown) ends it; a reload that changed nothing for this endpoint does not.
    if (this.closed || state.loop !== loop) return
    // The next probe is due whatever recording this answer does; a little jitter keeps
    // probes of many endpoints from lining up.
    this.scheduleProbe(svc, state, loop, check.intervalMs * (0.9 + Math.random() * 0.2))
    if (ok) {
      state.failures = 0
      state.successes++
      if (state.endpoint.health !== 'passing' && state.successes >= check.healthyThreshold) this.setHealth(svc, state, 'passing', undefined)
    } else {
      state.successes = 0
      state.failures++
      if (state.endpoint.health === 'passing' && state.failures >= check.unhealthyThreshold) this.setHealth(svc, state, 'critical', detail)
      else if (state.endpoint.health !== 'passing' && state.endpoint.healthDetail !== detail) {
        // Published, so the admin API shows why the endpoint is still out (not "waiting for the first health check").
        state.endpoint = { ...state.endpoint, healthDetail: detail }
        this.publish(svc)
      }
    }
  }

  private setHealth (svc: ServiceState, state: EndpointState, health: HealthStatus, detail: string | undefined): void {
    const { healthDetail: _old, ...rest } = state.endpoint
    state.endpoint = { ...rest, health, ...(detail !== undefined ? { healthDetail: detail } : {}) }
    this.log.info({ service: svc.name, endpoint: state.endpoint.id, health, detail }, 'endpoint health changed')
    this.publish(svc)
  }

  private publish (svc: ServiceState): void {
    const endpoints = Object.freeze([...svc.endpoints.values()].map((s) => s.endpoint))
    const prev = svc.snapshot.endpoints
    if (prev.length === endpoints.length && prev.every((e, i) => e === endpoints[i])) return
    svc.snapshot = Object.freeze({ service: svc.name, endpoints, stale: false, updatedAt: Date.now() })
    this.events.emit(svc.name, svc.snapshot)
  }
}
