// A real Consul agent for tests: `consul agent -dev` (in-memory server with Connect enabled)
// on free loopback ports, one per test file or suite. See DESIGN.md, "Real components".
//
//   const agent = await startConsul()
//   t.after(() => agent.stop())
//   await consulApi(agent, 'PUT', '/v1/agent/service/register', { Name: 'web', Port: 8080 })
//
// The binary comes from .tools/bin/consul (installed by `npm run setup`) or `consul` on
// PATH. When neither exists, startConsul throws: a test that needs Consul fails, it does not
// skip. Agents that are still running when the test process exits (a crashed test, SIGINT,
// SIGTERM) are killed; only a SIGKILL of the test process itself can leave one behind.

import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePorts } from './ports.js'
import { ChildTracker, findTool } from './tool-process.js'

/** dist/test/helpers/consul.js → the project root is three levels up. */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const LOCAL_CONSUL = path.join(PROJECT_ROOT, '.tools', 'bin', 'consul')

export interface ConsulPorts {
  http: number
  dns: number
  serfLan: number
  serfWan: number
  server: number
}

export interface ConsulAgent {
  /** '127.0.0.1:PORT' of the HTTP API, as Consul clients take it. */
  httpAddr: string
  /** 'http://127.0.0.1:PORT' */
  url: string
  pid: number
  ports: ConsulPorts
  /** The binary that runs. */
  bin: string
  /** What the agent has printed so far (the most recent part when it is long). */
  output(): string
  /** SIGTERM, then SIGKILL after the stop timeout; resolves once the process is gone. Idempotent. */
  stop(): Promise<void>
}

export interface StartConsulOptions {
  /** How long to wait for a leader and the Connect CA. Default 30 s. */
  readyTimeoutMs?: number
  /** How long stop() waits after SIGTERM before SIGKILL. Default 5 s. */
  stopTimeoutMs?: number
  /** Fixed ports (to restart an agent on the address a gateway already uses); default: free ones. */
  ports?: ConsulPorts
  /** Extra `consul agent` arguments, e.g. ['-hcl', 'connect { enabled = true }']. */
  args?: string[]
  /**
   * A command that runs the agent, e.g. ['ip', 'netns', 'exec', 'ns1']: the agent is started
   * as `exec... consul agent ...`. The prefix must exec the agent (not fork it), so that the
   * child's pid is the agent's. Default: none.
   */
  exec?: readonly string[]
  /** `-bind` address (cluster traffic). Default 127.0.0.1. */
  bind?: string
  /** `-client` address(es), space-separated (HTTP and DNS). Default 127.0.0.1. */
  client?: string
  /** `-node` name. Default fastmesh-test-<http port>. */
  node?: string
  /**
   * How this process reaches the HTTP API, when not at http://127.0.0.1:<http port> (an agent
   * in another network namespace, reached through a relay). `httpAddr` and `url` follow it.
   */
  url?: string
}

/** The Consul binary the tests use, or an error that says how to install it. */
export function findConsul(): string {
  return findTool('consul', LOCAL_CONSUL, () =>
    `Consul is not installed: neither ${LOCAL_CONSUL} nor \`consul\` on PATH exists. ` +
    'Run `npm run setup` to install it (on Debian it fetches the bullseye `consul` package into .tools/; ' +
    'elsewhere it says where to get Consul >= 1.8).'
  )
}


// --- cleanup of agents that outlive their test ----------------------------------------------

const running = new ChildTracker()

// --- the agent ---------------------------------------------------------------------------

const OUTPUT_LIMIT = 256 * 1024

export async function startConsul(options: StartConsulOptions = {}): Promise<ConsulAgent> {
  const readyTimeoutMs = options.readyTimeoutMs ?? 30_000
  const stopTimeoutMs = options.stopTimeoutMs ?? 5_000
  const bin = findConsul()
  const ports: ConsulPorts = options.ports ?? await (async () => {
    const [http, dns, serfLan, serfWan, server] = await freePorts(5) as [number, number, number, number, number]
    return { http, dns, serfLan, serfWan, server }
  })()
  const { http, dns, serfLan, serfWan, server } = ports
  const args = [
    'agent', '-dev', // in-memory server, Connect enabled with the built-in CA; no data dir needed
    '-bind', options.bind ?? '127.0.0.1',
    '-client', options.client ?? '127.0.0.1',
    '-http-port', String(http),
    '-dns-port', String(dns),
    '-serf-lan-port', String(serfLan),
    '-serf-wan-port', String(serfWan),
    '-server-port', String(server),
    '-grpc-port=-1', // off
    '-node', options.node ?? `fastmesh-test-${http}`,
    '-hcl', 'disable_update_check = true',
    ...(options.args ?? []),
  ]

  const exec = options.exec ?? []
  const [command, ...commandArgs] = exec.length > 0 ? [...exec, bin, ...args] : [bin, ...args]
  const child = spawn(command!, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const append = (chunk: Buffer): void => {
    output += chunk.toString('utf8')
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT)
  }
  child.stdout?.on('data', append)
  child.stderr?.on('data', append)

  let exited: { code: number | null, signal: NodeJS.Signals | null } | null = null
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal }
      running.delete(child)
      resolve()
    })
  })
  const spawnError = await new Promise<Error | null>((resolve) => {
    child.once('spawn', () => resolve(null))
    child.once('error', (err) => resolve(err))
  })
  if (spawnError || child.pid === undefined) {
    throw new Error(`could not start ${[...exec, bin].join(' ')}: ${spawnError?.message ?? 'no pid'}`)
  }
  running.add(child)
  const pid = child.pid

  const url = (options.url ?? `http://127.0.0.1:${http}`).replace(/\/+$/, '')
  let stopping: Promise<void> | null = null
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (exited) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL') }, stopTimeoutMs)
      await exitPromise
      clearTimeout(timer)
    })()
    return stopping
  }
  const agent: ConsulAgent = { httpAddr: new URL(url).host, url, pid, ports, bin, output: () => output, stop }

  const fail = async (why: string): Promise<never> => {
    await stop()
    throw new Error(`consul agent (pid ${pid}, ${[...exec, bin, ...args].join(' ')}) ${why}\n--- agent output ---\n${output.slice(-8000)}`)
  }

  // Ready = a leader is elected and the Connect CA has a root.
  const deadline = Date.now() + readyTimeoutMs
  let waitingFor = 'a leader (GET /v1/status/leader)'
  for (;;) {
    if (exited) {
      const { code, signal } = exited as { code: number | null, signal: NodeJS.Signals | null }
      return fail(`exited (${signal ?? `code ${code}`}) before it was ready`)
    }
    if (Date.now() > deadline) return fail(`was not ready after ${readyTimeoutMs} ms: no ${waitingFor}`)
    try {
      const leader = await getJson(`${url}/v1/status/leader`)
      if (typeof leader === 'string' && leader !== '') {
        waitingFor = 'Connect CA root (GET /v1/connect/ca/roots)'
        const roots = await getJson(`${url}/v1/connect/ca/roots`) as { Roots?: unknown[] } | null
        if (Array.isArray(roots?.Roots) && roots.Roots.length > 0) return agent
      }
    } catch {
      // not listening yet, or no leader yet (500)
    }
    await sleep(50)
  }
}

async function getJson(url: string): Promise<unknown> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) })
  if (!res.ok) throw new Error(`${res.status}`)
  return res.json()
}

/**
 * One call to the agent's HTTP API; the parsed JSON response (null for an empty body).
 * Throws with the status and body when the response is not 2xx.
 */
export async function consulApi<T = unknown>(
  agent: Pick<ConsulAgent, 'url'>, method: string, apiPath: string, body?: unknown
): Promise<T> {
  const res = await fetch(`${agent.url}${apiPath}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`Consul ${method} ${apiPath}: HTTP ${res.status}: ${text.trim()}`)
  return (text.trim() === '' ? null : JSON.parse(text)) as T
}
