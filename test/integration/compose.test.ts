// docker-compose.yml runs the topology `npm run mesh` runs (mesh/topology.json), from the same
// configs in mesh/. No Docker engine here: Debian's docker-compose (`npm run setup`) checks and
// resolves the file without one (`docker-compose config`), and this test reads what it resolved.
// Also: the image's Dockerfile, and `fastmesh sample-service`, the process each compose host
// runs per sample service.
import { describe, it, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { parse } from 'yaml'
import { PROJECT_ROOT } from '../helpers/consul.js'
import { CLI, spawnCli } from '../helpers/cli.js'
import { onProcessExit } from '../helpers/exit-hooks.js'
import { loadConfigFile } from '../../src/config/load.js'
import { SERVICE_GRAPH_HTML } from '../../src/admin/service-graph-page.js'

const TOKEN = 'compose-test-token-0123456789'

interface Topology {
  hosts: Array<{ name: string, config: string, services: Array<{ name: string, instance: string, port: number }> }>
  edge: { name: string, config: string, httpPort: number, adminPort: number }
  intentions: Array<{ source: string, destination: string, action: string }>
}

interface ComposeService {
  image?: string
  build?: { context: string }
  command?: string[]
  entrypoint?: string[]
  environment?: Record<string, string>
  ports?: string[]
  volumes?: string[]
  network_mode?: string
  healthcheck?: { test: string[] }
  depends_on?: Record<string, { condition: string }>
}

const topology = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'mesh', 'topology.json'), 'utf8')) as Topology

function composeConfig (env: NodeJS.ProcessEnv): ReturnType<typeof spawnSync> {
  // Only the token from `env`: a FASTMESH_ADMIN_TOKEN of the runner's must not decide the result.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'FASTMESH_ADMIN_TOKEN'))
  return spawnSync('docker-compose', ['-f', 'docker-compose.yml', 'config'], { cwd: PROJECT_ROOT, env: { ...inherited, ...env }, encoding: 'utf8', timeout: 60_000 })
}

describe('docker-compose.yml: the local mesh in containers', () => {
  let services: Record<string, ComposeService>
  const byCommand = (first: string): Array<[string, ComposeService]> => Object.entries(services).filter(([, s]) => s.command?.[0] === first)

  before(() => {
    const which = spawnSync('docker-compose', ['version'], { encoding: 'utf8' })
    assert.equal(which.error, undefined, 'docker-compose not found: run `npm run setup` (installs Debian\'s docker-compose)')
    const r = composeConfig({ FASTMESH_ADMIN_TOKEN: TOKEN })
    assert.equal(r.status, 0, `docker-compose config failed:\n${String(r.stderr)}`)
    services = (parse(String(r.stdout)) as { services: Record<string, ComposeService> }).services
  })

  it('refuses to resolve without FASTMESH_ADMIN_TOKEN, saying how to make one', () => {
    const r = composeConfig({ FASTMESH_ADMIN_TOKEN: '' })
    assert.notEqual(r.status, 0)
    assert.match(String(r.stderr), /FASTMESH_ADMIN_TOKEN.*openssl rand -hex 32/)
  })

  it('runs the gateways of mesh/topology.json, each with its config from the mounted mesh/, valid as compose configures it', async () => {
    const gateways = byCommand('start')
    const expected = [...topology.hosts.map((h) => [h.name, h.config]), [topology.edge.name, topology.edge.config]]
    assert.deepEqual(gateways.map(([name]) => name).sort(), expected.map(([name]) => name).sort())
    for (const [name, config] of expected) {
      const s = services[name!]!
      // The file is the base; the gateway's KV key a watched layer over it (fastmesh config push --base).
      assert.deepEqual(s.command, ['start', '--config', `/mesh/${config}`, '--kv', `fastmesh/config/${name}`], name)
      assert.deepEqual(s.volumes, [`${path.join(PROJECT_ROOT, 'mesh')}:/mesh:ro`], name)
      assert.equal(s.image, 'fastmesh:local', name)
      assert.equal(s.build?.context, PROJECT_ROOT, name)
      assert.equal(s.environment?.FASTMESH_ADMIN_TOKEN, TOKEN, name)
      const file = path.join(PROJECT_ROOT, 'mesh', config!)
      assert.ok(existsSync(file), file)
      // As the container loads it: with compose's environment (admin and inbound off loopback, with the token).
      const loaded = await loadConfigFile(file, s.environment)
      assert.deepEqual(loaded.warnings ?? [], [], name)
      assert.equal(loaded.config.gateway.name, name)
      assert.equal(loaded.config.listeners.admin.token, TOKEN, name)
    }
  })

  it('each host is a Consul client agent sharing its network namespace with its node gateway and sample services, as topology.json says', async () => {
    for (const host of topology.hosts) {
      const agentName = host.name.replace('node-', 'host-')
      const agent = services[agentName]
      assert.ok(agent?.image?.startsWith('hashicorp/consul:'), agentName)
      assert.ok(agent.command?.includes(`-node=${agentName}`) && agent.command.includes('-retry-join=consul'), JSON.stringify(agent.command))
      const gateway = services[host.name]!
      assert.equal(gateway.network_mode, `service:${agentName}`)
      assert.equal(gateway.environment?.CONSUL_HTTP_ADDR, '127.0.0.1:8500', 'the host agent, on the shared loopback')
      assert.equal(gateway.environment?.FASTMESH_INBOUND_ADDRESS, '0.0.0.0', 'other hosts reach the inbound listener')

      const samples = byCommand('sample-service').filter(([, s]) => s.network_mode === `service:${agentName}`)
      const run = samples.map(([name, s]) => {
        const arg = (flag: string): string | undefined => s.command![s.command!.indexOf(flag) + 1]
        assert.equal(arg('--name'), name)
        const calls = s.command!.includes('--calls') ? { calls: arg('--calls')!.split(',') } : {}
        // A calling service reaches the others through its own node gateway's outbound listener.
        if (s.command!.includes('--calls')) assert.equal(s.environment?.HTTP_PROXY, 'http://127.0.0.1:15001', name)
        return { name, instance: arg('--instance')!, port: Number(arg('--port')), ...calls }
      })
      const byName = (a: { name: string }, b: { name: string }): number => a.name.localeCompare(b.name)
      assert.deepEqual(run.sort(byName), [...host.services].sort(byName), host.name)

      // The node config fronts exactly these services on these ports.
      const loaded = await loadConfigFile(path.join(PROJECT_ROOT, 'mesh', host.config), gateway.environment)
      assert.deepEqual(loaded.config.localServices.map((l) => ({ name: l.name, port: l.port })).sort(byName),
        host.services.map((x) => ({ name: x.name, port: x.port })).sort(byName))
    }
    assert.equal(byCommand('sample-service').length, topology.hosts.flatMap((h) => h.services).length)
  })

  it('publishes only on 127.0.0.1: the edge on its ports, Consul UI, Prometheus, Grafana, Jaeger', () => {
    const published: string[] = []
    for (const [name, s] of Object.entries(services)) {
      for (const p of s.ports ?? []) {
        assert.match(p, /^127\.0\.0\.1:[0-9]+:[0-9]+(\/tcp)?$/, `${name}: ${p}`)
        published.push(`${name}:${p.split(':')[1]!}`)
      }
    }
    assert.deepEqual(published.sort(), [
      'consul:8500', `edge:${topology.edge.adminPort}`, `edge:${topology.edge.httpPort}`,
      'grafana:3000', 'jaeger:16686', 'prometheus:9090'
    ].sort())
    assert.equal(services.edge!.environment?.CONSUL_HTTP_ADDR, 'consul:8500')
  })

  it('comes up in order: health checks, and depends_on service_healthy on what each needs', () => {
    const needs = (name: string, on: string): void => {
      assert.equal(services[name]?.depends_on?.[on]?.condition, 'service_healthy', `${name} waits for ${on} to be healthy`)
      assert.ok((services[on]?.healthcheck?.test.length ?? 0) > 0, `${on} has a health check`)
    }
    for (const host of topology.hosts) {
      const agent = host.name.replace('node-', 'host-')
      needs(agent, 'consul')
      needs(host.name, agent)
      for (const s of host.services) {
        needs(s.name, agent)
        needs(host.name, s.name)
        assert.ok(services[s.name]!.healthcheck!.test.join(' ').includes(`127.0.0.1:${s.port}/health`), s.name)
      }
      needs(topology.edge.name, host.name)
      assert.ok(services[host.name]!.healthcheck!.test.join(' ').includes('/ready'), host.name)
    }
    needs(topology.edge.name, 'consul')
    needs('intentions', 'consul')
    needs('prometheus', 'consul')
    needs('grafana', 'prometheus')
    // No condition other than these two, and never on a service without a health check.
    for (const [name, s] of Object.entries(services)) {
      for (const [on, { condition }] of Object.entries(s.depends_on ?? {})) {
        assert.ok(condition === 'service_healthy' || condition === 'service_started', `${name} -> ${on}: ${condition}`)
        if (condition === 'service_healthy') assert.ok(services[on]?.healthcheck !== undefined, `${name} -> ${on}`)
      }
    }
  })

  it('writes the intentions of topology.json once Consul is up', () => {
    const i = services.intentions!
    assert.deepEqual(topology.intentions.map((x) => ['intention', 'create', '-replace', `-${x.action}`, x.source, x.destination]), [i.command])
    assert.deepEqual(i.entrypoint, ['consul'])
    assert.equal(i.environment?.CONSUL_HTTP_ADDR, 'consul:8500')
  })

  it('telemetry: Prometheus with mesh/prometheus.yml (config/prometheus.yml plus the token), Grafana provisioned, Jaeger with OTLP on', () => {
    const prom = services.prometheus!
    assert.deepEqual(prom.volumes, [`${path.join(PROJECT_ROOT, 'mesh', 'prometheus.yml')}:/etc/prometheus/prometheus.yml:ro`])
    assert.equal(prom.environment?.FASTMESH_ADMIN_TOKEN, TOKEN)
    const ours = parse(readFileSync(path.join(PROJECT_ROOT, 'mesh', 'prometheus.yml'), 'utf8')) as { scrape_configs: Array<Record<string, unknown>> }
    const general = parse(readFileSync(path.join(PROJECT_ROOT, 'config', 'prometheus.yml'), 'utf8')) as { scrape_configs: Array<Record<string, unknown>> }
    const job = ours.scrape_configs[0]!
    assert.deepEqual(job.authorization, { type: 'Bearer', credentials_file: '/prometheus/fastmesh-admin-token' })
    assert.ok(prom.entrypoint!.join(' ').includes('> /prometheus/fastmesh-admin-token'), 'the token file is written before Prometheus starts')
    delete job.authorization
    assert.deepEqual(ours, general, 'mesh/prometheus.yml differs from config/prometheus.yml in more than the token')
    // config/prometheus.yml finds Consul as `consul:8500`: this file's Consul service.
    assert.ok(JSON.stringify(general).includes('"server":"consul:8500"') && services.consul !== undefined)

    const grafana = services.grafana!
    assert.ok(grafana.volumes!.includes(`${path.join(PROJECT_ROOT, 'config', 'grafana', 'provisioning')}:/etc/grafana/provisioning:ro`), JSON.stringify(grafana.volumes))
    const dashboards = parse(readFileSync(path.join(PROJECT_ROOT, 'config', 'grafana', 'provisioning', 'dashboards', 'fastmesh.yaml'), 'utf8')) as { providers: Array<{ options: { path: string } }> }
    const dashboardDir = dashboards.providers[0]!.options.path
    assert.ok(grafana.volumes!.some((v) => v.endsWith(`:${dashboardDir}/fastmesh-dashboard.json:ro`)), JSON.stringify(grafana.volumes))
    assert.equal(services.jaeger!.environment?.COLLECTOR_OTLP_ENABLED, 'true')
    // Every gateway sends its spans to Jaeger's OTLP/HTTP receiver (FASTMESH_TRACING_ENDPOINT turns tracing on).
    for (const name of ['node-1', 'node-2', 'node-3', 'edge']) assert.equal(services[name]!.environment?.FASTMESH_TRACING_ENDPOINT, 'http://jaeger:4318', name)
    assert.equal(services.prometheus!.environment?.FASTMESH_TRACING_ENDPOINT, undefined)
  })
})

describe('Dockerfile: the fastmesh image', () => {
  const text = readFileSync(path.join(PROJECT_ROOT, 'Dockerfile'), 'utf8')
  const lines = text.split('\n').filter((l) => !l.startsWith('#'))

  it('builds in a build stage, runs with production dependencies only, as a non-root user, the CLI as entrypoint', () => {
    const froms = lines.filter((l) => l.startsWith('FROM '))
    assert.equal(froms.length, 2)
    for (const f of froms) assert.match(f, /^FROM node:(2[2-9]|[3-9][0-9])-bookworm-slim\b/, 'a Node LTS that meets engines >= 20.18.1')
    const runtime = lines.slice(lines.indexOf(froms[1]!))
    assert.ok(runtime.some((l) => /^RUN npm ci --omit=dev --ignore-scripts\b/.test(l)), 'production dependencies, no `prepare` (tsc is a dev dependency)')
    assert.ok(runtime.some((l) => /^USER (?!root\b|0\b)\S+/.test(l)))
    assert.ok(runtime.some((l) => l === 'ENTRYPOINT ["node", "dist/src/cli/index.js"]'))
    assert.match(runtime.join('\n'), /HEALTHCHECK [\s\S]*\/ready/)
  })

  it('copies what the runtime reads from outside dist/: the service-graph page, config/ and mesh/', () => {
    const page = path.relative(PROJECT_ROOT, SERVICE_GRAPH_HTML)
    assert.ok(lines.includes(`COPY ${page} ./${page}`), page)
    assert.ok(lines.includes('COPY config ./config') && lines.includes('COPY mesh ./mesh'))
    const ignored = readFileSync(path.join(PROJECT_ROOT, '.dockerignore'), 'utf8').split('\n')
    for (const p of ['node_modules', 'dist', '.tools', '.git', '.env', 'test-artifacts', 'bench/results']) assert.ok(ignored.includes(p), p)
  })
})

describe('fastmesh sample-service: one sample service as its own process', () => {
  it('refuses a bad name or port with a usage error (exit 2)', async () => {
    const noName = await spawnCli(['sample-service', '--port', '1234'])
    assert.equal(noName.code, 2)
    assert.match(noName.stderr, /FASTMESH_ERR_CLI_USAGE: --name is required/)
    const badPort = await spawnCli(['sample-service', '--name', 'web', '--port', '70000'])
    assert.equal(badPort.code, 2)
    assert.match(badPort.stderr, /--port must be a port number 1-65535, got 70000/)
  })

  it('answers as that service and instance, serves /health, and exits 0 on SIGTERM', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => { resolve(p) }) })
    })
    const child = spawn(process.execPath, [CLI, 'sample-service', '--name', 'orders', '--instance', 'orders-v1', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] })
    onProcessExit(() => { if (child.exitCode === null) child.kill('SIGKILL') })
    const exited = new Promise<number | null>((resolve) => { child.once('exit', (code) => { resolve(code) }) })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    const deadline = Date.now() + 15_000
    while (!out.includes('listening')) {
      assert.ok(child.exitCode === null && Date.now() < deadline, `not listening: ${out}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    assert.match(out, new RegExp(`sample service orders \\(orders-v1\\) listening on 127\\.0\\.0\\.1:${port}`))
    const health = await fetch(`http://127.0.0.1:${port}/health`)
    assert.equal(health.status, 200)
    const body = await (await fetch(`http://127.0.0.1:${port}/orders/1`)).json() as { service: string, instance: string, path: string }
    assert.deepEqual([body.service, body.instance, body.path], ['orders', 'orders-v1', '/orders/1'])
    child.kill('SIGTERM')
    assert.equal(await exited, 0)
  })
})
