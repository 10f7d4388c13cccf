// Inbound authorization: may this verified caller call this local service (with this
// method and path)? Rules from config first; then Consul intentions or the default action.
// Every decision is counted by source, destination and result.
import type { Logger } from 'pino'
import type { ConsulClient } from '../discovery/consul/client.js'

export interface AuthorizationRule {
  readonly source: string
  readonly destination: string
  readonly action: 'allow' | 'deny'
  readonly pathPrefixes?: readonly string[]
  readonly methods?: readonly string[]
}

export interface AuthorizationRequest {
  /** Caller service name from its verified SPIFFE ID. */
  readonly source: string
  readonly sourceUri: string
  readonly destination: string
  readonly method: string
  readonly path: string
}

export interface Decision {
  readonly allowed: boolean
  /** Which rule or source decided, for logs and the 403 body. */
  readonly reason: string
}

function specificity (r: AuthorizationRule): number {
  return (r.source !== '*' ? 8 : 0) + (r.destination !== '*' ? 4 : 0) + (r.pathPrefixes !== undefined || r.methods !== undefined ? 2 : 0) + (r.action === 'deny' ? 1 : 0)
}

function applies (r: AuthorizationRule, q: AuthorizationRequest): boolean {
  if (r.source !== '*' && r.source !== q.source) return false
  if (r.destination !== '*' && r.destination !== q.destination) return false
  if (r.methods !== undefined && !r.methods.includes(q.method)) return false
  if (r.pathPrefixes !== undefined && !r.pathPrefixes.some((p) => q.path === p || q.path.startsWith(p.endsWith('/') ? p : p + '/') || q.path.startsWith(p + '?'))) return false
  return true
}

export interface AuthorizerOptions {
  readonly rules: readonly AuthorizationRule[]
  readonly provider: 'consul' | 'rules'
  readonly defaultAction: 'allow' | 'deny'
  readonly cacheTtlMs: number
  readonly consul: ConsulClient | undefined
  readonly log: Logger
}

export class Authorizer {
  /** Most specific first (Consul's intention precedence, plus L7 and deny-wins tie-breaks). */
  private readonly rules: AuthorizationRule[]
  private readonly cache = new Map<string, { decision: Decision, expires: number }>()
  readonly counts = new Map<string, number>()

  constructor (private readonly opts: AuthorizerOptions) {
    this.rules = [...opts.rules].sort((a, b) => specificity(b) - specificity(a))
  }

  async authorize (q: AuthorizationRequest): Promise<Decision> {
    const decision = await this.decide(q)
    const key = `${q.source}|${q.destination}|${decision.allowed ? 'allow' : 'deny'}`
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1)
    return decision
  }

  /** Decision counts as rows, for the admin API (and metrics later). */
  countRows (): Array<{ source: string, destination: string, result: string, count: number }> {
    return [...this.counts].map(([k, count]) => {
      const [source, destination, result] = k.split('|') as [string, string, string]
      return { source, destination, result, count }
    })
  }

  private async decide (q: AuthorizationRequest): Promise<Decision> {
    for (const r of this.rules) {
      if (applies(r, q)) return { allowed: r.action === 'allow', reason: `rule ${r.source} -> ${r.destination} ${r.action}` }
    }
    const consul = this.opts.consul
    if (this.opts.provider === 'rules' || consul === undefined) {
      return { allowed: this.opts.defaultAction === 'allow', reason: `default action ${this.opts.defaultAction}` }
    }
    const key = `${q.destination}|${q.sourceUri}`
    const now = Date.now()
    const cached = this.cache.get(key)
    if (cached !== undefined && cached.expires > now) return cached.decision
    try {
      const r = await consul.agentRequest<{ Authorized: boolean, Reason: string }>('POST', '/agent/connect/authorize', {
        body: { Target: q.destination, ClientCertURI: q.sourceUri }
      })
      const decision = { allowed: r.data.Authorized, reason: `consul: ${r.data.Reason}` }
      if (this.cache.size > 10_000) this.cache.clear()
      this.cache.set(key, { decision, expires: now + this.opts.cacheTtlMs })
      return decision
    } catch (err) {
      // Unreachable Consul: a recent answer may still stand; otherwise fail closed.
      if (cached !== undefined && cached.expires > now - 60_000) return cached.decision
      this.opts.log.warn({ err: (err as Error).message, source: q.source, destination: q.destination }, 'Consul authorization failed; denying')
      return { allowed: false, reason: 'consul unreachable (fail closed)' }
    }
  }
}
