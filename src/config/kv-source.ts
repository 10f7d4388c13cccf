// Config from Consul KV: a shared mesh-wide key merged under a per-gateway key (and over
// an optional base file), each watched with a blocking query; every change goes through
// the same validate-compile-swap path as a file reload.
import type { Logger } from 'pino'
import { BlockingLoop } from '../discovery/consul/blocking-loop.js'
import { Cancellable, type ConsulClient } from '../discovery/consul/client.js'
import { ConfigError, parseConfigText } from './load.js'

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

export interface KvConfigSourceOptions {
  readonly client: ConsulClient
  /** Lowest precedence first: e.g. [shared, per-gateway]. */
  readonly keys: readonly string[]
  /** A parsed base document (from --config), below every key. */
  readonly base?: unknown
  readonly log: Logger
  readonly wait?: string
  /** A merged document whose layers all parsed; validation is the caller's. */
  readonly onDocument: (doc: unknown, source: string) => void
  /** A key whose value is not YAML/JSON: refused like any invalid config. */
  readonly onInvalid: (err: ConfigError) => void
}

export class KvConfigSource {
  private readonly values = new Map<string, unknown>()
  private readonly loops: Array<BlockingLoop<{ Value: string | null } | undefined>> = []
  readonly source: string

  constructor (private readonly opts: KvConfigSourceOptions) {
    this.source = `kv:${opts.keys.join('+')}`
  }

  /** Reads every key once (no blocking); throws ConfigError when a value does not parse. */
  async initial (): Promise<unknown> {
    for (const key of this.opts.keys) {
      const r = await this.opts.client.kvGet(key, 0n, '1s', new Cancellable())
      this.values.set(key, this.parse(key, r.data?.Value ?? null))
    }
    return this.merged()
  }

  /** Starts the blocking watches; each change hands a merged document to onDocument. */
  watch (): void {
    for (const key of this.opts.keys) {
      let first = true
      const loop = new BlockingLoop<{ Value: string | null } | undefined>({
        makeContext: () => new Cancellable(),
        fetch: async (index, ctx) => await this.opts.client.kvGet(key, index, this.opts.wait ?? '30s', ctx),
        onChange: (data) => {
          let value: unknown
          try {
            value = this.parse(key, data?.Value ?? null)
          } catch (err) {
            this.opts.onInvalid(err as ConfigError)
            return
          }
          const unchanged = JSON.stringify(value) === JSON.stringify(this.values.get(key))
          this.values.set(key, value)
          // The loop's first answer repeats what initial() read.
          if (first && unchanged) { first = false; return }
          first = false
          if (!unchanged) this.opts.onDocument(this.merged(), this.source)
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
    return mergeLayers([this.opts.base, ...this.opts.keys.map((k) => this.values.get(k))])
  }
}
