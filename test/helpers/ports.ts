// Free loopback ports for tests and the bench, for what must be told a port before it binds
// (a Consul agent, a child gateway, an address nothing listens on). Anything that can bind
// port 0 itself should do that instead.
import { once } from 'node:events'
import net from 'node:net'
import dgram from 'node:dgram'

/**
 * `count` distinct ports free on 127.0.0.1 for both TCP and UDP (Consul's DNS and Serf ports
 * need UDP too). Each is bound until all are found, then released: a port nothing listens on.
 * Another process could take one before its user binds it; that race is small and accepted.
 */
export async function freePorts (count: number): Promise<number[]> {
  const held: Array<net.Server | dgram.Socket> = []
  const ports: number[] = []
  try {
    for (let attempts = 0; ports.length < count; attempts++) {
      if (attempts > count * 20) throw new Error(`could not find ${count} free loopback ports`)
      const server = net.createServer()
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
      held.push(server)
      const port = (server.address() as net.AddressInfo).port
      const udp = dgram.createSocket('udp4')
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject)
          udp.bind(port, '127.0.0.1', () => { udp.off('error', reject); resolve() })
        })
      } catch {
        udp.close()
        continue // taken for UDP: keep the TCP socket held so it is not picked again
      }
      held.push(udp)
      ports.push(port)
    }
    return ports
  } finally {
    await Promise.all(held.map(async (s) => {
      await new Promise<void>((resolve) => {
        if (s instanceof net.Server) s.close(() => { resolve() })
        else s.close(() => { resolve() })
      })
    }))
  }
}

/** One free loopback port (see freePorts). */
export async function freePort (): Promise<number> {
  const [port] = await freePorts(1)
  return port!
}
