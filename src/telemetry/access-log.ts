// The access log: one structured line per request, written when the response ends.
// It is the one log line every request pays for, so it is written without pino's generic
// serializer: a fixed template of the same JSON shape pino writes (level, time, pid, log),
// appended to the logger's own asynchronous destination. Query-string credentials are
// redacted in it, and successful requests may be sampled; errors are always written.
import pino, { type Logger } from 'pino'
import { hash32 } from '../balancer/policies/hash.js'
import { redactQuery } from '../config/redact.js'

export interface RequestRecord {
  readonly requestId: string
  /** The trace this request belongs to (32 hex digits), when tracing is on. */
  readonly traceId?: string | undefined
  /** The gateway's span of this request (16 hex digits), when tracing is on. */
  readonly spanId?: string | undefined
  readonly method: string
  readonly path: string
  readonly route: string | undefined
  readonly destination: string | undefined
  readonly endpoint: string | undefined
  readonly status: number
  readonly durationMs: number
  /** Set when the gateway itself answered (FASTMESH_ERR_*) or the exchange broke. */
  readonly error?: string
  /** Tries made; with more than one, `endpoints` lists each try's endpoint. */
  readonly attempts?: number
  readonly endpoints?: readonly string[] | undefined
  /** Inbound mesh calls: the caller's verified SPIFFE ID. */
  readonly caller?: string | undefined
  /** Why the gateway answered with an upstream error: the last try's failure (`refused: ECONNREFUSED`, `reset: ECONNRESET`, `timeout`, `connect-failure: CERT_HAS_EXPIRED`). */
  readonly cause?: string | undefined
  /** A fault a plugin injected into this exchange (`delay`, `abort`, `response`). */
  readonly fault?: string | undefined
}

/** `telemetry.logging.accessLog` as written: on/off, or on with a share of successes sampled. */
export type AccessLogOption = boolean | { readonly enabled?: boolean, readonly sampleRatio?: number }

export interface AccessLogSettings {
  readonly enabled: boolean
  /** Share (0..1) of successful requests written; failures are always written. */
  readonly sampleRatio: number
}

/** The settings an `accessLog` option means: `true` and `{}` log every request. */
export function accessLogSettings (option: AccessLogOption): AccessLogSettings {
  if (typeof option === 'boolean') return { enabled: option, sampleRatio: 1 }
  return { enabled: option.enabled ?? true, sampleRatio: option.sampleRatio ?? 1 }
}

/**
 * Whether a request is always written: answered with 4xx/5xx, not answered (status 0), or
 * marked by the gateway (an error code, an upstream failure's cause, an injected fault).
 */
export function isFailure (r: RequestRecord): boolean {
  return r.status >= 400 || r.status === 0 || r.error !== undefined || r.cause !== undefined || r.fault !== undefined
}

export interface RequestRecorder {
  record(r: RequestRecord): void
  /** Writes out lines still gathered (before exit, or when a reload replaces the recorder). */
  flush(): void
}

/** Lines are handed to the log destination in batches of about this many characters. */
const BATCH_CHARS = 8192

interface Writable { write(line: string): unknown, flushSync?: () => void }

/** Flushes of recorders holding lines not yet written: run if the process exits first. */
const unflushed = new Set<(exiting: boolean) => void>()
let exitHookInstalled = false

function flushAllOnExit (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // A crash or process.exit() skips the pending setImmediate; 'exit' still runs, synchronously.
  process.once('exit', () => {
    for (const flush of [...unflushed]) {
      // A destination already ended throws: the other recorders' lines still go, and the exit code stays.
      try { flush(true) } catch { /* nothing more can be written */ }
    }
  })
}

/** ISO time, recomputed at most once per millisecond. */
let lastMs = 0
let lastIso = ''
function isoNow (): string {
  const now = Date.now()
  if (now !== lastMs) {
    lastMs = now
    lastIso = new Date(now).toISOString()
  }
  return lastIso
}

/** A JSON string literal; the common case (nothing to escape) skips JSON.stringify. */
function str (s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 32 || c === 34 || c === 92 || c > 126) return JSON.stringify(s)
  }
  return '"' + s + '"'
}

export function formatAccessLine (r: RequestRecord, pid: number): string {
  return '{"level":"info","time":"' + isoNow() + '","pid":' + pid + ',"log":"access","requestId":' + str(r.requestId) +
    (r.traceId !== undefined ? ',"traceId":' + str(r.traceId) : '') +
    (r.spanId !== undefined ? ',"spanId":' + str(r.spanId) : '') +
    ',"method":' + str(r.method) + ',"path":' + str(redactQuery(r.path)) +
    (r.route !== undefined ? ',"route":' + str(r.route) : '') +
    (r.destination !== undefined ? ',"destination":' + str(r.destination) : '') +
    (r.endpoint !== undefined ? ',"endpoint":' + str(r.endpoint) : '') +
    (r.attempts !== undefined && r.attempts > 1 ? ',"attempts":' + r.attempts + ',"endpoints":' + JSON.stringify(r.endpoints ?? []) : '') +
    (r.caller !== undefined ? ',"caller":' + str(r.caller) : '') +
    ',"status":' + r.status + ',"durationMs":' + r.durationMs +
    (r.error !== undefined ? ',"error":' + str(r.error) : '') +
    (r.cause !== undefined ? ',"cause":' + str(r.cause) : '') +
    (r.fault !== undefined ? ',"fault":' + str(r.fault) : '') + '}\n'
}

/** The record's fields as a plain object (path redacted), for a logger without a stream to append to. */
function accessFields (r: RequestRecord): Record<string, unknown> {
  return {
    requestId: r.requestId,
    traceId: r.traceId,
    spanId: r.spanId,
    method: r.method,
    path: redactQuery(r.path),
    route: r.route,
    destination: r.destination,
    endpoint: r.endpoint,
    ...(r.attempts !== undefined && r.attempts > 1 ? { attempts: r.attempts, endpoints: r.endpoints ?? [] } : {}),
    caller: r.caller,
    status: r.status,
    durationMs: r.durationMs,
    error: r.error,
    cause: r.cause,
    fault: r.fault
  }
}

export function accessLogRecorder (log: Logger, option: AccessLogOption): RequestRecorder {
  const { enabled, sampleRatio } = accessLogSettings(option)
  if (!enabled) return { record () {}, flush () {} }
  // A success is written when its request id's hash (murmur3, as consistent hashing uses) falls
  // below ratio × 2^32; a ratio of 1 skips the draw. A hash, not a random number: the edge and
  // the node gateways see the same x-request-id, so a sampled request is written on every hop.
  const sampling = sampleRatio < 1
  const threshold = sampleRatio * 2 ** 32
  const sampled = (r: RequestRecord): boolean => !sampling || isFailure(r) || hash32(r.requestId) < threshold
  const stream = (log as unknown as Record<symbol, Writable | undefined>)[pino.symbols.streamSym]
  if (stream === undefined || typeof stream.write !== 'function') {
    const access = log.child({ log: 'access' })
    return { record (r) { if (sampled(r)) access.info(accessFields(r)) }, flush () {} }
  }
  const pid = process.pid
  // Lines gather for one turn of the event loop (or up to BATCH_CHARS) and reach the
  // destination as one write. Written one by one, each line made pino's buffer (sonic-boom)
  // measure its whole pending text again, flattening up to 16 KiB per line: about 3.5 µs
  // and 5 KiB of garbage per request at the edge. The batch goes at the check phase of the
  // turn the exchange ended in; other log lines of that turn may come before it.
  let pending = ''
  let scheduled = false
  const write = (exiting: boolean): void => {
    if (pending === '') return
    const batch = pending
    pending = ''
    stream.write(batch)
    if (exiting) stream.flushSync?.()
  }
  const flushScheduled = (exiting = false): void => {
    scheduled = false
    unflushed.delete(flushScheduled)
    write(exiting)
  }
  return {
    record (r) {
      // The level is read on every call: a reload may change it.
      if (!log.isLevelEnabled('info') || !sampled(r)) return
      pending += formatAccessLine(r, pid)
      if (pending.length >= BATCH_CHARS) write(false)
      else if (!scheduled) {
        scheduled = true
        unflushed.add(flushScheduled)
        flushAllOnExit()
        setImmediate(flushScheduled)
      }
    },
    flush () { write(false) }
  }
}

/** Milliseconds from `start` to `end` (process.hrtime.bigint() readings; end: now), to 0.001 ms. */
export function elapsedMs (start: bigint, end: bigint = process.hrtime.bigint()): number {
  return Math.round(Number(end - start) / 1e3) / 1e3
}

/** The access log as a gateway-wide policy: one line when each exchange ends. */
export function accessLogPolicy (recorder: RequestRecorder): { readonly name: string, onEnd(r: RequestRecord): void } {
  return { name: 'access-log', onEnd (r) { recorder.record(r) } }
}
