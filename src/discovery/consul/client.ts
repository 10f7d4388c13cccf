// A typed face over the `consul` npm client: connection settings like Consul's own tools
// (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN), and blocking reads that also return X-Consul-Index.
//
// The client's own `Watch` is not used for discovery: it has no jitter on its backoff, no
// floor on the loop rate, and treats an index of 0 as an error instead of resetting to 1.
import { EventEmitter } from 'node:events'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import Consul from 'consul'
import { Agent, request, type Dispatcher } from 'undici'
import { waitMs, waitParam } from '../../config/consul-wait.js'
import { parseConsulAddress } from '../../config/consul-address.js'

export interface ConsulSettings {
  /** `host:port` or `http(s)://host:port`. */
  readonly address: string
  readonly token?: string
  readonly datacenter?: string
  /** Connections to the agent at most (each blocking query holds one while it waits). */
  readonly maxConnections?: number
}

export interface ResolvedConsul {
  readonly host: string
  readonly port: number
  readonly secure: boolean
  readonly token: string | undefined
  readonly datacenter: string | undefined
  /** `http://host:port`, for logs and the admin API. */
  readonly url: string
  readonly maxConnections: number
}

/**
 * Explicit settings win, then CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN, then 127.0.0.1:8500. The
 * address is checked by the same rule as config validation (src/config/consul-address.ts);
 * a refused address is not quoted when it carries credentials.
 */
export function resolveConsul (settings: Partial<ConsulSettings> = {}, env: NodeJS.ProcessEnv = process.env): ResolvedConsul {
  const given = settings.address ?? env.CONSUL_HTTP_ADDR
  const from = settings.address !== undefined ? 'Consul address' : 'CONSUL_HTTP_ADDR'
  const parsed = parseConsulAddress(given ?? '127.0.0.1:8500')
  if ('problem' in parsed) {
    throw new Error(given !== undefined && !given.includes('@') ? `invalid ${from} "${given}": ${parsed.problem}` : `invalid ${from}: it ${parsed.problem}`)
  }
  const { host, hostLiteral, port } = parsed.address
  const secure = parsed.address.secure ?? env.CONSUL_HTTP_SSL === 'true'
  const token = settings.token ?? (env.CONSUL_HTTP_TOKEN !== undefined && env.CONSUL_HTTP_TOKEN !== '' ? env.CONSUL_HTTP_TOKEN : undefined)
  return { host, port, secure, token, datacenter: settings.datacenter, url: `${secure ? 'https' : 'http'}://${hostLiteral}:${port}`, maxConnections: settings.maxConnections ?? 128 }
}

export interface BlockingResult<T> {
  readonly index: bigint
  readonly data: T
}

/** Raw shape the client returns when asked for the response too. */
type WithResponse<T> = [{ headers: Record<string, string | undefined>, statusCode: number }, T]

/** A request that can be cancelled: the client aborts it when its ctx emits `cancel`. */
export class Cancellable extends EventEmitter {
  readonly includeResponse = true
  cancel (): void { this.emit('cancel') }
}

export class ConsulClient {
  readonly consul: Consul
  readonly settings: ResolvedConsul
  // The consul npm client has no Connect endpoints (health/connect, ca/leaf, ca/roots,
  // authorize) and cannot register `Kind: connect-proxy`; those, and discovery's catalog
  // queries, go through undici here. KV and registrations keep the consul client.
  private readonly http: Agent
  /** Connections of the undici agent: discovery's blocking queries, Connect watches. */
  readonly discoveryConnections: number

  constructor (settings: ResolvedConsul) {
    this.settings = settings
    // Consul (1.8) refuses more than http_max_conns_per_client (200) connections from one
    // address, and resets the ones over it: the budget is capped below that, split between
    // the KV/registration client (a quarter) and this one.
    const kvShare = Math.max(4, Math.floor(settings.maxConnections / 4))
    const undiciShare = Math.max(4, settings.maxConnections - kvShare)
    this.discoveryConnections = undiciShare
    this.http = new Agent({ connections: undiciShare, keepAliveTimeout: 60_000 })
    this.consul = new Consul({
      host: settings.host,
      port: settings.port,
      secure: settings.secure,
      agent: settings.secure ? new HttpsAgent({ keepAlive: true, maxSockets: kvShare }) : new HttpAgent({ keepAlive: true, maxSockets: kvShare }),
      ...(settings.token !== undefined ? { defaults: { token: settings.token } } : {})
    })
  }

  /** GET /v1/kv/:key (one key), blocking; `data` undefined when the key does not exist. */
  async kvGet (key: string, index: bigint, wait: string, ctx: Cancellable): Promise<BlockingResult<{ Value: string | null, ModifyIndex: number } | undefined>> {
    const opts = { key, index: index.toString(), wait: waitParam(wait), timeout: waitMs(wait) + Math.max(waitMs(wait) / 8, 1000), ctx }
    const [res, data] = await (this.consul.kv.get as unknown as (o: typeof opts) => Promise<WithResponse<{ Value: string | null, ModifyIndex: number } | undefined>>)(opts)
    return { index: parseIndex(res.headers['x-consul-index']), data }
  }

  /**
   * One call to the agent's HTTP API (JSON in and out). With `index`/`wait` it is a blocking
   * query; the result carries X-Consul-Index. Non-2xx answers throw with status and body.
   */
  async agentRequest<T> (method: 'GET' | 'PUT' | 'POST' | 'DELETE', path: string, opts: { body?: unknown, index?: bigint, wait?: string, query?: Record<string, string>, ctx?: Cancellable, dispatcher?: Dispatcher, unlessIndex?: bigint } = {}): Promise<BlockingResult<T>> {
    const q = new URLSearchParams(opts.query)
    if (opts.index !== undefined) q.set('index', opts.index.toString())
    if (opts.wait !== undefined) q.set('wait', waitParam(opts.wait))
    if (this.settings.datacenter !== undefined && !q.has('dc') && method === 'GET') q.set('dc', this.settings.datacenter)
    const qs = q.toString()
    const controller = new AbortController()
    const onCancel = (): void => { controller.abort(new Error('cancelled')) }
    opts.ctx?.once('cancel', onCancel)
    const timeoutMs = opts.wait !== undefined ? waitMs(opts.wait) + Math.max(waitMs(opts.wait) / 8, 1000) : 10_000
    const timer = setTimeout(() => { controller.abort(new Error(`Consul ${method} ${path} timed out after ${timeoutMs} ms`)) }, timeoutMs)
    try {
      const res = await request(`${this.settings.url}/v1${path}${qs !== '' ? `?${qs}` : ''}`, {
        method,
        dispatcher: opts.dispatcher ?? this.http,
        signal: controller.signal,
        headers: {
          ...(this.settings.token !== undefined ? { 'x-consul-token': this.settings.token } : {}),
          ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {})
        },
        ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {})
      })
      const text = await res.body.text()
      // undici returns the connection to its pool a turn after the body ends: a caller that
      // sends its next request at once (a blocking loop, queued reads) would open another.
      await new Promise((resolve) => { setImmediate(resolve) })
      if (res.statusCode < 200 || res.statusCode >= 300) {
        throw Object.assign(new Error(`Consul ${method} ${path}: HTTP ${res.statusCode}: ${text.trim().slice(0, 300)}`), { statusCode: res.statusCode })
      }
      const index = parseIndex(typeof res.headers['x-consul-index'] === 'string' ? res.headers['x-consul-index'] : undefined)
      // The caller has this index's data already: not parsed again.
      if (opts.unlessIndex !== undefined && index === opts.unlessIndex && index > 0n) return { index, data: undefined as T }
      return { index, data: (text === '' ? null : JSON.parse(text)) as T }
    } finally {
      clearTimeout(timer)
      opts.ctx?.off('cancel', onCancel)
    }
  }

  /**
   * Connections of their own to the agent, `connections` at most, for requests sent back to
   * back (undici opens a new connection when the next request goes out before the last one's
   * is released): the caller closes it.
   */
  dedicatedConnections (connections: number): Agent {
    return new Agent({ connections, keepAliveTimeout: 60_000 })
  }

  close (): void {
    this.consul.destroy()
    void this.http.close()
  }
}

function parseIndex (value: string | undefined): bigint {
  if (value === undefined || !/^[0-9]+$/.test(value)) return 0n
  return BigInt(value)
}

/** One entry of /v1/health/service: a service instance on a node, with its checks. */
export interface ConsulHealthEntry {
  Node: { Node: string, Address: string, Datacenter?: string, Meta?: Record<string, string> | null }
  Service: {
    ID: string
    Service: string
    Address: string
    Port: number
    Tags: string[] | null
    Meta: Record<string, string> | null
    Weights?: { Passing: number, Warning: number } | null
    Kind?: string
    Proxy?: { DestinationServiceName?: string } | null
  }
  Checks: Array<{ CheckID: string, Status: 'passing' | 'warning' | 'critical' | 'maintenance', Output?: string, Name?: string }>
}
