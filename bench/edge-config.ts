// The edge gateway's benchmark config: a realistic routing table (exact, prefix, template,
// regex, header-, query- and host-matched routes over four services), access log on. Every
// service resolves to the benchmark upstream, so the edge and the Node ceiling forward to
// the same server. The benchmarked request takes a route tried late in match order.
import { stringify } from 'yaml'

/** The request the edge scenario loads (path and query). */
export const EDGE_BENCH_PATH = '/shop/products/42?view=full'
/** The route that request must take (checked against the access log). */
export const EDGE_BENCH_ROUTE = 'shop'

export interface EdgeConfigOptions {
  readonly upstreamPorts: readonly number[]
  readonly httpPort: number
  readonly adminPort: number
  /** Connections per endpoint; the Node ceiling uses the same. */
  readonly poolConnections: number
  /** `services.shop.loadBalancer` (the benchmarked route's service); default: none. */
  readonly shopLoadBalancer?: Record<string, unknown>
  /** `retries` of the benchmarked route; default: none. */
  readonly shopRetries?: Record<string, unknown>
  /** A mirror on the benchmarked route, to service `shop-next` at these ports; default: none. */
  readonly shopMirror?: { readonly ports: readonly number[], readonly settings?: Record<string, unknown> }
  /** `plugins` of the benchmarked route (taking it off the fast path); default: none. */
  readonly shopPlugins?: ReadonlyArray<Record<string, unknown>>
  /** `customPlugins` of the config (a plugin `shopPlugins` names); default: none. */
  readonly customPlugins?: Record<string, { readonly module: string }>
  /** `telemetry.metrics.enabled`; default true (the config's default). */
  readonly metrics?: boolean
  /** `telemetry.tracing`: on, sampling `ratio` of requests, exporting to the OTLP/HTTP `endpoint`; default: off. */
  readonly tracing?: { readonly ratio: number, readonly endpoint: string }
  /**
   * Routes added so that the table has this many in all: prefix + header routes that do not
   * take the benchmarked request, tried before it (a longer prefix), as in a large multi-tenant
   * table; default: none (14 routes).
   */
  readonly totalRoutes?: number
  /** `gateway.workers`; default: none (1, one process serves). */
  readonly workers?: number
}

/** The routes of the table without extras. */
const BASE_ROUTE_COUNT = 14

export function edgeConfigYaml (o: EdgeConfigOptions): string {
  const endpoints = (service: string): Array<Record<string, unknown>> =>
    o.upstreamPorts.map((port, i) => ({ id: `${service}-${i + 1}`, address: '127.0.0.1', port }))
  const services = ['catalog', 'orders', 'users', 'shop']
  const config = {
    gateway: { name: 'bench-edge', mode: 'edge', ...(o.workers !== undefined ? { workers: o.workers } : {}) },
    listeners: {
      http: { address: '127.0.0.1', port: o.httpPort },
      admin: { address: '127.0.0.1', port: o.adminPort }
    },
    discovery: {
      embedded: {
        services: {
          ...Object.fromEntries(services.map((s) => [s, { endpoints: endpoints(s) }])),
          ...(o.shopMirror !== undefined ? { 'shop-next': { endpoints: o.shopMirror.ports.map((port, i) => ({ id: `shop-next-${i + 1}`, address: '127.0.0.1', port })) } } : {})
        }
      }
    },
    services: Object.fromEntries(services.map((s) => [s, {
      connectionPool: { connections: o.poolConnections, keepAliveTimeout: '30s' },
      ...(s === 'shop' && o.shopLoadBalancer !== undefined ? { loadBalancer: o.shopLoadBalancer } : {})
    }])),
    telemetry: { logging: { level: 'info', accessLog: true }, metrics: { enabled: o.metrics ?? true }, ...(o.tracing !== undefined ? { tracing: { enabled: true, sampler: { ratio: o.tracing.ratio }, otlp: { endpoint: o.tracing.endpoint } } } : {}) },
    ...(o.customPlugins !== undefined ? { customPlugins: o.customPlugins } : {}),
    routes: [
      { name: 'healthz', match: { path: { exact: '/healthz' } }, destination: { service: 'catalog' } },
      { name: 'orders-create', match: { path: { exact: '/orders' }, methods: ['POST'] }, destination: { service: 'orders' }, timeout: '5s' },
      { name: 'user-by-id', match: { path: { template: '/users/:id' } }, destination: { service: 'users', rewritePath: '/v1/users/:id' } },
      { name: 'order-item', match: { path: { template: '/orders/:order/items/:item' } }, destination: { service: 'orders' } },
      { name: 'reports', match: { path: { regex: '/reports/(?<year>[0-9]{4})/(?<month>[0-9]{2})' } }, destination: { service: 'catalog', rewritePath: '/v2/reports/:year/:month' } },
      { name: 'legacy-php', match: { path: { regex: '/legacy/.+\\.php' } }, destination: { service: 'catalog' } },
      { name: 'internal-admin', match: { hosts: ['admin.internal.example'], path: { prefix: '/' } }, destination: { service: 'users' } },
      {
        name: 'users-beta',
        match: { path: { prefix: '/users' }, headers: [{ name: 'x-beta', exact: '1' }] },
        destination: { service: 'users' },
        plugins: [{ name: 'headers', options: { response: { set: { 'x-beta-route': 'yes' } } } }]
      },
      { name: 'search', match: { path: { prefix: '/search' }, query: [{ name: 'q', present: true }] }, destination: { service: 'catalog' } },
      { name: 'catalog', match: { path: { prefix: '/catalog' } }, destination: { service: 'catalog', stripPrefix: true } },
      { name: 'orders', match: { path: { prefix: '/orders' } }, destination: { service: 'orders' } },
      { name: 'users', match: { path: { prefix: '/users' } }, destination: { service: 'users' } },
      {
        name: EDGE_BENCH_ROUTE,
        match: { path: { prefix: '/shop' } },
        destination: { service: 'shop' },
        ...(o.shopRetries !== undefined ? { retries: o.shopRetries } : {}),
        ...(o.shopMirror !== undefined ? { mirror: { service: 'shop-next', ...o.shopMirror.settings } } : {}),
        ...(o.shopPlugins !== undefined ? { plugins: o.shopPlugins } : {})
      },
      { name: 'fallback', match: { path: { prefix: '/' } }, destination: { service: 'catalog' } }
    ]
  }
  const extra = Math.max(0, (o.totalRoutes ?? BASE_ROUTE_COUNT) - BASE_ROUTE_COUNT)
  config.routes.unshift(...Array.from({ length: extra }, (_, i) => ({
    name: `tenant-${i}`,
    match: { path: { prefix: `/tenant-${i}` }, headers: [{ name: 'x-tenant', exact: `t${i}` }] },
    destination: { service: 'catalog' }
  })) as typeof config.routes)
  return `# Generated by bench/edge-config.ts for one benchmark run.\n${stringify(config)}`
}
