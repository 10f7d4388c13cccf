// Helpers for tests of one forwarding layer alone: an endpoint target on a real undici Pool
// (closed with the test), and a client request over node:http that can carry a body.
import type { TestContext } from 'node:test'
import { request as httpRequest } from 'node:http'
import { Pool } from 'undici'
import type { Endpoint } from '../../src/discovery/types.js'
import { endpointOrigin, type EndpointTarget } from '../../src/upstream/endpoint-pool.js'
import { defer, readResponse, type HttpResult } from './gateway.js'

/** An endpoint of `service` at 127.0.0.1:`port`, as discovery would hand it over. */
export function endpointAt (port: number, service = 'orders'): Endpoint {
  return { id: `${service}-${port}`, service, address: '127.0.0.1', port, weight: 1, tags: [], meta: {}, health: 'passing', origin: 'config' }
}

/** A target whose own undici Pool points at 127.0.0.1:`port`; the pool is destroyed after the test. */
export function endpointTarget (t: TestContext, port: number, service = 'orders'): EndpointTarget {
  const pool = new Pool(endpointOrigin('127.0.0.1', port), { connections: 4, connect: { timeout: 2_000 } })
  defer(t, async () => { await pool.destroy() })
  return { endpoint: endpointAt(port, service), pool, label: `127.0.0.1:${port}` }
}

/** One request on a fresh connection, headers sent as given; the answer read to the end. */
export async function send (origin: string, path: string, opts: { method?: string, headers?: Record<string, string>, body?: string } = {}): Promise<HttpResult> {
  const { hostname, port } = new URL(origin)
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      readResponse(res).then(resolve, reject)
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}
