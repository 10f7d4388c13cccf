// Process signals for a gateway the CLI runs: SIGHUP reloads, SIGTERM and SIGINT drain and
// exit, and the last-resort handlers count and log exceptions no guard caught.
import type { Logger } from 'pino'
import type { ExchangeFaults } from './exchange.js'

export interface SignalTarget {
  readonly log: Logger
  /** Where uncaught exceptions are counted (`GET /faults` → `uncaught`). */
  readonly faults: ExchangeFaults
  reload(reason: string): Promise<unknown>
  /** Graceful stop; the process exits 0 after it, 1 if it fails. */
  stop(): Promise<void>
  /** Writes buffered access lines before a failed stop's exit. */
  flushAccessLog(): void
}

/** Installs the handlers for the process's lifetime (the CLI does; tests do not). */
export function installSignalHandlers (target: SignalTarget): void {
  const log = target.log
  process.on('SIGHUP', () => { void target.reload('SIGHUP') })
  installLastResort(log, target.faults)
  const shutdown = (signal: string): void => {
    log.info({ signal }, 'shutting down: draining in-flight requests')
    target.stop().then(() => { log.flush(); process.exit(0) }, (err: unknown) => {
      log.error({ err }, 'shutdown failed')
      target.flushAccessLog()
      log.flush()
      process.exit(1)
    })
  }
  process.once('SIGTERM', () => { shutdown('SIGTERM') })
  process.once('SIGINT', () => { shutdown('SIGINT') })
}

/** The last resort of a gateway process (one alone, or a worker). */
export function installLastResort (log: Logger, faults: ExchangeFaults): void {
  // Every layer guards its own callbacks, so an exception that gets here
  // came from somewhere no guard reaches (a plugin's own timer, a library's callback): one
  // request's failure must not end every other request, so it is logged and counted, and
  // the gateway goes on. Log lines are limited to one a second of each kind (the count is exact).
  const lastResort = (kind: string): ((err: unknown) => void) => {
    let lastLogged = 0
    let unlogged = 0
    return (err) => {
      faults.uncaught++
      const now = Date.now()
      if (now - lastLogged < 1000) { unlogged++; return }
      lastLogged = now
      log.error({ err, code: 'FASTMESH_ERR_INTERNAL', kind, suppressed: unlogged, uncaught: faults.uncaught }, 'exception outside any request guard; the gateway goes on')
      unlogged = 0
    }
  }
  process.on('uncaughtException', lastResort('uncaughtException'))
  process.on('unhandledRejection', lastResort('unhandledRejection'))
}
