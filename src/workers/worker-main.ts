// A worker process's entry (forked by src/workers/pool.ts): waits for the primary's `init`,
// serves until told to stop or until the primary goes away, and exits.
import type { Logger } from 'pino'
import { createLogger } from '../telemetry/logger.js'
import { installLastResort } from '../gateway/signals.js'
import { durationMs } from '../config/duration.js'
import { WorkerGateway } from './worker-gateway.js'
import type { FromWorker, ToWorker } from './messages.js'

const send = (m: FromWorker): void => { if (process.connected) process.send!(m) }
let gateway: WorkerGateway | undefined
let log: Logger | undefined
/** The config's drain time, for a SIGTERM sent to this worker alone. */
let drainMs = 30_000

const exit = (code: number): void => {
  log?.flush()
  process.exit(code)
}

const stop = (drainMs: number): void => {
  if (gateway === undefined) exit(0)
  else gateway.stop(drainMs).then(() => { exit(0) }, (err: unknown) => { log?.error({ err }, 'worker stop failed'); exit(1) })
}

process.on('message', (m: ToWorker) => {
  if (m.t === 'init') {
    if (gateway !== undefined) return
    const config = m.config
    drainMs = durationMs(config.limits.drainTimeout)
    log = createLogger({ level: config.telemetry.logging.level }).child({ worker: m.worker })
    const g = gateway = new WorkerGateway(m, log, send)
    installLastResort(log, g.faults)
    g.start().catch((err: unknown) => {
      log!.error({ err }, 'worker could not start')
      send({ t: 'start-failed', error: (err as Error).message })
      exit(1)
    })
    return
  }
  if (m.t === 'stop') { stop(m.drainMs); return }
  gateway?.receive(m).catch((err: unknown) => { log?.error({ err, message: m.t }, 'worker failed to handle a message from the primary') })
})

// The primary coordinates shutdown: a terminal's Ctrl-C reaches every process of the group,
// and only the primary's stop deregisters first and drains in order.
process.on('SIGINT', () => {})
// SIGHUP means "reload" to the primary (a `pkill -HUP` may reach workers too); a worker has nothing to reload on its own.
process.on('SIGHUP', () => {})
// SIGTERM to one worker drains that worker; the primary starts a replacement.
process.once('SIGTERM', () => { stop(drainMs) })
// The primary is gone: nobody will relay discovery or certificates any more.
process.once('disconnect', () => { stop(5_000) })

send({ t: 'hello' })
