// Discovery from Consul's catalog: one blocking watch of /v1/health/service/<name> per
// service a route uses. When Consul cannot be reached, the last known endpoints keep
// serving and the snapshot says it is stale.
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { Discovery, Endpoint, HealthStatus, ServiceSnapshot, SnapshotListener, WatchOptions } from '../types.js'
import { BlockingLoop } from './blocking-loop.js'
import { Cancellable, ConsulClient, type ConsulHealthEntry } from './client.js'
import { waitMs } from '../../config/consul-wait.js'

export interface ConsulDiscoveryOptions {
  readonly client: ConsulClient
  readonly log: Logger
  /** Also route to instances whose worst check is `warning`. */
  readonly includeWarning: boolean
  /** Blocking wait, e.g. `30s`. */
  readonly wait: string
  readonly minIntervalMs?: number
  readonly backoffMaxMs?: number
}

interface ServiceWatch {
  readonly key: string
  readonly service: string
  readonly datacenter: string | undefined
  readonly loop: BlockingLoop<ConsulHealthEntry[]>
  snapshot: ServiceSnapshot | undefined
  lastError: string | undefined
  listeners: number
}

/** The worst status among an instance's checks (no checks: passing, as Consul says). */
function aggregate (checks: ConsulHealthEntry['Checks']): { health: HealthStatus, detail?: string } {
  let health: HealthStatus = 'passing'
  let detail: string | undefined
  for (const c of checks) {
    if (c.Status === 'critical' || c.Status === 'maintenance') {
      return { health: 'critical', detail: `${c.Name ?? c.CheckID}: ${c.Status}${c.Output !== undefined && c.Output !== '' ? ` (${c.Output.trim().slice(0, 200)})` : ''}` }
    }
    if (c.Status === 'warning' && health === 'passing') {
      health = 'warning'
      detail = `${c.Name ?? c.CheckID}: warning`
    }
  }
  return detail !== undefined ? { health, detail } : { health }
}

export function endpointsFromHealth (service: string, entries: readonly ConsulHealthEntry[]): Endpoint[] {
  return entries.map((e) => {
    const { health, detail } = aggregate(e.Checks ?? [])
    const weights = e.Service.Weights ?? { Passing: 1, Warning: 1 }
    const ep: Endpoint = {
      id: `${e.Node.Node}/${e.Service.ID}`,
      service,
      // Service address when set, else the node's (Consul's own rule).
      address: e.Service.Address !== '' ? e.Service.Address : e.Node.Address,
      port: e.Service.Port,
      weight: Math.max(1, health === 'warning' ? weights.Warning : weights.Passing),
      tags: Object.freeze([...(e.Service.Tags ?? [])]),
      meta: Object.freeze({ ...(e.Service.Meta ?? {}) }),
      health,
      ...(detail !== undefined ? { healthDetail: detail } : {}),
      origin: 'consul',
      node: e.Node.Node
    }
    return ep
  }).sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
}

/** `wait` shortened by up to a quarter, at random, in whole milliseconds. */
export function jitteredWait (wait: string, random: () => number = Math.random): string {
  return `${Math.max(1000, Math.round(waitMs(wait) * (0.75 + random() * 0.25)))}ms`
}

function watchKey (service: string, datacenter: string | undefined, connect: boolean): string {
  return `${connect ? 'connect:' : ''}${service}${datacenter !== undefined ? `@${datacenter}` : ''}`
}

function sameEndpoints (a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  return a.length === b.length && JSON.stringify(a) === JSON.stringify(b)
}

export class ConsulDiscovery implements Discovery {
  /** Failed Consul queries since start, every watch (metrics). */
  errors = 0
  readonly kind = 'consul'
  private readonly watches = new Map<string, ServiceWatch>()
  private readonly events = new EventEmitter()
  private warnedBudget = false

  constructor (private readonly opts: ConsulDiscoveryOptions) {
    this.events.setMaxListeners(0)
  }

  isUsable (endpoint: Endpoint): boolean {
    return endpoint.health === 'passing' || (this.opts.includeWarning && endpoint.health === 'warning')
  }

  watch (service: string, listener: SnapshotListener, options: WatchOptions = {}): () => void {
    const w = this.watchFor(service, options.datacenter ?? this.opts.client.settings.datacenter, options.connect === true)
    w.listeners++
    this.events.on(w.key, listener)
    if (w.snapshot !== undefined) listener(w.snapshot)
    return () => {
      this.events.off(w.key, listener)
      if (--w.listeners === 0) {
        this.watches.delete(w.key)
        void w.loop.stop()
      }
    }
  }

  snapshot (service: string, options: WatchOptions = {}): ServiceSnapshot | undefined {
    const dc = options.datacenter ?? this.opts.client.settings.datacenter
    return this.watches.get(watchKey(service, dc, options.connect === true))?.snapshot
  }

  services (): ServiceSnapshot[] {
    return [...this.watches.values()].map((w) => w.snapshot ?? { service: w.service, endpoints: [], stale: true, updatedAt: 0, ...(w.lastError !== undefined ? { error: w.lastError } : {}) })
  }

  async close (): Promise<void> {
    const all = [...this.watches.values()]
    this.watches.clear()
    this.events.removeAllListeners()
    await Promise.all(all.map(async (w) => { await w.loop.stop() }))
    this.opts.client.close()
  }

  private watchFor (service: string, datacenter: string | undefined, connect: boolean): ServiceWatch {
    const key = watchKey(service, datacenter, connect)
    const existing = this.watches.get(key)
    if (existing !== undefined) return existing
    const log = this.opts.log
    const budget = this.opts.client.settings.maxConnections
    if (this.watches.size + 1 > budget * 0.75 && !this.warnedBudget) {
      this.warnedBudget = true
      log.warn({ watches: this.watches.size + 1, maxConnections: budget }, 'more Consul watches than connections to the agent: some endpoint updates wait for a free connection; raise discovery.consul.maxConnections and the agent\'s limits.http_max_conns_per_client')
    }
    const w: ServiceWatch = {
      key,
      service,
      datacenter,
      snapshot: undefined,
      lastError: undefined,
      listeners: 0,
      loop: new BlockingLoop<ConsulHealthEntry[]>({
        makeContext: () => new Cancellable(),
        fetch: async (index, ctx) => {
          // Each query waits 75-100% of `wait`: watches started together must not all
          // re-block in the same instant every `wait` (a CPU spike seen at 1,000 services).
          const wait = jitteredWait(this.opts.wait)
          return connect
            ? await this.opts.client.agentRequest<ConsulHealthEntry[]>('GET', `/health/connect/${encodeURIComponent(service)}`, { index, wait, ctx, ...(datacenter !== undefined ? { query: { dc: datacenter } } : {}) }).then((r) => ({ index: r.index, data: r.data ?? [] }))
            : await this.opts.client.healthService(service, index, wait, datacenter, ctx)
        },
        minIntervalMs: this.opts.minIntervalMs ?? 100,
        backoffMaxMs: this.opts.backoffMaxMs ?? 30_000,
        onChange: (entries) => {
          const endpoints = endpointsFromHealth(service, entries)
          w.lastError = undefined
          const prev = w.snapshot
          if (prev !== undefined && !prev.stale && sameEndpoints(prev.endpoints, endpoints)) return
          this.publish(w, { service, endpoints: Object.freeze(endpoints), stale: false, updatedAt: Date.now(), ...(datacenter !== undefined ? { datacenter } : {}) })
        },
        onError: (err, attempt, retryInMs) => {
          w.lastError = err.message
          this.errors++
          // The first failure and then every tenth: an outage must not flood the log.
          if (attempt === 1 || attempt % 10 === 0) log.warn({ service, datacenter, attempt, retryInMs, err: err.message }, 'Consul watch failed; routing to the last known endpoints')
          const prev = w.snapshot
          if (prev !== undefined && !prev.stale) this.publish(w, { ...prev, stale: true, error: err.message })
          // Never answered: say so with an empty, stale snapshot, so callers waiting for a
          // first answer get a 503 at once instead of waiting on every request.
          if (prev === undefined) this.publish(w, { service, endpoints: Object.freeze([]), stale: true, updatedAt: Date.now(), error: err.message })
        },
        onRecover: () => { log.info({ service, datacenter }, 'Consul watch resumed') }
      })
    }
    this.watches.set(key, w)
    w.loop.start()
    return w
  }

  private publish (w: ServiceWatch, snapshot: ServiceSnapshot): void {
    w.snapshot = Object.freeze(snapshot)
    this.events.emit(w.key, w.snapshot)
  }
}
