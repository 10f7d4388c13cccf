// The random source of balancing, splitting, mirroring and retry jitter: Math.random in
// production, a seeded generator in tests, so statistical behaviour is tested exactly.

/** A uniform number in [0, 1). */
export type RandomSource = () => number

export const defaultRandom: RandomSource = Math.random

/** A deterministic source (mulberry32) for tests and reproducible benchmarks. */
export function seededRandom (seed: number): RandomSource {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
