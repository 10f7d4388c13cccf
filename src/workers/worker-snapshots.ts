// The workers' request counts as one MetricsSnapshot, for the admin service graph's rates:
// the primary serves no traffic, so its own snapshot is empty. Series keep their index for
// the gateway's life (the window diffs snapshots by index), and a worker that is replaced
// keeps its counts in a base, so the merged counts never go down.
import type { MetricsSnapshot, RequestSeriesSnapshot } from '../telemetry/metrics.js'

type SeriesLabels = Pick<RequestSeriesSnapshot, 'direction' | 'source' | 'destination' | 'route' | 'statusClass'>

interface Sums { count: number, gatewayErrors: number, durationSumSeconds: number, buckets: number[] }

const keyOf = (s: SeriesLabels): string => `${s.direction}\n${s.source}\n${s.destination}\n${s.route}\n${s.statusClass}`

export class WorkerSnapshots {
  /** Every series seen, in the order first seen. */
  private readonly labels: SeriesLabels[] = []
  private readonly index = new Map<string, number>()
  /** Counts of worker processes that are gone, by series index and by error code. */
  private readonly baseSeries: Sums[] = []
  private readonly baseErrors = new Map<string, number>()
  /** The last snapshot of each live worker, by slot, with the pid it came from. */
  private readonly latest = new Map<number, { pid: number, snapshot: MetricsSnapshot }>()

  /** A worker's snapshot; a new pid in a slot moves the old process's last counts into the base. */
  update (slot: number, pid: number, snapshot: MetricsSnapshot): void {
    const before = this.latest.get(slot)
    if (before !== undefined && before.pid !== pid) this.addTo(this.baseSeries, this.baseErrors, before.snapshot)
    this.latest.set(slot, { pid, snapshot })
  }

  merged (): MetricsSnapshot {
    const series: Sums[] = this.baseSeries.map((s) => ({ ...s, buckets: [...s.buckets] }))
    const errors = new Map(this.baseErrors)
    for (const { snapshot } of this.latest.values()) this.addTo(series, errors, snapshot)
    return {
      series: this.labels.map((l, i) => {
        const s = series[i] ?? { count: 0, gatewayErrors: 0, durationSumSeconds: 0, buckets: [] }
        return { ...l, ...s }
      }),
      errors: [...errors].map(([code, count]) => ({ code, count })).sort((a, b) => a.code.localeCompare(b.code))
    }
  }

  private addTo (series: Sums[], errors: Map<string, number>, snapshot: MetricsSnapshot): void {
    for (const s of snapshot.series) {
      const key = keyOf(s)
      let i = this.index.get(key)
      if (i === undefined) {
        i = this.labels.length
        this.index.set(key, i)
        this.labels.push({ direction: s.direction, source: s.source, destination: s.destination, route: s.route, statusClass: s.statusClass })
      }
      const sums = series[i] ??= { count: 0, gatewayErrors: 0, durationSumSeconds: 0, buckets: [] }
      sums.count += s.count
      sums.gatewayErrors += s.gatewayErrors
      sums.durationSumSeconds += s.durationSumSeconds
      s.buckets.forEach((n, j) => { sums.buckets[j] = (sums.buckets[j] ?? 0) + n })
    }
    for (const e of snapshot.errors) errors.set(e.code, (errors.get(e.code) ?? 0) + e.count)
  }
}
