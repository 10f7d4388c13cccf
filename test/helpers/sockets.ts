// The TCP connections a process holds, from /proc: how tests and benchmarks check that a
// gateway keeps its connections to a Consul agent (or any port) within a bound.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs'

const TCP_STATES: Record<string, string> = {
  '01': 'ESTABLISHED', '02': 'SYN_SENT', '03': 'SYN_RECV', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2', '06': 'TIME_WAIT',
  '07': 'CLOSE', '08': 'CLOSE_WAIT', '09': 'LAST_ACK', '0A': 'LISTEN', '0B': 'CLOSING'
}

/**
 * The TCP sockets process `pid` holds whose remote port is `remotePort`, counted by state
 * (from /proc/<pid>/fd and /proc/<pid>/net/tcp{,6}); undefined without /proc. With
 * `localAddress` (IPv4), only those leaving from it: a harness in the same process can then
 * use another loopback address and not be counted.
 */
export function socketsTo (pid: number, remotePort: number, localAddress?: string): Record<string, number> | undefined {
  // /proc/net/tcp writes an IPv4 address as 8 hex digits, least significant byte first.
  const localHex = localAddress?.split('.').reverse().map((o) => Number(o).toString(16).toUpperCase().padStart(2, '0')).join('')
  try {
    const inodes = new Set<string>()
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      let target: string
      try { target = readlinkSync(`/proc/${pid}/fd/${fd}`) } catch { continue }
      const m = /^socket:\[(\d+)\]$/.exec(target)
      if (m !== null) inodes.add(m[1]!)
    }
    const counts: Record<string, number> = {}
    const portHex = remotePort.toString(16).toUpperCase().padStart(4, '0')
    for (const table of ['tcp', 'tcp6']) {
      let text: string
      try { text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8') } catch { continue }
      for (const line of text.split('\n').slice(1)) {
        const f = line.trim().split(/\s+/)
        if (f.length < 10) continue
        const rem = f[2]!
        if (!rem.endsWith(`:${portHex}`) || !inodes.has(f[9]!)) continue
        if (localHex !== undefined && !f[1]!.startsWith(`${localHex}:`)) continue
        const state = TCP_STATES[f[3]!] ?? f[3]!
        counts[state] = (counts[state] ?? 0) + 1
      }
    }
    return counts
  } catch {
    return undefined
  }
}
