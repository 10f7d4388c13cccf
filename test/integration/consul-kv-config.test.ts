// Config from Consul KV against a real agent: a change makes a new route live; an invalid
// value is refused and the running routes keep serving.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { stringify } from 'yaml'
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Agent, request } from 'undici'
import { startConsul, consulApi, type ConsulAgent } from '../helpers/consul.js'
import { eventually, LogCapture } from '../helpers/gateway.js'
import { startSampleService, type SampleService } from '../../src/demo/sample-service.js'
import { KvConfigSource } from '../../src/config/kv-source.js'
import { checkConfig } from '../../src/config/load.js'
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

    const logs = new LogCapture()
    const log = createLogger({ level: 'info', destination: logs })
    const client = new ConsulClient(resolveConsul({ address: agent.httpAddr }))
    const current: { gateway?: Gateway } = {}
    const kv = new KvConfigSource({
      client,
      keys: [shared, key],
      log,
      wait: '5s',
      onDocument: (d, source) => { void current.gateway?.applyDocument(d, source, 'consul kv change') },
      onInvalid: (err) => { current.gateway?.refuse(err, 'consul kv change') }
    })
    const loaded = checkConfig(await kv.initial(), kv.source)
    const gateway = new Gateway({ loaded, log, kv })
    current.gateway = gateway
    await gateway.start()
    kv.watch()
    t.after(async () => { await gateway.stop() })
    const http = new Agent()
    t.after(async () => { await http.close() })
    const url = `http://127.0.0.1:${gateway.httpAddress.port}`
    const get = async (path: string) => {
      const r = await request(`${url}${path}`, { dispatcher: http })
      return { status: r.statusCode, text: await r.body.text() }
    }

    await t.test('routes from the merged shared and per-gateway keys serve traffic', async () => {
      assert.equal((await get('/users/1')).status, 200)
      assert.equal((await get('/orders/1')).status, 404)
      assert.equal(gateway.config.gateway.name, 'edge-kv')
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
    })

    await t.test('an invalid KV value is refused with its JSON path and the old routes keep working', async () => {
      const failedBefore = gateway.reloads.failed
      await putKey(agent, key, stringify({ routes: [{ name: 'broken', destinaton: { service: 'users' } }] }))
      await eventually(() => gateway.reloads.failed > failedBefore, 'the invalid value to be refused')
      const refusal = logs.entries().find((e) => e.msg?.includes('config refused') === true)
      assert.ok(refusal !== undefined, 'a refusal is logged')
      assert.match(JSON.stringify(refusal), /\$\.routes\[0\]\.destinaton/)
      assert.equal((await get('/users/1')).status, 200)
      assert.equal((await get('/orders/1')).status, 200)
    })

    await t.test('a KV value that is not YAML is refused and counted', async () => {
      const failedBefore = gateway.reloads.failed
      await putKey(agent, key, 'routes: [unclosed')
      await eventually(() => gateway.reloads.failed > failedBefore, 'the unparseable value to be refused')
      assert.equal((await get('/orders/1')).status, 200)
    })

    await t.test('a valid value after invalid ones is applied', async () => {
      await putKey(agent, key, stringify({ routes: [{ name: 'orders-only', match: { path: { prefix: '/orders' } }, destination: { service: 'orders' } }] }))
      await eventually(async () => (await get('/users/1')).status === 404, 'the users route to be removed')
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
    const kv = new KvConfigSource({ client: new ConsulClient(resolveConsul({ address: agent.httpAddr })), keys: [key], log, wait: '5s', onDocument: () => {}, onInvalid: () => {} })
    const gateway = new Gateway({ loaded: checkConfig(await kv.initial(), kv.source), log, kv })
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
