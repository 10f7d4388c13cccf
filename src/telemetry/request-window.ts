// Recent traffic from the cumulative request series: snapshots of GatewayMetrics taken at an
// interval, and the difference between the series now and the oldest snapshot inside the
// window. One read therefore shows the rate of traffic that happened just before it (no
// second poll needed), and nothing on the request path changes: snapshots are copies taken
// off it, a few a minute.
import { DURATION_BUCKETS, type MetricsSnapshot, type RequestSeriesSnapshot } from './metrics.js'

/** One series over the window: counts are what happened inside it; `total` is since start. */
export interface WindowedSeries extends RequestSeriesSnapshot {
  readonly total: number
}

export interface WindowView {
  /** The span the counts cover, in seconds (the window, or less while the gateway is younger). */
  readonly seconds: number
  readonly series: readonly WindowedSeries[]
  /** Gateway-made errors by code: `recent` inside the window, `total` since start. */
  readonly errors: ReadonlyArray<{ readonly code: string, readonly recent: number, readonly total: number }>
}

export interface RequestWindowOptions {
  /** Default 60 s. */
  readonly windowMs?: number
  /** How often a snapshot is kept; default 5 s. */
  readonly intervalMs?: number
  /** The clock (ms); a parameter for tests. */
  readonly now?: () => number
}

interface Sample {
  readonly at: number
  readonly snapshot: MetricsSnapshot
}

export class RequestWindow {
  readonly windowMs: number
  readonly intervalMs: number
  private readonly now: () => number
  private readonly samples: Sample[] = []
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly source: () => MetricsSnapshot, opts: RequestWindowOptions = {}) {
    this.windowMs = opts.windowMs ?? 60_000
    this.intervalMs = opts.intervalMs ?? 5_000
    this.now = opts.now ?? Date.now
    // The first baseline: what was counted when the window began.
    this.sample()
  }

  /** Keeps a snapshot; drops those no later view can use. */
  sample (): void {
    const at = this.now()
    this.samples.push({ at, snapshot: this.source() })
    // Kept: every sample inside the window, and the newest one before it (the baseline
    // when the timer could not run for a whole window).
    const from = at - this.windowMs
    while (this.samples.length > 1 && this.samples[1]!.at <= from) this.samples.shift()
  }

  /** Snapshots every `intervalMs` until `stop()`; the timer does not keep the process alive. */
  start (): void {
    if (this.timer !== undefined) return
    this.timer = setInterval(() => { this.sample() }, this.intervalMs)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** The series now, minus the oldest snapshot inside the window. */
  view (): WindowView {
    const at = this.now()
    const current = this.source()
    const from = at - this.windowMs
    const base = this.samples.find((s) => s.at >= from) ?? this.samples[this.samples.length - 1]!
    const before = base.snapshot
    const series = current.series.map((s, i): WindowedSeries => {
      const b = before.series[i]
      if (b === undefined) return { ...s, total: s.count }
      return {
        ...s,
        count: s.count - b.count,
        gatewayErrors: s.gatewayErrors - b.gatewayErrors,
        durationSumSeconds: s.durationSumSeconds - b.durationSumSeconds,
        buckets: s.buckets.map((n, j) => n - (b.buckets[j] ?? 0)),
        total: s.count
      }
    })
    const earlier = new Map(before.errors.map((e) => [e.code, e.count]))
    const errors = current.errors.map((e) => ({ code: e.code, recent: e.count - (earlier.get(e.code) ?? 0), total: e.count }))
    return { seconds: Math.max(0, at - base.at) / 1000, series, errors }
  }
}

/**
 * The `q` quantile (0-1) of `count` requests from their non-cumulative DURATION_BUCKETS
 * counts, interpolated linearly inside the bucket it falls in (as Prometheus's
 * histogram_quantile does); requests over the last bound count as taking that bound. In
 * seconds; null when there is no request.
 */
export function quantileSeconds (buckets: readonly number[], count: number, q: number): number | null {
  if (count <= 0) return null
  const rank = q * count
  let below = 0
  for (let i = 0; i < DURATION_BUCKETS.length; i++) {
    const n = buckets[i] ?? 0
    if (n > 0 && below + n >= rank) {
      const lower = i === 0 ? 0 : DURATION_BUCKETS[i - 1]!
      const upper = DURATION_BUCKETS[i]!
      return lower + (upper - lower) * Math.max(0, rank - below) / n
    }
    below += n
  }
  return DURATION_BUCKETS[DURATION_BUCKETS.length - 1]!
}
