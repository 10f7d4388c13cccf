// The in-namespace half of a netns Portal (netns.ts): started inside a network namespace
// with `SOCKET=HOST:PORT` arguments, it listens on each Unix socket (a filesystem path, so
// reachable from the root namespace) and pipes every connection to HOST:PORT as seen from
// inside the namespace. Prints "relay ready" once all sockets listen; exits on SIGTERM.
//
//   ip netns exec ns1 node netns-relay.js /tmp/x/admin.sock=127.0.0.1:15000
//
// The test runner also loads this file as a test file (every .js under dist/test/): with no
// arguments it does nothing.
import net from 'node:net'
import { rmSync } from 'node:fs'

const mappings = process.argv.slice(2)
if (mappings.length === 0) {
  if (process.env.NODE_TEST_CONTEXT === undefined) {
    process.stderr.write('usage: netns-relay SOCKET=HOST:PORT...\n')
    process.exitCode = 2
  }
} else {
  const servers: net.Server[] = []
  const listening = mappings.map(async (m) => {
    const match = /^(.+)=([^=:]+):([0-9]+)$/.exec(m)
    if (match === null) throw new Error(`bad mapping "${m}": use SOCKET=HOST:PORT`)
    const [, sock, host, port] = match as unknown as [string, string, string, string]
    rmSync(sock, { force: true })
    const server = net.createServer((client) => {
      const upstream = net.connect(Number(port), host)
      client.on('error', () => { upstream.destroy() })
      upstream.on('error', () => { client.destroy() })
      client.pipe(upstream)
      upstream.pipe(client)
    })
    servers.push(server)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(sock, () => { server.off('error', reject); resolve() })
    })
  })
  Promise.all(listening).then(() => { process.stdout.write('relay ready\n') }, (err: unknown) => {
    process.stderr.write(`relay failed: ${(err as Error).message}\n`)
    process.exit(1)
  })
  const quit = (): void => {
    for (const s of servers) s.close()
    process.exit(0)
  }
  process.once('SIGTERM', quit)
  process.once('SIGINT', quit)
}
