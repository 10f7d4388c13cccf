// A real OTLP/HTTP trace receiver for tests: a node:http server on loopback that accepts
// POST /v1/traces with JSON bodies (what @opentelemetry/exporter-trace-otlp-http sends),
// decodes them into flat spans, and can hang or be released to play a slow collector.
import type { TestContext } from 'node:test'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { startUpstream } from './upstreams.js'

/** An OTLP attribute value as JSON carries it. */
interface AnyValue { stringValue?: string, intValue?: number | string, boolValue?: boolean, doubleValue?: number }
interface KeyValue { key: string, value: AnyValue }
interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  startTimeUnixNano: string | number
  endTimeUnixNano: string | number
  attributes?: KeyValue[]
  status?: { code?: number, message?: string }
}
interface OtlpBody {
  resourceSpans?: Array<{ resource?: { attributes?: KeyValue[] }, scopeSpans?: Array<{ spans?: OtlpSpan[] }> }>
}

/** OTLP span kinds (the proto enum). */
export const SPAN_KIND = { server: 2, client: 3 } as const
/** OTLP status codes. */
export const STATUS_CODE = { unset: 0, ok: 1, error: 2 } as const

/** One received span, decoded. */
export interface ReceivedSpan {
  readonly traceId: string
  readonly spanId: string
  /** '' for a root span. */
  readonly parentSpanId: string
  readonly name: string
  readonly kind: number
  readonly startNs: bigint
  readonly endNs: bigint
  readonly attributes: Readonly<Record<string, string | number | boolean>>
  readonly resource: Readonly<Record<string, string | number | boolean>>
  readonly statusCode: number
}

export interface OtlpReceiver {
  /** Base URL for `telemetry.tracing.otlp.endpoint`. */
  readonly endpoint: string
  readonly spans: ReceivedSpan[]
  /** Export requests answered (or held), with their headers. */
  readonly requests: Array<{ path: string, headers: IncomingMessage['headers'] }>
  /** Export requests that arrived while held and are not answered yet. */
  readonly heldCount: number
  /** Resolves with the spans once `predicate` holds on them; rejects after `timeoutMs`. */
  waitFor(predicate: (spans: readonly ReceivedSpan[]) => boolean, what: string, timeoutMs?: number): Promise<ReceivedSpan[]>
  /** From now on, hold every export request without answering (a hanging collector). */
  hang(): void
  /** Answers every held request and every later one. */
  release(): void
}

function valueOf (v: AnyValue): string | number | boolean {
  if (v.stringValue !== undefined) return v.stringValue
  if (v.intValue !== undefined) return Number(v.intValue)
  if (v.boolValue !== undefined) return v.boolValue
  if (v.doubleValue !== undefined) return v.doubleValue
  return ''
}

function attributesOf (list: KeyValue[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {}
  for (const kv of list ?? []) out[kv.key] = valueOf(kv.value)
  return out
}

/** Trace and span ids as lower-case hex (the JSON exporter sends hex; base64 is decoded in case). */
function hexId (id: string | undefined): string {
  if (id === undefined || id === '') return ''
  if (/^[0-9a-f]+$/i.test(id) && (id.length === 32 || id.length === 16)) return id.toLowerCase()
  return Buffer.from(id, 'base64').toString('hex')
}

export function decodeOtlp (body: OtlpBody): ReceivedSpan[] {
  const out: ReceivedSpan[] = []
  for (const rs of body.resourceSpans ?? []) {
    const resource = attributesOf(rs.resource?.attributes)
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          traceId: hexId(s.traceId),
          spanId: hexId(s.spanId),
          parentSpanId: hexId(s.parentSpanId),
          name: s.name,
          kind: s.kind,
          startNs: BigInt(s.startTimeUnixNano),
          endNs: BigInt(s.endTimeUnixNano),
          attributes: attributesOf(s.attributes),
          resource,
          statusCode: s.status?.code ?? 0
        })
      }
    }
  }
  return out
}

/** Starts a receiver on 127.0.0.1 port 0, closed after the test. */
export async function startOtlpReceiver (t: TestContext): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = []
  const requests: Array<{ path: string, headers: IncomingMessage['headers'] }> = []
  const held: Array<() => void> = []
  let hanging = false
  const waiters = new Set<() => void>()
  const { port } = await startUpstream(t, (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => { chunks.push(c) })
    req.on('end', () => {
      requests.push({ path: req.url ?? '', headers: req.headers })
      const answer = (): void => {
        if (req.method !== 'POST' || req.url !== '/v1/traces') { res.writeHead(404).end(); return }
        try {
          spans.push(...decodeOtlp(JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpBody))
        } catch {
          res.writeHead(400).end()
          return
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
        for (const w of waiters) w()
      }
      if (hanging) held.push(answer)
      else answer()
    })
  })
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    requests,
    get heldCount () { return held.length },
    async waitFor (predicate, what, timeoutMs = 15_000) {
      if (predicate(spans)) return spans
      return await new Promise<ReceivedSpan[]>((resolve, reject) => {
        const check = (): void => {
          if (!predicate(spans)) return
          waiters.delete(check)
          clearTimeout(timer)
          resolve(spans)
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`timed out waiting for ${what}; received ${spans.length} spans: ${spans.map((s) => s.name).join(', ')}`))
        }, timeoutMs)
        waiters.add(check)
      })
    },
    hang () { hanging = true },
    release () {
      hanging = false
      for (const answer of held.splice(0)) answer()
    }
  }
}
