// Version, request tags: what a listener and a version attach to Node's request object as it
// passes (the entry it came in on, its Exchange, its route match). Symbols, so nothing shows
// to plugins or changes the shape of Node's own objects beyond these slots.
import type { IncomingMessage } from 'node:http'
import type { Entry, Exchange } from './exchange.js'
import type { RouteMatch } from './router.js'

const kEntry = Symbol('fastmesh.entry')
const kExchange = Symbol('fastmesh.exchange')
const kMatch = Symbol('fastmesh.match')

export interface GatewayRequest extends IncomingMessage {
  [kEntry]?: Entry
  [kExchange]?: Exchange
  [kMatch]?: RouteMatch
  /** An upgrade's first bytes after the header section (Node hands them to the 'upgrade' event). */
  upgradeHead?: Buffer
}

/** Marks the listener a request came in on (before the version sees it). */
export function tagEntry (req: IncomingMessage, entry: Entry): void {
  (req as GatewayRequest)[kEntry] = entry
}

export function entryOf (req: IncomingMessage): Entry | undefined {
  return (req as GatewayRequest)[kEntry]
}

export function exchangeOf (req: IncomingMessage): Exchange | undefined {
  return (req as GatewayRequest)[kExchange]
}

export function matchOf (req: IncomingMessage): RouteMatch | undefined {
  return (req as GatewayRequest)[kMatch]
}

export function tagExchange (req: IncomingMessage, ex: Exchange, match?: RouteMatch): void {
  const r = req as GatewayRequest
  r[kExchange] = ex
  if (match !== undefined) r[kMatch] = match
}

export function tagMatch (req: IncomingMessage, match: RouteMatch): void {
  (req as GatewayRequest)[kMatch] = match
}
