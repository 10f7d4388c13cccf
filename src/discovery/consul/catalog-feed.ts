// What changed in one datacenter's catalog, from two blocking queries however many
// services are watched: the health of every check (/v1/health/state/any) and the list of
// services (/v1/catalog/services). A watch per service held one agent connection each, and
// a default agent allows 200 per client: past that, updates stalled for tens of seconds.
//
// Check changes name what they touch exactly (a service, or every service on a node, for a
// node check). A move of the service table that the list of names does not explain (a
// re-registration with a new port, an instance without checks) is reported as such; the
// caller re-reads what it watches.
import { BlockingLoop } from './blocking-loop.js'
import type { Agent } from 'undici'
import { Cancellable, type ConsulClient } from './client.js'
import { waitMs } from '../../config/consul-wait.js'

/** One entry of /v1/health/state/any. */
interface ConsulCheck {
  Node: string
  CheckID: string
  ServiceName: string
  ServiceID: string
  ModifyIndex: number
}

export interface CatalogChange {
  /** Services whose checks changed, appeared or went away. */
  readonly services: ReadonlySet<string>
  /** Nodes whose node-level checks changed (every service on them is touched). */
  readonly nodes: ReadonlySet<string>
  /** Services added to or removed from the catalog, or whose tags changed. */
  readonly listed: ReadonlySet<string>
  /** The service table moved: an instance may have changed in a way only a re-read shows. */
  readonly serviceTableMoved: boolean
}

export interface CatalogFeedOptions {
  readonly client: ConsulClient
  readonly datacenter: string | undefined
  /** Blocking wait, e.g. `30s`; each query waits 75-100% of it. */
  readonly wait: string
  readonly minIntervalMs?: number
  readonly backoffMaxMs?: number
  readonly onChange: (change: CatalogChange) => void
  /** A query failed (`attempt` counts consecutive failures of that query). */
  readonly onError: (err: Error, attempt: number) => void
  /** Both queries answer again after a failure. */
  readonly onRecover: () => void
}

/** `wait` shortened by up to a quarter, at random, in whole milliseconds. */
export function jitteredWait (wait: string, random: () => number = Math.random): string {
  return `${Math.max(1000, Math.round(waitMs(wait) * (0.75 + random() * 0.25)))}ms`
}

const NO_NAMES: ReadonlySet<string> = new Set()

export class CatalogFeed {
  /** Resolves once both queries have answered or failed once: re-reads after it miss nothing. */
  readonly ready: Promise<void>
  private readonly checksLoop: BlockingLoop<ConsulCheck[]>
  private readonly servicesLoop: BlockingLoop<Record<string, string[] | null>>
  /** `node \0 checkId` → [service name ('' for a node check), ModifyIndex]. */
  private checks: Map<string, readonly [string, number]> | undefined
  private listed: Map<string, string> | undefined
  private failing = new Set<'checks' | 'services'>()
  /** One connection per query, so the feed holds two however its queries follow each other. */
  private readonly connections: Agent

  constructor (private readonly opts: CatalogFeedOptions) {
    this.connections = opts.client.dedicatedConnections(2)
    let settle!: () => void
    let pending = 2
    this.ready = new Promise<void>((resolve) => { settle = () => { if (--pending === 0) resolve() } })
    this.checksLoop = this.loop<ConsulCheck[]>('checks', '/health/state/any', [], (checks) => { this.onChecks(checks) }, settle)
    this.servicesLoop = this.loop<Record<string, string[] | null>>('services', '/catalog/services', {}, (services) => { this.onServices(services) }, settle)
  }

  /** One of the two blocking queries; `settle` is called once, on its first answer or failure. */
  private loop<T> (which: 'checks' | 'services', path: string, empty: T, onData: (data: T) => void, settle: () => void): BlockingLoop<T> {
    const opts = this.opts
    const query = opts.datacenter !== undefined ? { query: { dc: opts.datacenter } } : {}
    let settled = false
    const once = (): void => { if (!settled) { settled = true; settle() } }
    return new BlockingLoop<T>({
      makeContext: () => new Cancellable(),
      minIntervalMs: opts.minIntervalMs ?? 100,
      backoffMaxMs: opts.backoffMaxMs ?? 30_000,
      fetch: async (index, ctx) => {
        const r = await opts.client.agentRequest<T | null>('GET', path, { index, wait: jitteredWait(opts.wait), ctx, dispatcher: this.connections, ...query })
        return { index: r.index, data: r.data ?? empty }
      },
      onChange: (data) => {
        onData(data)
        once()
      },
      onError: (err, attempt) => {
        this.failing.add(which)
        opts.onError(err, attempt)
        once()
      },
      onRecover: () => { this.recovered(which) }
    })
  }

  /** Whether both queries answered last time they were asked. */
  get healthy (): boolean {
    return this.failing.size === 0
  }

  start (): void {
    this.checksLoop.start()
    this.servicesLoop.start()
  }

  async stop (): Promise<void> {
    await Promise.all([this.checksLoop.stop(), this.servicesLoop.stop()])
    await this.connections.close()
  }

  private recovered (which: 'checks' | 'services'): void {
    this.failing.delete(which)
    if (this.failing.size === 0) this.opts.onRecover()
  }

  private onChecks (list: readonly ConsulCheck[]): void {
    const next = new Map<string, readonly [string, number]>()
    for (const c of list) next.set(`${c.Node}\u0000${c.CheckID}`, [c.ServiceID === '' ? '' : c.ServiceName, c.ModifyIndex])
    const prev = this.checks
    this.checks = next
    // The first answer is the baseline: re-reads start after it (see `ready`).
    if (prev === undefined) return
    const services = new Set<string>()
    const nodes = new Set<string>()
    const touch = (key: string, service: string): void => {
      if (service !== '') services.add(service)
      else nodes.add(key.slice(0, key.indexOf('\u0000')))
    }
    for (const [key, now] of next) {
      const before = prev.get(key)
      if (before === undefined || before[1] !== now[1] || before[0] !== now[0]) {
        touch(key, now[0])
        if (before !== undefined && before[0] !== now[0]) touch(key, before[0])
      }
    }
    for (const [key, before] of prev) if (!next.has(key)) touch(key, before[0])
    if (services.size > 0 || nodes.size > 0) this.opts.onChange({ services, nodes, listed: NO_NAMES, serviceTableMoved: false })
  }

  private onServices (services: Readonly<Record<string, string[] | null>>): void {
    const next = new Map<string, string>()
    for (const [name, tags] of Object.entries(services)) next.set(name, (tags ?? []).join('\u0000'))
    const prev = this.listed
    this.listed = next
    if (prev === undefined) return
    const listed = new Set<string>()
    for (const [name, tags] of next) if (prev.get(name) !== tags) listed.add(name)
    for (const name of prev.keys()) if (!next.has(name)) listed.add(name)
    this.opts.onChange({ services: NO_NAMES, nodes: NO_NAMES, listed, serviceTableMoved: true })
  }
}
