// The Consul KV config provider: a shared mesh-wide key merged under a per-gateway key (and
// over an optional base file), each watched with a blocking query; every change is emitted
// as a whole merged snapshot to the same watcher a file reload goes through.
import type { Logger } from 'pino'
import { BlockingLoop } from './blocking-loop.js'
import { Cancellable, type ConsulClient } from './client.js'
import { ConfigError, parseConfigText } from '../../config/load.js'
import type { ConfigProvider, ConfigSnapshot, EmitSnapshot } from '../../config/provider.js'

/** Mappings merge key by key; anything else (arrays included) is replaced by the later layer. */
export function mergeLayers (layers: readonly unknown[]): unknown {
  const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)
  let out: unknown = {}
  for (const layer of layers) {
    if (layer === undefined || layer === null) continue
    out = isMap(out) && isMap(layer) ? mergeTwo(out, layer) : layer
  }
  return out
  function mergeTwo (a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
    const r: Record<string, unknown> = { ...a }
    for (const [k, v] of Object.entries(b)) r[k] = isMap(r[k]) && isMap(v) ? mergeTwo(r[k] as Record<string, unknown>, v) : v
    return r
  }
}

export interface KvConfigProviderOptions {
  readonly client: ConsulClient
  /** Lowest precedence first: e.g. [shared, per-gateway]. */
  readonly keys: readonly string[]
  /** A parsed base document (from --config), below every key. */
  readonly base?: unknown
  readonly log: Logger
  readonly wait?: string
}

export class KvConfigProvider implements ConfigProvider {
  /** The last value of each key that parsed (undefined: missing or empty). */
  private readonly values = new Map<string, unknown>()
  private readonly loops: Array<BlockingLoop<{ Value: string | null } | undefined>> = []
  private closed = false
  readonly source: string

  constructor (private readonly opts: KvConfigProviderOptions) {
    this.source = `kv:${opts.keys.join('+')}`
  }

  /** Reads every key once (no blocking) and merges them; a value that does not parse is a refusal. */
  async snapshot (reason: string): Promise<ConfigSnapshot> {
    const read = new Map<string, unknown>()
    try {
      for (const key of this.opts.keys) {
        const r = await this.opts.client.kvGet(key, 0n, '1s', new Cancellable())
        read.set(key, this.parse(key, r.data?.Value ?? null))
      }
    } catch (err) {
      if (err instanceof ConfigError) return { source: this.source, reason, error: err }
      throw err
    }
    for (const [key, value] of read) this.values.set(key, value)
    return { source: this.source, reason, document: this.merged() }
  }

  /** Starts a blocking watch per key; a changed key emits the merged document of every layer. */
  start (emit: EmitSnapshot): void {
    if (this.closed || this.loops.length > 0) return
    const reason = 'consul kv change'
    for (const key of this.opts.keys) {
      const loop = new BlockingLoop<{ Value: string | null } | undefined>({
        makeContext: () => new Cancellable(),
        fetch: async (index, ctx) => await this.opts.client.kvGet(key, index, this.opts.wait ?? '30s', ctx),
        onChange: (data) => {
          if (this.closed) return
          let value: unknown
          try {
            value = this.parse(key, data?.Value ?? null)
          } catch (err) {
            emit({ source: this.source, reason, error: err as ConfigError })
            return
          }
          // The loop's first answer usually repeats what snapshot() read.
          if (JSON.stringify(value) === JSON.stringify(this.values.get(key))) return
          this.values.set(key, value)
          emit({ source: this.source, reason, document: this.merged() })
        },
        onError: (err, attempt, retryInMs) => {
          if (attempt === 1 || attempt % 10 === 0) this.opts.log.warn({ key, attempt, retryInMs, err: err.message }, 'Consul KV watch failed; the running config stays')
        },
        onRecover: () => { this.opts.log.info({ key }, 'Consul KV watch resumed') }
      })
      this.loops.push(loop)
      loop.start()
    }
  }

  async close (): Promise<void> {
    this.closed = true
    await Promise.all(this.loops.map(async (l) => { await l.stop() }))
  }

  private parse (key: string, value: string | null): unknown {
    if (value === null) return undefined
    // The consul client has already decoded the base64 Value.
    const text = value
    if (text.trim() === '') return undefined
    return parseConfigText(text, `kv:${key}`)
  }

  private merged (): unknown {
    // A copy: validation applies environment overrides in place, and the layers are kept.
    return structuredClone(mergeLayers([this.opts.base, ...this.opts.keys.map((k) => this.values.get(k))]))
  }
}
