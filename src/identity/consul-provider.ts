// Identity from Consul Connect's CA: roots from /v1/agent/connect/ca/roots and one leaf per
// service from /v1/agent/connect/ca/leaf/<service>, each kept fresh by a blocking query
// (the agent renews leaves before they expire and answers the blocked query then).
import { EventEmitter } from 'node:events'
import { X509Certificate } from 'node:crypto'
import type { Logger } from 'pino'
import { BlockingLoop } from '../discovery/consul/blocking-loop.js'
import { Cancellable, type ConsulClient } from '../discovery/consul/client.js'
import { fastmeshError } from '../errors.js'
import type { IdentityChange, IdentityProvider, LeafCertificate, TrustBundle } from './types.js'

interface RootsResponse {
  TrustDomain: string
  ActiveRootID: string
  Roots: Array<{ ID: string, RootCert: string, IntermediateCerts?: string[] | null, Active: boolean, NotAfter?: string }>
}

interface LeafResponse {
  SerialNumber: string
  CertPEM: string
  PrivateKeyPEM: string
  Service: string
  ServiceURI: string
  ValidAfter: string
  ValidBefore: string
}

export class ConsulIdentityProvider implements IdentityProvider {
  readonly kind = 'consul'
  private bundle: TrustBundle = { trustDomain: '', rootsPem: [], notAfter: undefined }
  private readonly leaves = new Map<string, LeafCertificate>()
  private readonly loops = new Map<string, BlockingLoop<unknown>>()
  private readonly events = new EventEmitter()
  private rootsLoop: BlockingLoop<RootsResponse> | undefined
  private firstRoots: Promise<void> | undefined

  constructor (private readonly client: ConsulClient, private readonly log: Logger) {
    this.events.setMaxListeners(0)
  }

  async start (services: readonly string[], timeoutMs = 15_000): Promise<void> {
    this.firstRoots ??= new Promise<void>((resolve) => {
      this.rootsLoop = new BlockingLoop<RootsResponse>({
        makeContext: () => new Cancellable(),
        fetch: async (index, ctx) => await this.client.agentRequest<RootsResponse>('GET', '/agent/connect/ca/roots', { index, wait: '5m', ctx }),
        onChange: (roots) => {
          const rootsPem = roots.Roots.map((r) => r.RootCert.trim() + '\n')
          const notAfter = roots.Roots.map((r) => new X509Certificate(r.RootCert).validTo).map((d) => new Date(d)).sort((a, b) => a.getTime() - b.getTime())[0]
          this.bundle = Object.freeze({ trustDomain: roots.TrustDomain.toLowerCase(), rootsPem: Object.freeze(rootsPem), notAfter })
          this.log.info({ trustDomain: roots.TrustDomain, roots: roots.Roots.map((r) => r.ID), active: roots.ActiveRootID }, 'Connect CA roots updated')
          this.emit({ kind: 'roots' })
          resolve()
        },
        onError: (err, attempt, retryInMs) => {
          if (attempt === 1 || attempt % 10 === 0) this.log.warn({ err: err.message, retryInMs }, 'fetching Connect CA roots failed')
        }
      })
      this.rootsLoop.start()
    })
    await withTimeout(Promise.all([this.firstRoots, ...services.map(async (s) => { await this.ensure(s) })]), timeoutMs,
      () => fastmeshError('IDENTITY_UNAVAILABLE', [services.filter((s) => !this.leaves.has(s)).join(', ') || 'CA roots', 'consul', `no answer from ${this.client.settings.url} within ${timeoutMs} ms`]))
  }

  async ensure (service: string): Promise<void> {
    if (this.leaves.has(service)) return
    let loop = this.loops.get(service)
    if (loop === undefined) {
      const ready = new Promise<void>((resolve) => {
        loop = new BlockingLoop<unknown>({
          makeContext: () => new Cancellable(),
          fetch: async (index, ctx) => await this.client.agentRequest<LeafResponse>('GET', `/agent/connect/ca/leaf/${encodeURIComponent(service)}`, { index, wait: '5m', ctx }),
          onChange: (data) => {
            const r = data as LeafResponse
            const prev = this.leaves.get(service)
            if (prev?.serial === r.SerialNumber) return
            this.leaves.set(service, Object.freeze({
              service,
              spiffeId: r.ServiceURI,
              certPem: r.CertPEM,
              keyPem: r.PrivateKeyPEM,
              notBefore: new Date(r.ValidAfter),
              notAfter: new Date(r.ValidBefore),
              serial: r.SerialNumber
            }))
            this.log.info({ service, serial: r.SerialNumber, notAfter: r.ValidBefore }, prev === undefined ? 'leaf certificate issued' : 'leaf certificate rotated')
            this.emit({ kind: 'leaf', service })
            resolve()
          },
          onError: (err, attempt, retryInMs) => {
            if (attempt === 1 || attempt % 10 === 0) this.log.warn({ service, err: err.message, retryInMs }, 'fetching a leaf certificate failed')
          }
        })
      })
      this.loops.set(service, loop!)
      loop!.start()
      await ready
      return
    }
    await new Promise<void>((resolve) => {
      const off = this.onChange((c) => { if (c.kind === 'leaf' && c.service === service) { off(); resolve() } })
    })
  }

  roots (): TrustBundle {
    return this.bundle
  }

  leaf (service: string): LeafCertificate | undefined {
    return this.leaves.get(service)
  }

  onChange (listener: (change: IdentityChange) => void): () => void {
    this.events.on('change', listener)
    return () => { this.events.off('change', listener) }
  }

  async close (): Promise<void> {
    this.events.removeAllListeners()
    await Promise.all([this.rootsLoop?.stop(), ...[...this.loops.values()].map(async (l) => { await l.stop() })])
  }

  private emit (change: IdentityChange): void {
    this.events.emit('change', change)
  }
}

async function withTimeout<T> (p: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(error()) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}
