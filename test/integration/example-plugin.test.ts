// The example plugin of docs/writing-plugins.md (examples/plugins/api-keys.mjs), loaded through
// `customPlugins` by a real gateway as a user would load it: keys admit and name the tenant,
// the secret never reaches the upstream, a forged tenant header is replaced, per-tenant counts
// survive a reload, bad options are refused with their JSON path, and examples/api-keys.yaml
// passes `fastmesh validate`.
import test from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { relative } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { startGateway, tempDir, assertErrorResponse } from '../helpers/gateway.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'
import { spawnCli } from '../helpers/cli.js'

/** dist/test/integration → the repository's examples/ (the example is plain JavaScript, not compiled). */
const examples = fileURLToPath(new URL('../../../examples/', import.meta.url))

function moduleFrom (dir: string): string {
  const rel = relative(dir, `${examples}plugins/api-keys.mjs`)
  return rel.startsWith('.') ? rel : `./${rel}`
}

async function exampleGateway (t: test.TestContext, options: Record<string, unknown>, extraRoutes: unknown[] = []) {
  const echo = await startEcho(t, 'hello')
  const dir = await tempDir(t)
  const config = (opts: Record<string, unknown>, more: unknown[] = extraRoutes): Record<string, unknown> => meshConfig({ hello: [echo] }, [
    { name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'hello', stripPrefix: true }, plugins: [{ name: 'api-keys', options: opts }] },
    ...more
  ], { customPlugins: { 'api-keys': { module: moduleFrom(dir) } } })
  const g = await startGateway(t, config(options), { dir })
  return { g, echo, config }
}

const keys = { 'key-for-acme': 'acme', 'key-for-globex': 'globex' }

test('example plugin: a known key is admitted, the upstream learns the tenant and never sees the key', async (t) => {
  const { g, echo } = await exampleGateway(t, { keys })
  const res = await g.request('/api/hello', { headers: { 'x-api-key': 'key-for-acme', 'x-tenant': 'forged' } })
  assert.equal(res.status, 200)
  const seen = echo.seen.at(-1)!
  assert.equal(seen.url, '/hello')
  assert.equal(seen.headers['x-tenant'], 'acme', 'the tenant comes from the key, not from the client\'s header')
  assert.equal(seen.headers['x-api-key'], undefined, 'the secret stays at the gateway')
  assert.equal(res.headers['x-tenant-requests'], '1')
})

test('example plugin: no key or an unknown key is 401 with WWW-Authenticate, and the upstream is not called', async (t) => {
  const { g, echo } = await exampleGateway(t, { keys })
  const none = await g.request('/api/hello')
  assertErrorResponse(none, 401, 'EXAMPLE_API_KEY_REQUIRED')
  assert.equal(none.headers['www-authenticate'], 'ApiKey header="x-api-key"')
  const wrong = await g.request('/api/hello', { headers: { 'x-api-key': 'key-for-nobody' } })
  const body = assertErrorResponse(wrong, 401, 'EXAMPLE_API_KEY_REQUIRED')
  assert.doesNotMatch(body.error.message, /key-for-nobody/, 'the key is never echoed')
  assert.equal(echo.seen.length, 0)
})

test('example plugin: counts per tenant go on across a reload that keeps the route', async (t) => {
  const { g, config } = await exampleGateway(t, { keys })
  for (let i = 1; i <= 2; i++) assert.equal((await g.request('/api/x', { headers: { 'x-api-key': 'key-for-acme' } })).headers['x-tenant-requests'], String(i))
  assert.equal((await g.request('/api/x', { headers: { 'x-api-key': 'key-for-globex' } })).headers['x-tenant-requests'], '1')
  // The reload changes the plugin's own options (a renamed header) and adds a route.
  await g.writeConfig(config({ keys, tenantHeader: 'x-customer' }, [{ name: 'open', match: { path: { prefix: '/open' } }, destination: { service: 'hello' } }]))
  assert.equal((await g.admin('POST', '/reload')).status, 200)
  const after = await g.request('/api/x', { headers: { 'x-api-key': 'key-for-acme' } })
  assert.equal(after.status, 200)
  assert.equal(after.headers['x-tenant-requests'], '3')
  assert.equal((await g.request('/open/x')).status, 200, 'a route without the plugin is not asked for a key')
})

test('example plugin: bad options are refused with the JSON path, by fastmesh validate and by a reload', async (t) => {
  const { g, config } = await exampleGateway(t, { keys })
  await g.writeConfig(config({ keys: {}, keyHeader: '' }))
  const reload = await g.admin('POST', '/reload')
  assert.ok(reload.status >= 400, `reload refused (status ${reload.status})`)
  assert.match(reload.text, /routes\[0\]\.plugins\[0\]\.options/)
  assert.equal((await g.request('/api/x', { headers: { 'x-api-key': 'key-for-acme' } })).status, 200, 'the running config keeps serving')

  const dir = await tempDir(t)
  const path = `${dir}/bad.json`
  // The module path in `config` is relative to the first gateway's directory: absolute here.
  const doc = config({ keys: {}, keyHeader: '' }) as { customPlugins: Record<string, { module: string }> }
  doc.customPlugins['api-keys']!.module = `${examples}plugins/api-keys.mjs`
  await writeFile(path, JSON.stringify(doc))
  const out = await spawnCli(['validate', path])
  assert.equal(out.code, 2, out.stdout + out.stderr)
  assert.match(out.stdout + out.stderr, /\$\.routes\[0\]\.plugins\[0\]\.options\.keys: must NOT have fewer than 1 properties/)
  assert.match(out.stdout + out.stderr, /\$\.routes\[0\]\.plugins\[0\]\.options\.keyHeader/)
})

test('example plugin: examples/api-keys.yaml passes fastmesh validate', async () => {
  const out = await spawnCli(['validate', `${examples}api-keys.yaml`])
  assert.equal(out.code, 0, out.stdout + out.stderr)
})
