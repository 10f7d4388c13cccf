// Upstreams for exchange fuzzing: real node:http servers on loopback whose behaviour for each
// request is chosen by the client, through the gateway, in the header `x-fuzz-plan`, and which
// record every request that reached them (which try it was, the body bytes, whether the body
// was intact) so a test can check what the gateway sent and how often.
//
// A plan is `;`-separated entries `key=behaviour`: `tN` is the N-th request of this exchange to
// reach any of the recorder's upstreams (1-based), `eK` the upstream with index K, `*` every
// other; without an entry the behaviour is `ok`. `tN` wins over `eK`, which wins over `*`.
// Request bodies and response bodies are deterministic byte patterns of the exchange id (header
// `x-fuzz-id`), so every byte can be checked on both sides.
import type { TestContext } from 'node:test'
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import { startUpstream } from './upstreams.js'
import { seededRandom } from '../../src/balancer/random.js'

export const BEHAVIOURS = [
  'ok', 'ok-chunked', '500', '502', '503', 'slow', 'hang', 'reset-early', 'reset-before-headers',
  'close-before-headers', 'reset-during-body', '200-then-hang', '503-then-hang', 'early-503', 'hints-then-ok', 'garbage'
] as const
export type Behaviour = typeof BEHAVIOURS[number]

/** How long `slow` waits before answering 200. */
export const SLOW_MS = 400

/** mulberry32: the project's seeded source (src/balancer/random.ts), for reproducible fuzz runs. */
export const mulberry32 = seededRandom

/** Random bytes that bodies are cut from: each exchange's body starts at its own offset. */
const PATTERN = ((): Buffer => {
  const rnd = mulberry32(0x5eed)
  const b = Buffer.allocUnsafe(512 * 1024)
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256)
  return b
})()
const OFFSETS = 64 * 1024
const MAX_BODY = PATTERN.length - 2 * OFFSETS

function patternFrom (offset: number, len: number): Buffer {
  if (len > MAX_BODY) throw new Error(`bodies of the fuzz test are at most ${MAX_BODY} bytes`)
  return PATTERN.subarray(offset, offset + len)
}

/** The request body of exchange `id`, `len` bytes (bytes `from` to `from + len` of it). */
export function requestBody (id: number, len: number, from = 0): Buffer {
  return patternFrom(((id * 7919) % OFFSETS) + from, len)
}

/** Size of the response body the upstreams send for exchange `id`: mostly small, some around 64 KiB and above. */
export function responseSize (id: number): number {
  return id % 11 === 0 ? [65_535, 65_536, 65_537, 200_000][id % 4]! : 64 + (id % 97)
}

/** The response body of exchange `id` (the same from every upstream and try). */
export function responseBody (id: number): Buffer {
  return patternFrom(OFFSETS + ((id * 104_729) % OFFSETS), responseSize(id))
}

/** The status a behaviour answers with, when it answers in full. */
export function behaviourStatus (b: Behaviour): number | undefined {
  switch (b) {
    case 'ok': case 'ok-chunked': case 'slow': case 'hints-then-ok': return 200
    case '500': return 500
    case '502': return 502
    case '503': case 'early-503': return 503
    default: return undefined
  }
}

/** The status of the response head a behaviour sends, also when it breaks the body off. */
export function headStatus (b: Behaviour): number | undefined {
  if (b === 'reset-during-body' || b === '200-then-hang') return 200
  if (b === '503-then-hang') return 503
  return behaviourStatus(b)
}

/** Behaviours that send a response head and then break the body off. */
export const CUTS_MID_BODY: ReadonlySet<Behaviour> = new Set<Behaviour>(['reset-during-body', '200-then-hang', '503-then-hang'])

export function resolveBehaviour (plan: string, arrival: number, endpoint: number): Behaviour {
  let byEndpoint: string | undefined
  let any: string | undefined
  for (const entry of plan.split(';')) {
    const [k, v] = entry.split('=')
    if (k === undefined || v === undefined) continue
    if (k === `t${arrival}`) return v as Behaviour
    if (k === `e${endpoint}`) byEndpoint = v
    if (k === '*') any = v
  }
  return (byEndpoint ?? any ?? 'ok') as Behaviour
}

/** One request of an exchange that reached an upstream. */
export interface Arrival {
  readonly id: number
  /** 1-based: the n-th request of this exchange to reach any upstream (0: a mirrored copy). */
  readonly n: number
  readonly endpoint: number
  readonly behaviour: Behaviour
  readonly method: string
  readonly headers: IncomingHttpHeaders
  /** performance.now() when the request's headers arrived. */
  readonly at: number
  /** Body bytes received. */
  bytes: number
  /** The body ended normally (all of it was received). */
  complete: boolean
  /** Offset of the first body byte that is not the exchange's pattern. */
  corruptAt: number | undefined
  /** The upstream cut the request itself before reading its body (`reset-early`). */
  cutByUpstream: boolean
  /** The whole response was written (status answers only). */
  answered: boolean
  /** ms from arrival until the response was written (status answers only). */
  answeredAfterMs: number | undefined
}

/** Every arrival of every exchange, shared by the upstreams of one test. */
export class FuzzRecorder {
  readonly arrivals = new Map<number, Arrival[]>()
  /** Mirrored copies (`x-fastmesh-mirror`), kept apart: they are not tries. Their `n` is 0. */
  readonly mirrors = new Map<number, Arrival[]>()
  /** Requests without `x-fuzz-id` (plain checks). */
  plain = 0

  of (id: number): Arrival[] {
    return this.arrivals.get(id) ?? []
  }

  mirrorsOf (id: number): Arrival[] {
    return this.mirrors.get(id) ?? []
  }
}

export interface FuzzUpstream {
  readonly index: number
  readonly port: number
}

/** A fuzz upstream with index `index` (`eK` in plans), recording into `recorder`. */
export async function startFuzzUpstream (t: TestContext, index: number, recorder: FuzzRecorder): Promise<FuzzUpstream> {
  const timers = new Set<NodeJS.Timeout>()
  const later = (ms: number, fn: () => void): void => {
    const timer = setTimeout(() => { timers.delete(timer); fn() }, ms)
    timers.add(timer)
  }
  const up = await startUpstream(t, (req, res) => {
    req.on('error', () => {})
    res.on('error', () => {})
    const id = Number(req.headers['x-fuzz-id'])
    if (!Number.isSafeInteger(id)) {
      recorder.plain++
      req.resume()
      req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 }).end('ok') })
      return
    }
    // A mirrored copy behaves as its upstream's `eK` or `*` entry says (no `tN`: it is not a try).
    const mirrored = req.headers['x-fastmesh-mirror'] !== undefined
    const lists = mirrored ? recorder.mirrors : recorder.arrivals
    let list = lists.get(id)
    if (list === undefined) { list = []; lists.set(id, list) }
    const plan = String(req.headers['x-fuzz-plan'] ?? '')
    const n = mirrored ? 0 : list.length + 1
    const behaviour = resolveBehaviour(plan, n, index)
    const a: Arrival = {
      id, n, endpoint: index, behaviour, method: req.method ?? '', headers: req.headers, at: performance.now(),
      bytes: 0, complete: false, corruptAt: undefined, cutByUpstream: false, answered: false, answeredAfterMs: undefined
    }
    list.push(a)
    const socket = req.socket
    if (behaviour === 'reset-early') {
      a.cutByUpstream = true
      socket.resetAndDestroy()
      return
    }
    // Answers before reading the body (an upload refused at once), then reads it.
    if (behaviour === 'early-503') answer(a, res, 503)
    req.on('data', (chunk: Buffer) => {
      if (a.corruptAt === undefined && a.bytes + chunk.length <= MAX_BODY && !chunk.equals(requestBody(id, chunk.length, a.bytes))) {
        const expected = requestBody(id, chunk.length, a.bytes)
        let i = 0
        while (chunk[i] === expected[i]) i++
        a.corruptAt = a.bytes + i
      }
      a.bytes += chunk.length
    })
    req.on('end', () => {
      a.complete = true
      if (behaviour !== 'early-503') act(a, res, socket)
    })
  })

  const headersOf = (a: Arrival, extra: Record<string, string | number> = {}): Record<string, string | number> => ({
    'content-type': 'application/octet-stream',
    'x-fuzz-id': a.id,
    'x-fuzz-by': `e${index}`,
    'x-fuzz-arrival': a.n,
    'x-fuzz-behaviour': a.behaviour,
    ...extra
  })
  const answer = (a: Arrival, res: ServerResponse, status: number): void => {
    if (res.destroyed) return
    const body = responseBody(a.id)
    a.answeredAfterMs = performance.now() - a.at
    res.writeHead(status, headersOf(a, { 'content-length': body.length }))
    res.end(body, () => { a.answered = true })
  }
  function act (a: Arrival, res: ServerResponse, socket: import('node:net').Socket): void {
    const body = responseBody(a.id)
    switch (a.behaviour) {
      case 'ok': answer(a, res, 200); return
      case '500': answer(a, res, 500); return
      case '502': answer(a, res, 502); return
      case '503': answer(a, res, 503); return
      case 'slow': later(SLOW_MS, () => { answer(a, res, 200) }); return
      case 'ok-chunked': {
        a.answeredAfterMs = performance.now() - a.at
        res.writeHead(200, headersOf(a))
        const third = Math.ceil(body.length / 3)
        res.write(body.subarray(0, third))
        setImmediate(() => {
          if (res.destroyed) return
          res.write(body.subarray(third, 2 * third))
          res.end(body.subarray(2 * third), () => { a.answered = true })
        })
        return
      }
      case 'hang': return // the gateway's timeout (or the test's end) closes it
      case 'reset-before-headers': socket.resetAndDestroy(); return
      case 'close-before-headers': socket.destroy(); return
      case 'reset-during-body':
        res.writeHead(200, headersOf(a, { 'content-length': body.length }))
        res.write(body.subarray(0, body.length >> 1))
        later(5, () => { if (!socket.destroyed) socket.resetAndDestroy() })
        return
      case '200-then-hang':
        res.writeHead(200, headersOf(a, { 'content-length': body.length }))
        res.write(body.subarray(0, body.length >> 1))
        return
      case '503-then-hang':
        res.writeHead(503, headersOf(a, { 'content-length': body.length }))
        res.write(body.subarray(0, body.length >> 1))
        return
      case 'hints-then-ok':
        res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
        answer(a, res, 200)
        return
      case 'early-503': return
      case 'garbage':
        socket.end('HTTP/1.1 2OO NOT HTTP\r\nno colon here\r\n\r\n')
        return
    }
  }

  t.after(() => { for (const timer of timers) clearTimeout(timer); timers.clear() })
  return { index, port: up.port }
}
