// The benchmark upstream, run in its own process: a node:http server that answers every
// request with the same small keep-alive response ('hello world'), optionally after a fixed
// delay (a slow endpoint). GET /__bench/count answers how many other requests it served.
//   node dist/bench/upstream.js --port N [--delay-ms 20]
import { createServer } from 'node:http'
import { parseArgs } from 'node:util'

const { values } = parseArgs({ options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' }, 'delay-ms': { type: 'string', default: '0' } } })
const port = Number(values.port ?? '0')
const delayMs = Number(values['delay-ms'])
let served = 0

const body = Buffer.from('hello world')
const headers = { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(body.length) }

// Node discards an unread request body itself once the response ends.
const server = createServer((req, res) => {
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
})
// Longer than the proxies' pool keep-alive, so an idle pooled connection is never closed
// under a proxy's feet in the middle of a run.
server.keepAliveTimeout = 120_000
server.headersTimeout = 125_000
server.listen(port, values.host, () => {
  process.stdout.write(`upstream listening on ${values.host}:${port} (pid ${process.pid})\n`)
})

const stop = (): void => {
  server.close(() => process.exit(0))
  server.closeAllConnections()
  setTimeout(() => process.exit(0), 2000).unref()
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
