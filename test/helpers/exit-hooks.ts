// Cleanup that must happen even when the test process dies early: at 'exit' (normal ends,
// uncaught exceptions, process.exit()) and on SIGINT, SIGTERM and SIGHUP, which do not emit
// 'exit'; after a signal the process dies of that same signal, as it would have.
const cleanups = new Set<() => void>()
let installed = false

function runAll (): void {
  for (const cleanup of cleanups) {
    try { cleanup() } catch { /* one failed cleanup must not stop the others */ }
  }
}

/** Registers a synchronous, idempotent cleanup (it may run twice: on a signal, then at exit). */
export function onProcessExit (cleanupSync: () => void): void {
  cleanups.add(cleanupSync)
  if (installed) return
  installed = true
  process.on('exit', runAll)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      runAll()
      // Die of the same signal, unless another handler is still to run (it re-raises).
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    })
  }
}
