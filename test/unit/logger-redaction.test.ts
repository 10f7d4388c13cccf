// The gateway's logger hides credentials wherever a request or its headers reach a log line:
// header objects (pino redact paths), `{ req }` (a serializer without headers and with the
// query redacted, in place of Fastify's), and error messages quoting a URL.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import { request } from 'undici'
import { createLogger } from '../../src/telemetry/logger.js'
import { REDACTED } from '../../src/config/redact.js'

function capture (): { lines: string[], write(line: string): void, text(): string } {
  const lines: string[] = []
  return { lines, write (line) { lines.push(line) }, text () { return lines.join('') } }
}

const SECRETS = ['S-auth', 'S-cookie', 'S-setcookie', 'S-proxy', 'S-query']

test('credential headers are redacted in any header object a log line carries, other headers kept', () => {
  const out = capture()
  const log = createLogger({ level: 'info', destination: out }).child({ component: 'x' })
  const headers = { authorization: 'Bearer S-auth', cookie: 'session=S-cookie', 'proxy-authorization': 'Basic S-proxy', 'set-cookie': ['sid=S-setcookie'], 'x-trace': 'kept' }
  log.info({ headers }, 'top level')
  log.info({ req: { method: 'GET', url: '/a', headers } }, 'under req')
  log.info({ request: { raw: { headers } } }, 'a fastify request\'s raw')
  log.info({ ex: { req: { headers } } }, 'an exchange')
  log.warn({ res: { headers } }, 'response headers')
  assert.equal(out.lines.length, 5)
  for (const secret of SECRETS) assert.equal(out.text().includes(secret), false, `${secret} appears in:\n${out.text()}`)
  const first = JSON.parse(out.lines[0]!) as { headers: Record<string, unknown> }
  assert.equal(first.headers.authorization, REDACTED)
  assert.equal(first.headers['x-trace'], 'kept')
  assert.equal(headers.authorization, 'Bearer S-auth', 'the logged object itself is not changed')
})

test('an error quoting a URL with a token has the token redacted in message and stack', () => {
  const out = capture()
  const log = createLogger({ level: 'info', destination: out })
  log.error({ err: new Error('upstream http://127.0.0.1:1/a?access_token=S-query&page=2 failed') }, 'failed')
  const entry = JSON.parse(out.lines[0]!) as { err: { message: string, stack: string } }
  assert.equal(entry.err.message, `upstream http://127.0.0.1:1/a?access_token=${REDACTED}&page=2 failed`)
  assert.equal(entry.err.stack.includes('S-query'), false)
})

test('a Fastify request logged as { req } (as Fastify and plugins do) shows no headers and a redacted query', async (t) => {
  const out = capture()
  const app = Fastify({ loggerInstance: createLogger({ level: 'info', destination: out }) })
  app.get('/p', async (req) => {
    req.log.info({ req }, 'plugin saw a request')
    return 'ok'
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.after(async () => { await app.close() })
  const { port } = app.server.address() as { port: number }
  const res = await request(`http://127.0.0.1:${port}/p?access_token=S-query&page=2`, { headers: { authorization: 'Bearer S-auth', cookie: 'session=S-cookie' } })
  assert.equal(res.statusCode, 200)
  await res.body.text()
  const entry = out.lines.map((l) => JSON.parse(l) as { msg?: string, req?: Record<string, unknown> }).find((e) => e.msg === 'plugin saw a request')
  assert.ok(entry?.req !== undefined, out.text())
  assert.equal(entry.req.url, `/p?access_token=${REDACTED}&page=2`)
  assert.equal(entry.req.method, 'GET')
  assert.equal('headers' in entry.req, false)
  for (const secret of SECRETS) assert.equal(out.text().includes(secret), false, `${secret} appears in:\n${out.text()}`)
})
