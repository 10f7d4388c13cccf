// Built-in route plugin `jwt`: verifies `Authorization: Bearer <token>` (jose) against a
// remote JWKS or static keys, checks issuer, audience, time (with clock skew) and required
// claims, and forwards chosen claims to the upstream as headers — the same headers sent by
// the client are dropped first, so they cannot be forged. No token or a bad one: 401
// FASTMESH_ERR_UNAUTHENTICATED; a good token without a required claim: 403
// FASTMESH_ERR_FORBIDDEN_CLAIMS; both with an RFC 6750 `WWW-Authenticate`.
import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { errors, jwtVerify, type JWK, type JWTPayload, type JWTVerifyOptions } from 'jose'
import { durationMs } from '../../src/config/duration.js'
import { fastmeshError } from '../../src/errors.js'
import type { RoutePluginDefinition } from '../types.js'
import { JwksState, JwksUnavailableError, remoteKeys, staticKeys, type KeyResolver } from './keys.js'
import { acceptedAlgorithms, jwtOptions, type JwtOptions, type JwtOptionsSchema } from './options.js'

export { JwtOptionsSchema, type JwtOptions } from './options.js'


const BEARER = /^Bearer +([^ ]+) *$/i

/** Longest a verified token is remembered, and the longest token worth remembering. */
const TOKEN_CACHE_TTL_MS = 5 * 60_000
const TOKEN_CACHE_MAX_LENGTH = 8192

/** Verified tokens and their payloads, oldest dropped first, each until its deadline. */
class VerifiedTokens {
  private readonly entries = new Map<string, { readonly payload: JWTPayload, readonly until: number }>()

  constructor (private readonly max: number, private readonly skewMs: number) {}

  get (token: string, now: number): JWTPayload | undefined {
    const e = this.entries.get(token)
    if (e === undefined) return undefined
    if (e.until > now) return e.payload
    this.entries.delete(token)
    return undefined
  }

  add (token: string, payload: JWTPayload, now: number): void {
    if (this.max === 0 || token.length > TOKEN_CACHE_MAX_LENGTH) return
    const until = Math.min(now + TOKEN_CACHE_TTL_MS, typeof payload.exp === 'number' ? payload.exp * 1000 + this.skewMs : Infinity)
    if (until <= now) return
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value!)
    this.entries.set(token, { payload, until })
  }
}

function bearerToken (authorization: string | string[] | undefined): string | undefined {
  if (typeof authorization !== 'string') return undefined
  return BEARER.exec(authorization)?.[1]
}

/** Why a token was refused, as an RFC 6750 error_description (no `"` or `\`) and never holding the token. */
export function refusalReason (err: unknown): string {
  if (err instanceof JwksUnavailableError) return 'the signing keys could not be fetched'
  if (err instanceof errors.JWTExpired) return 'the token has expired'
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'nbf': return err.reason === 'check_failed' ? 'the token is not valid yet' : 'the nbf claim is invalid'
      case 'iss': return err.reason === 'missing' ? 'the token has no issuer' : 'the token is from another issuer'
      case 'aud': return err.reason === 'missing' ? 'the token has no audience' : 'the token is for another audience'
      case 'iat': return 'the iat claim is invalid'
      case 'exp': return err.reason === 'missing' ? 'the token has no expiry (exp)' : 'the exp claim is invalid'
      default: return `the ${err.claim.replace(/[^\x20-\x7e]|["\\]/g, '?')} claim is invalid`
    }
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'the signature does not verify'
  if (err instanceof errors.JOSEAlgNotAllowed) return 'the signing algorithm is not accepted'
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JOSENotSupported) return 'no known key fits the token'
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return 'the token is malformed'
  return 'the token is invalid'
}

function holds (claim: unknown, value: string | number | boolean): boolean {
  if (claim === value) return true
  if (Array.isArray(claim)) return claim.includes(value)
  return typeof claim === 'string' && typeof value === 'string' && claim.split(' ').includes(value)
}

/** The first required claim the payload lacks, described; undefined when it has them all. */
function claimsCheck (required: JwtOptions['requiredClaims']): (payload: JWTPayload) => string | undefined {
  if (required === undefined) return () => undefined
  if (Array.isArray(required)) {
    return (payload) => {
      const name = required.find((n) => payload[n] === undefined)
      return name === undefined ? undefined : `claim ${name} is missing`
    }
  }
  const entries = Object.entries(required).map(([name, v]) => [name, Array.isArray(v) ? v : [v]] as const)
  return (payload) => {
    for (const [name, values] of entries) {
      const claim = payload[name]
      if (claim === undefined) return `claim ${name} is missing`
      const lacking = values.find((v) => !holds(claim, v))
      if (lacking !== undefined) return `claim ${name} does not hold ${String(lacking)}`
    }
    return undefined
  }
}

/** A claim as a header value: printable ASCII kept, anything else percent-encoded (no CR/LF can pass). */
function headerValue (claim: unknown): string {
  const text = typeof claim === 'string' ? claim : Array.isArray(claim) ? claim.map((c) => typeof c === 'string' ? c : JSON.stringify(c)).join(',') : JSON.stringify(claim)
  return /^[\x20-\x7e]*$/.test(text) ? text : text.replace(/[^\x20-\x7e]+/g, (s) => encodeURIComponent(s))
}

/** The quoted-string of a WWW-Authenticate parameter (the values here never hold `"` or `\`). */
function challenge (reply: FastifyReply, realm: string, error?: string, description?: string): void {
  reply.header('www-authenticate', error === undefined
    ? `Bearer realm="${realm}"`
    : `Bearer realm="${realm}", error="${error}", error_description="${description ?? ''}"`)
}

/**
 * HS tokens verify with `secret` alone, never with the JWKS: it would ignore the configured
 * secret, and a symmetric key in a (public) JWKS document is known to anyone.
 */
function hmacBeside (remote: KeyResolver, secret: string | undefined): KeyResolver {
  const hmac = secret !== undefined ? new TextEncoder().encode(secret) : undefined
  return async (header, token) => {
    if (header.alg?.startsWith('HS') !== true) return await remote(header, token)
    if (hmac === undefined) throw new errors.JWKSNoMatchingKey()
    return hmac
  }
}

const jwtPlugin: FastifyPluginAsync<JwtOptions & Record<string, unknown>> = async (fastify, options) => {
  const route = fastify.fastmesh.route
  // Key sources, algorithms, the JWKS URL and timeout, and every static key were checked with
  // the config (jwtOptions.checkOptions), at their JSON paths.
  const algorithms = acceptedAlgorithms(options)
  let keys: KeyResolver
  if (options.jwks !== undefined) {
    const { url } = options.jwks
    // The cache outlives reloads: a new version verifies with the keys already fetched.
    const state = fastify.fastmesh.state(`jwt:jwks:${url}`, () => new JwksState(url, fastify.log))
    state.log = fastify.log
    keys = hmacBeside(remoteKeys(state, { timeoutMs: durationMs(options.jwks.timeout), cacheMaxAgeMs: durationMs(options.jwks.cacheMaxAge), cooldownMs: durationMs(options.jwks.cooldown) }), options.secret)
  } else {
    keys = staticKeys((options.keys ?? []) as Array<JWK | string>, options.secret)
  }

  const verifyOptions: JWTVerifyOptions = {
    algorithms,
    clockTolerance: durationMs(options.clockSkew) / 1000,
    ...(options.requireExpiration ? { requiredClaims: ['exp'] } : {}),
    ...(options.issuer !== undefined ? { issuer: options.issuer } : {}),
    ...(options.audience !== undefined ? { audience: options.audience } : {})
  }
  const verifyUncached = async (token: string): Promise<JWTPayload> => {
    try {
      return (await jwtVerify(token, keys, verifyOptions)).payload
    } catch (err) {
      // Several keys fit (no kid, or a kid shared by keys): the first that verifies wins.
      if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err
      for await (const key of err) {
        try {
          return (await jwtVerify(token, key, verifyOptions)).payload
        } catch (e) {
          if (!(e instanceof errors.JWSSignatureVerificationFailed)) throw e
        }
      }
      throw new errors.JWSSignatureVerificationFailed()
    }
  }
  // Per config version: a reload that changes issuer, audience or keys starts afresh.
  const verified = new VerifiedTokens(options.tokenCacheSize, durationMs(options.clockSkew))
  const verify = async (token: string): Promise<JWTPayload> => {
    const cached = verified.get(token, Date.now())
    if (cached !== undefined) return cached
    const payload = await verifyUncached(token)
    verified.add(token, payload, Date.now())
    return payload
  }
  const lacking = claimsCheck(options.requiredClaims)
  const forwarded = Object.entries(options.forwardClaims).map(([claim, header]) => [claim, header.toLowerCase()] as const)
  const forwardToken = options.forwardToken
  const realm = options.realm ?? route

  fastify.addHook('onRequest', async (request, reply) => {
    const headers = request.headers
    // Before anything else: a client must never be able to pass these off as verified claims.
    for (const [, header] of forwarded) delete headers[header]
    const token = bearerToken(headers.authorization)
    if (token === undefined) {
      challenge(reply, realm)
      throw fastmeshError('UNAUTHENTICATED', [route, 'no bearer token'])
    }
    let payload: JWTPayload
    try {
      payload = await verify(token)
    } catch (err) {
      const reason = refusalReason(err)
      challenge(reply, realm, 'invalid_token', reason)
      throw fastmeshError('UNAUTHENTICATED', [route, reason])
    }
    const missing = lacking(payload)
    if (missing !== undefined) {
      challenge(reply, realm, 'insufficient_scope', missing.replace(/[^\x20-\x7e]|["\\]/g, '?'))
      throw fastmeshError('FORBIDDEN_CLAIMS', [route, missing])
    }
    for (const [claim, header] of forwarded) {
      const value = payload[claim]
      if (value !== undefined && value !== null) headers[header] = headerValue(value)
    }
    if (!forwardToken) delete headers.authorization
  })
}

export const jwtDefinition: RoutePluginDefinition<typeof JwtOptionsSchema> = { ...jwtOptions, plugin: jwtPlugin }
