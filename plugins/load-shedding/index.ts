// Built-in plugin `load-shedding`: while the gateway is past a threshold of event-loop delay,
// event-loop utilisation, heap used or RSS (measured by @fastify/under-pressure), requests get
// 503 FASTMESH_ERR_OVERLOADED with Retry-After at once, and the upstream is never called. In
// the top-level `plugins` list it runs as a gateway policy, so routes without plugins keep
// their fast path and are protected too; on a route it is an ordinary route plugin. The
// admin listener (admin API, /live, /ready) is another server and is never shed.
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import { durationMs } from '../../src/config/duration.js'
import { fastmeshError } from '../../src/errors.js'
import type { GatewayPolicyInstance, Refusal, RoutePluginDefinition } from '../types.js'
import { acquirePressure, type PressureThresholds } from './pressure.js'
import { loadSheddingOptions, type LoadSheddingOptions, type LoadSheddingOptionsSchema } from './options.js'

export { LoadSheddingOptionsSchema, type LoadSheddingOptions } from './options.js'


/** The thresholds of `options`; throws CONFIG_INVALID when none is given (it would never shed). */
function thresholdsOf (options: LoadSheddingOptions, where: string): PressureThresholds {
  const t: PressureThresholds = {
    ...(options.maxEventLoopDelay !== undefined ? { maxEventLoopDelayMs: durationMs(options.maxEventLoopDelay) } : {}),
    ...(options.maxEventLoopUtilization !== undefined ? { maxEventLoopUtilization: options.maxEventLoopUtilization } : {}),
    ...(options.maxHeapUsedBytes !== undefined ? { maxHeapUsedBytes: options.maxHeapUsedBytes } : {}),
    ...(options.maxRssBytes !== undefined ? { maxRssBytes: options.maxRssBytes } : {}),
    sampleIntervalMs: Math.max(10, durationMs(options.sampleInterval))
  }
  if (Object.keys(t).length === 1) throw fastmeshError('CONFIG_INVALID', [where, '  load-shedding needs at least one threshold: maxEventLoopDelay, maxEventLoopUtilization, maxHeapUsedBytes or maxRssBytes'])
  return t
}

/** Refuses requests while the gateway is overloaded; one refusal per overload episode, made when it starts. */
interface Shedder {
  check(): Refusal | undefined
  close(): Promise<void>
}

async function openShedder (options: LoadSheddingOptions, where: string, log: FastifyBaseLogger): Promise<Shedder> {
  const thresholds = thresholdsOf(options, where)
  const retryAfter = String(Math.max(1, Math.ceil(durationMs(options.retryAfter) / 1000)))
  const pressure = await acquirePressure(thresholds, log)
  let episode = -1
  let refusal: Refusal | undefined
  return {
    check () {
      if (!pressure.overloaded()) return undefined
      if (episode !== pressure.episode || refusal === undefined) {
        episode = pressure.episode
        refusal = Object.assign(fastmeshError('OVERLOADED', [pressure.reason, retryAfter]), { headers: { 'retry-after': retryAfter } })
      }
      return refusal
    },
    close: async () => { await pressure.release() }
  }
}

const loadSheddingPlugin: FastifyPluginAsync<LoadSheddingOptions & Record<string, unknown>> = async (fastify, options) => {
  const route = fastify.fastmesh.route
  const shedder = await openShedder(options, `route "${route}"`, fastify.log.child({ plugin: 'load-shedding', route }))
  fastify.addHook('onClose', async () => { await shedder.close() })
  fastify.addHook('onRequest', (_request, reply, done) => {
    const refusal = shedder.check()
    if (refusal === undefined) { done(); return }
    void reply.header('retry-after', refusal.headers!['retry-after'])
    done(refusal as Error & Refusal)
  })
}

export const loadSheddingDefinition: RoutePluginDefinition<typeof LoadSheddingOptionsSchema> = {
  ...loadSheddingOptions,
  plugin: loadSheddingPlugin,
  async gatewayPolicy (options, context): Promise<GatewayPolicyInstance> {
    const shedder = await openShedder(options, '$.plugins (load-shedding)', context.log)
    return { onRequest: () => shedder.check(), close: async () => { await shedder.close() } }
  }
}
