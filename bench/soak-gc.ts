// Preloaded into the soak benchmark's gateway (`node --expose-gc --import soak-gc.js`): on
// SIGUSR2 it collects garbage and writes the heap left over to $SOAK_HEAP_FILE, so the
// benchmark reads heap-after-GC of the real gateway process without an admin route for it.
import { writeFileSync } from 'node:fs'

const file = process.env.SOAK_HEAP_FILE
const gc = (globalThis as { gc?: () => void }).gc

if (file !== undefined && gc !== undefined) {
  let seq = 0
  process.on('SIGUSR2', () => {
    gc()
    // A second collection after a turn of the event loop takes what finalizers released.
    setImmediate(() => {
      gc()
      const m = process.memoryUsage()
      writeFileSync(file, JSON.stringify({ seq: ++seq, at: Date.now(), heapUsed: m.heapUsed, external: m.external }))
    })
  })
}
