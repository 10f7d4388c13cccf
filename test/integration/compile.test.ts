// One compile step for `fastmesh validate`, the start of a gateway and a reload: the same
// plugin-option problems (built-in and custom, schema and the plugins' own checks), at the
// same JSON paths, whichever asks; a refused reload answers them and the old version serves on.
import test from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { startGateway, createGateway, tempDir, fixturePlugin, withTestListeners } from '../helpers/gateway.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'
import { spawnCli } from '../helpers/cli.js'
import { ConfigError } from '../../src/config/load.js'

interface Problem { path: string, message: string, hint?: string }

/** A config with one bad plugin reference of each kind (gateway-wide and on routes), and the paths its problems must name. */
function badPlugins (echoPort: number, tokenModule: string): { config: Record<string, unknown>, paths: string[] } {
  const route = (name: string, plugin: unknown): unknown => ({ name, match: { path: { prefix: `/${name}` } }, destination: { service: 'svc' }, plugins: [plugin] })
  return {
    config: meshConfig({ svc: [echoPort] }, [
      route('ok', { name: 'headers', options: {} }),
      route('schema-builtin', { name: 'headers', options: { request: { sett: {} } } }),
      route('check-builtin', { name: 'ip-filter', options: { allow: ['10.0.0.0/8', '10.0.0.0/33'] } }),
      route('schema-custom', { name: 'token', options: { colour: 'blue' } }),
      route('check-custom', { name: 'token', options: { token: 's3cret-token', header: 'authorization' } })
    ], { customPlugins: { token: { module: tokenModule } }, plugins: [{ name: 'load-shedding', options: { retryAfter: '5s' } }] }),
    paths: [
      '$.plugins[0].options',
      '$.routes[1].plugins[0].options.request.sett',
      '$.routes[2].plugins[0].options.allow[1]',
      '$.routes[3].plugins[0].options.colour',
      '$.routes[3].plugins[0].options.token',
      '$.routes[4].plugins[0].options.header'
    ]
  }
}

const sorted = (problems: readonly Problem[]): Array<[string, string]> => problems.map((p): [string, string] => [p.path, p.message]).sort((a, b) => a[0].localeCompare(b[0]))

/** The problems `fastmesh validate` prints (`FILE: PATH: MESSAGE` lines). */
function printedProblems (stderr: string, file: string): Problem[] {
  return stderr.split('\n').filter((l) => l.startsWith(`${file}: `)).map((l) => {
    const rest = l.slice(file.length + 2)
    const at = rest.indexOf(': ')
    return { path: rest.slice(0, at), message: rest.slice(at + 2) }
  })
}

test('validate, a gateway start and POST /reload report the same plugin-option problems at the same JSON paths; the running version serves on', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const { config, paths } = badPlugins(echo.port, fixturePlugin(dir, 'require-token.js'))

  // fastmesh validate
  const file = join(dir, 'bad.yaml')
  await writeFile(file, stringify(withTestListeners(config)))
  const cli = await spawnCli(['validate', file])
  assert.equal(cli.code, 2, cli.stderr)
  assert.match(cli.stderr, /^FASTMESH_ERR_CONFIG_INVALID: 6 problems/)
  const validated = sorted(printedProblems(cli.stderr, file))
  assert.deepEqual(validated.map(([path]) => path), paths, cli.stderr)

  // A gateway started with it
  await assert.rejects(createGateway(t, config, { dir: await tempDir(t) }), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.equal(err.code, 'FASTMESH_ERR_CONFIG_INVALID')
    assert.deepEqual(sorted(err.problems), validated)
    return true
  })

  // A reload to it, from a good config
  const good = meshConfig({ svc: [echo.port] }, [{ name: 'open', destination: { service: 'svc' } }], { customPlugins: { token: { module: fixturePlugin(dir, 'require-token.js') } } })
  const g = await startGateway(t, good, { dir })
  await g.writeConfig(config)
  const res = await g.admin('POST', '/reload')
  assert.equal(res.status, 409, res.text)
  const body = res.json<{ error: { code: string }, problems: Problem[] }>()
  assert.equal(body.error.code, 'FASTMESH_ERR_ADMIN_RELOAD_FAILED')
  assert.deepEqual(sorted(body.problems), validated)
  assert.ok(body.problems.every((p) => typeof p.hint === 'string' && p.hint.length > 0), JSON.stringify(body.problems))
  assert.equal((await g.request('/anything')).status, 200, 'the running version keeps serving')
  assert.equal(g.gateway.version?.version, 1)
  const shown = (await g.admin('GET', '/config')).json<{ lastReload: { ok: boolean, problems: Problem[] } }>().lastReload
  assert.equal(shown.ok, false)
  assert.deepEqual(sorted(shown.problems), validated)
})

test('a reload to a custom plugin module that cannot be imported answers 409 with the module\'s JSON path', async (t) => {
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo.port] }, [{ name: 'open', destination: { service: 'svc' } }]))
  await g.writeConfig(meshConfig({ svc: [echo.port] }, [{ name: 'open', destination: { service: 'svc' }, plugins: [{ name: 'gone' }] }], { customPlugins: { gone: { module: './no-such-plugin.js' } } }))
  const res = await g.admin('POST', '/reload')
  assert.equal(res.status, 409, res.text)
  const body = res.json<{ error: { message: string }, problems: Problem[] }>()
  assert.match(body.error.message, /Cannot load plugin "gone" from \.\/no-such-plugin\.js/)
  assert.deepEqual(body.problems.map((p) => p.path), ['$.customPlugins.gone.module'])
  assert.equal((await g.request('/')).status, 200)
})

test('custom plugin options get their schema defaults in the config itself, as built-in ones do', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const g = await startGateway(t, meshConfig({ svc: [echo.port] }, [
    { name: 'secured', destination: { service: 'svc' }, plugins: [{ name: 'token', options: { token: 's3cret-token' } }, { name: 'ip-filter' }] }
  ], { customPlugins: { token: { module: fixturePlugin(dir, 'require-token.js') } } }), { dir })
  const plugins = g.gateway.config.routes[0]!.plugins
  assert.equal(plugins[0]!.options?.header, 'x-token-checked')
  assert.deepEqual(plugins[1]!.options, { allow: [], deny: [] })
  const res = await g.request('/', { headers: { authorization: 'Bearer s3cret-token' } })
  assert.equal(res.headers['x-token-checked'], 'yes')
})
