// A real Consul agent (test/helpers/consul.ts): register a service with an HTTP check through
// the agent API, read it back healthy from the health API, check the Connect CA, stop it.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { startConsul, consulApi } from '../helpers/consul.js'
import { eventually } from '../helpers/poll.js'
import { pidAlive } from '../helpers/tool-process.js'

interface HealthEntry {
  Node: { Node: string }
  Service: { ID: string, Service: string, Address: string, Port: number, Tags: string[] | null }
  Checks: Array<{ CheckID: string, ServiceID: string, Status: string, Output: string }>
}

interface CaRoots {
  ActiveRootID: string
  TrustDomain: string
  Roots: Array<{ ID: string, Active: boolean, RootCert: string }>
}

test('consul agent -dev: service with an HTTP check, health API, Connect CA roots, stop', async (t) => {
  // the service the check probes: a plain HTTP server on loopback
  const probes: string[] = []
  const service = http.createServer((req, res) => {
    probes.push(req.url ?? '')
    res.writeHead(req.url === '/healthz' ? 200 : 404, { 'content-type': 'text/plain' }).end('ok')
  })
  service.listen(0, '127.0.0.1')
  await once(service, 'listening')
  t.after(() => service.close())
  const servicePort = (service.address() as AddressInfo).port

  const agent = await startConsul()
  t.after(() => agent.stop())
  assert.match(agent.httpAddr, /^127\.0\.0\.1:\d+$/)
  assert.equal(agent.url, `http://${agent.httpAddr}`)
  assert.ok(pidAlive(agent.pid), 'the agent runs')

  const leader = await consulApi<string>(agent, 'GET', '/v1/status/leader')
  assert.equal(leader, `127.0.0.1:${agent.ports.server}`)

  await consulApi(agent, 'PUT', '/v1/agent/service/register', {
    ID: 'web-1',
    Name: 'web',
    Tags: ['fastmesh-test'],
    Address: '127.0.0.1',
    Port: servicePort,
    Check: {
      CheckID: 'web-1-http',
      Name: 'web HTTP',
      HTTP: `http://127.0.0.1:${servicePort}/healthz`,
      Interval: '1s',
      Timeout: '1s',
    },
  })

  // the agent syncs to the catalog and runs the check; wait until the health API says passing
  const entries = await eventually(async () => {
    const list = await consulApi<HealthEntry[]>(agent, 'GET', '/v1/health/service/web?passing=true')
    return list.length > 0 ? list : undefined
  }, 'web to be passing in /v1/health/service/web', 15_000, 100).catch((err: Error) => {
    throw new Error(`${err.message}\n--- agent output ---\n${agent.output().slice(-4000)}`)
  })
  assert.equal(entries.length, 1)
  const [entry] = entries
  assert.ok(entry)
  assert.equal(entry.Service.ID, 'web-1')
  assert.equal(entry.Service.Service, 'web')
  assert.equal(entry.Service.Address, '127.0.0.1')
  assert.equal(entry.Service.Port, servicePort)
  assert.deepEqual(entry.Service.Tags, ['fastmesh-test'])
  const check = entry.Checks.find((c) => c.CheckID === 'web-1-http')
  assert.ok(check, `the HTTP check is listed: ${JSON.stringify(entry.Checks)}`)
  assert.equal(check.ServiceID, 'web-1')
  assert.equal(check.Status, 'passing')
  assert.ok(probes.includes('/healthz'), 'Consul probed the service')

  // Connect: the agent serves the CA roots, with one active root certificate
  const roots = await consulApi<CaRoots>(agent, 'GET', '/v1/agent/connect/ca/roots')
  assert.ok(roots.Roots.length >= 1, 'at least one root')
  const active = roots.Roots.find((r) => r.ID === roots.ActiveRootID)
  assert.ok(active, 'the active root is listed')
  assert.equal(active.Active, true)
  assert.match(active.RootCert, /^-----BEGIN CERTIFICATE-----/)
  assert.match(roots.TrustDomain, /\.consul$/)

  // stop: the process is gone, and stopping again is harmless
  await agent.stop()
  assert.equal(pidAlive(agent.pid), false, `pid ${agent.pid} is gone after stop()`)
  await agent.stop()
  await assert.rejects(fetch(`${agent.url}/v1/status/leader`), 'the HTTP API no longer answers')
})
