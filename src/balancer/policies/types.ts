// Balancing policies of the service layer: the contract between ServiceEndpoints and one
// policy (round robin, random, least request, peak EWMA, ring hash, maglev), and the
// per-endpoint statistics the load-aware policies read.
import type { EndpointTarget } from '../../upstream/endpoint-pool.js'
import type { RandomSource } from '../random.js'
import type { PickRequest } from '../types.js'
import { MAGLEV_TABLE_SIZE, RING_VIRTUAL_NODES, type PolicyName } from '../../config/balancing-defaults.js'

export { POLICIES, RING_VIRTUAL_NODES, MAGLEV_TABLE_SIZE, EWMA_DECAY, EWMA_DEFAULT_RTT, type PolicyName } from '../../config/balancing-defaults.js'
export const HASH_POLICIES: readonly PolicyName[] = ['ring_hash', 'maglev']

/** What a hash policy hashes: exactly one of these. */
export type HashOn =
  | { readonly header: string }
  | { readonly cookie: string }
  | { readonly queryParameter: string }
  | { readonly clientAddress: true }

/** A service's balancing settings, resolved from config (see balancingFor in service-table.ts). */
export interface BalancingSettings {
  readonly policy: PolicyName
  readonly hashOn?: HashOn
  /** ring_hash: points on the ring per endpoint of weight 1. */
  readonly virtualNodes: number
  /** maglev: lookup table size (a prime). */
  readonly tableSize: number
  /** ewma: how fast an endpoint's latency estimate forgets (time constant), ms. */
  readonly decayMs: number
  /** ewma: the estimate of an endpoint with no observation yet, ms. */
  readonly defaultRttMs: number
  /** Prefer endpoints in the gateway's own zone; undefined when off (or the zone unknown). */
  readonly locality?: {
    readonly zone: string
    readonly metaKey: string
    readonly minLocalShare: number
  }
}

export const DEFAULT_BALANCING: BalancingSettings = {
  policy: 'round_robin',
  virtualNodes: RING_VIRTUAL_NODES,
  tableSize: MAGLEV_TABLE_SIZE,
  decayMs: 10_000,
  defaultRttMs: 30
}

/**
 * Mutable per-endpoint statistics. One object is shared by every copy of a target (a newer
 * copy of the endpoint from discovery keeps it), so a report on a target picked before an
 * update still lands on the counts the balancer reads.
 */
export class TargetStats {
  /** Attempts picked and not reported yet. */
  inFlight = 0
  /** Smooth weighted round robin state. */
  current = 0
  /** Peak-EWMA latency estimate in ms; negative until the first observation. */
  rtt = -1
  /** When `rtt` was last set (clock ms). */
  stamp = 0
}

/** An endpoint as a policy sees it. */
export interface BalancedTarget extends EndpointTarget {
  readonly stats: TargetStats
}

/** What a policy is built with: injectable randomness and clock, so tests are exact. */
export interface PolicyContext {
  readonly random: RandomSource
  /** Monotonic milliseconds. */
  readonly now: () => number
}

/**
 * Work units (table probes, ring points) of one step of a `rebuild`: about 0.1-0.3 ms, so the
 * service layer can bound the event-loop time of one turn to a slice of whole steps.
 */
export const REBUILD_STEP_WORK = 16_384

/**
 * One balancing policy over a target list that `update` replaces (rebuilding rings or
 * tables there, never in `pick`). `pick` honours `request.tried`: it returns a target not
 * tried yet when one exists.
 */
export interface Balancer<T extends BalancedTarget = BalancedTarget> {
  update(targets: readonly T[]): void
  /**
   * What `update` does, in steps (policies whose rebuild takes milliseconds at 1,000
   * endpoints): each `next()` does about REBUILD_STEP_WORK units, and the last applies the
   * new table at once; until then `pick` serves the previous one. A rebuild abandoned half
   * way (a newer one replaces it) leaves the policy as it was.
   */
  rebuild?(targets: readonly T[]): Generator<void, void, void>
  pick(request: PickRequest | undefined): T | undefined
  /** An attempt on `target` took `latencyMs` (`failed`: the endpoint failed, not the app). */
  observe?(target: T, latencyMs: number, failed: boolean): void
}

export function wasTried (request: PickRequest | undefined, t: BalancedTarget): boolean {
  const tried = request?.tried
  return tried !== undefined && tried.size > 0 && tried.has(t.endpoint.id)
}

/**
 * Slow path for retries, when the policy's choice was tried already: the untried target
 * with the lowest `score` (the first untried from a random start when no score), or
 * `fallback` when every target was tried. O(n), on retries only.
 */
export function untried<T extends BalancedTarget> (targets: readonly T[], request: PickRequest | undefined, random: () => number, fallback: T, score?: (t: T) => number): T {
  const n = targets.length
  const start = Math.floor(random() * n)
  let best: T | undefined
  let bestScore = Infinity
  for (let k = 0; k < n; k++) {
    const t = targets[(start + k) % n]!
    if (wasTried(request, t)) continue
    if (score === undefined) return t
    const s = score(t)
    if (best === undefined || s < bestScore) {
      best = t
      bestScore = s
    }
  }
  return best ?? fallback
}

/** A random target, or on a retry an untried one: hashing policies when a request has no key. */
export function randomUntried<T extends BalancedTarget> (targets: readonly T[], request: PickRequest | undefined, random: () => number): T {
  const t = targets[Math.floor(random() * targets.length)]!
  return wasTried(request, t) ? untried(targets, request, random, t) : t
}

/**
 * The owner at `at` in a hash table or ring, or on a retry the next owner (wrapping) not
 * tried yet — as removing the tried endpoints would give; the first owner if all were tried.
 */
export function ownerAt<T extends BalancedTarget> (targets: readonly T[], owners: ArrayLike<number>, at: number, request: PickRequest | undefined): T {
  const first = targets[owners[at]!]!
  if (!wasTried(request, first)) return first
  const n = owners.length
  for (let s = 1; s < n; s++) {
    const t = targets[owners[(at + s) % n]!]!
    if (!wasTried(request, t)) return t
  }
  return first
}
