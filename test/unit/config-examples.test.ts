// Every example fastmesh config shipped under config/ validates as it is.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, loadConfigFile } from '../../src/config/load.js'
import { formatProblems } from '../../src/config/validate.js'

// This file runs from dist/test/unit/.
const configDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../../config')
/** Files under config/ for other tools (checked by test/integration/observability-config.test.ts). */
const OTHER_TOOLS = new Set(['prometheus.yml'])
const examples = readdirSync(configDir).filter((f) => /\.(ya?ml|json)$/.test(f) && !OTHER_TOOLS.has(f)).sort()

test('config/ holds at least the demo config', () => {
  assert.ok(examples.includes('demo.yaml'), `found: ${examples.join(', ')}`)
})

for (const file of examples) {
  test(`config/${file} validates`, async () => {
    try {
      // No env: overrides of the machine running the tests must not decide the outcome.
      const { config } = await loadConfigFile(join(configDir, file), {})
      assert.ok(Object.isFrozen(config))
    } catch (err) {
      if (err instanceof ConfigError) assert.fail(`config/${file}:\n${formatProblems(err.problems)}`)
      throw err
    }
  })
}
