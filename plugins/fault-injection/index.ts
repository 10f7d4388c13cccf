// Built-in route plugin `fault-injection` (as Envoy's fault filter): on a share of the
// requests — optionally only those carrying a header or from given callers — delay them,
// abort them with a status (or a connection reset), or put a fault in place of an upstream
// try (`response`), which the route layer takes as the endpoint's own answer or failure, so
// retries and outlier detection react to it as to a real one. Every injected fault is marked
// with the response header `x-fastmesh-fault` and in the access log.
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { setTimeout as sleep } from 'node:timers/promises'
import { DURATION_PATTERN, durationMs } from '../../src/config/duration.js'
import { fastmeshError } from '../../src/errors.js'
import { defaultRandom, seededRandom, type RandomSource } from '../../src/balancer/random.js'
import type { InjectedFault, RoutePluginDefinition } from '../types.js'

const Percent = Type.Number({ minimum: 0, maximum: 100, description: 'Share of the requests (in %) that get the fault.' })
const Status = Type.Integer({ minimum: 400, maximum: 599, description: 'HTTP status of the fault.' })

export const FaultInjectionOptionsSchema = Type.Object({
  delay: Type.Optional(Type.Object({
    percent: Percent,
    duration: Type.String({ pattern: DURATION_PATTERN, description: 'How long the request is held before it goes on.' })
  }, { additionalProperties: false, description: 'Hold requests before they are forwarded.' })),
  abort: Type.Optional(Type.Object({
    percent: Percent,
    status: Type.Optional(Status),
    reset: Type.Optional(Type.Boolean({ description: 'Close the client\'s connection instead of answering.' }))
  }, { additionalProperties: false, description: 'Answer requests at once with `status` (FASTMESH_ERR_FAULT_INJECTED), or reset the connection; the upstream is not called.' })),
  response: Type.Optional(Type.Object({
    percent: Percent,
    status: Type.Optional(Status),
    reset: Type.Optional(Type.Boolean({ description: 'The try fails as a connection closed before any response byte.' }))
  }, { additionalProperties: false, description: 'Per upstream try: the picked endpoint "answers" `status` or "resets" without being called; retries and outlier detection react as to a real failure.' })),
  when: Type.Optional(Type.Object({
    header: Type.Optional(Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", description: 'Only requests carrying this header (any value).' })),
    callers: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Only inbound calls from these callers: service names or SPIFFE IDs.' }))
  }, { additionalProperties: false, description: 'Which requests may get faults (all when left out).' })),
  seed: Type.Optional(Type.Integer({ minimum: 0, description: 'Seed of the random choices, for a reproducible sequence (tests, chaos runs); default: unseeded.' }))
}, { additionalProperties: false })

export type FaultInjectionOptions = Static<typeof FaultInjectionOptionsSchema>

/** Whether a verified caller (a SPIFFE ID) is one of `callers` (by ID, or by its service name). */
export function callerMatches (caller: string | undefined, callers: readonly string[]): boolean {
  if (caller === undefined) return false
  const service = caller.slice(caller.lastIndexOf('/') + 1)
  return callers.some((c) => c === caller || (!c.includes('/') && c === service))
}

function chosen (random: RandomSource, percent: number): boolean {
  return percent >= 100 || (percent > 0 && random() * 100 < percent)
}

const faultInjectionPlugin: FastifyPluginAsync<FaultInjectionOptions & Record<string, unknown>> = async (fastify, options) => {
  const route = fastify.fastmesh.route
  for (const kind of ['abort', 'response'] as const) {
    const f = options[kind]
    if (f !== undefined && (f.status === undefined) === (f.reset !== true)) {
      throw fastmeshError('CONFIG_INVALID', [`route "${route}"`, `  fault-injection ${kind}: give either status or reset: true`])
    }
  }
  const random = options.seed !== undefined ? seededRandom(options.seed) : defaultRandom
  const delayMs = options.delay !== undefined ? durationMs(options.delay.duration) : 0
  const header = options.when?.header?.toLowerCase()
  const callers = options.when?.callers
  const applies = (request: FastifyRequest): boolean =>
    (header === undefined || request.headers[header] !== undefined) &&
    (callers === undefined || callerMatches(request.fastmesh.caller, callers))

  fastify.addHook('onRequest', async (request, reply) => {
    if (!applies(request)) return
    if (options.delay !== undefined && chosen(random, options.delay.percent)) {
      request.fastmesh.noteFault('delay')
      reply.header('x-fastmesh-fault', 'delay')
      await sleep(delayMs)
    }
    const abort = options.abort
    if (abort !== undefined && chosen(random, abort.percent)) {
      request.fastmesh.noteFault('abort')
      if (abort.reset === true) {
        reply.hijack()
        request.raw.socket?.destroy()
        return
      }
      reply.header('x-fastmesh-fault', 'abort')
      const err = fastmeshError('FAULT_INJECTED', [route, abort.status])
      err.statusCode = abort.status!
      throw err
    }
    const response = options.response
    if (response !== undefined) {
      const fault: InjectedFault = response.reset === true ? { reset: true } : { status: response.status! }
      reply.injectUpstreamFault(() => chosen(random, response.percent) ? fault : undefined)
    }
  })
}

export const faultInjectionDefinition: RoutePluginDefinition<typeof FaultInjectionOptionsSchema> = {
  name: 'fault-injection',
  description: 'Delay or abort a share of the requests, or fail upstream tries, to test how callers and the mesh cope; marked with x-fastmesh-fault.',
  optionsSchema: FaultInjectionOptionsSchema,
  plugin: faultInjectionPlugin,
  example: `plugins:
  - name: fault-injection
    options:
      delay: { percent: 10, duration: 500ms }
      abort: { percent: 5, status: 503 }
      when: { header: x-chaos }`
}
