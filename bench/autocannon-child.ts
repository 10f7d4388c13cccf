// Closed-loop load with autocannon, in its own process so it never shares an event loop
// with the harness. Prints one JSON line: { requests, durationS, errors, non2xx, latencyMs }.
//   node dist/bench/autocannon-child.js --url URL --connections 50 --duration 8 [--header 'name: value' ...]
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'

const { values } = parseArgs({ options: { url: { type: 'string' }, connections: { type: 'string' }, duration: { type: 'string' }, header: { type: 'string', multiple: true } } })
const headers = Object.fromEntries((values.header ?? []).map((h) => [h.slice(0, h.indexOf(':')).trim(), h.slice(h.indexOf(':') + 1).trim()]))

const result = await autocannon({
  url: values.url!,
  connections: Number(values.connections),
  duration: Number(values.duration),
  pipelining: 1,
  headers,
  timeout: 10
})
process.stdout.write(JSON.stringify({
  // Completed requests (2xx and others); errors are counted apart.
  requests: result.requests.total,
  durationS: result.duration,
  errors: result.errors + result.timeouts,
  non2xx: result.non2xx,
  latencyMs: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99 }
}) + '\n')
