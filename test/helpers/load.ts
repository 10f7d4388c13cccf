// Bounded load through a test gateway: a fixed number of requests, a fixed number at a time,
// each outcome kept at the index it was sent with, and actions (a kill) run at a given index.
// Counts, never durations: what a test asserts holds however loaded the machine is.
import type { TestGateway } from './gateway.js'

export interface Outcome {
  /** 0: the client's connection broke (as bad as an error status). */
  readonly status: number
  /** Who answered a 200: `x-served-by`, or `served` in the body (test/fixtures/upstream-process.ts). */
  readonly served: string
  /** The body of an answer other than 200, or the client's error. */
  readonly text: string
}

/** One GET through the gateway. */
export async function requestOnce (g: TestGateway, path = '/item'): Promise<Outcome> {
  try {
    const res = await g.request(path)
    let served = String(res.headers['x-served-by'] ?? '')
    if (res.status === 200 && served === '' && String(res.headers['content-type']).startsWith('application/json')) served = String(res.json<{ served?: unknown }>().served ?? '')
    return { status: res.status, served, text: res.status === 200 ? '' : res.text }
  } catch (err) {
    return { status: 0, served: '', text: (err as Error).message }
  }
}

/**
 * `total` GETs, `concurrency` at a time, each outcome at the index it was sent with. `at`
 * runs an action right before the request of that index is sent (those sent before are in
 * flight, some of them on whatever the action kills).
 */
export async function load (g: TestGateway, total: number, concurrency: number, at: ReadonlyMap<number, () => unknown> = new Map()): Promise<Outcome[]> {
  const out = new Array<Outcome>(total)
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const i = next++
      await at.get(i)?.()
      out[i] = await requestOnce(g)
    }
  }))
  return out
}

/** The outcomes other than a 200. */
export function failures (outcomes: readonly Outcome[]): Outcome[] {
  return outcomes.filter((o) => o.status !== 200)
}

/** The first few failures, for an assertion message. */
export function describeFailures (outcomes: readonly Outcome[]): string {
  return failures(outcomes).slice(0, 3).map((o) => `${o.status} ${o.text}`).join(' | ')
}
