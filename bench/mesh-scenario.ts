// The east-west scenario: app → node gateway A (the app's per-upstream listener for `shop`)
// → mTLS → node gateway B (inbound, authorization) → the upstream. Identities come from a
// local CA (`files` provider), so no Consul is needed; A's embedded registry lists B's
// inbound listener as the gateway in front of `shop`.
import { writeFile, mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { freePorts } from '../test/helpers/ports.js'
import { spawnChild, stopChild, waitForHttp } from './children.js'
import type { ScenarioDefinition } from './scenarios.js'
import { createLocalCa, issueLeaf } from '../src/identity/local-ca.js'

const dist = (file: string): string => fileURLToPath(new URL(file, import.meta.url))

export const nodeToNodeScenario: ScenarioDefinition = {
  name: 'node_to_node_mtls',
  description: 'load generator (as a local app) → node gateway A → mTLS → node gateway B → upstream',
  compareTo: ['direct', 'node_ceiling'],
  async start (ctx) {
    const dir = join(ctx.workDir, `mesh-ca-${ctx.round}`)
    await mkdir(dir, { recursive: true })
    await createLocalCa(dir)
    for (const s of ['node-a', 'node-b', 'app', 'shop']) await issueLeaf(dir, s)
    const [outA, adminA, inB, outB, adminB, appUpstream, inA] = await freePorts(7)
    const mesh = { mtls: 'strict', identity: { provider: 'files', dir }, authorization: { provider: 'rules', defaultAction: 'deny', rules: [{ source: 'app', destination: 'shop', action: 'allow' }] } }
    const common = { limits: { maxHeaderBytes: 16384 }, telemetry: { logging: { level: 'info', accessLog: true } } }
    const a = {
      gateway: { name: 'node-a', mode: 'node' },
      listeners: { outbound: { address: '127.0.0.1', port: outA }, inbound: { address: '127.0.0.1', port: inA }, admin: { address: '127.0.0.1', port: adminA } },
      // With the mesh on and no Consul, embedded endpoints of a remote service are the node
      // gateways in front of it.
      discovery: { embedded: { services: { shop: { endpoints: [{ address: '127.0.0.1', port: inB }] } } } },
      services: { shop: { connectionPool: { connections: ctx.poolConnections } } },
      mesh,
      // The benchmark's load generator plays `app`, calling shop on its upstream port.
      localServices: [{ name: 'app', port: ctx.upstreamPorts[0], upstreams: [{ service: 'shop', port: appUpstream }] }],
      ...common
    }
    const b = {
      gateway: { name: 'node-b', mode: 'node' },
      listeners: { outbound: { address: '127.0.0.1', port: outB }, inbound: { address: '127.0.0.1', port: inB }, admin: { address: '127.0.0.1', port: adminB } },
      services: { shop: { connectionPool: { connections: ctx.poolConnections } } },
      mesh,
      localServices: [{ name: 'shop', port: ctx.upstreamPorts[0] }],
      ...common
    }
    await writeFile(join(ctx.workDir, 'node-a.yaml'), stringify(a))
    await writeFile(join(ctx.workDir, 'node-b.yaml'), stringify(b))
    const start = (name: string): ReturnType<typeof spawnChild> => spawnChild(`fastmesh ${name}`, process.execPath, {
      args: [...ctx.nodeArgs('node_to_node_mtls'), dist('../src/cli/index.js'), 'start', '--config', join(ctx.workDir, `${name}.yaml`)],
      logFile: join(ctx.workDir, `${name}-round${ctx.round}.log`),
      proxy: true
    })
    const nodeB = start('node-b')
    const nodeA = start('node-a')
    const url = `http://127.0.0.1:${appUpstream}/shop/products/42?view=full`
    const stop = async (): Promise<void> => {
      await Promise.all([stopChild(nodeA), stopChild(nodeB)])
      await rm(dir, { recursive: true, force: true })
    }
    try {
      await waitForHttp(`http://127.0.0.1:${adminB}/ready`, nodeB)
      await waitForHttp(`http://127.0.0.1:${adminA}/ready`, nodeA)
      await waitForHttp(url, nodeA)
    } catch (err) {
      await stop()
      throw err
    }
    return {
      url,
      measuredPid: nodeA.pid,
      extraPids: [nodeB.pid],
      stop
    }
  }
}
