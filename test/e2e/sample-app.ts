// A sample app for the multi-host e2e test, run as its own process inside a host's network
// namespace:
//
//   node sample-app.js --name web --instance web-a --port 8081 [--outbound http://127.0.0.1:15001]
//
// Without --outbound it is the demo sample service (src/demo/sample-service.ts): every
// request answers {service, instance, method, path, ...}. With --outbound it is a caller:
// `GET /call/<service>/<rest>` calls `<outbound>/<rest>` with `Host: <service>` (its node
// gateway on localhost) and answers {service, instance, upstream} with the upstream's status
// code, `upstream` being the upstream's JSON body or {status, error}; other requests answer
// {service, instance, path}. Prints "sample app <instance> listening on <port>" when ready.
//
// The test runner also loads this file as a test file (every .js under dist/test/): with no
// arguments it does nothing.
import http from 'node:http'
import { parseArgs } from 'node:util'
import type { AddressInfo } from 'node:net'
import { startSampleService } from '../../src/demo/sample-service.js'

interface Answer { status: number, body: unknown }

/** One call through the node gateway; any failure becomes {status, error}. */
async function callUpstream (outbound: URL, agent: http.Agent, service: string, path: string): Promise<Answer> {
  return await new Promise<Answer>((resolve) => {
    const req = http.request({
      host: outbound.hostname,
      port: outbound.port,
      path,
      method: 'GET',
      agent,
      headers: { host: service },
      timeout: 10_000
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => { chunks.push(c) })
      res.on('error', (err) => { resolve({ status: 502, body: { status: 502, error: err.message } }) })
      res.on('end', () => {
        const status = res.statusCode ?? 502
        const text = Buffer.concat(chunks).toString('utf8')
        try {
          resolve({ status, body: JSON.parse(text) as unknown })
        } catch {
          resolve({ status, body: { status, error: text.slice(0, 500) } })
        }
      })
    })
    req.on('timeout', () => { req.destroy(new Error('upstream call timed out')) })
    req.on('error', (err) => { resolve({ status: 502, body: { status: 502, error: err.message } }) })
    req.end()
  })
}

async function startCaller (name: string, instance: string, port: number, address: string, outbound: URL): Promise<number> {
  const agent = new http.Agent({ keepAlive: true })
  const send = (res: http.ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body)
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'x-served-by': instance })
    res.end(text)
  }
  const server = http.createServer((req, res) => {
    req.resume()
    const url = req.url ?? '/'
    const call = /^\/call\/([a-zA-Z0-9][a-zA-Z0-9_.-]*)(\/.*)?$/.exec(url)
    if (call === null) {
      send(res, 200, { service: name, instance, path: url })
      return
    }
    const [, service, rest] = call as unknown as [string, string, string | undefined]
    callUpstream(outbound, agent, service, rest ?? '/').then(
      (a) => { send(res, a.status, { service: name, instance, upstream: a.body }) },
      (err: unknown) => { send(res, 500, { service: name, instance, upstream: { status: 500, error: (err as Error).message } }) }
    )
  })
  server.listen(port, address)
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  process.once('SIGTERM', () => { server.closeAllConnections(); server.close(() => { process.exit(0) }) })
  return (server.address() as AddressInfo).port
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      name: { type: 'string' },
      instance: { type: 'string' },
      port: { type: 'string', default: '0' },
      address: { type: 'string', default: '127.0.0.1' },
      outbound: { type: 'string' }
    }
  })
  if (values.name === undefined || values.instance === undefined) throw new Error('--name and --instance are required')
  const port = Number(values.port)
  let bound: number
  if (values.outbound !== undefined) {
    bound = await startCaller(values.name, values.instance, port, values.address, new URL(values.outbound))
  } else {
    const sample = await startSampleService(values.name, values.instance, port, values.address)
    process.once('SIGTERM', () => { void sample.close().then(() => { process.exit(0) }) })
    bound = sample.port
  }
  process.stdout.write(`sample app ${values.instance} listening on ${bound}\n`)
}

if (process.argv.length > 2 || process.env.NODE_TEST_CONTEXT === undefined) {
  main().catch((err: unknown) => {
    process.stderr.write(`sample app: ${(err as Error).message}\n`)
    process.exit(2)
  })
}
