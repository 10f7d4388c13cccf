// Route layer, destination choice: a route's weighted split across backends (services or
// subsets of one), chosen per request at random by weight, or by a hash of a sticky key
// (header or cookie) so one client stays on one backend while the weights are unchanged.
import type { IncomingHttpHeaders } from 'node:http'
import type { RouteConfig } from '../config/schema.js'
import type { ServiceLayer } from '../balancer/types.js'
import { defaultRandom, type RandomSource } from '../balancer/random.js'
import { hash32 } from '../balancer/policies/hash.js'

/** One backend as the config names it; `subset` undefined: the service's own policy subset. */
export interface BackendRef {
  readonly service: string
  readonly subset: { readonly tags: readonly string[], readonly meta: Readonly<Record<string, string>> } | undefined
  readonly weight: number
}

/** The backends of a route's destination: `service` is one backend of weight 1. */
export function routeBackends (destination: RouteConfig['destination']): BackendRef[] {
  if (destination.backends !== undefined) return destination.backends.map((b) => ({ service: b.service, subset: b.subset, weight: b.weight }))
  if (destination.service !== undefined) return [{ service: destination.service, subset: undefined, weight: 1 }]
  // Validation refuses a destination without either; reaching here is a bug.
  throw new Error('route destination has neither service nor backends')
}

export interface StickyOn {
  readonly header?: string | undefined
  readonly cookie?: string | undefined
}

export interface SplitOptions {
  readonly stickyOn?: StickyOn | undefined
  readonly random?: RandomSource
}

/** The value of cookie `name` in a Cookie header, or undefined. */
export function cookieValue (header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  let start = 0
  while (start < header.length) {
    let end = header.indexOf(';', start)
    if (end === -1) end = header.length
    const eq = header.indexOf('=', start)
    if (eq !== -1 && eq < end && header.slice(start, eq).trim() === name) return header.slice(eq + 1, end).trim()
    start = end + 1
  }
  return undefined
}

function stickyKeyOf (sticky: StickyOn): (headers: IncomingHttpHeaders) => string | undefined {
  if (sticky.header !== undefined) {
    const name = sticky.header.toLowerCase()
    return (headers) => {
      const v = headers[name]
      const s = Array.isArray(v) ? v[0] : v
      return s === undefined || s === '' ? undefined : s
    }
  }
  const cookie = sticky.cookie
  if (cookie === undefined) return () => undefined
  return (headers) => {
    const v = cookieValue(headers.cookie, cookie)
    return v === undefined || v === '' ? undefined : v
  }
}

/**
 * A per-request choice among `backends` by weight. Backends of weight 0 are never chosen.
 * With `stickyOn`, a request carrying the key goes where the key's hash falls on the weight
 * line (the same value, the same backend); a request without it is split at random.
 */
export function weightedDestination<L = ServiceLayer> (backends: ReadonlyArray<{ readonly layer: L, readonly weight: number }>, options: SplitOptions = {}): (headers: IncomingHttpHeaders) => L {
  const live = backends.filter((b) => b.weight > 0)
  if (live.length === 0) throw new Error('a weighted destination needs a backend with a weight above 0')
  if (live.length === 1) {
    const only = live[0]!.layer
    return () => only
  }
  const layers = live.map((b) => b.layer)
  // Cumulative upper bounds on [0, total): backend i takes [bounds[i-1], bounds[i]).
  const bounds: number[] = []
  let total = 0
  for (const b of live) bounds.push(total += b.weight)
  const at = (x: number): L => {
    for (let i = 0; i < bounds.length - 1; i++) if (x < bounds[i]!) return layers[i]!
    return layers[layers.length - 1]!
  }
  const random = options.random ?? defaultRandom
  const sticky = options.stickyOn !== undefined ? stickyKeyOf(options.stickyOn) : undefined
  if (sticky === undefined) return () => at(random() * total)
  return (headers) => {
    const key = sticky(headers)
    return at(key !== undefined ? (hash32(key) / 4294967296) * total : random() * total)
  }
}
