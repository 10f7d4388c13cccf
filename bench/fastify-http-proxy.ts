// The off-the-shelf alternative to the gateway's forwarding: a plain Fastify app with
// @fastify/http-proxy (reply-from over undici) sending every path to the upstream, set up as
// the Node ceiling is (same connection count, pipelining 1, keep-alive, no logger), so the
// bench shows what forwarding through reply-from costs against the ceiling and the edge.
//   node dist/bench/fastify-http-proxy.js --port N --upstream http://127.0.0.1:M [--connections 128]
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import fastifyHttpProxy from '@fastify/http-proxy'

const { values } = parseArgs({ options: { port: { type: 'string' }, upstream: { type: 'string' }, connections: { type: 'string', default: '128' } } })
const app = Fastify({ logger: false, keepAliveTimeout: 72_000 })
await app.register(fastifyHttpProxy, {
  upstream: values.upstream!,
  // reply-from's documented way to size its undici pool (an Agent holding one Pool per origin).
  undici: { connections: Number(values.connections), pipelining: 1, keepAliveTimeout: 30_000 },
  disableRequestLogging: true,
  destroyAgent: true
})
await app.listen({ port: Number(values.port ?? '0'), host: '127.0.0.1' })
process.once('SIGTERM', () => { void app.close().then(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref() })
