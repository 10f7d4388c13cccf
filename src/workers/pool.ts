// The primary's workers (`gateway.workers` > 1): forks them with node:cluster so they share
// the listening ports, relays discovery snapshots and certificates to them, reloads them all
// or none (prepare everywhere, then commit), gathers their metrics and status for the admin
// API, and replaces a worker that dies without disturbing the others.
import cluster, { type Worker } from 'node:cluster'
import { AggregatorRegistry } from 'prom-client'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { Discovery } from '../discovery/types.js'
import type { IdentityProvider } from '../identity/types.js'
import type { ConfigProblem, FastmeshConfig } from '../config/validate.js'
import type { FromWorker, IdentityState, ToWorker, WorkerStatus } from './messages.js'
import type { MetricsSnapshot } from '../telemetry/metrics.js'
import { WorkerSnapshots } from './worker-snapshots.js'

/** Longest time a worker may take from fork to listening. */
const START_TIMEOUT_MS = 60_000

/** `gateway.workers` as a count: `auto` is the cores this process may use. */
export function workerCount (setting: number | 'auto'): number {
  return setting === 'auto' ? availableParallelism() : setting
}

/** What a new worker starts from: the config in effect and the serving version's number. */
export interface PoolConfig {
  readonly config: FastmeshConfig
  readonly source: string
  readonly version: number
}

export interface WorkerPoolOptions {
  readonly count: number
  readonly log: Logger
  /** The primary's discovery: every worker's watches go through it. */
  readonly discovery: Discovery
  /** The primary's started identity provider (undefined with mesh.mtls off). */
  readonly identity: IdentityProvider | undefined
  /** The services whose leaves every worker holds (the gateway and its local services). */
  readonly identities: readonly string[]
  readonly current: () => PoolConfig
  /** Longest time a worker given `stop` may drain. */
  readonly drainMs: () => number
  /** A worker ejected an endpoint (the primary's own tables take it too, for `/services`). */
  readonly onEjected?: (service: string, endpoint: string, until: number, reason: string) => void
}

/** A worker's answer to `prepare`; `gone`: it exited meanwhile (its replacement starts from what is committed). */
type PrepareAnswer = Extract<FromWorker, { t: 'prepared' }> | { readonly t: 'gone' }

interface Slot {
  /** 1-based, kept by replacements. */
  readonly index: number
  worker: Worker
  state: 'starting' | 'ready' | 'stopping'
  startedAt: Date
  /** Replacements of this slot since the gateway started. */
  restarts: number
  /** Exits of this slot in a row without reaching `ready` for long: paces replacements. */
  recentCrashes: number
  listeners: Record<string, AddressInfo> | undefined
  /** key → stop watching in the primary's discovery. */
  readonly watches: Map<string, () => void>
  /** Requests to this worker waiting for its answer, by id. */
  readonly pending: Map<number, (answer: FromWorker | { readonly t: 'gone' }) => void>
}

/** Per-worker detail for admin `GET /workers`. */
export interface WorkerReport {
  readonly index: number
  readonly pid: number | undefined
  readonly state: Slot['state']
  readonly startedAt: string
  readonly restarts: number
  readonly status: WorkerStatus | undefined
}

export class WorkerPool {
  private readonly slots = new Map<number, Slot>()
  private readonly log: Logger
  private stopping = false
  private nextId = 1
  /** Reloads and replacements run one at a time, so a new worker never misses a commit. */
  private queue: Promise<unknown> = Promise.resolve()
  private readonly leafServices: Set<string>
  private offIdentity: (() => void) | undefined
  /** Workers forked and not yet started (or failed): `stop()` waits for them. */
  private readonly forking = new Set<Promise<void>>()
  private readonly requests = new WorkerSnapshots()
  /** Each slot's last metrics answer, with the pid that gave it. */
  private readonly lastMetrics = new Map<number, { pid: number, metrics: unknown[] }>()
  /** Counters and histograms of worker processes that are gone, added up. */
  private retiredCounters: unknown[] | undefined
  private requestsTimer: NodeJS.Timeout | undefined

  constructor (private readonly opts: WorkerPoolOptions) {
    this.log = opts.log.child({ component: 'workers' })
    this.leafServices = new Set(opts.identities)
  }

  /** Forks every worker and resolves once all listen; a worker that fails to start fails the start. */
  async start (): Promise<void> {
    cluster.setupPrimary({
      exec: fileURLToPath(new URL('./worker-main.js', import.meta.url)),
      serialization: 'advanced'
    })
    const identity = this.opts.identity
    if (identity !== undefined) {
      this.offIdentity = identity.onChange(() => { this.broadcast({ t: 'identity', identity: this.identityState()! }) })
    }
    const starts: Array<Promise<void>> = []
    for (let i = 1; i <= this.opts.count; i++) starts.push(this.fork(i, 0))
    await Promise.all(starts)
    // As often as the admin's request window samples (src/telemetry/request-window.ts).
    this.requestsTimer = setInterval(() => { void this.refreshRequests() }, 5000)
    this.requestsTimer.unref()
    this.log.info({ workers: this.opts.count, schedulingPolicy: cluster.schedulingPolicy === cluster.SCHED_RR ? 'rr' : 'none' }, 'workers listening')
  }

  /** Runs `task` when no reload or replacement is under way. */
  exclusive<T> (task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task)
    this.queue = run.catch(() => {})
    return run
  }

  private fork (index: number, restarts: number): Promise<void> {
    const worker = cluster.fork({ FASTMESH_WORKER: String(index) })
    const slot: Slot = { index, worker, state: 'starting', startedAt: new Date(), restarts, recentCrashes: this.slots.get(index)?.recentCrashes ?? 0, listeners: undefined, watches: new Map(), pending: new Map() }
    this.slots.set(index, slot)
    const { config, source, version } = this.opts.current()
    const started = new Promise<void>((resolve, reject) => {
      let settled = false
      const settle = (err?: Error): void => {
        if (settled) return
        settled = true
        clearTimeout(startTimer)
        if (err === undefined) resolve()
        else reject(err)
      }
      // A start that hangs (a plugin awaiting the network forever) must not hold reloads and
      // replacements, which wait their turn behind it.
      const startTimer = setTimeout(() => {
        settle(new Error(`worker ${index} did not start within ${START_TIMEOUT_MS / 1000} s`))
        worker.process.kill('SIGKILL')
      }, START_TIMEOUT_MS)
      // The IPC channel's errors (a send racing an exit) come here; unheard, they would end the primary.
      worker.on('error', (err) => { this.log.warn({ err, worker: index }, 'worker channel error') })
      worker.on('message', (m: FromWorker) => {
        if (m.t === 'hello') {
          // A stop sent before the worker listened for messages was lost: say it again.
          if (this.stopping) this.send(slot, { t: 'stop', drainMs: this.opts.drainMs() })
          else this.send(slot, { t: 'init', worker: index, config, source, version, identity: this.identityState() })
          return
        }
        if (m.t === 'ready') {
          slot.state = 'ready'
          slot.listeners = m.listeners
          settle()
          return
        }
        if (m.t === 'start-failed') {
          settle(new Error(`worker ${index} could not start: ${m.error}`))
          return
        }
        this.receive(slot, m)
      })
      worker.on('exit', (code, signal) => {
        this.forget(slot)
        settle(new Error(`worker ${index} exited while starting (code ${code ?? '-'}, signal ${signal ?? '-'})`))
        if (this.stopping || this.slots.get(index) !== slot) return
        this.replace(slot, code, signal)
      })
    })
    this.forking.add(started)
    void started.catch(() => {}).finally(() => this.forking.delete(started))
    return started
  }

  /** A worker died: the others go on serving; this slot gets a new worker, paced if it keeps dying. */
  private replace (slot: Slot, code: number | null, signal: string | null): void {
    // Exit code 0 without a signal: it was told to stop (a SIGTERM to that worker) and drained.
    const drained = code === 0 && signal === null
    const lived = Date.now() - slot.startedAt.getTime()
    const crashes = drained ? 0 : lived < 10_000 ? slot.recentCrashes + 1 : 1
    const delayMs = crashes === 0 ? 0 : Math.min(10_000, 100 * 2 ** (crashes - 1))
    if (drained) this.log.info({ worker: slot.index, pid: slot.worker.process.pid }, 'worker stopped; starting a replacement')
    else this.log.error({ worker: slot.index, pid: slot.worker.process.pid, code, signal, restartInMs: delayMs }, 'worker exited; starting a replacement')
    slot.recentCrashes = crashes
    setTimeout(() => {
      if (this.stopping) return
      void this.exclusive(async () => {
        if (this.stopping) return
        await this.fork(slot.index, slot.restarts + 1)
        this.log.info({ worker: slot.index, pid: this.slots.get(slot.index)?.worker.process.pid }, 'replacement worker listening')
      }).catch((err: unknown) => { this.log.error({ err, worker: slot.index }, 'replacement worker failed to start') })
    }, delayMs).unref()
  }

  /** An exited worker's watches stop, and whoever waits for its answers is told it is gone. */
  private forget (slot: Slot): void {
    for (const stop of slot.watches.values()) stop()
    slot.watches.clear()
    for (const answer of slot.pending.values()) answer({ t: 'gone' })
    slot.pending.clear()
    slot.state = 'stopping'
  }

  private receive (slot: Slot, m: FromWorker): void {
    switch (m.t) {
      case 'watch': {
        if (slot.watches.has(m.key)) return
        const key = m.key
        slot.watches.set(key, this.opts.discovery.watch(m.service, (snapshot) => { this.send(slot, { t: 'snapshot', key, snapshot }) }, m.options))
        return
      }
      case 'unwatch': {
        slot.watches.get(m.key)?.()
        slot.watches.delete(m.key)
        return
      }
      case 'ensure': {
        const identity = this.opts.identity
        if (identity === undefined) return
        this.leafServices.add(m.service)
        identity.ensure(m.service).then(() => { this.broadcast({ t: 'identity', identity: this.identityState()! }) }, (err: unknown) => { this.log.error({ err, service: m.service }, 'a worker asked for a leaf the primary could not get') })
        return
      }
      case 'ejected': {
        const reason = `${m.reason}, seen by worker ${slot.index}`
        this.opts.onEjected?.(m.service, m.endpoint, m.until, reason)
        for (const other of this.slots.values()) if (other !== slot && other.state === 'ready') this.send(other, { t: 'eject', service: m.service, endpoint: m.endpoint, until: m.until, reason })
        return
      }
      case 'hello': case 'ready': case 'start-failed': return
      case 'prepared': case 'committed': case 'status': case 'metrics': case 'requests': {
        const answer = slot.pending.get(m.id)
        slot.pending.delete(m.id)
        answer?.(m)
      }
    }
  }

  private identityState (): IdentityState | undefined {
    const identity = this.opts.identity
    if (identity === undefined) return undefined
    const leaves = []
    for (const service of this.leafServices) {
      const leaf = identity.leaf(service)
      if (leaf !== undefined) leaves.push(leaf)
    }
    return { kind: identity.kind, roots: identity.roots(), leaves }
  }

  private send (slot: Slot, m: ToWorker): void {
    if (slot.worker.isConnected()) slot.worker.send(m)
  }

  private broadcast (m: ToWorker): void {
    for (const slot of this.slots.values()) if (slot.state !== 'stopping') this.send(slot, m)
  }

  /** Asks every live worker and gathers their answers (`gone` for one that exits meanwhile; undefined after `timeoutMs`). */
  private async ask (make: (id: number) => ToWorker, timeoutMs: number, only?: readonly Slot[]): Promise<Array<{ slot: Slot, answer: FromWorker | { readonly t: 'gone' } | undefined }>> {
    const id = this.nextId++
    const asked = only ?? [...this.slots.values()].filter((s) => s.state === 'ready')
    return await Promise.all(asked.map(async (slot) => {
      const answer = await new Promise<FromWorker | { readonly t: 'gone' } | undefined>((resolve) => {
        const timer = setTimeout(() => { slot.pending.delete(id); resolve(undefined) }, timeoutMs)
        slot.pending.set(id, (a) => { clearTimeout(timer); resolve(a) })
        this.send(slot, make(id))
      })
      return { slot, answer }
    }))
  }

  /**
   * Phase one of a reload (call inside `exclusive`): every ready worker builds the version.
   * Resolves with `commit` and `abandon` for phase two, or the first worker's refusal.
   */
  async prepare (config: FastmeshConfig, source: string, version: number, timeoutMs: number): Promise<{ ok: true, commit: (reason: string) => Promise<void> } | { ok: false, error: string, problems?: readonly ConfigProblem[] }> {
    let prepared = 0
    const answers = await this.ask((id) => { prepared = id; return { t: 'prepare', id, config, source, version } }, timeoutMs)
    const asked = answers.map((a) => a.slot)
    for (const { slot, answer } of answers) {
      const a = answer as PrepareAnswer | undefined
      if (a === undefined || (a.t === 'prepared' && !a.ok)) {
        for (const s of asked) this.send(s, { t: 'abandon', prepared })
        const why = a === undefined ? `no answer within ${timeoutMs} ms` : a.error ?? 'refused'
        return { ok: false, error: `worker ${slot.index} (pid ${slot.worker.process.pid ?? '-'}) could not build version ${version}: ${why}`, ...(a?.t === 'prepared' && a.problems !== undefined ? { problems: a.problems } : {}) }
      }
    }
    return {
      ok: true,
      commit: async (reason) => {
        const live = asked.filter((s) => s.state === 'ready')
        // Waits for each worker to serve it, so a reload's answer means every worker serves it.
        // One that does not confirm cannot be trusted to serve it: it is replaced, and its
        // replacement starts from this version (replacements wait for this reload to finish).
        for (const { slot, answer } of await this.ask((id) => ({ t: 'commit', id, prepared, reason }), timeoutMs, live)) {
          if (answer === undefined || (answer.t === 'committed' && !answer.ok)) {
            this.log.error({ worker: slot.index, pid: slot.worker.process.pid, version }, 'worker did not confirm the new version; replacing it')
            slot.worker.process.kill('SIGKILL')
          }
        }
      }
    }
  }

  /** True while at least one worker serves and none is starting for the first time. */
  get ready (): boolean {
    const slots = [...this.slots.values()]
    return slots.length === this.opts.count && slots.some((s) => s.state === 'ready')
  }

  /** Where the workers' listeners are bound (every worker binds the same). */
  get bound (): Record<string, AddressInfo> {
    for (const slot of this.slots.values()) if (slot.listeners !== undefined) return slot.listeners
    return {}
  }

  /**
   * Every worker's metrics as prom-client JSON, for the admin API to add up. Counters must
   * not go back: a worker that does not answer within 2 s counts with its last answer, and
   * the counters of worker processes that are gone stay in `retiredCounters`.
   */
  async metrics (): Promise<unknown[][]> {
    for (const { slot, answer } of await this.ask((id) => ({ t: 'metrics', id }), 2000)) {
      if (answer?.t !== 'metrics') continue
      const pid = slot.worker.process.pid ?? 0
      const before = this.lastMetrics.get(slot.index)
      if (before !== undefined && before.pid !== pid) await this.retire(before.metrics)
      this.lastMetrics.set(slot.index, { pid, metrics: answer.metrics })
    }
    return [...(this.retiredCounters !== undefined ? [this.retiredCounters] : []), ...[...this.lastMetrics.values()].map((m) => m.metrics)]
  }

  /** Keeps the counters and histograms of a worker process that is gone, added to those kept before. */
  private async retire (metrics: unknown[]): Promise<void> {
    const counting = (metrics as Array<{ type: string }>).filter((m) => m.type === 'counter' || m.type === 'histogram')
    const kept = this.retiredCounters !== undefined ? [this.retiredCounters, counting] : [counting]
    this.retiredCounters = await AggregatorRegistry.aggregate(kept as Parameters<typeof AggregatorRegistry.aggregate>[0]).getMetricsAsJSON()
  }

  /** Asks every worker for its request series (the service graph's rates read the last answers). */
  async refreshRequests (): Promise<void> {
    for (const { slot, answer } of await this.ask((id) => ({ t: 'requests', id }), 2000)) {
      if (answer?.t === 'requests') this.requests.update(slot.index, slot.worker.process.pid ?? 0, answer.snapshot)
    }
  }

  /** Every worker's request series added up, as of the last refresh (at most 5 s old). */
  requestSnapshot (): MetricsSnapshot {
    return this.requests.merged()
  }

  /** Each worker: pid, state, restarts and what it reports of itself. */
  async describe (): Promise<WorkerReport[]> {
    const answers = new Map((await this.ask((id) => ({ t: 'status', id }), 2000)).map(({ slot, answer }) => [slot, answer]))
    return [...this.slots.values()].sort((a, b) => a.index - b.index).map((slot) => {
      const answer = answers.get(slot)
      return {
        index: slot.index,
        pid: slot.worker.process.pid,
        state: slot.state,
        startedAt: slot.startedAt.toISOString(),
        restarts: slot.restarts,
        status: answer?.t === 'status' ? answer.status : undefined
      }
    })
  }

  /** From now on a worker that exits is not replaced (the gateway is stopping). */
  halt (): void {
    this.stopping = true
  }

  /** Every worker stops accepting and drains (at most the drain time, then it is killed). */
  async stop (): Promise<void> {
    this.stopping = true
    this.offIdentity?.()
    clearInterval(this.requestsTimer)
    // A worker being forked is told to stop when it says hello; wait until it is up or gone.
    await Promise.allSettled([...this.forking])
    const drainMs = this.opts.drainMs()
    await Promise.all([...this.slots.values()].map(async (slot) => {
      const worker = slot.worker
      if (worker.isDead()) return
      const exited = new Promise<void>((resolve) => { worker.once('exit', () => { resolve() }) })
      this.send(slot, { t: 'stop', drainMs })
      const timer = setTimeout(() => { worker.process.kill('SIGKILL') }, drainMs + 5000)
      await exited
      clearTimeout(timer)
    }))
    for (const slot of this.slots.values()) this.forget(slot)
  }
}
