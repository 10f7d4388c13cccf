// FilesIdentityProvider: identities from a directory written by `fastmesh certs` (local-ca.ts):
// roots from ca.pem plus roots/*.pem, a leaf per service from <service>.pem + <service>-key.pem.
// The directory is watched (debounced) and re-read on change; a new leaf or root set that does
// not check out is refused with a log line and the previous one keeps serving.
// When the CA key (ca-key.pem) is in the directory, the provider issues missing leaves and
// renews them before they expire, writing them there as `fastmesh certs issue` would; without
// it, it warns from `warnBefore` ahead of expiry. Both show in renewalStatus() (admin /certs).
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { watch, type FSWatcher } from 'node:fs'
import { access, readFile, readdir } from 'node:fs/promises'
import { EventEmitter } from 'node:events'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { fastmeshError, type FastmeshError } from '../errors.js'
import type { IdentityChange, IdentityProvider, LeafCertificate, LeafRenewalStatus, TrustBundle } from './types.js'
import { CA_FILE, CA_KEY_FILE, ROOTS_DIR, assertServiceName, caTrustDomain, issueLeaf, leafCertFile, leafKeyFile } from './local-ca.js'
import { spiffeIdentity } from './san.js'
import { MIN_RENEW_INTERVAL_MS, leafState, renewAt, renewalDecision, renewalPolicy, warnAt, type RenewalPolicy } from './validity.js'

export interface FilesIdentityProviderOptions {
  /** The directory `fastmesh certs init` / `issue` wrote. */
  dir: string
  log: Logger
  /** Directory events within this window are one reload. Default 100 ms. */
  debounceMs?: number
  /** While start() or ensure() waits for a missing file: how often to look again besides watch events. Default 250 ms. */
  pollMs?: number
  /** A full re-read this often, in case the filesystem loses watch events (network and bind mounts). Default 60 s; 0 turns it off. */
  resyncMs?: number
  /** Issue and renew leaves when ca-key.pem is in the directory. Default true. */
  selfIssue?: boolean
  /** Lifetime of leaves this provider issues. Default 72 h. */
  leafValidityMs?: number
  /** Renew this long before expiry. Default a third of leafValidityMs; capped at half of it. */
  renewBeforeMs?: number
  /** Warn this long before a leaf expires (when it is not renewed by then). Default 24 h. */
  warnBeforeMs?: number
}

const HOUR = 3_600_000
/** Longest single timer: a later event is re-planned on wake-up (setTimeout overflows past 2^31 ms). */
const MAX_TIMER_MS = 6 * HOUR
/** Backoff after a failed issue: 1 s, 2 s, 4 s ... up to this. */
const MAX_RETRY_MS = 60_000

interface RenewalState {
  renewals: number
  failures: number
  lastError: string | undefined
  /** No issue attempt before this (backoff after failures, MIN_RENEW_INTERVAL_MS after success). */
  notBefore: number
  warnings: number
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

function splitPem (text: string): string[] {
  return (text.match(PEM_CERT) ?? []).map((p) => p + '\n')
}

interface Roots {
  readonly bundle: TrustBundle
  readonly certs: readonly X509Certificate[]
}

/** Why an item could not be (re)loaded; `key` is the text it was found in, so one refusal is logged once. */
class ProblemResult {
  constructor (readonly err: FastmeshError, readonly key: string) {}
}

function problemResult (err: FastmeshError, key: string): ProblemResult {
  return new ProblemResult(err, key)
}

function sameLeaf (a: LeafCertificate | undefined, b: LeafCertificate): boolean {
  return a !== undefined && a.certPem === b.certPem && a.keyPem === b.keyPem
}

export class FilesIdentityProvider implements IdentityProvider {
  readonly kind = 'files'
  readonly dir: string
  private readonly log: Logger
  private readonly debounceMs: number
  private readonly pollMs: number
  private readonly resyncMs: number
  private readonly services = new Set<string>()
  private readonly leaves = new Map<string, LeafCertificate>()
  private readonly problems = new Map<string, ProblemResult>()
  private readonly listeners = new Set<(change: IdentityChange) => void>()
  private readonly events = new EventEmitter()
  private rootsState: Roots | undefined
  private dirWatcher: FSWatcher | undefined
  private rootsWatcher: FSWatcher | undefined
  private debounceTimer: NodeJS.Timeout | undefined
  private resyncTimer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private again = false
  private closed = false
  private readonly expiryWarned = new Set<string>()
  private readonly selfIssue: boolean
  readonly policy: RenewalPolicy
  private readonly renewal = new Map<string, RenewalState>()
  /** Whether ca-key.pem was present at the last reload (the provider then renews). */
  private hasCaKey = false
  private renewTimer: NodeJS.Timeout | undefined

  constructor (opts: FilesIdentityProviderOptions) {
    this.dir = opts.dir
    this.log = opts.log
    this.debounceMs = opts.debounceMs ?? 100
    this.pollMs = opts.pollMs ?? 250
    this.resyncMs = opts.resyncMs ?? 60_000
    this.selfIssue = opts.selfIssue ?? true
    const policy = renewalPolicy({ leafValidityMs: opts.leafValidityMs ?? 72 * HOUR, renewBeforeMs: opts.renewBeforeMs, warnBeforeMs: opts.warnBeforeMs ?? 24 * HOUR })
    if (policy.capped) this.log.warn({ renewBeforeMs: opts.renewBeforeMs, leafValidityMs: policy.leafValidityMs }, `renewBefore is more than half the leaf validity; renewing ${policy.renewBeforeMs} ms before expiry instead`)
    this.policy = { leafValidityMs: policy.leafValidityMs, renewBeforeMs: policy.renewBeforeMs, warnBeforeMs: policy.warnBeforeMs }
    this.events.setMaxListeners(0)
  }

  async start (services: readonly string[], timeoutMs = 0): Promise<void> {
    for (const s of services) assertServiceName(s)
    for (const s of services) this.services.add(s)
    this.closed = false
    this.watchDir()
    if (this.resyncMs > 0 && this.resyncTimer === undefined) {
      this.resyncTimer = setInterval(() => { void this.reload() }, this.resyncMs)
      this.resyncTimer.unref()
    }
    try {
      await this.waitFor(['roots', ...services], timeoutMs)
    } catch (err) {
      this.stopWatching()
      throw err
    }
  }

  async ensure (service: string): Promise<void> {
    assertServiceName(service)
    this.services.add(service)
    if (this.leaves.has(service)) return
    await this.waitFor([service], 0)
  }

  roots (): TrustBundle {
    if (this.rootsState === undefined) throw new Error('FilesIdentityProvider.roots() called before start() resolved')
    return this.rootsState.bundle
  }

  leaf (service: string): LeafCertificate | undefined {
    return this.leaves.get(service)
  }

  onChange (listener: (change: IdentityChange) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** `self` while ca-key.pem is in the directory (and selfIssue is on), else `manual`. */
  renewalStatus (service: string): LeafRenewalStatus | undefined {
    if (!this.services.has(service)) return undefined
    const leaf = this.leaves.get(service)
    const r = this.renewalOf(service)
    const self = this.selfIssuing
    return {
      renewal: self ? 'self' : 'manual',
      ...(self && leaf !== undefined ? { renewAt: renewAt(leaf, this.policy) } : {}),
      ...(leaf !== undefined ? { warnAt: warnAt(leaf, this.policy) } : {}),
      renewals: r.renewals,
      failures: r.failures,
      ...(r.lastError !== undefined ? { lastError: r.lastError } : {}),
      warnings: r.warnings
    }
  }

  private get selfIssuing (): boolean {
    return this.selfIssue && this.hasCaKey
  }

  private renewalOf (service: string): RenewalState {
    let r = this.renewal.get(service)
    if (r === undefined) {
      r = { renewals: 0, failures: 0, lastError: undefined, notBefore: 0, warnings: 0 }
      this.renewal.set(service, r)
    }
    return r
  }

  async close (): Promise<void> {
    this.closed = true
    this.stopWatching()
    this.listeners.clear()
    await this.running
  }

  /** The reason `item` ('roots' or a service) is not (or no longer freshly) available, if any. */
  problem (item: string): FastmeshError | undefined {
    return this.problems.get(item)?.err
  }

  private ready (item: string): boolean {
    return item === 'roots' ? this.rootsState !== undefined : this.leaves.has(item)
  }

  /** Re-reads until every item is available, or rejects with the first one's problem after timeoutMs. */
  private async waitFor (items: readonly string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + Math.max(0, timeoutMs)
    for (;;) {
      await this.reload()
      const missing = items.filter((i) => !this.ready(i))
      if (missing.length === 0) return
      const left = deadline - Date.now()
      if (left <= 0 || this.closed) {
        const first = missing[0]!
        throw this.problems.get(first)?.err ?? fastmeshError('IDENTITY_MISSING', [first === 'roots' ? join(this.dir, CA_FILE) : join(this.dir, leafCertFile(first)), this.command(first)])
      }
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer)
          this.events.off('reloaded', done)
          resolve()
        }
        const timer = setTimeout(done, Math.min(this.pollMs, left))
        this.events.once('reloaded', done)
      })
    }
  }

  private command (item: string): string {
    return item === 'roots' ? `fastmesh certs init --dir ${this.dir}` : `fastmesh certs issue --dir ${this.dir} --service ${item}`
  }

  private watchDir (): void {
    if (this.closed) return
    if (this.dirWatcher === undefined) {
      try {
        this.dirWatcher = watch(this.dir, { persistent: false }, () => { this.scheduleReload() })
        this.dirWatcher.on('error', (err) => {
          this.log.warn({ err, dir: this.dir }, 'identity directory watch failed; will retry')
          this.dirWatcher?.close()
          this.dirWatcher = undefined
        })
      } catch {
        // The directory does not exist (yet): polling and the next reload try again.
      }
    }
    if (this.rootsWatcher === undefined && this.dirWatcher !== undefined) {
      try {
        this.rootsWatcher = watch(join(this.dir, ROOTS_DIR), { persistent: false }, () => { this.scheduleReload() })
        this.rootsWatcher.on('error', () => {
          this.rootsWatcher?.close()
          this.rootsWatcher = undefined
        })
      } catch {
        // No roots/ directory: the directory watcher sees it appear.
      }
    }
  }

  private stopWatching (): void {
    this.dirWatcher?.close()
    this.dirWatcher = undefined
    this.rootsWatcher?.close()
    this.rootsWatcher = undefined
    if (this.debounceTimer !== undefined) clearTimeout(this.debounceTimer)
    this.debounceTimer = undefined
    if (this.resyncTimer !== undefined) clearInterval(this.resyncTimer)
    this.resyncTimer = undefined
    if (this.renewTimer !== undefined) clearTimeout(this.renewTimer)
    this.renewTimer = undefined
  }

  private scheduleReload (): void {
    if (this.closed) return
    if (this.debounceTimer !== undefined) clearTimeout(this.debounceTimer)
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined
      void this.reload()
    }, this.debounceMs)
  }

  /** One reload at a time; a request during one runs another right after. */
  private reload (): Promise<void> {
    if (this.running !== undefined) {
      this.again = true
      return this.running
    }
    this.running = (async () => {
      do {
        this.again = false
        try {
          await this.reloadOnce()
        } catch (err) {
          this.log.error({ err, dir: this.dir }, 'identity reload failed')
        }
      } while (this.again && !this.closed)
    })().finally(() => {
      this.running = undefined
      this.events.emit('reloaded')
    })
    return this.running
  }

  private async reloadOnce (): Promise<void> {
    this.watchDir()
    // Read and check everything first ...
    const roots = await this.readRoots()
    const checkAgainst = roots instanceof ProblemResult ? this.rootsState : roots
    const read = new Map<string, LeafCertificate | ProblemResult>()
    if (checkAgainst !== undefined) {
      for (const service of this.services) read.set(service, await this.readLeaf(service, checkAgainst))
    }
    if (this.closed) return
    // ... then apply it with no await in between, so state and events change together.
    const changes: IdentityChange[] = []
    if (roots instanceof ProblemResult) {
      this.refuse('roots', roots.err, roots.key)
    } else {
      this.clearProblem('roots')
      if (this.rootsState?.bundle.rootsPem.join('') !== roots.bundle.rootsPem.join('')) {
        this.rootsState = roots
        changes.push({ kind: 'roots' })
        this.log.info({ dir: this.dir, trustDomain: roots.bundle.trustDomain, roots: roots.bundle.rootsPem.length, notAfter: roots.bundle.notAfter }, 'trust roots loaded')
      }
    }
    for (const [service, leaf] of read) {
      if (leaf instanceof ProblemResult) {
        this.refuse(service, leaf.err, leaf.key)
        continue
      }
      this.clearProblem(service)
      if (sameLeaf(this.leaves.get(service), leaf)) continue
      this.leaves.set(service, leaf)
      changes.push({ kind: 'leaf', service })
      this.log.info({ service, spiffeId: leaf.spiffeId, serial: leaf.serial, notAfter: leaf.notAfter }, 'leaf certificate loaded')
    }
    for (const change of changes) {
      for (const listener of [...this.listeners]) {
        try {
          listener(change)
        } catch (err) {
          this.log.error({ err, change }, 'identity change listener threw')
        }
      }
    }
    this.hasCaKey = this.selfIssue && await access(join(this.dir, CA_KEY_FILE)).then(() => true, () => false)
    if (this.closed) return
    // Issued leaves are read back by the next pass of the reload loop, like any file change.
    if (await this.renewDue()) this.again = true
    else this.warnExpiring()
    this.planWakeUp()
  }

  /** With the CA key: issues every leaf that is missing, refused (with none held), expired, due or from a replaced CA. True when one was written. */
  private async renewDue (): Promise<boolean> {
    if (!this.selfIssuing || this.rootsState === undefined) return false
    const now = Date.now()
    const current = this.rootsState.certs[0]!
    let wrote = false
    for (const service of this.services) {
      const r = this.renewalOf(service)
      if (now < r.notBefore || this.closed) continue
      const leaf = this.leaves.get(service)
      const input = leaf === undefined
        ? (this.problems.get(service)?.err.code === 'FASTMESH_ERR_IDENTITY_INVALID' ? 'invalid' : 'missing')
        : { ...leaf, fromCurrentCa: issuedBy(leaf, current) }
      const decision = renewalDecision(input, now, this.policy)
      if (decision.action === 'wait') continue
      try {
        const issued = await issueLeaf(this.dir, service, { validityHours: this.policy.leafValidityMs / HOUR })
        r.renewals++
        r.failures = 0
        r.lastError = undefined
        r.notBefore = Date.now() + MIN_RENEW_INTERVAL_MS
        wrote = true
        this.log.info({ service, serial: issued.serial, notAfter: issued.notAfter, why: decision.why, previous: leaf?.serial }, leaf === undefined ? 'leaf certificate issued with the local CA key' : 'leaf certificate renewed with the local CA key')
      } catch (err) {
        r.failures++
        r.lastError = (err as Error).message
        const retryInMs = Math.min(MAX_RETRY_MS, 1000 * 2 ** Math.min(r.failures - 1, 6))
        r.notBefore = Date.now() + retryInMs
        if (r.failures === 1 || r.failures % 10 === 0) this.log.error({ err, service, failures: r.failures, retryInMs }, `issuing a leaf certificate with ${join(this.dir, CA_KEY_FILE)} failed`)
      }
    }
    return wrote
  }

  /** Warns once per leaf (serial) that enters the warning window or expires without being replaced. */
  private warnExpiring (): void {
    const now = Date.now()
    for (const [service, leaf] of this.leaves) {
      const state = leafState(leaf, now, this.policy.warnBeforeMs)
      if (state !== 'expiring' && state !== 'expired') continue
      const key = `${state} ${leaf.serial}`
      if (this.expiryWarned.has(key)) continue
      const r = this.renewalOf(service)
      // A self-issuing provider renews before the warning window unless issuing fails.
      if (this.selfIssuing && r.failures === 0 && state === 'expiring') continue
      this.expiryWarned.add(key)
      r.warnings++
      const fix = this.selfIssuing ? `renewing it failed (${r.lastError ?? 'unknown error'}); it is retried` : `this gateway has no CA key (${CA_KEY_FILE}) in ${this.dir} to renew it — reissue it with \`${this.command(service)}\``
      const fields = { service, serial: leaf.serial, notAfter: leaf.notAfter, state }
      if (state === 'expired') this.log.warn(fields, `leaf certificate has expired; peers will refuse it — ${fix}`)
      else this.log.warn({ ...fields, expiresInMs: leaf.notAfter.getTime() - now }, `leaf certificate expires at ${leaf.notAfter.toISOString()}; ${fix}`)
    }
  }

  /** One timer for the next renewal, warning or retry; a reload re-plans it. */
  private planWakeUp (): void {
    if (this.renewTimer !== undefined) clearTimeout(this.renewTimer)
    this.renewTimer = undefined
    if (this.closed) return
    const now = Date.now()
    let next = Infinity
    for (const service of this.services) {
      const r = this.renewalOf(service)
      const leaf = this.leaves.get(service)
      if (this.selfIssuing) {
        const due = leaf === undefined ? now : renewAt(leaf, this.policy).getTime()
        next = Math.min(next, Math.max(due, r.notBefore))
      }
      if (leaf !== undefined) {
        for (const at of [warnAt(leaf, this.policy).getTime(), leaf.notAfter.getTime() + 1]) {
          if (at > now) next = Math.min(next, at)
        }
      }
    }
    if (next === Infinity) return
    const delay = Math.min(MAX_TIMER_MS, Math.max(next - now, 50))
    this.renewTimer = setTimeout(() => {
      this.renewTimer = undefined
      void this.reload()
    }, delay)
    this.renewTimer.unref()
  }

  private refuse (item: string, err: FastmeshError, key: string): void {
    const prev = this.problems.get(item)
    this.problems.set(item, { err, key })
    if (prev !== undefined && prev.key === key && prev.err.message === err.message) return
    const keeping = item === 'roots' ? this.rootsState !== undefined : this.leaves.has(item)
    const fields = { code: err.code, dir: this.dir, ...(item === 'roots' ? {} : { service: item }) }
    if (err.code === 'FASTMESH_ERR_IDENTITY_MISSING' && !keeping) {
      this.log.warn(fields, err.message)
    } else {
      this.log.error(fields, `${err.message}${keeping ? ' — keeping the previous one' : ''}`)
    }
  }

  private clearProblem (item: string): void {
    this.problems.delete(item)
  }

  private async readText (file: string, item: string): Promise<string | ProblemResult> {
    try {
      return await readFile(file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return problemResult(fastmeshError('IDENTITY_MISSING', [file, this.command(item)], err), 'missing')
      return problemResult(fastmeshError('IDENTITY_INVALID', [file, (err as Error).message], err), `unreadable ${(err as Error).message}`)
    }
  }

  private async readRoots (): Promise<Roots | ProblemResult> {
    const caFile = join(this.dir, CA_FILE)
    const caText = await this.readText(caFile, 'roots')
    if (typeof caText !== 'string') return caText
    const invalid = (why: string): ProblemResult => problemResult(fastmeshError('IDENTITY_INVALID', [caFile, why]), caText)
    const caBlocks = splitPem(caText)
    if (caBlocks.length === 0) return invalid('no PEM certificate in it')
    let ca: X509Certificate
    try {
      ca = new X509Certificate(caBlocks[0]!)
    } catch (err) {
      return invalid(`not a certificate (${(err as Error).message})`)
    }
    if (!ca.ca) return invalid('not a CA certificate (basicConstraints CA:false)')
    const trustDomain = caTrustDomain(ca)
    if (trustDomain === undefined) return invalid('the CA certificate has no spiffe://<trust-domain> URI SAN')
    const certs: X509Certificate[] = [ca]
    const pems: string[] = [caBlocks[0]!]
    const add = (pem: string, file: string): void => {
      let cert: X509Certificate
      try {
        cert = new X509Certificate(pem)
      } catch (err) {
        this.log.warn({ file }, `extra root skipped: not a certificate (${(err as Error).message})`)
        return
      }
      if (!cert.ca) {
        this.log.warn({ file }, 'extra root skipped: not a CA certificate')
        return
      }
      if (certs.some((c) => c.fingerprint256 === cert.fingerprint256)) return
      certs.push(cert)
      pems.push(pem)
    }
    for (const pem of caBlocks.slice(1)) add(pem, caFile)
    let extra: string[] = []
    try {
      extra = (await readdir(join(this.dir, ROOTS_DIR))).filter((n) => n.endsWith('.pem') && !n.startsWith('.')).sort()
    } catch {
      extra = []
    }
    for (const name of extra) {
      const file = join(this.dir, ROOTS_DIR, name)
      const text = await readFile(file, 'utf8').catch(() => '')
      for (const pem of splitPem(text)) add(pem, file)
    }
    const notAfter = certs.reduce<Date | undefined>((min, c) => {
      const d = new Date(c.validTo)
      return min === undefined || d < min ? d : min
    }, undefined)
    return { bundle: { trustDomain, rootsPem: pems, notAfter }, certs }
  }

  private async readLeaf (service: string, roots: Roots): Promise<LeafCertificate | ProblemResult> {
    const certFile = join(this.dir, leafCertFile(service))
    const keyFile = join(this.dir, leafKeyFile(service))
    const certText = await this.readText(certFile, service)
    if (typeof certText !== 'string') return certText
    const keyPem = await this.readText(keyFile, service)
    if (typeof keyPem !== 'string') return keyPem
    const contentKey = certText + keyPem + roots.bundle.rootsPem.join('')
    const invalid = (file: string, why: string): ProblemResult =>
      problemResult(fastmeshError('IDENTITY_INVALID', [file, `${why}; reissue it with \`${this.command(service)}\``]), contentKey)
    const blocks = splitPem(certText)
    if (blocks.length === 0) return invalid(certFile, 'no PEM certificate in it')
    let chain: X509Certificate[]
    try {
      chain = blocks.map((b) => new X509Certificate(b))
    } catch (err) {
      return invalid(certFile, `not a certificate (${(err as Error).message})`)
    }
    const leaf = chain[0]!
    const id = spiffeIdentity(leaf)
    if (!id.ok) return invalid(certFile, id.reason)
    const spiffeId = id.uri
    const parsed = id.id
    if (parsed.service !== service) return invalid(certFile, `its SPIFFE ID ${spiffeId} names service "${parsed.service}", not "${service}"`)
    if (parsed.trustDomain !== roots.bundle.trustDomain) return invalid(certFile, `its SPIFFE ID ${spiffeId} is in trust domain "${parsed.trustDomain}", the CA's is "${roots.bundle.trustDomain}"`)
    try {
      if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) return invalid(keyFile, `the key does not match the certificate ${certFile}`)
    } catch (err) {
      return invalid(keyFile, `not a PEM private key (${(err as Error).message})`)
    }
    for (let i = 0; i + 1 < chain.length; i++) {
      if (!(chain[i]!.checkIssued(chain[i + 1]!) && chain[i]!.verify(chain[i + 1]!.publicKey))) return invalid(certFile, `certificate ${i + 1} of its chain is not signed by the next one`)
    }
    const top = chain[chain.length - 1]!
    if (!roots.certs.some((r) => top.checkIssued(r) && top.verify(r.publicKey))) return invalid(certFile, 'it is not signed by a trusted root (ca.pem or roots/*.pem)')
    return {
      service,
      spiffeId,
      certPem: blocks.join(''),
      keyPem,
      notBefore: new Date(leaf.validFrom),
      notAfter: new Date(leaf.validTo),
      serial: leaf.serialNumber
    }
  }
}

/** Whether `leaf` (a single certificate) was signed by `ca`; a chain with intermediates counts as yes. */
function issuedBy (leaf: LeafCertificate, ca: X509Certificate): boolean {
  const blocks = splitPem(leaf.certPem)
  if (blocks.length !== 1) return true
  try {
    const cert = new X509Certificate(blocks[0]!)
    return cert.checkIssued(ca) && cert.verify(ca.publicKey)
  } catch {
    return true
  }
}
