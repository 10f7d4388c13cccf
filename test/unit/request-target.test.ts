// The request-target normaliser every entry applies before routing, authorization and
// plugins: a table that reads as its specification (docs/routing.md, "Path normalisation").
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { normalizeRequestTarget, type EscapedSlashesAction } from '../../src/gateway/request-target.js'

const BAD = 'refused (400)'

/** The normalised target, or BAD when refused. */
function norm (url: string, escapedSlashes: EscapedSlashesAction = 'reject'): string {
  const t = normalizeRequestTarget(url, escapedSlashes)
  if ('problem' in t) {
    assert.ok(t.problem.length > 0, `a refusal says why (${url})`)
    return BAD
  }
  assert.equal(t.target, t.path + t.search, `target is path + search (${url})`)
  return t.target
}

function table (rows: ReadonlyArray<readonly [string, string]>, escapedSlashes: EscapedSlashesAction = 'reject'): void {
  for (const [input, want] of rows) assert.equal(norm(input, escapedSlashes), want, `${input} (escapedSlashes: ${escapedSlashes})`)
}

// ---------------------------------------------------------------- the bypass paths of issue 7

test('every spelling of /admin normalises to /admin (regression: pathPrefixes deny rule bypass)', () => {
  table([
    ['/admin', '/admin'],
    ['/x/../admin', '/admin'],
    ['//admin', '/admin'],
    ['/./admin', '/admin'],
    ['/%61dmin', '/admin'],
    ['/%2e%2e/admin', '/admin'],
    ['/a/%2E%2E/admin', '/admin'],
    ['/\\admin', '/admin'],
    ['/x\\..\\admin', '/admin']
  ])
})

test('escaped slashes are refused by default (regression: ..%2f climbing above a stripPrefix route)', () => {
  table([
    ['/..%2fadmin', BAD],
    ['/%2E%2E%2Fadmin', BAD],
    ['/x%2f..%2f..%2fadmin', BAD],
    ['/%5c..%5cadmin', BAD],
    ['/a%2Fb', BAD]
  ])
})

test('escapedSlashes unescape: escaped slashes become separators before dot segments are resolved', () => {
  table([
    ['/..%2fadmin', '/admin'],
    ['/%2E%2E%2Fadmin', '/admin'],
    ['/x%2f..%2f..%2fadmin', '/admin'],
    ['/%5c..%5cadmin', '/admin'],
    ['/a%2Fb', '/a/b']
  ], 'unescape')
})

test('escapedSlashes keep: escaped slashes stay encoded (upper-cased) and never separate segments', () => {
  table([
    ['/..%2fadmin', '/..%2Fadmin'],
    ['/%2E%2E%2Fadmin', '/..%2Fadmin'],
    ['/x%2f..%2f..%2fadmin', '/x%2F..%2F..%2Fadmin'],
    ['/%5c..%5cadmin', '/%5C..%5Cadmin'],
    ['/a%2fb/../c', '/c']
  ], 'keep')
})

test('decoding happens exactly once: a double-encoded dot stays an escape', () => {
  table([
    ['/%252e%252e/admin', '/%252e%252e/admin'],
    ['/%25%32%65', '/%252e'],
    ['/a%252Fb', '/a%252Fb']
  ])
})

test('overlong and other invalid UTF-8 escapes are refused (regression: %c0%ae read as a dot)', () => {
  table([
    ['/%c0%ae%c0%ae/admin', BAD],
    ['/%e0%80%ae', BAD],
    ['/%ff', BAD],
    ['/%c3', BAD],
    ['/%c3/', BAD],
    ['/%ed%a0%80', BAD],
    ['/%f4%90%80%80', BAD],
    ['/caf%c3%a9', '/caf%C3%A9'],
    ['/%e2%82%ac', '/%E2%82%AC'],
    ['/%f0%9f%98%80', '/%F0%9F%98%80']
  ])
})

test('a dot segment with path parameters (..; .;) is refused (regression: Tomcat resolves it as ..)', () => {
  table([
    ['/..;/admin', BAD],
    ['/x/..;jsessionid=1/admin', BAD],
    ['/.;/admin', BAD],
    ['/%2e%2e;/admin', BAD],
    ['/a;b/c', '/a;b/c'],
    ['/a/..;b', BAD]
  ])
})

test('an escaped NUL is refused', () => {
  table([['/a%00b', BAD]])
})

// ---------------------------------------------------------------- fragment and query

test('a fragment is stripped from the request target and never forwarded', () => {
  table([
    ['/a#frag', '/a'],
    ['/a?q=%2F#f', '/a?q=%2F'],
    ['/a#f?not=query', '/a'],
    ['/x/../a#f', '/a']
  ])
  const t = normalizeRequestTarget('/a?q=1#f', 'reject')
  assert.ok(!('problem' in t))
  assert.equal(t.path, '/a')
  assert.equal(t.search, '?q=1')
})

test('the query is kept byte for byte, escaped slashes, dots and bad escapes included', () => {
  for (const q of ['?q=%2F', '?a=1&b=two%20words&a=3&empty=&flag', '?p=../../etc', '?x=%zz', '?%2e%2E=%61', '?a=/b//c']) {
    const t = normalizeRequestTarget(`/x/./y${q}`, 'reject')
    assert.ok(!('problem' in t), q)
    assert.equal(t.search, q)
    assert.equal(t.path, '/x/y')
  }
})

// ---------------------------------------------------------------- dot segments, slashes, escapes

test('ordinary paths are left alone, the given string itself', () => {
  for (const p of ['/', '/a/b', '/a/b/', '/a.b/c..d', '/{x}', '/a/b?c=d', '/a-b_c~d']) {
    const t = normalizeRequestTarget(p, 'reject')
    assert.ok(!('problem' in t), p)
    assert.equal(t.target, p)
  }
})

test('dot segments are resolved and never climb above /', () => {
  table([
    ['/a/./b', '/a/b'],
    ['/a/../b', '/b'],
    ['/public/../admin', '/admin'],
    ['/a/b/..', '/a/'],
    ['/a/.', '/a/'],
    ['/..', '/'],
    ['/.', '/'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a/...', '/a/...'],
    ['/a/..b', '/a/..b']
  ])
})

test('double slashes collapse, a leading one too', () => {
  table([
    ['/a//b', '/a/b'],
    ['/a///b//', '/a/b/'],
    ['//evil.com/x', '/evil.com/x'],
    ['//..//admin', '/admin'],
    ['//', '/']
  ])
})

test('backslashes are slashes, without losing a segment (regression: /\\host taken as authority)', () => {
  table([
    ['/a\\b', '/a/b'],
    ['/\\evil.com/admin', '/evil.com/admin'],
    ['/public\\..\\admin', '/admin']
  ])
})

test('escapes of unreserved characters are decoded; the hex of other escapes is upper-cased', () => {
  table([
    ['/%41%7a%30-%2D%5f%7E', '/Az0--_~'],
    ['/a%20b', '/a%20b'],
    ['/a%c3%a9', '/a%C3%A9'],
    ['/a%3fb', '/a%3Fb'],
    ['/a%23b', '/a%23b'],
    ['/100%25', '/100%25'],
    ['/a%20b/%2e', '/a%20b/']
  ])
})

test('invalid percent-encoding is refused', () => {
  for (const p of ['/%zz', '/a%', '/a%2', '/100%zz/x', '/a%zz']) assert.equal(norm(p), BAD, p)
})

test('a target that is not a path is refused: *, absolute form, empty', () => {
  for (const p of ['*', 'http://x/a', '', '?a=1', 'a/b']) assert.equal(norm(p), BAD, JSON.stringify(p))
})

test('raw bytes outside printable ASCII are refused', () => {
  for (const p of ['/a b', '/caf\u00e9', '/a\u0000', '/\u2028']) assert.equal(norm(p), BAD, JSON.stringify(p))
})
