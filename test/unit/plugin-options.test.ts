// Built-in plugins' options apart from their code (plugins/options.ts): the same contract as
// the definitions a build registers, and the checks beyond their schemas reported at JSON paths.
import test from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { builtinPlugins } from '../../plugins/index.js'
import { builtinPluginOptions } from '../../plugins/options.js'
import type { PluginOptionsDefinition } from '../../plugins/types.js'
import { validateConfigDocument } from '../../src/config/validate.js'
import { createCaInMemory } from '../../src/identity/local-ca.js'

test('every built-in plugin has its options contract in plugins/options.ts, the very one its definition uses', () => {
  assert.deepEqual([...builtinPluginOptions.keys()].sort(), [...builtinPlugins.keys()].sort())
  for (const [name, def] of builtinPlugins) {
    const options = builtinPluginOptions.get(name)!
    assert.equal(def.optionsSchema, options.optionsSchema, name)
    assert.equal(def.description, options.description, name)
    assert.equal(def.checkOptions, options.checkOptions, name)
  }
})

function problemsOf (plugin: string, options: unknown): Array<[string, string]> {
  const doc = {
    discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9 }] } } } },
    routes: [{ name: 'r', destination: { service: 'svc' }, plugins: [{ name: 'headers' }, { name: plugin, options }] }]
  }
  return validateConfigDocument(doc).problems.map((p) => [p.path, p.message])
}

const at = '$.routes[0].plugins[1].options'

test('ip-filter: entries that are neither an address nor a CIDR range, each at its index', () => {
  assert.deepEqual(problemsOf('ip-filter', { allow: ['10.0.0.0/8', '2001:db8::/129'], deny: ['example.com'] }), [
    [`${at}.allow[1]`, '"2001:db8::/129" is not an IP address or a CIDR range'],
    [`${at}.deny[0]`, '"example.com" is not an IP address or a CIDR range']
  ])
  assert.deepEqual(problemsOf('ip-filter', { allow: ['::1', '192.168.0.0/16'] }), [])
})

test('rate-limit: a window or a Redis timeout of 0 is refused at its path', () => {
  assert.deepEqual(problemsOf('rate-limit', { max: 5, timeWindow: '0s', store: { redis: { url: 'redis://127.0.0.1:6379', timeout: '0ms' } } }).map(([p]) => p), [`${at}.timeWindow`, `${at}.store.redis.timeout`])
  assert.deepEqual(problemsOf('rate-limit', { max: 5, timeWindow: '1s' }), [])
})

test('fault-injection: an abort or response fault with neither or both of status and reset', () => {
  assert.deepEqual(problemsOf('fault-injection', { abort: { percent: 10 }, response: { percent: 5, status: 503, reset: true } }), [
    [`${at}.abort`, 'has neither status nor reset: true'],
    [`${at}.response`, 'has both status and reset: true']
  ])
  assert.deepEqual(problemsOf('fault-injection', { abort: { percent: 10, status: 503 }, response: { percent: 5, reset: true } }), [])
})

test('cors: `*` with credentials: true is refused at the origins item; `*` alone, or listed origins with credentials, pass', () => {
  assert.deepEqual(problemsOf('cors', { origins: ['https://app.example.com', '*'], credentials: true }), [[`${at}.origins[1]`, '"*" is not allowed with `credentials: true`']])
  assert.deepEqual(problemsOf('cors', { origins: ['*'] }), [])
  assert.deepEqual(problemsOf('cors', { origins: ['https://app.example.com'], credentials: true }), [])
})

test('body-limit: maxBytes is a whole number of bytes, 0 or more', () => {
  assert.deepEqual(problemsOf('body-limit', { maxBytes: -1 }).map(([p]) => p), [`${at}.maxBytes`])
  assert.deepEqual(problemsOf('body-limit', { maxBytes: 0 }), [])
})

test('jwt: key sources, algorithms that no key source serves, the JWKS URL and timeout, each at its path', () => {
  assert.deepEqual(problemsOf('jwt', { issuer: 'https://issuer.test/' }), [[at, 'needs a source of keys: `jwks`, `keys` or `secret`']])
  assert.deepEqual(problemsOf('jwt', { jwks: { url: 'https://issuer.test/jwks' }, keys: ['x'] }), [[at, 'has both `jwks` and `keys`']])
  assert.deepEqual(problemsOf('jwt', { jwks: { url: 'https://issuer.test/jwks' }, algorithms: ['RS256', 'HS384'] }), [[`${at}.algorithms[1]`, '"HS384" needs a `secret`']])
  assert.deepEqual(problemsOf('jwt', { secret: 's'.repeat(32), algorithms: ['HS256', 'ES256'] }), [[`${at}.algorithms[1]`, '"ES256" needs `jwks` or `keys`']])
  assert.deepEqual(problemsOf('jwt', { jwks: { url: 'http://', timeout: '0ms' } }), [
    [`${at}.jwks.url`, '"http://" is not a URL'],
    [`${at}.jwks.timeout`, '(0ms) must be at least 1ms']
  ])
  // The defaults fit the sources given: asymmetric ones with jwks, HS256 with a secret.
  assert.deepEqual(problemsOf('jwt', { jwks: { url: 'https://issuer.test/jwks' } }), [])
  assert.deepEqual(problemsOf('jwt', { secret: 's'.repeat(32) }), [])
})

test('jwt: static keys that are private, symmetric, or not a public key at all are refused at their index; public JWKs, PEM keys and certificates pass', async () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const publicJwk = { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'r1' }
  const { d, ...rsaPrivateNoD } = rsa.privateKey.export({ format: 'jwk' })
  assert.ok(d !== undefined)
  const keys = [
    publicJwk,
    { ...ec.privateKey.export({ format: 'jwk' }), kid: 'e1' },
    rsaPrivateNoD,
    { kty: 'oct', k: 'c2VjcmV0' },
    { n: publicJwk.n, e: publicJwk.e },
    { kty: 'RSA', e: 'AQAB' },
    rsa.publicKey.export({ type: 'spki', format: 'pem' }),
    ec.privateKey.export({ type: 'pkcs8', format: 'pem' }),
    '-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n',
    (await createCaInMemory({ trustDomain: 'mesh.test' })).certPem
  ]
  const problems = problemsOf('jwt', { keys })
  assert.deepEqual(problems.map(([p]) => p), [1, 2, 3, 4, 5, 7, 8].map((i) => `${at}.keys[${i}]`), JSON.stringify(problems))
  const [ecPrivate, rsaPrivate, oct, noKty, unusable, pemPrivate, pemBad] = problems.map(([, m]) => m)
  assert.equal(ecPrivate, 'is a private key (it has "d")')
  assert.equal(rsaPrivate, 'is a private key (it has "p", "q", "dp", "dq", "qi")')
  assert.equal(oct, 'is a symmetric key')
  assert.equal(noKty, 'has no "kty"')
  assert.match(unusable!, /^is not a usable public JWK/)
  assert.equal(pemPrivate, 'is a private key')
  assert.match(pemBad!, /^is not a PEM public key or certificate/)
  // No key material is echoed in a problem.
  for (const [, message] of problems) assert.doesNotMatch(message, new RegExp(String(publicJwk.n).slice(0, 16)))
})

test('a custom plugin\'s if/then schema rule is reported once, where the then-branch fails (not also as ajv\'s `if` error)', () => {
  const doc = {
    discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9 }] } } } },
    customPlugins: { guarded: { module: './x.js' } },
    routes: [{ name: 'r', destination: { service: 'svc' }, plugins: [{ name: 'guarded', options: { strict: true, modes: ['a', 'any'] } }] }]
  }
  const optionsSchema = {
    type: 'object',
    if: { properties: { strict: { const: true } }, required: ['strict'] },
    then: { properties: { modes: { items: { not: { const: 'any' }, description: 'strict mode lists its modes' } } } }
  }
  const result = validateConfigDocument(doc, new Map<string, PluginOptionsDefinition>([['guarded', { name: 'guarded', description: '', optionsSchema: optionsSchema as never }], ...builtinPluginOptions]))
  assert.deepEqual(result.problems, [{ path: '$.routes[0].plugins[0].options.modes[1]', message: 'string "any" is not allowed here', hint: 'strict mode lists its modes' }])
})

test('a plugin\'s own checks run only on options that passed its schema', () => {
  // allow[0] is not a string: the schema's problem alone, never a check on what it could not read.
  assert.deepEqual(problemsOf('ip-filter', { allow: [5] }).map(([p]) => p), [`${at}.allow[0]`])
})

test('a custom plugin whose optionsSchema is broken or whose checkOptions throws refuses the config at the options\' path, never crashes the check', () => {
  const doc = (name: string) => ({
    discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9 }] } } } },
    customPlugins: { [name]: { module: './x.js' } },
    routes: [{ name: 'r', destination: { service: 'svc' }, plugins: [{ name, options: { a: 1 } }] }]
  })
  const plugins = (definition: PluginOptionsDefinition) => new Map<string, PluginOptionsDefinition>([[definition.name, definition], ...builtinPluginOptions])
  const broken = validateConfigDocument(doc('broken'), plugins({ name: 'broken', description: '', optionsSchema: { type: 'no-such-type' } as never }))
  assert.deepEqual(broken.problems.map((p) => p.path), ['$.routes[0].plugins[0].options'])
  assert.match(broken.problems[0]!.message, /optionsSchema of plugin "broken" is not a valid JSON Schema/)
  const throwing = validateConfigDocument(doc('thrower'), plugins({ name: 'thrower', description: '', optionsSchema: { type: 'object' } as never, checkOptions: () => { throw new Error('boom') } }))
  assert.deepEqual(throwing.problems.map((p) => [p.path, p.message]), [['$.routes[0].plugins[0].options', 'plugin "thrower" could not check its options: boom']])
})

// Review of issue 14 (operator's view): options that passed validation but did not do what
// they say at run time.

test('rate-limit: a Redis URL the client cannot parse (port out of range, broken IPv6) is refused at its path, without echoing it', () => {
  for (const url of ['redis://127.0.0.1:99999', 'redis://[::1:6379', 'redis://:s3cret@host:notaport']) {
    const problems = problemsOf('rate-limit', { max: 5, store: { redis: { url } } })
    assert.deepEqual(problems.map(([p]) => p), [`${at}.store.redis.url`], url)
    assert.doesNotMatch(problems[0]![1], /s3cret/)
    assert.doesNotMatch(String(validateConfigDocument({ discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9 }] } } } }, routes: [{ name: 'r', destination: { service: 'svc' }, plugins: [{ name: 'rate-limit', options: { max: 5, store: { redis: { url } } } }] }] }).problems[0]?.hint), /redacted/, 'the hint reads whole')
  }
  assert.deepEqual(problemsOf('rate-limit', { max: 5, store: { redis: { url: 'rediss://:pw@[::1]:6380/2' } } }), [])
})

test('load-shedding: thresholds that can never shed (an event-loop delay under 1ms, which under-pressure reads as "off"; a utilisation of 1) are refused', () => {
  for (const maxEventLoopDelay of ['0ms', '0.4ms', '0s']) {
    assert.deepEqual(problemsOf('load-shedding', { maxEventLoopDelay }).map(([p]) => p), [`${at}.maxEventLoopDelay`], maxEventLoopDelay)
  }
  assert.deepEqual(problemsOf('load-shedding', { maxEventLoopUtilization: 1 }).map(([p]) => p), [`${at}.maxEventLoopUtilization`])
  assert.deepEqual(problemsOf('load-shedding', { maxEventLoopDelay: '1ms', maxEventLoopUtilization: 0.99 }), [])
})

test('durations a plugin waits on with a timer are refused past the longest timer (Node would fire them at once)', () => {
  const tooLong = '1000h'
  assert.deepEqual(problemsOf('load-shedding', { maxRssBytes: 2 ** 40, sampleInterval: tooLong }).map(([p]) => p), [`${at}.sampleInterval`])
  assert.deepEqual(problemsOf('fault-injection', { delay: { percent: 1, duration: tooLong } }).map(([p]) => p), [`${at}.delay.duration`])
  assert.deepEqual(problemsOf('rate-limit', { max: 1, store: { redis: { url: 'redis://127.0.0.1:6379', timeout: tooLong } } }).map(([p]) => p), [`${at}.store.redis.timeout`])
  // A window is no timer (a stored start time, a Redis expiry): a long one is fine.
  assert.deepEqual(problemsOf('rate-limit', { max: 1, timeWindow: tooLong }), [])
  assert.deepEqual(problemsOf('fault-injection', { delay: { percent: 1, duration: '596h' } }), [])
})

test('fault-injection: options that inject nothing (no delay, abort or response) are refused', () => {
  assert.deepEqual(problemsOf('fault-injection', {}).map(([p]) => p), [at])
  assert.deepEqual(problemsOf('fault-injection', { when: { header: 'x-chaos' } }).map(([p]) => p), [at])
})

test('a value outside a union of literals or of scalar types is named as such (not as "a mapping with one of the keys")', () => {
  const failMode = problemsOf('rate-limit', { max: 1, store: { redis: { url: 'redis://127.0.0.1:6379', failMode: 'close' } } })
  assert.deepEqual(failMode, [[`${at}.store.redis.failMode`, 'must be one of "open", "closed", got string "close"']])
  const hints = validateConfigDocument({
    discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9 }] } } } },
    routes: [{ name: 'r', destination: { service: 'svc' }, plugins: [{ name: 'rate-limit', options: { max: 1, store: { redis: { url: 'redis://h', failMode: 'close' } } } }] }]
  }).problems.map((p) => p.hint)
  assert.deepEqual(hints, ['did you mean "closed"?'])
  assert.deepEqual(problemsOf('jwt', { secret: 's'.repeat(32), issuer: 5, algorithms: ['HS257'] }), [
    [`${at}.algorithms[0]`, 'must be one of "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512", got string "HS257"'],
    [`${at}.issuer`, 'must be string or array, got number 5']
  ])
})
