// The benchmark's OpenTelemetry collector stand-in, run in its own process: accepts OTLP/HTTP
// export requests (POST /v1/traces), reads and discards them, and answers 200 as a collector
// does. GET /__sink/count answers what it took: {"requests":N,"bytes":N}.
//   node dist/bench/otlp-sink.js --port N
import { createServer } from 'node:http'
import { parseArgs } from 'node:util'

const { values } = parseArgs({ options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' } } })
let requests = 0
let bytes = 0

const server = createServer((req, res) => {
  if (req.url === '/__sink/count') {
    res.end(JSON.stringify({ requests, bytes }))
    return
  }
  req.on('data', (c: Buffer) => { bytes += c.length })
  req.on('end', () => {
    requests++
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('{}')
  })
})
server.keepAliveTimeout = 120_000
server.listen(Number(values.port ?? '0'), values.host, () => {
  process.stdout.write(`otlp sink listening on ${values.host}:${values.port} (pid ${process.pid})\n`)
})

const stop = (): void => {
  server.close(() => process.exit(0))
  server.closeAllConnections()
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
