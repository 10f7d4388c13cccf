// Config providers end to end: `fastmesh start --config` as a child process, reloaded by a
// real SIGHUP sent to its PID; and the file provider under a running gateway, where a
// rewrite that leaves the config as it is, is not a reload.
import test from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, rename, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { request } from 'undici'
import { eventually, startGateway, tempDir, withTestListeners } from '../helpers/gateway.js'
import { startGatewayProcess } from '../helpers/gateway-process.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'

interface ConfigView {
  version: number
  lastReload: { reason: string, ok: boolean, version: number, problems?: Array<{ path: string }> } | null
  reloads: { ok: number, failed: number }
}

async function configView (adminUrl: string): Promise<ConfigView> {
  return await (await request(`${adminUrl}/config`)).body.json() as ConfigView
}

async function status (url: string): Promise<number> {
  const res = await request(url)
  await res.body.dump()
  return res.statusCode
}

/**
 * A config file the directory watch cannot see change: `dir/fastmesh.yaml` is a symlink to
 * a file in another directory, and only that file is rewritten (atomically, by rename).
 */
async function unwatchedConfig (dir: string): Promise<{ path: string, write(doc: Record<string, unknown>): Promise<void> }> {
  const real = join(dir, 'data')
  await mkdir(real)
  const target = join(real, 'config.yaml')
  const path = join(dir, 'fastmesh.yaml')
  await symlink(target, path)
  return {
    path,
    async write (doc) {
      await writeFile(`${target}.tmp`, stringify(withTestListeners(doc)))
      await rename(`${target}.tmp`, target)
    }
  }
}

test('SIGHUP makes `fastmesh start` re-read its config file and apply it', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const file = await unwatchedConfig(await tempDir(t))
  await file.write(config)
  const gw = await startGatewayProcess(t, ['--config', file.path])
  assert.equal(await status(`${gw.url}/new/x`), 404)
  await file.write({ ...config, routes: [{ name: 'new', match: { path: { prefix: '/new' } }, destination: { service: 'svc' } }] })
  gw.signal('SIGHUP')
  const v = await eventually(async () => { const v = await configView(gw.adminUrl); return v.reloads.ok === 1 && v }, 'the SIGHUP reload')
  assert.deepEqual([v.lastReload?.reason, v.lastReload?.ok, v.version], ['SIGHUP', true, 2])
  assert.equal(await status(`${gw.url}/new/x`), 200)
  assert.equal(await status(`${gw.url}/old/x`), 404)
  assert.equal(gw.exited, false, gw.stderr)
})

test('SIGHUP with a broken config file is refused and `fastmesh start` keeps serving the old one', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const file = await unwatchedConfig(await tempDir(t))
  await file.write(config)
  const gw = await startGatewayProcess(t, ['--config', file.path])
  await file.write({ ...config, routes: [{ name: 'new', destinaton: { service: 'svc' } }] })
  gw.signal('SIGHUP')
  const v = await eventually(async () => { const v = await configView(gw.adminUrl); return v.reloads.failed === 1 && v }, 'the SIGHUP reload to be refused')
  assert.deepEqual([v.lastReload?.reason, v.lastReload?.ok, v.version], ['SIGHUP', false, 1])
  assert.ok(v.lastReload?.problems?.some((p) => p.path === '$.routes[0].destinaton'), JSON.stringify(v.lastReload))
  assert.equal(await status(`${gw.url}/old/x`), 200)
  assert.equal(gw.exited, false, gw.stderr)
})

test('a change of the file `fastmesh start` runs from is applied by its watch', async (t) => {
  const echo = await startEcho(t, 'svc')
  const dir = await tempDir(t)
  const path = join(dir, 'fastmesh.yaml')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  await writeFile(path, stringify(withTestListeners(config)))
  const gw = await startGatewayProcess(t, ['--config', path])
  await writeFile(path, stringify(withTestListeners({ ...config, routes: [{ name: 'new', match: { path: { prefix: '/new' } }, destination: { service: 'svc' } }] })))
  await eventually(async () => await status(`${gw.url}/new/x`) === 200, 'the new route to answer')
  const v = await configView(gw.adminUrl)
  assert.deepEqual([v.lastReload?.reason, v.lastReload?.ok, v.reloads], ['file change', true, { ok: 1, failed: 0 }])
})

test('a watched file rewritten with only a comment added is not a reload', async (t) => {
  const echo = await startEcho(t, 'svc')
  const config = meshConfig({ svc: [echo] }, [{ name: 'old', match: { path: { prefix: '/old' } }, destination: { service: 'svc' } }])
  const g = await startGateway(t, config, { watch: true, logLevel: 'debug' })
  // Other bytes, the same config: the watch sees a change, the watcher finds nothing to do.
  await g.writeRawConfig(`# edited\n${stringify(withTestListeners(config))}`)
  await eventually(() => g.logs.withMessage('config unchanged; not a reload').length === 1, 'the rewrite to be seen and dropped')
  assert.equal(g.gateway.version?.version, 1)
  assert.deepEqual(g.gateway.reloads, { ok: 0, failed: 0 })
  assert.equal(g.gateway.lastReload, undefined)
})
