// Secret redaction for config shown by the admin API: which values are hidden, and that the
// rest of the config is shown as it is.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { REDACTED, isSecretKey, redactSecrets } from '../../src/config/redact.js'

test('the Consul token is redacted', () => {
  const out = redactSecrets({ discovery: { consul: { address: '127.0.0.1:8500', token: 'b1gs3cr3t' } } })
  assert.deepEqual(out, { discovery: { consul: { address: '127.0.0.1:8500', token: REDACTED } } })
})

test('keys named like token, secret, password, api key, authorization or private key are redacted, in any case or spelling', () => {
  for (const key of ['token', 'consulToken', 'client_secret', 'password', 'x-api-key', 'Authorization', 'privateKey', 'key']) {
    assert.equal(isSecretKey(key), true, key)
  }
  for (const key of ['name', 'address', 'keepAliveTimeout', 'tags', 'meta', 'module']) {
    assert.equal(isSecretKey(key), false, key)
  }
})

test('secrets in plugin options and header values are redacted', () => {
  const route = { name: 'r', plugins: [{ name: 'token', options: { token: 's3cret-token', header: 'x-auth' } }, { name: 'headers', options: { request: { set: { authorization: 'Bearer abc', 'x-trace': '1' } } } }] }
  assert.deepEqual(redactSecrets(route), {
    name: 'r',
    plugins: [{ name: 'token', options: { token: REDACTED, header: 'x-auth' } }, { name: 'headers', options: { request: { set: { authorization: REDACTED, 'x-trace': '1' } } } }]
  })
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
