// Durations in config are strings like `250ms` or `5s`; the code works in milliseconds.
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

export function durationMs (value: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$/.exec(value)
  if (m === null) throw new Error(`invalid duration "${value}"`)
  return Math.round(Number(m[1]) * UNIT_MS[m[2]!]!)
}
