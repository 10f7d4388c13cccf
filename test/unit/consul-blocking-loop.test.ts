// Blocking-query hygiene, with a scripted Consul and a fake clock and random source.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { BlockingLoop, backoffDelay } from '../../src/discovery/consul/blocking-loop.js'
import { Cancellable, resolveConsul } from '../../src/discovery/consul/client.js'
import { endpointsFromHealth } from '../../src/discovery/consul/discovery.js'
import { jitteredWait } from '../../src/discovery/consul/catalog-feed.js'
import type { ConsulHealthEntry } from '../../src/discovery/consul/client.js'
import { mergeLayers } from '../../src/discovery/consul/kv-source.js'

type Step = { index: bigint, data: string } | { error: string }

/** Runs a loop against scripted answers; returns what it asked and what it reported. */
async function runScript (steps: Step[], opts: { minIntervalMs?: number, random?: () => number } = {}) {
  let clock = 0
  const asked: bigint[] = []
  const askedAt: number[] = []
  const changes: Array<[string, bigint]> = []
  const errors: Array<[number, number]> = []
  const sleeps: number[] = []
  let recovered = 0
  let i = 0
  let finish: () => void = () => {}
  const done = new Promise<void>((resolve) => { finish = resolve })
  const loop: BlockingLoop<string> = new BlockingLoop<string>({
    makeContext: () => new Cancellable(),
    fetch: async (index) => {
      asked.push(index)
      askedAt.push(clock)
      const step = steps[i++]
      if (step === undefined) {
        finish()
        // Stay blocked until stop() cancels the loop.
        return await new Promise<never>(() => {})
      }
      clock += 1
      if ('error' in step) throw new Error(step.error)
      return { index: step.index, data: step.data }
    },
    onChange: (data, index) => { changes.push([data, index]) },
    onError: (_err, attempt, retry) => { errors.push([attempt, retry]) },
    onRecover: () => { recovered++ },
    minIntervalMs: opts.minIntervalMs ?? 0,
    backoffBaseMs: 100,
    backoffMaxMs: 1000,
    random: opts.random ?? (() => 0.5),
    now: () => clock,
    sleep: async (ms) => { sleeps.push(ms); clock += ms }
  })
  loop.start()
  await done
  void loop.stop()
  return { asked, askedAt, changes, errors, sleeps, recovered }
}

test('blocks on the index Consul returned and reports only changes', async () => {
  const r = await runScript([{ index: 5n, data: 'a' }, { index: 5n, data: 'a' }, { index: 9n, data: 'b' }])
  assert.deepEqual(r.asked, [0n, 5n, 5n, 9n])
  assert.deepEqual(r.changes, [['a', 5n], ['b', 9n]])
})

test('resets to index 0 when X-Consul-Index goes backwards', async () => {
  const r = await runScript([{ index: 50n, data: 'a' }, { index: 7n, data: 'b' }, { index: 8n, data: 'b' }])
  assert.deepEqual(r.asked, [0n, 50n, 0n, 8n])
  assert.deepEqual(r.changes.map((c) => c[0]), ['a', 'b', 'b'])
})

test('never blocks on an index below 1', async () => {
  const r = await runScript([{ index: 0n, data: 'a' }, { index: 0n, data: 'a' }])
  assert.deepEqual(r.asked, [0n, 1n, 1n])
})

test('backs off exponentially with jitter on errors, and recovers', async () => {
  const r = await runScript([{ error: 'down' }, { error: 'down' }, { error: 'down' }, { index: 3n, data: 'a' }], { random: () => 1 })
  assert.deepEqual(r.errors, [[1, 100], [2, 200], [3, 400]])
  assert.equal(r.recovered, 1)
  assert.deepEqual(r.changes, [['a', 3n]])
})

test('backoff jitter stays within half to all of the capped exponential', () => {
  for (let attempt = 1; attempt <= 30; attempt++) {
    const ceiling = Math.min(30_000, 250 * 2 ** (attempt - 1))
    assert.equal(backoffDelay(attempt, 250, 30_000, () => 0), Math.round(ceiling / 2))
    assert.equal(backoffDelay(attempt, 250, 30_000, () => 1), ceiling)
  }
})

test('never starts requests closer together than the floor interval', async () => {
  const steps: Step[] = Array.from({ length: 6 }, (_, k) => ({ index: BigInt(k + 1), data: String(k) }))
  const r = await runScript(steps, { minIntervalMs: 100 })
  for (let k = 1; k < r.askedAt.length; k++) assert.ok(r.askedAt[k]! - r.askedAt[k - 1]! >= 100, `request ${k} came ${r.askedAt[k]! - r.askedAt[k - 1]!} ms after the previous`)
})

test('Consul settings come from CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN unless given', () => {
  const env = { CONSUL_HTTP_ADDR: 'https://consul.internal:8501', CONSUL_HTTP_TOKEN: 'secret' }
  assert.deepEqual(resolveConsul({}, env), { host: 'consul.internal', port: 8501, secure: true, token: 'secret', datacenter: undefined, url: 'https://consul.internal:8501', maxConnections: 128 })
  assert.equal(resolveConsul({ address: '127.0.0.1:9500' }, env).port, 9500)
  assert.equal(resolveConsul({}, {}).port, 8500)
  assert.throws(() => resolveConsul({ address: 'a:b:c' }, {}), /invalid Consul address/)
})

test('regression: a Consul address with credentials is refused at start without printing the password', () => {
  for (const [settings, env] of [[{ address: 'http://fastmesh:s3cretpw@consul:8500' }, {}], [{}, { CONSUL_HTTP_ADDR: 'fastmesh:s3cretpw@consul:8500' }]] as const) {
    assert.throws(() => resolveConsul(settings, env), (err: Error) => {
      assert.match(err.message, /credentials/)
      assert.ok(!err.message.includes('s3cretpw'), err.message)
      return true
    })
  }
})

test('health entries become endpoints: worst check wins, service address over node address, weights', () => {
  const entry = (id: string, address: string, checks: ConsulHealthEntry['Checks'], weights?: { Passing: number, Warning: number }): ConsulHealthEntry => ({
    Node: { Node: 'n1', Address: '10.0.0.1' },
    Service: { ID: id, Service: 'web', Address: address, Port: 80, Tags: ['v2'], Meta: { zone: 'a' }, ...(weights !== undefined ? { Weights: weights } : {}) },
    Checks: checks
  })
  const eps = endpointsFromHealth('web', [
    entry('b', '', [{ CheckID: 'serfHealth', Status: 'passing' }, { CheckID: 'c', Status: 'warning' }], { Passing: 10, Warning: 2 }),
    entry('a', '127.0.0.2', [{ CheckID: 'c', Status: 'passing' }, { CheckID: 'd', Status: 'critical', Output: 'boom' }])
  ])
  assert.deepEqual(eps.map((e) => [e.id, e.address, e.health, e.weight]), [
    ['n1/a', '127.0.0.2', 'critical', 1],
    ['n1/b', '10.0.0.1', 'warning', 2]
  ])
  assert.match(eps[0]!.healthDetail ?? '', /boom/)
  assert.deepEqual(eps[1]!.tags, ['v2'])
})

test('KV layers merge mappings key by key and replace arrays', () => {
  const merged = mergeLayers([
    { gateway: { name: 'shared', mode: 'edge' }, routes: [{ name: 'a' }] },
    undefined,
    { gateway: { name: 'edge-1' }, routes: [{ name: 'b' }] }
  ])
  assert.deepEqual(merged, { gateway: { name: 'edge-1', mode: 'edge' }, routes: [{ name: 'b' }] })
})

test('each blocking query waits 75-100% of the configured wait', () => {
  assert.equal(jitteredWait('30s', () => 0), '22500ms')
  assert.equal(jitteredWait('30s', () => 1), '30000ms')
  assert.equal(jitteredWait('2s', () => 0), '1500ms')
})
