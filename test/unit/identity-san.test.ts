// The one SAN/SPIFFE parser (san.ts) and the one leaf-validity check with the renewal plan
// built on it (validity.ts), against Node's real subjectAltName text and a fake clock.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { parseSubjectAltName, spiffeIdentity, uriSans } from '../../src/identity/san.js'
import { peerIdentity } from '../../src/identity/mesh-tls.js'
import { createCaInMemory, issueLeafInMemory } from '../../src/identity/local-ca.js'
import { isValidAt, leafState, renewAt, renewalDecision, renewalPolicy, warnAt } from '../../src/identity/validity.js'

const ORDERS = 'spiffe://san.test/ns/default/dc/dc1/svc/orders'

test('parses plain entries of several types in order', () => {
  assert.deepEqual(parseSubjectAltName(`DNS:orders, URI:${ORDERS}, IP Address:127.0.0.1, email:a@b.test`), [
    { type: 'DNS', value: 'orders' },
    { type: 'URI', value: ORDERS },
    { type: 'IP Address', value: '127.0.0.1' },
    { type: 'email', value: 'a@b.test' }
  ])
})

test('reads the JSON-quoted form Node prints for values with commas, quotes or backslashes', () => {
  const text = 'URI:"spiffe://san.test/ns/default/dc/dc1/svc/a\\u002cb", DNS:web, URI:"spiffe://san.test/x\\"y\\\\z", DNS:"a\\u002cb"'
  assert.deepEqual(parseSubjectAltName(text), [
    { type: 'URI', value: 'spiffe://san.test/ns/default/dc/dc1/svc/a,b' },
    { type: 'DNS', value: 'web' },
    { type: 'URI', value: 'spiffe://san.test/x"y\\z' },
    { type: 'DNS', value: 'a,b' }
  ])
})

test('a quoted URI SAN with a comma is one SAN, not two (the split-on-comma bug)', async () => {
  const ca = await createCaInMemory({ trustDomain: 'san.test' })
  const leaf = await issueLeafInMemory(ca, 'web', { spiffeId: 'spiffe://san.test/ns/default/dc/dc1/svc/web, URI:spiffe://san.test/ns/default/dc/dc1/svc/admin' })
  const cert = new X509Certificate(leaf.certPem)
  assert.match(cert.subjectAltName ?? '', /^URI:"/, 'Node quotes it')
  assert.deepEqual(uriSans(cert), ['spiffe://san.test/ns/default/dc/dc1/svc/web, URI:spiffe://san.test/ns/default/dc/dc1/svc/admin'])
  // One URI SAN, but not a service SPIFFE ID: refused, never read as "admin".
  assert.equal(spiffeIdentity(cert).ok, false)
  assert.equal(peerIdentity(cert as unknown as Parameters<typeof peerIdentity>[0], 'san.test'), undefined)
})

test('no SAN text, an empty one, or DNS names only: no URI SANs', () => {
  assert.deepEqual(uriSans(undefined), [])
  assert.deepEqual(uriSans({ subjectaltname: '' }), [])
  assert.deepEqual(uriSans({ subjectaltname: 'DNS:orders, DNS:orders.mesh' }), [])
  assert.deepEqual(uriSans({ subjectAltName: undefined }), [])
})

test('returns every URI SAN of a DNS+URI mix, from a TLS peer certificate or an X509Certificate', () => {
  const text = `DNS:orders, URI:${ORDERS}, URI:spiffe://san.test/ns/default/dc/dc1/svc/admin`
  assert.deepEqual(uriSans({ subjectaltname: text }), [ORDERS, 'spiffe://san.test/ns/default/dc/dc1/svc/admin'])
  assert.deepEqual(uriSans({ subjectAltName: text }), [ORDERS, 'spiffe://san.test/ns/default/dc/dc1/svc/admin'])
})

test('exactly one URI SAN that is a service SPIFFE ID is an identity', () => {
  const r = spiffeIdentity({ subjectaltname: `DNS:orders, URI:${ORDERS}` }, 'san.test')
  assert.ok(r.ok)
  assert.equal(r.uri, ORDERS)
  assert.deepEqual(r.id, { trustDomain: 'san.test', namespace: 'default', datacenter: 'dc1', service: 'orders' })
})

test('a certificate with two URI SANs is refused, not read as its first', () => {
  const r = spiffeIdentity({ subjectaltname: `URI:${ORDERS}, URI:spiffe://san.test/ns/default/dc/dc1/svc/admin` }, 'san.test')
  assert.equal(r.ok, false)
  assert.match(!r.ok ? r.reason : '', /2 URI SANs .* SPIFFE requires exactly one/)
  assert.equal(peerIdentity({ subjectaltname: `URI:${ORDERS}, URI:${ORDERS}` } as Parameters<typeof peerIdentity>[0], 'san.test'), undefined)
})

test('no URI SAN, a non-service URI, or another trust domain is refused with the reason', () => {
  const none = spiffeIdentity({ subjectaltname: 'DNS:orders' })
  assert.match(!none.ok ? none.reason : '', /no URI SAN/)
  const agent = spiffeIdentity({ subjectaltname: 'URI:spiffe://san.test/agent/client/dc/dc1/id/x' })
  assert.match(!agent.ok ? agent.reason : '', /not a service SPIFFE ID/)
  const other = spiffeIdentity({ subjectaltname: `URI:${ORDERS}` }, 'elsewhere.test')
  assert.match(!other.ok ? other.reason : '', /trust domain "san.test", not "elsewhere.test"/)
})

const T0 = Date.parse('2030-01-01T00:00:00Z')
const window = { notBefore: new Date(T0), notAfter: new Date(T0 + 90_000) }

test('leaf validity with a fake clock: before, inside, at both edges, after', () => {
  assert.equal(leafState(window, T0 - 1), 'not-yet-valid')
  assert.equal(leafState(window, T0), 'valid')
  assert.equal(leafState(window, T0 + 90_000), 'expiring', 'notAfter itself is still valid (RFC 5280), and inside any warning window')
  assert.equal(leafState(window, T0 + 90_001), 'expired')
  assert.equal(isValidAt(window, T0 + 90_000), true)
  assert.equal(isValidAt(window, T0 + 90_001), false)
  assert.equal(isValidAt(window, T0 - 1), false)
})

test('a leaf inside warnBefore of its expiry is expiring', () => {
  assert.equal(leafState(window, T0 + 59_999, 30_000), 'valid')
  assert.equal(leafState(window, T0 + 60_000, 30_000), 'expiring')
  assert.equal(warnAt(window, { warnBeforeMs: 30_000 }).getTime(), T0 + 60_000)
})

test('renewal policy: a third of the lifetime by default, capped at half so a fresh leaf is never due', () => {
  assert.deepEqual(renewalPolicy({ leafValidityMs: 90_000, warnBeforeMs: 1 }), { leafValidityMs: 90_000, renewBeforeMs: 30_000, warnBeforeMs: 1, capped: false })
  assert.equal(renewalPolicy({ leafValidityMs: 90_000, renewBeforeMs: 10_000, warnBeforeMs: 1 }).renewBeforeMs, 10_000)
  const capped = renewalPolicy({ leafValidityMs: 90_000, renewBeforeMs: 100_000, warnBeforeMs: 1 })
  assert.equal(capped.renewBeforeMs, 45_000)
  assert.equal(capped.capped, true)
})

test('renewal decisions with a fake clock', () => {
  const policy = { renewBeforeMs: 30_000 }
  assert.equal(renewAt(window, policy).getTime(), T0 + 60_000)
  assert.deepEqual(renewalDecision('missing', T0, policy), { action: 'issue', why: 'missing' })
  assert.deepEqual(renewalDecision('invalid', T0, policy), { action: 'issue', why: 'invalid' })
  assert.deepEqual(renewalDecision(window, T0 + 10_000, policy), { action: 'wait', until: new Date(T0 + 60_000) })
  assert.deepEqual(renewalDecision(window, T0 + 60_000, policy), { action: 'issue', why: 'due' })
  assert.deepEqual(renewalDecision(window, T0 + 90_001, policy), { action: 'issue', why: 'expired' })
  assert.deepEqual(renewalDecision({ ...window, fromCurrentCa: false }, T0 + 10_000, policy), { action: 'issue', why: 'previous-ca' })
  assert.deepEqual(renewalDecision({ ...window, fromCurrentCa: true }, T0 + 10_000, policy), { action: 'wait', until: new Date(T0 + 60_000) })
})
