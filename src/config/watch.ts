// Watches a config file for changes (for the file config provider, src/config/provider-file.ts).
// Watches the directory, not the file: editors and `kubectl cp`-style tools replace files by
// rename, which a file watch would lose.
import { readFileSync, watch, type FSWatcher } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import { createHash } from 'node:crypto'
import type { Logger } from 'pino'

export class ConfigWatcher {
  private readonly watcher: FSWatcher
  private timer: NodeJS.Timeout | undefined
  private lastHash: string | undefined

  constructor (file: string, onChange: () => void, log: Logger, debounceMs = 150) {
    const path = resolve(file)
    const name = basename(path)
    // Read now, not asynchronously: a write landing before an async read finished would be
    // taken for the starting content, and that change silently never applied.
    this.lastHash = this.hashNow(path)
    this.watcher = watch(dirname(path), (_event, changed) => {
      if (changed !== null && changed !== name) return
      clearTimeout(this.timer)
      // Debounced: one save is often several events; unchanged content is not a change.
      this.timer = setTimeout(() => {
        void this.hash(path).then((h) => {
          if (h === undefined || h === this.lastHash) return
          this.lastHash = h
          onChange()
        })
      }, debounceMs)
    })
    this.watcher.on('error', (err) => { log.error({ err, file: path }, 'config watch failed; use SIGHUP or POST /reload') })
  }

  private hashNow (path: string): string | undefined {
    try {
      return createHash('sha256').update(readFileSync(path)).digest('hex')
    } catch {
      return undefined
    }
  }

  private async hash (path: string): Promise<string | undefined> {
    try {
      return createHash('sha256').update(await readFile(path)).digest('hex')
    } catch {
      return undefined
    }
  }

  close (): void {
    clearTimeout(this.timer)
    this.watcher.close()
  }
}
