// Options of the built-in route plugin `jwt`, and its rules of what a usable key is (the
// config checks them without loading jose: node:crypto reads the keys).
import { createPublicKey, type JsonWebKey } from 'node:crypto'
import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, durationMs } from '../../src/config/duration.js'
import type { PluginOptionProblem, PluginOptionsDefinition } from '../types.js'

const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const
const HMAC = ['HS256', 'HS384', 'HS512'] as const
export const DEFAULT_ASYMMETRIC = ['RS256', 'ES256', 'EdDSA']

const ClaimValue = Type.Union([Type.String(), Type.Number(), Type.Boolean()])

export const JwtOptionsSchema = Type.Object({
  jwks: Type.Optional(Type.Object({
    url: Type.String({ pattern: '^https?://', description: 'URL of the JSON Web Key Set, e.g. `https://issuer.example/.well-known/jwks.json`.' }),
    timeout: Type.String({ pattern: DURATION_PATTERN, default: '2s', description: 'Longest a request waits on a fetch of the JWKS; past it the token is refused (401).' }),
    cacheMaxAge: Type.String({ pattern: DURATION_PATTERN, default: '10m', description: 'Keys older than this are refetched in the background; the keys held keep verifying meanwhile, and while the JWKS fails.' }),
    cooldown: Type.String({ pattern: DURATION_PATTERN, default: '30s', description: 'A token with an unknown `kid` refetches the JWKS (key rotation), at most once per cooldown.' })
  }, { additionalProperties: false, description: 'Fetch the verification keys from a JWKS URL (cached; the cache survives reloads). Give `jwks` or `keys`, not both.' })),
  keys: Type.Optional(Type.Array(Type.Union([Type.String({ minLength: 1 }), Type.Record(Type.String(), Type.Unknown())]), {
    minItems: 1,
    description: 'Static verification keys: public JWKs (objects) or PEM strings (a public key or an X.509 certificate). A key with a `kid` verifies only tokens naming it; one without (every PEM) any token of a fitting algorithm.'
  })),
  secret: Type.Optional(Type.String({ minLength: 32, description: 'HMAC secret (at least 32 bytes) for HS256/384/512 tokens; HS algorithms are allowed only with it.' })),
  algorithms: Type.Optional(Type.Array(Type.Union([...ASYMMETRIC, ...HMAC].map((a) => Type.Literal(a))), {
    minItems: 1,
    description: 'Accepted `alg` values (`none` never is). Default: RS256, ES256 and EdDSA with `jwks` or `keys`, plus HS256 with `secret`.'
  })),
  issuer: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1 })], { description: 'Required `iss` (one of these).' })),
  audience: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1 })], { description: 'Required `aud` (the token must name one of these).' })),
  clockSkew: Type.String({ pattern: DURATION_PATTERN, default: '60s', description: 'Tolerance on `exp`, `nbf` and `iat` for clocks that disagree.' }),
  requiredClaims: Type.Optional(Type.Union([
    Type.Array(Type.String({ minLength: 1 }), { description: 'Claim names the token must carry.' }),
    Type.Record(Type.String({ minLength: 1 }), Type.Union([ClaimValue, Type.Array(ClaimValue, { minItems: 1 })], { description: 'The value, or values (all of them), the claim must hold.' }), { description: 'Claim name → value or values the claim must hold, every one of them.' })
  ], { description: 'Claims a valid token must carry, else 403 FASTMESH_ERR_FORBIDDEN_CLAIMS: a list of names, or name → value(s). A claim holds a value when it equals it, is an array containing it, or is a space-separated string (as OAuth `scope`) with it as one word.' })),
  forwardClaims: Type.Record(Type.String({ minLength: 1 }), Type.String({ pattern: HEADER_NAME }), {
    default: {},
    description: 'Claim → request header sent to the upstream with its value (arrays joined with `,`, objects as JSON, characters outside printable ASCII percent-encoded). The same headers from the client are always removed first.'
  }),
  requireExpiration: Type.Boolean({ default: true, description: 'Refuse tokens without `exp` (401): an access token must expire (RFC 9068 §2.2); one without it would be accepted forever. `false` takes them (as Envoy\'s default).' }),
  forwardToken: Type.Boolean({ default: true, description: 'Whether the upstream still gets the `Authorization` header.' }),
  tokenCacheSize: Type.Integer({
    minimum: 0,
    default: 1000,
    description: 'Verified tokens remembered, so a client sending the same token again is not verified again (as Envoy\'s jwt_cache_config): each until its `exp` plus `clockSkew`, at most 5 minutes; claims are still checked on every request. 0: off. A key removed from the JWKS stops accepting a remembered token within those 5 minutes.'
  }),
  realm: Type.Optional(Type.String({ pattern: '^[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]*$', description: 'The `realm` of `WWW-Authenticate` (default: the route name).' }))
}, {
  additionalProperties: false,
  description: 'The token is read from `Authorization: Bearer <token>`. No token: 401 with `WWW-Authenticate: Bearer realm="…"`; a token that does not verify: 401 with `error="invalid_token"` and an `error_description`; a valid token lacking a required claim: 403 with `error="insufficient_scope"`. ' +
    'A JWKS that cannot be fetched within `jwks.timeout` refuses the tokens whose key it would have given with 401 `invalid_token` ("the signing keys could not be fetched"), as Envoy\'s jwt_authn does; keys fetched before keep verifying. While it fails it is fetched at most once a second, and the outage and the recovery are logged once each. The token is never logged or echoed.'
})

export type JwtOptions = Static<typeof JwtOptionsSchema>

/** The accepted `alg` values: as given, else the default for the key sources given. */
export function acceptedAlgorithms (options: JwtOptions): string[] {
  const asymmetric = options.jwks !== undefined || options.keys !== undefined
  return options.algorithms ?? [...(asymmetric ? DEFAULT_ASYMMETRIC : []), ...(options.secret !== undefined ? ['HS256'] : [])]
}

/** JWK members only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4.1; OKP: RFC 8037). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

/**
 * A `keys` entry as the public JWK it verifies with (a PEM public key or certificate is read
 * and exported as one), or why it cannot be one. Private and symmetric keys are refused: a
 * verifier needs only the public part, and an HMAC key belongs in `secret`.
 */
export function publicJwkOf (entry: string | Record<string, unknown>): { readonly jwk: JsonWebKey } | { readonly problem: string, readonly hint: string } {
  if (typeof entry === 'string') {
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(entry)) return { problem: 'is a private key', hint: 'give only its public key (-----BEGIN PUBLIC KEY-----) or a certificate' }
    try {
      return { jwk: createPublicKey(entry).export({ format: 'jwk' }) }
    } catch (err) {
      return { problem: `is not a PEM public key or certificate (${(err as Error).message})`, hint: 'a PEM block: -----BEGIN PUBLIC KEY----- or -----BEGIN CERTIFICATE-----' }
    }
  }
  if (typeof entry.kty !== 'string') return { problem: 'has no "kty"', hint: 'a public JWK names its key type: RSA, EC or OKP' }
  if (entry.kty === 'oct') return { problem: 'is a symmetric key', hint: 'give an HMAC key as `secret`' }
  const present = PRIVATE_MEMBERS.filter((m) => entry[m] !== undefined)
  if (present.length > 0) return { problem: `is a private key (it has ${present.map((m) => `"${m}"`).join(', ')})`, hint: 'give only its public part: leave out "d" (and "p", "q", "dp", "dq", "qi")' }
  try {
    createPublicKey({ key: entry as JsonWebKey, format: 'jwk' })
  } catch (err) {
    return { problem: `is not a usable public JWK (${(err as Error).message})`, hint: 'an RSA key needs "n" and "e"; an EC key "crv", "x" and "y"; an OKP key "crv" and "x"' }
  }
  return { jwk: entry as JsonWebKey }
}

function jwtOptionProblems (options: JwtOptions): PluginOptionProblem[] {
  const { jwks, keys, secret } = options
  if (jwks !== undefined && keys !== undefined) return [{ path: '$', message: 'has both `jwks` and `keys`', hint: 'the keys come from a JWKS URL (`jwks`) or from the config (`keys`): give one' }]
  if (jwks === undefined && keys === undefined && secret === undefined) return [{ path: '$', message: 'needs a source of keys: `jwks`, `keys` or `secret`', hint: 'a JWKS URL, static public keys, or an HMAC secret for HS256/384/512' }]
  const problems: PluginOptionProblem[] = []
  const asymmetric = jwks !== undefined || keys !== undefined
  options.algorithms?.forEach((alg, i) => {
    if (alg.startsWith('HS') && secret === undefined) problems.push({ path: `$.algorithms[${i}]`, message: `"${alg}" needs a \`secret\``, hint: 'HS256/384/512 verify with an HMAC secret; `jwks` and `keys` hold public keys' })
    if (!alg.startsWith('HS') && !asymmetric) problems.push({ path: `$.algorithms[${i}]`, message: `"${alg}" needs \`jwks\` or \`keys\``, hint: 'asymmetric algorithms verify with public keys; `secret` serves HS256/384/512 only' })
  })
  if (jwks !== undefined) {
    if (!URL.canParse(jwks.url)) problems.push({ path: '$.jwks.url', message: `"${jwks.url}" is not a URL`, hint: 'e.g. https://issuer.example/.well-known/jwks.json' })
    if (durationMs(jwks.timeout) < 1) problems.push({ path: '$.jwks.timeout', message: `(${jwks.timeout}) must be at least 1ms`, hint: 'the longest a request waits on a fetch of the JWKS' })
  }
  keys?.forEach((entry, i) => {
    const read = publicJwkOf(entry)
    if ('problem' in read) problems.push({ path: `$.keys[${i}]`, message: read.problem, hint: read.hint })
  })
  return problems
}

export const jwtOptions: PluginOptionsDefinition<typeof JwtOptionsSchema> = {
  name: 'jwt',
  description: 'Verify a bearer JWT (RS256, ES256, EdDSA, ...; HS only with a secret) against a JWKS URL or static keys: issuer, audience, time with clock skew, required claims; forward chosen claims as headers. 401 or 403 with WWW-Authenticate otherwise.',
  optionsSchema: JwtOptionsSchema,
  checkOptions: jwtOptionProblems,
  example: `plugins:
  - name: jwt
    options:
      jwks: { url: https://issuer.example/.well-known/jwks.json, timeout: 2s }
      issuer: https://issuer.example/
      audience: orders-api
      clockSkew: 30s
      requiredClaims: { scope: orders.read }
      forwardClaims: { sub: x-user-id, scope: x-user-scope }`
}
