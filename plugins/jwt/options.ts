// Options of the built-in route plugin `jwt` (the config checks them without loading jose).
import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN } from '../../src/config/duration.js'
import type { PluginOptionsDefinition } from '../types.js'

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

export const jwtOptions: PluginOptionsDefinition<typeof JwtOptionsSchema> = {
  name: 'jwt',
  description: 'Verify a bearer JWT (RS256, ES256, EdDSA, ...; HS only with a secret) against a JWKS URL or static keys: issuer, audience, time with clock skew, required claims; forward chosen claims as headers. 401 or 403 with WWW-Authenticate otherwise.',
  optionsSchema: JwtOptionsSchema,
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
