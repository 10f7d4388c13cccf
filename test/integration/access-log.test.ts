// The access log and the gateway's other log lines on real traffic: no credential a client
// sent (Authorization, Cookie, Proxy-Authorization, query-string tokens) nor one an upstream
// set (Set-Cookie) appears anywhere in a `fastmesh start` process's output, while the rest of
// the request target is kept; and sampling writes every failure and about the share of
// successes it is told.
import test from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import { stringify } from 'yaml'
import { SignJWT } from 'jose'
import { startGateway, tempDir, fixturePlugin, eventually, withTestListeners, type LogEntry } from '../helpers/gateway.js'
import { startGatewayProcess } from '../helpers/gateway-process.js'
import { startEcho, startUpstream, meshConfig } from '../helpers/upstreams.js'
import { freePort } from '../helpers/ports.js'
import { REDACTED } from '../../src/config/redact.js'

test('no credential a request carries reaches the gateway\'s output: access lines, plugin logs, error logs, on success, jwt refusal, upstream errors and a plugin failure', async (t) => {
  const secret = (what: string): string => `S3CRET${what}${randomUUID().replace(/-/g, '')}`
  const bearer = secret('bearer')
  const cookie = secret('cookie')
  const proxyAuth = secret('proxy')
  const queryToken = secret('query')
  const setCookie = secret('setcookie')
  const echo = await startEcho(t, 'svc', { 'set-cookie': `sid=${setCookie}; HttpOnly` })
  const resetting = await startUpstream(t, (req) => { req.socket.destroy() })
  const dead = await freePort()
  const dir = await tempDir(t)
  const path = join(dir, 'fastmesh.yaml')
  await writeFile(path, stringify(withTestListeners(meshConfig({ svc: [echo], resetting: [resetting], dead: [dead] }, [
    { name: 'jwt', match: { path: { prefix: '/jwt' } }, destination: { service: 'svc' }, plugins: [{ name: 'jwt', options: { secret: 'k'.repeat(40) } }] },
    { name: 'careless', match: { path: { prefix: '/careless' } }, destination: { service: 'svc' }, plugins: [{ name: 'careless' }] },
    { name: 'resetting', match: { path: { prefix: '/resetting' } }, destination: { service: 'resetting' } },
    { name: 'dead', match: { path: { prefix: '/dead' } }, destination: { service: 'dead' } },
    { name: 'open', match: { path: { prefix: '/open' } }, destination: { service: 'svc' } }
  ], { customPlugins: { careless: { module: fixturePlugin(dir, 'careless-log.js') } } }))))
  // The most talkative level: whatever the gateway would ever write about a request.
  const gw = await startGatewayProcess(t, ['--config', path], { FASTMESH_LOG_LEVEL: 'trace' })

  const wrongKeyToken = await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1m').sign(new TextEncoder().encode('w'.repeat(40)))
  const sent: Array<{ id: string, path: string, status: number }> = []
  const send = async (p: string, status: number, authorization = `Bearer ${bearer}`): Promise<void> => {
    const id = `log-secrets-${sent.length}`
    const target = `${p}?access_token=${queryToken}&page=2`
    const res = await request(gw.url + target, { headers: { authorization, cookie: `session=${cookie}; theme=dark`, 'proxy-authorization': `Basic ${proxyAuth}`, 'x-request-id': id } })
    await res.body.text()
    assert.equal(res.statusCode, status, `${target} answered ${res.statusCode}`)
    sent.push({ id, path: p, status })
  }
  await send('/open/a', 200)
  await send('/jwt/a', 401)
  await send('/jwt/b', 401, `Bearer ${wrongKeyToken}`)
  await send('/resetting/a', 502)
  await send('/dead/a', 502)
  await send('/careless/a', 200)
  await send('/careless/fail=1', 500)
  // The plugin's error quotes the target: a query token must not survive in its message either.
  const failing = `/careless/x?fail=1&client_secret=${queryToken}&page=2`
  const res = await request(gw.url + failing, { headers: { 'x-request-id': 'log-secrets-failing' } })
  await res.body.text()
  assert.equal(res.statusCode, 500)

  const access = await eventually(() => {
    const lines = gw.logs().filter((e) => e.log === 'access')
    return sent.every((s) => lines.some((l) => l.requestId === s.id)) && lines.some((l) => l.requestId === 'log-secrets-failing') ? lines : undefined
  }, 'an access line for every request', 15_000)

  const output = gw.stdout + gw.stderr
  for (const [what, value] of Object.entries({ bearer, cookie, proxyAuth, queryToken, setCookie, wrongKeyToken })) {
    assert.equal(output.includes(value), false, `${what} appears in the gateway's output:\n${output.split('\n').filter((l) => l.includes(value)).join('\n')}`)
  }
  for (const s of sent) {
    const line = access.find((l) => l.requestId === s.id)!
    assert.equal(line.path, `${s.path}?access_token=${REDACTED}&page=2`, 'the query kept but its token')
    assert.equal(line.status, s.status)
  }
  // The lines that could have leaked were written (so the absence above means something).
  const byMessage = (msg: string): LogEntry[] => gw.logs().filter((e) => e.msg === msg)
  const careless = byMessage('careless plugin saw a request')
  assert.ok(careless.length >= 3)
  assert.equal((careless[0]!.headers as Record<string, unknown>).authorization, REDACTED)
  assert.equal((careless[0]!.headers as Record<string, unknown>)['x-request-id'], 'log-secrets-5')
  const failed = byMessage('request failed in the gateway').find((e) => e.requestId === 'log-secrets-failing')
  assert.equal((failed?.err as { message?: string } | undefined)?.message, `careless plugin failed on /careless/x?fail=1&client_secret=${REDACTED}&page=2`)
  const reset = access.find((l) => l.requestId === 'log-secrets-3')!
  assert.equal(reset.error, 'FASTMESH_ERR_UPSTREAM_FAILURE')
  assert.match(String(reset.cause), /reset/)
})

test('accessLog.sampleRatio 0.1 writes every failure and about a tenth of the successes', async (t) => {
  const echo = await startEcho(t, 'svc')
  const failing = await startUpstream(t, (_req, res) => { res.writeHead(503).end('down') })
  const g = await startGateway(t, meshConfig({ svc: [echo], failing: [failing] }, [
    { name: 'ok', match: { path: { prefix: '/ok' } }, destination: { service: 'svc' } },
    { name: 'failing', match: { path: { prefix: '/failing' } }, destination: { service: 'failing' }, retries: { attempts: 1 } }
  ], { telemetry: { logging: { accessLog: { sampleRatio: 0.1 } } } }))
  const N = 1000
  const M = 60
  const failures = new Set<string>()
  for (let i = 0; i < N + M; i++) {
    const failure = i % 17 === 0 && failures.size < M
    // Request ids made by the gateway (random UUIDs): the draw is the gateway's own.
    const target = failure ? (failures.size % 2 === 0 ? '/failing' : '/nowhere') : '/ok'
    const res = await g.request(target)
    if (failure) failures.add(String(res.headers['x-request-id']))
    assert.equal(res.status, failure ? (target === '/failing' ? 503 : 404) : 200)
  }
  assert.equal(failures.size, M)
  const access = await eventually(() => {
    const lines = g.logs.entries().filter((e) => e.log === 'access')
    return lines.filter((l) => failures.has(String(l.requestId))).length === M ? lines : undefined
  }, 'every failure in the access log')
  const successes = access.filter((l) => l.status === 200).length
  // Binomial(1000, 0.1): mean 100, sd 9.5; ±5 sd.
  assert.ok(successes >= 52 && successes <= 148, `${successes} of ${N} successes written`)
  assert.equal(access.length, successes + M, 'nothing else written')
})
