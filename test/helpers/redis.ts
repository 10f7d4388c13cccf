// A real Redis server for tests: `redis-server` on a free loopback port with persistence off,
// stopped by PID when the test ends. See DESIGN.md, "Real components".
//
//   const redis = await startRedis(t)        // t.after stops it
//   const client = new Redis(redis.port, '127.0.0.1', { ... })
//   await redis.stop()                        // Redis is down: clients' commands fail
//   await redis.restart()                     // up again on the same port, with no data
//
// The binary comes from .tools/bin/redis-server (installed by `npm run setup`: Debian's Redis
// unpacked into .tools/, run through a wrapper that points at the libraries it needs) or
// `redis-server` on PATH. When neither exists, startRedis throws: a test that needs Redis
// fails, it does not skip. Servers still running when the test process exits (a crashed
// test, SIGINT, SIGTERM) are killed; only a SIGKILL of the test process itself can leave one
// behind.

import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort } from './ports.js'
import { ChildTracker, findTool } from './tool-process.js'

/** dist/test/helpers/redis.js → the project root is three levels up. */
const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const LOCAL_REDIS = path.join(PROJECT_ROOT, '.tools', 'bin', 'redis-server')

/** What startRedis needs of a test (node:test's TestContext has it). */
export interface TestWithAfter {
  after(fn: () => Promise<void>): void
}

export interface RedisServer {
  /** The loopback port; the same after restart(). */
  readonly port: number
  readonly host: '127.0.0.1'
  /** 'redis://127.0.0.1:PORT' */
  readonly url: string
  /** The running server's pid (a new one after restart()); the last one's while stopped. */
  readonly pid: number
  /** The binary that runs. */
  readonly bin: string
  /** What the server has printed so far, across restarts (the most recent part when long). */
  output(): string
  /** SIGTERM, then SIGKILL after the stop timeout; resolves once the process is gone. Idempotent. */
  stop(): Promise<void>
  /** stop() if running, then a new server on the same port, ready. It starts empty. */
  restart(): Promise<void>
}

export interface StartRedisOptions {
  /** How long to wait for the server to answer PING. Default 10 s. */
  readyTimeoutMs?: number
  /** How long stop() waits after SIGTERM before SIGKILL. Default 5 s. */
  stopTimeoutMs?: number
  /** Extra `redis-server` arguments, e.g. ['--maxmemory', '1mb']. */
  args?: string[]
}

/** The redis-server binary the tests use, or an error that says how to install it. */
export function findRedis (): string {
  return findTool('redis-server', LOCAL_REDIS, () =>
    `Redis is not installed: neither ${LOCAL_REDIS} nor \`redis-server\` on PATH exists. ` +
    'Run `npm run setup` to install it (on Debian it unpacks the machine\'s own Redis packages into .tools/; ' +
    'elsewhere it says how to get Redis >= 6.2).'
  )
}


// --- cleanup of servers that outlive their test -----------------------------------------

const running = new ChildTracker()

// --- the server --------------------------------------------------------------------------

const OUTPUT_LIMIT = 64 * 1024
/** Attempts at a first start when the free port was taken before the server bound it. */
const PORT_ATTEMPTS = 3

type Exit = { code: number | null, signal: NodeJS.Signals | null }

/** One redis-server process. */
interface Instance {
  child: ChildProcess
  pid: number
  exited: Exit | null
  exitPromise: Promise<void>
  stopping: Promise<void> | null
}

export async function startRedis (t: TestWithAfter, options: StartRedisOptions = {}): Promise<RedisServer> {
  const readyTimeoutMs = options.readyTimeoutMs ?? 10_000
  const stopTimeoutMs = options.stopTimeoutMs ?? 5_000
  const bin = findRedis()
  // the working dir, where Redis would write anything it writes (with these args: nothing)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastmesh-redis-'))
  let output = ''
  const append = (chunk: Buffer): void => {
    output += chunk.toString('utf8')
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT)
  }

  const argsFor = (port: number): string[] => [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '', // no RDB snapshots
    '--appendonly', 'no',
    '--dir', dir,
    '--daemonize', 'no',
    ...(options.args ?? []),
  ]

  const stopInstance = (inst: Instance): Promise<void> => {
    inst.stopping ??= (async () => {
      if (inst.exited) return
      inst.child.kill('SIGTERM')
      const timer = setTimeout(() => { if (!inst.exited) inst.child.kill('SIGKILL') }, stopTimeoutMs)
      await inst.exitPromise
      clearTimeout(timer)
    })()
    return inst.stopping
  }

  /** Starts a server on `port` and waits until it answers PING; throws with its output if not. */
  const launch = async (port: number): Promise<Instance> => {
    const args = argsFor(port)
    const child = spawn(bin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout?.on('data', append)
    child.stderr?.on('data', append)
    const inst: Instance = { child, pid: 0, exited: null, exitPromise: Promise.resolve(), stopping: null }
    inst.exitPromise = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        inst.exited = { code, signal }
        running.delete(child)
        resolve()
      })
    })
    const spawnError = await new Promise<Error | null>((resolve) => {
      child.once('spawn', () => { resolve(null) })
      child.once('error', (err) => { resolve(err) })
    })
    if (spawnError || child.pid === undefined) {
      throw new Error(`could not start ${bin}: ${spawnError?.message ?? 'no pid'}`)
    }
    running.add(child)
    inst.pid = child.pid
    const outputFrom = output.length
    const fail = async (why: string): Promise<never> => {
      await stopInstance(inst)
      const err = new Error(`redis-server (pid ${inst.pid}, ${[bin, ...args].join(' ')}) ${why}\n--- redis output ---\n${output.slice(-8000)}`)
      throw Object.assign(err, { portInUse: /Address already in use/i.test(output.slice(outputFrom)) })
    }
    const deadline = Date.now() + readyTimeoutMs
    for (;;) {
      if (inst.exited) {
        const { code, signal } = inst.exited as Exit
        return fail(`exited (${signal ?? `code ${code}`}) before it answered PING`)
      }
      if (Date.now() > deadline) return fail(`did not answer PING within ${readyTimeoutMs} ms`)
      if (await pings(port)) return inst
      await sleep(20)
    }
  }

  let instance: Instance | null = null
  let port = 0
  for (let attempt = 1; instance === null; attempt++) {
    port = await freePort()
    try {
      instance = await launch(port)
    } catch (err) {
      // another process took the free port before Redis bound it: take another one
      if (attempt < PORT_ATTEMPTS && (err as { portInUse?: boolean }).portInUse) continue
      fs.rmSync(dir, { recursive: true, force: true })
      throw err
    }
  }
  let current: Instance = instance

  const server: RedisServer = {
    port,
    host: '127.0.0.1',
    url: `redis://127.0.0.1:${port}`,
    get pid () { return current.pid },
    bin,
    output: () => output,
    stop: () => stopInstance(current),
    restart: async () => {
      await stopInstance(current)
      current = await launch(port)
    },
  }
  t.after(async () => {
    await stopInstance(current)
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return server
}

/** True when a server on 127.0.0.1:port answers PING with +PONG within a second. */
function pings (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    let reply = ''
    const socket = net.connect({ host: '127.0.0.1', port })
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => { done(false) }, 1_000)
    socket.once('connect', () => { socket.write('PING\r\n') })
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1')
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'))
    })
    socket.once('error', () => { done(false) })
    socket.once('close', () => { done(false) })
  })
}
