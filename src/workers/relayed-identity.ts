// A worker's mesh identity: the primary's provider fetches and renews the roots and leaves
// (one Connect CA client however many workers); a worker holds the copies the primary
// sends at start and after every change, and serves TLS with them.
import type { IdentityChange, IdentityProvider, LeafCertificate, TrustBundle } from '../identity/types.js'
import type { FromWorker, IdentityState } from './messages.js'

export class RelayedIdentityProvider implements IdentityProvider {
  readonly kind: string
  private bundle: TrustBundle
  private readonly leaves = new Map<string, LeafCertificate>()
  private readonly listeners = new Set<(change: IdentityChange) => void>()
  /** Leaves asked of the primary (`ensure`) and not yet received. */
  private readonly waiting = new Map<string, Array<() => void>>()

  constructor (state: IdentityState, private readonly send: (m: FromWorker) => void) {
    this.kind = state.kind
    this.bundle = state.roots
    for (const leaf of state.leaves) this.leaves.set(leaf.service, leaf)
  }

  /** The identity the primary holds now: what changed is told to listeners. */
  receive (state: IdentityState): void {
    const changes: IdentityChange[] = []
    if (JSON.stringify(state.roots.rootsPem) !== JSON.stringify(this.bundle.rootsPem)) changes.push({ kind: 'roots' })
    this.bundle = state.roots
    for (const leaf of state.leaves) {
      if (this.leaves.get(leaf.service)?.serial !== leaf.serial) changes.push({ kind: 'leaf', service: leaf.service })
      this.leaves.set(leaf.service, leaf)
      const waiters = this.waiting.get(leaf.service)
      if (waiters !== undefined) {
        this.waiting.delete(leaf.service)
        for (const w of waiters) w()
      }
    }
    for (const change of changes) for (const l of this.listeners) l(change)
  }

  /** The primary started the provider before forking: what it holds is here already. */
  async start (): Promise<void> {}

  async ensure (service: string): Promise<void> {
    if (this.leaves.has(service)) return
    await new Promise<void>((resolve) => {
      const waiters = this.waiting.get(service)
      if (waiters !== undefined) { waiters.push(resolve); return }
      this.waiting.set(service, [resolve])
      this.send({ t: 'ensure', service })
    })
  }

  roots (): TrustBundle {
    return this.bundle
  }

  leaf (service: string): LeafCertificate | undefined {
    return this.leaves.get(service)
  }

  onChange (listener: (change: IdentityChange) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  async close (): Promise<void> {
    this.listeners.clear()
  }
}
