// Reloads across workers, all or none: the primary builds the version first (its copy serves
// the admin API's route views and refuses what would fail anyway), then every worker builds
// it; only when all have does each serve it. One refusal and nobody does.
import type { LoadedConfig } from '../config/load.js'
import type { ReconcileTarget, ReloadResult } from '../config/reconciler.js'
import type { PreparedVersion, VersionSwap } from '../gateway/version-swap.js'
import { fastmeshError } from '../errors.js'
import type { WorkerPool } from './pool.js'

/** Longest time a worker may take to build a version (plugins may fetch keys, connect to Redis). */
const PREPARE_TIMEOUT_MS = 30_000

export class ClusterSwap implements ReconcileTarget {
  constructor (private readonly versions: VersionSwap, private readonly pool: WorkerPool) {}

  get versionNumber (): number {
    return this.versions.versionNumber
  }

  async swap (given: LoadedConfig, reason: string): Promise<ReloadResult> {
    return await this.pool.exclusive(async () => {
      if (this.versions.halted) return { ok: false, version: this.versions.versionNumber, error: 'shutting down' }
      let prepared: PreparedVersion
      try {
        prepared = await this.versions.prepare(given)
      } catch (err) {
        return this.versions.refuse(err, reason)
      }
      const answer = await this.pool.prepare(given.config, given.source, prepared.built.version, PREPARE_TIMEOUT_MS)
      if (!answer.ok) {
        await this.versions.abandon(prepared)
        return this.versions.refuse(fastmeshError('WORKER_REFUSED', [answer.error]), reason)
      }
      await answer.commit(reason)
      return this.versions.commit(prepared, reason)
    })
  }

  refuse (err: unknown, reason: string): ReloadResult {
    return this.versions.refuse(err, reason)
  }

  restored (reason: string): ReloadResult {
    return this.versions.restored(reason)
  }
}
