// Bodies stream through the gateway, never buffered: a 200 MB upload and download pass
// while the process's memory stays far below 200 MB, and a client that stops reading
// makes the gateway stop reading from the upstream (backpressure).
//
// The gateway, the upstream and the client all run in this process, so the memory measured
// is an upper bound of what the gateway holds.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, type Hash } from 'node:crypto'
import { Readable } from 'node:stream'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { startGateway, eventually, defer } from '../helpers/gateway.js'
import { startUpstream, meshConfig } from '../helpers/upstreams.js'

const MB = 1024 * 1024
const SIZE = 200 * MB
const CHUNK = 64 * 1024
/** Growth allowed while 200 MB pass: a third of the payload, far above what streaming needs. */
const MAX_GROWTH = 64 * MB
/**
 * A 200 MB upload's route. Its upstream answers once the whole body is in, so the route's
 * per-try timeout (15 s by default) would also bound how fast 200 MB pass, and on a loaded
 * machine they take longer: these tests check memory, not speed.
 */
const UPLOAD_ROUTE = { name: 'upload', destination: { service: 'sink' }, timeout: '120s' }

// A full collection before each baseline makes the baseline honest (no garbage in it).
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** Chunk `i` of the test payload: deterministic content, a new buffer each time (never held). */
function chunk (i: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size)
  b.fill(i & 0xff)
  b.writeUInt32BE(i, 0)
  return b
}

/** A stream of `size` bytes generated on demand, hashed as it is produced. */
function payload (size: number, hash: Hash): Readable {
  let produced = 0
  let i = 0
  return new Readable({
    read () {
      if (produced >= size) { this.push(null); return }
      const b = chunk(i++, Math.min(CHUNK, size - produced))
      produced += b.length
      hash.update(b)
      this.push(b)
    }
  })
}

/**
 * Samples rss and arrayBuffers until stopped; reports the peak growth over the baseline.
 * Each sample follows a full collection: what it sees is memory something still holds, not
 * garbage the collector had not got to yet (which would make the check depend on GC timing).
 * A full collection costs some 20 ms here: four a second (not ten) halve this file's CPU time,
 * and a gateway holding a 200 MB body holds it for seconds, many samples still.
 */
class MemoryWatch {
  private readonly base: NodeJS.MemoryUsage
  private peakRss = 0
  private peakArrayBuffers = 0
  private readonly timer: NodeJS.Timeout

  constructor () {
    gc()
    this.base = process.memoryUsage()
    this.timer = setInterval(() => { this.sample() }, 250)
  }

  sample (): void {
    gc()
    const m = process.memoryUsage()
    this.peakRss = Math.max(this.peakRss, m.rss - this.base.rss)
    this.peakArrayBuffers = Math.max(this.peakArrayBuffers, m.arrayBuffers - this.base.arrayBuffers)
  }

  stop (): { rss: number, arrayBuffers: number } {
    clearInterval(this.timer)
    this.sample()
    return { rss: this.peakRss, arrayBuffers: this.peakArrayBuffers }
  }
}

function assertSmallGrowth (t: TestContext, growth: { rss: number, arrayBuffers: number }): void {
  const mb = (n: number): string => `${(n / MB).toFixed(1)} MB`
  t.diagnostic(`peak growth: rss ${mb(growth.rss)}, arrayBuffers ${mb(growth.arrayBuffers)}`)
  assert.ok(growth.rss < MAX_GROWTH, `rss grew by ${mb(growth.rss)} (limit ${mb(MAX_GROWTH)})`)
  assert.ok(growth.arrayBuffers < MAX_GROWTH, `arrayBuffers grew by ${mb(growth.arrayBuffers)} (limit ${mb(MAX_GROWTH)})`)
}

test('a 200 MB upload streams through the gateway without the gateway holding it', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length; hash.update(c) })
    req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ bytes, sha256: hash.digest('hex') })) })
  })
  const g = await startGateway(t, meshConfig({ sink: [up] }, [UPLOAD_ROUTE]))
  const sent = createHash('sha256')
  const watch = new MemoryWatch()
  const res = await g.agent.request({
    origin: g.url,
    path: '/upload',
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) },
    body: payload(SIZE, sent)
  })
  const received = await res.body.json() as { bytes: number, sha256: string }
  const growth = watch.stop()
  assert.equal(res.statusCode, 200)
  assert.equal(received.bytes, SIZE)
  assert.equal(received.sha256, sent.digest('hex'))
  assertSmallGrowth(t, growth)
})

test('a 200 MB chunked upload (no content-length) streams through the gateway', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length; hash.update(c) })
    req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ bytes, sha256: hash.digest('hex'), te: req.headers['transfer-encoding'] })) })
  })
  const g = await startGateway(t, meshConfig({ sink: [up] }, [UPLOAD_ROUTE]))
  const sent = createHash('sha256')
  const watch = new MemoryWatch()
  const res = await g.agent.request({ origin: g.url, path: '/upload', method: 'POST', body: payload(SIZE, sent) })
  const received = await res.body.json() as { bytes: number, sha256: string, te: string }
  const growth = watch.stop()
  assert.equal(res.statusCode, 200)
  assert.equal(received.te, 'chunked')
  assert.equal(received.bytes, SIZE)
  assert.equal(received.sha256, sent.digest('hex'))
  assertSmallGrowth(t, growth)
})

test('a 200 MB download streams through the gateway without the gateway holding it', async (t) => {
  let served = ''
  const up = await startUpstream(t, (_req, res) => {
    const hash = createHash('sha256')
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) })
    payload(SIZE, hash).on('end', () => { served = hash.digest('hex') }).pipe(res)
  })
  const g = await startGateway(t, meshConfig({ source: [up] }, [{ name: 'download', destination: { service: 'source' } }]))
  const watch = new MemoryWatch()
  const res = await g.agent.request({ origin: g.url, path: '/big.bin', method: 'GET' })
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['content-length'], String(SIZE))
  const hash = createHash('sha256')
  let bytes = 0
  for await (const c of res.body) { bytes += (c as Buffer).length; hash.update(c as Buffer) }
  const growth = watch.stop()
  assert.equal(bytes, SIZE)
  assert.equal(hash.digest('hex'), served)
  assertSmallGrowth(t, growth)
})

test('a client that stops reading a large download makes the gateway stop pulling from the upstream', async (t) => {
  // The upstream writes with backpressure and counts what its socket accepted.
  let written = 0
  let waitingForDrain = false
  let served = ''
  const up = await startUpstream(t, (_req, res) => {
    const hash = createHash('sha256')
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) })
    let i = 0
    const pump = (): void => {
      waitingForDrain = false
      while (written < SIZE) {
        const b = chunk(i++, Math.min(CHUNK, SIZE - written))
        written += b.length
        hash.update(b)
        if (!res.write(b)) { waitingForDrain = true; res.once('drain', pump); return }
      }
      served = hash.digest('hex')
      res.end()
    }
    pump()
  })
  const g = await startGateway(t, meshConfig({ source: [up] }, [{ name: 'download', destination: { service: 'source' } }]))
  const watch = new MemoryWatch()
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest(`${g.url}/big.bin`, { agent: false }, resolve)
    req.on('error', reject)
    req.end()
  })
  defer(t, () => { res.destroy() })
  res.pause()
  const received = createHash('sha256')
  let bytes = 0
  // Not reading: the client's socket buffers fill, then the gateway's, then the upstream
  // must be left waiting for 'drain'. Stalled = blocked and no progress over 10 polls.
  let last = -1
  let still = 0
  await eventually(() => {
    still = written === last && waitingForDrain ? still + 1 : 0
    last = written
    return still >= 10
  }, 'the upstream to be held back by backpressure', 20_000, 50)
  const growth = watch.stop()
  t.diagnostic(`the upstream got ${(written / MB).toFixed(1)} MB out before it was held back`)
  assert.ok(written < SIZE / 3, `the gateway pulled ${(written / MB).toFixed(1)} MB of ${SIZE / MB} MB from the upstream for a client that read nothing`)
  assertSmallGrowth(t, growth)
  // The client reads again and gets every byte.
  res.on('data', (c: Buffer) => { bytes += c.length; received.update(c) })
  res.resume()
  await new Promise<void>((resolve, reject) => { res.on('end', resolve).on('error', reject) })
  assert.equal(bytes, SIZE)
  assert.equal(received.digest('hex'), served)
})

test('a client that disconnects mid-download makes the gateway abort the upstream response', async (t) => {
  let upstreamClosed: (() => void) | undefined
  const closed = new Promise<void>((resolve) => { upstreamClosed = resolve })
  let finished = false
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) })
    const source = payload(SIZE, createHash('sha256'))
    source.pipe(res)
    res.on('finish', () => { finished = true })
    res.on('close', () => { source.destroy(); upstreamClosed?.() })
  })
  const g = await startGateway(t, meshConfig({ source: [up] }, [{ name: 'download', destination: { service: 'source' } }]))
  await new Promise<void>((resolve, reject) => {
    const req = httpRequest(`${g.url}/big.bin`, { agent: false }, (res) => {
      let got = 0
      res.on('data', (c: Buffer) => {
        got += c.length
        if (got >= 4 * MB) { req.destroy(); resolve() }
      })
    })
    req.on('error', () => {})
    req.on('close', () => { resolve() })
    req.end()
    setTimeout(() => { reject(new Error('no data within 10 s')) }, 10_000).unref()
  })
  await Promise.race([closed, new Promise((_resolve, reject) => { setTimeout(() => { reject(new Error('the upstream response was not aborted within 10 s')) }, 10_000).unref() })])
  assert.equal(finished, false, 'the upstream did not get to send everything')
  const line = await eventually(() => g.logs.entries().find((e) => e.log === 'access' && e.path === '/big.bin'), 'the access log line')
  assert.equal(line.status, 499)
})

test('a client that disconnects mid-upload makes the gateway abort the upstream request', async (t) => {
  let outcome: ((v: { bytes: number, complete: boolean }) => void) | undefined
  const upstreamDone = new Promise<{ bytes: number, complete: boolean }>((resolve) => { outcome = resolve })
  const up = await startUpstream(t, (req, res) => {
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length })
    req.on('close', () => { outcome?.({ bytes, complete: req.complete }) })
    req.on('end', () => { res.end('done') })
  })
  const g = await startGateway(t, meshConfig({ sink: [up] }, [{ name: 'upload', destination: { service: 'sink' } }]))
  const req = httpRequest(`${g.url}/upload`, { method: 'PUT', agent: false, headers: { 'content-length': String(SIZE) } })
  req.on('error', () => {})
  req.write(chunk(0, CHUNK))
  req.write(chunk(1, CHUNK), () => { setImmediate(() => { req.destroy() }) })
  const result = await Promise.race([upstreamDone, new Promise<never>((_resolve, reject) => { setTimeout(() => { reject(new Error('the upstream request was not aborted within 10 s')) }, 10_000).unref() })])
  assert.equal(result.complete, false)
  assert.ok(result.bytes < SIZE)
})
