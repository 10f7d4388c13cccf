// The benchmark scenarios, as data: each starts its system under test (in child processes)
// and says which URL to load and which process's CPU and memory to report. A new scenario
// (node_to_node_mtls, edge_retries, ...) is one more entry in SCENARIOS.
import { writeFile, rm, stat } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { freePort, freePorts } from '../test/helpers/ports.js'
import { spawnChild, stopChild, waitForHttp } from './children.js'
import { commandLine, cpusAllowed, isLive } from './procstat.js'
import { edgeConfigYaml, EDGE_BENCH_PATH, EDGE_BENCH_ROUTE, type EdgeConfigOptions } from './edge-config.js'
import { nodeToNodeScenario } from './mesh-scenario.js'

/** What the harness sets up once for every scenario. */
export interface BenchContext {
  /** The fixed-response upstream(s); the first is the one `direct` loads. */
  readonly upstreamPorts: readonly number[]
  readonly upstreamPid: number
  /** A scratch directory for generated configs and logs, removed at the end. */
  readonly workDir: string
  /** Upstream connections per endpoint for every proxy. */
  readonly poolConnections: number
  /** Round number (1-based), for file names. */
  readonly round: number
  /** Extra node flags for the proxy processes of scenario `name` (e.g. --cpu-prof). */
  nodeArgs(name: string): string[]
  /** `gateway.workers` of the edge_workers scenario (bench --workers); undefined: not measured. */
  readonly gatewayWorkers?: number
  /** NODE_CLUSTER_SCHED_POLICY for a gateway with workers (bench --sched); undefined: Node's default. */
  readonly clusterSchedPolicy?: 'rr' | 'none'
}

export interface RunningScenario {
  /** The URL the load generators hit. */
  readonly url: string
  /** The process whose CPU time and RSS are reported (the proxy; the upstream for direct). */
  readonly measuredPid: number
  /** Headers every load generator sends (a bearer token). */
  readonly headers?: Readonly<Record<string, string>>
  /** More processes of the system under test (a second gateway): their CPU and RSS are added. */
  readonly extraPids?: readonly number[]
  /**
   * The serving workers of a gateway whose primary is `measuredPid`: their CPU and RSS are
   * added, and their CPU is also reported apart from the primary's.
   */
  readonly workerPids?: readonly number[]
  stop(): Promise<void>
  /** Facts gathered once stopped (e.g. access-log lines the gateway wrote and flushed). */
  afterStop?(): Promise<Record<string, unknown>>
}

export interface ScenarioDefinition {
  readonly name: string
  readonly description: string
  /** Scenarios whose req/s this one is given as a ratio of (`ratio_to_<name>`). */
  readonly compareTo: readonly string[]
  /** The same system in one process (in compareTo): req/s as a ratio of it is the scaling factor. */
  readonly singleProcess?: string
  start(ctx: BenchContext): Promise<RunningScenario>
}

const dist = (file: string): string => fileURLToPath(new URL(file, import.meta.url))

interface AccessLogCounts {
  accessLines: number
  routeLines: number
  logBytes: number
  /** Access lines by the pid that wrote them (with workers: requests each worker served). */
  byPid: Map<number, number>
  /** `schedulingPolicy` of the primary's "workers listening" line, when it has workers. */
  schedulingPolicy: string | undefined
}

/** Counts access-log lines, and those of `route`, in a gateway log file (streamed). */
async function accessLogCounts (file: string, route: string): Promise<AccessLogCounts> {
  const size = (await stat(file)).size
  const needle = '"log":"access"'
  const routeNeedle = `"route":"${route}"`
  const pidPattern = /"pid":(\d+)/
  const byPid = new Map<number, number>()
  let schedulingPolicy: string | undefined
  let accessLines = 0
  let routeLines = 0
  let carry = ''
  for await (const chunk of createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 20 })) {
    const lines = (carry + (chunk as string)).split('\n')
    carry = lines.pop() ?? ''
    for (const l of lines) {
      if (!l.includes(needle)) {
        if (l.includes('"msg":"workers listening"')) schedulingPolicy = (JSON.parse(l) as { schedulingPolicy?: string }).schedulingPolicy
        continue
      }
      accessLines++
      if (l.includes(routeNeedle)) routeLines++
      const pid = Number(pidPattern.exec(l)?.[1])
      byPid.set(pid, (byPid.get(pid) ?? 0) + 1)
    }
  }
  return { accessLines, routeLines, logBytes: size, byPid, schedulingPolicy }
}

interface WorkersView {
  primary: number
  workers: Array<{ index: number, pid: number | null, state: string, restarts: number }>
}

async function workersView (adminUrl: string): Promise<WorkersView> {
  const res = await request(`${adminUrl}/workers`)
  if (res.statusCode !== 200) throw new Error(`GET /workers answered ${res.statusCode}: ${await res.body.text()}`)
  return await res.body.json() as WorkersView
}

/**
 * The pids of the `count` workers of the gateway whose primary is `primaryPid`, every one
 * ready (admin GET /workers); fails otherwise, since their CPU would be missing.
 */
async function readyWorkerPids (adminUrl: string, primaryPid: number, count: number): Promise<number[]> {
  const view = await workersView(adminUrl)
  if (view.primary !== primaryPid) throw new Error(`GET /workers names primary ${view.primary}, the bench started ${primaryPid}`)
  const ready = view.workers.filter((w) => w.state === 'ready' && w.pid !== null)
  if (ready.length !== count) throw new Error(`${ready.length} of ${count} workers ready: ${JSON.stringify(view.workers)}`)
  return ready.map((w) => w.pid!)
}

/**
 * Worker processes still running once their primary has stopped: they should have drained
 * and exited before it did. Each is waited for up to `graceMs`, then killed by its pid (if
 * that pid is still a worker-main process) and reported.
 */
async function killOrphanWorkers (pids: readonly number[], graceMs = 6000): Promise<number[]> {
  const deadline = Date.now() + graceMs
  let left = pids.filter(isLive)
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => { setTimeout(resolve, 100) })
    left = left.filter(isLive)
  }
  const orphans = left.filter((pid) => commandLine(pid)?.includes('worker-main') === true)
  for (const pid of orphans) { try { process.kill(pid, 'SIGKILL') } catch { /* gone meanwhile */ } }
  return orphans
}

/** The retries of the `edge_retries` scenario: on, with nothing to retry. */
export const EDGE_BENCH_RETRIES = { attempts: 3, retryOn: ['gateway-error'] }

/**
 * A fastmesh edge over `ctx.upstreamPorts` with the benchmark config (plus `extra`), ready
 * (admin /ready and the benchmarked URL answer); its access log is counted once stopped.
 */
export async function startEdge (ctx: BenchContext, name: string, extra: Pick<EdgeConfigOptions, 'shopLoadBalancer' | 'shopRetries' | 'shopMirror' | 'shopPlugins' | 'customPlugins' | 'metrics' | 'tracing' | 'totalRoutes' | 'workers'>, headers?: Readonly<Record<string, string>>): Promise<RunningScenario> {
  const [httpPort, adminPort] = await freePorts(2)
  const workers = extra.workers
  const configFile = join(ctx.workDir, `${name}.yaml`)
  const logFile = join(ctx.workDir, `${name}-round${ctx.round}.log`)
  await writeFile(configFile, edgeConfigYaml({ upstreamPorts: ctx.upstreamPorts, httpPort, adminPort, poolConnections: ctx.poolConnections, ...extra }))
  const child = spawnChild(`fastmesh ${name}`, process.execPath, {
    args: [...ctx.nodeArgs(name), dist('../src/cli/index.js'), 'start', '--config', configFile],
    env: {
      ...process.env,
      FASTMESH_HTTP_PORT: String(httpPort),
      FASTMESH_ADMIN_PORT: String(adminPort),
      // Read by node:cluster in the primary when it first forks.
      ...(workers !== undefined && ctx.clusterSchedPolicy !== undefined ? { NODE_CLUSTER_SCHED_POLICY: ctx.clusterSchedPolicy } : {})
    },
    logFile,
    proxy: true
  })
  const url = `http://127.0.0.1:${httpPort}${EDGE_BENCH_PATH}`
  const adminUrl = `http://127.0.0.1:${adminPort}`
  let position = ''
  let workerPids: number[] = []
  try {
    await waitForHttp(`${adminUrl}/ready`, child)
    await waitForHttp(url, child, undefined, undefined, headers)
    const res = await request(`${adminUrl}/routes`)
    const { routes } = await res.body.json() as { routes: Array<{ name: string }> }
    position = `#${routes.findIndex((r) => r.name === EDGE_BENCH_ROUTE) + 1} of ${routes.length} in match order`
    if (workers !== undefined) workerPids = await readyWorkerPids(adminUrl, child.pid, workers)
  } catch (err) {
    await stopChild(child)
    if (workers !== undefined) await killOrphanWorkers(workerPids)
    throw new Error(`${(err as Error).message} (gateway log: ${logFile})`)
  }
  // With workers: where they may run (pinning reaches them through fork), and what happened to them.
  const workerFacts: Record<string, unknown> = workers === undefined
    ? {}
    : { workers, gatewayCpus: [...new Set([child.pid, ...workerPids].map((pid) => cpusAllowed(pid) ?? '?'))].join(' | ') }
  return {
    url,
    ...(headers !== undefined ? { headers } : {}),
    measuredPid: child.pid,
    ...(workers !== undefined ? { workerPids } : {}),
    async stop () {
      if (workers !== undefined) {
        // A worker replaced during the run took its CPU time with it: the figures miss it.
        try {
          const view = await workersView(adminUrl)
          workerFacts.workerRestarts = view.workers.reduce((n, w) => n + w.restarts, 0)
        } catch (err) {
          workerFacts.workerRestarts = `unknown: ${(err as Error).message}`
        }
      }
      await stopChild(child)
      if (workers !== undefined) {
        const orphans = await killOrphanWorkers(workerPids)
        if (orphans.length > 0) workerFacts.orphanWorkersKilled = orphans
      }
    },
    async afterStop () {
      const { byPid, schedulingPolicy, ...counts } = await accessLogCounts(logFile, EDGE_BENCH_ROUTE)
      // Large (a line per request): counted, not kept.
      await rm(logFile, { force: true })
      if (workers !== undefined) {
        workerFacts.schedulingPolicy = schedulingPolicy ?? 'not logged'
        // Requests each worker served over the whole run (warm-up, closed and paced loads), in
        // percent of access lines, in worker order. Keep-alive clients stay on the worker that accepted them.
        workerFacts.requestsByWorkerPct = workerPids.map((pid) => Number((100 * (byPid.get(pid) ?? 0) / Math.max(1, counts.accessLines)).toFixed(1)))
        const others = [...byPid.keys()].filter((pid) => !workerPids.includes(pid))
        if (others.length > 0) workerFacts.accessLinesOfOtherPids = others.map((pid) => `${pid}: ${byPid.get(pid)}`).join(', ')
      }
      return { route: EDGE_BENCH_ROUTE, routePosition: position, ...counts, ...workerFacts }
    }
  }
}

/**
 * The edge with tracing at `ratio`, exporting to an OTLP sink in its own process (not measured,
 * and off the proxy CPUs when pinned, as a collector would be); the sink's intake is reported.
 */
async function startTracedEdge (ctx: BenchContext, name: string, ratio: number): Promise<RunningScenario> {
  const sinkPort = await freePort()
  const sink = spawnChild(`otlp sink ${name}`, process.execPath, { args: [dist('./otlp-sink.js'), '--port', String(sinkPort)] })
  const sinkUrl = `http://127.0.0.1:${sinkPort}`
  let edge: RunningScenario
  try {
    await waitForHttp(`${sinkUrl}/__sink/count`, sink)
    edge = await startEdge(ctx, name, { tracing: { ratio, endpoint: sinkUrl } })
  } catch (err) {
    await stopChild(sink)
    throw err
  }
  let intake: Record<string, unknown> = {}
  return {
    ...edge,
    async stop () {
      // The gateway flushes its last spans when it stops: read the intake after that.
      await edge.stop()
      try {
        const res = await request(`${sinkUrl}/__sink/count`)
        const { requests, bytes } = await res.body.json() as { requests: number, bytes: number }
        intake = { otlpExportRequests: requests, otlpExportBytes: bytes }
      } finally {
        await stopChild(sink)
      }
    },
    async afterStop () { return { ...(await edge.afterStop?.()), ...intake } }
  }
}

/** The `rate-limit` of the plugin scenarios: local, per client, never reached by the bench. */
export const EDGE_BENCH_RATE_LIMIT = { name: 'rate-limit', options: { max: 1_000_000_000, timeWindow: '1m', keyBy: 'client' } }

/**
 * The `jwt` plugin of `edge_rate_limit_jwt`: a static RS256 key (the most common algorithm),
 * issuer and audience checked, the subject forwarded; and the token the load generators send.
 */
export async function benchJwt (extra: Record<string, unknown> = {}): Promise<{ plugin: Record<string, unknown>, headers: Record<string, string> }> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true })
  const jwk = { ...await exportJWK(publicKey), kid: 'bench', alg: 'RS256' }
  const token = await new SignJWT({ sub: 'bench-user', scope: 'shop.read' })
    .setProtectedHeader({ alg: 'RS256', kid: 'bench' })
    .setIssuer('https://issuer.bench/').setAudience('shop').setIssuedAt().setExpirationTime('24h')
    .sign(privateKey)
  return {
    plugin: { name: 'jwt', options: { keys: [jwk], issuer: 'https://issuer.bench/', audience: 'shop', forwardClaims: { sub: 'x-user-id' }, ...extra } },
    headers: { authorization: `Bearer ${token}` }
  }
}

/**
 * A single-file proxy (`script`, taking --port, --upstream and --connections) in front of the
 * first upstream, with the pool size every proxy gets; ready once the benchmarked URL answers.
 */
async function startProxyScript (ctx: BenchContext, name: string, label: string, script: string): Promise<RunningScenario> {
  const port = await freePort()
  const child = spawnChild(label, process.execPath, {
    args: [...ctx.nodeArgs(name), dist(script), '--port', String(port), '--upstream', `http://127.0.0.1:${ctx.upstreamPorts[0]}`, '--connections', String(ctx.poolConnections)],
    proxy: true
  })
  const url = `http://127.0.0.1:${port}${EDGE_BENCH_PATH}`
  try {
    await waitForHttp(url, child)
  } catch (err) {
    await stopChild(child)
    throw err
  }
  return { url, measuredPid: child.pid, async stop () { await stopChild(child) } }
}

export const SCENARIOS: readonly ScenarioDefinition[] = [
  {
    name: 'direct',
    description: 'load generator → upstream',
    compareTo: [],
    async start (ctx) {
      return { url: `http://127.0.0.1:${ctx.upstreamPorts[0]}/shop/products/42?view=full`, measuredPid: ctx.upstreamPid, async stop () {} }
    }
  },
  {
    name: 'node_ceiling',
    description: 'load generator → node:http + undici Pool proxy (bench/node-ceiling.ts) → upstream',
    compareTo: ['direct'],
    async start (ctx) { return await startProxyScript(ctx, 'node_ceiling', 'node ceiling proxy', './node-ceiling.js') }
  },
  {
    name: 'edge',
    description: `load generator → fastmesh edge (14 routes, access log on, route "${EDGE_BENCH_ROUTE}") → upstream`,
    compareTo: ['direct', 'node_ceiling'],
    async start (ctx) { return await startEdge(ctx, 'edge', {}) }
  },
  {
    name: 'edge_workers',
    description: 'the edge scenario with gateway.workers: N (bench --workers N): a primary (config, discovery, admin) and N node:cluster workers sharing the port and serving',
    compareTo: ['direct', 'node_ceiling', 'edge'],
    singleProcess: 'edge',
    async start (ctx) {
      if (ctx.gatewayWorkers === undefined) throw new Error('edge_workers needs a worker count: --workers N')
      return await startEdge(ctx, 'edge_workers', { workers: ctx.gatewayWorkers })
    }
  },
  {
    name: 'fastify_http_proxy',
    description: 'load generator → Fastify + @fastify/http-proxy (reply-from over undici, bench/fastify-http-proxy.ts) → upstream: the off-the-shelf forwarding the edge does not use',
    compareTo: ['direct', 'node_ceiling', 'edge'],
    async start (ctx) { return await startProxyScript(ctx, 'fastify_http_proxy', 'fastify http-proxy', './fastify-http-proxy.js') }
  },
  {
    name: 'edge_metrics_off',
    description: 'the edge scenario with telemetry.metrics.enabled: false (the cost of the metrics policy, against edge)',
    compareTo: ['edge'],
    async start (ctx) { return await startEdge(ctx, 'edge_metrics_off', { metrics: false }) }
  },
  {
    name: 'edge_1000_routes',
    description: 'the edge scenario with 1,000 routes: 986 prefix + header routes that do not take the request are tried before it (the route index keeps the match cost flat)',
    compareTo: ['direct', 'node_ceiling', 'edge'],
    async start (ctx) { return await startEdge(ctx, 'edge_1000_routes', { totalRoutes: 1000 }) }
  },
  {
    name: 'edge_tracing_100',
    description: 'the edge scenario with tracing on, every request sampled (a server and a client span each), exported over OTLP/HTTP to a local sink process',
    compareTo: ['edge', 'edge_metrics_off'],
    async start (ctx) { return await startTracedEdge(ctx, 'edge_tracing_100', 1) }
  },
  {
    name: 'edge_tracing_1',
    description: 'the edge scenario with tracing on at 1% sampling (the others still get ids and a traceparent upstream), exported to a local sink process',
    compareTo: ['edge', 'edge_metrics_off'],
    async start (ctx) { return await startTracedEdge(ctx, 'edge_tracing_1', 0.01) }
  },
  {
    name: 'edge_retries',
    description: `the edge scenario with retries on route "${EDGE_BENCH_ROUTE}" (attempts 3, retryOn gateway-error), none needed`,
    compareTo: ['direct', 'node_ceiling', 'edge'],
    async start (ctx) { return await startEdge(ctx, 'edge_retries', { shopRetries: EDGE_BENCH_RETRIES }) }
  },
  {
    name: 'edge_mirror',
    description: `the edge scenario mirroring every request of route "${EDGE_BENCH_ROUTE}" to a live service (the same upstream)`,
    compareTo: ['edge'],
    async start (ctx) { return await startEdge(ctx, 'edge_mirror', { shopMirror: { ports: ctx.upstreamPorts } }) }
  },
  {
    name: 'edge_mirror_dead',
    description: `the edge scenario mirroring every request of route "${EDGE_BENCH_ROUTE}" to a dead service (a closed port)`,
    compareTo: ['edge', 'edge_mirror'],
    async start (ctx) { return await startEdge(ctx, 'edge_mirror_dead', { shopMirror: { ports: [await freePort()] } }) }
  },
  {
    name: 'edge_noop_plugin',
    description: `the edge scenario with a plugin that does nothing on route "${EDGE_BENCH_ROUTE}": the cost of leaving the fast path for Fastify`,
    compareTo: ['edge'],
    async start (ctx) {
      return await startEdge(ctx, 'edge_noop_plugin', { shopPlugins: [{ name: 'noop' }], customPlugins: { noop: { module: dist('./noop-plugin.js') } } })
    }
  },
  {
    name: 'edge_rate_limit',
    description: `the edge scenario with a local rate-limit on route "${EDGE_BENCH_ROUTE}" (per client, never reached)`,
    compareTo: ['edge', 'edge_noop_plugin'],
    async start (ctx) { return await startEdge(ctx, 'edge_rate_limit', { shopPlugins: [EDGE_BENCH_RATE_LIMIT] }) }
  },
  {
    name: 'edge_rate_limit_jwt',
    description: `the edge_rate_limit scenario plus jwt (static RS256 key, issuer and audience checked, sub forwarded) on route "${EDGE_BENCH_ROUTE}"; every request carries the same valid token, so after the first the verified-token cache answers`,
    compareTo: ['edge', 'edge_noop_plugin', 'edge_rate_limit'],
    async start (ctx) {
      const jwt = await benchJwt()
      return await startEdge(ctx, 'edge_rate_limit_jwt', { shopPlugins: [EDGE_BENCH_RATE_LIMIT, jwt.plugin] }, jwt.headers)
    }
  },
  {
    name: 'edge_rate_limit_jwt_nocache',
    description: 'edge_rate_limit_jwt with the verified-token cache off (tokenCacheSize 0): every request verifies the RS256 signature',
    compareTo: ['edge', 'edge_rate_limit', 'edge_rate_limit_jwt'],
    async start (ctx) {
      const jwt = await benchJwt({ tokenCacheSize: 0 })
      return await startEdge(ctx, 'edge_rate_limit_jwt_nocache', { shopPlugins: [EDGE_BENCH_RATE_LIMIT, jwt.plugin] }, jwt.headers)
    }
  },
  nodeToNodeScenario
]
