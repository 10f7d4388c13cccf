// The config layer stands apart from forwarding: no module under src/config loads (at any
// depth) the gateway, balancer, upstream or discovery code, or undici, nor a built-in plugin's
// run-time libraries (jose, @fastify/cors, ...: the config reads plugins/options.ts only), so
// `fastmesh validate` and the config checks never start the data plane's machinery. Measured on the real import
// graph: Node's resolver, traced by a module hook in a child process.
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const DIST = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const TRACER = join(DIST, 'test/fixtures/import-trace.js')
const DIST_URL = `${pathToFileURL(DIST).href}/`
const PLUGIN_LIBRARIES = ['jose', '@fastify/cors', '@fastify/rate-limit', '@fastify/under-pressure', 'ioredis']
const FORWARDING = new RegExp(`^${pathToFileURL(join(DIST, 'src')).href}/(gateway|balancer|upstream|discovery)/|/node_modules/(undici|${PLUGIN_LIBRARIES.join('|')})/`)

interface Edge { readonly from: string | null, readonly to: string }

async function trace (modules: string[]): Promise<Edge[]> {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-imports-'))
  try {
    const out = join(dir, 'trace.jsonl')
    const child = spawn(process.execPath, [TRACER, out, ...modules], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const code = await new Promise<number | null>((done) => { child.once('close', done) })
    assert.equal(code, 0, stderr)
    return (await readFile(out, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Edge)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** Each forbidden module reached from `roots`, with the chain of imports that reaches it. */
function forbiddenReached (edges: Edge[], roots: string[]): string[] {
  const next = new Map<string, string[]>()
  for (const e of edges) if (e.from !== null) next.set(e.from, [...(next.get(e.from) ?? []), e.to])
  const found: string[] = []
  const via = new Map<string, string | null>(roots.map((r) => [r, null]))
  const queue = [...roots]
  while (queue.length > 0) {
    const url = queue.shift()!
    for (const to of next.get(url) ?? []) {
      if (via.has(to)) continue
      via.set(to, url)
      if (FORWARDING.test(to)) {
        const chain = [to]
        for (let at = via.get(to); at != null; at = via.get(at)) chain.unshift(at)
        found.push(chain.map((u) => u.startsWith(DIST_URL) ? u.slice(DIST_URL.length) : u).join(' → '))
      } else {
        queue.push(to)
      }
    }
  }
  // CommonJS loaded by a package's require has no edge: its presence alone is the finding.
  for (const e of edges) if (e.from === null && FORWARDING.test(e.to)) found.push(`(required) ${e.to}`)
  return [...new Set(found)]
}

test('no module under src/config imports, at any depth, src/gateway, src/balancer, src/upstream, src/discovery, undici or a built-in plugin\'s run-time library', async () => {
  const configDir = join(DIST, 'src/config')
  // The modules of src/config's sources (a dist left from an older build may hold files whose source moved away).
  const sources = new Set((await readdir(join(DIST, '../src/config'))).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, '.js')))
  const modules = (await readdir(configDir)).filter((f) => sources.has(f)).map((f) => join(configDir, f))
  assert.ok(modules.length >= 15, `the config modules are found (${modules.length})`)
  const edges = await trace(modules)
  // The trace works: a known edge inside config is in it.
  const validate = pathToFileURL(join(configDir, 'validate.js')).href
  assert.ok(edges.some((e) => e.from === validate && e.to === pathToFileURL(join(configDir, 'schema.js')).href), 'the trace records validate.js → schema.js')
  assert.deepEqual(forbiddenReached(edges, modules.map((m) => pathToFileURL(m).href)), [])
})

test('the import check finds forwarding code where it is: a version build loads the router and undici', async () => {
  const app = join(DIST, 'src/gateway/app.js')
  const found = forbiddenReached(await trace([app]), [pathToFileURL(app).href])
  assert.ok(found.some((chain) => chain.includes('src/gateway/router.js')), found.join('\n'))
  assert.ok(found.some((chain) => chain.includes('node_modules/undici/')), found.join('\n'))
})

test('the import check finds the plugins\' run-time libraries where they are: the built-in plugins\' code loads each of them', async () => {
  const plugins = join(DIST, 'plugins/index.js')
  const found = forbiddenReached(await trace([plugins]), [pathToFileURL(plugins).href])
  // ioredis is imported only when a Redis store starts; the others as the plugins load.
  for (const library of PLUGIN_LIBRARIES.filter((l) => l !== 'ioredis')) assert.ok(found.some((chain) => chain.includes(`node_modules/${library}/`)), `${library}:\n${found.join('\n')}`)
})
