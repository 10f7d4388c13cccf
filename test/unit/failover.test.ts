// The failover chain over fake service layers: which layer serves, coming back to the
// primary, where reports and admissions go; and the chain a config describes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { FailoverChain, type FailoverLayer } from '../../src/balancer/failover.js'
import { describeSelector, failoverSelectors } from '../../src/config/selectors.js'
import type { AdmissionKind, AttemptOutcome, PickRequest } from '../../src/balancer/types.js'
import type { EndpointTarget } from '../../src/upstream/endpoint-pool.js'
import type { ResponseError } from '../../src/errors.js'
import { validateConfigDocument } from '../../src/config/validate.js'

const REQUEST: PickRequest = { headers: {}, clientAddress: '127.0.0.1', search: '', tried: undefined }
const OK: AttemptOutcome = { status: 200, gatewayError: false, latencyMs: 1 }

/** A service layer whose usable endpoints the test sets; it records what reaches it. */
class FakeLayer implements FailoverLayer {
  up = true
  panic = false
  readonly reports: string[] = []
  readonly admitted: Record<AdmissionKind, number> = { request: 0, retry: 0 }
  refuse: ResponseError | undefined
  readonly target: EndpointTarget
  current: unknown = { endpoints: [] }

  constructor (readonly service: string) {
    // The chain never touches the pool: it only passes targets through.
    this.target = { endpoint: { id: `${service}-1` }, label: service } as unknown as EndpointTarget
  }

  /** Its one endpoint; with `untriedOnly`, none once the request tried it. */
  pick (request: PickRequest): EndpointTarget | undefined {
    if (!this.up) return undefined
    if (request.untriedOnly === true && request.tried?.has(this.target.endpoint.id) === true) return undefined
    return this.target
  }

  report (target: EndpointTarget): void {
    this.reports.push(target.endpoint.id)
  }

  admit (kind: AdmissionKind): ResponseError | undefined {
    if (this.refuse !== undefined) return this.refuse
    this.admitted[kind]++
    return undefined
  }

  release (kind: AdmissionKind): void {
    this.admitted[kind]--
  }

  degraded (): boolean {
    return this.panic
  }

  async known (): Promise<void> {}
}

function chain (n = 3) {
  const layers = Array.from({ length: n }, (_, i) => new FakeLayer(['orders', 'orders-v1', 'orders@dc2'][i] ?? `t${i}`))
  return { layers, c: new FailoverChain(layers, layers.map((l) => l.service)) }
}

test('with a usable primary, the primary serves and is active', () => {
  const { c, layers } = chain()
  assert.equal(c.pick(REQUEST), layers[0]!.target)
  assert.deepEqual(c.active, { index: 0, target: 'orders' })
})

test('a primary with no usable endpoint fails over to the first target that has one, in order', () => {
  const { c, layers } = chain()
  layers[0]!.up = false
  assert.equal(c.pick(REQUEST), layers[1]!.target)
  assert.deepEqual(c.active, { index: 1, target: 'orders-v1' })
  layers[1]!.up = false
  assert.equal(c.pick(REQUEST), layers[2]!.target)
  assert.equal(c.active.index, 2)
})

test('the chain leaves the failover target as soon as the primary has a usable endpoint again', () => {
  const { c, layers } = chain()
  layers[0]!.up = false
  c.pick(REQUEST)
  layers[0]!.up = true
  assert.equal(c.pick(REQUEST), layers[0]!.target)
  assert.equal(c.active.index, 0)
})

test('no layer with a usable endpoint: pick is undefined (the route layer answers NO_HEALTHY_ENDPOINT)', () => {
  const { c, layers } = chain()
  for (const l of layers) l.up = false
  assert.equal(c.pick(REQUEST), undefined)
})

test('a layer in outlier panic is passed over for a later target that serves normally', () => {
  const { c, layers } = chain()
  layers[0]!.panic = true
  assert.equal(c.pick(REQUEST), layers[1]!.target)
})

test('when every layer is in panic or down, the first one in panic serves', () => {
  const { c, layers } = chain()
  layers[0]!.up = false
  layers[1]!.panic = true
  layers[2]!.panic = true
  assert.equal(c.pick(REQUEST), layers[1]!.target)
})

function retry (...tried: string[]): PickRequest {
  return { ...REQUEST, tried: new Set(tried) }
}

test('regression: a retry leaves the primary once the request tried its every usable endpoint (previous priorities), where it used to try the dead primary again', () => {
  const { c, layers } = chain()
  assert.equal(c.pick(retry('orders-1')), layers[1]!.target)
  assert.equal(c.pick(retry('orders-1', 'orders-v1-1')), layers[2]!.target)
})

test('a retry stays on the primary while it has an endpoint the request has not tried', () => {
  const { c, layers } = chain()
  assert.equal(c.pick(retry('elsewhere-1')), layers[0]!.target)
  assert.equal(c.active.index, 0)
})

test('a retry that tried every layer takes a tried endpoint the usual way; with untriedOnly it gets none', () => {
  const { c, layers } = chain()
  const all = retry('orders-1', 'orders-v1-1', 'orders@dc2-1')
  assert.equal(c.pick(all), layers[0]!.target)
  assert.equal(c.pick({ ...all, untriedOnly: true }), undefined)
})

test('a retry passes over a layer in panic for a later one with an untried endpoint, as a first try does', () => {
  const { c, layers } = chain()
  layers[1]!.panic = true
  assert.equal(c.pick(retry('orders-1')), layers[2]!.target)
})

test('a report goes to the layer that picked the target', () => {
  const { c, layers } = chain()
  layers[0]!.up = false
  const fromTarget = c.pick(REQUEST)!
  layers[0]!.up = true
  const fromPrimary = c.pick(REQUEST)!
  c.report(fromTarget, OK)
  c.report(fromPrimary, OK)
  assert.deepEqual(layers[0]!.reports, ['orders-1'])
  assert.deepEqual(layers[1]!.reports, ['orders-v1-1'])
})

test('admissions go to the serving layer and a refusal is passed on as it is', () => {
  const { c, layers } = chain()
  layers[0]!.up = false
  c.pick(REQUEST)
  assert.equal(c.admit('request'), undefined)
  assert.deepEqual([layers[0]!.admitted.request, layers[1]!.admitted.request], [0, 1])
  const overflow = { statusCode: 503, code: 'FASTMESH_ERR_OVERFLOW', message: 'full' }
  layers[1]!.refuse = overflow
  assert.equal(c.admit('retry'), overflow)
})

test('releases go back to a layer holding an admission, so no count drifts when the chain switches', () => {
  const { c, layers } = chain()
  c.admit('request') // on the primary
  layers[0]!.up = false
  c.pick(REQUEST) // now the target serves
  c.admit('request')
  c.release('request')
  c.release('request')
  c.release('request') // one too many: ignored
  assert.deepEqual(layers.map((l) => l.admitted.request), [0, 0, 0])
})

test('service and current are the primary\'s', () => {
  const { c, layers } = chain()
  assert.equal(c.service, 'orders')
  assert.equal(c.current, layers[0]!.current)
})

test('a chain needs a primary', () => {
  assert.throws(() => new FailoverChain([], []))
})

function config (services: Record<string, unknown>) {
  const result = validateConfigDocument({ discovery: { consul: {} }, services })
  assert.deepEqual(result.problems, [])
  return result.config!
}

test('failoverSelectors: primary first, then targets in order, each replacing the fields it gives', () => {
  const cfg = config({
    orders: { subset: { tags: ['v2'] }, datacenter: 'dc1', failover: [{ subset: { tags: ['v1'] } }, { datacenter: 'dc2' }, { service: 'orders-backup' }] }
  })
  assert.deepEqual(failoverSelectors(cfg, 'orders').map(describeSelector), ['orders[tag=v2]@dc1', 'orders[tag=v1]@dc1', 'orders[tag=v2]@dc2', 'orders-backup@dc1'])
})

test('failoverSelectors: a target service brings its own failover targets right after it', () => {
  const cfg = config({
    a: { failover: [{ service: 'b' }, { service: 'c' }] },
    b: { failover: [{ datacenter: 'dc2' }] }
  })
  assert.deepEqual(failoverSelectors(cfg, 'a').map(describeSelector), ['a', 'b', 'b@dc2', 'c'])
})

test('failoverSelectors: a service without policy or failover is a chain of one', () => {
  assert.deepEqual(failoverSelectors(config({}), 'users').map(describeSelector), ['users'])
})

test('failoverSelectors keeps the mesh caller on every target', () => {
  const cfg = config({ a: { failover: [{ service: 'b' }] } })
  assert.deepEqual(failoverSelectors(cfg, 'a', 'web').map((s) => s.meshCaller), ['web', 'web'])
})
