// A small sample service for the demo mesh and tests: answers with who it is, and its
// health can be switched off and on through its own endpoint. Given services to call, it
// calls each of them on every request, through its node-local gateway, as an app in the mesh
// would, and says how each call went.
import { Agent, createServer, request, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** How a sample service reaches the services it calls: always through its node gateway. */
export interface SampleCalls {
  /** The services called (GET /) on every request but /health and /_demo/*. */
  readonly services: readonly string[]
  /**
   * `proxy`: the gateway as an HTTP proxy (what `HTTP_PROXY` gives an app): absolute-form
   * targets, `GET http://orders/`. `gateway`: the gateway's outbound listener with the
   * service in the Host header.
   */
  readonly through: { readonly proxy: string } | { readonly gateway: string }
}

// Headers an app must pass on so that the calls it makes join its caller's request: the
// request id and the trace context (W3C and B3).
const PROPAGATED = ['x-request-id', 'traceparent', 'tracestate', 'b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags']
// Calls carry their depth, so services that call each other in a loop stop after a few hops.
const DEPTH_HEADER = 'x-sample-call-depth'
const MAX_DEPTH = 3
const CALL_TIMEOUT_MS = 2_000

interface CallResult { service: string, status: number, instance?: string, error?: string }

export interface SampleService {
  readonly name: string
  readonly instance: string
  readonly server: Server
  readonly port: number
  healthy: boolean
  close(): Promise<void>
}

export async function startSampleService (name: string, instance: string, port: number, address = '127.0.0.1', calls?: SampleCalls): Promise<SampleService> {
  const state = { healthy: true }
  const agent = new Agent({ keepAlive: true, maxSockets: 16 })
  const server = createServer((req, res) => {
    const url = req.url ?? '/'
    if (url === '/health') {
      res.writeHead(state.healthy ? 200 : 503, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ status: state.healthy ? 'passing' : 'failing', instance }))
      return
    }
    if (url === '/_demo/fail' || url === '/_demo/recover') {
      state.healthy = url === '/_demo/recover'
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ instance, healthy: state.healthy }))
      return
    }
    // Reads (and discards) the body so uploads through the mesh can be shown too.
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length })
    req.on('end', () => {
      void callAll(calls, req.headers, agent).then((results) => {
        const body = JSON.stringify({
          service: name,
          instance,
          method: req.method,
          path: url,
          bodyBytes: bytes,
          requestId: req.headers['x-request-id'],
          forwardedFor: req.headers['x-forwarded-for'],
          // The trace context the mesh sent (its second field is the trace id): the local mesh's
          // tutorial looks the request's trace up with it.
          traceparent: req.headers.traceparent,
          ...(results !== undefined ? { calls: results } : {})
        })
        res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': instance })
        // A final newline, so that answers read well in a terminal (curl prints them as they are).
        res.end(body + '\n')
      })
    })
  })
  server.listen(port, address)
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  const sample: SampleService = {
    name,
    instance,
    server,
    port: (server.address() as AddressInfo).port,
    get healthy () { return state.healthy },
    set healthy (v: boolean) { state.healthy = v },
    close: async () => {
      agent.destroy()
      server.closeAllConnections()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
  return sample
}

/** Calls every service of `calls` at once; undefined when there is nothing to call (or the loop guard says stop). */
async function callAll (calls: SampleCalls | undefined, incoming: IncomingHttpHeaders, agent: Agent): Promise<CallResult[] | undefined> {
  if (calls === undefined || calls.services.length === 0) return undefined
  const depth = Number(incoming[DEPTH_HEADER] ?? 0)
  if (!(depth < MAX_DEPTH)) return undefined
  const headers: Record<string, string> = { [DEPTH_HEADER]: String(depth + 1) }
  for (const h of PROPAGATED) {
    const v = incoming[h]
    if (typeof v === 'string') headers[h] = v
  }
  return await Promise.all(calls.services.map(async (service) => await callOne(service, calls.through, headers, agent)))
}

async function callOne (service: string, through: SampleCalls['through'], headers: Record<string, string>, agent: Agent): Promise<CallResult> {
  const gateway = new URL('proxy' in through ? through.proxy : through.gateway)
  // Through a proxy the target is absolute (`GET http://orders/`); otherwise the Host header names the service.
  const path = 'proxy' in through ? `http://${service}/` : '/'
  return await new Promise<CallResult>((resolve) => {
    const req = request({ host: gateway.hostname, port: gateway.port === '' ? 80 : Number(gateway.port), method: 'GET', path, headers: { ...headers, host: service }, agent, timeout: CALL_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', (err) => { resolve({ service, status: 0, error: err.message }) })
      res.on('end', () => {
        const served = res.headers['x-served-by']
        const status = res.statusCode ?? 0
        // A refusal names its FASTMESH_ERR_* code (a denied intention: FASTMESH_ERR_FORBIDDEN).
        const error = status >= 400 ? errorCode(Buffer.concat(chunks).toString('utf8')) : undefined
        resolve({ service, status, ...(typeof served === 'string' ? { instance: served } : {}), ...(error !== undefined ? { error } : {}) })
      })
    })
    req.on('timeout', () => { req.destroy(new Error(`no answer in ${CALL_TIMEOUT_MS} ms`)) })
    req.on('error', (err) => { resolve({ service, status: 0, error: (err as NodeJS.ErrnoException).code ?? err.message }) })
    req.end()
  })
}

function errorCode (body: string): string | undefined {
  try {
    // The gateway's error body: {"error":{"code":"FASTMESH_ERR_...","message":...}}.
    const code = (JSON.parse(body) as { error?: { code?: unknown } }).error?.code
    return typeof code === 'string' ? code : undefined
  } catch {
    return undefined
  }
}
