// Who may use the admin API (src/admin/access.ts): the Host names each kind of bind answers
// to, the bearer token, and what counts as cross-origin. The wiring is in
// test/integration/admin-access.test.ts.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AdminAccess, isJsonContentType } from '../../src/admin/access.js'

const TOKEN = 'a3f9c2e1d4b5a6978877665544332211'

function access (address: string, more: { boundAddress?: string, token?: string, allowedHosts?: string[], interfaces?: string[] } = {}): AdminAccess {
  return new AdminAccess({
    address,
    boundAddress: more.boundAddress ?? address,
    token: more.token,
    allowedHosts: more.allowedHosts ?? [],
    interfaceAddresses: () => more.interfaces ?? ['127.0.0.1', '::1', '10.0.0.5', 'fe80::1']
  })
}

function accepts (a: AdminAccess, host: string): boolean {
  return a.hostProblem(['Host', host], '1.1', host) === undefined
}

test('a loopback bind answers to localhost, 127.0.0.1, [::1] and the bound address, with or without a port', () => {
  const a = access('127.0.0.2')
  for (const host of ['localhost', 'localhost:15000', 'LOCALHOST:15000', '127.0.0.1', '127.0.0.1:15000', '[::1]', '[::1]:15000', '[0:0:0:0:0:0:0:1]:15000', '127.0.0.2', '127.0.0.2:15000']) {
    assert.ok(accepts(a, host), host)
  }
})

test('regression: a loopback bind refuses a DNS-rebinding name and other hosts\' addresses', () => {
  const a = access('127.0.0.1')
  for (const host of ['evil.example', 'evil.example:15000', 'localhost.evil.example', '10.0.0.5:15000', '127.0.0.1.nip.io']) {
    assert.ok(!accepts(a, host), host)
  }
})

test('a bind by the name localhost also answers to the address it got', () => {
  assert.ok(accepts(access('localhost', { boundAddress: '127.0.0.1' }), '127.0.0.1:15000'))
  assert.ok(accepts(access('localhost', { boundAddress: '::1' }), '[::1]:15000'))
})

test('a malformed or missing Host is refused', () => {
  const a = access('127.0.0.1')
  assert.notEqual(a.hostProblem(['Host', 'localhost', 'Host', 'localhost'], '1.1', 'localhost'), undefined, 'two Host lines')
  assert.notEqual(a.hostProblem(['Host', 'local host'], '1.1', 'local host'), undefined)
  assert.notEqual(a.hostProblem([], '1.0', undefined), undefined, 'HTTP/1.0 without Host')
})

test('allowedHosts add names to any bind', () => {
  const a = access('127.0.0.1', { allowedHosts: ['gateway.internal', '[fd00::5]'] })
  assert.ok(accepts(a, 'gateway.internal:15000'))
  assert.ok(accepts(a, 'GATEWAY.internal'))
  assert.ok(accepts(a, '[fd00::5]:15000'))
  assert.ok(!accepts(a, 'other.internal'))
})

test('a specific non-loopback bind answers to its own address and allowedHosts only', () => {
  const a = access('10.0.0.5', { token: TOKEN, allowedHosts: ['gw.internal'] })
  assert.ok(accepts(a, '10.0.0.5:15000'))
  assert.ok(accepts(a, 'gw.internal'))
  assert.ok(!accepts(a, 'localhost'))
  assert.ok(!accepts(a, 'evil.example'))
})

test('a wildcard bind without allowedHosts takes any well-formed Host (its names are unknowable; the token guards it)', () => {
  const a = access('0.0.0.0', { token: TOKEN })
  assert.ok(accepts(a, 'fastmesh-demo:15000'))
  assert.ok(accepts(a, '172.18.0.2:15000'))
  assert.ok(!accepts(a, 'bad host'))
})

test('a wildcard bind with allowedHosts answers to loopback names, this host\'s interface addresses and the list', () => {
  for (const address of ['0.0.0.0', '::']) {
    const a = access(address, { token: TOKEN, allowedHosts: ['fastmesh-demo'] })
    for (const host of ['localhost:15000', '127.0.0.1', '[::1]:15000', '10.0.0.5:15000', '[fe80::1]', 'fastmesh-demo:15000']) assert.ok(accepts(a, host), `${address} ${host}`)
    assert.ok(!accepts(a, 'evil.example:15000'), address)
    assert.ok(!accepts(a, '10.0.0.6:15000'), address)
  }
})

test('the token is required when set: Bearer scheme, exact token', () => {
  const a = access('127.0.0.1', { token: TOKEN })
  assert.equal(a.authorized(`Bearer ${TOKEN}`), true)
  assert.equal(a.authorized(`bearer ${TOKEN}`), true)
  for (const header of [undefined, '', `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(1)}`, `Basic ${TOKEN}`, TOKEN, 'Bearer ']) {
    assert.equal(a.authorized(header), false, String(header))
  }
})

test('without a token every request is authorized (loopback only: validation refuses the rest)', () => {
  assert.equal(access('127.0.0.1').authorized(undefined), true)
})

test('cross-origin: an Origin other than http:// plus the request\'s Host, or null', () => {
  const a = access('127.0.0.1')
  assert.equal(a.crossOrigin(undefined, 'localhost:15000'), false, 'no Origin: a tool, not a page')
  assert.equal(a.crossOrigin('http://localhost:15000', 'localhost:15000'), false)
  assert.equal(a.crossOrigin('http://LOCALHOST:15000', 'localhost:15000'), false)
  assert.equal(a.crossOrigin('http://127.0.0.1', '127.0.0.1:80'), false, 'default port')
  for (const origin of ['http://evil.example', 'http://evil.example:15000', 'null', 'https://localhost:15000', 'http://localhost:15001', 'http://127.0.0.1:15000']) {
    assert.equal(a.crossOrigin(origin, 'localhost:15000'), true, origin)
  }
})

test('JSON content types: application/json with or without parameters, nothing else', () => {
  for (const t of ['application/json', 'application/json; charset=utf-8', 'Application/JSON;charset=UTF-8']) assert.equal(isJsonContentType(t), true, t)
  for (const t of [undefined, '', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonp', 'text/plain; application/json']) assert.equal(isJsonContentType(t), false, String(t))
})
