// Upstream servers for gateway tests: real node:http servers on 127.0.0.1 port 0,
// closed when the test ends; and config builders that point services at them.
import type { TestContext } from 'node:test'
import { createServer, type IncomingHttpHeaders, type RequestListener, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { startSampleService, type SampleService } from '../../src/demo/sample-service.js'
import { defer } from './gateway.js'
import { freePort } from './ports.js'

export interface Upstream {
  readonly server: Server
  readonly port: number
}

/** An HTTP server on loopback port 0 with `handler`, closed (connections too) after the test. */
export async function startUpstream (t: TestContext, handler: RequestListener): Promise<Upstream> {
  const server = createServer(handler)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { resolve() })
  })
  defer(t, async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return { server, port: (server.address() as AddressInfo).port }
}

/** What an echo upstream saw, and answers with as JSON. */
export interface EchoRecord {
  readonly service: string
  readonly method: string
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly bodyBytes: number
}

export interface EchoUpstream extends Upstream {
  readonly name: string
  readonly seen: EchoRecord[]
}

/** Answers every request with 200 and an EchoRecord (header `x-served-by: name`). */
export async function startEcho (t: TestContext, name: string, extraHeaders: Record<string, string> = {}): Promise<EchoUpstream> {
  const seen: EchoRecord[] = []
  const up = await startUpstream(t, (req, res) => {
    let bodyBytes = 0
    req.on('data', (c: Buffer) => { bodyBytes += c.length })
    req.on('end', () => {
      const record: EchoRecord = { service: name, method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyBytes }
      seen.push(record)
      const body = JSON.stringify(record)
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-served-by': name, ...extraHeaders })
      res.end(body)
    })
  })
  return { ...up, name, seen }
}

/** The demo's sample service on loopback port 0, closed after the test. */
export async function startSample (t: TestContext, name: string, instance: string): Promise<SampleService> {
  const s = await startSampleService(name, instance, 0)
  defer(t, async () => { await s.close() })
  return s
}

/** `discovery.embedded.services` entries: each service's endpoints are `name-1`, `name-2`, ... */
export function embeddedServices (ports: Record<string, ReadonlyArray<number | { port: number }>>, healthCheck?: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [name, list] of Object.entries(ports)) {
    out[name] = {
      endpoints: list.map((p, i) => ({ id: `${name}-${i + 1}`, address: '127.0.0.1', port: typeof p === 'number' ? p : p.port })),
      ...(healthCheck !== undefined ? { healthCheck } : {})
    }
  }
  return out
}

/** A config document with the given services (by port or upstream) and routes. */
export function meshConfig (ports: Record<string, ReadonlyArray<number | { port: number }>>, routes: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { discovery: { embedded: { services: embeddedServices(ports) } }, routes, ...extra }
}

export interface HeldUpstream extends Upstream {
  /** Requests that arrived so far. */
  readonly arrived: number
  /** Resolves once `n` requests have arrived (answers are held until `release`); rejects after `timeoutMs`. */
  waitForArrivals(n: number, timeoutMs?: number): Promise<void>
  /** Answers every held request, and every later one at once, with 200 and `body`. */
  release(): void
}

/** An upstream that holds every answer until the test releases it: "slow" without timers. */
export async function startHeldUpstream (t: TestContext, body = 'released'): Promise<HeldUpstream> {
  let released = false
  let arrived = 0
  const held: Array<() => void> = []
  const waiters: Array<{ n: number, resolve: () => void }> = []
  const up = await startUpstream(t, (req, res) => {
    req.resume()
    arrived++
    for (const w of waiters.filter((x) => x.n <= arrived)) { waiters.splice(waiters.indexOf(w), 1); w.resolve() }
    const answer = (): void => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }).end(body) }
    if (released) answer()
    else held.push(answer)
  })
  return {
    ...up,
    get arrived () { return arrived },
    async waitForArrivals (n, timeoutMs = 10_000) {
      if (arrived >= n) return
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        new Promise<void>((resolve) => { waiters.push({ n, resolve }) }),
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => { reject(new Error(`timed out after ${timeoutMs} ms waiting for ${n} request(s) at the upstream (${arrived} arrived)`)) }, timeoutMs)
        })
      ]).finally(() => { clearTimeout(timer) })
    },
    release () {
      released = true
      for (const answer of held.splice(0)) answer()
    }
  }
}

export interface UpstreamProcess {
  readonly port: number
  /** The instance name it answers with (`{ "served": name }`). */
  readonly name: string
  /** The running process's PID (undefined while killed). */
  readonly pid: number | undefined
  /** SIGKILL, as a crashed machine or an OOM kill: no FIN for requests in flight, no goodbye. */
  kill(): void
  /** Resolves once the process is gone (at once if it is not running). */
  exited(): Promise<void>
  /** Starts it again on the same port (after `kill`); resolves once it listens. */
  restart(): Promise<void>
}

/**
 * An upstream in its own process (test/fixtures/upstream-process.ts) on `port` (a free one
 * when not given), so a test can kill it for real, by PID, and start it again on the same
 * port. Killed after the test.
 */
export async function startUpstreamProcess (t: TestContext, name: string, port?: number): Promise<UpstreamProcess> {
  const fixture = fileURLToPath(new URL('../fixtures/upstream-process.js', import.meta.url))
  let at = port ?? await freePort()
  let child: ChildProcess | undefined
  /** Starts the process on `at`; false when it exited before listening (the port was taken meanwhile). */
  const start = async (): Promise<boolean> => {
    const c = spawn(process.execPath, [fixture, String(at), name], { stdio: ['ignore', 'pipe', 'inherit'] })
    child = c
    defer(t, () => { if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL') })
    // Waiting for 'ready' alone would wait forever for a process that died on EADDRINUSE.
    return await Promise.race([once(c.stdout!, 'data').then(() => true), once(c, 'exit').then(() => false)])
  }
  // A free port can be taken by another test between freePort() and the child's listen: try another.
  for (let tries = 1; !await start(); tries++) {
    if (port !== undefined || tries === 5) throw new Error(`upstream process ${name} exited before listening on 127.0.0.1:${at}`)
    at = await freePort()
  }
  return {
    port: at,
    name,
    get pid () { return child?.exitCode === null && child.signalCode === null ? child.pid : undefined },
    kill () {
      const c = child
      if (c !== undefined && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    },
    async exited () {
      const c = child
      if (c !== undefined && c.exitCode === null && c.signalCode === null) await once(c, 'exit')
    },
    async restart () {
      const c = child
      // The port is free again only once the old process is gone.
      if (c !== undefined && c.exitCode === null && c.signalCode === null) {
        if (!c.killed) c.kill('SIGKILL')
        await once(c, 'exit')
      }
      if (!await start()) throw new Error(`upstream process ${name} could not listen again on 127.0.0.1:${at} (taken meanwhile)`)
    }
  }
}
