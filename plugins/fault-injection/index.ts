// Built-in route plugin `fault-injection` (as Envoy's fault filter): on a share of the
// requests — optionally only those carrying a header or from given callers — delay them,
// abort them with a status (or a connection reset), or put a fault in place of an upstream
// try (`response`), which the route layer takes as the endpoint's own answer or failure, so
// retries and outlier detection react to it as to a real one. Every injected fault is marked
// with the response header `x-fastmesh-fault` and in the access log.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { setTimeout as sleep } from 'node:timers/promises'
import { durationMs } from '../../src/config/duration.js'
import { fastmeshError } from '../../src/errors.js'
import { defaultRandom, seededRandom, type RandomSource } from '../../src/balancer/random.js'
import type { InjectedFault, RoutePluginDefinition } from '../types.js'
import { faultInjectionOptions, type FaultInjectionOptions, type FaultInjectionOptionsSchema } from './options.js'

export { FaultInjectionOptionsSchema, type FaultInjectionOptions } from './options.js'

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

export const faultInjectionDefinition: RoutePluginDefinition<typeof FaultInjectionOptionsSchema> = { ...faultInjectionOptions, plugin: faultInjectionPlugin }
