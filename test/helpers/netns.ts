// Several "hosts" on one machine for the e2e tests: Linux network namespaces joined by a
// bridge, processes started inside them, and a way for the test process to reach them.
// See DESIGN.md, "Real components": `ip netns` + veth (iproute2), as root.
//
//   const lab = await NetnsLab.create({ hosts: { svc: 10, a: 11 } })   // 10.213.77.10, .11
//   t.after(() => lab.destroy())
//   const p = lab.spawn('a', 'web', process.execPath, ['app.js'])       // runs inside host a
//   const portal = await lab.portal('a', ['127.0.0.1:15000'])
//   await fetch(`${portal.url('127.0.0.1:15000')}/ready`)               // from this process
//
// Topology: a dedicated "switch" namespace holds a bridge; each host namespace has `lo` up
// and an `eth0` (a veth whose peer is a bridge port in the switch namespace) with one
// address of a private /24 that exists only inside these namespaces. Nothing is added to the
// root namespace, so the host's networking is untouched and parallel runs (each with its
// own namespaces, named after the test's pid) can use the same /24 without colliding.
//
// Reaching the namespaces: the test process stays in the root namespace, where those
// addresses do not exist. `portal()` starts a small relay process inside a namespace
// (netns-relay.ts) that listens on Unix sockets in a temp directory — the filesystem is
// shared across network namespaces — and pipes each connection to a TCP address seen from
// inside; in this process a loopback TCP listener per target pipes to that socket. So the
// test talks to `http://127.0.0.1:<port>` and every byte stays on loopback or inside the
// namespaces the test created.
//
// Cleanup: destroy() stops every process started here (SIGTERM, then SIGKILL) and deletes
// the namespaces, which removes their veths and bridge. If the test process exits without it
// (crash, SIGINT/SIGTERM/SIGHUP) an exit hook SIGKILLs the children by pid and deletes the
// namespaces synchronously. A run that was SIGKILLed leaves its namespaces behind: the next
// create() removes namespaces of this prefix whose owning pid is no longer alive.

import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { onProcessExit } from './exit-hooks.js'

const execFileAsync = promisify(execFile)

/** Namespaces of these tests are named `<PREFIX>-<owner pid>-<host>`. */
export const NETNS_PREFIX = 'fmesh'
const RELAY_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'netns-relay.js')
const OUTPUT_LIMIT = 512 * 1024
/** Temp directories are named `<TEMP_PREFIX><owner pid>-XXXXXX`. */
const TEMP_PREFIX = 'fastmesh-netns-'

export interface NetnsLabOptions {
  /** Host names (letters and digits, at most 8) and the last octet of each one's address. */
  hosts: Record<string, number>
  /** The first three octets of the /24. Default 10.213.77. */
  subnet?: string
}

/**
 * Why this machine cannot run namespace tests, or undefined when it can. Not Linux is a
 * platform that truly cannot (skip); not root or no `ip` is a setup problem (fail).
 */
export function netnsUnsupported(): { skip: boolean, reason: string } | undefined {
  if (process.platform !== 'linux') return { skip: true, reason: `network namespaces need Linux (this is ${process.platform})` }
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' })
  } catch {
    return { skip: false, reason: 'the iproute2 `ip` command is missing: install it (Debian: `apt-get install iproute2`)' }
  }
  if (process.getuid?.() !== 0) {
    return { skip: false, reason: `creating network namespaces needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); this runs as uid ${process.getuid?.()}: run the e2e tests as root` }
  }
  return undefined
}

// --- processes -------------------------------------------------------------------------

/** A process started inside a namespace; its output is kept for failure reports. */
export class NsProcess {
  private out = ''
  private exitInfo: { code: number | null, signal: NodeJS.Signals | null } | undefined
  private readonly exitPromise: Promise<void>
  private stopping: Promise<void> | undefined
  private lineWaiters: Array<() => void> = []

  constructor(readonly name: string, readonly host: string, readonly child: ChildProcess, readonly command: string) {
    const append = (chunk: Buffer): void => {
      this.out += chunk.toString('utf8')
      if (this.out.length > OUTPUT_LIMIT) this.out = this.out.slice(-OUTPUT_LIMIT)
      for (const w of this.lineWaiters) w()
    }
    child.stdout?.on('data', append)
    child.stderr?.on('data', append)
    this.exitPromise = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal }
        for (const w of this.lineWaiters) w()
        resolve()
      })
    })
  }

  get pid(): number {
    return this.child.pid!
  }

  /** How it ended, or undefined while it runs. */
  get exited(): { code: number | null, signal: NodeJS.Signals | null } | undefined {
    return this.exitInfo
  }

  output(): string {
    return this.out
  }

  /** Resolves when the output matches `pattern`; throws (with the output) on exit or timeout. */
  async waitForOutput(pattern: RegExp, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (pattern.test(this.out)) return
      if (this.exitInfo !== undefined) throw new Error(`${this.name} (pid ${this.pid}) exited (${this.exitInfo.signal ?? `code ${this.exitInfo.code}`}) before printing ${pattern}\n${this.tail()}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`${this.name} (pid ${this.pid}) did not print ${pattern} within ${timeoutMs} ms\n${this.tail()}`)
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer)
          this.lineWaiters = this.lineWaiters.filter((w) => w !== done)
          resolve()
        }
        const timer = setTimeout(done, left)
        this.lineWaiters.push(done)
      })
    }
  }

  /** The last part of the output, labelled, for failure messages. */
  tail(chars = 6000): string {
    const text = this.out.length > chars ? `[...]${this.out.slice(-chars)}` : this.out
    return `--- ${this.name} (host ${this.host}, pid ${this.pid}: ${this.command}) ---\n${text}`
  }

  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves once the process is gone. Idempotent. */
  async stop(timeoutMs = 5_000): Promise<void> {
    this.stopping ??= (async () => {
      if (this.exitInfo !== undefined) return
      this.signal('SIGTERM')
      const timer = setTimeout(() => { this.signal('SIGKILL') }, timeoutMs)
      await this.exitPromise
      clearTimeout(timer)
    })()
    await this.stopping
  }

  /** Sends a signal to this process's pid (nothing else). */
  signal(signal: NodeJS.Signals): void {
    if (this.exitInfo !== undefined) return
    try { process.kill(this.pid, signal) } catch { /* already gone */ }
  }

  /** Waits up to `timeoutMs` for the process to exit by itself; true when it has. */
  async waitForExit(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([this.exitPromise, new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })])
    clearTimeout(timer)
    return this.exitInfo !== undefined
  }
}

// --- cleanup when the test process dies -----------------------------------------------------

const liveLabs = new Set<NetnsLab>()

function cleanupAllSync(): void {
  for (const lab of liveLabs) lab.destroySync()
  liveLabs.clear()
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function listNamespaces(): string[] {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
  return out.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n !== '')
}

/** Kills what still runs in `ns` (by pid) and deletes it. Errors are ignored: best effort. */
function removeNamespaceSync(ns: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split(/\s+/).filter((p) => /^[0-9]+$/.test(p)).map(Number)
    for (const pid of pids) {
      try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    }
  } catch { /* no such namespace */ }
  try { execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' }) } catch { /* already gone */ }
}

/** Namespaces (and temp directories) left by runs whose process no longer exists (a SIGKILLed run). */
export function removeStaleNamespaces(): string[] {
  const removed: string[] = []
  const pattern = new RegExp(`^${NETNS_PREFIX}-([0-9]+)-[a-z0-9]+$`)
  for (const ns of listNamespaces()) {
    const m = pattern.exec(ns)
    if (m === null) continue
    const owner = Number(m[1])
    if (owner === process.pid || pidAlive(owner)) continue
    removeNamespaceSync(ns)
    removed.push(ns)
  }
  for (const name of readdirSync(tmpdir())) {
    const m = new RegExp(`^${TEMP_PREFIX}([0-9]+)-`).exec(name)
    if (m === null || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue
    try { rmSync(path.join(tmpdir(), name), { recursive: true, force: true }) } catch { /* best effort */ }
  }
  return removed
}

// --- the lab ---------------------------------------------------------------------------

async function ip(...args: string[]): Promise<void> {
  try {
    await execFileAsync('ip', args)
  } catch (err) {
    const e = err as Error & { stderr?: string }
    throw new Error(`ip ${args.join(' ')} failed: ${(e.stderr ?? '').trim() || e.message}`)
  }
}

export class NetnsLab {
  /** Every process started with spawn(), in start order. */
  readonly processes: NsProcess[] = []
  private readonly namespaces: string[] = []
  private readonly portals: Portal[] = []
  private destroyed = false
  /** Temp directory for relay sockets and whatever the test writes (configs). */
  readonly dir: string
  private readonly addresses = new Map<string, string>()

  private constructor(readonly id: string, readonly subnet: string, hosts: Record<string, number>) {
    this.dir = mkdtempSync(path.join(tmpdir(), `${TEMP_PREFIX}${process.pid}-`))
    for (const [host, octet] of Object.entries(hosts)) this.addresses.set(host, `${subnet}.${octet}`)
  }

  /** Creates the switch and host namespaces. On failure, whatever was created is removed. */
  static async create(options: NetnsLabOptions): Promise<NetnsLab> {
    const unsupported = netnsUnsupported()
    if (unsupported !== undefined) throw new Error(unsupported.reason)
    const subnet = options.subnet ?? '10.213.77'
    for (const [host, octet] of Object.entries(options.hosts)) {
      if (!/^[a-z0-9]{1,8}$/.test(host) || host === 'sw') throw new Error(`host name "${host}": use 1-8 lower-case letters or digits (not "sw")`)
      if (!Number.isInteger(octet) || octet < 2 || octet > 254) throw new Error(`host ${host}: last octet ${octet} must be 2-254`)
    }
    removeStaleNamespaces()
    onProcessExit(cleanupAllSync)
    const lab = new NetnsLab(`${NETNS_PREFIX}-${process.pid}`, subnet, options.hosts)
    liveLabs.add(lab)
    try {
      const sw = await lab.addNamespace('sw')
      await ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge')
      await ip('-n', sw, 'link', 'set', 'br0', 'up')
      for (const host of lab.addresses.keys()) {
        const ns = await lab.addNamespace(host)
        await ip('-n', sw, 'link', 'add', `v-${host}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns)
        await ip('-n', sw, 'link', 'set', `v-${host}`, 'master', 'br0')
        await ip('-n', sw, 'link', 'set', `v-${host}`, 'up')
        await ip('-n', ns, 'addr', 'add', `${lab.ip(host)}/24`, 'dev', 'eth0')
        await ip('-n', ns, 'link', 'set', 'eth0', 'up')
      }
    } catch (err) {
      await lab.destroy()
      throw err
    }
    return lab
  }

  private async addNamespace(host: string): Promise<string> {
    const ns = this.ns(host)
    await ip('netns', 'add', ns)
    this.namespaces.push(ns)
    await ip('-n', ns, 'link', 'set', 'lo', 'up')
    return ns
  }

  /** The namespace name of `host` (or `sw` for the switch). */
  ns(host: string): string {
    if (host !== 'sw' && !this.addresses.has(host)) throw new Error(`no host "${host}" in this lab`)
    return `${this.id}-${host}`
  }

  /** The address of `host` on the lab's /24. */
  ip(host: string): string {
    const a = this.addresses.get(host)
    if (a === undefined) throw new Error(`no host "${host}" in this lab`)
    return a
  }

  get hosts(): string[] {
    return [...this.addresses.keys()]
  }

  /** A command prefix that runs a program inside `host` (it execs: the pid stays the program's). */
  exec(host: string): string[] {
    return ['ip', 'netns', 'exec', this.ns(host)]
  }

  /** Starts `command args` inside `host`; it is stopped by destroy() if still running. */
  spawn(host: string, name: string, command: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): NsProcess {
    if (this.destroyed) throw new Error('the lab is destroyed')
    // Children are programs, not test files: do not pass the test runner's marker on.
    const base = { ...process.env }
    delete base.NODE_TEST_CONTEXT
    const [cmd, ...cmdArgs] = [...this.exec(host), command, ...args]
    const child = spawn(cmd!, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...base, ...env } })
    child.once('error', () => { /* reported through the exit below / waitForOutput */ })
    const p = new NsProcess(name, host, child, [command, ...args].join(' '))
    this.processes.push(p)
    return p
  }

  /** Output of every process, for a failure report. */
  report(chars = 6000): string {
    return this.processes.map((p) => p.tail(chars)).join('\n')
  }

  /**
   * Opens a way from this process to `targets` (`host:port` as seen from inside `host`):
   * a relay in the namespace plus loopback listeners here. See the top of this file.
   */
  async portal(host: string, targets: readonly string[]): Promise<Portal> {
    const portal = await Portal.open(this, host, targets)
    this.portals.push(portal)
    return portal
  }

  /** Stops every process (SIGTERM, SIGKILL after stopTimeoutMs) and deletes the namespaces. */
  async destroy(stopTimeoutMs = 5_000): Promise<void> {
    if (this.destroyed) return
    this.destroyed = true
    await Promise.all(this.processes.map(async (p) => { await p.stop(stopTimeoutMs) }))
    await Promise.all(this.portals.map(async (p) => { await p.close() }))
    this.deleteAllSync()
    liveLabs.delete(this)
  }

  /** For exit hooks: SIGKILL by pid, delete namespaces, all synchronously. */
  destroySync(): void {
    this.destroyed = true
    for (const p of this.processes) p.signal('SIGKILL')
    this.deleteAllSync()
  }

  private deleteAllSync(): void {
    // Host namespaces first (their veths go with them), the switch last.
    for (const ns of [...this.namespaces].reverse()) removeNamespaceSync(ns)
    this.namespaces.length = 0
    try { rmSync(this.dir, { recursive: true, force: true }) } catch { /* best effort */ }
  }
}

// --- reaching a namespace from the root namespace -------------------------------------------

/** Loopback URLs in this process for TCP addresses inside one namespace. */
export class Portal {
  private constructor(
    private readonly relay: NsProcess,
    private readonly servers: Map<string, net.Server>,
    private readonly sockets: Set<net.Socket>
  ) {}

  static async open(lab: NetnsLab, host: string, targets: readonly string[]): Promise<Portal> {
    const socks = targets.map((target, i) => {
      if (!/^[0-9.]+:[0-9]+$/.test(target)) throw new Error(`portal target "${target}": use IPv4:port`)
      return { target, sock: path.join(lab.dir, `${host}-${i}.sock`) }
    })
    const relay = lab.spawn(host, `relay@${host}`, process.execPath, [RELAY_SCRIPT, ...socks.map((s) => `${s.sock}=${s.target}`)])
    await relay.waitForOutput(/relay ready/, 60_000)
    const servers = new Map<string, net.Server>()
    const sockets = new Set<net.Socket>()
    const portal = new Portal(relay, servers, sockets)
    try {
      for (const { target, sock } of socks) {
        const server = net.createServer((client) => {
          const upstream = net.connect(sock)
          for (const s of [client, upstream]) {
            sockets.add(s)
            s.once('close', () => { sockets.delete(s) })
          }
          client.on('error', () => { upstream.destroy() })
          upstream.on('error', () => { client.destroy() })
          client.pipe(upstream)
          upstream.pipe(client)
        })
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject)
          server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
        })
        servers.set(target, server)
      }
    } catch (err) {
      await portal.close()
      throw err
    }
    return portal
  }

  /** `http://127.0.0.1:<port>` that reaches `target` inside the namespace. */
  url(target: string): string {
    const server = this.servers.get(target)
    if (server === undefined) throw new Error(`the portal has no target ${target}`)
    return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await Promise.all([...this.servers.values()].map(async (s) => { await new Promise<void>((resolve) => { s.close(() => { resolve() }) }) }))
    this.servers.clear()
    await this.relay.stop(2_000)
  }
}
