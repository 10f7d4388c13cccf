// The one place gateway-made errors become HTTP responses: status from the catalogue,
// a small JSON body with the code and the request id.
import type { ServerResponse } from 'node:http'
import { errorBody, type ResponseError } from '../errors.js'

export function writeError (res: ServerResponse, err: ResponseError, requestId: string): void {
  if (res.headersSent) {
    // Too late for a status: cut the exchange so the client sees a broken response, not a short one.
    res.destroy(Object.assign(new Error(err.message), { code: err.code }))
    return
  }
  const body = errorBody(err, requestId)
  res.writeHead(err.statusCode, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'x-request-id': requestId,
    'cache-control': 'no-store'
  })
  res.end(body)
}
