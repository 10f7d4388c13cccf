// The files shipped for users' own monitoring stacks: config/prometheus.yml (gateways found in
// Consul) and the Grafana dashboard with its provisioning. Checked with a real promtool, a real
// Consul agent a real gateway registers itself in, and a real scrape of a gateway that served
// traffic.
//
// Debian's promtool (what `npm run setup` installs) is built without Consul service discovery,
// so it cannot read `consul_sd_configs`: the rest of the file goes through it with that block
// swapped for a static target, the block's keys are checked against Prometheus's Consul SD
// options, and its relabeling is applied, as Prometheus documents it, to the labels Consul SD
// makes from the real catalog entry; the address it yields is then scraped.
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse, stringify } from 'yaml'
import { startGateway, tempDir, defer } from '../helpers/gateway.js'
import { meshConfig, startEcho, startUpstream } from '../helpers/upstreams.js'
import { findTool } from '../helpers/tool-process.js'
import { startConsul, consulApi } from '../helpers/consul.js'

const CONFIG = fileURLToPath(new URL('../../../config/', import.meta.url))
const LOCAL_PROMTOOL = fileURLToPath(new URL('../../../.tools/bin/promtool', import.meta.url))

async function promtool (args: string[]): Promise<{ code: number | null, output: string }> {
  const bin = findTool('promtool', LOCAL_PROMTOOL, () => 'promtool not found: run `npm run setup` (installs it into .tools/bin)')
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr.on('data', (d: Buffer) => { output += d.toString() })
  const code = await new Promise<number | null>((resolve, reject) => { child.once('error', reject); child.once('close', resolve) })
  return { code, output }
}

interface RelabelRule {
  readonly source_labels?: string[]
  readonly separator?: string
  readonly regex?: string
  readonly replacement?: string
  readonly target_label?: string
  readonly action?: string
}

interface ScrapeConfig {
  readonly job_name: string
  readonly metrics_path?: string
  readonly consul_sd_configs?: Array<Record<string, unknown>>
  readonly relabel_configs?: RelabelRule[]
  readonly [key: string]: unknown
}

async function prometheusConfig (): Promise<{ text: string, doc: { scrape_configs: ScrapeConfig[], [key: string]: unknown } }> {
  const text = await readFile(join(CONFIG, 'prometheus.yml'), 'utf8')
  return { text, doc: parse(text) as { scrape_configs: ScrapeConfig[] } }
}

/**
 * Prometheus relabeling (`replace`, `keep`, `drop`; the defaults of its docs: separator `;`,
 * regex `(.*)` anchored at both ends, replacement `$1`, an empty result removes the label).
 * Undefined: the target was dropped.
 */
function relabel (labels: ReadonlyMap<string, string>, rules: readonly RelabelRule[]): Map<string, string> | undefined {
  const out = new Map(labels)
  for (const rule of rules) {
    const value = (rule.source_labels ?? []).map((l) => out.get(l) ?? '').join(rule.separator ?? ';')
    const match = new RegExp(`^(?:${rule.regex ?? '(.*)'})$`).exec(value)
    const action = rule.action ?? 'replace'
    if (action === 'keep') { if (match === null) return undefined; continue }
    if (action === 'drop') { if (match !== null) return undefined; continue }
    assert.equal(action, 'replace', `relabel action ${action} is not one this test applies`)
    if (match === null) continue
    const result = (rule.replacement ?? '$1').replace(/\$(?:(\d+)|\{(\d+)\})/g, (_all, a: string | undefined, b: string | undefined) => match[Number(a ?? b)] ?? '')
    if (result === '') out.delete(rule.target_label!)
    else out.set(rule.target_label!, result)
  }
  return out
}

interface HealthEntry {
  Node: { Node: string, Address: string, Datacenter: string }
  Service: { ID: string, Service: string, Address: string, Port: number, Tags: string[] | null, Meta: Record<string, string> | null }
}

/** The labels Prometheus's Consul SD gives one catalog entry (discovery/consul/consul.go). */
function consulTargetLabels (e: HealthEntry): Map<string, string> {
  const host = e.Service.Address !== '' ? e.Service.Address : e.Node.Address
  const labels = new Map<string, string>([
    ['__address__', `${host.includes(':') ? `[${host}]` : host}:${e.Service.Port}`],
    ['__meta_consul_address', e.Node.Address],
    ['__meta_consul_node', e.Node.Node],
    ['__meta_consul_tags', `,${(e.Service.Tags ?? []).join(',')},`],
    ['__meta_consul_service', e.Service.Service],
    ['__meta_consul_service_address', e.Service.Address],
    ['__meta_consul_service_port', String(e.Service.Port)],
    ['__meta_consul_service_id', e.Service.ID],
    ['__meta_consul_dc', e.Node.Datacenter]
  ])
  for (const [k, v] of Object.entries(e.Service.Meta ?? {})) labels.set(`__meta_consul_service_metadata_${k.replace(/[^a-zA-Z0-9_]/g, '_')}`, v)
  return labels
}

test('config/prometheus.yml passes promtool check config (its Consul block swapped for a static target where promtool lacks Consul SD)', async (t) => {
  const { doc } = await prometheusConfig()
  const fastmesh = doc.scrape_configs.find((s) => s.job_name === 'fastmesh')
  assert.ok(fastmesh?.consul_sd_configs !== undefined && fastmesh.consul_sd_configs.length > 0)
  // The SDConfig fields of Prometheus's Consul discovery (discovery/consul/consul.go).
  const consulKeys = new Set(['server', 'token', 'datacenter', 'namespace', 'partition', 'tag_separator', 'scheme', 'username', 'password', 'allow_stale', 'refresh_interval', 'services', 'tags', 'node_meta', 'filter', 'tls_config', 'authorization', 'basic_auth', 'oauth2', 'proxy_url', 'follow_redirects', 'enable_http2'])
  for (const sd of fastmesh.consul_sd_configs) {
    for (const key of Object.keys(sd)) assert.ok(consulKeys.has(key), `consul_sd_configs key ${key}`)
    assert.equal(typeof sd.server, 'string')
    assert.deepEqual(sd.tags, ['fastmesh'], 'gateways are found by the tag they register with')
  }

  const dir = await tempDir(t)
  const whole = await promtool(['check', 'config', join(CONFIG, 'prometheus.yml')])
  if (!/field consul_sd_configs not found/.test(whole.output)) {
    // A promtool with Consul SD checks the file exactly as shipped.
    assert.equal(whole.code, 0, whole.output)
  }
  const swapped = { ...doc, scrape_configs: doc.scrape_configs.map(({ consul_sd_configs: _consul, ...rest }) => ({ ...rest, static_configs: [{ targets: ['127.0.0.1:15000'] }] })) }
  const file = join(dir, 'prometheus.yml')
  await writeFile(file, stringify(swapped))
  const checked = await promtool(['check', 'config', file])
  assert.equal(checked.code, 0, checked.output)
  assert.match(checked.output, /SUCCESS/)
  // The commented-out token option, once uncommented, is one promtool takes too.
  const withToken = { ...swapped, scrape_configs: swapped.scrape_configs.map((s) => ({ ...s, authorization: { type: 'Bearer', credentials_file: join(dir, 'token') } })) }
  await writeFile(join(dir, 'token'), 'x'.repeat(32))
  await writeFile(file, stringify(withToken))
  const tokened = await promtool(['check', 'config', file])
  assert.equal(tokened.code, 0, tokened.output)
  const { text } = await prometheusConfig()
  assert.match(text, /^ {4}# authorization:\n {4}# {3}type: Bearer\n {4}# {3}credentials_file: /m, 'the bearer-token option is shown, commented')
})

test('config/prometheus.yml relabeling turns a gateway\'s Consul registration into a scrape of its admin /metrics, and leaves out services it registers for others', async (t) => {
  const agent = await startConsul()
  defer(t, async () => { await agent.stop() })
  const echo = await startEcho(t, 'svc')
  const g = await startGateway(t, meshConfig({ svc: [echo] }, [{ name: 'r', destination: { service: 'svc' } }], {
    gateway: { name: 'edge-prom', mode: 'edge' },
    discovery: {
      embedded: { services: { svc: { endpoints: [{ id: 'svc-1', address: '127.0.0.1', port: echo.port }] } } },
      // A service registered with the gateway's tag but no admin meta: not a gateway, not scraped.
      consul: { address: agent.httpAddr, register: [{ name: 'lookalike', id: 'lookalike-1', address: '127.0.0.1', port: 7100, tags: ['fastmesh'], check: { ttl: '30s' } }] }
    }
  }))
  assert.equal((await g.request('/x')).status, 200)

  const { doc } = await prometheusConfig()
  const job = doc.scrape_configs.find((s) => s.job_name === 'fastmesh')!
  const tags = job.consul_sd_configs![0]!.tags as string[]
  // As Consul SD does: the catalog's services carrying every tag, then each one's entries.
  const entries = await (async () => {
    for (let i = 0; ; i++) {
      const services = await consulApi<Record<string, string[]>>(agent, 'GET', '/v1/catalog/services')
      const names = Object.entries(services).filter(([, t]) => tags.every((tag) => t.includes(tag))).map(([n]) => n).sort()
      if (names.includes('edge-prom') && names.includes('lookalike')) {
        const all: HealthEntry[] = []
        for (const name of names) all.push(...await consulApi<HealthEntry[]>(agent, 'GET', `/v1/health/service/${name}?${tags.map((tag) => `tag=${tag}`).join('&')}`))
        return all
      }
      assert.ok(i < 100, `the gateway's registrations in Consul: ${JSON.stringify(services)}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  })()
  const targets = entries.map((e) => relabel(consulTargetLabels(e), job.relabel_configs ?? [])).filter((l) => l !== undefined)
  assert.equal(targets.length, 1, 'only the gateway itself is a target')
  const target = targets[0]!
  assert.equal(target.get('__address__'), `127.0.0.1:${g.gateway.adminAddress.port}`)
  assert.equal(target.get('gateway'), 'edge-prom')
  assert.match(target.get('instance') ?? '', /^edge-prom-/)
  const res = await fetch(`http://${target.get('__address__')}${job.metrics_path ?? '/metrics'}`)
  assert.equal(res.status, 200)
  assert.match(await res.text(), /^fastmesh_requests_total\{.*route="r".*\} 1$/m)
})

test('config/prometheus.yml relabeling scrapes the admin address exactly as the gateway registered it (a reachable one when the admin binds all addresses)', async () => {
  const { doc } = await prometheusConfig()
  const rules = doc.scrape_configs.find((s) => s.job_name === 'fastmesh')!.relabel_configs ?? []
  const target = (admin: string): string | undefined => relabel(consulTargetLabels({
    Node: { Node: 'host-1', Address: '10.0.0.9', Datacenter: 'dc1' },
    Service: { ID: 'edge-1', Service: 'fastmesh-edge', Address: '10.0.0.7', Port: 8080, Tags: ['fastmesh'], Meta: { role: 'edge', admin } }
  }), rules)?.get('__address__')
  assert.equal(target('10.0.0.7:15000'), '10.0.0.7:15000')
  assert.equal(target('[fd00::7]:15000'), '[fd00::7]:15000')
  assert.equal(relabel(consulTargetLabels({
    Node: { Node: 'host-1', Address: '10.0.0.9', Datacenter: 'dc1' },
    Service: { ID: 'app-1', Service: 'app', Address: '10.0.0.7', Port: 8080, Tags: ['fastmesh'], Meta: {} }
  }), rules), undefined, 'no admin meta: not a gateway')
})

interface Panel { type: string, title: string, datasource?: { uid?: string }, targets?: Array<{ expr: string, datasource?: { uid?: string } }> }

/** Grafana's template variables in an expression, replaced by values PromQL accepts. */
function withVariables (expr: string): string {
  return expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m').replace(/\$instance\b/g, '.*')
}

const METRIC = /\b(?:fastmesh|process|nodejs)_[a-zA-Z0-9_]+\b/g

test('the Grafana dashboard parses, and every query passes promtool and names only metrics a real gateway exports', async (t) => {
  const dashboard = JSON.parse(await readFile(join(CONFIG, 'grafana/fastmesh-dashboard.json'), 'utf8')) as { uid: string, title: string, panels: Panel[], templating: { list: Array<{ name: string, type: string, query?: unknown }> } }
  assert.equal(dashboard.uid, 'fastmesh-overview')
  const panels = dashboard.panels.filter((p) => p.type !== 'row')
  const exprs = panels.flatMap((p) => (p.targets ?? []).map((q) => q.expr))
  assert.ok(panels.every((p) => (p.targets ?? []).length > 0), 'every panel queries something')
  assert.ok([...panels, ...panels.flatMap((p) => p.targets ?? [])].every((x) => x.datasource?.uid === '${datasource}'), 'every panel and query uses the dashboard\'s data source variable')
  assert.deepEqual(dashboard.templating.list.map((v) => v.name), ['datasource', 'instance'])
  // What the dashboard is for, each at least once.
  for (const needle of ['rate(fastmesh_requests_total', 'status_class="5xx"', 'histogram_quantile(0.5,', 'histogram_quantile(0.99,', 'fastmesh_request_duration_seconds_bucket',
    'fastmesh_upstream_tries_total', 'fastmesh_endpoints', 'fastmesh_gateway_errors_total', 'fastmesh_config_reloads_total', 'fastmesh_certificate_expiry_seconds', '/ 86400', 'process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag']) {
    assert.ok(exprs.some((e) => e.includes(needle)), `a query with ${needle}`)
  }

  // Syntax: every expression as a recording rule, through promtool.
  const dir = await tempDir(t)
  const rules = join(dir, 'dashboard-rules.yml')
  await writeFile(rules, stringify({ groups: [{ name: 'fastmesh-dashboard', rules: exprs.map((expr, i) => ({ record: `fastmesh_dashboard:query_${i}`, expr: withVariables(expr) })) }] }))
  const checked = await promtool(['check', 'rules', rules])
  assert.equal(checked.code, 0, checked.output)
  assert.match(checked.output, new RegExp(`SUCCESS: ${exprs.length} rules found`))

  // Names: a gateway that served traffic, scraped.
  const echo = await startEcho(t, 'a')
  const failing = await startUpstream(t, (_req, res) => { res.writeHead(503).end('down') })
  const g = await startGateway(t, meshConfig({ a: [echo], b: [failing] }, [
    { name: 'ra', match: { path: { prefix: '/a' } }, destination: { service: 'a' } },
    { name: 'rb', match: { path: { prefix: '/b' } }, destination: { service: 'b' }, retries: { attempts: 1 } }
  ]))
  assert.equal((await g.request('/a/x')).status, 200)
  assert.equal((await g.request('/b/x')).status, 503)
  const scrape = await g.admin('GET', '/metrics')
  assert.equal(scrape.status, 200)
  const exported = new Set<string>()
  for (const line of scrape.text.split('\n')) {
    const typed = /^# TYPE (\S+) (\S+)/.exec(line)
    if (typed !== null) exported.add(typed[1]!)
    else if (line !== '' && !line.startsWith('#')) exported.add(/^[^{ ]+/.exec(line)![0])
  }
  for (const expr of exprs) {
    const names = expr.match(METRIC) ?? []
    assert.ok(names.length > 0, `no metric name found in ${expr}`)
    for (const name of names) assert.ok(exported.has(name), `${name} (in ${expr}) is not in a gateway's scrape`)
  }
})

test('the Grafana provisioning files name a Prometheus data source and load the dashboard from a file path', async () => {
  const datasources = parse(await readFile(join(CONFIG, 'grafana/provisioning/datasources/fastmesh.yaml'), 'utf8')) as { apiVersion: number, datasources: Array<{ type: string, url: string, access: string }> }
  assert.equal(datasources.apiVersion, 1)
  assert.equal(datasources.datasources.length, 1)
  assert.equal(datasources.datasources[0]!.type, 'prometheus')
  assert.equal(datasources.datasources[0]!.access, 'proxy')
  assert.match(datasources.datasources[0]!.url, /^http:\/\/prometheus:9090$/)
  const dashboards = parse(await readFile(join(CONFIG, 'grafana/provisioning/dashboards/fastmesh.yaml'), 'utf8')) as { apiVersion: number, providers: Array<{ type: string, options: { path: string } }> }
  assert.equal(dashboards.apiVersion, 1)
  assert.equal(dashboards.providers[0]!.type, 'file')
  assert.match(dashboards.providers[0]!.options.path, /^\//)
})
