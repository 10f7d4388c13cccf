// Runs `fastmesh start ...` (the built CLI) as a child process, as an operator would: the
// listeners come from its startup log line, signals go to it by PID, and it is stopped by
// its PID when the test ends.
import type { TestContext } from 'node:test'
import { spawn, type ChildProcess } from 'node:child_process'
import { CLI } from './cli.js'
import { defer, type LogEntry } from './gateway.js'
import { eventually } from './poll.js'

export interface GatewayProcess {
  readonly pid: number
  /** `http://127.0.0.1:PORT` of the edge http listener. */
  readonly url: string
  readonly adminUrl: string
  /** Every JSON log line the process wrote so far. */
  logs(): LogEntry[]
  /** Sends `signal` to the process (by its PID). */
  signal(signal: NodeJS.Signals): void
  /** Whether the process has exited. */
  readonly exited: boolean
  /** What it wrote to stderr (for failure messages). */
  readonly stderr: string
  /** Everything it wrote to stdout so far, as written. */
  readonly stdout: string
}

interface Listening {
  listeners: Record<string, { port: number }>
  admin: { port: number }
}

/** Starts `fastmesh start <args>` and resolves once its listeners are bound. */
export async function startGatewayProcess (t: TestContext, args: string[], env: NodeJS.ProcessEnv = {}): Promise<GatewayProcess> {
  const child: ChildProcess = spawn(process.execPath, [CLI, 'start', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const pid = child.pid
  if (pid === undefined) throw new Error('fastmesh start did not spawn')
  let exited = false
  const closed = new Promise<void>((resolve) => { child.once('exit', () => { exited = true; resolve() }) })
  defer(t, async () => {
    if (exited) return
    process.kill(pid, 'SIGTERM')
    const timer = setTimeout(() => { if (!exited) process.kill(pid, 'SIGKILL') }, 10_000)
    await closed
    clearTimeout(timer)
  })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (c: Buffer) => { stdout += c.toString() })
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString() })
  const logs = (): LogEntry[] => stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogEntry)
  const up = await eventually(() => {
    if (exited) throw new Error(`fastmesh start exited before listening:\n${stderr}\n${stdout}`)
    return logs().find((e) => e.msg === 'fastmesh gateway listening') as (LogEntry & Listening) | undefined
  }, 'fastmesh start to listen', 20_000)
  const http = up.listeners.http ?? up.listeners.outbound
  return {
    pid,
    url: `http://127.0.0.1:${http!.port}`,
    adminUrl: `http://127.0.0.1:${up.admin.port}`,
    logs,
    signal (signal) { process.kill(pid, signal) },
    get exited () { return exited },
    get stderr () { return stderr },
    get stdout () { return stdout }
  }
}
