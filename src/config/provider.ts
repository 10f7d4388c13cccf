// Config providers: where config versions come from (a file, Consul KV). A provider hands
// whole snapshots to one watcher (src/config/reconciler.ts), which dedupes, validates and
// swaps; a provider never talks to the gateway.
import type { ConfigError, LoadedConfig } from './load.js'

/** What a snapshot is about: `source` is a file path or `kv:<key>[+<key>]`, `reason` says why it was taken. */
interface SnapshotBase {
  readonly source: string
  readonly reason: string
}

/**
 * One whole config as the source holds it now: a parsed document the watcher compiles,
 * an already compiled config, or a refusal (the source could not be read or parsed).
 */
export type ConfigSnapshot =
  | SnapshotBase & { readonly document: unknown }
  | SnapshotBase & { readonly loaded: LoadedConfig }
  | SnapshotBase & { readonly error: ConfigError }

export type EmitSnapshot = (snapshot: ConfigSnapshot) => void

export interface ConfigProvider {
  /** Where snapshots come from, as `LoadedConfig.source` names it. */
  readonly source: string
  /** Reads the source now ("reload now": SIGHUP, `POST /reload`, and the config to start with). */
  snapshot(reason: string): Promise<ConfigSnapshot>
  /** Starts watching; every change is emitted as a whole snapshot. A provider that does not watch emits nothing. */
  start(emit: EmitSnapshot): void
  /** Stops watching; nothing is emitted afterwards. */
  close(): Promise<void>
}
