// The access log: one structured line per request, written when the response ends.
import type { Logger } from 'pino'

export interface RequestRecord {
  readonly requestId: string
  readonly method: string
  readonly path: string
  readonly route: string | undefined
  readonly destination: string | undefined
  readonly endpoint: string | undefined
  readonly status: number
  readonly durationMs: number
  /** Set when the gateway itself answered (FASTMESH_ERR_*) or the exchange broke. */
  readonly error?: string
}

export interface RequestRecorder {
  record(r: RequestRecord): void
}

export function accessLogRecorder (log: Logger, enabled: boolean): RequestRecorder {
  if (!enabled) return { record () {} }
  const access = log.child({ log: 'access' })
  return {
    record (r) {
      access.info(r)
    }
  }
}

/** Milliseconds since `start` (a process.hrtime.bigint() reading), to 0.001 ms. */
export function elapsedMs (start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6
}
