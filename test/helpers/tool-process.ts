// What the helpers that run a real component (Consul agent, redis-server) share: finding its
// binary (the project's .tools/bin first, then PATH, else an error naming `npm run setup`),
// and killing by PID whatever is still running when the test process exits.
import fs from 'node:fs'
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { onProcessExit } from './exit-hooks.js'

function isExecutable (file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}

/** `local` if it is executable, else `name` on PATH; else throws `missing` (which should name `npm run setup`). */
export function findTool (name: string, local: string, missing: () => string): string {
  if (isExecutable(local)) return local
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name)
  }
  throw new Error(missing())
}

/** Child processes of one kind, killed (SIGKILL, by PID) if still running when the test process exits. */
export class ChildTracker {
  private readonly running = new Set<ChildProcess>()
  private hooked = false

  add (child: ChildProcess): void {
    if (!this.hooked) {
      this.hooked = true
      onProcessExit(() => { this.killAllNow() })
    }
    this.running.add(child)
  }

  delete (child: ChildProcess): void {
    this.running.delete(child)
  }

  killAllNow (): void {
    for (const child of this.running) {
      try { child.kill('SIGKILL') } catch { /* already gone */ }
    }
    this.running.clear()
  }
}

/** Whether a process with this PID is still running (signal 0 only checks). */
export function pidAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
    throw err
  }
}
