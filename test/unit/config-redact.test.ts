// Secret redaction, the one rule for every view, log line and error message: which values are
// hidden, and that the rest is shown as it is.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { REDACTED, isSecretName, isSecretQueryName, redactAt, redactQuery, redactedJson, redactSecrets, redactText } from '../../src/config/redact.js'

test('the Consul token is redacted', () => {
  const out = redactSecrets({ discovery: { consul: { address: '127.0.0.1:8500', token: 'b1gs3cr3t' } } })
  assert.deepEqual(out, { discovery: { consul: { address: '127.0.0.1:8500', token: REDACTED } } })
})

test('keys named like token, secret, password, api key, credential, auth, cookie or key are redacted, in any case or spelling', () => {
  for (const key of ['token', 'consulToken', 'client_secret', 'password', 'passwd', 'api_key', 'apikey', 'x-api-key', 'credentials', 'Authorization', 'proxy-authorization', 'privateKey', 'access_key', 'key', 'cookie', 'Set-Cookie', 'x-auth', 'x-auth-user', 'x-internal-token', 'access_token']) {
    assert.equal(isSecretName(key), true, key)
  }
  for (const key of ['name', 'address', 'keepAliveTimeout', 'tags', 'meta', 'module', 'zoneMetaKey', 'header', 'x-trace']) {
    assert.equal(isSecretName(key), false, key)
  }
})

test('secrets in plugin options and header values are redacted', () => {
  const route = { name: 'r', plugins: [{ name: 'token', options: { token: 's3cret-token', header: 'x-auth' } }, { name: 'headers', options: { request: { set: { authorization: 'Bearer abc', 'x-trace': '1' } } } }] }
  assert.deepEqual(redactSecrets(route), {
    name: 'r',
    plugins: [{ name: 'token', options: { token: REDACTED, header: 'x-auth' } }, { name: 'headers', options: { request: { set: { authorization: REDACTED, 'x-trace': '1' } } } }]
  })
})

test('regression: cookie and x-auth header values set by a plugin are redacted', () => {
  const set = { cookie: 'session=abc', 'set-cookie': 'a=b', 'x-auth': 'u1', 'x-auth-signature': 'sig', 'x-request-source': 'edge' }
  assert.deepEqual(redactSecrets({ set }), { set: { cookie: REDACTED, 'set-cookie': REDACTED, 'x-auth': REDACTED, 'x-auth-signature': REDACTED, 'x-request-source': 'edge' } })
})

test('regression: route header and query match values of credential-bearing names are redacted', () => {
  const match = {
    headers: [{ name: 'x-internal-token', exact: 'tok-123' }, { name: 'Authorization', prefix: 'Bearer s3' }, { name: 'cookie', regex: 'sid=[a-z]+' }, { name: 'x-beta', exact: '1' }],
    query: [{ name: 'access_token', exact: 'qs-secret' }, { name: 'page', exact: '2' }]
  }
  assert.deepEqual(redactSecrets({ match }), {
    match: {
      headers: [{ name: 'x-internal-token', exact: REDACTED }, { name: 'Authorization', prefix: REDACTED }, { name: 'cookie', regex: REDACTED }, { name: 'x-beta', exact: '1' }],
      query: [{ name: 'access_token', exact: REDACTED }, { name: 'page', exact: '2' }]
    }
  })
})

test('regression: passwords inside URLs are redacted (URL userinfo), wherever the URL is', () => {
  assert.deepEqual(redactSecrets({ upstream: 'https://svc:pa55@db.internal:5432/x', list: ['redis://:pw@r:6379'], plain: 'http://host/a@b' }), {
    upstream: `https://${REDACTED}@db.internal:5432/x`,
    list: [`redis://${REDACTED}@r:6379`],
    plain: 'http://host/a@b'
  })
  assert.equal(redactText('connect to http://user:p%40ss@consul:8500 failed'), `connect to http://${REDACTED}@consul:8500 failed`)
  assert.equal(redactText('https://ghp_TOKEN@github.com/x.git'), `https://${REDACTED}@github.com/x.git`)
})

test('a PEM private key is redacted under any key name', () => {
  const pem = '-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n'
  assert.deepEqual(redactSecrets({ options: { material: pem, cert: '-----BEGIN CERTIFICATE-----' } }), { options: { material: REDACTED, cert: '-----BEGIN CERTIFICATE-----' } })
})

test('a section whose name looks secret (mesh.authorization) is walked, not hidden', () => {
  const mesh = { authorization: { provider: 'rules', rules: [{ source: 'web', destination: 'api', action: 'allow' }] } }
  assert.deepEqual(redactSecrets(mesh), mesh)
})

test('every item of a secret-named list is redacted', () => {
  assert.deepEqual(redactSecrets({ tokens: ['a', 'b'] }), { tokens: [REDACTED, REDACTED] })
})

test('redaction copies: the input config is not changed', () => {
  const config = Object.freeze({ token: 'x' })
  redactSecrets(config)
  assert.equal(config.token, 'x')
})

test('redactedJson is the JSON of redactSecrets', () => {
  const value = { meta: { api_key: 'k1', zone: 'a' }, url: 'http://u:p@h', n: 1 }
  assert.equal(redactedJson(value), JSON.stringify(redactSecrets(value)))
  assert.deepEqual(JSON.parse(redactedJson(value)), { meta: { api_key: REDACTED, zone: 'a' }, url: `http://${REDACTED}@h`, n: 1 })
})

test('redactAt hides what redactedJson hides at the same place, and only that', () => {
  const doc = { discovery: { consul: { token: 5 } }, routes: [{ match: { headers: [{ name: 'x-api-key', exact: 7 }, { name: 'x-beta', exact: 8 }] } }], tokens: ['a'], mesh: { authorization: { defaultAction: 'maybe' } } }
  assert.equal(redactAt(doc, '/discovery/consul/token', 5), REDACTED)
  assert.equal(redactAt(doc, '/routes/0/match/headers/0/exact', 7), REDACTED)
  assert.equal(redactAt(doc, '/routes/0/match/headers/1/exact', 8), 8)
  assert.equal(redactAt(doc, '/tokens/0', 'a'), REDACTED)
  assert.equal(redactAt(doc, '/mesh/authorization/defaultAction', 'maybe'), 'maybe')
  assert.equal(redactAt(doc, '/routes/0/match/hosts/0', 'http://u:p@h'), `http://${REDACTED}@h`)
})

test('query parameters that carry credentials are recognised by name, in any case or spelling; ordinary ones are not', () => {
  for (const name of ['access_token', 'token', 'id_token', 'refresh_token', 'api_key', 'apikey', 'API-KEY', 'key', 'password', 'secret', 'sig', 'signature', 'X-Amz-Signature', 'X-Amz-Credential', 'code', 'client_secret', 'auth', 'jwt', 'session', 'access%5Ftoken']) {
    assert.equal(isSecretQueryName(name), true, name)
  }
  for (const name of ['page', 'q', 'sort', 'limit', 'state', 'redirect_uri', 'zip%ZZcode', 'codec', 'monkey']) {
    assert.equal(isSecretQueryName(name), false, name)
  }
})

test('redactQuery hides credential values and keeps every other byte of the target', () => {
  assert.equal(redactQuery('/a/b'), '/a/b')
  assert.equal(redactQuery('/a?'), '/a?')
  assert.equal(redactQuery('/a?page=2&q=x%20y'), '/a?page=2&q=x%20y')
  assert.equal(redactQuery('/a?access_token=S1&page=2'), `/a?access_token=${REDACTED}&page=2`)
  assert.equal(redactQuery('/a?page=2&TOKEN=S1'), `/a?page=2&TOKEN=${REDACTED}`)
  assert.equal(redactQuery('/a?token=&key&page=2'), '/a?token=&key&page=2', 'nothing to hide without a value')
  assert.equal(redactQuery('/a?token=a=b&page=2&sig=S2'), `/a?token=${REDACTED}&page=2&sig=${REDACTED}`)
  const same = '/plain/path'
  assert.equal(redactQuery(same), same)
})

test('regression: a URL with a token in its query is redacted in free text (error messages, stacks)', () => {
  assert.equal(redactText('GET http://h:1/a?access_token=S1&page=2 failed'), `GET http://h:1/a?access_token=${REDACTED}&page=2 failed`)
  assert.equal(redactText('on /x?page=2&client_secret=S2 "quoted"'), `on /x?page=2&client_secret=${REDACTED} "quoted"`)
  assert.equal(redactText('what? page=2 & key'), 'what? page=2 & key')
  assert.deepEqual(redactSecrets({ jwks: 'https://idp/keys?api_key=S3&v=1' }), { jwks: `https://idp/keys?api_key=${REDACTED}&v=1` })
})

test('every value of an OTLP exporter\'s headers is redacted, whatever the header is called; its endpoint is shown', () => {
  const doc = { telemetry: { tracing: { otlp: { endpoint: 'https://otlp.example:4318', headers: { 'x-honeycomb-team': 'hc-key', 'dd-api-key': 'dd-key', 'x-scope-orgid': 'tenant-1' } } } } }
  assert.deepEqual(redactSecrets(doc), { telemetry: { tracing: { otlp: { endpoint: 'https://otlp.example:4318', headers: { 'x-honeycomb-team': REDACTED, 'dd-api-key': REDACTED, 'x-scope-orgid': REDACTED } } } } })
  assert.equal(redactAt(doc, '/telemetry/tracing/otlp/headers/x-scope-orgid', 'tenant-1'), REDACTED)
  assert.equal(redactAt(doc, '/telemetry/tracing/otlp/endpoint', 'https://otlp.example:4318'), 'https://otlp.example:4318')
  // Other header maps keep the name rule.
  assert.deepEqual(redactSecrets({ headers: { 'x-scope-orgid': 'tenant-1' } }), { headers: { 'x-scope-orgid': 'tenant-1' } })
})
