// Registration in a real Consul agent: the CLI round trip, and a gateway registering its
// local services and itself at start and removing them on graceful shutdown.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startConsul, consulApi, type ConsulAgent } from '../helpers/consul.js'
import { startGateway, eventually } from '../helpers/gateway.js'
import { spawnCli } from '../helpers/cli.js'

type AgentServices = Record<string, { ID: string, Service: string, Port: number, Tags: string[], Meta: Record<string, string> }>
type AgentChecks = Record<string, { ServiceID: string, Status: string, Type?: string }>

describe('Consul registration', () => {
  let agent: ConsulAgent
  before(async () => { agent = await startConsul() })
  after(async () => { await agent.stop() })

  it('fastmesh register and deregister round-trip a service with its check', async () => {
    const reg = await spawnCli(['register', '--name', 'billing', '--id', 'billing-1', '--address', '127.0.0.1', '--port', '7001',
      '--tag', 'v1', '--tag', 'blue', '--meta', 'zone=a', '--check-ttl', '15s', '--deregister-after', '1m', '--consul', agent.httpAddr])
    assert.equal(reg.code, 0, reg.stderr)
    assert.match(reg.stdout, /registered billing-1/)
    const services = await consulApi<AgentServices>(agent, 'GET', '/v1/agent/services')
    assert.deepEqual({ ...services['billing-1'], Tags: [...services['billing-1']!.Tags].sort() }, {
      ...services['billing-1'], ID: 'billing-1', Service: 'billing', Port: 7001, Tags: ['blue', 'v1'], Meta: { zone: 'a' }
    })
    const checks = await consulApi<AgentChecks>(agent, 'GET', '/v1/agent/checks')
    assert.ok(Object.values(checks).some((c) => c.ServiceID === 'billing-1'), 'the TTL check is registered')

    const dereg = await spawnCli(['deregister', 'billing-1', '--consul', agent.httpAddr])
    assert.equal(dereg.code, 0, dereg.stderr)
    assert.equal((await consulApi<AgentServices>(agent, 'GET', '/v1/agent/services'))['billing-1'], undefined)
  })

  it('fastmesh register sends fractional check durations (1.5s, 1.5m) that Consul accepts', async () => {
    const reg = await spawnCli(['register', '--name', 'ledger', '--id', 'ledger-1', '--port', '7002', '--check-http', 'http://127.0.0.1:7002/health',
      '--interval', '1.5s', '--timeout', '0.5s', '--deregister-after', '1.5m', '--consul', agent.httpAddr])
    assert.equal(reg.code, 0, reg.stderr)
    const checks = await consulApi<AgentChecks>(agent, 'GET', '/v1/agent/checks')
    assert.ok(Object.values(checks).some((c) => c.ServiceID === 'ledger-1' && c.Type === 'http'), 'the HTTP check is registered')
    assert.equal((await spawnCli(['deregister', 'ledger-1', '--consul', agent.httpAddr])).code, 0)
  })

  it('fastmesh register refuses bad flags with a clear message and exit 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['register', '--port', '80'], /--name is required/],
      [['register', '--name', 'x', '--port', 'eighty'], /--port must be a port number/],
      [['register', '--name', 'x', '--port', '80', '--meta', 'novalue'], /--meta takes key=value/],
      [['register', '--name', 'x', '--port', '80', '--check-http', 'http://a/', '--check-ttl', '5s'], /at most one of/],
      [['register', '--name', 'x', '--port', '80', '--check-ttl', 'soon'], /--check-ttl takes a duration/],
      [['register', '--name', 'x', '--port', '80', '--interval', '5s'], /need a check/],
      [['register', '--name', 'x', '--port', '80', '--colour', 'red'], /Unknown option '--colour'/],
      [['deregister'], /exactly one service ID/]
    ]
    for (const [args, message] of cases) {
      const r = await spawnCli([...args, '--consul', agent.httpAddr])
      assert.equal(r.code, 2, `${args.join(' ')} → exit ${r.code}`)
      assert.match(r.stderr, message, args.join(' '))
      assert.match(r.stderr, /FASTMESH_ERR_CLI_USAGE/)
    }
    assert.deepEqual(Object.keys(await consulApi<AgentServices>(agent, 'GET', '/v1/agent/services')).filter((id) => id === 'x'), [])
  })

  it('a gateway registers its local services and itself at start and deregisters them on stop', async (t) => {
    const gw = await startGateway(t, {
      gateway: { name: 'edge-reg', mode: 'edge' },
      discovery: {
        consul: {
          address: agent.httpAddr,
          register: [{ name: 'inventory', id: 'inventory-1', address: '127.0.0.1', port: 7100, tags: ['v2'], check: { ttl: '30s' } }]
        }
      }
    })
    const services = await consulApi<AgentServices>(agent, 'GET', '/v1/agent/services')
    assert.equal(services['inventory-1']?.Service, 'inventory')
    const self = Object.values(services).find((s) => s.Service === 'edge-reg')
    assert.ok(self !== undefined, 'the gateway registers itself')
    assert.equal(self.Port, gw.gateway.httpAddress.port)
    assert.equal(self.Meta.role, 'edge')
    assert.equal(self.Meta.admin, `127.0.0.1:${gw.gateway.adminAddress.port}`)
    // Its check is the admin /ready, which Consul sees passing.
    await eventually(async () => {
      const h = await consulApi<Array<{ Checks: Array<{ ServiceID: string, Status: string }> }>>(agent, 'GET', '/v1/health/service/edge-reg')
      return h[0]?.Checks.find((c) => c.ServiceID === self.ID)?.Status === 'passing'
    }, 'Consul to see the gateway\'s /ready check passing', 15_000, 200)

    await gw.gateway.stop()
    const after = await consulApi<AgentServices>(agent, 'GET', '/v1/agent/services')
    assert.equal(after['inventory-1'], undefined)
    assert.equal(after[self.ID], undefined)
  })
})
