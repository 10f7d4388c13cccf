// The one polling helper for tests: wait, bounded, for something that happens asynchronously
// (a reload applied, a Consul check passing, a file picked up). test/helpers/gateway.ts
// re-exports it, so gateway tests import it from there.
import assert from 'node:assert/strict'

/**
 * Polls `check` every `intervalMs` until it returns a value other than undefined/false and
 * resolves with that value; fails after `timeoutMs`, naming `what` and the last error thrown.
 */
export async function eventually<T> (check: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 10_000, intervalMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await check()
      if (v !== undefined && v !== false) return v
      last = undefined
    } catch (err) {
      last = err
    }
    if (Date.now() >= deadline) {
      assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}${last !== undefined ? `; last error: ${(last as Error).message}` : ''}`)
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
