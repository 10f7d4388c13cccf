// Discovery from Consul's catalog. One CatalogFeed per datacenter (two blocking queries,
// however many services are watched) says what changed; each watched service touched is then
// re-read with one plain query, a few at a time. When Consul cannot be reached, the last known
// endpoints keep serving and the snapshots say they are stale.
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { Discovery, Endpoint, HealthStatus, ServiceSnapshot, SnapshotListener, WatchOptions } from '../types.js'
import { backoffDelay } from './blocking-loop.js'
import { CatalogFeed, type CatalogChange } from './catalog-feed.js'
import { CATALOG_READ_CONNECTIONS, type ConsulClient, type ConsulHealthEntry } from './client.js'

export interface ConsulDiscoveryOptions {
  readonly client: ConsulClient
  readonly log: Logger
  /** Also route to instances whose worst check is `warning`. */
  readonly includeWarning: boolean
  /** Blocking wait, e.g. `30s`. */
  readonly wait: string
  readonly minIntervalMs?: number
  readonly backoffMaxMs?: number
  /**
   * Least time between two full re-reads of every watched service, which follow a move of the
   * service table that the changed names do not explain (default 5 s).
   */
  readonly resyncIntervalMs?: number
}

/** Re-reads in flight at most: with the feed's two queries, the agent connections discovery holds. */
const READS_IN_FLIGHT = CATALOG_READ_CONNECTIONS

interface ServiceWatch {
  readonly key: string
  readonly service: string
  readonly datacenter: string | undefined
  readonly connect: boolean
  readonly feed: DatacenterFeed
  snapshot: ServiceSnapshot | undefined
  lastError: string | undefined
  listeners: number
  /** Catalog services whose checks decide it: itself, or the proxies in front of it (connect). */
  names: ReadonlySet<string>
  /** Nodes its instances run on (a node check touches them). */
  nodes: ReadonlySet<string>
  /** `again`: touched while being read, read once more after. */
  reading: 'idle' | 'queued' | 'reading'
  again: boolean
  failures: number
  retry: NodeJS.Timeout | undefined
  closed: boolean
}

interface DatacenterFeed {
  readonly feed: CatalogFeed
  readonly watches: Set<ServiceWatch>
  resync: NodeJS.Timeout | undefined
  lastResync: number
  failures: number
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

function watchKey (service: string, datacenter: string | undefined, connect: boolean): string {
  return `${connect ? 'connect:' : ''}${service}${datacenter !== undefined ? `@${datacenter}` : ''}`
}

function sameEndpoints (a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  return a.length === b.length && JSON.stringify(a) === JSON.stringify(b)
}


export class ConsulDiscovery implements Discovery {
  /** Failed Consul queries since start (metrics). */
  errors = 0
  /** Services re-read since start (each is one query to the agent). */
  reads = 0
  readonly kind = 'consul'
  private readonly watches = new Map<string, ServiceWatch>()
  private readonly feeds = new Map<string, DatacenterFeed>()
  private readonly events = new EventEmitter()
  /** Services a change touched, read before those a full re-read queued. */
  private readonly touched: ServiceWatch[] = []
  private readonly rereads: ServiceWatch[] = []
  private inFlight = 0
  private closed = false

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
      if (--w.listeners === 0) this.unwatch(w)
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
    this.closed = true
    for (const w of this.watches.values()) this.forget(w)
    this.watches.clear()
    this.touched.length = 0
    this.rereads.length = 0
    this.events.removeAllListeners()
    const feeds = [...this.feeds.values()]
    this.feeds.clear()
    for (const f of feeds) clearTimeout(f.resync)
    await Promise.all(feeds.map(async (f) => { await f.feed.stop() }))
    this.opts.client.close()
  }

  private watchFor (service: string, datacenter: string | undefined, connect: boolean): ServiceWatch {
    const key = watchKey(service, datacenter, connect)
    const existing = this.watches.get(key)
    if (existing !== undefined) return existing
    const feed = this.feedFor(datacenter)
    const w: ServiceWatch = {
      key,
      service,
      datacenter,
      connect,
      feed,
      snapshot: undefined,
      lastError: undefined,
      listeners: 0,
      names: connect ? new Set() : new Set([service]),
      nodes: new Set(),
      reading: 'idle',
      again: false,
      failures: 0,
      retry: undefined,
      closed: false
    }
    this.watches.set(key, w)
    feed.watches.add(w)
    // Read once the feed has its baseline: a change after the read then wakes the feed.
    void feed.feed.ready.then(() => { this.read(w) })
    return w
  }

  private unwatch (w: ServiceWatch): void {
    this.forget(w)
    this.watches.delete(w.key)
    const f = w.feed
    f.watches.delete(w)
    if (f.watches.size === 0) {
      clearTimeout(f.resync)
      this.feeds.delete(feedKey(w.datacenter))
      void f.feed.stop()
    }
  }

  private forget (w: ServiceWatch): void {
    w.closed = true
    clearTimeout(w.retry)
  }

  private feedFor (datacenter: string | undefined): DatacenterFeed {
    const key = feedKey(datacenter)
    const existing = this.feeds.get(key)
    if (existing !== undefined) return existing
    const log = this.opts.log
    const f: DatacenterFeed = {
      watches: new Set(),
      resync: undefined,
      lastResync: 0,
      failures: 0,
      feed: new CatalogFeed({
        client: this.opts.client,
        datacenter,
        wait: this.opts.wait,
        ...(this.opts.minIntervalMs !== undefined ? { minIntervalMs: this.opts.minIntervalMs } : {}),
        ...(this.opts.backoffMaxMs !== undefined ? { backoffMaxMs: this.opts.backoffMaxMs } : {}),
        onChange: (change) => { this.changed(f, change) },
        onError: (err, attempt) => {
          this.errors++
          f.failures++
          // The first failure and then every tenth: an outage must not flood the log.
          if (attempt === 1 || attempt % 10 === 0) log.warn({ datacenter, attempt, err: err.message }, 'Consul catalog watch failed; routing to the last known endpoints')
          for (const w of f.watches) this.markStale(w, err.message)
        },
        onRecover: () => {
          log.info({ datacenter }, 'Consul catalog watch resumed')
          // What changed meanwhile is in the feed's next diff; stale snapshots are read again.
          for (const w of f.watches) if (w.snapshot === undefined || w.snapshot.stale) this.read(w)
        }
      })
    }
    this.feeds.set(key, f)
    f.feed.start()
    return f
  }

  private changed (f: DatacenterFeed, change: CatalogChange): void {
    for (const w of f.watches) {
      if (touches(w.names, change.services) || touches(w.nodes, change.nodes) || touches(w.names, change.listed) ||
        // A new proxy name in front of the service shows only as a new catalog entry.
        (w.connect && change.listed.size > 0)) this.read(w)
    }
    if (change.serviceTableMoved) this.scheduleResync(f)
  }

  /**
   * Every watched service read again, at most once per `resyncIntervalMs` and a second after
   * the move (registrations come in bursts): what a move of the service table changed is not
   * in any list Consul offers, short of one query per service.
   */
  private scheduleResync (f: DatacenterFeed): void {
    if (f.resync !== undefined) return
    const interval = this.opts.resyncIntervalMs ?? 5000
    const delay = Math.max(Math.min(1000, interval), f.lastResync + interval - Date.now())
    f.resync = setTimeout(() => {
      f.resync = undefined
      f.lastResync = Date.now()
      for (const w of f.watches) this.read(w, false)
    }, delay)
    f.resync.unref()
  }

  /**
   * Queues one plain query for the service (once, however often it is touched meanwhile);
   * `touched`: a change named it, so it goes before a full re-read's queue.
   */
  private read (w: ServiceWatch, touched = true): void {
    if (w.closed || this.closed) return
    if (w.reading === 'reading') {
      w.again = true
      return
    }
    clearTimeout(w.retry)
    w.retry = undefined
    // Queued already: a touched one is queued again in front; the later entry is skipped.
    if (w.reading === 'queued' && !touched) return
    w.reading = 'queued'
    ;(touched ? this.touched : this.rereads).push(w)
    this.drain()
  }

  private drain (): void {
    while (this.inFlight < READS_IN_FLIGHT) {
      const w = this.touched.shift() ?? this.rereads.shift()
      if (w === undefined) return
      if (w.reading !== 'queued') continue
      w.reading = 'reading'
      this.inFlight++
      void this.fetch(w).finally(() => {
        this.inFlight--
        w.reading = 'idle'
        if (w.again) {
          w.again = false
          this.read(w)
        }
        this.drain()
      })
    }
  }

  private async fetch (w: ServiceWatch): Promise<void> {
    if (w.closed) return
    this.reads++
    let entries: ConsulHealthEntry[]
    try {
      const path = `/health/${w.connect ? 'connect' : 'service'}/${encodeURIComponent(w.service)}`
      const r = await this.opts.client.agentRequest<ConsulHealthEntry[] | null>('GET', path, { catalogRead: true, ...(w.datacenter !== undefined ? { query: { dc: w.datacenter } } : {}) })
      entries = r.data ?? []
    } catch (err) {
      if (w.closed) return
      this.errors++
      w.failures++
      this.markStale(w, (err as Error).message)
      if (w.failures === 1) this.opts.log.warn({ service: w.service, datacenter: w.datacenter, err: (err as Error).message }, 'Consul read of a service failed; routing to the last known endpoints')
      // While the feed itself fails, its recovery reads every stale service again.
      if (w.feed.feed.healthy) {
        w.retry = setTimeout(() => { this.read(w) }, backoffDelay(w.failures, 250, this.opts.backoffMaxMs ?? 30_000, Math.random))
        w.retry.unref()
      }
      return
    }
    if (w.closed) return
    if (w.failures > 0) this.opts.log.info({ service: w.service, datacenter: w.datacenter }, 'Consul read of a service succeeded again')
    w.failures = 0
    w.lastError = undefined
    w.nodes = new Set(entries.map((e) => e.Node.Node))
    if (w.connect) w.names = new Set(entries.map((e) => e.Service.Service))
    const endpoints = endpointsFromHealth(w.service, entries)
    const prev = w.snapshot
    if (prev !== undefined && !prev.stale && sameEndpoints(prev.endpoints, endpoints)) return
    this.publish(w, { service: w.service, endpoints: Object.freeze(endpoints), stale: false, updatedAt: Date.now(), ...(w.datacenter !== undefined ? { datacenter: w.datacenter } : {}) })
  }

  private markStale (w: ServiceWatch, error: string): void {
    w.lastError = error
    const prev = w.snapshot
    if (prev !== undefined && !prev.stale) this.publish(w, { ...prev, stale: true, error })
    // Never answered: say so with an empty, stale snapshot, so callers waiting for a first
    // answer get a 503 at once instead of waiting on every request.
    if (prev === undefined) this.publish(w, { service: w.service, endpoints: Object.freeze([]), stale: true, updatedAt: Date.now(), error, ...(w.datacenter !== undefined ? { datacenter: w.datacenter } : {}) })
  }

  private publish (w: ServiceWatch, snapshot: ServiceSnapshot): void {
    w.snapshot = Object.freeze(snapshot)
    this.events.emit(w.key, w.snapshot)
  }
}

function feedKey (datacenter: string | undefined): string {
  return datacenter ?? ''
}

function touches (mine: ReadonlySet<string>, changed: ReadonlySet<string>): boolean {
  if (changed.size === 0 || mine.size === 0) return false
  const [small, large] = mine.size <= changed.size ? [mine, changed] : [changed, mine]
  for (const name of small) if (large.has(name)) return true
  return false
}
