// Test helpers for the edge gateway: starts a real Gateway in-process on 127.0.0.1 port 0
// (HTTP and admin listeners) from a temp config file, captures its logs, and talks to it
// over real sockets. Everything started here is cleaned up with the test (`t.after`).
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse, stringify } from 'yaml'
import { Agent, type Dispatcher } from 'undici'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { Gateway } from '../../src/gateway/gateway.js'
import { loadConfigFile } from '../../src/config/load.js'
import { FileConfigProvider } from '../../src/config/provider-file.js'
import { createLogger } from '../../src/telemetry/logger.js'

export { eventually } from './poll.js'

/** A config document as a test writes it (the schema fills the rest). */
export type ConfigDoc = Record<string, unknown>

type Cleanup = () => unknown

const stacks = new WeakMap<TestContext, Cleanup[]>()

/**
 * Registers `fn` to run when test `t` ends. Cleanups run last-registered first (as a
 * stack), so something started later is stopped before what it depends on.
 */
export function defer (t: TestContext, fn: Cleanup): void {
  let stack = stacks.get(t)
  if (stack === undefined) {
    const fresh: Cleanup[] = []
    stack = fresh
    stacks.set(t, fresh)
    t.after(async () => {
      const errors: unknown[] = []
      while (fresh.length > 0) {
        try { await fresh.pop()!() } catch (err) { errors.push(err) }
      }
      if (errors.length > 0) throw errors[0]
    })
  }
  stack.push(fn)
}

/** A fresh temp directory, removed when the test ends. */
export async function tempDir (t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-test-'))
  defer(t, async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

export interface LogEntry {
  readonly level: string
  readonly msg?: string
  readonly [key: string]: unknown
}

/** A pino destination that keeps every line, for log assertions. */
export class LogCapture {
  readonly lines: string[] = []

  write (line: string): void {
    this.lines.push(line)
  }

  entries (): LogEntry[] {
    return this.lines.map((l) => JSON.parse(l) as LogEntry)
  }

  /** Entries whose `msg` is exactly `msg`. */
  withMessage (msg: string): LogEntry[] {
    return this.entries().filter((e) => e.msg === msg)
  }
}

export interface HttpResult {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly text: string
  json<T = unknown>(): T
}

export interface RequestOptions {
  readonly method?: Dispatcher.HttpMethod
  readonly headers?: Record<string, string>
  readonly body?: string | Buffer
}

export interface TestGateway {
  readonly gateway: Gateway
  /** `http://127.0.0.1:PORT` of the HTTP listener. */
  readonly url: string
  readonly adminUrl: string
  readonly configPath: string
  readonly dir: string
  readonly logs: LogCapture
  /** The undici dispatcher `request` and `admin` use (keep-alive), for streaming requests. */
  readonly agent: Agent
  /** A request through the gateway; `path` is sent exactly as given (no normalisation). */
  request(path: string, opts?: RequestOptions): Promise<HttpResult>
  /** A request to the admin API; an object body is sent as JSON. */
  admin(method: Dispatcher.HttpMethod, path: string, body?: unknown): Promise<HttpResult>
  /** Replaces the config file with a valid config (listeners on port 0 are filled in). */
  writeConfig(config: string | ConfigDoc): Promise<void>
  /** Replaces the config file with `text` exactly as given (to write broken files). */
  writeRawConfig(text: string): Promise<void>
}

export interface GatewayTestOptions {
  /** Watch the config file (as `fastmesh start` does). Default false. */
  readonly watch?: boolean
  /** Directory for the config file (default: a fresh temp directory). */
  readonly dir?: string
  /** pino level of the captured log. Default `info`. */
  readonly logLevel?: string
}

/** Listeners on loopback port 0 (a node's outbound, inbound and admin), unless the config names its own. */
export function withTestListeners (config: string | ConfigDoc): ConfigDoc {
  const doc = (typeof config === 'string' ? parse(config) : structuredClone(config)) as ConfigDoc
  const any = { address: '127.0.0.1', port: 0 }
  doc.listeners ??= (doc.gateway as { mode?: string } | undefined)?.mode === 'node'
    ? { outbound: any, inbound: any, admin: any }
    : { http: any, admin: any }
  return doc
}

async function readResult (res: Dispatcher.ResponseData): Promise<HttpResult> {
  const text = await res.body.text()
  return {
    status: res.statusCode,
    headers: res.headers,
    text,
    json<T> () { return JSON.parse(text) as T }
  }
}

/** A gateway built from `config` and not yet started (for tests of start failures). */
export async function createGateway (t: TestContext, config: string | ConfigDoc, opts: GatewayTestOptions = {}): Promise<TestGateway & { start(): Promise<void> }> {
  const dir = opts.dir ?? await tempDir(t)
  const configPath = join(dir, 'fastmesh.yaml')
  const writeConfig = async (c: string | ConfigDoc): Promise<void> => { await writeFile(configPath, stringify(withTestListeners(c))) }
  await writeConfig(config)
  const logs = new LogCapture()
  const log = createLogger({ level: opts.logLevel ?? 'info', destination: logs })
  const loaded = await loadConfigFile(configPath)
  const gateway = new Gateway({ loaded, log, provider: new FileConfigProvider(configPath, { log, watch: opts.watch ?? false }) })
  // Stopping a gateway that never started is fine: it only releases what exists.
  defer(t, async () => { await gateway.stop() })
  const agent = new Agent({ keepAliveTimeout: 10_000 })
  defer(t, async () => { await agent.destroy() })
  let url = ''
  let adminUrl = ''
  return {
    gateway,
    get url () { return url },
    get adminUrl () { return adminUrl },
    configPath,
    dir,
    logs,
    agent,
    async start () {
      await gateway.start()
      url = `http://127.0.0.1:${gateway.httpAddress.port}`
      adminUrl = `http://127.0.0.1:${gateway.adminAddress.port}`
    },
    async request (path, o = {}) {
      return await readResult(await agent.request({ origin: url, path, method: o.method ?? 'GET', headers: o.headers, body: o.body }))
    },
    async admin (method, path, body) {
      const json = body === undefined ? undefined : JSON.stringify(body)
      return await readResult(await agent.request({
        origin: adminUrl,
        path,
        method,
        headers: json === undefined ? {} : { 'content-type': 'application/json' },
        body: json
      }))
    },
    writeConfig,
    async writeRawConfig (text) { await writeFile(configPath, text) }
  }
}

/** Starts a gateway from `config` (YAML text or an object) on loopback port 0. */
export async function startGateway (t: TestContext, config: string | ConfigDoc, opts: GatewayTestOptions = {}): Promise<TestGateway> {
  const g = await createGateway(t, config, opts)
  await g.start()
  return g
}

/**
 * The `module` path of a fixture plugin (test/fixtures/plugins/FILE, compiled), relative to
 * `configDir` as a config file beside it would write it.
 */
export function fixturePlugin (configDir: string, file: string): string {
  const abs = fileURLToPath(new URL(`../fixtures/plugins/${file}`, import.meta.url))
  const rel = relative(configDir, abs)
  return rel.startsWith('.') ? rel : `./${rel}`
}

export interface ErrorBody {
  error: { code: string, message: string, requestId: string }
}

/** Asserts a gateway-made error response: status, JSON body with `code`, message and request id. */
export function assertErrorResponse (res: HttpResult, status: number, code: string): ErrorBody {
  assert.equal(res.status, status, `status (body: ${res.text})`)
  assert.match(String(res.headers['content-type']), /^application\/json/)
  const body = res.json<ErrorBody>()
  assert.equal(body.error.code, code)
  assert.equal(typeof body.error.message, 'string')
  assert.ok(body.error.message.length > 0, 'error message is not empty')
  assert.equal(typeof body.error.requestId, 'string')
  if (res.headers['x-request-id'] !== undefined) assert.equal(body.error.requestId, res.headers['x-request-id'])
  return body
}

/**
 * A request with node:http on a fresh connection, for what undici will not send: any
 * request target (`*`, absolute form), Connection/Keep-Alive/TE headers as given.
 */
export async function plainRequest (origin: string, target: string, opts: { method?: string, headers?: Record<string, string> } = {}): Promise<HttpResult> {
  const { hostname, port } = new URL(origin)
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path: target, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      readResponse(res).then(resolve, reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** A node:http(s) response read to the end as an HttpResult. */
export async function readResponse (res: IncomingMessage): Promise<HttpResult> {
  let text = ''
  res.setEncoding('utf8')
  for await (const chunk of res) text += chunk as string
  return { status: res.statusCode ?? 0, headers: res.headers, text, json<T> () { return JSON.parse(text) as T } }
}
