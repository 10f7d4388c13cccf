// Upstream HTTP servers for the discovery benchmark, in their own process: one node:http
// server per name given, each on a free loopback port, answering every request with its
// name as the body (so the harness can tell which instance answered). Prints one JSON line
// { name: port, ... } once all listen.
//   node dist/bench/discovery/upstream-child.js upstream-a upstream-b trial-00 ...
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'

const names = process.argv.slice(2)
const servers: Server[] = []
const ports: Record<string, number> = {}

for (const name of names) {
  const body = Buffer.from(name)
  const headers = { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(body.length), 'x-upstream': name }
  const server = createServer((_req, res) => {
    res.writeHead(200, headers)
    res.end(body)
  })
  // Longer than the gateway's upstream keep-alive (30 s), so pooled connections are not cut.
  server.keepAliveTimeout = 120_000
  server.headersTimeout = 125_000
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  servers.push(server)
  ports[name] = (server.address() as AddressInfo).port
}
process.stdout.write(JSON.stringify(ports) + '\n')

const stop = (): void => {
  for (const s of servers) { s.close(); s.closeAllConnections() }
  setTimeout(() => process.exit(0), 500).unref()
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
// Never outlive the harness: exit if the parent goes away.
setInterval(() => { if (process.ppid === 1) process.exit(0) }, 1000).unref()
