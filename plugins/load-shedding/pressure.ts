// The measurements of `load-shedding`: @fastify/under-pressure registered on a small Fastify
// instance that never listens, asked `isUnderPressure()` per request (a few comparisons of
// values its timer samples). One sampler per distinct set of thresholds, shared by every
// version and route that uses it and closed with its last user: a reload with the same
// settings keeps measuring without a gap, and reloads never pile up samplers.
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import underPressure from '@fastify/under-pressure'

export interface PressureThresholds {
  readonly maxEventLoopDelayMs?: number
  readonly maxEventLoopUtilization?: number
  readonly maxHeapUsedBytes?: number
  readonly maxRssBytes?: number
  readonly sampleIntervalMs: number
}

type Measurements = ReturnType<FastifyInstance['memoryUsage']>

/** One under-pressure sampler, and whether the gateway is shedding by its thresholds. */
class Sampler {
  /** Bumped on every transition into overload, so each user knows its cached refusal is stale. */
  episode = 0
  shedding = false
  /** What crossed its threshold, for the refusal's message and the log. */
  reason = ''
  private since = 0
  private refused = 0
  readonly isUnderPressure: () => boolean

  constructor (readonly app: FastifyInstance, readonly thresholds: PressureThresholds) {
    this.isUnderPressure = app.isUnderPressure.bind(app)
  }

  /** Whether to refuse this request; a change of state is logged once, by whoever sees it first. */
  check (log: FastifyBaseLogger): boolean {
    const over = this.isUnderPressure()
    if (over !== this.shedding) this.transition(over, log)
    if (over) this.refused++
    return over
  }

  private transition (over: boolean, log: FastifyBaseLogger): void {
    this.shedding = over
    const measured = this.app.memoryUsage()
    if (over) {
      this.episode++
      this.reason = reasonOf(measured, this.thresholds)
      this.since = Date.now()
      this.refused = 0
      log.warn({ reason: this.reason, measured, code: 'FASTMESH_ERR_OVERLOADED' }, 'load shedding: the gateway is overloaded, refusing requests with 503 until it recovers')
    } else {
      log.info({ refused: this.refused, overloadedMs: Date.now() - this.since, measured }, 'load shedding: the gateway recovered, requests go through again')
    }
  }
}

/** Which threshold is crossed, in under-pressure's own order of checks. */
function reasonOf (m: Measurements, t: PressureThresholds): string {
  if (t.maxEventLoopDelayMs !== undefined && m.eventLoopDelay > t.maxEventLoopDelayMs) return `event-loop delay ${Math.round(m.eventLoopDelay)} ms > ${t.maxEventLoopDelayMs} ms`
  if (t.maxHeapUsedBytes !== undefined && m.heapUsed > t.maxHeapUsedBytes) return `heap used ${m.heapUsed} bytes > ${t.maxHeapUsedBytes}`
  if (t.maxRssBytes !== undefined && m.rssBytes > t.maxRssBytes) return `RSS ${m.rssBytes} bytes > ${t.maxRssBytes}`
  if (t.maxEventLoopUtilization !== undefined && m.eventLoopUtilized > t.maxEventLoopUtilization) return `event-loop utilisation ${m.eventLoopUtilized.toFixed(2)} > ${t.maxEventLoopUtilization}`
  return 'a threshold'
}

const samplers = new Map<string, { users: number, ready: Promise<Sampler> }>()

async function startSampler (t: PressureThresholds): Promise<Sampler> {
  const app = Fastify({ logger: false })
  await app.register(underPressure, {
    sampleInterval: t.sampleIntervalMs,
    // 0 switches a check off in under-pressure.
    maxEventLoopDelay: t.maxEventLoopDelayMs ?? 0,
    maxEventLoopUtilization: t.maxEventLoopUtilization ?? 0,
    maxHeapUsedBytes: t.maxHeapUsedBytes ?? 0,
    maxRssBytes: t.maxRssBytes ?? 0,
    // Utilisation of the last interval, not since the sampler started.
    eventLoopUtilizationMode: 'interval'
  })
  await app.ready()
  return new Sampler(app, t)
}

/** A user's hold on a shared sampler. */
export interface PressureLease {
  /** Whether the gateway is past a threshold now (logs a change of state once). */
  overloaded(): boolean
  /** Changes whenever the gateway goes into overload anew. */
  readonly episode: number
  /** What crossed its threshold in the current episode. */
  readonly reason: string
  release(): Promise<void>
}

/** A hold on the sampler of `thresholds`, started on first use; the last release stops its timer. */
export async function acquirePressure (thresholds: PressureThresholds, log: FastifyBaseLogger): Promise<PressureLease> {
  const key = JSON.stringify(thresholds)
  let entry = samplers.get(key)
  if (entry === undefined) {
    const ready = startSampler(thresholds)
    entry = { users: 0, ready }
    samplers.set(key, entry)
  }
  const held = entry
  held.users++
  let sampler: Sampler
  try {
    sampler = await held.ready
  } catch (err) {
    if (--held.users === 0 && samplers.get(key) === held) samplers.delete(key)
    throw err
  }
  let released = false
  return {
    overloaded: () => sampler.check(log),
    get episode () { return sampler.episode },
    get reason () { return sampler.reason },
    async release () {
      if (released) return
      released = true
      if (--held.users > 0) return
      if (samplers.get(key) === held) samplers.delete(key)
      await sampler.app.close()
    }
  }
}

/** How many samplers run now (one per distinct set of thresholds in use): for tests and diagnostics. */
export function runningSamplers (): number {
  return samplers.size
}
