// The one service-name rule (src/config/names.ts): the config schema, the CLI and the local CA
// accept and refuse exactly the same names.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { SERVICE_NAME_PATTERN, isServiceName } from '../../src/config/names.js'
import { validateConfigDocument } from '../../src/config/validate.js'
import { assertServiceName } from '../../src/identity/local-ca.js'
import { spawnCli } from '../helpers/cli.js'

const GOOD = ['a', 'orders', 'orders.v2', 'my_service-1', '9lives', 'x'.repeat(63)]
const BAD = ['', '-web', '.web', '_web', 'web service', 'web/1', 'wéb', 'x'.repeat(64)]

function schemaAccepts (name: string): boolean {
  const doc = { discovery: { embedded: { services: { [name]: { endpoints: [{ address: '127.0.0.1', port: 9301 }] } } } } }
  return validateConfigDocument(doc).problems.length === 0
}

function caAccepts (name: string): boolean {
  try {
    assertServiceName(name)
    return true
  } catch {
    return false
  }
}

test('the rule accepts letters, digits, _ . - up to 63 characters, starting with a letter or digit', () => {
  for (const name of GOOD) assert.equal(isServiceName(name), true, name)
  for (const name of BAD) assert.equal(isServiceName(name), false, name)
  assert.equal(isServiceName(undefined), false)
})

test('the config schema accepts exactly the names the rule accepts', () => {
  for (const name of [...GOOD, ...BAD.filter((n) => n !== '')]) assert.equal(schemaAccepts(name), isServiceName(name), name)
  // The hint shows the rule's own pattern.
  const doc = validateConfigDocument({ discovery: { embedded: { services: { '-bad': {} } } } })
  assert.ok(doc.problems.some((p) => p.hint?.includes(SERVICE_NAME_PATTERN) === true), JSON.stringify(doc.problems))
})

test('the local CA issues leaves for exactly the names the rule accepts', () => {
  for (const name of [...GOOD, ...BAD]) assert.equal(caAccepts(name), isServiceName(name), name)
})

test('fastmesh register refuses a --name the rule refuses, saying the rule', async () => {
  const r = await spawnCli(['register', '--name', 'x'.repeat(64), '--port', '80'])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /--name is required: letters, digits, _ \. - \(at most 63\), starting with a letter or digit/)
})
