// Loggers: pino writing asynchronously to stdout, so no request waits on a write.
// (pino's worker-thread transport costs less CPU per line, but when its buffer fills under
// sustained load the writer blocks the event loop; measured here it made the edge slower.)
import pino, { type Logger } from 'pino'
import { redactText } from '../config/redact.js'

export type { Logger }

export interface LoggerOptions {
  level: string
  /** Synchronous output (tests and CLI one-shots); the gateway itself uses async. */
  sync?: boolean
  destination?: pino.DestinationStream
}

export function createLogger (opts: LoggerOptions): Logger {
  const destination = opts.destination ?? pino.destination({ dest: 1, sync: opts.sync ?? false, minLength: opts.sync === true ? 0 : 12288 })
  if (opts.destination === undefined && opts.sync !== true) {
    // Buffered lines are written once 12 KiB gather: without a periodic flush a quiet gateway
    // would never show its startup lines, warnings or errors (until shutdown).
    const boom = destination as pino.DestinationStream & { flush: () => void }
    setInterval(() => { try { boom.flush() } catch { /* destination closed */ } }, 1000).unref()
  }
  return pino({
    level: opts.level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    serializers: { err: redactedError }
  }, destination)
}

/**
 * pino's error serializer, with the message and stack through the one redaction rule: an
 * error from a client library may quote a URL with its password.
 */
export function redactedError (err: unknown): unknown {
  const out = pino.stdSerializers.err(err as Error) as unknown
  if (out === null || typeof out !== 'object') return out
  const o = out as { message?: unknown, stack?: unknown }
  if (typeof o.message === 'string') o.message = redactText(o.message)
  if (typeof o.stack === 'string') o.stack = redactText(o.stack)
  return o
}

/** Writes out buffered log lines (before exit). */
export function flushLogger (log: Logger): void {
  try { log.flush() } catch { /* destination already closed */ }
}
