// The one config watcher: every snapshot from the gateway's provider (file change, Consul KV
// change, SIGHUP, `POST /reload`) comes through here, one at a time and in order; a snapshot
// identical to the config in effect is dropped (or, right after a refusal, clears it), the
// rest are compiled (src/config/compile.ts) and handed to the swap.
import { createHash } from 'node:crypto'
import type { Logger } from 'pino'
import { compileConfig, type CheckedConfig, type LoadedConfig } from './load.js'
import type { ConfigProblem } from './validate.js'
import type { ConfigProvider, ConfigSnapshot } from './provider.js'

export interface ReloadResult {
  readonly ok: boolean
  readonly version: number
  readonly problems?: readonly ConfigProblem[]
  readonly error?: string
  /** Keys the applied config changes that wait for a restart (`listeners.http.port`). */
  readonly pendingRestart?: readonly string[]
  /** The config in effect was offered again after a refusal: nothing was built, the refusal is cleared. */
  readonly restored?: boolean
}

/** What the reconciler drives: the gateway's swap and its refusal record. */
export interface ReconcileTarget {
  /** The serving version's number (0 before the first). */
  readonly versionNumber: number
  /** Builds a version from a validated config and swaps to it; a failed build is refused there. */
  swap(loaded: LoadedConfig, reason: string): Promise<ReloadResult>
  /** Counts, logs and records a config that never reached a build. */
  refuse(err: unknown, reason: string): ReloadResult
  /**
   * Records that the config in effect was offered again after a refusal (the good file put
   * back): nothing is built, and the last outcome stops being that refusal.
   */
  restored(reason: string): ReloadResult
}

export interface ConfigReconcilerOptions {
  readonly provider: ConfigProvider
  readonly target: ReconcileTarget
  /** The config the gateway started with: the first "in effect". */
  readonly initial: CheckedConfig
  readonly log: Logger
}

/** Same source and same validated config (environment overrides and defaults applied) → same hash. */
export function configHash (loaded: CheckedConfig): string {
  return createHash('sha256').update(loaded.source).update('\0').update(JSON.stringify(loaded.config)).digest('hex')
}

/** The compiled config a snapshot carries (compiled here when it is a document); throws the refusal or the compile's ConfigError. */
export async function loadSnapshot (snapshot: ConfigSnapshot): Promise<LoadedConfig> {
  if ('error' in snapshot) throw snapshot.error
  return 'loaded' in snapshot ? snapshot.loaded : await compileConfig(snapshot.document, snapshot.source)
}

export class ConfigReconciler {
  private queue: Promise<unknown> = Promise.resolve()
  private inEffect: string
  /** The last outcome was a refusal: the config in effect offered again is news ("restored"). */
  private refusedLast = false
  private started = false

  constructor (private readonly opts: ConfigReconcilerOptions) {
    this.inEffect = configHash(opts.initial)
  }

  /** Starts the provider's watch; each snapshot it emits is offered here. */
  start (): void {
    if (this.started) return
    this.started = true
    this.opts.provider.start((s) => { void this.offer(s) })
  }

  /**
   * Applies a snapshot after the ones before it. Unless `force`, a snapshot whose config is
   * the one in effect is dropped: unchanged content is not a reload.
   */
  async offer (snapshot: ConfigSnapshot, force = false): Promise<ReloadResult> {
    return await this.serial(async () => await this.apply(snapshot, force))
  }

  /**
   * "Reload now" (SIGHUP, `POST /reload`): asks the provider for a fresh snapshot and applies
   * it even when unchanged, so a reload also re-reads what the config points at (plugin modules).
   */
  async reload (reason: string): Promise<ReloadResult> {
    return await this.serial(async () => {
      let snapshot: ConfigSnapshot
      try {
        snapshot = await this.opts.provider.snapshot(reason)
      } catch (err) {
        // The source could not be asked at all (Consul unreachable): refused like a bad config.
        return this.settled(this.opts.target.refuse(err, reason))
      }
      return await this.apply(snapshot, true)
    })
  }

  async close (): Promise<void> {
    await this.opts.provider.close()
  }

  private async serial (fn: () => Promise<ReloadResult>): Promise<ReloadResult> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return await run
  }

  private async apply (snapshot: ConfigSnapshot, force: boolean): Promise<ReloadResult> {
    const { target } = this.opts
    let loaded: LoadedConfig
    try {
      loaded = await loadSnapshot(snapshot)
    } catch (err) {
      return this.settled(target.refuse(err, snapshot.reason))
    }
    const hash = configHash(loaded)
    if (!force && hash === this.inEffect) {
      if (this.refusedLast) return this.settled(target.restored(snapshot.reason))
      this.opts.log.debug({ reason: snapshot.reason, source: snapshot.source }, 'config unchanged; not a reload')
      return { ok: true, version: target.versionNumber }
    }
    const result = this.settled(await target.swap(loaded, snapshot.reason))
    if (result.ok) this.inEffect = hash
    if (result.ok) for (const w of loaded.warnings ?? []) this.opts.log.warn({ path: w.path, hint: w.hint, source: snapshot.source }, `config warning: ${w.message}`)
    return result
  }

  /** Remembers whether the last outcome was a refusal. */
  private settled (result: ReloadResult): ReloadResult {
    this.refusedLast = !result.ok
    return result
  }
}
