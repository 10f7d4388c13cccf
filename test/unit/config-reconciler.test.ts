// The one config watcher, alone: a scripted provider feeds it snapshots and a recording
// target stands in for the gateway's swap, so each rule (dedupe, validation, refusal,
// order, "reload now") is checked without listeners.
import test from 'node:test'
import assert from 'node:assert/strict'
import { ConfigReconciler, type ReconcileTarget, type ReloadResult } from '../../src/config/reconciler.js'
import { checkConfig, ConfigError, type LoadedConfig } from '../../src/config/load.js'
import type { ConfigProvider, ConfigSnapshot, EmitSnapshot } from '../../src/config/provider.js'
import { createLogger } from '../../src/telemetry/logger.js'

const SOURCE = 'test.yaml'
const doc = (name: string): unknown => ({ gateway: { name }, discovery: { embedded: { services: { svc: { endpoints: [{ address: '127.0.0.1', port: 9 }] } } } }, routes: [{ name: 'r', destination: { service: 'svc' } }] })

/** A provider whose next on-demand snapshot the test sets, and which emits when told. */
class ScriptedProvider implements ConfigProvider {
  readonly source = SOURCE
  next: () => Promise<ConfigSnapshot> = async () => { throw new Error('no snapshot scripted') }
  emit: EmitSnapshot | undefined
  closed = false
  async snapshot (): Promise<ConfigSnapshot> { return await this.next() }
  start (emit: EmitSnapshot): void { this.emit = emit }
  async close (): Promise<void> { this.closed = true }
}

/** Records every swap and refusal; a swap takes as long as `gate` says. */
class RecordingTarget implements ReconcileTarget {
  versionNumber = 1
  readonly swaps: Array<{ name: string, reason: string }> = []
  readonly refusals: Array<{ err: unknown, reason: string }> = []
  gate: Promise<void> = Promise.resolve()
  failBuild = false
  async swap (loaded: LoadedConfig, reason: string): Promise<ReloadResult> {
    await this.gate
    if (this.failBuild) return this.refuse(new Error('build failed'), reason)
    this.swaps.push({ name: loaded.config.gateway.name, reason })
    return { ok: true, version: ++this.versionNumber }
  }

  refuse (err: unknown, reason: string): ReloadResult {
    this.refusals.push({ err, reason })
    return { ok: false, version: this.versionNumber, error: (err as Error).message }
  }

  readonly restorations: string[] = []
  restored (reason: string): ReloadResult {
    this.restorations.push(reason)
    return { ok: true, version: this.versionNumber, restored: true }
  }
}

function setup (): { provider: ScriptedProvider, target: RecordingTarget, reconciler: ConfigReconciler } {
  const provider = new ScriptedProvider()
  const target = new RecordingTarget()
  const reconciler = new ConfigReconciler({ provider, target, initial: checkConfig(doc('a'), SOURCE), log: createLogger({ level: 'silent' }) })
  reconciler.start()
  return { provider, target, reconciler }
}

test('a watched snapshot identical to the config in effect is dropped, not swapped', async () => {
  const { target, reconciler } = setup()
  const result = await reconciler.offer({ source: SOURCE, reason: 'file change', document: doc('a') })
  assert.deepEqual(result, { ok: true, version: 1 })
  assert.deepEqual(target.swaps, [])
  assert.deepEqual(target.refusals, [])
})

test('a watched snapshot with a different config is validated and swapped', async () => {
  const { target, reconciler } = setup()
  assert.deepEqual(await reconciler.offer({ source: SOURCE, reason: 'file change', document: doc('b') }), { ok: true, version: 2 })
  assert.deepEqual(target.swaps, [{ name: 'b', reason: 'file change' }])
  // Now b is in effect: the same snapshot again is not a reload.
  await reconciler.offer({ source: SOURCE, reason: 'file change', document: doc('b') })
  assert.equal(target.swaps.length, 1)
})

test('reload now asks the provider for a fresh snapshot and applies it even when unchanged', async () => {
  const { provider, target, reconciler } = setup()
  provider.next = async () => ({ source: SOURCE, reason: 'SIGHUP', document: doc('a') })
  assert.deepEqual(await reconciler.reload('SIGHUP'), { ok: true, version: 2 })
  assert.deepEqual(target.swaps, [{ name: 'a', reason: 'SIGHUP' }])
})

test('a provider refusal (unparseable source) is refused through the target, nothing swapped', async () => {
  const { provider, target } = setup()
  const refusal = new ConfigError('FASTMESH_ERR_CONFIG_PARSE', 'bad yaml', [{ path: '$', message: 'bad yaml' }])
  provider.emit!({ source: SOURCE, reason: 'consul kv change', error: refusal })
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(target.refusals.map((r) => [r.err, r.reason]), [[refusal, 'consul kv change']])
  assert.deepEqual(target.swaps, [])
})

test('an invalid document is refused with its JSON path, nothing swapped', async () => {
  const { target, reconciler } = setup()
  const result = await reconciler.offer({ source: SOURCE, reason: 'consul kv change', document: { routes: [{ name: 'x', destinaton: {} }] } })
  assert.equal(result.ok, false)
  const err = target.refusals[0]?.err
  assert.ok(err instanceof ConfigError)
  assert.ok(err.problems.some((p) => p.path === '$.routes[0].destinaton'), JSON.stringify(err.problems))
  assert.deepEqual(target.swaps, [])
})

test('a provider that cannot be asked at all is refused like a bad config', async () => {
  const { provider, target, reconciler } = setup()
  provider.next = async () => { throw new Error('connect ECONNREFUSED 127.0.0.1:8500') }
  const result = await reconciler.reload('admin API')
  assert.equal(result.ok, false)
  assert.match(String(result.error), /ECONNREFUSED/)
  assert.deepEqual(target.refusals.map((r) => r.reason), ['admin API'])
})

test('snapshots are applied one at a time, in the order they came', async () => {
  const { target, reconciler } = setup()
  let open!: () => void
  target.gate = new Promise((resolve) => { open = resolve })
  const first = reconciler.offer({ source: SOURCE, reason: 'one', document: doc('b') })
  const second = reconciler.offer({ source: SOURCE, reason: 'two', document: doc('c') })
  // Neither has swapped while the first swap is held; then both do, b before c.
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(target.swaps.length, 0)
  open()
  assert.deepEqual([await first, await second].map((r) => r.version), [2, 3])
  assert.deepEqual(target.swaps.map((s) => s.name), ['b', 'c'])
})

test('regression: a config whose build failed is tried again when it comes again', async () => {
  // It never came into effect, so it is not "unchanged".
  const { target, reconciler } = setup()
  target.failBuild = true
  assert.equal((await reconciler.offer({ source: SOURCE, reason: 'file change', document: doc('b') })).ok, false)
  target.failBuild = false
  assert.equal((await reconciler.offer({ source: SOURCE, reason: 'file change', document: doc('b') })).ok, true)
  assert.deepEqual(target.swaps.map((s) => s.name), ['b'])
})

test('regression: the config in effect offered again after a refusal clears the refusal ("restored"), without a build', async () => {
  const { target, reconciler } = setup()
  const bad = await reconciler.offer({ source: SOURCE, reason: 'file change', document: { routes: [{ name: 'x', destinaton: {} }] } })
  assert.equal(bad.ok, false)
  // The good file is put back: the same config as the one in effect.
  const back = await reconciler.offer({ source: SOURCE, reason: 'file change', document: doc('a') })
  assert.deepEqual(back, { ok: true, version: 1, restored: true })
  assert.deepEqual(target.restorations, ['file change'])
  assert.deepEqual(target.swaps, [])
  // Once cleared, the same config again is simply unchanged.
  assert.deepEqual(await reconciler.offer({ source: SOURCE, reason: 'file change', document: doc('a') }), { ok: true, version: 1 })
  assert.equal(target.restorations.length, 1)
})

test('the config in effect offered again after a failed build also clears the refusal', async () => {
  const { target, reconciler } = setup()
  target.failBuild = true
  assert.equal((await reconciler.offer({ source: SOURCE, reason: 'consul kv change', document: doc('b') })).ok, false)
  assert.equal((await reconciler.offer({ source: SOURCE, reason: 'consul kv change', document: doc('a') })).restored, true)
})

test('close stops the provider', async () => {
  const { provider, reconciler } = setup()
  await reconciler.close()
  assert.equal(provider.closed, true)
})
