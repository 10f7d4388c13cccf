// Service layer: failover. A chain of service layers (the primary, then its ordered
// failover targets: another subset, another service, another datacenter) that serves from
// the first one with a usable endpoint, and returns to the primary as soon as it has one.
import type { Logger } from 'pino'
import type { ResponseError } from '../errors.js'
import type { EndpointTarget } from '../upstream/endpoint-pool.js'
import type { AdmissionKind, AttemptOutcome, PickRequest, ServiceLayer } from './types.js'

/** A layer of the chain; `degraded` is optional (service layers with outlier detection have it). */
export interface FailoverLayer extends ServiceLayer {
  /**
   * True while the layer would serve only by ignoring ejections (outlier panic): the chain
   * then tries the later targets first, and this one only when none of them can serve.
   */
  degraded?(): boolean
}

export interface ActiveTarget {
  /** 0: the primary. */
  readonly index: number
  readonly target: string
}

/**
 * The service layer of a destination with failover targets. It is a ServiceLayer itself, so
 * the route layer does not know failover exists. `report` goes to the layer that picked the
 * target. Admissions go to the layer serving at the time; a release goes back to a layer
 * holding an admission of that kind (the serving one first), so no layer's count drifts
 * when the chain switches while requests are in flight.
 */
export class FailoverChain implements ServiceLayer {
  private activeIndex = 0
  /** Targets picked from a layer other than the primary, by target (a target belongs to one layer). */
  private readonly owners = new WeakMap<EndpointTarget, FailoverLayer>()
  private readonly admitted: Record<AdmissionKind, number[]>

  constructor (
    readonly layers: readonly FailoverLayer[],
    /** One per layer, for logs and admin (e.g. `describeSelector`). */
    readonly names: readonly string[],
    private readonly log?: Logger
  ) {
    if (layers.length === 0) throw new Error('a failover chain needs a primary')
    this.admitted = { request: layers.map(() => 0), retry: layers.map(() => 0) }
  }

  get service (): string {
    return this.layers[0]!.service
  }

  get current (): unknown {
    return this.layers[0]!.current
  }

  /** Which layer served the last pick. */
  get active (): ActiveTarget {
    return { index: this.activeIndex, target: this.names[this.activeIndex] ?? String(this.activeIndex) }
  }

  /**
   * The first layer that serves normally, else the first in panic. A retry goes to the first
   * such layer that still has an endpoint this request has not tried (Envoy's previous
   * priorities): when the primary's usable endpoints were all tried, its next try moves on.
   */
  pick (request: PickRequest): EndpointTarget | undefined {
    if (request.tried !== undefined && request.tried.size > 0) {
      const target = this.choose(request.untriedOnly === true ? request : { ...request, untriedOnly: true })
      if (target !== undefined || request.untriedOnly === true) return target
    }
    return this.choose(request)
  }

  private choose (request: PickRequest): EndpointTarget | undefined {
    const layers = this.layers
    let firstDegraded = -1
    for (let i = 0; i < layers.length; i++) {
      const layer = layers[i]!
      if (layer.degraded?.() === true) {
        if (firstDegraded < 0) firstDegraded = i
        continue
      }
      const target = layer.pick(request)
      if (target !== undefined) return this.picked(i, target)
    }
    // No layer can serve normally: the first one in panic serves with every endpoint.
    if (firstDegraded >= 0) {
      for (let i = firstDegraded; i < layers.length; i++) {
        const layer = layers[i]!
        if (layer.degraded?.() !== true) continue
        const target = layer.pick(request)
        if (target !== undefined) return this.picked(i, target)
      }
    }
    return undefined
  }

  report (target: EndpointTarget, outcome: AttemptOutcome): void {
    (this.owners.get(target) ?? this.layers[0]!).report(target, outcome)
  }

  admit (kind: AdmissionKind): ResponseError | undefined {
    const i = this.activeIndex
    const err = this.layers[i]!.admit(kind)
    if (err === undefined) this.admitted[kind][i]!++
    return err
  }

  release (kind: AdmissionKind): void {
    const counts = this.admitted[kind]
    let i = this.activeIndex
    if (counts[i] === 0) i = counts.findIndex((n) => n > 0)
    if (i < 0) return
    counts[i]!--
    this.layers[i]!.release(kind)
  }

  /** Whether the layer that served the last pick did so in panic (every layer was degraded). */
  degraded (): boolean {
    return this.layers[this.activeIndex]!.degraded?.() === true
  }

  async known (timeoutMs: number): Promise<void> {
    await Promise.all(this.layers.map(async (l) => { await l.known(timeoutMs) }))
  }

  private picked (i: number, target: EndpointTarget): EndpointTarget {
    if (i > 0) this.owners.set(target, this.layers[i]!)
    if (i !== this.activeIndex) {
      const from = this.names[this.activeIndex]
      this.activeIndex = i
      if (i === 0) this.log?.info({ service: this.service, from }, 'failover: the primary serves again')
      else this.log?.warn({ service: this.service, from, to: this.names[i] }, 'failover: serving from a failover target')
    }
    return target
  }
}
