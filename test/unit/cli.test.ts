// The command line: `fastmesh validate FILE` and usage errors, run as a child process.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnCli } from '../helpers/cli.js'
import { fileURLToPath } from 'node:url'

/** The built fixture plugin that requires a `token` option of at least 8 characters. */
const REQUIRE_TOKEN = fileURLToPath(new URL('../fixtures/plugins/require-token.js', import.meta.url))

async function tempFile (t: TestContext, name: string, text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-cli-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, name)
  await writeFile(file, text)
  return file
}

const VALID = `discovery:
  embedded:
    services:
      users:
        endpoints: [{ address: 127.0.0.1, port: 9301 }]
routes:
  - name: users
    match: { path: { prefix: /users } }
    destination: { service: users, stripPrefix: true }
`

const INVALID = `gateway: { mode: edgee }
listeners: { http: { port: eighty } }
discovery:
  embedded:
    services:
      users:
        endpoints: [{ address: 127.0.0.1, port: 9301 }]
routes:
  - name: users
    destination: { service: user }
`

test('validate on a valid file prints ok and exits 0', async (t) => {
  const file = await tempFile(t, 'valid.yaml', VALID)
  const r = await spawnCli(['validate', file])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, 'ok\n')
  assert.equal(r.stderr, '')
})

test('validate on a valid file with a warning prints ok, and the warning with its JSON path, and exits 0', async (t) => {
  const file = await tempFile(t, 'warned.yaml', `${VALID}    mirror: { service: shadow, maxConcurrent: 512, maxBodyBytes: 1048576 }
`.replace('users:\n        endpoints', 'shadow:\n        endpoints: [{ address: 127.0.0.1, port: 9302 }]\n      users:\n        endpoints'))
  const r = await spawnCli(['validate', file])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, 'ok, with 1 warning\n')
  assert.ok(r.stderr.includes(`${file}: $.routes[0].mirror: warning: may hold up to 512 MiB of request bodies`), r.stderr)
  assert.ok(r.stderr.includes('hint: lower maxConcurrent or maxBodyBytes, or raise limits.mirrorBufferBytes'), r.stderr)
})

test('validate on an invalid file exits 2 and lists every problem with its JSON path', async (t) => {
  const file = await tempFile(t, 'invalid.yaml', INVALID)
  const r = await spawnCli(['validate', file])
  assert.equal(r.code, 2)
  assert.equal(r.stdout, '')
  assert.match(r.stderr, /FASTMESH_ERR_CONFIG_INVALID: 3 problems/)
  assert.ok(r.stderr.includes(`${file}: $.gateway.mode: must be one of "edge", "node"`), r.stderr)
  assert.ok(r.stderr.includes('hint: did you mean "edge"?'), r.stderr)
  assert.ok(r.stderr.includes(`${file}: $.listeners.http.port: must be integer`), r.stderr)
  assert.ok(r.stderr.includes(`${file}: $.routes[0].destination.service: unknown service "user"`), r.stderr)
  assert.ok(r.stderr.includes('hint: did you mean "users"?'), r.stderr)
})

test('validate on malformed YAML exits 2 and names the line and column', async (t) => {
  const file = await tempFile(t, 'broken.yaml', 'routes: [1, 2\ngateway: {}\n')
  const r = await spawnCli(['validate', file])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /FASTMESH_ERR_CONFIG_PARSE/)
  assert.match(r.stderr, /line 2, column 1/)
})

test('validate on a missing file exits 2 with one clear line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-cli-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'nope.yaml')
  const r = await spawnCli(['validate', file])
  assert.equal(r.code, 2)
  assert.equal(r.stdout, '')
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
  assert.ok(r.stderr.startsWith(`FASTMESH_ERR_CONFIG_READ: Cannot read config ${file}: ENOENT`), r.stderr)
})

test('validate without FILE is a usage error (exit 2, usage shown)', async () => {
  const r = await spawnCli(['validate'])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /^FASTMESH_ERR_CLI_USAGE: validate takes exactly one FILE/)
  assert.match(r.stderr, /Usage:/)
})

test('an unknown flag is a usage error (exit 2, usage shown)', async () => {
  const r = await spawnCli(['validate', '--bogus', 'x.yaml'])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /^FASTMESH_ERR_CLI_USAGE: Unknown option '--bogus'/)
  assert.match(r.stderr, /Usage:/)
})

test('an unknown command is a usage error (exit 2, usage shown)', async () => {
  const r = await spawnCli(['bogus'])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /^FASTMESH_ERR_CLI_USAGE: unknown command "bogus"/)
  assert.match(r.stderr, /fastmesh validate FILE/)
})

test('--help prints the usage on stdout and exits 0', async () => {
  const r = await spawnCli(['--help'])
  assert.equal(r.code, 0)
  assert.match(r.stdout, /Usage:/)
  assert.equal(r.stderr, '')
})

const ADMIN_OFF_LOOPBACK = VALID + 'listeners: { http: { address: 127.0.0.1, port: 0 }, admin: { address: 0.0.0.0, port: 0 } }\n'

test('regression: start and validate refuse an admin listener off loopback without a token (exit 2), naming listeners.admin.token and FASTMESH_ADMIN_TOKEN', async (t) => {
  const file = await tempFile(t, 'admin.yaml', ADMIN_OFF_LOOPBACK)
  for (const args of [['validate', file], ['start', '--config', file]]) {
    const r = await spawnCli(args)
    assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`)
    assert.match(r.stderr, /\$\.listeners\.admin\.token/)
    assert.match(r.stderr, /FASTMESH_ADMIN_TOKEN/)
  }
})

test('validate accepts an admin listener off loopback when FASTMESH_ADMIN_TOKEN is set', async (t) => {
  const file = await tempFile(t, 'admin.yaml', ADMIN_OFF_LOOPBACK)
  const r = await spawnCli(['validate', file], { FASTMESH_ADMIN_TOKEN: 'c0ffee00c0ffee00c0ffee00' })
  assert.equal(r.code, 0, r.stderr)
})

test('regression: start and validate refuse a Consul address with a password (exit 2) and never print the password', async (t) => {
  const file = await tempFile(t, 'consul.yaml', VALID.replace('discovery:\n', 'discovery:\n  consul: { address: "http://fastmesh:pw-s3cret@127.0.0.1:8500", registerSelf: false }\n'))
  for (const args of [['validate', file], ['start', '--config', file]]) {
    const r = await spawnCli(args)
    assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`)
    assert.match(r.stderr, /\$\.discovery\.consul\.address/)
    assert.ok(!r.stdout.includes('pw-s3cret') && !r.stderr.includes('pw-s3cret'), r.stderr)
  }
})

test('validate loads custom plugins and checks their options: wrong ones exit 2 with the JSON path', async (t) => {
  const plugged = (options: string): string => `${VALID}    plugins: [{ name: token, options: ${options} }]
customPlugins:
  token: { module: ${JSON.stringify(REQUIRE_TOKEN)} }
`
  const bad = await spawnCli(['validate', await tempFile(t, 'bad-options.yaml', plugged('{}'))])
  assert.equal(bad.code, 2, bad.stderr)
  assert.match(bad.stderr, /FASTMESH_ERR_CONFIG_INVALID: 1 problem/)
  assert.match(bad.stderr, /\$\.routes\[0\]\.plugins\[0\]\.options\.token: is required/)
  const good = await spawnCli(['validate', await tempFile(t, 'good-options.yaml', plugged('{ token: s3cret-token }'))])
  assert.equal(good.code, 0, good.stderr)
  assert.equal(good.stdout, 'ok\n')
})

test('validate on a custom plugin module that cannot be loaded exits 2 with FASTMESH_ERR_PLUGIN_LOAD at the module\'s JSON path', async (t) => {
  const file = await tempFile(t, 'missing-plugin.yaml', `${VALID}    plugins: [{ name: gone }]
customPlugins:
  gone: { module: ./no-such-plugin.js }
`)
  const r = await spawnCli(['validate', file])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /^FASTMESH_ERR_PLUGIN_LOAD: 1 problem/)
  assert.match(r.stderr, /: \$\.customPlugins\.gone\.module: Cannot load plugin "gone" from \.\/no-such-plugin\.js/)
})
