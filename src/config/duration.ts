// Durations in config and on the command line are strings like `250ms` or `5s`; the code works
// in milliseconds. This is the one duration syntax: the config schema's pattern, the CLI's check
// and every conversion come from here, so what validates is exactly what converts.
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** A decimal number and one unit. The schema's `Duration` pattern is this string. */
export const DURATION_PATTERN = '^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$'
const DURATION_RE = new RegExp(DURATION_PATTERN)

export function isDuration (value: string): boolean {
  return DURATION_RE.test(value)
}

/** The duration in whole milliseconds (rounded); throws when `value` is not a duration. */
export function durationMs (value: string): number {
  const m = DURATION_RE.exec(value)
  if (m === null) throw new Error(`invalid duration "${value}"`)
  const unit = m[2]!
  return Math.round(Number(value.slice(0, -unit.length)) * UNIT_MS[unit]!)
}

/** The longest delay a Node timer takes (2^31 - 1 ms, about 24.8 days); a longer one fires at once. */
export const MAX_TIMER_MS = 2_147_483_647

/**
 * Why `value` cannot be waited on with one timer (plugins' checkOptions use it for the
 * durations they pass to setTimeout/setInterval), or undefined when it can.
 */
export function timerDurationProblem (value: string): string | undefined {
  return isDuration(value) && durationMs(value) > MAX_TIMER_MS ? `(${value}) is longer than the longest timer (596h, about 24.8 days)` : undefined
}

/** A duration as whole milliseconds in Go's syntax, which Consul reads exactly as we count it. */
export function goDuration (value: string): string {
  return `${durationMs(value)}ms`
}
