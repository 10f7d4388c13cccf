// Built-in route plugin `rate-limit`: @fastify/rate-limit on the route, keyed by client
// address, verified caller, a header or the whole route, with counters that survive reloads
// (local windows in the plugin state) or are shared by every gateway replica (Redis). Over
// the limit: 429 FASTMESH_ERR_RATE_LIMITED with Retry-After and RateLimit-* headers.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import { durationMs } from '../../src/config/duration.js'
import { fastmeshError } from '../../src/errors.js'
import type { RoutePluginDefinition } from '../types.js'
import { LocalWindows, RedisWindows, type WindowStore } from './stores.js'
import { rateLimitOptions, type RateLimitOptions, type RateLimitOptionsSchema } from './options.js'

export { RateLimitOptionsSchema, type RateLimitOptions } from './options.js'

/** How a request's key is read; `undefined` values share one key. */
function keyOf (keyBy: string, trustForwarded: boolean): (request: FastifyRequest) => string {
  if (keyBy === 'route') return () => 'route'
  if (keyBy === 'caller') return (request) => `caller:${request.fastmesh.caller ?? '-'}`
  if (keyBy.startsWith('header:')) {
    const name = keyBy.slice(7).toLowerCase()
    return (request) => {
      const v = request.headers[name]
      return `header:${Array.isArray(v) ? v.join(',') : v ?? '-'}`
    }
  }
  if (!trustForwarded) return (request) => `client:${request.fastmesh.clientAddress}`
  return (request) => {
    const xff = request.headers['x-forwarded-for']
    const first = (Array.isArray(xff) ? xff[0] : xff)?.split(',')[0]?.trim()
    return `client:${first !== undefined && first !== '' ? first : request.fastmesh.clientAddress}`
  }
}

const rateLimitPlugin: FastifyPluginAsync<RateLimitOptions & Record<string, unknown>> = async (fastify, options) => {
  const route = fastify.fastmesh.route
  const windowMs = durationMs(options.timeWindow)
  const redis = options.store?.redis
  // The store outlives reloads: counters (and the Redis connection) carry on when the config changes.
  const store: WindowStore = redis === undefined
    ? fastify.fastmesh.state('rate-limit:local', () => new LocalWindows())
    : fastify.fastmesh.state(`rate-limit:redis:${redis.url}|${redis.prefix}`, () => new RedisWindows(redis.url, redis.prefix, fastify.log), (s) => { s.close() })
  const timeoutMs = redis !== undefined ? durationMs(redis.timeout) : 0
  const failClosed = redis?.failMode === 'closed'
  // The window length is part of the key: two limits on one route with the same keyBy and
  // different windows (10 a second and 100 a minute per client) each keep their own count.
  const keyPrefix = `${route}:${windowMs}:`

  class RouteStore {
    incr (key: string, cb: (err: Error | null, res?: { current: number, ttl: number }) => void, timeWindow: number, max: number): void {
      store.incr(keyPrefix + key, timeWindow, timeoutMs).then((res) => { cb(null, res) }, (err: Error) => {
        // Redis could not count it in time: the fail mode decides, never a longer wait.
        fastify.fastmesh.countOutcome('rate-limit', failClosed ? 'store_fail_closed' : 'store_fail_open')
        if (failClosed) cb(fastmeshError('RATE_LIMIT_UNAVAILABLE', [route, err.message]))
        else cb(null, { current: 0, ttl: timeWindow })
        void max
      })
    }

    child (): RouteStore { return this }
  }

  // The limiter's hook is added to the route's context as an ordinary onRequest hook, so it
  // runs in the route's plugin order. (`global: true` would attach it to the route itself,
  // where Fastify runs it after every plugin's hooks: a request another plugin refuses first
  // — jwt, ip-filter — must not use anyone's allowance only when rate-limit comes later.)
  // Registered in a context of its own, so each use on a route has its own limiter.
  let limiter: ((request: FastifyRequest, reply: FastifyReply) => Promise<void>) | undefined
  await fastify.register(async (scope) => {
    await scope.register(rateLimit, {
      global: false,
      max: options.max,
      timeWindow: windowMs,
      enableDraftSpec: true,
      keyGenerator: keyOf(options.keyBy, fastify.fastmesh.trustForwardedHeaders),
      store: RouteStore as never,
      errorResponseBuilder: (_request, ctx) => fastmeshError('RATE_LIMITED', [route, ctx.max, options.timeWindow, Math.ceil(ctx.ttl / 1000)])
    })
    limiter = scope.rateLimit() as unknown as typeof limiter
  })
  fastify.addHook('onRequest', limiter!)
}

export const rateLimitDefinition: RoutePluginDefinition<typeof RateLimitOptionsSchema> = { ...rateLimitOptions, plugin: rateLimitPlugin }
