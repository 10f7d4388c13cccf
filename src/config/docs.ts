// The reference docs, generated, never hand-written: docs/config.md from the config schema,
// docs/errors.md from the error catalogue, docs/plugins.md from the built-in plugins' option
// schemas. `node dist/src/config/docs.js --write` writes them; `--check` fails when one is stale.
import { readFile, writeFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { ConfigSchema, Duration } from './schema.js'
import { catalogue } from '../errors.js'
import { builtinPluginOptions } from '../../plugins/options.js'

/** The parts of a JSON schema (as TypeBox builds them) that the docs read. */
interface Schema {
  type?: string | string[]
  description?: string
  default?: unknown
  enum?: unknown[]
  const?: unknown
  pattern?: string
  format?: string
  minimum?: number
  maximum?: number
  exclusiveMinimum?: number
  exclusiveMaximum?: number
  minLength?: number
  maxLength?: number
  minItems?: number
  maxItems?: number
  properties?: Record<string, Schema>
  required?: string[]
  patternProperties?: Record<string, Schema>
  additionalProperties?: boolean | Schema
  items?: Schema
  anyOf?: Schema[]
}

/** One documented key. */
export interface KeyRow {
  /** Like `routes[].match.path.prefix`; `[]` is an array item, `<name>` a key of your choice. */
  readonly key: string
  readonly type: string
  readonly default: string
  readonly required: string
  readonly allowed: string
  readonly description: string
}

const ANY_KEY = '^(.*)$'

function code (text: string): string {
  return text.includes('`') ? `\`\` ${text} \`\`` : `\`${text}\``
}

function json (value: unknown): string {
  return code(JSON.stringify(value))
}

function isDuration (s: Schema): boolean {
  return s.type === 'string' && s.pattern === Duration.pattern
}

/** A union of constants (`Type.Union([Type.Literal(...)])`) reads like an enum. */
function constants (s: Schema): unknown[] | undefined {
  if (s.enum !== undefined) return s.enum
  if (s.const !== undefined) return [s.const]
  if (s.anyOf !== undefined && s.anyOf.length > 0 && s.anyOf.every((b) => b.const !== undefined)) return s.anyOf.map((b) => b.const)
  return undefined
}

function typeName (s: Schema): string {
  const consts = constants(s)
  if (consts !== undefined) return s.type !== undefined ? String(s.type) : [...new Set(consts.map((c) => typeof c))].join(' or ')
  if (isDuration(s)) return 'duration'
  if (s.anyOf !== undefined) {
    const kinds = [...new Set(s.anyOf.map((b) => b.type === 'object' ? 'object' : alternative(b)))]
    return kinds.join(' or ')
  }
  if (s.type === 'array') return s.items !== undefined ? `array of ${typeName(s.items)}` : 'array'
  if (s.type === 'object' && s.properties === undefined && s.patternProperties !== undefined) {
    const [pattern, value] = Object.entries(s.patternProperties)[0] ?? [ANY_KEY, {}]
    // A free-form object (`Type.Record(Type.String(), Type.Unknown())`).
    if (pattern === ANY_KEY && Object.keys(value).length === 0) return 'object'
    return `map of ${typeName(value)}`
  }
  if (Array.isArray(s.type)) return s.type.join(' or ')
  return s.type ?? 'any'
}

/** How one alternative of a union is named: `{ prefix }` for an object, else its type. */
function alternative (s: Schema): string {
  if (s.type === 'object' && s.properties !== undefined) return `{ ${Object.keys(s.properties).join(', ')} }`
  if (s.const !== undefined) return JSON.stringify(s.const)
  return typeName(s)
}

function range (min: number | undefined, max: number | undefined, unit = ''): string | undefined {
  if (min !== undefined && max !== undefined) return `${min}–${max}${unit}`
  if (min !== undefined) return `≥ ${min}${unit}`
  if (max !== undefined) return `≤ ${max}${unit}`
  return undefined
}

/** Constraints of a value in words: allowed values, range, pattern. */
function constraints (s: Schema): string[] {
  const out: string[] = []
  const consts = constants(s)
  if (consts !== undefined) out.push(consts.map((c) => json(c)).join(', '))
  if (isDuration(s)) out.push(`number + \`ms\`, \`s\`, \`m\` or \`h\`, e.g. ${code('250ms')}, ${code('5s')}`)
  else if (s.pattern !== undefined) out.push(`pattern ${code(s.pattern)}`)
  if (s.format !== undefined) out.push(`format ${s.format}`)
  const num = range(s.minimum ?? s.exclusiveMinimum, s.maximum ?? s.exclusiveMaximum)
  if (num !== undefined) out.push(num)
  if (s.minLength === 1 && s.maxLength === undefined) out.push('non-empty')
  else {
    const len = range(s.minLength, s.maxLength, ' characters')
    if (len !== undefined) out.push(len)
  }
  const items = range(s.minItems, s.maxItems, ' items')
  if (items !== undefined) out.push(items)
  if (s.type === 'array' && s.items !== undefined && !isObjectLike(s.items)) {
    const each = constraints(s.items)
    if (each.length > 0) out.push(`each: ${each.join('; ')}`)
  }
  if (s.anyOf !== undefined && consts === undefined) out.push(`exactly one of ${s.anyOf.map((b) => code(alternative(b))).join(', ')}`)
  return out
}

function isObjectLike (s: Schema): boolean {
  return s.type === 'object' || (s.anyOf !== undefined && constants(s) === undefined)
}

function recordKeys (s: Schema): [string, Schema] | undefined {
  if (s.type !== 'object' || s.properties !== undefined || s.patternProperties === undefined) return undefined
  return Object.entries(s.patternProperties)[0]
}

/**
 * Every key below `schema`, depth first, in schema order. `base` is the path of `schema`
 * itself ('' for the document root); `required` tells how a key of `schema` is marked.
 */
export function schemaRows (schema: object, base = ''): KeyRow[] {
  const rows: KeyRow[] = []
  walkChildren(schema as Schema, base, 'yes', rows)
  return rows
}

function join (base: string, key: string): string {
  return base === '' ? key : `${base}.${key}`
}

function walkChildren (s: Schema, path: string, requiredWord: string, rows: KeyRow[]): void {
  if (s.properties !== undefined) {
    for (const [key, child] of Object.entries(s.properties)) {
      const required = (s.required ?? []).includes(key) && child.default === undefined ? requiredWord : 'no'
      walk(child, join(path, key), required, rows)
    }
    return
  }
  const record = recordKeys(s)
  if (record !== undefined) {
    const [pattern, value] = record
    const extra = pattern !== ANY_KEY ? `Names match ${code(pattern)}.` : ''
    if (isObjectLike(value)) walk(value, join(path, '<name>'), 'no', rows, extra)
    return
  }
  if (s.type === 'array' && s.items !== undefined && isObjectLike(s.items)) {
    walkChildren(s.items, `${path}[]`, 'yes', rows)
    return
  }
  if (s.anyOf !== undefined && constants(s) === undefined) {
    // Each alternative's keys, under the union's own path: one of them is given.
    for (const branch of s.anyOf) walkChildren(branch, path, 'one of', rows)
  }
}

function walk (s: Schema, path: string, required: string, rows: KeyRow[], extraDescription = ''): void {
  const notes = [s.description ?? '']
  if (s.type === 'array' && s.items?.description !== undefined) notes.push(`Each item: ${s.items.description}`)
  const record = recordKeys(s)
  if (record !== undefined && record[0] !== ANY_KEY && !isObjectLike(record[1])) notes.push(`Names match ${code(record[0])}.`)
  if (extraDescription !== '') notes.push(extraDescription)
  rows.push({
    key: path,
    type: typeName(s),
    default: s.default !== undefined ? json(s.default) : '—',
    required,
    allowed: constraints(s).join('; ') || '—',
    description: notes.filter((n) => n !== '').join(' ') || '—'
  })
  walkChildren(s, path, 'yes', rows)
}

/** Markdown table cells: `|` splits cells even inside code spans, newlines end the row. */
function cell (text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ')
}

function table (headers: string[], rows: string[][]): string {
  return [
    `| ${headers.join(' | ')} |`,
    `|${headers.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`)
  ].join('\n')
}

function keyTable (rows: readonly KeyRow[]): string {
  return table(['Key', 'Type', 'Default', 'Required', 'Allowed values', 'Description'],
    rows.map((r) => [code(r.key), r.type, r.default, r.required, r.allowed, r.description]))
}

function generatedNote (from: string): string {
  return `<!-- Generated from ${from} by src/config/docs.ts. Do not edit: run \`npm run docs\`. -->`
}

export function renderConfigDoc (): string {
  const root = ConfigSchema as unknown as Schema
  const sections: string[] = [
    generatedNote('src/config/schema.ts'),
    '',
    '# Configuration reference',
    '',
    `${root.description ?? ''} A YAML (or JSON) file; \`fastmesh validate FILE\` checks it and names`,
    'each problem by its JSON path. Every key of every section is listed below.',
    '',
    '- `[]` stands for any item of an array, `<name>` for a key you choose (a service name, a plugin name).',
    '- *Required* is `yes` for keys that must be given when their parent is; keys with a default are',
    '  never required. `one of` marks the alternatives of a union: give exactly one of them.',
    '- Durations are strings like `250ms`, `5s`, `1m`, `2h`.',
    '- Environment variables `FASTMESH_HTTP_ADDRESS`, `FASTMESH_HTTP_PORT`, `FASTMESH_ADMIN_ADDRESS`,',
    '  `FASTMESH_ADMIN_PORT`, `FASTMESH_ADMIN_TOKEN` and `FASTMESH_LOG_LEVEL` override the file;',
    '  `FASTMESH_TRACING_ENDPOINT` turns tracing on and sets `telemetry.tracing.otlp.endpoint`, and',
    '  `FASTMESH_TRACING_RATIO` sets `telemetry.tracing.sampler.ratio`.',
    ''
  ]
  for (const [key, child] of Object.entries(root.properties ?? {})) {
    const rows: KeyRow[] = []
    walk(child, key, (root.required ?? []).includes(key) && child.default === undefined ? 'yes' : 'no', rows)
    sections.push(`## ${code(key)}`, '', keyTable(rows), '')
  }
  return sections.join('\n')
}

export function renderErrorsDoc (): string {
  const entries = Object.values(catalogue)
  return [
    generatedNote('the catalogue in src/errors.ts'),
    '',
    '# Errors',
    '',
    'Every error fastmesh raises or answers with has a stable `FASTMESH_ERR_*` code. Errors the',
    'gateway answers a client with carry the HTTP status below and the JSON body',
    '`{ "error": { "code", "message", "requestId" } }`. In messages, `…` stands for a detail',
    'filled in at run time.',
    '',
    table(['Code', 'HTTP status', 'Message', 'Description'],
      entries.map((e) => [code(e.code), String(e.statusCode), e.message.replace(/%s/g, '…').replace(/\n/g, ' '), e.description])),
    ''
  ].join('\n')
}

export function renderPluginsDoc (): string {
  const sections: string[] = [
    generatedNote('the built-in plugins in plugins/'),
    '',
    '# Built-in plugins',
    '',
    'A route runs its `plugins` in order, for that route only. The top-level `plugins` list',
    'applies to every route, in front of the route\'s own (`cors` excepted: it always runs first,',
    'see below); a route switches one off with',
    '`disablePlugins`, or replaces it by listing the same plugin itself (see',
    '[writing-plugins.md](writing-plugins.md#gateway-wide-plugins)). Each plugin\'s `options` are',
    'validated against its own schema when the config is loaded; problems are reported with',
    'the JSON path into the options (`$.routes[0].plugins[0].options.request.set`,',
    '`$.plugins[0].options.maxEventLoopDelay`).',
    '',
    '```yaml',
    'plugins:                  # gateway-wide',
    '  - name: PLUGIN',
    '    options: { ... }',
    'routes:',
    '  - name: example',
    '    destination: { service: example }',
    '    plugins:',
    '      - name: PLUGIN',
    '        options: { ... }',
    '```',
    ''
  ]
  const plugins = [...builtinPluginOptions.values()].sort((a, b) => a.name.localeCompare(b.name))
  sections.push(table(['Plugin', 'Description'], plugins.map((p) => [`[${code(p.name)}](#${p.name})`, p.description])), '')
  for (const p of plugins) {
    sections.push(`## ${p.name}`, '', p.description, '')
    const schema = p.optionsSchema as unknown as Schema
    if (schema.description !== undefined) sections.push(schema.description, '')
    const rows = schemaRows(schema, 'options')
    sections.push(rows.length > 0 ? keyTable(rows) : 'No options.', '')
    if (p.example !== undefined) sections.push('Example (a `plugins` list: a route\'s, or the top-level one for every route):', '', '```yaml', p.example.trimEnd(), '```', '')
  }
  return sections.join('\n')
}

/** docs/ of the project: this file runs from dist/src/config/. */
export function docsDir (): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '../../../docs')
}

export function renderAll (): ReadonlyMap<string, string> {
  return new Map([
    ['config.md', renderConfigDoc()],
    ['errors.md', renderErrorsDoc()],
    ['plugins.md', renderPluginsDoc()]
  ])
}

async function main (args: string[]): Promise<number> {
  const mode = args[0]
  if (args.length !== 1 || (mode !== '--write' && mode !== '--check')) {
    process.stderr.write('usage: node dist/src/config/docs.js --write | --check\n')
    return 2
  }
  const dir = docsDir()
  let stale = 0
  for (const [name, text] of renderAll()) {
    const file = resolve(dir, name)
    if (mode === '--write') {
      await writeFile(file, text)
      process.stdout.write(`wrote ${file}\n`)
      continue
    }
    const current = await readFile(file, 'utf8').catch(() => undefined)
    if (current !== text) {
      stale++
      process.stderr.write(`docs/${name} is ${current === undefined ? 'missing' : 'stale'}; run \`npm run docs\`\n`)
    }
  }
  return stale > 0 ? 1 : 0
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code }, (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  })
}
