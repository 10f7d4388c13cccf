// State layer: per-name state that outlives config versions. Counters and statistics are
// kept under stable names (route name, service selector key, endpoint id), so a reload that
// keeps a name keeps its state; the gateway drops the state of names no live or draining
// version uses after each swap or retirement.

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

  /** Drops everything (gateway stop). */
  clear (): void {
    for (const kind of this.tables.keys()) this.retain(kind, new Set())
    this.tables.clear()
  }
}
