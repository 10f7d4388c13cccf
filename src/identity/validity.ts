// The one leaf-validity check and the renewal plan built on it: is a certificate valid at a
// given time, is it close enough to expiry to warn, and when should a self-issuing provider
// replace it. Pure functions of the certificate's window and a clock, so tests pass the time.

export interface ValidityWindow {
  readonly notBefore: Date
  readonly notAfter: Date
}

/** `expiring`: valid, but within the warning window before notAfter. */
export type LeafState = 'not-yet-valid' | 'valid' | 'expiring' | 'expired'

/** Valid from notBefore through notAfter inclusive, as X.509 (RFC 5280 §4.1.2.5) and OpenSSL read it. */
export function leafState (w: ValidityWindow, now: number = Date.now(), warnBeforeMs = 0): LeafState {
  if (now < w.notBefore.getTime()) return 'not-yet-valid'
  if (now > w.notAfter.getTime()) return 'expired'
  if (now >= w.notAfter.getTime() - warnBeforeMs) return 'expiring'
  return 'valid'
}

export function isValidAt (w: ValidityWindow, now: number = Date.now()): boolean {
  const s = leafState(w, now)
  return s === 'valid' || s === 'expiring'
}

export interface RenewalPolicy {
  /** Replace a leaf this long before it expires. */
  readonly renewBeforeMs: number
  /** Warn (when it cannot be replaced) this long before it expires. */
  readonly warnBeforeMs: number
  /** Lifetime of leaves the provider issues itself. */
  readonly leafValidityMs: number
}

/** Never renew the same leaf more often than this, whatever the windows say (no hot loop). */
export const MIN_RENEW_INTERVAL_MS = 1000

/**
 * The policy from config: renewBefore defaults to a third of the leaf lifetime (renewal at
 * two thirds, as Consul's agent does), and is capped at half of it, so a fresh leaf is never
 * due at once (that would reissue in a loop).
 */
export function renewalPolicy (opts: { leafValidityMs: number, renewBeforeMs?: number | undefined, warnBeforeMs: number }): RenewalPolicy & { capped: boolean } {
  const wanted = opts.renewBeforeMs ?? Math.floor(opts.leafValidityMs / 3)
  const cap = Math.floor(opts.leafValidityMs / 2)
  return { leafValidityMs: opts.leafValidityMs, renewBeforeMs: Math.min(wanted, cap), warnBeforeMs: opts.warnBeforeMs, capped: wanted > cap }
}

/** When a leaf should be replaced: renewBefore ahead of expiry. */
export function renewAt (w: ValidityWindow, policy: Pick<RenewalPolicy, 'renewBeforeMs'>): Date {
  return new Date(w.notAfter.getTime() - policy.renewBeforeMs)
}

/** When to start warning about a leaf nobody here can replace. */
export function warnAt (w: ValidityWindow, policy: Pick<RenewalPolicy, 'warnBeforeMs'>): Date {
  return new Date(w.notAfter.getTime() - policy.warnBeforeMs)
}

export type RenewalDecision =
  | { readonly action: 'issue', readonly why: 'missing' | 'invalid' | 'due' | 'expired' | 'previous-ca' }
  | { readonly action: 'wait', readonly until: Date }

/**
 * What a provider that holds the CA key does with one service's leaf at `now`: issue one
 * (missing, refused, expired, due, or signed by a replaced CA), or wait until it is due.
 */
export function renewalDecision (leaf: (ValidityWindow & { fromCurrentCa?: boolean }) | 'missing' | 'invalid', now: number, policy: Pick<RenewalPolicy, 'renewBeforeMs'>): RenewalDecision {
  if (leaf === 'missing' || leaf === 'invalid') return { action: 'issue', why: leaf }
  if (leafState(leaf, now) === 'expired') return { action: 'issue', why: 'expired' }
  if (leaf.fromCurrentCa === false) return { action: 'issue', why: 'previous-ca' }
  const at = renewAt(leaf, policy)
  if (now >= at.getTime()) return { action: 'issue', why: 'due' }
  return { action: 'wait', until: at }
}
