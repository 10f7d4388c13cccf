// Where the `jwt` plugin's verification keys come from: static keys given in the config (JWKs,
// PEM public keys or certificates, an HMAC secret), or a remote JWKS fetched with jose's
// createRemoteJWKSet. The remote set's cache lives in the plugin state (JwksState), so a
// reload neither refetches nor forgets; a JWKS that is slow or failing costs a request at
// most the fetch timeout, and its up/down transitions are logged once each.
import type { KeyObject, webcrypto } from 'node:crypto'
import {
  createLocalJWKSet, createRemoteJWKSet, customFetch, errors, jwksCache,
  type FetchImplementation, type FlattenedJWSInput, type JSONWebKeySet, type JWK, type JWSHeaderParameters, type JWKSCacheInput
} from 'jose'
import type { FastifyBaseLogger } from 'fastify'
import { publicJwkOf } from './options.js'

/** What jwtVerify asks for each token: the key its header (alg, kid) designates. */
export type KeyResolver = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<webcrypto.CryptoKey | KeyObject | Uint8Array>

/** The keys are there but none fits the token (unknown kid, wrong key type): the token is at fault. */
const KEY_SELECTION_ERRORS = new Set([errors.JWKSNoMatchingKey.code, errors.JWKSMultipleMatchingKeys.code, errors.JOSENotSupported.code])

/** The JWKS could not be fetched or read: the gateway cannot tell whether the token is good. */
export class JwksUnavailableError extends Error {
  constructor (cause: unknown) {
    super(`the JWKS is unavailable: ${describeFailure(cause)}`, { cause })
    this.name = 'JwksUnavailableError'
  }
}

/**
 * Static keys from the config. `keys` entries are public JWKs or PEM strings (SPKI public key
 * or X.509 certificate); a key without `kid` (every PEM) may verify a token whatever its kid,
 * one with a `kid` only tokens that name it. `secret` verifies the HS algorithms.
 * The entries passed the config's checks (publicJwkOf); one that still cannot be read throws, naming it.
 */
export function staticKeys (entries: ReadonlyArray<JWK | string>, secret: string | undefined): KeyResolver {
  const withKid: JWK[] = []
  const anyKid: JWK[] = []
  entries.forEach((entry, i) => {
    const jwk = publicJwk(entry, `keys[${i}]`)
    ;(jwk.kid !== undefined ? withKid : anyKid).push(jwk)
  })
  const named = createLocalJWKSet({ keys: withKid })
  const unnamed = createLocalJWKSet({ keys: anyKid })
  const hmac = secret !== undefined ? new TextEncoder().encode(secret) : undefined
  return async (header, token) => {
    // jwtVerify checked `alg` against the allowed algorithms before asking.
    if (header.alg?.startsWith('HS') === true) {
      if (hmac === undefined) throw new errors.JWKSNoMatchingKey()
      return hmac
    }
    if (header.kid !== undefined && withKid.length > 0) {
      try {
        return await named(header, token)
      } catch (err) {
        if (!(err instanceof errors.JWKSNoMatchingKey) || anyKid.length === 0) throw err
      }
    }
    return await unnamed({ ...header, kid: undefined }, { ...token, header: undefined })
  }
}

function publicJwk (entry: JWK | string, where: string): JWK {
  // Checked with the config (jwtOptions.checkOptions); what is left here is reading it.
  const read = publicJwkOf(entry as string | Record<string, unknown>)
  if ('problem' in read) throw new Error(`${where} ${read.problem}`)
  return read.jwk as JWK
}

/** While the JWKS fails, it is fetched at most once per this interval; requests meanwhile fail at once. */
export const JWKS_FAILURE_BACKOFF_MS = 1000

class JwksBackoffError extends Error {
  constructor () { super(`it failed less than ${JWKS_FAILURE_BACKOFF_MS} ms ago; not fetched again yet`) }
}

/**
 * A remote JWKS as it outlives config versions: jose's cache (the keys and when they were
 * fetched), how many fetches were made, and whether the JWKS is failing. Each version makes
 * its own resolver over it (remoteKeys), with that version's timeout and intervals.
 */
export class JwksState {
  /** Filled by jose on every successful fetch; read by each new version's key set. */
  readonly cache: JWKSCacheInput = {}
  /** Fetches started (a failing JWKS included). */
  fetches = 0
  private down = false
  private lastFailure = -Infinity
  private seenFetchAt: number | undefined

  constructor (readonly url: string, public log: FastifyBaseLogger) {}

  /** jose's fetch: counted, at most one per JWKS_FAILURE_BACKOFF_MS while failing. */
  readonly fetchJwks: FetchImplementation = async (url, options) => {
    if (this.down && performance.now() - this.lastFailure < JWKS_FAILURE_BACKOFF_MS) throw new JwksBackoffError()
    this.fetches++
    try {
      const res = await fetch(url, options)
      if (res.status !== 200) this.failed(`status ${res.status}`)
      return res
    } catch (err) {
      this.failed(err)
      throw err
    }
  }

  failed (cause: unknown): void {
    // A request refused during the backoff does not extend it.
    if (!(cause instanceof JwksBackoffError)) this.lastFailure = performance.now()
    if (this.down) return
    this.down = true
    this.log.warn({ jwks: redactUrl(this.url), why: describeFailure(cause), code: 'FASTMESH_ERR_UNAUTHENTICATED' }, 'jwt JWKS unavailable: tokens whose key is not cached are refused')
  }

  /** A fetch that succeeded since the last look brings the JWKS back. */
  noteSuccess (): void {
    const at = 'uat' in this.cache ? this.cache.uat : undefined
    if (at === undefined || at === this.seenFetchAt) return
    this.seenFetchAt = at
    if (!this.down) return
    this.down = false
    this.log.info({ jwks: redactUrl(this.url) }, 'jwt JWKS available again')
  }

  get fetchedAt (): number | undefined {
    return 'uat' in this.cache ? this.cache.uat : undefined
  }
}

export interface RemoteKeyOptions {
  readonly timeoutMs: number
  /** Keys older than this are refetched (in the background: the held ones serve meanwhile). */
  readonly cacheMaxAgeMs: number
  /** After a fetch, an unknown kid does not cause another for this long. */
  readonly cooldownMs: number
}

/**
 * A resolver over the remote JWKS of `state`. jose fetches on first use and on an unknown
 * kid (once per cooldown), each fetch bounded by the timeout. Stale keys are refreshed in
 * the background and keep verifying while the JWKS is down: an outage of the JWKS server
 * refuses only tokens whose key was never fetched.
 */
export function remoteKeys (state: JwksState, o: RemoteKeyOptions): KeyResolver {
  const remote = createRemoteJWKSet(new URL(state.url), {
    timeoutDuration: o.timeoutMs,
    cooldownDuration: o.cooldownMs,
    // Age is checked here (below), so jose never drops the keys it holds.
    cacheMaxAge: Infinity,
    [jwksCache]: state.cache,
    [customFetch]: state.fetchJwks
  })
  const refreshed = (): void => { state.noteSuccess() }
  const refreshFailed = (err: unknown): void => { state.failed(err) }
  return async (header, token) => {
    const at = state.fetchedAt
    if (at !== undefined && Date.now() - at >= o.cacheMaxAgeMs && !remote.reloading) remote.reload().then(refreshed, refreshFailed)
    try {
      const key = await remote(header, token)
      state.noteSuccess()
      return key
    } catch (err) {
      if (typeof (err as { code?: unknown }).code === 'string' && KEY_SELECTION_ERRORS.has((err as { code: string }).code)) {
        state.noteSuccess()
        throw err
      }
      state.failed(err)
      throw new JwksUnavailableError(err)
    }
  }
}

/** A short reason for logs and answers; never a token (jose's messages name claims, not values). */
function describeFailure (err: unknown): string {
  if (typeof err === 'string') return err
  if (err instanceof errors.JWKSTimeout) return 'no answer within the timeout'
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause
    return cause instanceof Error && err.message === 'fetch failed' ? `fetch failed: ${cause.message}` : err.message
  }
  return String(err)
}

/** A URL without its password, for logs. */
function redactUrl (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '<redacted>'
    return u.href
  } catch {
    return '<unparsable url>'
  }
}

export type { JSONWebKeySet }
