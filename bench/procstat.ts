// Process cost from /proc: CPU time (utime + stime of every thread) and resident memory.
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'

let ticksPerSecond: number | undefined

/** Clock ticks per second (`getconf CLK_TCK`; 100 on practically every Linux). */
export function clockTicks (): number {
  if (ticksPerSecond === undefined) {
    try {
      const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
      ticksPerSecond = Number.isInteger(n) && n > 0 ? n : 100
    } catch {
      ticksPerSecond = 100
    }
  }
  return ticksPerSecond
}

/** CPU time used so far by process `pid`, in microseconds; undefined without /proc. */
export function cpuMicros (pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    return ((utime + stime) * 1e6) / clockTicks()
  } catch {
    return undefined
  }
}

/** Resident set size of `pid` in MB (VmRSS); undefined without /proc. */
export function rssMb (pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status)
    return m === null ? undefined : Number(m[1]) / 1024
  } catch {
    return undefined
  }
}

/** True while `pid` runs (exists and is not a zombie waiting for its parent to reap it). */
export function isLive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat[stat.lastIndexOf(')') + 2]
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

/** The command line of `pid`, arguments joined by spaces; undefined once it is gone. */
export function commandLine (pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()
  } catch {
    return undefined
  }
}

/** The CPUs `pid` may run on (`Cpus_allowed_list`, e.g. "0-1"); undefined without /proc. */
export function cpusAllowed (pid: number): string | undefined {
  try {
    const m = /^Cpus_allowed_list:\s+(\S+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? undefined : m[1]
  } catch {
    return undefined
  }
}

/** Whole-machine CPU counters from /proc/stat (ticks): busy and total over all CPUs. */
export function systemTicks (): { busy: number, total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!
    const v = line.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    const idle = (v[3] ?? 0) + (v[4] ?? 0)
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
    return { busy: total - idle, total }
  } catch {
    return undefined
  }
}

/** Percent of all CPUs busy over `ms` milliseconds (other work on the machine, when we idle). */
export async function systemBusyPercent (ms: number): Promise<number | undefined> {
  const a = systemTicks()
  await new Promise((resolve) => { setTimeout(resolve, ms) })
  const b = systemTicks()
  if (a === undefined || b === undefined || b.total === a.total) return undefined
  return (100 * (b.busy - a.busy)) / (b.total - a.total)
}
