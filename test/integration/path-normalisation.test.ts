// Path normalisation at every entry (issue 7): the edge listener, a node's shared outbound port
// (config route and by-host route), a per-upstream listener and the inbound mTLS listener all
// normalise the path once, the same way, before routing, authorization and plugins; the
// upstream gets that path. Requests are sent raw (node:http / node:https with the target as
// given) so no client normalises the path on the way.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpsRequest } from 'node:https'
import { connect } from 'node:net'
import type { TestContext } from 'node:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { assertErrorResponse, plainRequest, readResponse, startGateway, type HttpResult, type TestGateway } from '../helpers/gateway.js'
import { meshConfig, startEcho, type EchoRecord, type EchoUpstream } from '../helpers/upstreams.js'
import { freePorts } from '../helpers/ports.js'
import { createLocalCa, issueLeaf, issueLeafInMemory, type CaPem, type LeafPem } from '../../src/identity/local-ca.js'

/** Every one of these is `/admin` to a server that normalises (RFC 3986) or decodes unreserved escapes. */
const ADMIN_SPELLINGS = ['/admin', '/x/../admin', '//admin', '/./admin', '/%61dmin', '/%2e%2e/admin', '/a/%2E%2E/admin', '/\\admin', '/admin#frag', '/admin/']
/** Escaped slashes (refused by default), overlong UTF-8 dots, Tomcat path-parameter dots, bad escapes. */
const REFUSED = ['/..%2fadmin', '/%2E%2E%2Fadmin', '/x%2f..%2f..%2fadmin', '/%5c..%5cadmin', '/%c0%ae%c0%ae/admin', '/..;/admin', '/a%zz']

/** Where the request is sent: a plain listener (with a Host) or the inbound listener over mTLS. */
type Send = (target: string, method?: string) => Promise<HttpResult>

function plainSender (origin: () => string, host: string): Send {
  return async (target, method = 'GET') => await plainRequest(origin(), target, { method, headers: { host } })
}

// ---------------------------------------------------------------- edge

describe('edge listener: config routes see the normalised path', () => {
  it('every spelling of /admin takes the /admin route and is forwarded as /admin', async (t) => {
    const { g, admin, rest } = await edge(t)
    for (const target of ADMIN_SPELLINGS) {
      const res = await plainRequest(g.url, target)
      assert.equal(res.status, 200, `${target}: ${res.text}`)
      const seen = res.json<EchoRecord>()
      assert.equal(seen.service, 'admin', `route for ${target}`)
      assert.equal(seen.url, target.endsWith('/') ? '/admin/' : '/admin', `path forwarded for ${target}`)
    }
    assert.equal(rest.seen.length, 0)
    assert.equal(admin.seen.length, ADMIN_SPELLINGS.length)
  })

  it('escaped slashes, overlong dots, ..; segments and bad escapes get 400 FASTMESH_ERR_BAD_REQUEST and reach no upstream', async (t) => {
    const { g, admin, rest } = await edge(t)
    for (const target of REFUSED) {
      const res = await plainRequest(g.url, target, { headers: { 'x-request-id': 'refused-1' } })
      const body = assertErrorResponse(res, 400, 'FASTMESH_ERR_BAD_REQUEST')
      assert.equal(body.error.requestId, 'refused-1', target)
    }
    assert.equal(admin.seen.length + rest.seen.length, 0)
  })

  it('a stripPrefix route cannot be left through ..%2f (regression: upstream got /..%2fadmin)', async (t) => {
    const api = await startEcho(t, 'api')
    const g = await startGateway(t, meshConfig({ api: [api] }, [{ name: 'api', match: { path: { prefix: '/api' } }, destination: { service: 'api', stripPrefix: true } }]))
    assertErrorResponse(await plainRequest(g.url, '/api/..%2fadmin'), 400, 'FASTMESH_ERR_BAD_REQUEST')
    assertErrorResponse(await plainRequest(g.url, '/api/..%2Fadmin'), 400, 'FASTMESH_ERR_BAD_REQUEST')
    assert.equal(api.seen.length, 0)
    assert.equal((await plainRequest(g.url, '/api/a%2Eb')).json<EchoRecord>().url, '/a.b')
  })

  it('escapedSlashes unescape: an escaped slash is a separator for routing and the upstream alike', async (t) => {
    const { g, admin } = await edge(t, 'unescape')
    for (const target of ['/x%2f..%2f..%2fadmin', '/..%2fadmin', '/%5c..%5cadmin']) {
      const res = await plainRequest(g.url, target)
      assert.equal(res.json<EchoRecord>().service, 'admin', target)
      assert.equal(res.json<EchoRecord>().url, '/admin', target)
    }
    assert.equal(admin.seen.length, 3)
  })

  it('escapedSlashes keep: an escaped slash is forwarded encoded and does not separate segments', async (t) => {
    const { g, rest } = await edge(t, 'keep')
    const res = await plainRequest(g.url, '/x%2f..%2f..%2fadmin')
    assert.equal(res.json<EchoRecord>().service, 'rest')
    assert.equal(res.json<EchoRecord>().url, '/x%2F..%2F..%2Fadmin')
    assert.equal(rest.seen.length, 1)
  })

  it('the fragment is never forwarded and the query is forwarded byte for byte', async (t) => {
    const { g } = await edge(t)
    const res = await plainRequest(g.url, '/x/../admin?q=%2F&p=../a%zz#frag')
    assert.equal(res.json<EchoRecord>().url, '/admin?q=%2F&p=../a%zz')
  })

  it('an upgrade (WebSocket) request is normalised too: an escaped slash gets 400 before any upstream', async (t) => {
    const { g, admin, rest } = await edge(t)
    const { port } = new URL(g.url)
    const head = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1')
      let data = ''
      socket.setEncoding('latin1')
      socket.on('data', (c: string) => { data += c })
      socket.on('error', reject)
      socket.on('close', () => { resolve(data) })
      socket.write('GET /x%2f..%2fadmin HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
    })
    assert.match(head, /^HTTP\/1\.1 400 /)
    assert.match(head, /FASTMESH_ERR_BAD_REQUEST/)
    assert.equal(admin.seen.length + rest.seen.length, 0)
  })

  it('the access log records the normalised path', async (t) => {
    const { g } = await edge(t)
    await plainRequest(g.url, '/x/../%61dmin', { headers: { 'x-request-id': 'logged-1' } })
    const line = g.logs.entries().find((e) => e.log === 'access' && e.requestId === 'logged-1')
    assert.ok(line !== undefined, 'an access-log line for the request')
    assert.equal(line.path, '/admin')
  })
})

async function edge (t: TestContext, escapedSlashes?: string): Promise<{ g: TestGateway, admin: EchoUpstream, rest: EchoUpstream }> {
  const admin = await startEcho(t, 'admin')
  const rest = await startEcho(t, 'rest')
  const g = await startGateway(t, meshConfig({ admin: [admin], rest: [rest] }, [
    { name: 'admin', match: { path: { prefix: '/admin' } }, destination: { service: 'admin' } },
    { name: 'rest', destination: { service: 'rest' } }
  ], escapedSlashes !== undefined ? { gateway: { escapedSlashes } } : {}))
  return { g, admin, rest }
}

// ---------------------------------------------------------------- node entries

describe('node entries: every way in is authorized on the normalised path', () => {
  let dir: string
  let ca: CaPem
  let web: LeafPem

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fastmesh-paths-'))
    ca = await createLocalCa(dir)
    for (const s of ['node-a', 'node-b', 'web', 'orders']) await issueLeaf(dir, s)
    web = await issueLeafInMemory(ca, 'web')
  })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('no entry lets a spelling of /admin, or a DELETE, past the deny rules of the inbound side', async (t) => {
    // node-b fronts `orders` (an echo recording the path it got) and denies /admin and DELETE
    // to every caller; node-a is the caller's node: shared outbound port (a config route and
    // the by-host route) and a per-upstream listener for its local app `web`.
    const orders = await startEcho(t, 'orders')
    const nodeB = await startGateway(t, {
      gateway: { name: 'node-b', mode: 'node' },
      mesh: {
        mtls: 'strict',
        identity: { provider: 'files', dir },
        authorization: {
          provider: 'rules',
          defaultAction: 'allow',
          rules: [
            { source: '*', destination: 'orders', action: 'deny', pathPrefixes: ['/admin'] },
            { source: '*', destination: 'orders', action: 'deny', methods: ['DELETE'] }
          ]
        }
      },
      localServices: [{ name: 'orders', port: orders.port }]
    })
    const inboundPort = nodeB.gateway.listenerAddress('inbound')!.port
    const [upstreamPort, webPort] = await freePorts(2)
    const nodeA = await startGateway(t, {
      gateway: { name: 'node-a', mode: 'node' },
      discovery: { embedded: { services: { orders: { endpoints: [{ id: 'node-b', address: '127.0.0.1', port: inboundPort }] } } } },
      mesh: { mtls: 'strict', identity: { provider: 'files', dir }, authorization: { provider: 'rules', defaultAction: 'deny' } },
      routes: [{ name: 'orders-by-route', match: { hosts: ['orders-route.test'] }, destination: { service: 'orders' } }],
      localServices: [{ name: 'web', port: webPort, upstreams: [{ service: 'orders', port: upstreamPort }] }]
    })
    const outbound = (): string => `http://127.0.0.1:${nodeA.gateway.listenerAddress('outbound')!.port}`
    const entries: Record<string, Send> = {
      'node outbound config route': plainSender(outbound, 'orders-route.test'),
      'node outbound by-host route': plainSender(outbound, 'orders'),
      'per-upstream listener': plainSender(() => `http://127.0.0.1:${upstreamPort}`, 'localhost'),
      'inbound mTLS listener': mtlsSender(inboundPort, web, ca)
    }

    for (const [entry, send] of Object.entries(entries)) {
      await t.test(`${entry}: an allowed path reaches the app, normalised`, async () => {
        const before = orders.seen.length
        const res = await send('/x/../orders/./1?q=%2F#frag')
        assert.equal(res.status, 200, res.text)
        assert.equal(orders.seen.length, before + 1)
        assert.equal(orders.seen.at(-1)!.url, '/orders/1?q=%2F')
      })

      await t.test(`${entry}: no spelling of /admin can bypass a pathPrefixes deny rule`, async () => {
        const before = orders.seen.length
        for (const target of ADMIN_SPELLINGS) {
          const res = await send(target)
          assertErrorResponse(res, 403, 'FASTMESH_ERR_FORBIDDEN')
        }
        assert.equal(orders.seen.length, before, 'nothing reached the app')
      })

      await t.test(`${entry}: escaped slashes, overlong dots, ..; segments and bad escapes get 400 and reach no app`, async () => {
        const before = orders.seen.length
        for (const target of REFUSED) assertErrorResponse(await send(target), 400, 'FASTMESH_ERR_BAD_REQUEST')
        assert.equal(orders.seen.length, before)
      })

      await t.test(`${entry}: a methods deny rule holds for every spelling of the path`, async () => {
        const before = orders.seen.length
        for (const target of ['/orders/1', '/x/../orders/1', '//orders/1', '/%6Frders/1']) {
          assertErrorResponse(await send(target, 'DELETE'), 403, 'FASTMESH_ERR_FORBIDDEN')
        }
        assert.equal(orders.seen.length, before)
        assert.equal((await send('/orders/1', 'PUT')).status, 200, 'other methods pass')
      })
    }
  })
})

/** Calls the inbound listener as `client` (mTLS, SNI `orders`), sending the target as given. */
function mtlsSender (port: number, client: LeafPem, ca: CaPem): Send {
  return async (target, method = 'GET') => await new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1',
      port,
      path: target,
      method,
      servername: 'orders',
      cert: client.certPem,
      key: client.keyPem,
      ca: ca.certPem,
      checkServerIdentity: () => undefined,
      agent: false
    }, (res) => { readResponse(res).then(resolve, reject) })
    req.on('error', reject)
    req.end()
  })
}
