// Prometheus metrics on the admin API: exact counts after known traffic over loopback, the
// scrape checked by a real promtool, label values only from config (the series count stays
// flat under thousands of distinct paths and Hosts), and nothing counted when turned off.
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { startGateway, assertErrorResponse, type TestGateway } from '../helpers/gateway.js'
import { meshConfig, startEcho, startHeldUpstream, startUpstream } from '../helpers/upstreams.js'
import { findTool } from '../helpers/tool-process.js'
import { freePort } from '../helpers/ports.js'
import net from 'node:net'

const LOCAL_PROMTOOL = fileURLToPath(new URL('../../../.tools/bin/promtool', import.meta.url))

/** `promtool check metrics` on `text` (its stdin): exit code and output. */
async function promtoolCheck (text: string): Promise<{ code: number | null, output: string }> {
  const bin = findTool('promtool', LOCAL_PROMTOOL, () => 'promtool not found: run `npm run setup` (installs it into .tools/bin)')
  const child = spawn(bin, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr.on('data', (d: Buffer) => { output += d.toString() })
  const done = new Promise<number | null>((resolve, reject) => { child.once('error', reject); child.once('close', resolve) })
  child.stdin.end(text)
  return { code: await done, output }
}

async function scrape (g: TestGateway): Promise<string> {
  const res = await g.admin('GET', '/metrics')
  assert.equal(res.status, 200, res.text)
  assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/)
  return res.text
}

/** The value of the one sample line `name{labels}`, labels given in the registry's order. */
function sample (text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
}

const series = (text: string, name: string): string[] => text.split('\n').filter((l) => l.startsWith(`${name}{`))

const labels = (route: string, destination: string, statusClass: string): string =>
  `role="edge",direction="edge",source="",destination="${destination}",route="${route}",status_class="${statusClass}"`

async function trafficGateway (t: test.TestContext, extra: Record<string, unknown> = {}): Promise<TestGateway> {
  const echo = await startEcho(t, 'a')
  const failing = await startUpstream(t, (_req, res) => { res.writeHead(503).end('down') })
  return await startGateway(t, meshConfig({ a: [echo], b: [failing] }, [
    { name: 'ra', match: { path: { prefix: '/a' } }, destination: { service: 'a' } },
    { name: 'rb', match: { path: { prefix: '/b' } }, destination: { service: 'b' }, retries: { attempts: 1 } }
  ], extra))
}

test('after known traffic the scrape shows exact request counts and histogram counts by route, destination and status class', async (t) => {
  const g = await trafficGateway(t)
  for (let i = 0; i < 3; i++) assert.equal((await g.request('/a/x')).status, 200)
  for (let i = 0; i < 2; i++) assert.equal((await g.request('/b/y')).status, 503)
  assertErrorResponse(await g.request('/nowhere'), 404, 'FASTMESH_ERR_NO_ROUTE')

  const text = await scrape(g)
  assert.equal(sample(text, 'fastmesh_requests_total', labels('ra', 'a', '2xx')), 3)
  assert.equal(sample(text, 'fastmesh_requests_total', labels('rb', 'b', '5xx')), 2)
  assert.equal(sample(text, 'fastmesh_requests_total', labels('(none)', '', '4xx')), 1)
  assert.equal(series(text, 'fastmesh_requests_total').length, 3, 'no other series')
  assert.equal(sample(text, 'fastmesh_request_duration_seconds_count', labels('ra', 'a', '2xx')), 3)
  assert.equal(sample(text, 'fastmesh_request_duration_seconds_bucket', `${labels('ra', 'a', '2xx')},le="+Inf"`), 3)
  assert.equal(sample(text, 'fastmesh_request_duration_seconds_bucket', `${labels('rb', 'b', '5xx')},le="10"`), 2, 'every request took less than 10 s')
  assert.equal(sample(text, 'fastmesh_request_duration_seconds_count', labels('(none)', '', '4xx')), 1)
  assert.ok(sample(text, 'fastmesh_request_duration_seconds_sum', labels('ra', 'a', '2xx'))! > 0)
  // Node process metrics ride along, under their conventional names.
  assert.match(text, /^process_cpu_user_seconds_total /m)
  assert.match(text, /^nodejs_eventloop_lag_seconds /m)
  assert.equal(sample(text, 'fastmesh_config_reloads_total', 'result="success"'), 0)
  assert.match(text, /^fastmesh_config_version 1$/m)
})

test('per try: first tries and retries by endpoint and outcome (status class, connect error); endpoints by state and the unreachable count', async (t) => {
  // Every other request answers 503: with one retry on 5xx, each client request is a 503 try then a 200 retry.
  let n = 0
  const flaky = await startUpstream(t, (_req, res) => { n++; if (n % 2 === 1) res.writeHead(503).end('busy'); else res.writeHead(200).end('ok') })
  const closed = await freePort()
  const echo = await startEcho(t, 'a')
  const g = await startGateway(t, meshConfig({ f: [flaky], d: [closed], a: [echo] }, [
    { name: 'rf', match: { path: { prefix: '/f' } }, destination: { service: 'f' }, retries: { attempts: 2, retryOn: ['5xx'], backoff: { base: '1ms', max: '1ms' } } },
    { name: 'rd', match: { path: { prefix: '/d' } }, destination: { service: 'd' }, retries: { attempts: 1 } },
    { name: 'ra', match: { path: { prefix: '/a' } }, destination: { service: 'a' } }
  ]))
  for (let i = 0; i < 3; i++) assert.equal((await g.request('/f')).status, 200)
  assert.equal((await g.request('/d')).status, 502)
  assert.equal((await g.request('/a')).status, 200)

  const text = await scrape(g)
  const tries = (destination: string, endpoint: string, kind: string, outcome: string): number | undefined =>
    sample(text, 'fastmesh_upstream_tries_total', `role="edge",destination="${destination}",endpoint="${endpoint}",kind="${kind}",outcome="${outcome}"`)
  assert.equal(tries('f', `127.0.0.1:${flaky.port}`, 'first', '5xx'), 3)
  assert.equal(tries('f', `127.0.0.1:${flaky.port}`, 'retry', '2xx'), 3)
  assert.equal(tries('d', `127.0.0.1:${closed}`, 'first', 'connect_error'), 1)
  assert.equal(tries('a', `127.0.0.1:${echo.port}`, 'first', '2xx'), 1)
  assert.equal(series(text, 'fastmesh_upstream_tries_total').length, 4, 'no other try series')
  // The client saw 3 × 200 on rf: the retries are in the try counts, not the request counts.
  assert.equal(sample(text, 'fastmesh_requests_total', labels('rf', 'f', '2xx')), 3)
  assert.equal(sample(text, 'fastmesh_requests_total', labels('rf', 'f', '5xx')), undefined)
  // The endpoint that refused connections is out of rotation and counted unreachable once.
  assert.equal(sample(text, 'fastmesh_endpoint_unreachable_total', 'role="edge",destination="d"'), 1)
  assert.equal(sample(text, 'fastmesh_endpoints', 'role="edge",destination="d",state="ejected"'), 1)
  assert.equal(sample(text, 'fastmesh_endpoints', 'role="edge",destination="d",state="healthy"'), 0)
  assert.equal(sample(text, 'fastmesh_endpoints', 'role="edge",destination="a",state="healthy"'), 1)
  assert.equal(sample(text, 'fastmesh_gateway_errors_total', 'role="edge",route="rd",code="FASTMESH_ERR_UPSTREAM_FAILURE"'), 1)
})

test('request and response bytes are the bytes on the client connection, per exchange of a keep-alive connection', async (t) => {
  const g = await trafficGateway(t)
  const port = Number(new URL(g.url).port)
  const request = 'GET /a/bytes HTTP/1.1\r\nHost: bytes.test\r\nX-Pad: ' + 'p'.repeat(100) + '\r\n\r\n'
  // Two requests on one connection, the second only after the first answer: each is counted once.
  const received = await new Promise<number[]>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    const sizes: number[] = []
    let buffer = Buffer.alloc(0)
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk])
      const head = buffer.indexOf('\r\n\r\n')
      if (head === -1) return
      const length = Number(/content-length: (\d+)/i.exec(buffer.subarray(0, head).toString())?.[1])
      if (buffer.length < head + 4 + length) return
      sizes.push(head + 4 + length)
      buffer = buffer.subarray(head + 4 + length)
      if (sizes.length === 1) socket.write(request)
      else { socket.end(); resolve(sizes) }
    })
    socket.on('error', reject)
    socket.write(request)
  })
  const text = await scrape(g)
  assert.equal(sample(text, 'fastmesh_request_bytes_total', labels('ra', 'a', '2xx')), 2 * Buffer.byteLength(request))
  assert.equal(sample(text, 'fastmesh_response_bytes_total', labels('ra', 'a', '2xx')), received[0]! + received[1]!)
})

test('gateway answers by code, circuit overflows by limit and injected faults by kind', async (t) => {
  const held = await startHeldUpstream(t)
  const echo = await startEcho(t, 'a')
  const g = await startGateway(t, meshConfig({ h: [held], a: [echo] }, [
    { name: 'rh', match: { path: { prefix: '/h' } }, destination: { service: 'h' } },
    { name: 'rfault', match: { path: { prefix: '/fault' } }, destination: { service: 'a' }, plugins: [{ name: 'fault-injection', options: { abort: { status: 418, percent: 100 } } }] }
  ], { services: { h: { circuitBreaker: { maxRequests: 1, maxPendingRequests: 0 } } } }))
  const first = g.request('/h')
  await held.waitForArrivals(1)
  assertErrorResponse(await g.request('/h'), 503, 'FASTMESH_ERR_OVERFLOW')
  held.release()
  assert.equal((await first).status, 200)
  assert.equal((await g.request('/fault')).status, 418)
  assertErrorResponse(await g.request('/nowhere'), 404, 'FASTMESH_ERR_NO_ROUTE')

  const text = await scrape(g)
  assert.equal(sample(text, 'fastmesh_circuit_overflows_total', 'role="edge",destination="h",limit="max-requests"'), 1)
  assert.equal(sample(text, 'fastmesh_gateway_errors_total', 'role="edge",route="rh",code="FASTMESH_ERR_OVERFLOW"'), 1)
  assert.equal(sample(text, 'fastmesh_gateway_errors_total', 'role="edge",route="(none)",code="FASTMESH_ERR_NO_ROUTE"'), 1)
  assert.equal(sample(text, 'fastmesh_faults_injected_total', 'role="edge",route="rfault",kind="abort"'), 1)
  assert.equal(sample(text, 'fastmesh_gateway_errors_total', 'role="edge",route="rfault",code="FASTMESH_ERR_FAULT_INJECTED"'), 1)
  assert.equal(series(text, 'fastmesh_gateway_errors_total').length, 3, 'no other codes')
})

test('promtool check metrics accepts a real scrape', async (t) => {
  const g = await trafficGateway(t)
  await g.request('/a/x')
  await g.request('/b/y')
  await g.request('/nowhere')
  const { code, output } = await promtoolCheck(await scrape(g))
  assert.equal(code, 0, `promtool check metrics failed:\n${output}`)
})

test('thousands of distinct paths and Host headers add no series: label values come from config only', async (t) => {
  const g = await trafficGateway(t)
  const send = async (from: number, to: number): Promise<void> => {
    for (let i = from; i < to; i++) {
      const path = i % 5 === 0 ? `/unrouted/${i}` : `/a/${i}?q=${i}`
      await g.request(path, { headers: { host: `host-${i}.example` } })
    }
  }
  await send(0, 20)
  const before = series(await scrape(g), 'fastmesh_requests_total')
  await Promise.all([send(20, 700), send(700, 1350), send(1350, 2000)])
  const text = await scrape(g)
  assert.deepEqual(series(text, 'fastmesh_requests_total').map((l) => l.slice(0, l.lastIndexOf(' '))), before.map((l) => l.slice(0, l.lastIndexOf(' '))))
  assert.equal(sample(text, 'fastmesh_requests_total', labels('ra', 'a', '2xx')), 1600)
  assert.equal(sample(text, 'fastmesh_requests_total', labels('(none)', '', '4xx')), 400)
  assert.doesNotMatch(text, /host-\d|unrouted/)
})

test('a reload counts as a success and moves the config version; a refused one counts as a failure', async (t) => {
  const g = await trafficGateway(t)
  const good = await g.admin('POST', '/reload')
  assert.equal(good.status, 200, good.text)
  await g.writeRawConfig('routes: [')
  assert.equal((await g.admin('POST', '/reload')).status, 409)
  const text = await scrape(g)
  assert.equal(sample(text, 'fastmesh_config_reloads_total', 'result="success"'), 1)
  assert.equal(sample(text, 'fastmesh_config_reloads_total', 'result="failure"'), 1)
  assert.match(text, /^fastmesh_config_version 2$/m)
})

test('telemetry.metrics.enabled: false leaves the policy out and /metrics answers 404', async (t) => {
  const g = await trafficGateway(t, { telemetry: { metrics: { enabled: false } } })
  assert.equal((await g.request('/a/x')).status, 200)
  assert.equal(g.gateway.version?.policies.some((p) => p.name === 'metrics'), false)
  const body = assertErrorResponse(await g.admin('GET', '/metrics'), 404, 'FASTMESH_ERR_ADMIN_NOT_FOUND')
  assert.match(body.error.message, /telemetry\.metrics\.enabled/)
  assert.doesNotMatch(await g.gateway.metrics.render(), /^fastmesh_requests_total\{/m, 'nothing was counted')
})
