// The request id: the client's `x-request-id` when it is a sane token, else a fresh UUID.
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

const REQUEST_ID = /^[\w.:@=+/-]{1,128}$/

export function requestIdOf (req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}
