// Discovery from Consul's catalog, in one of two ways per datacenter:
//   service: one blocking query per watched service (a change is followed in a few ms, but
//            each query holds an agent connection, and a default agent allows 200 per client);
//   catalog: one CatalogFeed (two blocking queries, however many services) says what changed,
//            and each watched service touched is read again with one plain query, a few at a time.
// `auto` watches per service while the services fit the connection budget, and moves the
// datacenter to the catalog feed from the first one that does not. When Consul cannot be
// reached, the last known endpoints keep serving and the snapshots say they are stale.
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { Discovery, Endpoint, HealthStatus, ServiceSnapshot, SnapshotListener, WatchOptions } from '../types.js'
import { backoffDelay, BlockingLoop } from './blocking-loop.js'
import { CatalogFeed, jitteredWait, type CatalogChange } from './catalog-feed.js'
import type { Agent } from 'undici'
import { Cancellable, type ConsulClient, type ConsulHealthEntry } from './client.js'

export type ConsulWatchMode = 'auto' | 'service' | 'catalog'

export interface ConsulDiscoveryOptions {
  readonly client: ConsulClient
  readonly log: Logger
  /** Also route to instances whose worst check is `warning`. */
  readonly includeWarning: boolean
  /** Blocking wait, e.g. `30s`. */
  readonly wait: string
  /** Default `auto`. */
  readonly mode?: ConsulWatchMode
  readonly minIntervalMs?: number
  readonly backoffMaxMs?: number
  /**
   * Least time between two full re-reads of every watched service, which follow a move of the
   * service table that the changed names do not explain (default 5 s).
   */
  readonly resyncIntervalMs?: number
}

/** Plain reads in flight at most (catalog mode), each on a connection of its own. */
const READS_IN_FLIGHT = 6

interface ServiceWatch {
  readonly key: string
  readonly service: string
  readonly datacenter: string | undefined
  readonly connect: boolean
  readonly dc: DatacenterWatches
  snapshot: ServiceSnapshot | undefined
  lastError: string | undefined
  listeners: number
  /** Its own blocking query, while its datacenter is watched per service. */
  loop: BlockingLoop<ConsulHealthEntry[]> | undefined
  /** Catalog services whose checks decide it: itself, or the proxies in front of it (connect). */
  names: ReadonlySet<string>
  /** Nodes its instances run on (a node check touches them). */
  nodes: ReadonlySet<string>
  /** `again`: touched while being read, read once more after. */
  reading: 'idle' | 'queued' | 'reading'
  again: boolean
  /** Queued by a full re-read only (no change named it). */
  rereadOnly: boolean
  /** X-Consul-Index of the last plain read (the service's own index in Consul). */
  index: bigint
  failures: number
  retry: NodeJS.Timeout | undefined
  closed: boolean
}

/** The watches of one datacenter, and the catalog feed once it follows them. */
interface DatacenterWatches {
  readonly datacenter: string | undefined
  readonly watches: Set<ServiceWatch>
  feed: CatalogFeed | undefined
  resync: NodeJS.Timeout | undefined
  lastResync: number
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
  readonly kind = 'consul'
  private readonly watches = new Map<string, ServiceWatch>()
  private readonly datacenters = new Map<string, DatacenterWatches>()
  private readonly events = new EventEmitter()
  /** Services a change touched, read before those a full re-read queued. */
  private readonly touched: ServiceWatch[] = []
  private readonly rereads: ServiceWatch[] = []
  private inFlight = 0
  private readConnections: Agent | undefined
  /** Services with a blocking query of their own (or about to have one), every datacenter. */
  private serviceLoops = 0
  /**
   * Services whose own query starts on the next turn of the event loop: a config version
   * watches its services all at once, and past the budget none of them should open one.
   */
  private loopsToStart: ServiceWatch[] = []
  private closed = false
  private warnedBudget = false

  constructor (private readonly opts: ConsulDiscoveryOptions) {
    this.events.setMaxListeners(0)
  }

  /** Blocking queries of their own that services may hold (`auto`). */
  get perServiceBudget (): number {
    return Math.max(0, this.opts.client.discoveryConnections - 8)
  }

  consulWatch (): Readonly<Record<string, 'service' | 'catalog'>> {
    const out: Record<string, 'service' | 'catalog'> = {}
    for (const dc of this.datacenters.values()) out[dc.datacenter ?? 'default'] = dc.feed !== undefined ? 'catalog' : 'service'
    return out
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
    const stopping: Array<Promise<void>> = []
    for (const w of this.watches.values()) {
      w.closed = true
      clearTimeout(w.retry)
      if (w.loop !== undefined) stopping.push(w.loop.stop())
    }
    this.watches.clear()
    this.touched.length = 0
    this.rereads.length = 0
    this.events.removeAllListeners()
    for (const dc of this.datacenters.values()) {
      clearTimeout(dc.resync)
      if (dc.feed !== undefined) stopping.push(dc.feed.stop())
    }
    this.datacenters.clear()
    await Promise.all(stopping)
    await this.readConnections?.close()
    this.opts.client.close()
  }

  private watchFor (service: string, datacenter: string | undefined, connect: boolean): ServiceWatch {
    const key = watchKey(service, datacenter, connect)
    const existing = this.watches.get(key)
    if (existing !== undefined) return existing
    const dc = this.datacenterFor(datacenter)
    const w: ServiceWatch = {
      key,
      service,
      datacenter,
      connect,
      dc,
      snapshot: undefined,
      lastError: undefined,
      listeners: 0,
      loop: undefined,
      names: connect ? new Set() : new Set([service]),
      nodes: new Set(),
      reading: 'idle',
      again: false,
      rereadOnly: false,
      index: 0n,
      failures: 0,
      retry: undefined,
      closed: false
    }
    this.watches.set(key, w)
    dc.watches.add(w)
    const mode = this.opts.mode ?? 'auto'
    if (dc.feed === undefined && (mode === 'catalog' || (mode === 'auto' && this.serviceLoops + 1 > this.perServiceBudget))) this.followCatalog(dc)
    if (dc.feed !== undefined) {
      // Read once the feed has its baseline: a change after the read then wakes the feed.
      const feed = dc.feed
      void feed.ready.then(() => { if (dc.feed === feed) this.read(w) })
    } else {
      this.serviceLoops++
      if (this.loopsToStart.push(w) === 1) setImmediate(() => { this.startLoops() })
    }
    return w
  }

  private startLoops (): void {
    const due = this.loopsToStart
    this.loopsToStart = []
    for (const w of due) {
      if (w.closed) continue
      // Its datacenter moved to the catalog feed meanwhile, which reads it.
      if (w.dc.feed !== undefined) {
        this.serviceLoops--
        continue
      }
      this.startLoop(w)
    }
  }

  private unwatch (w: ServiceWatch): void {
    w.closed = true
    clearTimeout(w.retry)
    this.stopLoop(w)
    this.watches.delete(w.key)
    const dc = w.dc
    dc.watches.delete(w)
    if (dc.watches.size === 0) {
      clearTimeout(dc.resync)
      this.datacenters.delete(dcKey(dc.datacenter))
      if (dc.feed !== undefined) void dc.feed.stop()
    }
  }

  private datacenterFor (datacenter: string | undefined): DatacenterWatches {
    const key = dcKey(datacenter)
    let dc = this.datacenters.get(key)
    if (dc === undefined) {
      dc = { datacenter, watches: new Set(), feed: undefined, resync: undefined, lastResync: 0 }
      this.datacenters.set(key, dc)
    }
    return dc
  }

  // --- per service -------------------------------------------------------------------------

  private startLoop (w: ServiceWatch): void {
    const log = this.opts.log
    const budget = this.perServiceBudget
    if (this.serviceLoops > budget && !this.warnedBudget) {
      this.warnedBudget = true
      log.warn({ watches: this.serviceLoops, budget }, 'more Consul watches than connections to the agent allow: some endpoint updates wait for a free connection; use discovery.consul.watch auto or catalog, or raise discovery.consul.maxConnections and the agent\'s limits.http_max_conns_per_client')
    }
    const path = `/health/${w.connect ? 'connect' : 'service'}/${encodeURIComponent(w.service)}`
    const query = w.datacenter !== undefined ? { query: { dc: w.datacenter } } : {}
    w.loop = new BlockingLoop<ConsulHealthEntry[]>({
      makeContext: () => new Cancellable(),
      fetch: async (index, ctx) => {
        // Each query waits 75-100% of `wait`: watches started together must not all
        // re-block in the same instant every `wait` (a CPU spike seen at 1,000 services).
        const r = await this.opts.client.agentRequest<ConsulHealthEntry[] | null>('GET', path, { index, wait: jitteredWait(this.opts.wait), ctx, ...query })
        return { index: r.index, data: r.data ?? [] }
      },
      minIntervalMs: this.opts.minIntervalMs ?? 100,
      backoffMaxMs: this.opts.backoffMaxMs ?? 30_000,
      onChange: (entries) => { this.apply(w, entries) },
      onError: (err, attempt, retryInMs) => {
        this.errors++
        // The first failure and then every tenth: an outage must not flood the log.
        if (attempt === 1 || attempt % 10 === 0) log.warn({ service: w.service, datacenter: w.datacenter, attempt, retryInMs, err: err.message }, 'Consul watch failed; routing to the last known endpoints')
        this.markStale(w, err.message)
      },
      onRecover: () => { log.info({ service: w.service, datacenter: w.datacenter }, 'Consul watch resumed') }
    })
    w.loop.start()
  }

  private stopLoop (w: ServiceWatch): void {
    if (w.loop === undefined) {
      // Not started yet: it still counts until startLoops drops it.
      const i = this.loopsToStart.indexOf(w)
      if (i >= 0) {
        this.loopsToStart.splice(i, 1)
        this.serviceLoops--
      }
      return
    }
    void w.loop.stop()
    w.loop = undefined
    this.serviceLoops--
  }

  // --- the whole catalog -------------------------------------------------------------------

  /**
   * From now on the datacenter's services follow the catalog feed. Their own queries keep
   * running until the feed has its baseline, then each service is read once and its query ends.
   */
  private followCatalog (dc: DatacenterWatches): void {
    const log = this.opts.log
    const datacenter = dc.datacenter
    const mode = this.opts.mode ?? 'auto'
    if (mode === 'auto') log.warn({ datacenter, watched: dc.watches.size, budget: this.perServiceBudget }, 'more watched services than the connection budget allows one each: following the whole Consul catalog instead (discovery.consul.watch, maxConnections)')
    const feed = new CatalogFeed({
      client: this.opts.client,
      datacenter,
      wait: this.opts.wait,
      ...(this.opts.minIntervalMs !== undefined ? { minIntervalMs: this.opts.minIntervalMs } : {}),
      ...(this.opts.backoffMaxMs !== undefined ? { backoffMaxMs: this.opts.backoffMaxMs } : {}),
      onChange: (change) => { this.changed(dc, change) },
      onError: (err, attempt) => {
        this.errors++
        // The first failure and then every tenth: an outage must not flood the log.
        if (attempt === 1 || attempt % 10 === 0) log.warn({ datacenter, attempt, err: err.message }, 'Consul catalog watch failed; routing to the last known endpoints')
        for (const w of dc.watches) if (w.loop === undefined) this.markStale(w, err.message)
      },
      onRecover: () => {
        log.info({ datacenter }, 'Consul catalog watch resumed')
        // What changed meanwhile is in the feed's next diff; stale snapshots are read again.
        for (const w of dc.watches) if (w.snapshot === undefined || w.snapshot.stale) this.read(w)
      }
    })
    dc.feed = feed
    feed.start()
    void feed.ready.then(() => {
      if (dc.feed !== feed) return
      for (const w of dc.watches) {
        this.stopLoop(w)
        this.read(w)
      }
    })
  }

  private changed (dc: DatacenterWatches, change: CatalogChange): void {
    for (const w of dc.watches) {
      if (touches(w.names, change.services) || touches(w.nodes, change.nodes) || touches(w.names, change.listed) ||
        // A new proxy name in front of the service shows only as a new catalog entry.
        (w.connect && change.listed.size > 0)) this.read(w)
    }
    if (change.serviceTableMoved) this.scheduleResync(dc)
  }

  /**
   * Every watched service read again, at most once per `resyncIntervalMs` and a second after
   * the move (registrations come in bursts): what a move of the service table changed is not
   * in any list Consul offers, short of one query per service.
   */
  private scheduleResync (dc: DatacenterWatches): void {
    if (dc.resync !== undefined) return
    const interval = this.opts.resyncIntervalMs ?? 5000
    const delay = Math.max(Math.min(1000, interval), dc.lastResync + interval - Date.now())
    dc.resync = setTimeout(() => {
      dc.resync = undefined
      dc.lastResync = Date.now()
      for (const w of dc.watches) this.read(w, false)
    }, delay)
    dc.resync.unref()
  }

  /**
   * Queues one plain query for the service (once, however often it is touched meanwhile);
   * `touched`: a change named it, so it goes before a full re-read's queue.
   */
  private read (w: ServiceWatch, touched = true): void {
    if (w.closed || this.closed || w.loop !== undefined) return
    if (w.reading === 'reading') {
      w.again = true
      return
    }
    if (touched) w.rereadOnly = false
    clearTimeout(w.retry)
    w.retry = undefined
    // Queued already: a touched one is queued again in front; the later entry is skipped.
    if (w.reading === 'queued' && !touched) return
    w.rereadOnly = !touched && w.reading !== 'queued'
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
    let entries: ConsulHealthEntry[]
    try {
      const path = `/health/${w.connect ? 'connect' : 'service'}/${encodeURIComponent(w.service)}`
      this.readConnections ??= this.opts.client.dedicatedConnections(READS_IN_FLIGHT)
      // A full re-read skips parsing a service whose own index has not moved (most of them).
      const unchanged = w.rereadOnly && w.snapshot !== undefined && !w.snapshot.stale ? w.index : undefined
      const r = await this.opts.client.agentRequest<ConsulHealthEntry[] | null | undefined>('GET', path, { dispatcher: this.readConnections, ...(unchanged !== undefined ? { unlessIndex: unchanged } : {}), ...(w.datacenter !== undefined ? { query: { dc: w.datacenter } } : {}) })
      w.index = r.index
      if (r.data === undefined) return
      entries = r.data ?? []
    } catch (err) {
      if (w.closed) return
      this.errors++
      w.failures++
      this.markStale(w, (err as Error).message)
      if (w.failures === 1) this.opts.log.warn({ service: w.service, datacenter: w.datacenter, err: (err as Error).message }, 'Consul read of a service failed; routing to the last known endpoints')
      // While the feed itself fails, its recovery reads every stale service again.
      if (w.dc.feed?.healthy === true) {
        w.retry = setTimeout(() => { this.read(w) }, backoffDelay(w.failures, 250, this.opts.backoffMaxMs ?? 30_000, Math.random))
        w.retry.unref()
      }
      return
    }
    if (w.closed) return
    if (w.failures > 0) this.opts.log.info({ service: w.service, datacenter: w.datacenter }, 'Consul read of a service succeeded again')
    w.failures = 0
    this.apply(w, entries)
  }

  // --- both --------------------------------------------------------------------------------

  private apply (w: ServiceWatch, entries: readonly ConsulHealthEntry[]): void {
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

function dcKey (datacenter: string | undefined): string {
  return datacenter ?? ''
}

function touches (mine: ReadonlySet<string>, changed: ReadonlySet<string>): boolean {
  if (changed.size === 0 || mine.size === 0) return false
  const [small, large] = mine.size <= changed.size ? [mine, changed] : [changed, mine]
  for (const name of small) if (large.has(name)) return true
  return false
}
