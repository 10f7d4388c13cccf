// The config keys a reload cannot apply (read once, when the gateway starts), and the config
// in effect after a reload: the new config with those keys as the gateway started with them.
import type { FastmeshConfig } from './validate.js'

/**
 * Read only at start: bound sockets and their limits, the Consul client and watches, the
 * mesh identity, TLS and authorizer, the local services' listeners and registrations.
 */
export const RESTART_ONLY: readonly string[] = [
  'gateway.mode',
  'gateway.name',
  'gateway.workers',
  // Bound sockets; the shared outbound listener's `identity` is read per version.
  'listeners.http',
  'listeners.admin',
  'listeners.outbound.address',
  'listeners.outbound.port',
  'listeners.inbound',
  'limits.maxHeaderBytes',
  'limits.keepAliveTimeout',
  'limits.requestTimeout',
  'limits.headerTimeout',
  'discovery.consul',
  'mesh',
  'localServices'
]

type Doc = Record<string, unknown>

function isMap (v: unknown): v is Doc {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function get (doc: unknown, path: string): unknown {
  let cur = doc
  for (const part of path.split('.')) cur = isMap(cur) ? cur[part] : undefined
  return cur
}

function set (doc: Doc, path: string, value: unknown): void {
  const parts = path.split('.')
  let cur = doc
  for (const part of parts.slice(0, -1)) {
    if (!isMap(cur[part])) cur[part] = {}
    cur = cur[part] as Doc
  }
  const last = parts[parts.length - 1]!
  if (value === undefined) Reflect.deleteProperty(cur, last)
  else cur[last] = structuredClone(value)
}

function same (a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

/** Leaf paths under `path` where `a` and `b` differ (arrays compare whole). */
function differences (a: unknown, b: unknown, path: string, out: string[]): void {
  if (same(a, b)) return
  if (isMap(a) && isMap(b)) {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) differences(a[key], b[key], `${path}.${key}`, out)
    return
  }
  out.push(path)
}

/** The keys (as dotted paths, e.g. `listeners.http.port`) that changed but wait for a restart. */
export function pendingRestart (started: FastmeshConfig, latest: FastmeshConfig): string[] {
  const out: string[] = []
  for (const path of RESTART_ONLY) differences(get(started, path), get(latest, path), path, out)
  return out
}

/** `latest` with every restart-only key as in `started`; `latest` itself when none changed. */
export function configInEffect (started: FastmeshConfig, latest: FastmeshConfig): FastmeshConfig {
  if (RESTART_ONLY.every((path) => same(get(started, path), get(latest, path)))) return latest
  const out = structuredClone(latest) as unknown as Doc
  for (const path of RESTART_ONLY) set(out, path, get(started, path))
  return out as unknown as FastmeshConfig
}
