// The one error-to-response translator: every response the gateway makes itself (routing,
// forwarding, listeners, plugins' errors, admin) is shaped here — status from the error,
// the small JSON body `{error:{code,message,requestId}}`, and an x-request-id.
import { STATUS_CODES, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { catalogue, errorBody, fastmeshError, isFastmeshError, type ResponseError } from '../errors.js'

/** After an error answer on a bare socket the client should close; one that does not is cut after this. */
const CLOSE_GRACE_MS = 1000

/** The body shape of every gateway-made error, as an object (for Fastify's own serializer). */
export function errorPayload (err: ResponseError, requestId: string): { error: { code: string, message: string, requestId: string } } {
  return { error: { code: err.code, message: err.message, requestId } }
}

/** The headers every gateway-made error carries (without content-length). */
export function errorHeaders (requestId: string): OutgoingHttpHeaders {
  return { 'content-type': 'application/json; charset=utf-8', 'x-request-id': requestId, 'cache-control': 'no-store' }
}

/**
 * Whether the request declared a body that has not all arrived yet. (A bodiless request is
 * not `complete` while its 'request' event runs, so `complete` alone does not say it.)
 */
export function bodyUnread (req: IncomingMessage): boolean {
  if (req.complete) return false
  const h = req.headers
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0')
}

/**
 * Writes `err` on a response nothing was written to yet. `headers` are kept (a route
 * plugin's CORS or rate-limit headers); ours win for the body's own. Too late for a status,
 * the exchange is cut so the client sees a broken response, not a short one.
 */
export function writeError (res: ServerResponse, err: ResponseError, requestId: string, headers?: Record<string, unknown> | null): void {
  if (res.headersSent) {
    res.destroy(Object.assign(new Error(err.message), { code: err.code }))
    return
  }
  const body = errorBody(err, requestId)
  // Answered before the request body was all read: close the connection after the answer
  // (the unread rest cannot be told from the next request, and the body stream may be gone).
  if (res.req !== undefined && bodyUnread(res.req)) res.shouldKeepAlive = false
  if (headers != null) for (const name in headers) res.setHeader(name, headers[name] as string | string[])
  const own = errorHeaders(requestId)
  own['content-length'] = Buffer.byteLength(body)
  res.writeHead(err.statusCode, own)
  res.end(body)
}

/**
 * Writes `err` on a bare socket (parser errors, timeouts, CONNECT, refused upgrades): there
 * is no response object, so the status line is written by hand; the connection then ends.
 */
export function answerOnSocket (socket: Duplex, err: ResponseError, requestId: string): void {
  // A client that is gone mid-answer is nothing to report.
  socket.on('error', () => { socket.destroy() })
  if (!socket.writable) { socket.destroy(); return }
  const body = errorBody(err, requestId)
  socket.end(`HTTP/1.1 ${err.statusCode} ${STATUS_CODES[err.statusCode] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`)
  const timer = setTimeout(() => { socket.destroy() }, CLOSE_GRACE_MS)
  timer.unref()
  socket.once('close', () => { clearTimeout(timer) })
}

/**
 * What a thrown error answers. Ours keep their catalogue status; a route plugin's error with
 * an HTTP status (401 from an auth check, 429 from @fastify/rate-limit, 503 from
 * @fastify/under-pressure) keeps that status and its code; anything else is a bug: 500.
 */
export function responseErrorOf (error: Error & { statusCode?: number, code?: string }): ResponseError {
  if (isFastmeshError(error)) return error
  const status = error.statusCode
  if (status !== undefined && Number.isInteger(status) && status >= 400 && status <= 599) {
    return { statusCode: status, code: typeof error.code === 'string' && error.code !== '' ? error.code : catalogue.ROUTE_PLUGIN.code, message: error.message }
  }
  return fastmeshError('INTERNAL', [error.message], error)
}
