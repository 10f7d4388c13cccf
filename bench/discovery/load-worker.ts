// Steady paced traffic through one gateway route, in a worker thread so the harness's own
// polling does not delay it: requests are scheduled at a fixed rate whatever the answers
// do (open loop), on a keep-alive undici Pool. Latency is taken both from the actual send
// and from the scheduled send (the latter includes any delay in getting the request out).
// Stops on the message 'stop' or after maxDurationMs, then posts a LoadResult.
import { parentPort, workerData } from 'node:worker_threads'
import { Pool } from 'undici'

export interface LoadParams {
  readonly origin: string
  readonly path: string
  /** Extra request headers (the Host header names the service on a node's outbound port). */
  readonly headers: Record<string, string>
  readonly rate: number
  readonly connections: number
  readonly maxDurationMs: number
  /** Latencies of requests scheduled in the first warmupMs are not kept (errors still count). */
  readonly warmupMs: number
  /** A 200 whose body does not start with this counts as an error. */
  readonly expectBodyPrefix: string
}

export interface LoadResult {
  readonly sent: number
  readonly ok: number
  readonly errors: number
  readonly errorKinds: Record<string, number>
  readonly durationMs: number
  readonly latencyMs: number[]
  readonly correctedLatencyMs: number[]
  readonly byBody: Record<string, number>
  /** Slowest request (from its scheduled time) per second of the run, to show stalls. */
  readonly perSecondMaxMs: number[]
}

const params = workerData as LoadParams
const pool = new Pool(params.origin, { connections: params.connections, pipelining: 1, keepAliveTimeout: 30_000, headersTimeout: 10_000, bodyTimeout: 10_000 })
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6

const latencyMs: number[] = []
const correctedLatencyMs: number[] = []
const errorKinds: Record<string, number> = {}
const byBody: Record<string, number> = {}
const perSecondMaxMs: number[] = []
let sent = 0
let ok = 0
let errors = 0
let inFlight = 0
let stopped = false

function fail (kind: string): void {
  errors++
  errorKinds[kind] = (errorKinds[kind] ?? 0) + 1
}

async function send (scheduled: number): Promise<void> {
  const t0 = nowMs()
  sent++
  inFlight++
  try {
    const res = await pool.request({ method: 'GET', path: params.path, headers: params.headers })
    const body = await res.body.text()
    const t1 = nowMs()
    if (res.statusCode !== 200) fail(`HTTP ${res.statusCode}`)
    else if (!body.startsWith(params.expectBodyPrefix)) fail(`unexpected body ${body.slice(0, 40)}`)
    else {
      ok++
      const second = Math.floor((scheduled - start) / 1000)
      perSecondMaxMs[second] = Math.max(perSecondMaxMs[second] ?? 0, Math.round((t1 - scheduled) * 10) / 10)
      if (scheduled - start >= params.warmupMs) {
        latencyMs.push(t1 - t0)
        correctedLatencyMs.push(t1 - scheduled)
      }
      byBody[body] = (byBody[body] ?? 0) + 1
    }
  } catch (err) {
    fail((err as { code?: string }).code ?? (err as Error).message)
  } finally {
    inFlight--
  }
}

const start = nowMs()
const interval = 1000 / params.rate
let n = 0

function tick (): void {
  if (stopped) return
  const now = nowMs()
  if (now - start >= params.maxDurationMs) { void finish(); return }
  // Send everything that is due (several at once if this thread was late).
  while (start + n * interval <= now) {
    void send(start + n * interval)
    n++
  }
  setTimeout(tick, Math.max(0, start + n * interval - nowMs()))
}

async function finish (): Promise<void> {
  if (stopped) return
  stopped = true
  const end = nowMs()
  const deadline = end + 6_000
  while (inFlight > 0 && nowMs() < deadline) await new Promise((resolve) => { setTimeout(resolve, 10) })
  // Each request still unanswered 6 s after the end counts as an error of its own.
  if (inFlight > 0) {
    errors += inFlight
    errorKinds['unanswered 6 s after the run'] = inFlight
  }
  const result: LoadResult = { sent, ok, errors, errorKinds, durationMs: end - start, latencyMs, correctedLatencyMs, byBody, perSecondMaxMs: Array.from(perSecondMaxMs, (v) => v ?? 0) }
  parentPort!.postMessage(result)
  await pool.close().catch(() => {})
}

parentPort!.on('message', (m: unknown) => { if (m === 'stop') void finish() })
tick()
