// The Node ceiling: the smallest sensible proxy on the same stack as fastmesh (node:http
// server + one undici Pool), streaming each response back. What fastmesh is measured against.
//   node dist/bench/node-ceiling.js --port N --upstream http://127.0.0.1:M [--connections 128]
import { createServer } from 'node:http'
import { parseArgs } from 'node:util'
import { Pool, type Dispatcher } from 'undici'

const { values } = parseArgs({ options: { port: { type: 'string' }, upstream: { type: 'string' }, connections: { type: 'string', default: '128' } } })
const pool = new Pool(values.upstream!, { connections: Number(values.connections), pipelining: 1, keepAliveTimeout: 30_000 })
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade'])

const server = createServer((req, res) => {
  const headers: string[] = []
  const raw = req.rawHeaders
  for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i]!.toLowerCase())) headers.push(raw[i]!, raw[i + 1]!)
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
  const handler: Dispatcher.DispatchHandler = {
    onConnect () {},
    onHeaders (status, rawHeaders, resume, statusText) {
      const out: string[] = []
      for (let i = 0; i < rawHeaders.length; i += 2) {
        const name = rawHeaders[i]!.toString('latin1')
        if (!HOP.has(name.toLowerCase())) out.push(name, rawHeaders[i + 1]!.toString('latin1'))
      }
      res.writeHead(status, statusText, out)
      res.on('drain', resume)
      return true
    },
    onData (chunk) { return res.write(chunk) },
    onComplete () { res.end() },
    onError () {
      if (res.headersSent) res.destroy()
      else res.writeHead(502, { 'content-length': '0' }).end()
    }
  }
  pool.dispatch({ method: req.method as Dispatcher.HttpMethod, path: req.url!, headers, body: hasBody ? req : null }, handler)
})
server.keepAliveTimeout = 72_000
server.listen(Number(values.port ?? '0'), '127.0.0.1')
process.once('SIGTERM', () => { server.close(); server.closeAllConnections(); void pool.close().then(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref() })
