// Child processes of the discovery benchmark, tracked and stopped by PID only; and what
// /proc says about them (resident memory, TCP connections to a port).
import { readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { spawnChild as spawnBase, type Child } from '../children.js'

// Spawning and stopping by PID is bench/children.ts's; this adapts its call shape.
export { stopChild, stopAllChildren, killAllChildrenNow, isRunning, type Child } from '../children.js'

export function spawnChild (name: string, command: string, args: readonly string[], opts: { logFile?: string, env?: NodeJS.ProcessEnv } = {}): Child {
  return spawnBase(name, command, { args, ...opts, capture: opts.logFile === undefined })
}

/** VmRSS of `pid` in MiB; undefined without /proc or when the process is gone. */
export function rssMiB (pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? undefined : Number(m[1]) / 1024
  } catch {
    return undefined
  }
}

const TCP_STATES: Record<string, string> = {
  '01': 'ESTABLISHED', '02': 'SYN_SENT', '03': 'SYN_RECV', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2', '06': 'TIME_WAIT',
  '07': 'CLOSE', '08': 'CLOSE_WAIT', '09': 'LAST_ACK', '0A': 'LISTEN', '0B': 'CLOSING'
}

/**
 * The TCP sockets process `pid` holds whose remote port is `remotePort`, counted by state
 * (from /proc/<pid>/fd and /proc/<pid>/net/tcp{,6}); undefined without /proc.
 */
export function socketsTo (pid: number, remotePort: number): Record<string, number> | undefined {
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
        const state = TCP_STATES[f[3]!] ?? f[3]!
        counts[state] = (counts[state] ?? 0) + 1
      }
    }
    return counts
  } catch {
    return undefined
  }
}

/** CPU time (user + system, all threads) used so far by `pid`, in ms; undefined without /proc. */
export function cpuMs (pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime in clock ticks; 100 per second on Linux in practice (USER_HZ).
    return (Number(f[11]) + Number(f[12])) * 10
  } catch {
    return undefined
  }
}
