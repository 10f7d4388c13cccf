// Small statistics helpers for the discovery benchmark.

export interface Summary {
  readonly count: number
  readonly p50: number | null
  readonly p90: number | null
  readonly p99: number | null
  readonly max: number | null
  readonly mean: number | null
}

/** Nearest-rank percentile of an ascending array; null when empty. */
export function percentile (sorted: ArrayLike<number>, p: number): number | null {
  if (sorted.length === 0) return null
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)))
  return sorted[rank - 1]!
}

export function summarize (values: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(values).sort()
  let sum = 0
  for (const v of sorted) sum += v
  return {
    count: sorted.length,
    p50: round(percentile(sorted, 50)),
    p90: round(percentile(sorted, 90)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted.length === 0 ? null : sorted[sorted.length - 1]!),
    mean: round(sorted.length === 0 ? null : sum / sorted.length)
  }
}

export function round (v: number | null | undefined, digits = 2): number | null {
  if (v === null || v === undefined || !Number.isFinite(v)) return null
  const f = 10 ** digits
  return Math.round(v * f) / f
}

/** A seeded PRNG, so a run's choice of services can be repeated (the one the balancers use in tests). */
export { seededRandom } from '../../src/balancer/random.js'

export const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6

export const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => { setTimeout(resolve, ms) }) }
