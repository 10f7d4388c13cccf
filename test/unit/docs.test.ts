// The generated reference docs: derived from the schemas, and the files in docs/ up to date.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Type } from '@sinclair/typebox'
import { docsDir, renderConfigDoc, renderPluginsDoc, schemaRows, type KeyRow } from '../../src/config/docs.js'
import { builtinPlugins } from '../../plugins/index.js'

const here = dirname(fileURLToPath(import.meta.url))

async function assertFresh (name: string, render: () => string): Promise<void> {
  const file = resolve(here, '../../../docs', name)
  const current = await readFile(file, 'utf8').catch(() => undefined)
  assert.ok(current !== undefined, `docs/${name} is missing: run \`npm run docs\``)
  assert.ok(current === render(), `docs/${name} is stale (the schema changed): run \`npm run docs\``)
}

function row (rows: readonly KeyRow[], key: string): KeyRow {
  const r = rows.find((x) => x.key === key)
  assert.ok(r !== undefined, `no row for ${key}; rows: ${rows.map((x) => x.key).join(', ')}`)
  return r
}

test('docs/config.md is what renderConfigDoc() produces (run `npm run docs` if this fails)', async () => {
  await assertFresh('config.md', renderConfigDoc)
})

test('docs/plugins.md is what renderPluginsDoc() produces (run `npm run docs` if this fails)', async () => {
  await assertFresh('plugins.md', renderPluginsDoc)
})

test('docsDir() is the project\'s docs/', () => {
  assert.equal(docsDir(), resolve(here, '../../../docs'))
})

test('config.md names keys by path through objects, arrays, maps and unions', () => {
  const doc = renderConfigDoc()
  for (const key of [
    'gateway.mode',
    'listeners.admin.port',
    'routes[].match.path.prefix',
    'routes[].match.path.template',
    'routes[].match.headers[].present',
    'routes[].destination.stripPrefix',
    'routes[].plugins[].options',
    'discovery.embedded.services.<name>.endpoints[].port',
    'discovery.embedded.services.<name>.healthCheck.interval',
    'services.<name>.connectionPool.connections',
    'customPlugins.<name>.module',
    'telemetry.logging.level'
  ]) assert.ok(doc.includes(`| \`${key}\` |`), key)
})

test('config.md shows types, defaults, required-ness, allowed values and descriptions', () => {
  const doc = renderConfigDoc()
  assert.ok(doc.includes('| `routes[].timeout` | duration | `"15s"` | no |'))
  assert.ok(doc.includes('| `listeners.admin` | object | `{"port":15000}` | no |'))
  assert.ok(doc.includes('| `routes[].name` | string | — | yes |'))
  assert.ok(doc.includes('| `routes[].destination` | object | — | yes |'))
  assert.ok(doc.includes('`"edge"`, `"node"`'))
  assert.ok(doc.includes('exactly one of `{ exact }`, `{ prefix }`, `{ template }`, `{ regex }`'))
  assert.ok(doc.includes('| `routes[].match.path.prefix` | string | — | one of |'))
  assert.ok(doc.includes('Segment-aware: `/api` matches `/api` and `/api/x`, not `/apix`.'))
})

test('pipes inside table cells are escaped', () => {
  for (const line of renderConfigDoc().split('\n').filter((l) => l.startsWith('| `'))) {
    const cells = line.replace(/\\\|/g, '').split('|').length - 2
    assert.equal(cells, 6, line)
  }
})

test('schemaRows walks records, arrays, unions and enums of any TypeBox schema', () => {
  const schema = Type.Object({
    pools: Type.Record(Type.String({ pattern: '^[a-z]+$' }), Type.Object({
      size: Type.Integer({ minimum: 1, maximum: 10, default: 2, description: 'Pool size.' })
    }), { additionalProperties: false }),
    steps: Type.Array(Type.Object({ kind: Type.Union([Type.Literal('a'), Type.Literal('b')]) })),
    target: Type.Optional(Type.Union([
      Type.Object({ url: Type.String() }, { additionalProperties: false }),
      Type.Object({ file: Type.String() }, { additionalProperties: false })
    ])),
    color: Type.Unsafe<string>({ type: 'string', enum: ['red', 'blue'], default: 'red' })
  })
  const rows = schemaRows(schema)
  assert.deepEqual(rows.map((r) => r.key), ['pools', 'pools.<name>', 'pools.<name>.size', 'steps', 'steps[].kind', 'target', 'target.url', 'target.file', 'color'])
  assert.equal(row(rows, 'pools').type, 'map of object')
  assert.match(row(rows, 'pools.<name>').description, /Names match `\^\[a-z\]\+\$`/)
  assert.deepEqual(row(rows, 'pools.<name>.size'), { key: 'pools.<name>.size', type: 'integer', default: '`2`', required: 'no', allowed: '1–10', description: 'Pool size.' })
  assert.equal(row(rows, 'steps').required, 'yes')
  assert.equal(row(rows, 'steps[].kind').allowed, '`"a"`, `"b"`')
  assert.equal(row(rows, 'target').required, 'no')
  assert.equal(row(rows, 'target').allowed, 'exactly one of `{ url }`, `{ file }`')
  assert.equal(row(rows, 'target.url').required, 'one of')
  assert.equal(row(rows, 'color').allowed, '`"red"`, `"blue"`')
  assert.equal(row(rows, 'color').default, '`"red"`')
})

test('plugins.md documents every built-in plugin with its options', () => {
  const doc = renderPluginsDoc()
  for (const p of builtinPlugins.values()) {
    assert.ok(doc.includes(`## ${p.name}\n\n${p.description}`), p.name)
  }
  assert.ok(doc.includes('| `options.request.set` | map of string | `{}` | no |'))
  assert.ok(doc.includes('| `options.response.remove` | array of string | `[]` | no |'))
})

test('the docs script with --check exits 0 when docs/ is current', async () => {
  const script = resolve(here, '../../src/config/docs.js')
  const code = await new Promise<number>((done) => {
    execFile(process.execPath, [script, '--check'], (err) => { done(err === null ? 0 : typeof err.code === 'number' ? err.code : -1) })
  })
  assert.equal(code, 0, 'docs/ is stale: run `npm run docs`')
})

test('the docs script without --write or --check is a usage error', async () => {
  const script = resolve(here, '../../src/config/docs.js')
  const r = await new Promise<{ code: number, stderr: string }>((done) => {
    execFile(process.execPath, [script], (err, _stdout, stderr) => { done({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stderr }) })
  })
  assert.equal(r.code, 2)
  assert.match(r.stderr, /--write \| --check/)
})
