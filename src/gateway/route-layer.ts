// Route layer: one route's forwarding. It asks the route's destination (the service layer)
// for an endpoint, rewrites the path, applies the route's timeouts and forwarding-header
// rules, hands the request to the endpoint layer, and is the one place where an endpoint's
// failure becomes the gateway's answer (retries belong here, and only here).
import type { IncomingHttpHeaders } from 'node:http'
import { fastmeshError, type FastmeshError, type ResponseError } from '../errors.js'
import { forward, type ForwardObserver, type ForwardSettings, type UpstreamCall } from '../upstream/proxy.js'
import type { EndpointTarget } from '../upstream/endpoint-pool.js'
import type { UpstreamHeadersEditor } from '../../plugins/types.js'
import type { Exchange, PolicyChain } from './exchange.js'
import type { RouteMatch } from './router.js'
import { writeError } from './respond.js'

/** How long a request to a destination discovery has not answered for yet waits for it. */
export const FIRST_DISCOVERY_WAIT_MS = 5_000

/** The service layer as a route sees it (src/balancer/service-endpoints.ts is one). */
export interface Destination {
  readonly service: string
  /** An endpoint for the next request, or undefined when none is usable. */
  pick(): EndpointTarget | undefined
  /** Undefined until discovery has answered for this destination once. */
  readonly current: unknown
  /** Resolves once discovery has answered, or after `timeoutMs`. */
  known(timeoutMs: number): Promise<void>
}

/** The destination of one request: fixed for most routes, named by the request for some (Host). */
export type DestinationFor = (ex: Exchange) => Destination | ResponseError

/** One forwarded request, as the endpoint layer hands it back. */
interface RouteCall extends UpstreamCall {
  readonly ex: Exchange
}

export interface RouteLayerOptions {
  readonly name: string
  /** The upstream path (without query) for a match. */
  readonly rewrite: (match: RouteMatch) => string
  readonly destination: DestinationFor
  readonly forwarding: ForwardSettings
  /** Inbound mesh calls: pass the verified caller on as X-Forwarded-Client-Cert. */
  readonly forwardClientCert: boolean
  readonly chain: PolicyChain
}

export class RouteLayer implements ForwardObserver<RouteCall> {
  readonly name: string
  private readonly rewrite: RouteLayerOptions['rewrite']
  private readonly destination: DestinationFor
  private readonly forwarding: ForwardSettings
  private readonly forwardClientCert: boolean
  private readonly chain: PolicyChain

  constructor (opts: RouteLayerOptions) {
    this.name = opts.name
    this.rewrite = opts.rewrite
    this.destination = opts.destination
    this.forwarding = opts.forwarding
    this.forwardClientCert = opts.forwardClientCert
    this.chain = opts.chain
  }

  /**
   * Forwards the exchange whose route matched as `match`. `editors` and `replyHeaders`
   * come from the route's plugins (null on routes without plugins).
   */
  forward (ex: Exchange, match: RouteMatch, headers: IncomingHttpHeaders, editors: UpstreamHeadersEditor[] | null, replyHeaders: Record<string, unknown> | null): void {
    const destination = this.destination(ex)
    if (!('pick' in destination)) {
      this.answer(ex, destination, replyHeaders)
      return
    }
    ex.destination = destination.service
    if (destination.current === undefined) {
      // A destination first used by this request: its discovery watch has just started.
      void destination.known(FIRST_DISCOVERY_WAIT_MS).then(() => {
        if (ex.res.destroyed) this.chain.end(ex, 499, 'client closed the connection')
        else this.dispatch(ex, destination, match, headers, editors, replyHeaders)
      })
      return
    }
    this.dispatch(ex, destination, match, headers, editors, replyHeaders)
  }

  private dispatch (ex: Exchange, destination: Destination, match: RouteMatch, headers: IncomingHttpHeaders, editors: UpstreamHeadersEditor[] | null, replyHeaders: Record<string, unknown> | null): void {
    const target = destination.pick()
    if (target === undefined) {
      this.answer(ex, fastmeshError('NO_HEALTHY_ENDPOINT', [destination.service]), replyHeaders)
      return
    }
    ex.endpoint = target.label
    const call: RouteCall = {
      ex,
      requestId: ex.requestId,
      path: this.rewrite(match) + match.search,
      editors,
      replyHeaders,
      clientCert: this.forwardClientCert && ex.entry?.kind === 'inbound' ? ex.entry.peer?.uri : undefined
    }
    forward(ex.req, ex.res, headers, target, this.forwarding, call, this)
  }

  failed (call: RouteCall, err: FastmeshError): void {
    this.answer(call.ex, err, call.replyHeaders)
  }

  ended (call: RouteCall, status: number, error: string | undefined): void {
    this.chain.end(call.ex, status, error)
  }

  /** The gateway answers the exchange itself (plugin headers kept) and it ends. */
  answer (ex: Exchange, err: ResponseError, replyHeaders: Record<string, unknown> | null): void {
    writeError(ex.res, err, ex.requestId, replyHeaders)
    this.chain.end(ex, err.statusCode, err.code)
  }
}
