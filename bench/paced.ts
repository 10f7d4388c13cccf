// Paced (open-loop) latency client, in its own process: requests leave at a fixed mean
// rate with exponential (random) gaps whatever the answers do, each timed on a keep-alive
// undici Pool. Prints one JSON line (see PacedResult in load.ts).
//   node dist/bench/paced.js --url URL --rate 2000 --duration 8 --warmup 2 --connections 64 [--header 'name: value' ...]
//     [--vary-header name:count]   (each request carries `name: k<i>`, i drawn from count values: keys for hash policies)
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { once } from 'node:events'
import { Pool, type Dispatcher } from 'undici'

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    rate: { type: 'string', default: '2000' },
    duration: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '64' },
    header: { type: 'string', multiple: true },
    'vary-header': { type: 'string' }
  }
})
const url = new URL(values.url!)
const rate = Number(values.rate)
const durationMs = Number(values.duration) * 1000
const warmupMs = Number(values.warmup) * 1000
const path = url.pathname + url.search
const headers = Object.fromEntries((values.header ?? []).map((h) => [h.slice(0, h.indexOf(':')).trim(), h.slice(h.indexOf(':') + 1).trim()]))
/** Every request's headers, drawn at random from these (one set when no --vary-header). */
const headerSets: Array<Record<string, string>> = [headers]
if (values['vary-header'] !== undefined) {
  const [name, count] = values['vary-header'].split(':')
  const n = Number(count)
  if (name === undefined || name.trim() === '' || !Number.isInteger(n) || n < 1) throw new Error(`--vary-header wants name:count (got "${values['vary-header']}")`)
  headerSets.length = 0
  for (let i = 0; i < n; i++) headerSets.push({ ...headers, [name.trim()]: `k${i}` })
}
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6
const PREWARM_MS = 1000

const pool = new Pool(url.origin, { connections: Number(values.connections), pipelining: 1, keepAliveTimeout: 30_000 })

// Bounded sample storage: the pacer cannot produce many more than rate × duration sends.
const capacity = Math.ceil((rate * (durationMs + warmupMs)) / 1000 * 1.5) + 1000
const fromSend = new Float64Array(capacity)
const fromSchedule = new Float64Array(capacity)
let samples = 0
let sent = 0
let completed = 0
let errors = 0
let non2xx = 0
let inFlight = 0
let measuredFrom = Infinity

/** Sends one request; timed (and counted in the percentiles) when scheduled after the warm-up. */
function send (scheduled: number, done?: () => void): void {
  const t0 = nowMs()
  sent++
  inFlight++
  let status = 0
  const handler: Dispatcher.DispatchHandler = {
    onConnect () {},
    onHeaders (statusCode) { status = statusCode; return true },
    onData () { return true },
    onComplete () {
      const t1 = nowMs()
      inFlight--
      completed++
      if (status < 200 || status >= 300) non2xx++
      if (scheduled >= measuredFrom && samples < capacity) {
        fromSend[samples] = t1 - t0
        fromSchedule[samples] = t1 - scheduled
        samples++
      }
      done?.()
    },
    onError () { inFlight--; errors++; done?.() }
  }
  const sendHeaders = headerSets.length === 1 ? headerSets[0]! : headerSets[Math.floor(Math.random() * headerSets.length)]!
  pool.dispatch({ method: 'GET', path, headers: sendHeaders, headersTimeout: 10_000, bodyTimeout: 10_000 }, handler)
}

function percentiles (data: Float64Array, n: number): Record<string, number> {
  const s = data.slice(0, n).sort()
  const at = (q: number): number => n === 0 ? NaN : s[Math.min(n - 1, Math.ceil(q * n) - 1)]!
  let sum = 0
  for (let i = 0; i < n; i++) sum += s[i]!
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: n === 0 ? NaN : s[n - 1]!, mean: n === 0 ? NaN : sum / n }
}

// The pacer thread starts now (thread start-up is not free) and waits for 'go'.
const pacer = new Worker(new URL('./pacer-worker.js', import.meta.url), { workerData: { rate, durationMs: durationMs + warmupMs } })
const pacerReady = once(pacer, 'online')

// Warm this client (a fresh process: its JIT is cold) on the very code path it measures, and
// open the pool's connections, with a short closed-loop burst: the paced run then measures
// the target, not the client's start-up. A paced warm-up (not counted) follows.
const prewarmEnd = nowMs() + PREWARM_MS
await Promise.all(Array.from({ length: 16 }, async () => {
  while (nowMs() < prewarmEnd) await new Promise<void>((resolve) => { send(-Infinity, resolve) })
}))
await pacerReady
sent = 0
completed = 0
errors = 0
non2xx = 0

// Tells the harness the paced phase starts (it reads the target's CPU counters then).
process.stdout.write('{"event":"paced-start"}\n')
const started = nowMs()
measuredFrom = started + warmupMs
await new Promise<void>((resolve, reject) => {
  pacer.on('message', (m: number[] | 'done') => {
    if (m === 'done') { resolve(); return }
    for (const scheduled of m) send(scheduled)
  })
  pacer.once('error', reject)
  pacer.postMessage('go')
})
const sendingEnded = nowMs()
// Let the last answers arrive (bounded).
for (let i = 0; i < 200 && inFlight > 0; i++) await new Promise((resolve) => { setTimeout(resolve, 50) })

process.stdout.write(JSON.stringify({
  rate,
  sent,
  completed,
  errors,
  non2xx,
  lost: inFlight,
  samples,
  achievedRate: sent / ((sendingEnded - started) / 1000),
  latencyMs: percentiles(fromSend, samples),
  scheduledLatencyMs: percentiles(fromSchedule, samples)
}) + '\n')
await pacer.terminate()
await pool.destroy()
