// One HTTP/1.1 exchange on a raw loopback socket, for fuzzing what an HTTP client library will
// not do: chunked or slowly sent bodies, aborts after the headers, mid-body or after the first
// response byte (FIN or RST). The answer is kept as raw bytes and parsed strictly afterwards,
// so a malformed answer (bad status line, bad framing, bytes after the response) is seen as
// it was sent.
import net from 'node:net'

export type BodySend =
  | { readonly kind: 'none' }
  /** Content-Length, written with the headers. */
  | { readonly kind: 'length', readonly body: Buffer }
  /** Content-Length, written in `pieces` pieces `gapMs` apart. */
  | { readonly kind: 'slow', readonly body: Buffer, readonly pieces: number, readonly gapMs: number }
  /** Transfer-Encoding: chunked, in `chunks` chunks, one per event-loop turn. */
  | { readonly kind: 'chunked', readonly body: Buffer, readonly chunks: number }

export type ClientMode = 'normal' | 'abort-after-headers' | 'abort-mid-body' | 'abort-after-first-byte' | 'abort-while-waiting'

export interface RawRequest {
  readonly port: number
  readonly method: string
  readonly target: string
  /** Header lines as sent (framing headers are added from `body`). */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: BodySend
  readonly mode: ClientMode
  /** Abort with an RST (`resetAndDestroy`) rather than a FIN. */
  readonly reset?: boolean
  /** `abort-while-waiting`: abort this long after the request was sent whole, unless an answer began. Default 100. */
  readonly abortAfterMs?: number
  /** Give up on the exchange after this long (the gateway never finished its answer). */
  readonly timeoutMs?: number
  /**
   * Keep the connection: the request goes without `Connection: close`, and once its answer
   * is complete (and the request sent whole) this second request is written on the same
   * connection (it should say `connection: close`), unless the answer said it closes.
   */
  readonly followUp?: string
}

export interface RawOutcome {
  /** Every byte the gateway sent. */
  readonly received: Buffer
  /** The client sent its whole request. */
  readonly sentAll: boolean
  /** The client aborted (per `mode`). */
  readonly aborted: boolean
  /** A socket error seen (ECONNRESET, EPIPE, ...). */
  readonly socketError: string | undefined
  /** The gateway never closed the connection within `timeoutMs`. */
  readonly timedOut: boolean
  /** The follow-up request was written. */
  readonly followUpSent: boolean
  readonly durationMs: number
  /** performance.now() when the exchange began (before connecting). */
  readonly startedAt: number
}

function head (req: RawRequest): string {
  let s = `${req.method} ${req.target} HTTP/1.1\r\n`
  for (const [k, v] of req.headers) s += `${k}: ${v}\r\n`
  const b = req.body
  if (b.kind === 'length' || b.kind === 'slow') s += `content-length: ${b.body.length}\r\n`
  if (b.kind === 'chunked') s += 'transfer-encoding: chunked\r\n'
  return req.followUp !== undefined ? `${s}\r\n` : `${s}connection: close\r\n\r\n`
}

function pieces (body: Buffer, n: number): Buffer[] {
  const out: Buffer[] = []
  const size = Math.max(1, Math.ceil(body.length / n))
  for (let i = 0; i < body.length; i += size) out.push(body.subarray(i, i + size))
  return out
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** Runs one exchange; never rejects (socket errors are part of the outcome). */
export async function rawExchange (req: RawRequest): Promise<RawOutcome> {
  const start = performance.now()
  const socket = net.connect(req.port, '127.0.0.1')
  socket.setNoDelay(true)
  const chunks: Buffer[] = []
  let socketError: string | undefined
  let aborted = false
  let sentAll = false
  let timedOut = false
  let closed = false
  let followUpSent = false
  const maybeFollow = (): void => {
    if (req.followUp === undefined || followUpSent || !sentAll || closed) return
    let first: ParsedResponse
    try { first = parseResponse(Buffer.concat(chunks), req.method) } catch { return }
    if (!first.complete || /close/i.test(header(first, 'connection') ?? '')) return
    followUpSent = true
    socket.write(req.followUp)
  }
  const abort = (): void => {
    if (aborted || closed) return
    aborted = true
    if (req.reset === true) socket.resetAndDestroy()
    else socket.destroy()
  }
  const done = new Promise<void>((resolve) => {
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      if (req.mode === 'abort-after-first-byte') abort()
      else maybeFollow()
    })
    socket.on('error', (err: Error & { code?: string }) => { socketError ??= err.code ?? err.message })
    socket.on('close', () => { closed = true; resolve() })
  })
  const timer = setTimeout(() => { timedOut = true; socket.destroy() }, req.timeoutMs ?? 10_000)
  const write = (data: string | Buffer): boolean => {
    if (closed || aborted || socket.destroyed) return false
    socket.write(data)
    return true
  }
  const send = async (): Promise<void> => {
    await new Promise<void>((resolve) => { socket.once('connect', resolve); socket.once('close', resolve) })
    if (!write(head(req))) return
    if (req.mode === 'abort-after-headers') { await sleep(1); abort(); return }
    const b = req.body
    const midAbort = req.mode === 'abort-mid-body'
    if (b.kind === 'none') {
      if (midAbort) { await sleep(1); abort(); return }
    } else if (b.kind === 'length') {
      if (midAbort) { write(b.body.subarray(0, b.body.length >> 1)); await sleep(2); abort(); return }
      if (!write(b.body)) return
    } else if (b.kind === 'slow') {
      const parts = pieces(b.body, b.pieces)
      for (let i = 0; i < parts.length; i++) {
        if (midAbort && i >= parts.length / 2) { abort(); return }
        if (!write(parts[i]!)) return
        if (i < parts.length - 1) await sleep(b.gapMs)
      }
    } else {
      const parts = pieces(b.body, b.chunks)
      for (let i = 0; i < parts.length; i++) {
        if (midAbort && i >= parts.length / 2) { abort(); return }
        if (!write(`${parts[i]!.length.toString(16)}\r\n`) || !write(parts[i]!) || !write('\r\n')) return
        await new Promise((resolve) => setImmediate(resolve))
      }
      if (midAbort) { abort(); return }
      if (!write('0\r\n\r\n')) return
    }
    sentAll = true
    maybeFollow()
    if (req.mode === 'abort-while-waiting') {
      await sleep(req.abortAfterMs ?? 100)
      if (chunks.length === 0) abort()
    }
  }
  await Promise.all([send(), done])
  clearTimeout(timer)
  return { received: Buffer.concat(chunks), sentAll, aborted, socketError, timedOut, followUpSent, durationMs: performance.now() - start, startedAt: start }
}

export interface ParsedResponse {
  readonly status: number
  /** Header names lower-cased, in order. */
  readonly headers: Array<[string, string]>
  readonly body: Buffer
  /** The body arrived as framed (Content-Length reached, last chunk seen, or close-delimited). */
  readonly complete: boolean
  /** Bytes after the framed response (a second answer, or garbage). */
  readonly extra: number
  /** Bytes the framed response takes (where a next one would start). */
  readonly length: number
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/**
 * Parses `raw` as one HTTP/1.1 response to a request with `method`, strictly: throws an Error
 * saying what is malformed. A body cut short is not malformed (`complete: false`).
 */
export function parseResponse (raw: Buffer, method: string): ParsedResponse {
  const end = raw.indexOf('\r\n\r\n')
  if (end < 0) throw new Error(`no complete header section in ${raw.length} bytes: ${JSON.stringify(raw.subarray(0, 200).toString('latin1'))}`)
  const lines = raw.subarray(0, end).toString('latin1').split('\r\n')
  // eslint-disable-next-line no-control-regex
  const m = /^HTTP\/1\.1 ([1-5][0-9][0-9]) ([^\x00-\x08\x0a-\x1f\x7f]*)$/.exec(lines[0]!)
  if (m === null) throw new Error(`bad status line ${JSON.stringify(lines[0])}`)
  const status = Number(m[1])
  const headers: Array<[string, string]> = []
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    const name = colon > 0 ? line.slice(0, colon) : ''
    const value = line.slice(colon + 1).trim()
    if (!TOKEN.test(name)) throw new Error(`bad header line ${JSON.stringify(line)}`)
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) throw new Error(`control character in header ${name}`)
    headers.push([name.toLowerCase(), value])
  }
  const all = (n: string): string[] => headers.filter(([k]) => k === n).map(([, v]) => v)
  const lengths = all('content-length')
  const te = all('transfer-encoding')
  if (status < 200) throw new Error(`an informational ${status} answer reached the client`)
  if (lengths.length > 1 && new Set(lengths).size > 1) throw new Error(`conflicting Content-Length headers ${lengths.join(', ')}`)
  if (lengths.length > 0 && te.length > 0) throw new Error('both Content-Length and Transfer-Encoding')
  if (lengths.length > 0 && !/^[0-9]+$/.test(lengths[0]!)) throw new Error(`bad Content-Length ${lengths[0]}`)
  if (te.length > 0 && te.join(',').trim().toLowerCase() !== 'chunked') throw new Error(`unexpected Transfer-Encoding ${te.join(',')}`)
  const rest = raw.subarray(end + 4)
  if (method === 'HEAD' || status === 204 || status === 304) {
    return { status, headers, body: Buffer.alloc(0), complete: true, extra: rest.length, length: end + 4 }
  }
  if (te.length > 0) {
    const body: Buffer[] = []
    let at = 0
    for (;;) {
      const eol = rest.indexOf('\r\n', at)
      if (eol < 0) return { status, headers, body: Buffer.concat(body), complete: false, extra: 0, length: raw.length }
      const sizeText = rest.subarray(at, eol).toString('latin1').split(';')[0]!.trim()
      if (!/^[0-9a-fA-F]+$/.test(sizeText)) throw new Error(`bad chunk size ${JSON.stringify(sizeText)}`)
      const size = parseInt(sizeText, 16)
      if (size === 0) {
        // No trailers expected: the last chunk is followed by an empty line.
        if (rest.length < eol + 4) return { status, headers, body: Buffer.concat(body), complete: false, extra: 0, length: raw.length }
        if (rest.subarray(eol + 2, eol + 4).toString('latin1') !== '\r\n') throw new Error('trailers or garbage after the last chunk')
        return { status, headers, body: Buffer.concat(body), complete: true, extra: rest.length - (eol + 4), length: end + 4 + eol + 4 }
      }
      const dataEnd = eol + 2 + size
      if (rest.length < dataEnd + 2) {
        body.push(rest.subarray(eol + 2, Math.min(rest.length, dataEnd)))
        return { status, headers, body: Buffer.concat(body), complete: false, extra: 0, length: raw.length }
      }
      if (rest.subarray(dataEnd, dataEnd + 2).toString('latin1') !== '\r\n') throw new Error('chunk data not followed by CRLF')
      body.push(rest.subarray(eol + 2, dataEnd))
      at = dataEnd + 2
    }
  }
  if (lengths.length > 0) {
    const n = Number(lengths[0])
    return { status, headers, body: rest.subarray(0, n), complete: rest.length >= n, extra: Math.max(0, rest.length - n), length: end + 4 + Math.min(n, rest.length) }
  }
  // Close-delimited: whatever came until the close.
  return { status, headers, body: rest, complete: true, extra: 0, length: raw.length }
}

/** The value of header `name` (first), or undefined. */
export function header (res: ParsedResponse, name: string): string | undefined {
  return res.headers.find(([k]) => k === name)?.[1]
}
