// The Host header check the listeners run before routing (RFC 9112 §3.2, RFC 3986 §3.2.2):
// which Host lines pass and which are refused, as a table.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { hostHeaderProblem, hostValueProblem } from '../../src/gateway/host-header.js'

const HTTP11 = { httpVersion: '1.1', absoluteForm: false }

const valid: string[] = [
  'example.com',
  'example.com:8080',
  'EXAMPLE.com:443',
  'orders',
  'orders.mesh',
  'a_b~c-d.example',
  '127.0.0.1',
  '127.0.0.1:8080',
  '[::1]',
  '[::1]:80',
  '[2001:db8::8:800:200c:417a]:65535',
  '[::ffff:127.0.0.1]',
  'example.com:0',
  'admin.example.com.'
]

const invalid: Array<[string, RegExp]> = [
  ['127.0.0.1:8080, evil.invalid', /list/],
  ['a,b', /list/],
  [':99999', /empty host/],
  ['example.com:99999', /port/],
  ['example.com:-1', /port/],
  ['example.com:abc', /port/],
  ['example.com:', /port/],
  ['example.com:123456', /port/],
  [':-1', /empty host/],
  [':abc', /empty host/],
  ['exa mple.com', /characters/],
  ['example.com/evil', /characters/],
  ['user@example.com', /characters/],
  ['[zz]', /not an IPv6/],
  ['[::1', /closing/],
  ['[', /closing/],
  ['[]', /not an IPv6/],
  ['[127.0.0.1]', /not an IPv6/],
  ['[fe80::1%eth0]', /not an IPv6/],
  ['[::1]x', /after the IPv6/],
  ['[::1]:', /port/],
  ['[::1]:70000', /port/],
  ['::1', /empty host/],
  ['example.com:80:90', /port/],
  ['exa%41mple.com', /characters/]
]

for (const value of valid) {
  test(`Host ${JSON.stringify(value)} is accepted`, () => {
    assert.equal(hostValueProblem(value), undefined)
    assert.equal(hostHeaderProblem(['Host', value], HTTP11), undefined)
  })
}

for (const [value, why] of invalid) {
  test(`Host ${JSON.stringify(value)} is refused`, () => {
    const problem = hostHeaderProblem(['Host', value], HTTP11)
    assert.ok(problem !== undefined, 'refused')
    assert.match(problem, why)
  })
}

test('two Host lines are refused even when both are valid and equal', () => {
  assert.match(hostHeaderProblem(['Host', 'a.example', 'X-Other', 'y', 'host', 'a.example'], HTTP11) ?? '', /more than one Host line/)
})

test('HTTP/1.1 without Host is refused', () => {
  assert.match(hostHeaderProblem(['Accept', '*/*'], HTTP11) ?? '', /requires a Host/)
})

test('HTTP/1.0 without Host is accepted (no host to route on)', () => {
  assert.equal(hostHeaderProblem([], { httpVersion: '1.0', absoluteForm: false }), undefined)
})

test('an empty Host is refused in origin form', () => {
  assert.match(hostHeaderProblem(['Host', ''], HTTP11) ?? '', /empty Host/)
})

test('an empty Host is accepted with an absolute-form target, whose authority replaces it', () => {
  assert.equal(hostHeaderProblem(['Host', ''], { httpVersion: '1.1', absoluteForm: true }), undefined)
})

test('an invalid Host is refused with an absolute-form target too', () => {
  assert.notEqual(hostHeaderProblem(['Host', '[::1'], { httpVersion: '1.1', absoluteForm: true }), undefined)
})

test('a header merely containing "host" in its name is not a Host line', () => {
  assert.equal(hostHeaderProblem(['Host', 'a.example', 'X-Forwarded-Host', 'b, c', 'Hostx', '!'], HTTP11), undefined)
})
