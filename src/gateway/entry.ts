// Version, entry: where a listener's request enters a config version. It makes the Exchange,
// normalises the request target once (every entry alike), picks the route (config routes,
// or the entry's fixed route), runs the policy chain's request step, then hands the
// exchange to the route: plugin-less routes straight to the route layer (the fast path),
// the others through the Fastify host. It counts the version's in-flight requests and ends
// the exchanges no layer ended (a plugin answered, the client left).
import { ServerResponse, type IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Socket } from 'node:net'
import type { FastmeshConfig } from '../config/validate.js'
import { fastmeshError } from '../errors.js'
import type { Refusal } from '../../plugins/types.js'
import { requestIdOf } from './request-id.js'
import type { Router, RouteMatch } from './router.js'
import { normalizeRequestTarget } from './request-target.js'
import { responseErrorOf, writeError } from './respond.js'
import { Exchange, type Entry, type PolicyChain } from './exchange.js'
import type { Assembly, RouteBinding } from './assembly.js'
import { entryOf, exchangeOf, tagExchange, tagMatch, type GatewayRequest } from './gateway-request.js'
import type { FastifyHost } from './fastify-host.js'

export interface EntryOptions {
  readonly router: Router
  readonly assembly: Assembly
  readonly chain: PolicyChain
  readonly host: FastifyHost
  /** The plugins a route runs in Fastify (gateway-wide ones included); none: the fast path. */
  readonly pluginsOf: (binding: RouteBinding) => readonly unknown[]
  readonly escapedSlashes: FastmeshConfig['gateway']['escapedSlashes']
  /** The identity calls on the shared outbound port carry (`listeners.outbound.identity`); undefined: the gateway's. */
  readonly outboundCaller: string | undefined
}

export interface VersionEntry {
  handle(req: IncomingMessage, res: ServerResponse): void
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void
  readonly inFlight: number
}

/**
 * Routes without plugins (of their own, or gateway-wide ones without a policy form) skip Fastify: nothing would run between the match and the
 * forward, and a Request/Reply pair and the hook chain cost more than the routing itself.
 * They behave the same (tests run both kinds).
 */
function fastPath (binding: RouteBinding): (ex: Exchange, match: RouteMatch) => void {
  const { guard, layer } = binding
  if (guard === undefined) return (ex, match) => { layer.forward(ex, match, ex.req.headers, null, null) }
  return (ex, match) => {
    guard(ex).then((refusal) => {
      if (refusal !== undefined) layer.answer(ex, refusal, null)
      else layer.forward(ex, match, ex.req.headers, null, null)
    }, (err: unknown) => { layer.answer(ex, responseErrorOf(err as Error), null) }).catch((err: unknown) => { ex.res.destroy(err as Error) })
  }
}

export function createEntry (opts: EntryOptions): VersionEntry {
  const { router, assembly, chain, host, escapedSlashes } = opts
  // The listener outlives versions; the identity its calls carry is this version's, so a
  // reload applies to the calls that begin after the swap.
  const outbound: Entry = { kind: 'outbound', caller: opts.outboundCaller }
  const fastRoutes = new Map<string, (ex: Exchange, match: RouteMatch) => void>()
  for (const binding of assembly.routes.values()) if (opts.pluginsOf(binding).length === 0) fastRoutes.set(binding.name, fastPath(binding))

  /** The gateway answers before any route's plugins ran (a gateway policy's refusal keeps its headers). */
  const answer = (ex: Exchange, err: Refusal): void => {
    writeError(ex.res, err, ex.requestId, err.headers)
    chain.end(ex, err.statusCode, err.code)
  }

  /**
   * Normalises the request target, once and for every entry alike, and picks the route.
   * From here on `req.url` is the normalised target: routing, authorization, plugins, the
   * access log and the upstream all see the same path. Answers itself (and returns
   * undefined) when the request goes no further.
   */
  const route = (req: GatewayRequest, ex: Exchange): { binding: RouteBinding, match: RouteMatch } | undefined => {
    const url = req.url ?? '/'
    const target = normalizeRequestTarget(url, escapedSlashes)
    if ('problem' in target) { answer(ex, fastmeshError('BAD_REQUEST', [target.problem])); return undefined }
    if (target.target !== url) req.url = target.target
    const entry = ex.entry
    let binding: RouteBinding | undefined
    let match: RouteMatch | undefined
    if (entry !== undefined && entry.kind !== 'outbound') {
      binding = assembly.fixedRoute(entry)
      if (binding === undefined) {
        answer(ex, entry.kind === 'inbound' ? fastmeshError('UNKNOWN_LOCAL_SERVICE', [entry.service]) : fastmeshError('NO_ROUTE', [ex.method, target.target, req.headers.host ?? '-']))
        return undefined
      }
    } else {
      match = router.match(ex.method, req.headers.host, target.path, target.search, req.headers)
      binding = match !== undefined ? assembly.routes.get(match.route.name) : assembly.byHost
      if (binding === undefined) {
        answer(ex, fastmeshError('NO_ROUTE', [ex.method, target.target, req.headers.host ?? '-']))
        return undefined
      }
    }
    match ??= { route: binding.matcher, params: undefined, path: target.path, search: target.search }
    ex.route = binding.name
    ex.destination = binding.service
    tagMatch(req, match)
    const refusal = chain.request(ex)
    if (refusal !== undefined) { answer(ex, refusal); return undefined }
    return { binding, match }
  }

  /** An exception on the way in (routing, a policy, the fast path): this exchange ends with a JSON 500, counted and logged. */
  const internalFault = (ex: Exchange, where: string, err: unknown): void => {
    chain.fault(ex, where, err)
    if (ex.ended) { ex.res.destroy(); return }
    try {
      answer(ex, fastmeshError('INTERNAL', [`${where} failed`]))
    } catch {
      ex.res.destroy()
    }
  }

  let inFlight = 0
  /** On the response's close: the version's count, and the end of an exchange no layer ended (a plugin replied, the client left). */
  function onResponseClose (this: ServerResponse): void {
    inFlight--
    // Read through the request: a property added to every ServerResponse would change the
    // shape Node's own hot paths (writeHead, write, end) see.
    const ex = exchangeOf(this.req)
    if (ex === undefined || ex.ended) return
    // Closed before the response was complete: the client left (499), whatever was sent.
    if (this.writableFinished) chain.end(ex, this.statusCode, ex.error)
    else chain.end(ex, 499, 'client closed the connection')
  }
  const begin = (req: GatewayRequest, res: ServerResponse): Exchange => {
    const entry = entryOf(req)
    const ex = new Exchange(req, res, requestIdOf(req), process.hrtime.bigint(), entry !== undefined && entry.kind === 'outbound' ? outbound : entry)
    tagExchange(req, ex)
    inFlight++
    res.once('close', onResponseClose)
    return ex
  }

  return {
    get inFlight () { return inFlight },
    handle (req, res) {
      const r = req as GatewayRequest
      const ex = begin(r, res)
      try {
        const picked = route(r, ex)
        if (picked === undefined) return
        const fast = r.headers.upgrade === undefined ? fastRoutes.get(picked.binding.name) : undefined
        if (fast !== undefined) fast(ex, picked.match)
        else host.dispatch(req, res)
      } catch (err) {
        internalFault(ex, 'request', err)
      }
    },
    upgrade (req, socket, head) {
      // As @fastify/websocket does: a response bound to the socket lets the upgrade take
      // the route's plugin hooks; the endpoint layer then takes the socket over.
      const r = req as GatewayRequest
      r.upgradeHead = head
      const res = new ServerResponse(req)
      res.assignSocket(socket as Socket)
      res.once('finish', () => { if (res.statusCode !== 101) socket.destroy() })
      socket.once('close', () => { if (!res.writableFinished) res.emit('close') })
      const ex = begin(r, res)
      try {
        if (route(r, ex) === undefined) return
        host.dispatch(req, res)
      } catch (err) {
        internalFault(ex, 'upgrade', err)
      }
    }
  }
}
