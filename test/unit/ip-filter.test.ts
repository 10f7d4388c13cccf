// ip-filter's address rules: IPv4 and IPv6 addresses and CIDR ranges, IPv4-mapped IPv6 read
// as IPv4, and entries that are neither refused with their text.
import test from 'node:test'
import assert from 'node:assert/strict'
import { addressFamily, blockListOf } from '../../plugins/ip-filter/index.js'

function matches (entries: string[], address: string): boolean {
  const a = addressFamily(address)!
  return blockListOf(entries, 'allow').check(a.address, a.family)
}

test('ip-filter: IPv4 ranges and single addresses', () => {
  assert.equal(matches(['10.0.0.0/8'], '10.200.3.4'), true)
  assert.equal(matches(['10.0.0.0/8'], '11.0.0.1'), false)
  assert.equal(matches(['192.168.1.7'], '192.168.1.7'), true)
  assert.equal(matches(['192.168.1.7'], '192.168.1.8'), false)
  assert.equal(matches(['0.0.0.0/0'], '203.0.113.9'), true)
})

test('ip-filter: IPv6 ranges, and an IPv6 range never matches an IPv4 client', () => {
  assert.equal(matches(['2001:db8::/32'], '2001:db8:abcd::1'), true)
  assert.equal(matches(['2001:db8::/32'], '2001:db9::1'), false)
  assert.equal(matches(['::1'], '::1'), true)
  assert.equal(matches(['2001:db8::/32'], '10.0.0.1'), false)
})

test('ip-filter: an IPv4-mapped IPv6 client address is checked as IPv4', () => {
  assert.deepEqual(addressFamily('::ffff:10.1.2.3'), { address: '10.1.2.3', family: 'ipv4' })
  assert.equal(matches(['10.0.0.0/8'], '::ffff:10.1.2.3'), true)
})

test('ip-filter: entries that are not addresses or ranges are refused, naming them', () => {
  for (const bad of ['10.0.0.0/33', 'example.com', '2001:db8::/129', '10.0.0.1/', '1.2.3']) {
    assert.throws(() => blockListOf([bad], 'deny'), new RegExp(`deny: "${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}" is not an IP address`))
  }
})
