// The example each built-in plugin shows in docs/plugins.md validates against its own options
// schema, so the reference never teaches a config the gateway refuses.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parse } from 'yaml'
import { builtinPlugins } from '../../plugins/index.js'
import { formatProblems, pluginOptionProblems } from '../../src/config/validate.js'

for (const def of builtinPlugins.values()) {
  if (def.example === undefined) continue
  test(`the example of plugin ${def.name} validates`, () => {
    const { plugins } = parse(def.example!) as { plugins: Array<{ name: string, options?: unknown }> }
    const entry = plugins.find((p) => p.name === def.name)
    assert.ok(entry !== undefined, `the example uses ${def.name}`)
    const problems = pluginOptionProblems(def, entry.options ?? {}, '$.plugins[0].options')
    assert.equal(problems.length, 0, formatProblems(problems))
  })
}

test('every built-in plugin shows an example in docs/plugins.md', () => {
  const without = [...builtinPlugins.values()].filter((def) => def.example === undefined).map((def) => def.name)
  assert.deepEqual(without, [])
})
