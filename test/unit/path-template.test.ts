// Path templates: `:name` parameters, a final `*`, and the errors for bad templates.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { compileTemplate } from '../../src/config/path-template.js'

function params (template: string, path: string): Record<string, string | undefined> | undefined {
  const t = compileTemplate(template)
  const m = t.regex.exec(path)
  if (m === null) return undefined
  return Object.fromEntries(t.params.map((name, i) => [name, m[i + 1]]))
}

test('a literal template matches only itself', () => {
  assert.deepEqual(params('/health', '/health'), {})
  assert.equal(params('/health', '/health/'), undefined)
  assert.equal(params('/health', '/healthz'), undefined)
})

test(':name takes exactly one non-empty segment', () => {
  assert.deepEqual(compileTemplate('/users/:id').params, ['id'])
  assert.deepEqual(params('/users/:id', '/users/42'), { id: '42' })
  assert.equal(params('/users/:id', '/users/'), undefined)
  assert.equal(params('/users/:id', '/users/42/x'), undefined)
  assert.deepEqual(params('/users/:userId/posts/:post_id', '/users/a/posts/b'), { userId: 'a', post_id: 'b' })
})

test('a final * takes the rest, including nothing', () => {
  assert.deepEqual(compileTemplate('/files/*').params, ['*'])
  assert.deepEqual(params('/files/*', '/files/a/b/c'), { '*': 'a/b/c' })
  assert.deepEqual(params('/files/*', '/files/'), { '*': '' })
  assert.deepEqual(params('/files/*', '/files'), { '*': undefined })
  assert.equal(params('/files/*', '/filesystem'), undefined)
  assert.deepEqual(params('/users/:id/*', '/users/7/a/b'), { id: '7', '*': 'a/b' })
})

test('the root template and a trailing slash are literal', () => {
  assert.deepEqual(params('/', '/'), {})
  assert.equal(params('/', '/a'), undefined)
  assert.deepEqual(params('/users/', '/users/'), {})
  assert.equal(params('/users/', '/users'), undefined)
})

test('regular-expression characters in literal text are literal', () => {
  assert.deepEqual(params('/v1.0/:id', '/v1.0/3'), { id: '3' })
  assert.equal(params('/v1.0/:id', '/v1x0/3'), undefined)
  assert.deepEqual(params('/a+b/(c)', '/a+b/(c)'), {})
})

test('literalLength counts literal text (more literal text, more specific)', () => {
  assert.equal(compileTemplate('/users/:id').literalLength, '/users'.length)
  assert.equal(compileTemplate('/:a/:b').literalLength, 0)
  assert.ok(compileTemplate('/users/:id/posts').literalLength > compileTemplate('/users/:id').literalLength)
})

test('a template must start with /', () => {
  assert.throws(() => compileTemplate('users/:id'), /must start with \//)
})

test('* anywhere but last is an error', () => {
  assert.throws(() => compileTemplate('/a/*/b'), /"\*" must be the last segment of "\/a\/\*\/b"/)
})

test('a parameter named twice is an error', () => {
  assert.throws(() => compileTemplate('/a/:id/b/:id'), /parameter ":id" appears twice/)
})

test('text mixed with : or * in one segment is an error naming the segment', () => {
  assert.throws(() => compileTemplate('/a/x:y'), /segment "x:y"/)
  assert.throws(() => compileTemplate('/a/file*'), /segment "file\*"/)
  assert.throws(() => compileTemplate('/a/:'), /segment ":"/)
  assert.throws(() => compileTemplate('/a/:1x'), /segment ":1x"/)
})

test('an empty segment is an error: a normalised path never has // (regression: template that never matches)', () => {
  assert.throws(() => compileTemplate('/a//b'), /empty segment/)
  assert.throws(() => compileTemplate('//a'), /empty segment/)
})
