// Config from Consul KV against a real agent, through `fastmesh start --kv` (the CLI wires
// the KV provider to the gateway, nothing else): a change makes a new route live; an invalid
// value is refused and the running routes keep serving.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { stringify } from 'yaml'
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Agent, request } from 'undici'
import { startConsul, consulApi, type ConsulAgent } from '../helpers/consul.js'
import { eventually } from '../helpers/gateway.js'
import { startGatewayProcess } from '../helpers/gateway-process.js'
import { startSampleService, type SampleService } from '../../src/demo/sample-service.js'
import { KvConfigProvider } from '../../src/discovery/consul/kv-source.js'
import { loadSnapshot } from '../../src/config/reconciler.js'
import { ConsulClient, resolveConsul } from '../../src/discovery/consul/client.js'
import { Gateway } from '../../src/gateway/gateway.js'
import { createLogger } from '../../src/telemetry/logger.js'

async function putKey (agent: ConsulAgent, key: string, text: string): Promise<void> {
  const res = await fetch(`${agent.url}/v1/kv/${key}`, { method: 'PUT', body: text })
  assert.equal(res.status, 200, await res.text())
}

describe('config from Consul KV', () => {
  let agent: ConsulAgent
  let users: SampleService
  let orders: SampleService

  before(async () => {
    agent = await startConsul()
    users = await startSampleService('users', 'users-1', 0)
    orders = await startSampleService('orders', 'orders-1', 0)
  })
  after(async () => {
    await agent.stop()
    await users.close()
    await orders.close()
  })

  const doc = (routes: unknown[]) => ({
    gateway: { name: 'edge-kv' },
    listeners: { http: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } },
    discovery: {
      embedded: {
        services: {
          users: { endpoints: [{ address: '127.0.0.1', port: users.port }] },
          orders: { endpoints: [{ address: '127.0.0.1', port: orders.port }] }
        }
      }
    },
    routes
  })

  it('applies KV changes through validate-compile-swap and refuses invalid values', async (t) => {
    const shared = 'fastmesh/config/shared'
    const key = 'fastmesh/config/edge-kv'
    // The shared key carries discovery; the per-gateway key its routes and name.
    const { routes: _none, ...sharedDoc } = doc([])
    await putKey(agent, shared, stringify(sharedDoc))
    await putKey(agent, key, stringify({ routes: [{ name: 'users', match: { path: { prefix: '/users' } }, destination: { service: 'users' } }] }))

    const gw = await startGatewayProcess(t, ['--kv', key, '--kv-shared', shared, '--consul', agent.httpAddr])
    const http = new Agent()
    t.after(async () => { await http.close() })
    const get = async (path: string) => {
      const r = await request(`${gw.url}${path}`, { dispatcher: http })
      return { status: r.statusCode, text: await r.body.text() }
    }
    interface ConfigView {
      config: { gateway: { name: string } }
      source: string
      lastReload: { reason: string, ok: boolean, problems?: Array<{ path: string }> } | null
      reloads: { ok: number, failed: number }
    }
    const view = async (): Promise<ConfigView> => await (await request(`${gw.adminUrl}/config`, { dispatcher: http })).body.json() as ConfigView

    await t.test('routes from the merged shared and per-gateway keys serve traffic', async () => {
      assert.equal((await get('/users/1')).status, 200)
      assert.equal((await get('/orders/1')).status, 404)
      const v = await view()
      assert.equal(v.config.gateway.name, 'edge-kv')
      assert.equal(v.source, `kv:${shared}+${key}`)
    })

    await t.test('a KV change makes a new route live', async () => {
      await putKey(agent, key, stringify({
        routes: [
          { name: 'users', match: { path: { prefix: '/users' } }, destination: { service: 'users' } },
          { name: 'orders', match: { path: { prefix: '/orders' } }, destination: { service: 'orders' } }
        ]
      }))
      await eventually(async () => (await get('/orders/1')).status === 200, 'the orders route to go live')
      assert.match((await get('/orders/1')).text, /orders-1/)
      const v = await view()
      assert.deepEqual([v.lastReload?.reason, v.lastReload?.ok, v.reloads], ['consul kv change', true, { ok: 1, failed: 0 }])
    })

    await t.test('an invalid KV value is refused with its JSON path and the old routes keep working', async () => {
      const failedBefore = (await view()).reloads.failed
      await putKey(agent, key, stringify({ routes: [{ name: 'broken', destinaton: { service: 'users' } }] }))
      const v = await eventually(async () => { const v = await view(); return v.reloads.failed > failedBefore && v }, 'the invalid value to be refused')
      assert.equal(v.lastReload?.reason, 'consul kv change')
      assert.ok(v.lastReload?.problems?.some((p) => p.path === '$.routes[0].destinaton'), JSON.stringify(v.lastReload))
      await eventually(() => gw.logs().some((e) => e.msg === 'config refused; the running config keeps serving'), 'the refusal to be logged')
      assert.equal((await get('/users/1')).status, 200)
      assert.equal((await get('/orders/1')).status, 200)
    })

    await t.test('a KV value that is not YAML is refused and counted', async () => {
      const failedBefore = (await view()).reloads.failed
      await putKey(agent, key, 'routes: [unclosed')
      await eventually(async () => (await view()).reloads.failed > failedBefore, 'the unparseable value to be refused')
      assert.equal((await get('/orders/1')).status, 200)
    })

    await t.test('a valid value after invalid ones is applied', async () => {
      await putKey(agent, key, stringify({ routes: [{ name: 'orders-only', match: { path: { prefix: '/orders' } }, destination: { service: 'orders' } }] }))
      await eventually(async () => (await get('/users/1')).status === 404, 'the users route to be removed')
      assert.equal((await get('/orders/1')).status, 200)
    })

    await t.test('SIGHUP re-reads the KV keys and applies them as a reload', async () => {
      const before = (await view()).reloads.ok
      gw.signal('SIGHUP')
      const v = await eventually(async () => { const v = await view(); return v.reloads.ok > before && v }, 'the SIGHUP reload')
      assert.deepEqual([v.lastReload?.reason, v.lastReload?.ok], ['SIGHUP', true])
      assert.equal((await get('/orders/1')).status, 200)
    })
  })

  it('a KV config\'s relative customPlugins module resolves from the working directory', async (t) => {
    const key = 'fastmesh/config/base-dir'
    const fixture = fileURLToPath(new URL('../fixtures/plugins/require-token.js', import.meta.url))
    const module = `./${relative(process.cwd(), fixture)}`
    await putKey(agent, key, stringify({
      ...doc([{ name: 'users', destination: { service: 'users' }, plugins: [{ name: 'token', options: { token: 's3cret-token' } }] }]),
      customPlugins: { token: { module } }
    }))
    const log = createLogger({ level: 'silent' })
    const provider = new KvConfigProvider({ client: new ConsulClient(resolveConsul({ address: agent.httpAddr })), keys: [key], log, wait: '5s' })
    const gateway = new Gateway({ loaded: await loadSnapshot(await provider.snapshot('start')), log, provider })
    await gateway.start()
    t.after(async () => { await gateway.stop() })
    const url = `http://127.0.0.1:${gateway.httpAddress.port}`
    // The plugin loaded from the cwd-relative path: without the token it answers 401.
    assert.equal((await fetch(`${url}/users/1`)).status, 401)
    assert.equal((await fetch(`${url}/users/1`, { headers: { authorization: 'Bearer s3cret-token' } })).status, 200)
  })

  it('fastmesh config push validates before writing, and config get reads it back', async () => {
    const { spawnCli } = await import('../helpers/cli.js')
    const dir = await import('node:fs/promises').then(async (fs) => await fs.mkdtemp('/tmp/fastmesh-kv-'))
    const { writeFile, rm } = await import('node:fs/promises')
    try {
      const good = `${dir}/good.yaml`
      const bad = `${dir}/bad.yaml`
      await writeFile(good, stringify(doc([{ name: 'users', destination: { service: 'users' } }])))
      await writeFile(bad, stringify({ routes: [{ name: 'x', destination: { service: 'nope' } }], gatway: {} }))

      const refused = await spawnCli(['config', 'push', bad, '--key', 'fastmesh/config/t1', '--consul', agent.httpAddr])
      assert.equal(refused.code, 2)
      assert.match(refused.stderr, /\$\.gatway/)
      assert.match(refused.stderr, /nothing was written/)
      const missing = await fetch(`${agent.url}/v1/kv/fastmesh/config/t1`)
      assert.equal(missing.status, 404)

      const pushed = await spawnCli(['config', 'push', good, '--key', 'fastmesh/config/t1', '--consul', agent.httpAddr])
      assert.equal(pushed.code, 0, pushed.stderr)
      const stored = await consulApi<Array<{ Value: string }>>(agent, 'GET', '/v1/kv/fastmesh/config/t1')
      assert.match(Buffer.from(stored[0]!.Value, 'base64').toString(), /name: users/)

      const got = await spawnCli(['config', 'get', '--key', 'fastmesh/config/t1', '--consul', agent.httpAddr])
      assert.equal(got.code, 0, got.stderr)
      assert.match(got.stdout, /name: users/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
