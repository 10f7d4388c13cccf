// Child processes of the discovery benchmark, tracked and stopped by PID only; and what
// /proc says about them (resident memory, TCP connections to a port).
import { readFileSync } from 'node:fs'
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

// Sockets by state from /proc: the tests' helper, so both count the same way.
export { socketsTo } from '../../test/helpers/sockets.js'

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
