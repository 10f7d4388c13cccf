// The error catalogue: stable FASTMESH_ERR_* codes with a status and a description, kept in
// step with docs/errors.md (as fastify's test/internals/errors.test.js keeps lib/errors.js).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { catalogue, errorBody, fastmeshError, isFastmeshError, type ErrorKey, type FastmeshErrorCode } from '../../src/errors.js'
import { renderErrorsDoc } from '../../src/config/docs.js'

const docsDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../../docs')
const entries = Object.entries(catalogue) as Array<[ErrorKey, (typeof catalogue)[ErrorKey]]>

test('every code is FASTMESH_ERR_ followed by its catalogue key', () => {
  for (const [key, e] of entries) {
    assert.ok(e.code.startsWith('FASTMESH_ERR_'), e.code)
    assert.equal(e.code, `FASTMESH_ERR_${key}`)
    assert.match(e.code, /^FASTMESH_ERR_[A-Z0-9_]+$/)
  }
})

test('codes are unique', () => {
  const codes = entries.map(([, e]) => e.code)
  assert.equal(new Set(codes).size, codes.length)
})

test('every entry has an HTTP error status, a message and a one-sentence description', () => {
  for (const [key, e] of entries) {
    assert.ok(Number.isInteger(e.statusCode) && e.statusCode >= 400 && e.statusCode <= 599, `${key}: ${e.statusCode}`)
    assert.ok(e.message.length > 0, key)
    assert.ok(e.description.length > 0, key)
    assert.match(e.description, /[.)]$/, `${key}: a description is a sentence`)
  }
})

test('fastmeshError makes the catalogue error with code, status and formatted message', () => {
  for (const [key, e] of entries) {
    const args = Array.from({ length: (e.message.match(/%s/g) ?? []).length }, (_, i) => `arg${i}`)
    const err = fastmeshError(key, args)
    assert.ok(err instanceof Error)
    assert.equal(err.code, e.code)
    assert.equal(err.statusCode, e.statusCode)
    for (const a of args) assert.ok(err.message.includes(a), `${key}: ${err.message}`)
    assert.ok(isFastmeshError(err))
  }
})

test('fastmeshError keeps the cause', () => {
  const cause = new Error('ECONNREFUSED')
  const err = fastmeshError('UPSTREAM_FAILURE', ['127.0.0.1:1', 'users', 'refused'], cause)
  assert.equal((err as Error & { cause?: unknown }).cause, cause)
  assert.equal(err.message, 'Upstream 127.0.0.1:1 of service "users" failed: refused')
})

test('isFastmeshError is false for other errors and non-errors', () => {
  assert.equal(isFastmeshError(new Error('x')), false)
  assert.equal(isFastmeshError(Object.assign(new Error('x'), { code: 'ECONNRESET' })), false)
  assert.equal(isFastmeshError({ code: 'FASTMESH_ERR_INTERNAL' }), false)
  assert.equal(isFastmeshError(undefined), false)
})

test('errorBody is the documented JSON shape', () => {
  const code: FastmeshErrorCode = 'FASTMESH_ERR_NO_ROUTE'
  const body = JSON.parse(errorBody({ statusCode: 404, code, message: 'No route' }, 'req-1')) as unknown
  assert.deepEqual(body, { error: { code, message: 'No route', requestId: 'req-1' } })
})

test('docs/errors.md is what renderErrorsDoc() produces (run `npm run docs` if this fails)', async () => {
  const doc = await readFile(resolve(docsDir, 'errors.md'), 'utf8').catch(() => '')
  assert.ok(doc === renderErrorsDoc(), 'docs/errors.md is stale: run `npm run docs`')
})

test('docs/errors.md lists every code with its status', () => {
  const doc = renderErrorsDoc()
  for (const [, e] of entries) assert.ok(doc.includes(`| \`${e.code}\` | ${e.statusCode} |`), e.code)
})
