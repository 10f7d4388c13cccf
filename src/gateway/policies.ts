// Version, policies: the gateway's own gateway-wide policies, in chain order, each deciding
// from the config whether it runs. A new cross-cutting concern (a telemetry signal, an audit
// log) is one entry here, or a plugin with a gateway-policy form listed in the config's
// top-level `plugins` (plugins/types.ts): the version builder does not change. The chain
// runs these first, then the plugins' policies in config order.
import type { Logger } from 'pino'
import type { FastmeshConfig } from '../config/validate.js'
import type { StateRegistry } from '../state/registry.js'
import { routeStatsKind, type RouteStats } from '../telemetry/route-stats.js'
import { accessLogPolicy, type RequestRecorder } from '../telemetry/access-log.js'
import type { GatewayMetrics } from '../telemetry/metrics.js'
import type { GatewayTracing } from '../telemetry/tracing.js'
import type { GatewayPolicy } from './exchange.js'

/** What the gateway's own policies are made from, once per version. */
export interface PolicyBuildContext {
  readonly config: FastmeshConfig
  /** State that outlives versions. */
  readonly state: StateRegistry
  readonly recorder: RequestRecorder
  /** The gateway's metrics (outlive versions); absent in tests that build a version alone. */
  readonly metrics: GatewayMetrics | undefined
  /** The gateway's tracing (providers outlive versions); absent in tests that build a version alone. */
  readonly tracing: GatewayTracing | undefined
  readonly log: Logger
}

/** One of the gateway's own policies: made for a version when its config asks for it. */
export interface BuiltinPolicy {
  readonly name: string
  /** The version's policy, or undefined when the config turns it off. */
  create(ctx: PolicyBuildContext): GatewayPolicy | undefined
}

/** Route statistics (admin `/routes`); each route's slot is looked up on its first request. */
const routeStats: BuiltinPolicy = {
  name: 'route-stats',
  create: ({ state }) => {
    const slots = new Map<string, RouteStats>()
    return {
      name: 'route-stats',
      onEnd (ex) {
        const route = ex.route
        if (route === undefined) return
        let stats = slots.get(route)
        if (stats === undefined) slots.set(route, stats = state.slot(routeStatsKind, route))
        stats.record(ex.status, ex.durationMs, ex.error, ex.attempts)
      }
    }
  }
}

/** Prometheus metrics (`telemetry.metrics`). */
const metrics: BuiltinPolicy = {
  name: 'metrics',
  create: ({ config, metrics }) => config.telemetry.metrics.enabled ? metrics?.policy() : undefined
}

/**
 * OpenTelemetry tracing (`telemetry.tracing`): before the access log, so an exchange's trace
 * and span ids exist when its line is written; absent (free) when tracing is off.
 */
const tracing: BuiltinPolicy = {
  name: 'tracing',
  create: ({ config, tracing }) => tracing?.policy(config.telemetry.tracing)
}

/** The access log (`telemetry.logging.accessLog`: the recorder is a no-op when it is off). */
const accessLog: BuiltinPolicy = {
  name: 'access-log',
  create: ({ recorder }) => accessLogPolicy(recorder)
}

/** In chain order. */
export const builtinPolicies: readonly BuiltinPolicy[] = [routeStats, metrics, tracing, accessLog]

/** The gateway's own policies a version runs. */
export function builtinPoliciesFor (ctx: PolicyBuildContext): GatewayPolicy[] {
  const out: GatewayPolicy[] = []
  for (const p of builtinPolicies) {
    const policy = p.create(ctx)
    if (policy !== undefined) out.push(policy)
  }
  return out
}
