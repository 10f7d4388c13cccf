// Options of the built-in route plugin `rate-limit` (the config checks them without loading
// @fastify/rate-limit or ioredis).
import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, durationMs, isDuration, timerDurationProblem } from '../../src/config/duration.js'
import type { PluginOptionProblem, PluginOptionsDefinition } from '../types.js'

const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+"

export const RateLimitOptionsSchema = Type.Object({
  max: Type.Integer({ minimum: 1, description: 'Requests allowed per key in each window.' }),
  timeWindow: Type.String({ pattern: DURATION_PATTERN, default: '1m', description: 'Length of a window (a fixed window, starting at a key\'s first request), e.g. `1s`, `1m`.' }),
  keyBy: Type.String({
    pattern: `^(client|caller|route|header:${TOKEN})$`,
    default: 'client',
    description: 'What is counted: `client` (the client address; the first X-Forwarded-For address only when `gateway.trustForwardedHeaders` is on), `caller` (the verified mesh identity of an inbound call; calls without one share one key), `header:<name>` (a request header\'s value; requests without it share one key), `route` (every request of the route together).'
  }),
  store: Type.Optional(Type.Object({
    redis: Type.Object({
      url: Type.String({ pattern: '^rediss?://', description: 'Redis URL, e.g. `redis://127.0.0.1:6379/0`.' }),
      timeout: Type.String({ pattern: DURATION_PATTERN, default: '100ms', description: 'Longest a request waits on Redis; past it, `failMode` decides.' }),
      failMode: Type.Union([Type.Literal('open'), Type.Literal('closed')], { default: 'open', description: '`open`: a request Redis cannot count goes through; `closed`: it gets 503 FASTMESH_ERR_RATE_LIMIT_UNAVAILABLE.' }),
      prefix: Type.String({ default: 'fastmesh-rl:', description: 'Key prefix in Redis (the route name, the window in ms and the key follow).' })
    }, { additionalProperties: false, description: 'Counters in Redis, shared by every gateway replica that uses the same URL and route name.' })
  }, { additionalProperties: false }))
}, { additionalProperties: false })

export type RateLimitOptions = Static<typeof RateLimitOptionsSchema>

function rateLimitOptionProblems (options: RateLimitOptions): PluginOptionProblem[] {
  const problems: PluginOptionProblem[] = []
  if (isDuration(options.timeWindow) && durationMs(options.timeWindow) < 1) problems.push({ path: '$.timeWindow', message: `(${options.timeWindow}) must be at least 1ms`, hint: 'a window of 0 would never count a request' })
  const redis = options.store?.redis
  if (redis === undefined) return problems
  // ioredis parses the URL with WHATWG URL when the store starts: one it refuses (port out of
  // range, broken IPv6) would fail every count at run time. Not echoed: it may hold a password.
  if (!URL.canParse(redis.url)) problems.push({ path: '$.store.redis.url', message: 'is not a valid URL', hint: 'e.g. redis://127.0.0.1:6379/0 or rediss://[::1]:6380: a port 1–65535, an IPv6 host in brackets' })
  const timeout = redis.timeout
  if (isDuration(timeout) && durationMs(timeout) < 1) problems.push({ path: '$.store.redis.timeout', message: `(${timeout}) must be at least 1ms`, hint: 'the longest a request waits on Redis before failMode decides' })
  // A request's wait on Redis is one timer: past the longest, it would fire at once and fail every count.
  const tooLong = timerDurationProblem(timeout)
  if (tooLong !== undefined) problems.push({ path: '$.store.redis.timeout', message: tooLong, hint: 'the longest a request waits on Redis before failMode decides; keep it well under a request timeout' })
  return problems
}

export const rateLimitOptions: PluginOptionsDefinition<typeof RateLimitOptionsSchema> = {
  name: 'rate-limit',
  description: 'Limit requests per client, caller, header value or route in a time window; counters survive reloads, or are shared across gateways in Redis.',
  optionsSchema: RateLimitOptionsSchema,
  checkOptions: rateLimitOptionProblems,
  example: `plugins:
  - name: rate-limit
    options:
      max: 100
      timeWindow: 1m
      keyBy: client
      store: { redis: { url: redis://127.0.0.1:6379/0, timeout: 100ms, failMode: open } }`
}
