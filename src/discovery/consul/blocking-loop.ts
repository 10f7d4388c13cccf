// One Consul blocking-query loop with the hygiene Consul's docs ask for: reset when
// X-Consul-Index goes backwards, never block on an index below 1, back off with jitter
// on errors, and never run faster than a floor interval even if the index churns.
import type { BlockingResult, Cancellable } from './client.js'

export interface BlockingLoopOptions<T> {
  /** One request: blocks until `index` changes (or `wait` passes). */
  readonly fetch: (index: bigint, ctx: Cancellable) => Promise<BlockingResult<T>>
  /** Called with each new result (first answer, index moved, or index reset). */
  readonly onChange: (data: T, index: bigint) => void
  /** Called on each failed request; `attempt` counts consecutive failures from 1. */
  readonly onError: (err: Error, attempt: number, retryInMs: number) => void
  /** Called on the first success after failures. */
  readonly onRecover?: () => void
  readonly makeContext: () => Cancellable
  /** Least time between the starts of two requests. */
  readonly minIntervalMs?: number
  readonly backoffBaseMs?: number
  readonly backoffMaxMs?: number
  /** Injected for tests. */
  readonly random?: () => number
  readonly now?: () => number
  readonly sleep?: (ms: number) => Promise<void>
}

const realSleep = async (ms: number): Promise<void> => { await new Promise((resolve) => { setTimeout(resolve, ms).unref() }) }

/** Backoff for the n-th consecutive failure: exponential, capped, with half-range jitter. */
export function backoffDelay (attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt - 1, 20))
  return Math.round(ceiling / 2 + random() * ceiling / 2)
}

export class BlockingLoop<T> {
  private index = 0n
  private stopped = false
  private ctx: Cancellable | undefined
  private failures = 0
  private running: Promise<void> | undefined
  private wake: (() => void) | undefined

  constructor (private readonly opts: BlockingLoopOptions<T>) {}

  start (): void {
    this.running ??= this.run()
  }

  /** The index the next request will block on. */
  get currentIndex (): bigint {
    return this.index
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.ctx?.cancel()
    this.wake?.()
    await this.running
  }

  private async pause (ms: number): Promise<void> {
    if (ms <= 0 || this.stopped) return
    const sleep = this.opts.sleep ?? realSleep
    // stop() cuts a pause short.
    await Promise.race([sleep(ms), new Promise<void>((resolve) => { this.wake = resolve })])
    this.wake = undefined
  }

  private async run (): Promise<void> {
    const now = this.opts.now ?? Date.now
    const random = this.opts.random ?? Math.random
    const minInterval = this.opts.minIntervalMs ?? 100
    let lastStart = -Infinity
    while (!this.stopped) {
      await this.pause(lastStart + minInterval - now())
      if (this.stopped) break
      lastStart = now()
      const ctx = this.opts.makeContext()
      this.ctx = ctx
      let result: BlockingResult<T>
      try {
        result = await this.opts.fetch(this.index, ctx)
      } catch (err) {
        if (this.stopped) break
        this.failures++
        const delay = backoffDelay(this.failures, this.opts.backoffBaseMs ?? 250, this.opts.backoffMaxMs ?? 30_000, random)
        this.opts.onError(err as Error, this.failures, delay)
        await this.pause(delay)
        continue
      }
      if (this.stopped) break
      if (this.failures > 0) {
        this.failures = 0
        this.opts.onRecover?.()
      }
      const prev = this.index
      // Consul: an index below 1 is treated as 1; one that went backwards means a reset.
      let next = result.index
      if (next < 1n) next = 1n
      const reset = next < prev
      this.index = reset ? 0n : next
      if (prev === 0n || reset || next !== prev) this.opts.onChange(result.data, next)
    }
  }
}
