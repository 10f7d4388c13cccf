// Endpoint layer: one connection pool per endpoint address, shared by every config version
// and reused across discovery changes; a pool is closed (after its in-flight requests)
// only when no service uses its address any more. The pools of one destination draw their
// connections from one budget (`circuitBreaker.maxConnections`), so the destination never
// has more sockets open than that, however many endpoints it has.
import type { Socket } from 'node:net'
import { Client, buildConnector, errors, type Dispatcher } from 'undici'
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

/** What the endpoint layer needs of a pool: undici's dispatch. */
export interface UpstreamDispatcher {
  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean
}

export interface EndpointTarget {
  readonly endpoint: Endpoint
  readonly pool: UpstreamDispatcher
  /** `address:port`, for logs and errors. */
  readonly label: string
}

/** The connection budget a pool belongs to: its destination (selector key) and the cap. */
export interface ConnectionLimit {
  readonly group: string
  readonly maxConnections: number
}

function settingsKey (s: PoolSettings): string {
  return `${s.connections}/${s.pipelining}/${s.connectTimeoutMs}/${s.keepAliveTimeoutMs}`
}

export function endpointOrigin (address: string, port: number): string {
  return address.includes(':') ? `http://[${address}]:${port}` : `http://${address}:${port}`
}

/** How often a budget with waiters looks for an idle connection it was not told about (pipelining). */
const RECHECK_MS = 50

/**
 * The sockets of one destination across its endpoints' pools. A socket takes a slot from
 * the moment it is being connected until it has closed (a WebSocket tunnel keeps its slot
 * until the tunnel closes), so at no time are more than `max` open or opening.
 *
 * When every slot is taken, a pool that needs one more connection waits (its requests are
 * pending). A connection that comes free goes to a waiting pool when that pool has none,
 * or at least two fewer than the connection's own pool: the idle socket is closed and the
 * waiting pool connects. So endpoints never starve, and with enough slots for every endpoint
 * the split settles and connections stay where they are.
 */
export class ConnectionBudget {
  /** Sockets open or being opened. */
  open = 0
  /** The pools drawing from this budget. */
  readonly pools = new Set<EndpointPool>()
  /** Pools with requests waiting for a new connection, in the order they asked. */
  private readonly waiting = new Set<EndpointPool>()
  /** Connections undici reopens itself (a request was queued on them when their socket closed): served first. */
  private readonly reconnects: Array<{ readonly pool: EndpointPool, readonly run: () => void }> = []
  /** Idle sockets closed for a waiter, not closed yet. */
  evicting = 0
  private timer: NodeJS.Timeout | undefined

  constructor (readonly max: number) {}

  /** A slot for a new socket of `pool`, when one is free. */
  take (pool: EndpointPool): boolean {
    if (this.open >= this.max) return false
    this.open++
    pool.slots++
    return true
  }

  /** A socket of `pool` closed, or its connect failed. */
  release (pool: EndpointPool): void {
    this.open--
    pool.slots--
    this.pump()
  }

  /** `pool` has requests waiting for a new connection. */
  want (pool: EndpointPool): void {
    this.waiting.add(pool)
    this.rebalance()
  }

  /** `run` connects a connection of `pool` that undici reopens; it is called with a slot taken. */
  reconnect (pool: EndpointPool, run: () => void): void {
    this.reconnects.push({ pool, run })
    this.rebalance()
  }

  /** Whether a connection of `pool` that just came free should go to a waiting pool instead. */
  shouldYield (pool: EndpointPool): boolean {
    if (this.open < this.max) return false
    if (this.reconnects.length > 0) return true
    for (const w of this.waiting) {
      if (w !== pool && w.queued > 0 && (w.slots === 0 || pool.slots >= w.slots + 2)) return true
    }
    return false
  }

  /** Slots came free: waiters get them, reconnects first. */
  private pump (): void {
    while (this.open < this.max) {
      const r = this.reconnects.shift()
      if (r !== undefined) {
        this.open++
        r.pool.slots++
        r.run()
        continue
      }
      const next = this.waiting.values().next()
      if (next.done === true) break
      this.waiting.delete(next.value)
      // Takes the slots it can use; asks again (want) when the budget runs out first.
      next.value.serveQueue()
    }
    this.rebalance()
  }

  /** Every slot is taken and someone waits: close an idle socket of the pool richest in them. */
  private rebalance (): void {
    for (const w of this.waiting) if (w.queued === 0) this.waiting.delete(w)
    if (this.open < this.max || this.evicting > 0 || (this.reconnects.length === 0 && this.waiting.size === 0)) return
    let poorest = Infinity
    if (this.reconnects.length > 0) poorest = -1
    else for (const w of this.waiting) poorest = Math.min(poorest, w.slots)
    const richestFirst = [...this.pools].sort((a, b) => b.slots - a.slots)
    for (const pool of richestFirst) {
      if (poorest > 0 && pool.slots < poorest + 2) break
      if (pool.evictIdle()) { this.evicting++; return }
    }
    // Nothing idle now. With pipelining a connection can go idle without saying so: look again.
    if (this.timer === undefined) {
      this.timer = setTimeout(() => { this.timer = undefined; this.rebalance() }, RECHECK_MS)
      this.timer.unref()
    }
  }
}

/** One connection of a pool: an undici Client, which holds at most one socket at a time. */
class Connection {
  socket: Socket | undefined = undefined
  connecting = false
  /** A slot was taken for the connect this connection is about to make. */
  reserved = false
  /** The client said it takes no more requests until it emits 'drain'. */
  busy = false
  /** In the pool's stack of free connections. */
  listed = false
  /** Closed for a waiting pool. */
  evicted = false
  /** Dropped from the pool (idle without a socket, failed to connect, evicted, pool destroyed). */
  gone = false
  client!: Client
}

interface Queued {
  readonly opts: Dispatcher.DispatchOptions
  readonly handler: Dispatcher.DispatchHandler
}

/**
 * The connections to one endpoint: at most `settings.connections`, each an undici Client,
 * their sockets counted against the destination's budget. A request goes to a free
 * connection, else to a new one when both limits allow, else it waits here (pending) for
 * the first connection that comes free. Like undici's Pool, but with sockets it can count
 * and an idle one it can give up.
 */
export class EndpointPool implements UpstreamDispatcher {
  /** Sockets of this pool open or opening (its share of the budget). */
  slots = 0
  private readonly conns: Connection[] = []
  /** Connections not busy, last freed on top (entries may be stale: checked when taken). */
  private readonly free: Connection[] = []
  private queue: Queued[] = []
  private head = 0
  private closing: Promise<void> | undefined
  private finishClose: (() => void) | undefined
  private isDestroyed = false

  constructor (
    readonly origin: string,
    private readonly settings: PoolSettings,
    private readonly connector: buildConnector.connector,
    readonly budget: ConnectionBudget
  ) {
    budget.pools.add(this)
  }

  get closed (): boolean {
    return this.closing !== undefined
  }

  get destroyed (): boolean {
    return this.isDestroyed
  }

  /** Requests waiting here for a connection. */
  get queued (): number {
    return this.queue.length - this.head
  }

  /** Sockets open or opening, for admin and tests. */
  get connections (): number {
    return this.slots
  }

  dispatch (opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (this.closing !== undefined) {
      handler.onError?.(this.isDestroyed ? new errors.ClientDestroyedError() : new errors.ClientClosedError())
      return false
    }
    if (this.queued === 0) {
      const conn = this.connection()
      if (conn instanceof Connection) {
        this.send(conn, opts, handler)
        return true
      }
      this.queue.push({ opts, handler })
      if (conn === 'budget') this.budget.want(this)
      return false
    }
    this.queue.push({ opts, handler })
    return false
  }

  /** Sends queued requests while connections are to be had. */
  serveQueue (): void {
    while (this.queued > 0) {
      const conn = this.connection()
      if (conn === undefined) return
      if (conn === 'budget') { this.budget.want(this); return }
      const { opts, handler } = this.queue[this.head]!
      this.queue[this.head++] = undefined as unknown as Queued
      if (this.head > 1024 && this.head * 2 > this.queue.length) { this.queue = this.queue.slice(this.head); this.head = 0 }
      this.send(conn, opts, handler)
    }
    if (this.closing !== undefined) this.closeIdle()
  }

  /**
   * A connection for the next request: a free one; else a new one when the pool's own limit
   * and the budget allow (`budget`: only the budget is short); undefined: wait for one to
   * come free.
   */
  private connection (): Connection | 'budget' | undefined {
    const free = this.free
    while (free.length > 0) {
      const c = free[free.length - 1]!
      // A socket that closed under an idle connection: it is dropped on 'disconnect'.
      if (!c.busy && !c.gone && (c.socket !== undefined || c.connecting)) return c
      free.pop()
      c.listed = false
    }
    if (this.conns.length >= this.settings.connections) return undefined
    if (!this.budget.take(this)) return 'budget'
    const conn = this.newConnection()
    conn.reserved = true
    return conn
  }

  private send (conn: Connection, opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    if (!conn.client.dispatch(opts, handler)) {
      conn.busy = true
      if (conn.listed) {
        // Only the top of the stack is ever handed out.
        this.free.pop()
        conn.listed = false
      }
    } else if (!conn.listed) {
      conn.listed = true
      this.free.push(conn)
    }
    if (conn.reserved) {
      // undici connects at once, or on the next microtask for a streamed body; a request it
      // refused never connects, and the slot must not stay taken.
      queueMicrotask(() => {
        queueMicrotask(() => {
          if (!conn.reserved || conn.connecting || conn.socket !== undefined) return
          conn.reserved = false
          this.drop(conn)
          this.budget.release(this)
        })
      })
    }
  }

  private newConnection (): Connection {
    const conn = new Connection()
    const connect: buildConnector.connector = (options, callback) => {
      if (conn.reserved) {
        conn.reserved = false
        this.connectNow(conn, options, callback)
      } else if (this.budget.take(this)) {
        this.connectNow(conn, options, callback)
      } else {
        // undici reopens a connection whose socket closed under a queued request: wait for a slot.
        this.budget.reconnect(this, () => {
          if (conn.client.destroyed) {
            this.budget.release(this)
            callback(new errors.ClientDestroyedError(), null)
            return
          }
          this.connectNow(conn, options, callback)
        })
      }
    }
    conn.client = new Client(this.origin, {
      pipelining: this.settings.pipelining,
      connect,
      // The setting is an upper bound: an upstream's `Keep-Alive: timeout=N` hint may
      // shorten the idle time (undici keeps N minus its 2 s threshold), never lengthen it.
      keepAliveTimeout: this.settings.keepAliveTimeoutMs,
      keepAliveMaxTimeout: this.settings.keepAliveTimeoutMs
    })
    conn.client.on('drain', () => { this.onFree(conn) })
    conn.client.on('disconnect', () => { this.onDisconnect(conn) })
    // undici has already failed the requests queued on it; a fresh connection serves the next ones.
    conn.client.on('connectionError', () => { this.drop(conn) })
    this.conns.push(conn)
    return conn
  }

  /** Connects with a slot already taken; gives it back when the connect fails or the socket closes. */
  private connectNow (conn: Connection, options: buildConnector.Options, callback: buildConnector.Callback): void {
    conn.connecting = true
    this.connector(options, (err, socket) => {
      conn.connecting = false
      if (err !== null) {
        this.budget.release(this)
        callback(err, null)
        return
      }
      const s = socket as Socket
      conn.socket = s
      s.once('close', () => {
        if (conn.socket === s) conn.socket = undefined
        if (conn.evicted) { conn.evicted = false; this.budget.evicting-- }
        this.budget.release(this)
      })
      callback(null, socket)
    })
  }

  private onFree (conn: Connection): void {
    if (conn.gone) return
    conn.busy = false
    if (this.budget.shouldYield(this) && this.evict(conn)) {
      this.budget.evicting++
      return
    }
    if (!conn.listed) {
      conn.listed = true
      this.free.push(conn)
    }
    this.serveQueue()
  }

  /** The socket closed (or was handed to a WebSocket tunnel, which keeps its slot until it closes). */
  private onDisconnect (conn: Connection): void {
    conn.socket = undefined
    // Nothing queued on it: it would only reconnect for the next request, which a new one can do.
    if (!conn.connecting && conn.client.stats.pending === 0) this.drop(conn)
  }

  /** Closes an idle connection's socket (for a waiting pool); false when none is idle. */
  evictIdle (): boolean {
    for (let i = this.conns.length - 1; i >= 0; i--) if (this.evict(this.conns[i]!)) return true
    return false
  }

  private evict (conn: Connection): boolean {
    if (conn.gone || conn.socket === undefined || conn.connecting || conn.client.stats.size > 0) return false
    conn.evicted = true
    this.drop(conn)
    return true
  }

  private drop (conn: Connection): void {
    if (conn.gone) return
    conn.gone = true
    const i = this.conns.indexOf(conn)
    if (i !== -1) this.conns.splice(i, 1)
    conn.client.destroy().catch(() => {})
    if (this.closing !== undefined) this.closeIdle()
    // Room under the pool's own limit: requests waiting for it may go (not from inside undici's event).
    else if (this.queued > 0) queueMicrotask(() => { this.serveQueue() })
  }

  /** Closing: once nothing waits here, every connection closes after its in-flight requests. */
  private closeIdle (): void {
    if (this.queued > 0 || this.finishClose === undefined) return
    const done = this.finishClose
    this.finishClose = undefined
    const conns = this.conns.splice(0)
    for (const c of conns) c.gone = true
    void Promise.all(conns.map(async (c) => { await c.client.close().catch(() => {}) })).then(() => {
      this.budget.pools.delete(this)
      done()
    })
  }

  /** Stops taking requests; resolves once the queued and in-flight ones are done and every connection closed. */
  async close (): Promise<void> {
    if (this.closing === undefined) {
      this.closing = new Promise<void>((resolve) => { this.finishClose = resolve })
      this.closeIdle()
    }
    await this.closing
  }

  /** Fails the queued requests and cuts every connection. */
  async destroy (): Promise<void> {
    this.isDestroyed = true
    this.closing ??= Promise.resolve()
    this.finishClose = undefined
    const err = new errors.ClientDestroyedError()
    const queued = this.queue.slice(this.head)
    this.queue = []
    this.head = 0
    for (const q of queued) q.handler.onError?.(err)
    const conns = this.conns.splice(0)
    for (const c of conns) c.gone = true
    await Promise.all(conns.map(async (c) => { await c.client.destroy(err).catch(() => {}) }))
    this.budget.pools.delete(this)
  }
}

export class EndpointPools {
  private readonly pools = new Map<string, { pool: EndpointPool, users: Set<object> }>()
  /** The pool keys each user holds, so retainOnly looks at that user's pools only. */
  private readonly byUser = new WeakMap<object, Set<string>>()
  /** Connection budgets by destination and cap, while a pool uses them. */
  private readonly budgets = new Map<string, ConnectionBudget>()
  /**
   * Plain TCP connectors by connect timeout, shared by every pool: a connector takes its
   * host and port from each call, and each one built carries a TLS session cache (a Map and
   * a FinalizationRegistry) that plain connections never use.
   */
  private readonly connectors = new Map<number, buildConnector.connector>()

  /**
   * The pool for `endpoint` under `settings`, registered as used by `user`. With `limit`,
   * its sockets count against that destination's budget (pools of other destinations are
   * never shared with it); without, only `settings.connections` bounds them.
   */
  acquire (endpoint: Endpoint, settings: PoolSettings, user: object, mesh?: MeshConnection, limit?: ConnectionLimit): EndpointPool {
    const origin = endpointOrigin(endpoint.address, endpoint.port)
    const budgetKey = limit !== undefined ? `${limit.group}|${limit.maxConnections}` : undefined
    const key = `${origin}|${settingsKey(settings)}${mesh !== undefined ? `|mtls:${mesh.caller}>${mesh.destination}` : ''}${budgetKey !== undefined ? `|budget:${budgetKey}` : ''}`
    let entry = this.pools.get(key)
    if (entry === undefined) {
      let budget: ConnectionBudget | undefined
      if (budgetKey !== undefined) {
        budget = this.budgets.get(budgetKey)
        if (budget === undefined) this.budgets.set(budgetKey, budget = new ConnectionBudget(limit!.maxConnections))
      }
      const connector = mesh !== undefined ? mesh.connector : this.plainConnector(settings.connectTimeoutMs)
      entry = { pool: new EndpointPool(origin, settings, connector, budget ?? new ConnectionBudget(Infinity)), users: new Set() }
      this.pools.set(key, entry)
    }
    entry.users.add(user)
    let keys = this.byUser.get(user)
    if (keys === undefined) this.byUser.set(user, keys = new Set())
    keys.add(key)
    return entry.pool
  }

  private plainConnector (timeoutMs: number): buildConnector.connector {
    let connector = this.connectors.get(timeoutMs)
    if (connector === undefined) this.connectors.set(timeoutMs, connector = buildConnector({ timeout: timeoutMs, noDelay: true }))
    return connector
  }

  /** Sockets open or opening towards a destination (its budget), for admin. */
  openConnections (limit: ConnectionLimit): number {
    return this.budgets.get(`${limit.group}|${limit.maxConnections}`)?.open ?? 0
  }

  /** `user` now uses exactly the pools in `inUse`; pools nobody uses close gracefully. */
  retainOnly (user: object, inUse: ReadonlySet<EndpointPool>): void {
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
        this.forgetBudget(entry.pool.budget)
      }
    }
  }

  /** A budget no pool in the table uses any more is dropped (closing pools keep their reference). */
  private forgetBudget (budget: ConnectionBudget): void {
    for (const [k, b] of this.budgets) {
      if (b !== budget) continue
      let used = false
      for (const e of this.pools.values()) if (e.pool.budget === budget) { used = true; break }
      if (!used) this.budgets.delete(k)
      return
    }
  }

  get size (): number {
    return this.pools.size
  }

  async close (): Promise<void> {
    const all = [...this.pools.values()]
    this.pools.clear()
    this.budgets.clear()
    await Promise.all(all.map(async (e) => { await e.pool.close().catch(() => {}) }))
  }
}
