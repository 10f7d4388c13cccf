// The benchmark's own client of the Consul agent's HTTP API: catalog registrations in
// bulk with bounded concurrency, on an undici Pool.
//
// Its connections leave from a separate loopback source address (127.0.0.2 by default):
// Consul limits concurrent HTTP connections per client IP (limits.http_max_conns_per_client,
// 200 by default), and the harness must not compete with the gateway under test for that
// budget. The destination is always the agent on 127.0.0.1.
import { Pool } from 'undici'

export interface Instance {
  readonly node: string
  readonly service: string
  readonly id: string
  readonly port: number
  readonly address?: string
}

export class ConsulCatalog {
  private readonly pool: Pool

  constructor (readonly url: string, opts: { connections: number, localAddress?: string }) {
    this.pool = new Pool(url, {
      connections: opts.connections,
      keepAliveTimeout: 30_000,
      headersTimeout: 20_000,
      bodyTimeout: 20_000,
      ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {})
    })
  }

  async call<T = unknown> (method: 'GET' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<T> {
    const res = await this.pool.request({
      method,
      path,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? null : JSON.stringify(body),
      signal: AbortSignal.timeout(20_000)
    })
    const text = await res.body.text()
    if (res.statusCode < 200 || res.statusCode >= 300) throw new Error(`Consul ${method} ${path}: HTTP ${res.statusCode}: ${text.trim().slice(0, 300)}`)
    return (text.trim() === '' ? null : JSON.parse(text)) as T
  }

  /** One instance with a passing check, on an external (catalog-only) node. */
  async register (inst: Instance): Promise<void> {
    const address = inst.address ?? '127.0.0.1'
    await this.call('PUT', '/v1/catalog/register', {
      Node: inst.node,
      Address: '127.0.0.1',
      Service: { ID: inst.id, Service: inst.service, Address: address, Port: inst.port },
      Check: { Node: inst.node, CheckID: `service:${inst.id}`, Name: 'bench check', Status: 'passing', ServiceID: inst.id }
    })
  }

  async deregister (node: string, serviceId: string): Promise<void> {
    await this.call('PUT', '/v1/catalog/deregister', { Node: node, ServiceID: serviceId })
  }

  async close (): Promise<void> {
    await this.pool.close()
  }
}

export interface BulkResult {
  readonly ms: number
  readonly done: number
  readonly retries: number
  readonly failed: number
  readonly firstError?: string
}

/**
 * Runs `fn` over `items` with at most `concurrency` in flight; each item is tried up to
 * `attempts` times. Never throws: failures are counted.
 */
export async function bounded<T> (items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>, attempts = 3): Promise<BulkResult> {
  const t0 = performance.now()
  let next = 0
  let done = 0
  let retries = 0
  let failed = 0
  let firstError: string | undefined
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!
      for (let attempt = 1; attempt <= attempts; attempt++) {
        try {
          await fn(item)
          done++
          break
        } catch (err) {
          firstError ??= (err as Error).message
          if (attempt === attempts) failed++
          else retries++
        }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker))
  return { ms: performance.now() - t0, done, retries, failed, ...(firstError !== undefined ? { firstError } : {}) }
}
