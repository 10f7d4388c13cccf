// Counter stores of the `rate-limit` plugin: fixed windows per key, kept in the plugin's
// state (so they survive reloads) locally, or in Redis for a limit shared by several gateway
// replicas. The Redis store uses @fastify/rate-limit's own store (its Lua script) on an
// ioredis client that never queues a command while disconnected, and bounds every count by
// the caller's timeout.
import { createRequire } from 'node:module'
import type { Redis as RedisClient } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'

export interface WindowCount {
  /** Requests counted in the key's current window, this one included. */
  readonly current: number
  /** Milliseconds left in the window. */
  readonly ttl: number
}

export interface WindowStore {
  /** Counts one request for `key` in a window of `windowMs`; rejects when it cannot within `timeoutMs` (0: no limit). */
  incr(key: string, windowMs: number, timeoutMs: number): Promise<WindowCount>
}

/** Keys kept at most, oldest window dropped first (a flood of distinct keys cannot grow memory without bound). */
const MAX_LOCAL_KEYS = 100_000

/** Fixed windows in memory, in a Map (insertion order = age), for one gateway. */
export class LocalWindows implements WindowStore {
  private readonly windows = new Map<string, { count: number, start: number }>()

  constructor (private readonly now: () => number = Date.now, private readonly maxKeys = MAX_LOCAL_KEYS) {}

  async incr (key: string, windowMs: number): Promise<WindowCount> {
    return this.count(key, windowMs)
  }

  /** The synchronous count (the async `incr` only wraps it). */
  count (key: string, windowMs: number): WindowCount {
    const now = this.now()
    let w = this.windows.get(key)
    if (w === undefined || w.start + windowMs <= now) {
      if (w !== undefined) this.windows.delete(key)
      else if (this.windows.size >= this.maxKeys) this.windows.delete(this.windows.keys().next().value!)
      w = { count: 0, start: now }
      this.windows.set(key, w)
    }
    w.count++
    return { current: w.count, ttl: w.start + windowMs - now }
  }

  get size (): number {
    return this.windows.size
  }
}

interface FastifyRedisStore {
  incr(key: string, cb: (err: Error | null, res?: WindowCount) => void, timeWindow: number, max: number): void
}
type FastifyRedisStoreClass = new (continueExceeding: boolean, exponentialBackoff: boolean, redis: RedisClient, prefix: string) => FastifyRedisStore

// @fastify/rate-limit keeps its Redis store (and its Lua script) in a CommonJS file of its own.
const require = createRequire(import.meta.url)
const RedisStore = require('@fastify/rate-limit/store/RedisStore.js') as FastifyRedisStoreClass

/**
 * Windows in Redis, shared by every gateway with the same URL and prefix. A Redis that
 * does not answer in time fails the count (the plugin's fail mode decides); the client
 * does not queue commands while disconnected, so nothing piles up behind a dead Redis, and
 * it reconnects by itself. Up/down transitions are logged once each.
 */
export class RedisWindows implements WindowStore {
  private client: RedisClient | undefined
  private store: FastifyRedisStore | undefined
  private readonly starting: Promise<void>
  /** Counts that failed (timeout, connection refused, script error) since start. */
  failures = 0
  private down = false

  constructor (private readonly url: string, prefix: string, private readonly log: FastifyBaseLogger) {
    // ioredis is loaded only by a route that uses a Redis store.
    this.starting = import('ioredis').then(({ Redis }) => {
      const client = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 2000, lazyConnect: false })
      client.on('error', () => { /* reported by the counts that fail */ })
      client.on('ready', () => { this.transition(false, undefined) })
      client.on('close', () => { this.transition(true, 'connection closed') })
      this.client = client
      this.store = new RedisStore(false, false, client, prefix)
    })
  }

  private transition (down: boolean, why: string | undefined): void {
    if (down === this.down) return
    this.down = down
    if (down) this.log.warn({ redis: redactUrl(this.url), why, code: 'FASTMESH_ERR_RATE_LIMIT_UNAVAILABLE' }, 'rate-limit Redis store unavailable')
    else this.log.info({ redis: redactUrl(this.url) }, 'rate-limit Redis store available')
  }

  /** Resolves once the client is connected, or after `timeoutMs` (the command then fails at once). */
  private async connected (timeoutMs: number): Promise<void> {
    await this.starting
    const client = this.client!
    if (client.status === 'ready' || timeoutMs === 0) return
    await new Promise<void>((resolve) => {
      const done = (): void => { clearTimeout(timer); client.off('ready', done); resolve() }
      const timer = setTimeout(done, timeoutMs)
      client.once('ready', done)
    })
  }

  async incr (key: string, windowMs: number, timeoutMs: number): Promise<WindowCount> {
    const start = performance.now()
    // The first counts may come while the connection is still being made: they wait for it, within the same timeout.
    await this.connected(timeoutMs)
    const left = timeoutMs > 0 ? Math.max(1, timeoutMs - (performance.now() - start)) : 0
    return await new Promise<WindowCount>((resolve, reject) => {
      let settled = false
      const timer = left > 0
        ? setTimeout(() => { fail(new Error(`no answer from Redis within ${timeoutMs} ms`)) }, left)
        : undefined
      const fail = (err: Error): void => {
        if (settled) return
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        this.failures++
        this.transition(true, err.message)
        reject(err)
      }
      try {
        this.store!.incr(key, (err, res) => {
          if (err !== null || res === undefined) { fail(err ?? new Error('no result')); return }
          if (settled) return
          settled = true
          if (timer !== undefined) clearTimeout(timer)
          this.transition(false, undefined)
          resolve(res)
        }, windowMs, Number.MAX_SAFE_INTEGER)
      } catch (err) {
        fail(err as Error)
      }
    })
  }

  close (): void {
    void this.starting.then(() => { this.client?.disconnect() })
  }
}

/** A Redis URL without its password, for logs. */
function redactUrl (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '<redacted>'
    return u.toString()
  } catch {
    return '<unparseable url>'
  }
}
