// The gateway process never exits because of a request (issue 13): an exception thrown where
// no layer's guard reaches (a plugin's own timer, an unhandled rejection) is logged with
// FASTMESH_ERR_INTERNAL and counted by the process-wide last resort, and every other request
// goes on. Runs `fastmesh start` as a child process, so an exit is seen as an exit.
import test from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { request } from 'undici'
import { tempDir, fixturePlugin } from '../helpers/gateway.js'
import { startGatewayProcess } from '../helpers/gateway-process.js'
import { startEcho, meshConfig } from '../helpers/upstreams.js'
import { eventually } from '../helpers/poll.js'

test('a plugin whose own timer throws does not stop the gateway process: logged, counted, the next requests are served', async (t) => {
  const echo = await startEcho(t, 'live')
  const dir = await tempDir(t)
  const config = meshConfig({ svc: [echo] }, [
    { name: 'bomb', match: { path: { prefix: '/bomb' } }, destination: { service: 'svc' }, plugins: [{ name: 'timer-bomb', options: {} }] },
    { name: 'plain', destination: { service: 'svc' } }
  ], {
    customPlugins: { 'timer-bomb': { module: fixturePlugin(dir, 'timer-bomb.js') } },
    listeners: { http: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } }
  })
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, stringify(config))
  const g = await startGatewayProcess(t, ['--config', file])
  for (let i = 0; i < 5; i++) {
    const res = await request(`${g.url}/bomb/${i}`)
    assert.equal(res.statusCode, 200, 'the request itself is served (the bug is in a timer)')
    await res.body.dump()
  }
  await eventually(() => g.logs().filter((e) => e.code === 'FASTMESH_ERR_INTERNAL').length >= 1 ? true : undefined, 'the last resort to log', 5000)
  for (let i = 0; i < 5; i++) {
    const res = await request(`${g.url}/plain/${i}`)
    assert.equal(res.statusCode, 200, `gateway still serves after the plugin's timer threw (stderr: ${g.stderr})`)
    await res.body.dump()
  }
  assert.equal(g.exited, false, `the process is alive (stderr: ${g.stderr})`)
  const kinds = new Set(g.logs().filter((e) => e.code === 'FASTMESH_ERR_INTERNAL').map((e) => e.kind))
  assert.ok(kinds.has('uncaughtException'), 'the timer exception was logged')
  assert.ok(kinds.has('unhandledRejection'), 'the unhandled rejection was logged')
  const faults = await (await request(`${g.adminUrl}/faults`)).body.json() as { uncaught: number }
  assert.ok(faults.uncaught >= 10, `admin /faults counts every one (5 requests x 2 faults): ${JSON.stringify(faults)}`)
})
