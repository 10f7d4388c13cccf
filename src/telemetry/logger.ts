// Loggers: pino writing asynchronously to stdout, so no request waits on a write.
// (pino's worker-thread transport costs less CPU per line, but when its buffer fills under
// sustained load the writer blocks the event loop; measured here it made the edge slower.)
import pino, { type Logger } from 'pino'
import { REDACTED, redactQuery, redactText } from '../config/redact.js'

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
    serializers: { err: redactedError, req: requestSummary },
    redact: { paths: CREDENTIAL_HEADER_PATHS, censor: REDACTED }
  }, destination)
}

/** Request headers that carry credentials, and the response header that sets them. */
const CREDENTIAL_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie']

/**
 * Where a logged object may hold headers: `{ headers }`, `{ req: { headers } }` (any key
 * one level down), and a Fastify request's or an exchange's raw request (`{ request: { raw:
 * { headers } } }`, `{ ex: { req: { headers } } }`). A header object logged elsewhere is a bug
 * this list does not catch; log a header's name, never the object.
 */
export const CREDENTIAL_HEADER_PATHS = ['headers', '*.headers', '*.raw.headers', '*.req.headers']
  .flatMap((at) => CREDENTIAL_HEADERS.map((name) => `${at}["${name}"]`))

/**
 * `{ req }` in a log line: Fastify's own shape (method, url, host, client address) with the
 * query's credentials redacted and no headers. It replaces Fastify's serializer, whose `url`
 * is the raw request target.
 */
export function requestSummary (req: unknown): unknown {
  if (req === null || typeof req !== 'object') return req
  const r = req as { method?: unknown, url?: unknown, host?: unknown, hostname?: unknown, ip?: unknown, socket?: { remoteAddress?: unknown, remotePort?: unknown } }
  return {
    method: r.method,
    url: typeof r.url === 'string' ? redactQuery(r.url) : undefined,
    host: r.host ?? r.hostname,
    remoteAddress: r.ip ?? r.socket?.remoteAddress,
    remotePort: r.socket?.remotePort
  }
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
