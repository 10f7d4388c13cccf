// A small sample service for the demo mesh and tests: answers with who it is, and its
// health can be switched off and on through its own endpoint.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface SampleService {
  readonly name: string
  readonly instance: string
  readonly server: Server
  readonly port: number
  healthy: boolean
  close(): Promise<void>
}

export async function startSampleService (name: string, instance: string, port: number, address = '127.0.0.1'): Promise<SampleService> {
  const state = { healthy: true }
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
      const body = JSON.stringify({
        service: name,
        instance,
        method: req.method,
        path: url,
        bodyBytes: bytes,
        requestId: req.headers['x-request-id'],
        forwardedFor: req.headers['x-forwarded-for']
      })
      res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': instance })
      res.end(body)
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
      server.closeAllConnections()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
  return sample
}
