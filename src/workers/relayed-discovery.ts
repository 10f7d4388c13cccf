// A worker's discovery: the primary watches (once for every worker), and passes each
// snapshot of a service a worker watches over IPC. A worker never talks to Consul for
// endpoints, so N workers cost the agent what one process does.
import type { Discovery, Endpoint, ServiceSnapshot, SnapshotListener, WatchOptions } from '../discovery/types.js'
import { watchKey, type FromWorker } from './messages.js'

interface RelayedWatch {
  readonly service: string
  readonly options: WatchOptions | undefined
  readonly listeners: Set<SnapshotListener>
  snapshot: ServiceSnapshot | undefined
}

export class RelayedDiscovery implements Discovery {
  readonly kind = 'relayed'
  private readonly watches = new Map<string, RelayedWatch>()

  /**
   * @param send the channel to the primary
   * @param includeWarning Consul's `includeWarning`: Consul endpoints in `warning` take traffic
   */
  constructor (private readonly send: (m: FromWorker) => void, private readonly includeWarning: boolean) {}

  watch (service: string, listener: SnapshotListener, options?: WatchOptions): () => void {
    const key = watchKey(service, options)
    let w = this.watches.get(key)
    if (w === undefined) {
      w = { service, options, listeners: new Set(), snapshot: undefined }
      this.watches.set(key, w)
      this.send({ t: 'watch', key, service, options })
    }
    const watch = w
    watch.listeners.add(listener)
    if (watch.snapshot !== undefined) listener(watch.snapshot)
    return () => {
      if (!watch.listeners.delete(listener) || watch.listeners.size > 0) return
      this.watches.delete(key)
      this.send({ t: 'unwatch', key })
    }
  }

  /** A snapshot from the primary. */
  receive (key: string, snapshot: ServiceSnapshot): void {
    const w = this.watches.get(key)
    if (w === undefined) return
    w.snapshot = snapshot
    for (const l of w.listeners) l(snapshot)
  }

  snapshot (service: string, options?: WatchOptions): ServiceSnapshot | undefined {
    return this.watches.get(watchKey(service, options))?.snapshot
  }

  /** The same rule as the primary's sources: passing, or warning for Consul endpoints with `includeWarning`. */
  isUsable (endpoint: Endpoint): boolean {
    return endpoint.health === 'passing' || (endpoint.health === 'warning' && endpoint.origin === 'consul' && this.includeWarning)
  }

  services (): ServiceSnapshot[] {
    const out: ServiceSnapshot[] = []
    for (const w of this.watches.values()) if (w.snapshot !== undefined) out.push(w.snapshot)
    return out
  }

  async close (): Promise<void> {
    this.watches.clear()
  }
}
