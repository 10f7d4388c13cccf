// The data of the admin service-graph page (`GET /ui`): what one gateway saw over the recent
// window (calls between services, endpoint health, routes, certificates, its own errors), and
// the mesh as every gateway registered in Consul saw it, merged so that a call observed at
// both ends (the caller's outbound series, the destination's inbound one) counts once.
import { request, type Dispatcher } from 'undici'
import type { ConsulClient } from '../discovery/consul/client.js'
import { DURATION_BUCKETS } from '../telemetry/metrics.js'
import { quantileSeconds, type WindowView } from '../telemetry/request-window.js'

/**
 * What the source of a call is: a mesh service (verified, or the local service of a
 * per-upstream listener); `clients`, the outside world behind an edge gateway; `apps`, the
 * local applications of a node gateway calling through its shared outbound port (they share
 * its identity); `unverified`, inbound calls without a client certificate (permissive mTLS).
 */
export type NodeKind = 'service' | 'clients' | 'apps' | 'unverified'

/** The node of callers behind an edge gateway: one for every edge, never their addresses. */
export const CLIENTS_NODE = 'clients'
/** The node of inbound callers that presented no certificate. */
export const UNVERIFIED_NODE = '(unverified)'

/** One call (source → destination) as one gateway saw it over its window. */
export interface ObservedEdge {
  readonly source: string
  readonly sourceKind: NodeKind
  readonly destination: string
  /** `caller`: counted by the caller's gateway (edge or outbound); `destination`: by the destination's (inbound). */
  readonly observed: 'caller' | 'destination'
  /** Requests in the window, and the failed ones among them (5xx, or answered by the gateway with an error). */
  readonly requests: number
  readonly failed: number
  readonly gatewayErrors: number
  /** Requests per second over the window. */
  readonly rps: number
  /** Non-cumulative duration-bucket counts over the window (DURATION_BUCKETS), so views can merge percentiles. */
  readonly buckets: readonly number[]
  /** Requests since the gateway started. */
  readonly total: number
}

export interface EndpointHealth {
  readonly id: string
  readonly address: string
  /** `healthy`, `unhealthy` (health checks) or `ejected` (outlier detection). */
  readonly state: string
  readonly ejectionReason?: string
  readonly ejections?: number
  readonly ejectedUntil?: string
}

export interface ServiceHealth {
  readonly name: string
  readonly stale: boolean
  readonly healthy: number
  readonly inRotation: number
  readonly endpoints: readonly EndpointHealth[]
}

export interface RouteRow {
  readonly name: string
  readonly match: unknown
  /** The destination service, or the split backends (`a 90%`, ...). */
  readonly destination: string
  readonly requests: number
  readonly rps: number
}

export interface CertificateRow {
  readonly service: string
  readonly notAfter: string | null
  readonly daysLeft: number | null
  readonly state: string
}

/** `GET /ui/graph/local`: one gateway's view. */
export interface LocalGraph {
  readonly gateway: { readonly name: string, readonly role: string }
  readonly generatedAt: string
  readonly windowSeconds: number
  /** The sources whose calls this gateway counts on the caller side: itself (its clients or apps) and its local services. */
  readonly identities: readonly string[]
  readonly edges: readonly ObservedEdge[]
  readonly services: readonly ServiceHealth[]
  readonly routes: readonly RouteRow[]
  readonly certificates: readonly CertificateRow[]
  /** Gateway-made errors by code (only codes seen since start). */
  readonly errors: ReadonlyArray<{ readonly code: string, readonly recent: number, readonly total: number }>
}

export interface LocalGraphInput {
  readonly gateway: { readonly name: string, readonly role: string }
  readonly localServices: readonly string[]
  readonly window: WindowView
  readonly services: readonly ServiceHealth[]
  readonly routes: ReadonlyArray<{ readonly name: string, readonly match: unknown, readonly destination: string }>
  readonly certificates: readonly CertificateRow[]
  readonly now?: number
}

/** The graph node a series' caller is, by where it was counted. */
function sourceNode (direction: string, source: string, gatewayName: string): { id: string, kind: NodeKind } {
  if (direction === 'edge') return { id: CLIENTS_NODE, kind: 'clients' }
  if (direction === 'inbound') return source === '' ? { id: UNVERIFIED_NODE, kind: 'unverified' } : { id: source, kind: 'service' }
  // Outbound: a local service (a per-upstream listener's, or the shared port's with
  // `listeners.outbound.identity`), or the shared port's apps, which call with the gateway's
  // own identity (what the destination's inbound side sees as the caller).
  return source === '' ? { id: gatewayName, kind: 'apps' } : { id: source, kind: 'service' }
}

interface EdgeSum {
  source: string
  sourceKind: NodeKind
  destination: string
  observed: 'caller' | 'destination'
  requests: number
  failed: number
  gatewayErrors: number
  rps: number
  buckets: number[]
  total: number
}

const rate = (n: number, seconds: number): number => seconds > 0 ? n / seconds : 0

export function localGraph (input: LocalGraphInput): LocalGraph {
  const w = input.window
  const edges = new Map<string, EdgeSum>()
  const routeRequests = new Map<string, number>()
  for (const s of w.series) {
    routeRequests.set(s.route, (routeRequests.get(s.route) ?? 0) + s.count)
    // A request with no destination (no route matched) is no call between services; its
    // error is in `errors`.
    if (s.destination === '') continue
    const src = sourceNode(s.direction, s.source, input.gateway.name)
    const observed = s.direction === 'inbound' ? 'destination' : 'caller'
    const key = `${observed} ${src.id} ${s.destination}`
    let e = edges.get(key)
    if (e === undefined) {
      e = { source: src.id, sourceKind: src.kind, destination: s.destination, observed, requests: 0, failed: 0, gatewayErrors: 0, rps: 0, buckets: DURATION_BUCKETS.map(() => 0), total: 0 }
      edges.set(key, e)
    }
    e.requests += s.count
    // A 5xx failed; so did any other answer the gateway made with a FASTMESH_ERR_* code (a 403, a 429).
    e.failed += s.statusClass === '5xx' ? s.count : s.gatewayErrors
    e.gatewayErrors += s.gatewayErrors
    e.total += s.total
    for (let i = 0; i < e.buckets.length; i++) e.buckets[i]! += s.buckets[i] ?? 0
  }
  for (const e of edges.values()) e.rps = rate(e.requests, w.seconds)
  return {
    gateway: input.gateway,
    generatedAt: new Date(input.now ?? Date.now()).toISOString(),
    windowSeconds: w.seconds,
    identities: [input.gateway.name, ...input.localServices],
    edges: [...edges.values()],
    services: input.services,
    routes: input.routes.map((r) => {
      const requests = routeRequests.get(r.name) ?? 0
      return { ...r, requests, rps: rate(requests, w.seconds) }
    }),
    certificates: input.certificates,
    errors: w.errors.filter((e) => e.total > 0)
  }
}

/** One gateway in the mesh view, and whether its data could be read. */
export interface GatewayStatus {
  readonly name: string
  readonly role: string
  readonly admin: string
  readonly self: boolean
  /** `ok`, or `unreachable` (no answer in time, refused, not JSON, or not 200; `error` says which). */
  readonly status: 'ok' | 'unreachable'
  readonly error?: string
}

export interface GraphNode {
  readonly id: string
  readonly kind: NodeKind
}

export interface GraphEdge {
  readonly source: string
  readonly destination: string
  readonly requests: number
  readonly rps: number
  /** Failed requests (5xx or gateway-made errors) in percent of the window's requests; null without requests. */
  readonly errorPercent: number | null
  readonly gatewayErrors: number
  /** 99th percentile duration in ms over the window, from the merged histograms; null without requests. */
  readonly p99Ms: number | null
  readonly total: number
  /** Gateways whose counts make up this edge. */
  readonly seenBy: readonly string[]
}

/** `GET /ui/graph`: the mesh as the gateways that answered saw it. */
export interface MeshGraph {
  readonly generatedAt: string
  readonly windowSeconds: number
  readonly gateways: readonly GatewayStatus[]
  /** Why the gateway list could not be read from Consul (the page then shows this gateway only). */
  readonly discoveryError?: string
  readonly nodes: readonly GraphNode[]
  readonly edges: readonly GraphEdge[]
  readonly services: ReadonlyArray<ServiceHealth & { readonly gateway: string }>
  readonly routes: ReadonlyArray<RouteRow & { readonly gateway: string }>
  readonly certificates: ReadonlyArray<CertificateRow & { readonly gateway: string }>
  readonly errors: ReadonlyArray<{ readonly gateway: string, readonly code: string, readonly recent: number, readonly total: number }>
}

export interface GatewayAnswer {
  readonly status: GatewayStatus
  readonly graph?: LocalGraph
}

/**
 * Merges the gateways' views. An edge seen at the destination (inbound) is the same call as
 * the caller's outbound one whenever the caller's gateway answered too (its source is one of
 * that gateway's identities): then only the caller's count is used — it also holds the
 * failures the destination never saw (connect errors, timeouts). Inbound counts stand only
 * for callers whose gateway did not answer. An edge gateway's calls arrive under its own
 * name (its mesh identity), one of its identities: they stay counted as `clients` → service.
 */
export function mergeGraphs (answers: readonly GatewayAnswer[], generatedAt: number = Date.now()): MeshGraph {
  const graphs = answers.flatMap((a) => a.graph !== undefined ? [{ name: a.status.name, graph: a.graph }] : [])
  const callerSides = new Set(graphs.flatMap((g) => g.graph.identities))
  const edges = new Map<string, EdgeSum & { seenBy: Set<string> }>()
  const nodes = new Map<string, NodeKind>()
  const node = (id: string, kind: NodeKind): void => {
    const known = nodes.get(id)
    // A name seen both as a service and as a gateway's apps is shown as the service.
    if (known === undefined || (known !== 'service' && kind === 'service')) nodes.set(id, kind)
  }
  for (const { name, graph } of graphs) {
    for (const s of graph.services) node(s.name, 'service')
    for (const e of graph.edges) {
      if (e.observed === 'destination' && callerSides.has(e.source)) continue
      node(e.source, e.sourceKind)
      node(e.destination, 'service')
      const key = `${e.source} ${e.destination}`
      let m = edges.get(key)
      if (m === undefined) {
        m = { ...e, requests: 0, failed: 0, gatewayErrors: 0, rps: 0, buckets: DURATION_BUCKETS.map(() => 0), total: 0, seenBy: new Set() }
        edges.set(key, m)
      }
      m.requests += e.requests
      m.failed += e.failed
      m.gatewayErrors += e.gatewayErrors
      m.rps += e.rps
      m.total += e.total
      for (let i = 0; i < m.buckets.length; i++) m.buckets[i]! += e.buckets[i] ?? 0
      m.seenBy.add(name)
    }
  }
  const tagged = <T>(pick: (g: LocalGraph) => readonly T[]) => graphs.flatMap(({ name, graph }) => pick(graph).map((row) => ({ ...row, gateway: name })))
  const p99 = (m: EdgeSum): number | null => {
    const q = quantileSeconds(m.buckets, m.requests, 0.99)
    return q === null ? null : Math.round(q * 1e6) / 1e3
  }
  return {
    generatedAt: new Date(generatedAt).toISOString(),
    windowSeconds: graphs.reduce((max, g) => Math.max(max, g.graph.windowSeconds), 0),
    gateways: answers.map((a) => a.status),
    nodes: [...nodes].map(([id, kind]) => ({ id, kind })).sort((a, b) => a.id.localeCompare(b.id)),
    edges: [...edges.values()].map((m) => ({
      source: m.source,
      destination: m.destination,
      requests: m.requests,
      rps: m.rps,
      errorPercent: m.requests > 0 ? 100 * m.failed / m.requests : null,
      gatewayErrors: m.gatewayErrors,
      p99Ms: p99(m),
      total: m.total,
      seenBy: [...m.seenBy].sort()
    })),
    services: tagged((g) => g.services),
    routes: tagged((g) => g.routes),
    certificates: tagged((g) => g.certificates),
    errors: tagged((g) => g.errors)
  }
}

/** A gateway registered in Consul (`consul.registerSelf`): its name, role and admin `host:port`. */
export interface RegisteredGateway {
  readonly name: string
  readonly role: string
  readonly admin: string
}

const ADMIN_AUTHORITY = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$/

/** The largest answer read from a peer: a local graph is a few KiB to a few hundred; a peer sending more is not a gateway. */
const PEER_ANSWER_MAX_BYTES = 8 * 1024 * 1024

/**
 * Every fastmesh gateway registered in the catalog: services tagged `fastmesh` whose
 * instances carry `meta.role` and `meta.admin` (as `registerSelf` writes them).
 */
export async function registeredGateways (consul: ConsulClient): Promise<RegisteredGateway[]> {
  const { data: catalog } = await consul.agentRequest<Record<string, string[] | null>>('GET', '/catalog/services')
  const names = Object.entries(catalog ?? {}).filter(([, tags]) => (tags ?? []).includes('fastmesh')).map(([name]) => name)
  const found = new Map<string, RegisteredGateway>()
  for (const name of names) {
    const { data } = await consul.agentRequest<Array<{ ServiceName: string, ServiceMeta?: Record<string, string> | null }>>('GET', `/catalog/service/${encodeURIComponent(name)}`)
    for (const s of data ?? []) {
      const meta = s.ServiceMeta ?? {}
      // `host:port` only (a name or IPv4, or IPv6 in brackets): the value becomes a URL's authority.
      if (meta.role !== undefined && meta.admin !== undefined && ADMIN_AUTHORITY.test(meta.admin)) found.set(meta.admin, { name: s.ServiceName, role: meta.role, admin: meta.admin })
    }
  }
  return [...found.values()]
}

/**
 * One peer's `GET /ui/graph/local`, with this gateway's admin token (gateways of one mesh
 * share it). Never throws: a peer that does not answer in time, refuses, or answers
 * something else is `unreachable`, with why.
 */
export async function peerGraph (peer: RegisteredGateway, opts: { token: string | undefined, timeoutMs: number, dispatcher?: Dispatcher }): Promise<GatewayAnswer> {
  const status = { name: peer.name, role: peer.role, admin: peer.admin, self: false }
  try {
    const res = await request(`http://${peer.admin}/ui/graph/local`, {
      headers: opts.token !== undefined ? { authorization: `Bearer ${opts.token}` } : {},
      signal: AbortSignal.timeout(opts.timeoutMs),
      ...(opts.dispatcher !== undefined ? { dispatcher: opts.dispatcher } : {})
    })
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length
      if (size > PEER_ANSWER_MAX_BYTES) {
        res.body.destroy()
        return { status: { ...status, status: 'unreachable', error: `answered more than ${PEER_ANSWER_MAX_BYTES} bytes` } }
      }
      chunks.push(chunk)
    }
    const text = Buffer.concat(chunks, size).toString('utf8')
    if (res.statusCode !== 200) {
      const why = res.statusCode === 401 ? 'refused this gateway\'s admin token (401): gateways of one mesh share listeners.admin.token' : `answered ${res.statusCode}`
      return { status: { ...status, status: 'unreachable', error: why } }
    }
    return { status: { ...status, status: 'ok' }, graph: JSON.parse(text) as LocalGraph }
  } catch (err) {
    const e = err as Error
    const why = e.name === 'TimeoutError' ? `no answer within ${opts.timeoutMs} ms` : e.message
    return { status: { ...status, status: 'unreachable', error: why } }
  }
}
