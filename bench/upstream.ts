// The benchmark upstream, run in its own process: a node:http server that answers every
// request with the same small keep-alive response ('hello world'), optionally after a fixed
// delay (a slow endpoint). GET /__bench/count answers how many other requests it served.
// With --loopback-count N it listens on the port at each of the first N addresses of
// bench/loopback.ts instead of --host: N endpoints from one process.
//   node dist/bench/upstream.js --port N [--delay-ms 20] [--loopback-count 1000]
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { parseArgs } from 'node:util'
import { loopbackAddress } from './loopback.js'

const { values } = parseArgs({ options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' }, 'delay-ms': { type: 'string', default: '0' }, 'loopback-count': { type: 'string', default: '0' } } })
const port = Number(values.port ?? '0')
const delayMs = Number(values['delay-ms'])
const loopbackCount = Number(values['loopback-count'])
if (!Number.isInteger(loopbackCount) || loopbackCount < 0) throw new Error(`--loopback-count must be a whole number (got "${values['loopback-count']}")`)
let served = 0

const body = Buffer.from('hello world')
const headers = { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(body.length) }

// Node discards an unread request body itself once the response ends.
const handler = (req: IncomingMessage, res: ServerResponse): void => {
  if (req.url === '/__bench/count') {
    res.end(String(served))
    return
  }
  served++
  if (delayMs > 0) {
    setTimeout(() => { res.writeHead(200, headers); res.end(body) }, delayMs)
    return
  }
  res.writeHead(200, headers)
  res.end(body)
}

const hosts = loopbackCount > 0 ? Array.from({ length: loopbackCount }, (_, i) => loopbackAddress(i)) : [values.host!]
const servers: Server[] = hosts.map((host) => {
  const server = createServer(handler)
  // Longer than the proxies' pool keep-alive, so an idle pooled connection is never closed
  // under a proxy's feet in the middle of a run.
  server.keepAliveTimeout = 120_000
  server.headersTimeout = 125_000
  server.listen(port, host)
  return server
})
await Promise.all(servers.map(async (server) => { await new Promise<void>((resolve, reject) => { server.once('listening', resolve); server.once('error', reject) }) }))
process.stdout.write(`upstream listening on ${hosts.length === 1 ? hosts[0]! : `${hosts[0]!} .. ${hosts[hosts.length - 1]!} (${hosts.length} addresses)`}:${port} (pid ${process.pid})\n`)

const stop = (): void => {
  let open = servers.length
  for (const server of servers) {
    server.close(() => { if (--open === 0) process.exit(0) })
    server.closeAllConnections()
  }
  setTimeout(() => process.exit(0), 2000).unref()
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
