// Endpoint layer: one undici Pool per endpoint address, shared by every config version
// and reused across discovery changes; a pool is closed (after its in-flight requests)
// only when no service uses its address any more.
import { Pool, type buildConnector } from 'undici'
import type { Endpoint } from '../discovery/types.js'

/** mTLS towards a mesh gateway: who calls, which service the far side must prove to be. */
export interface MeshConnection {
  readonly caller: string
  readonly destination: string
  readonly connector: buildConnector.connector
}

export interface PoolSettings {
  readonly connections: number
  readonly pipelining: number
  readonly connectTimeoutMs: number
  readonly keepAliveTimeoutMs: number
}

export interface EndpointTarget {
  readonly endpoint: Endpoint
  readonly pool: Pool
  /** `address:port`, for logs and errors. */
  readonly label: string
}

function settingsKey (s: PoolSettings): string {
  return `${s.connections}/${s.pipelining}/${s.connectTimeoutMs}/${s.keepAliveTimeoutMs}`
}

export function endpointOrigin (address: string, port: number): string {
  return address.includes(':') ? `http://[${address}]:${port}` : `http://${address}:${port}`
}

export class EndpointPools {
  private readonly pools = new Map<string, { pool: Pool, users: Set<object> }>()
  /** The pool keys each user holds, so retainOnly looks at that user's pools only. */
  private readonly byUser = new WeakMap<object, Set<string>>()

  /** The pool for `endpoint` under `settings`, registered as used by `user`. */
  acquire (endpoint: Endpoint, settings: PoolSettings, user: object, mesh?: MeshConnection): Pool {
    const origin = endpointOrigin(endpoint.address, endpoint.port)
    const key = `${origin}|${settingsKey(settings)}${mesh !== undefined ? `|mtls:${mesh.caller}>${mesh.destination}` : ''}`
    let entry = this.pools.get(key)
    if (entry === undefined) {
      entry = {
        pool: new Pool(origin, {
          connections: settings.connections,
          pipelining: settings.pipelining,
          connect: mesh !== undefined ? mesh.connector : { timeout: settings.connectTimeoutMs, noDelay: true },
          // The setting is an upper bound: an upstream's `Keep-Alive: timeout=N` hint may
          // shorten the idle time (undici keeps N minus its 2 s threshold), never lengthen it.
          keepAliveTimeout: settings.keepAliveTimeoutMs,
          keepAliveMaxTimeout: settings.keepAliveTimeoutMs
        }),
        users: new Set()
      }
      this.pools.set(key, entry)
    }
    entry.users.add(user)
    let keys = this.byUser.get(user)
    if (keys === undefined) this.byUser.set(user, keys = new Set())
    keys.add(key)
    return entry.pool
  }

  /** `user` now uses exactly the pools in `inUse`; pools nobody uses close gracefully. */
  retainOnly (user: object, inUse: ReadonlySet<Pool>): void {
    const keys = this.byUser.get(user)
    if (keys === undefined) return
    for (const key of keys) {
      const entry = this.pools.get(key)
      if (entry === undefined || !entry.users.has(user)) { keys.delete(key); continue }
      if (inUse.has(entry.pool)) continue
      keys.delete(key)
      entry.users.delete(user)
      if (entry.users.size === 0) {
        this.pools.delete(key)
        // close() lets requests in flight finish; new ones never reach this pool again.
        entry.pool.close().catch(() => {})
      }
    }
  }

  get size (): number {
    return this.pools.size
  }

  async close (): Promise<void> {
    const all = [...this.pools.values()]
    this.pools.clear()
    await Promise.all(all.map(async (e) => { await e.pool.close().catch(() => {}) }))
  }
}
