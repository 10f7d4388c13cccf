// Built-in plugins' options apart from their code (plugins/options.ts): the same contract as
// the definitions a build registers, and the checks beyond their schemas reported at JSON paths.
import test from 'node:test'
import assert from 'node:assert/strict'
import { builtinPlugins } from '../../plugins/index.js'
import { builtinPluginOptions } from '../../plugins/options.js'
import type { PluginOptionsDefinition } from '../../plugins/types.js'
import { validateConfigDocument } from '../../src/config/validate.js'

test('every built-in plugin has its options contract in plugins/options.ts, the very one its definition uses', () => {
  assert.deepEqual([...builtinPluginOptions.keys()].sort(), [...builtinPlugins.keys()].sort())
  for (const [name, def] of builtinPlugins) {
    const options = builtinPluginOptions.get(name)!
    assert.equal(def.optionsSchema, options.optionsSchema, name)
    assert.equal(def.description, options.description, name)
    assert.equal(def.checkOptions, options.checkOptions, name)
  }
})

function problemsOf (plugin: string, options: unknown): Array<[string, string]> {
  const doc = {
    discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9 }] } } } },
    routes: [{ name: 'r', destination: { service: 'svc' }, plugins: [{ name: 'headers' }, { name: plugin, options }] }]
  }
  return validateConfigDocument(doc).problems.map((p) => [p.path, p.message])
}

const at = '$.routes[0].plugins[1].options'

test('ip-filter: entries that are neither an address nor a CIDR range, each at its index', () => {
  assert.deepEqual(problemsOf('ip-filter', { allow: ['10.0.0.0/8', '2001:db8::/129'], deny: ['example.com'] }), [
    [`${at}.allow[1]`, '"2001:db8::/129" is not an IP address or a CIDR range'],
    [`${at}.deny[0]`, '"example.com" is not an IP address or a CIDR range']
  ])
  assert.deepEqual(problemsOf('ip-filter', { allow: ['::1', '192.168.0.0/16'] }), [])
})

test('rate-limit: a window or a Redis timeout of 0 is refused at its path', () => {
  assert.deepEqual(problemsOf('rate-limit', { max: 5, timeWindow: '0s', store: { redis: { url: 'redis://127.0.0.1:6379', timeout: '0ms' } } }).map(([p]) => p), [`${at}.timeWindow`, `${at}.store.redis.timeout`])
  assert.deepEqual(problemsOf('rate-limit', { max: 5, timeWindow: '1s' }), [])
})

test('fault-injection: an abort or response fault with neither or both of status and reset', () => {
  assert.deepEqual(problemsOf('fault-injection', { abort: { percent: 10 }, response: { percent: 5, status: 503, reset: true } }), [
    [`${at}.abort`, 'has neither status nor reset: true'],
    [`${at}.response`, 'has both status and reset: true']
  ])
  assert.deepEqual(problemsOf('fault-injection', { abort: { percent: 10, status: 503 }, response: { percent: 5, reset: true } }), [])
})

test('cors: `*` with credentials: true is refused at the origins item; `*` alone, or listed origins with credentials, pass', () => {
  assert.deepEqual(problemsOf('cors', { origins: ['https://app.example.com', '*'], credentials: true }), [[`${at}.origins[1]`, '"*" is not allowed with `credentials: true`']])
  assert.deepEqual(problemsOf('cors', { origins: ['*'] }), [])
  assert.deepEqual(problemsOf('cors', { origins: ['https://app.example.com'], credentials: true }), [])
})

test('body-limit: maxBytes is a whole number of bytes, 0 or more', () => {
  assert.deepEqual(problemsOf('body-limit', { maxBytes: -1 }).map(([p]) => p), [`${at}.maxBytes`])
  assert.deepEqual(problemsOf('body-limit', { maxBytes: 0 }), [])
})

test('a custom plugin\'s if/then schema rule is reported once, where the then-branch fails (not also as ajv\'s `if` error)', () => {
  const doc = {
    discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9 }] } } } },
    customPlugins: { guarded: { module: './x.js' } },
    routes: [{ name: 'r', destination: { service: 'svc' }, plugins: [{ name: 'guarded', options: { strict: true, modes: ['a', 'any'] } }] }]
  }
  const optionsSchema = {
    type: 'object',
    if: { properties: { strict: { const: true } }, required: ['strict'] },
    then: { properties: { modes: { items: { not: { const: 'any' }, description: 'strict mode lists its modes' } } } }
  }
  const result = validateConfigDocument(doc, new Map<string, PluginOptionsDefinition>([['guarded', { name: 'guarded', description: '', optionsSchema: optionsSchema as never }], ...builtinPluginOptions]))
  assert.deepEqual(result.problems, [{ path: '$.routes[0].plugins[0].options.modes[1]', message: 'string "any" is not allowed here', hint: 'strict mode lists its modes' }])
})

test('a plugin\'s own checks run only on options that passed its schema', () => {
  // allow[0] is not a string: the schema's problem alone, never a check on what it could not read.
  assert.deepEqual(problemsOf('ip-filter', { allow: [5] }).map(([p]) => p), [`${at}.allow[0]`])
})

test('a custom plugin whose optionsSchema is broken or whose checkOptions throws refuses the config at the options\' path, never crashes the check', () => {
  const doc = (name: string) => ({
    discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9 }] } } } },
    customPlugins: { [name]: { module: './x.js' } },
    routes: [{ name: 'r', destination: { service: 'svc' }, plugins: [{ name, options: { a: 1 } }] }]
  })
  const plugins = (definition: PluginOptionsDefinition) => new Map<string, PluginOptionsDefinition>([[definition.name, definition], ...builtinPluginOptions])
  const broken = validateConfigDocument(doc('broken'), plugins({ name: 'broken', description: '', optionsSchema: { type: 'no-such-type' } as never }))
  assert.deepEqual(broken.problems.map((p) => p.path), ['$.routes[0].plugins[0].options'])
  assert.match(broken.problems[0]!.message, /optionsSchema of plugin "broken" is not a valid JSON Schema/)
  const throwing = validateConfigDocument(doc('thrower'), plugins({ name: 'thrower', description: '', optionsSchema: { type: 'object' } as never, checkOptions: () => { throw new Error('boom') } }))
  assert.deepEqual(throwing.problems.map((p) => [p.path, p.message]), [['$.routes[0].plugins[0].options', 'plugin "thrower" could not check its options: boom']])
})
