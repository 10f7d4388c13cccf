// Options of the built-in plugin `load-shedding` (the config checks them without loading
// @fastify/under-pressure).
import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, durationMs, isDuration, timerDurationProblem } from '../../src/config/duration.js'
import type { PluginOptionProblem, PluginOptionsDefinition } from '../types.js'

const duration = (description: string, fallback?: string) => Type.String({ pattern: DURATION_PATTERN, ...(fallback !== undefined ? { default: fallback } : {}), description })

export const LoadSheddingOptionsSchema = Type.Object({
  maxEventLoopDelay: Type.Optional(duration('Shed while the mean event-loop delay of the last sample interval is above this, e.g. `200ms`: the gateway is too busy to take a request in time.')),
  // Utilisation never exceeds 1, so 1 would never shed.
  maxEventLoopUtilization: Type.Optional(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1, description: 'Shed while the event loop was busy more than this share (above 0, below 1) of the last sample interval, e.g. `0.98`.' })),
  maxHeapUsedBytes: Type.Optional(Type.Integer({ minimum: 1, description: 'Shed while the V8 heap in use is above this many bytes.' })),
  maxRssBytes: Type.Optional(Type.Integer({ minimum: 1, description: 'Shed while the resident set size of the process is above this many bytes.' })),
  sampleInterval: duration('How often the measurements are taken (at least 10ms); shedding starts and stops at most this late.', '1s'),
  retryAfter: duration('Sent as `Retry-After` with each refusal (whole seconds, rounded up, at least 1).', '10s')
}, { additionalProperties: false, description: 'Give at least one threshold; the gateway sheds while any is crossed (each start and end of an overload is logged once, and refusals count in the route statistics as `FASTMESH_ERR_OVERLOADED`). Best in the top-level `plugins` list, where it protects every route and keeps the fast path of routes without plugins. The admin listener (admin API, `/live`, `/ready`) is never shed; the traffic listeners serve no health path of their own.' })

export type LoadSheddingOptions = Static<typeof LoadSheddingOptionsSchema>

const THRESHOLDS = ['maxEventLoopDelay', 'maxEventLoopUtilization', 'maxHeapUsedBytes', 'maxRssBytes'] as const

/** Without a threshold it would never shed; nor with one that under-pressure reads as "off". */
function loadSheddingOptionProblems (options: LoadSheddingOptions): PluginOptionProblem[] {
  if (!THRESHOLDS.some((k) => options[k] !== undefined)) return [{ path: '$', message: 'load-shedding needs at least one threshold', hint: `give one or more of ${THRESHOLDS.join(', ')}` }]
  const problems: PluginOptionProblem[] = []
  const delay = options.maxEventLoopDelay
  // under-pressure takes whole milliseconds and 0 switches the check off: `0ms` (or `0.4ms`,
  // which rounds to 0) would silently never shed.
  if (delay !== undefined && isDuration(delay) && durationMs(delay) < 1) problems.push({ path: '$.maxEventLoopDelay', message: `(${delay}) must be at least 1ms`, hint: 'a delay of 0 switches the check off; e.g. 200ms' })
  // The sampler is one setInterval: past the longest timer, Node runs it every millisecond.
  const tooLong = timerDurationProblem(options.sampleInterval)
  if (tooLong !== undefined) problems.push({ path: '$.sampleInterval', message: tooLong, hint: 'e.g. 1s; shedding starts and stops at most this late' })
  return problems
}

export const loadSheddingOptions: PluginOptionsDefinition<typeof LoadSheddingOptionsSchema> = {
  name: 'load-shedding',
  description: 'Refuse requests with 503 and Retry-After, without calling the upstream, while the gateway is past an event-loop, heap or RSS threshold; gateway-wide it keeps the fast path.',
  optionsSchema: LoadSheddingOptionsSchema,
  checkOptions: loadSheddingOptionProblems,
  example: `plugins:                  # top-level: every route, the fast path included
  - name: load-shedding
    options:
      maxEventLoopDelay: 200ms
      maxEventLoopUtilization: 0.98
      maxRssBytes: 1610612736  # 1.5 GiB
      sampleInterval: 500ms
      retryAfter: 5s`
}
