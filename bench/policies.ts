// `npm run bench:policies`: the balancing policies of issue 9, on loopback. A benchmark, not a
// test: no assertions.
// 1. slow endpoint: three upstreams, one answering `--slow-delay-ms` later than the others
//    (`--fast-delay-ms`), behind the fastmesh edge (bench/edge-config.ts, the `shop` service
//    with each policy in turn, a fresh gateway each time, rounds interleaved); closed loop at
//    fixed connections: req/s, client-seen p50/p90/p99, each upstream's share of requests.
// 2. cost: `ServiceEndpoints.pick` + `report` per policy over 1,000 endpoints
//    (bench/policy-cost.ts, a fresh process per policy and run, runs interleaved), ns/pick.
// Reported figures are medians over rounds (runs).
//
//   node dist/bench/policies.js [--only slow|cost] [--rounds 3] [--duration 8] [--warmup 2]
//     [--connections 32] [--fast-delay-ms 1] [--slow-delay-ms 20]
//     [--policies round_robin,least_request,ewma] [--cost-runs 5] [--cost-endpoints 1000]
//     [--cost-picks 200000] [--tool wrk|autocannon] [--out FILE]
import { parseArgs } from 'node:util'
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir, cpus, release } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { freePorts } from '../test/helpers/ports.js'
import { POLICIES, type PolicyName } from '../src/balancer/policies/index.js'
import { runBenchMain, spawnChild, stopAllChildren, stopChild, waitForHttp, type Child } from './children.js'
import { closedLoop, pickLoadTool, type LoadTool } from './load.js'
import { cpuMicros, systemBusyPercent } from './procstat.js'
import { startEdge, type BenchContext } from './scenarios.js'

const repoRoot = fileURLToPath(new URL('../../', import.meta.url))
const dist = (file: string): string => fileURLToPath(new URL(file, import.meta.url))

const { values } = parseArgs({
  options: {
    only: { type: 'string', default: '' },
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '32' },
    'fast-delay-ms': { type: 'string', default: '1' },
    'slow-delay-ms': { type: 'string', default: '20' },
    policies: { type: 'string', default: 'round_robin,least_request,ewma' },
    'cost-runs': { type: 'string', default: '5' },
    'cost-endpoints': { type: 'string', default: '1000' },
    'cost-picks': { type: 'string', default: '200000' },
    'pool-connections': { type: 'string', default: '128' },
    tool: { type: 'string', default: '' },
    out: { type: 'string', default: '' },
    help: { type: 'boolean', short: 'h', default: false }
  }
})
if (values.help) {
  console.log('Usage: node dist/bench/policies.js [--only slow|cost] [--rounds 3] [--duration 8] [--warmup 2] [--connections 32] [--fast-delay-ms 1] [--slow-delay-ms 20] [--policies round_robin,least_request,ewma] [--cost-runs 5] [--cost-endpoints 1000] [--cost-picks 200000] [--pool-connections 128] [--tool wrk|autocannon] [--out FILE]')
  process.exit(0)
}
const positive = (k: keyof typeof values, min = 1): number => {
  const n = Number(values[k])
  if (!Number.isInteger(n) || n < min) throw new Error(`--${k} must be an integer ≥ ${min} (got "${String(values[k])}")`)
  return n
}
const o = {
  only: values.only!,
  rounds: positive('rounds'),
  durationS: positive('duration'),
  warmupS: positive('warmup', 0),
  connections: positive('connections'),
  fastDelayMs: positive('fast-delay-ms', 0),
  slowDelayMs: positive('slow-delay-ms', 0),
  policies: values.policies!.split(',').map((p) => p.trim()).filter((p) => p !== '') as PolicyName[],
  costRuns: positive('cost-runs'),
  costEndpoints: positive('cost-endpoints'),
  costPicks: positive('cost-picks'),
  poolConnections: positive('pool-connections'),
  tool: values.tool === '' ? undefined : values.tool,
  out: values.out !== '' ? values.out! : join(repoRoot, 'bench/results/policies.json')
}
if (o.only !== '' && o.only !== 'slow' && o.only !== 'cost') throw new Error('--only must be slow or cost')
for (const p of o.policies) if (!POLICIES.includes(p)) throw new Error(`unknown policy ${p}; known: ${POLICIES.join(', ')}`)

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2 }
const round = (x: number, digits: number): number => Number(x.toFixed(digits))

function table (head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => cells.map((c, i) => i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)).join('  ')
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

interface Upstream { readonly child: Child, readonly port: number, readonly delayMs: number, readonly label: string }

async function served (u: Upstream): Promise<number> {
  const res = await request(`http://127.0.0.1:${u.port}/__bench/count`)
  return Number(await res.body.text())
}

interface SlowMeasurement {
  policy: PolicyName
  round: number
  rps: number
  p50_ms: number
  p90_ms: number
  p99_ms: number
  cpu_us_per_req?: number
  errors: number
  /** Each upstream's share of the requests it served during the measured run, in %. */
  share_pct: number[]
}

async function slowEndpoint (tool: LoadTool, workDir: string): Promise<Record<string, unknown>> {
  const ports = await freePorts(3)
  const delays = [o.fastDelayMs, o.fastDelayMs, o.slowDelayMs]
  const upstreams: Upstream[] = []
  try {
    for (let i = 0; i < 3; i++) {
      const child = spawnChild(`upstream ${i + 1}`, process.execPath, { args: [dist('./upstream.js'), '--port', String(ports[i]), '--delay-ms', String(delays[i])] })
      upstreams.push({ child, port: ports[i]!, delayMs: delays[i]!, label: `up${i + 1} (${delays[i]} ms)` })
      await waitForHttp(`http://127.0.0.1:${ports[i]}/__bench/count`, child)
    }
    const all: SlowMeasurement[] = []
    for (let r = 1; r <= o.rounds; r++) {
      for (const policy of o.policies) {
        const ctx: BenchContext = { upstreamPorts: ports, upstreamPid: upstreams[0]!.child.pid, workDir, poolConnections: o.poolConnections, round: r, nodeArgs: () => [] }
        const running = await startEdge(ctx, `policy-${policy}`, { shopLoadBalancer: { policy } })
        try {
          const load = { tool, url: running.url, connections: o.connections, wrkThreads: 1 }
          if (o.warmupS > 0) await closedLoop({ ...load, durationS: o.warmupS })
          const n0 = await Promise.all(upstreams.map(served))
          const c0 = cpuMicros(running.measuredPid)
          const closed = await closedLoop({ ...load, durationS: o.durationS })
          const c1 = cpuMicros(running.measuredPid)
          const n1 = await Promise.all(upstreams.map(served))
          const counts = n1.map((n, i) => n - n0[i]!)
          const total = counts.reduce((a, b) => a + b, 0)
          if (closed.latencyMs === undefined) throw new Error(`${tool} reported no latency percentiles`)
          const m: SlowMeasurement = {
            policy,
            round: r,
            rps: closed.rps,
            p50_ms: closed.latencyMs.p50,
            p90_ms: closed.latencyMs.p90,
            p99_ms: closed.latencyMs.p99,
            ...(c0 !== undefined && c1 !== undefined && closed.requests > 0 ? { cpu_us_per_req: (c1 - c0) / closed.requests } : {}),
            errors: closed.errors + closed.non2xx,
            share_pct: counts.map((c) => total === 0 ? 0 : (100 * c) / total)
          }
          all.push(m)
          console.log(`[round ${r}/${o.rounds}] ${policy.padEnd(13)} ${m.rps.toFixed(0).padStart(6)} req/s  p50 ${m.p50_ms.toFixed(2)} p99 ${m.p99_ms.toFixed(2)} ms  shares ${m.share_pct.map((s) => s.toFixed(1)).join(' / ')} %${m.errors > 0 ? `  !! errors ${m.errors}` : ''}`)
        } finally {
          await running.stop()
        }
        await running.afterStop?.()
      }
    }
    const summary = Object.fromEntries(o.policies.map((policy) => {
      const ms = all.filter((m) => m.policy === policy)
      const med = (f: (m: SlowMeasurement) => number | undefined): number | undefined => {
        const xs = ms.map(f).filter((x): x is number => x !== undefined)
        return xs.length === 0 ? undefined : median(xs)
      }
      return [policy, {
        rps: round(med((m) => m.rps)!, 0),
        p50_ms: round(med((m) => m.p50_ms)!, 3),
        p90_ms: round(med((m) => m.p90_ms)!, 3),
        p99_ms: round(med((m) => m.p99_ms)!, 3),
        cpu_us_per_req: med((m) => m.cpu_us_per_req) !== undefined ? round(med((m) => m.cpu_us_per_req)!, 1) : undefined,
        share_pct: upstreams.map((_, i) => round(med((m) => m.share_pct[i])!, 1)),
        errors: ms.reduce((a, m) => a + m.errors, 0),
        rounds: ms
      }]
    }))
    console.log(`\nslow endpoint: ${upstreams.map((u) => u.label).join(', ')}; ${tool} closed loop -c${o.connections} ${o.durationS}s (+${o.warmupS}s warm-up); medians of ${o.rounds} round(s)\n`)
    console.log(table(
      ['policy', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'CPU µs/req', ...upstreams.map((u) => `% ${u.label}`), 'errors'],
      Object.entries(summary).map(([p, s]) => [p, String(s.rps), s.p50_ms.toFixed(2), s.p90_ms.toFixed(2), s.p99_ms.toFixed(2), s.cpu_us_per_req?.toFixed(1) ?? '—', ...s.share_pct.map((x) => x.toFixed(1)), String(s.errors)])
    ))
    return { upstreams: upstreams.map((u) => ({ label: u.label, delay_ms: u.delayMs })), connections: o.connections, duration_s: o.durationS, warmup_s: o.warmupS, rounds: o.rounds, tool, policies: summary }
  } finally {
    for (const u of upstreams) await stopChild(u.child)
  }
}

interface CostRun { policy: string, ns_per_pick: number, update_ms: number }

async function pickCost (): Promise<Record<string, unknown>> {
  // Round robin twice: equal weights (plain rotation) and mixed weights (smooth weighted).
  const variants: Array<{ name: string, policy: PolicyName, args: string[] }> = [
    ...POLICIES.map((p) => ({ name: p, policy: p, args: [] })),
    { name: 'round_robin (weights 1-3)', policy: 'round_robin', args: ['--mixed-weights'] }
  ]
  const runs = new Map<string, CostRun[]>(variants.map((v) => [v.name, []]))
  for (let r = 1; r <= o.costRuns; r++) {
    for (const v of variants) {
      const child = spawnChild(`policy-cost ${v.name}`, process.execPath, {
        args: [dist('./policy-cost.js'), '--policy', v.policy, '--endpoints', String(o.costEndpoints), '--picks', String(o.costPicks), ...v.args],
        capture: true
      })
      const code = await child.exited
      if (code !== 0) throw new Error(`policy-cost ${v.name} failed (${code}): ${child.stderr()}`)
      runs.get(v.name)!.push(JSON.parse(child.stdout().trim().split('\n').pop()!) as CostRun)
    }
    console.log(`[cost run ${r}/${o.costRuns}] ${variants.map((v) => `${v.name} ${runs.get(v.name)!.at(-1)!.ns_per_pick.toFixed(0)}`).join(', ')} ns/pick`)
  }
  const summary = Object.fromEntries(variants.map((v) => {
    const rs = runs.get(v.name)!
    const ns = rs.map((x) => x.ns_per_pick)
    return [v.name, {
      ns_per_pick: round(median(ns), 0),
      ns_per_pick_min: round(Math.min(...ns), 0),
      ns_per_pick_max: round(Math.max(...ns), 0),
      update_ms: round(median(rs.map((x) => x.update_ms)), 2),
      runs: rs.map((x) => round(x.ns_per_pick, 0))
    }]
  }))
  console.log(`\npick + report cost, ${o.costEndpoints} endpoints in one service, 32 attempts in flight; median of ${o.costRuns} runs (each the median of 5 batches of ${o.costPicks} picks, a fresh process per policy and run)\n`)
  console.log(table(
    ['policy', 'ns/pick', 'min–max ns', 'endpoint change ms'],
    Object.entries(summary).map(([p, s]) => [p, String(s.ns_per_pick), `${s.ns_per_pick_min}–${s.ns_per_pick_max}`, s.update_ms.toFixed(2)])
  ))
  return { endpoints: o.costEndpoints, picks_per_batch: o.costPicks, runs: o.costRuns, in_flight: 32, policies: summary }
}

let workDir: string | undefined

async function main (): Promise<void> {
  const cpuList = cpus()
  console.log(`fastmesh policies bench; machine: ${cpuList.length} × ${cpuList[0]?.model ?? '?'}, node ${process.version}`)
  const busy = await systemBusyPercent(1000)
  if (busy !== undefined) console.log(`machine busy before start: ${busy.toFixed(0)}% of all CPUs${busy > 10 ? ' — other work is running: expect noisy figures' : ''}`)
  workDir = await mkdtemp(join(tmpdir(), 'fastmesh-bench-policies-'))
  const report: Record<string, unknown> = {}
  try {
    if (o.only !== 'cost') report.slow_endpoint = await slowEndpoint(pickLoadTool(o.tool), workDir)
    if (o.only !== 'slow') {
      if (o.only === '') console.log('')
      report.pick_cost = await pickCost()
    }
  } finally {
    await stopAllChildren()
    await rm(workDir, { recursive: true, force: true })
  }
  report.machine = { cpus: cpuList.length, model: cpuList[0]?.model ?? 'unknown', node: process.version, kernel: release(), background_busy_pct_before: busy !== undefined ? round(busy, 1) : undefined, date: new Date().toISOString() }
  await mkdir(dirname(o.out), { recursive: true })
  await writeFile(o.out, JSON.stringify(report, null, 2) + '\n')
  const shown = relative(process.cwd(), o.out)
  console.log(`\nwritten: ${shown.startsWith('..') ? o.out : shown}`)
}

runBenchMain('bench', main, () => workDir)
