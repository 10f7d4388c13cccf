// The address a gateway registers for a listener (admin `meta.admin`, the inbound listener):
// one other hosts reach, never a wildcard, and never loopback when the host has another.
import test from 'node:test'
import assert from 'node:assert/strict'
import type { NetworkInterfaceInfo } from 'node:os'
import { reachableAddress } from '../../src/config/addresses.js'

const iface = (address: string, family: 'IPv4' | 'IPv6', internal: boolean): NetworkInterfaceInfo =>
  ({ address, family, internal, netmask: '', mac: '00:00:00:00:00:00', cidr: null, ...(family === 'IPv6' ? { scopeid: 0 } : {}) }) as NetworkInterfaceInfo

test('a named bind address is registered as it is', () => {
  assert.equal(reachableAddress('127.0.0.1'), '127.0.0.1')
  assert.equal(reachableAddress('10.1.2.3'), '10.1.2.3')
})

test('a wildcard bind registers the first non-loopback IPv4 address, else loopback', () => {
  const host = () => ({ lo: [iface('127.0.0.1', 'IPv4', true), iface('::1', 'IPv6', true)], eth0: [iface('fe80::1', 'IPv6', false), iface('10.0.0.7', 'IPv4', false)] })
  assert.equal(reachableAddress('0.0.0.0', host), '10.0.0.7')
  assert.equal(reachableAddress('::', host), '10.0.0.7')
  assert.equal(reachableAddress('0.0.0.0', () => ({ lo: [iface('127.0.0.1', 'IPv4', true)] })), '127.0.0.1')
})
