// State layer: per-name state that outlives config versions. Counters and statistics are
// kept under stable names (route name, service selector key, endpoint), so a reload that
// keeps a name keeps its state; the gateway drops the state of names no live or draining
// version uses after each swap or retirement, and an endpoint's state when discovery no
// longer lists it (`forget`).

/**
 * What a state key names; the gateway releases each scope by the names its versions use.
 * `gateway`: one value for the whole gateway (key `gateway`), kept until it stops.
 */
export type StateScope = 'route' | 'service' | 'endpoint' | 'gateway'

/** One kind of state: what it is keyed by and how a fresh one is made. */
export interface StateKind<T> {
  /** For logs and the admin API. */
  readonly name: string
  readonly scope: StateScope
  create(key: string): T
  /** Called when the state of a name is dropped (timers, sockets, ...). */
  dispose?(value: T): void
}

export function stateKind<T> (name: string, scope: StateScope, create: (key: string) => T, dispose?: (value: T) => void): StateKind<T> {
  return { name, scope, create, ...(dispose !== undefined ? { dispose } : {}) }
}

/**
 * The name of an endpoint's state: its service and `address:port` (what metrics and logs call
 * it). Service names hold no spaces, so the two parts stay apart.
 */
export function endpointStateKey (service: string, label: string): string {
  return `${service} ${label}`
}

/** The names each scope's state is kept for; a scope left out keeps all of its state. */
export type InUseNames = Partial<Record<StateScope, ReadonlySet<string>>>

export class StateRegistry {
  /** Per kind, state by name. Values are of the kind's T (see `table`). */
  private readonly tables = new Map<StateKind<unknown>, Map<string, unknown>>()

  /** Typed view of one kind's table: `slot` stores only values `kind.create` made. */
  private table<T> (kind: StateKind<T>): Map<string, T> | undefined {
    return this.tables.get(kind as StateKind<unknown>) as Map<string, T> | undefined
  }

  /**
   * The state of `key` for `kind`, made on first use. Look it up once (when a version is
   * built) and keep the object: it stays the same object for as long as the name is in use.
   */
  slot<T> (kind: StateKind<T>, key: string): T {
    let table = this.table(kind)
    if (table === undefined) {
      table = new Map<string, T>()
      this.tables.set(kind as StateKind<unknown>, table)
    }
    let value = table.get(key)
    if (value === undefined) {
      value = kind.create(key)
      table.set(key, value)
    }
    return value
  }

  /** The state of `key` if there is any; never creates it (for readers such as the admin API). */
  peek<T> (kind: StateKind<T>, key: string): T | undefined {
    return this.table(kind)?.get(key)
  }

  /** Every name with state of `kind`, with its state. */
  entries<T> (kind: StateKind<T>): Array<[string, T]> {
    return [...(this.table(kind) ?? [])]
  }

  /** Every name with state of some kind of `scope` (admin, tests). */
  names (scope: StateScope): Set<string> {
    const out = new Set<string>()
    for (const [kind, table] of this.tables) if (kind.scope === scope) for (const name of table.keys()) out.add(name)
    return out
  }

  /** Keeps the state of `kind` for `keys` only; the rest is dropped (and disposed). */
  retain<T> (kind: StateKind<T>, keys: ReadonlySet<string>): void {
    const table = this.table(kind)
    if (table === undefined) return
    for (const [key, value] of table) {
      if (keys.has(key)) continue
      table.delete(key)
      kind.dispose?.(value)
    }
  }

  /** `retain` for every kind, by its scope: what the gateway calls after swaps and retirements. */
  release (inUse: InUseNames): void {
    for (const kind of this.tables.keys()) {
      const keys = inUse[kind.scope]
      if (keys !== undefined) this.retain(kind, keys)
    }
  }

  /** Drops the state of `names` in every kind of `scope` (and disposes it): names that left, such as an endpoint discovery no longer lists. */
  forget (scope: StateScope, names: readonly string[]): void {
    if (names.length === 0) return
    for (const [kind, table] of this.tables) {
      if (kind.scope !== scope) continue
      for (const name of names) {
        const value = table.get(name)
        if (value === undefined) continue
        table.delete(name)
        kind.dispose?.(value)
      }
    }
  }

  /** Drops everything (gateway stop). */
  clear (): void {
    for (const kind of this.tables.keys()) this.retain(kind, new Set())
    this.tables.clear()
  }
}
