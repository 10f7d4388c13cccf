// The file config provider: snapshots of one config file, read on demand and, when
// watching, on every change of its content (src/config/watch.ts: directory watch, debounced,
// unchanged bytes dropped).
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import { ConfigError, loadConfigFile } from './load.js'
import type { ConfigProvider, ConfigSnapshot, EmitSnapshot } from './provider.js'
import { ConfigWatcher } from './watch.js'

export interface FileConfigProviderOptions {
  readonly log: Logger
  /** Watch the file and emit a snapshot when its content changes (`fastmesh start` does). */
  readonly watch?: boolean
  readonly debounceMs?: number
}

export class FileConfigProvider implements ConfigProvider {
  private watcher: ConfigWatcher | undefined
  private closed = false

  constructor (readonly source: string, private readonly opts: FileConfigProviderOptions) {}

  async snapshot (reason: string): Promise<ConfigSnapshot> {
    try {
      return { source: this.source, reason, loaded: await loadConfigFile(this.source) }
    } catch (err) {
      if (err instanceof ConfigError) return { source: this.source, reason, error: err }
      throw err
    }
  }

  start (emit: EmitSnapshot): void {
    if (this.opts.watch !== true || this.closed || this.watcher !== undefined) return
    this.watcher = new ConfigWatcher(resolve(this.source), () => {
      void this.snapshot('file change').then((s) => { if (!this.closed) emit(s) })
    }, this.opts.log, this.opts.debounceMs)
  }

  async close (): Promise<void> {
    this.closed = true
    this.watcher?.close()
  }
}
