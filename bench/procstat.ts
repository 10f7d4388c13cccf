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
