// The `wait` of Consul blocking queries: its allowed range, and the value sent to the agent.
import { durationMs, goDuration } from './duration.js'

/** Consul caps a blocking query's `wait` at 10 minutes; below 1 s a watch would barely block. */
export const WAIT_MIN_MS = 1000
export const WAIT_MAX_MS = 600_000

/** A blocking `wait` (any config duration: `1.5s`, `2m`) in milliseconds; throws when it is none. */
export function waitMs (wait: string): number {
  return durationMs(wait)
}

/** Why `wait` is not a usable blocking wait (naming the allowed range), or undefined when it is. */
export function waitProblem (wait: string): string | undefined {
  const ms = waitMs(wait)
  if (ms >= WAIT_MIN_MS && ms <= WAIT_MAX_MS) return undefined
  return `${wait} is out of range: a Consul blocking query waits from 1s to 10m`
}

/** `wait` as sent: whole milliseconds, a Go duration Consul reads exactly as we count it. */
export function waitParam (wait: string): string {
  return goDuration(wait)
}
