// Hashing for the consistent-hash policies: a 32-bit MurmurHash3-style hash of a string,
// and the request key a policy hashes (a header, a cookie, a query parameter, the client
// address), read without building maps.
import type { PickRequest } from '../types.js'
import type { HashOn } from './types.js'

/** A well-mixed 32-bit hash of `s` (MurmurHash3 rounds over UTF-16 code units). */
export function hash32 (s: string, seed = 0): number {
  let h = (seed ^ s.length) | 0
  for (let i = 0; i < s.length; i++) {
    let k = s.charCodeAt(i)
    k = Math.imul(k, 0xcc9e2d51)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, 0x1b873593)
    h ^= k
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The value of `name` in a `k=v; k2=v2` or `k=v&k2=v2` list (first occurrence), or undefined. */
export function valueIn (list: string, name: string, separator: string, from = 0): string | undefined {
  let at = from
  while (at < list.length) {
    let end = list.indexOf(separator, at)
    if (end === -1) end = list.length
    let start = at
    while (start < end && list.charCodeAt(start) === 32) start++
    if (list.startsWith(name, start) && list.charCodeAt(start + name.length) === 61 /* = */ && start + name.length < end) {
      return list.slice(start + name.length + 1, end).trim()
    }
    at = end + 1
  }
  return undefined
}

export type HashKey = (request: PickRequest | undefined) => string | undefined

/** The function that reads a request's hash key; undefined when the request has none. */
export function hashKeyOf (on: HashOn): HashKey {
  if ('header' in on) {
    const name = on.header.toLowerCase()
    return (r) => {
      const v = r?.headers[name]
      return v === undefined ? undefined : Array.isArray(v) ? v.join(',') : v
    }
  }
  if ('cookie' in on) {
    const name = on.cookie
    return (r) => {
      const c = r?.headers.cookie
      return c === undefined ? undefined : valueIn(c, name, ';')
    }
  }
  if ('queryParameter' in on) {
    const name = on.queryParameter
    return (r) => {
      const s = r?.search
      return s === undefined || s.length < 2 ? undefined : valueIn(s, name, '&', s.charCodeAt(0) === 63 /* ? */ ? 1 : 0)
    }
  }
  return (r) => r?.clientAddress
}
