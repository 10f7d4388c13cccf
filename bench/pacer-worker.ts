// The clock of the paced (open-loop) client, on its own thread: it sleeps until the next
// arrival of a Poisson process (exponential gaps at `rate` per second) and posts each batch
// of due send times (ms, monotonic clock) to the client thread, which sends them at once.
// Atomics.wait sleeps with sub-millisecond precision where setTimeout has 1 ms steps.
import { parentPort, workerData } from 'node:worker_threads'

interface PacerData { rate: number, durationMs: number }

const { rate, durationMs } = workerData as PacerData
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6
const sleeper = new Int32Array(new SharedArrayBuffer(4))
// Atomics.wait oversleeps by roughly this much on Linux.
const WAKE_EARLY_MS = 0.12
// Shorter waits are not slept: those sends go out up to this much early (no busy wait).
const SLEEP_MIN_MS = WAKE_EARLY_MS + 0.03
const gapMs = (): number => (-Math.log(1 - Math.random()) / rate) * 1000

function run (): void {
  const start = nowMs()
  const end = start + durationMs
  let next = start + gapMs()
  // Bounded: every pass either sleeps toward `next` or moves `next` forward by a positive gap.
  while (next < end) {
    const wait = next - nowMs()
    if (wait > SLEEP_MIN_MS) {
      Atomics.wait(sleeper, 0, 0, wait - WAKE_EARLY_MS)
      continue
    }
    const due: number[] = []
    const horizon = nowMs() + SLEEP_MIN_MS
    while (next <= horizon && next < end) { due.push(next); next += gapMs() }
    if (due.length > 0) parentPort!.postMessage(due)
  }
  parentPort!.postMessage('done')
}

// The client warms up first, then says 'go'.
parentPort!.once('message', run)
