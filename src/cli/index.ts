#!/usr/bin/env node
// The fastmesh command line: start | validate | demo | sample-service | register | deregister | config | certs.
// Exit codes: 0 ok, 1 runtime failure, 2 bad input (usage or invalid config).
// Heavy modules are imported by the command that needs them, so `validate` and `--help` start fast.
import { parseArgs } from 'node:util'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { dirname, resolve } from 'node:path'
import { ConfigError, loadConfigFile, parseConfigText, compileConfig } from '../config/load.js'
import { isDuration } from '../config/duration.js'
import { SERVICE_NAME_RULE, isServiceName } from '../config/names.js'
import type { SampleCalls, SampleService } from '../demo/sample-service.js'
import type { ConsulClient } from '../discovery/consul/client.js'
import type { ConfigProvider } from '../config/provider.js'

const lazy = {
  gateway: async () => await import('../gateway/gateway.js'),
  logger: async () => await import('../telemetry/logger.js'),
  kv: async () => await import('../discovery/consul/kv-source.js'),
  fileProvider: async () => await import('../config/provider-file.js'),
  reconciler: async () => await import('../config/reconciler.js'),
  consul: async () => await import('../discovery/consul/client.js'),
  registration: async () => await import('../discovery/consul/registration.js'),
  demo: async () => await import('../demo/sample-service.js'),
  localCa: async () => await import('../identity/local-ca.js')
}

const USAGE = `fastmesh — a service mesh whose data plane is a Fastify gateway

Usage:
  fastmesh start --config FILE       run a gateway (reloads on file change and SIGHUP)
  fastmesh start --kv KEY [--kv-shared KEY] [--config BASE] [--consul ADDR]
                                     run with config from Consul KV (shared key merged under KEY)
  fastmesh validate FILE             check a config: prints "ok" or every problem (exit 2)
  fastmesh demo                      run the demo mesh (edge + sample services, no Consul)
  fastmesh sample-service --name N --port P [--instance ID] [--address A]
                         [--calls S1,S2 [--via URL]]
                                     run one sample service (the local mesh's web, orders, ...);
                                     --calls: on every request it calls S1, S2 through its node
                                     gateway: --via URL with the Host header, else HTTP_PROXY
  fastmesh register --name N --port P [--id ID] [--address A] [--tag T]... [--meta k=v]...
                    [--check-http URL | --check-tcp HOST:PORT | --check-ttl 10s]
                    [--interval 10s] [--timeout 2s] [--deregister-after 1m] [--consul ADDR]
  fastmesh deregister ID [--consul ADDR]
  fastmesh config push FILE [--base BASE] [--key K] [--consul ADDR]
                                     validate, then write to Consul KV; with --base, FILE is a
                                     layer over the BASE file a gateway started with --config
  fastmesh config get [--key K] [--consul ADDR]         print a KV config
  fastmesh certs init --dir DIR [--trust-domain TD] [--dc DC] [--days N] [--force]
                                     create a local CA (ca.pem, ca-key.pem); --force replaces
                                     one, keeping the old CA cert under DIR/roots/
  fastmesh certs issue --dir DIR --service NAME [--dc DC] [--hours N]
                                     issue (or reissue) NAME.pem + NAME-key.pem, 72 h by default
  fastmesh certs show --dir DIR      list the CA and leaves: SPIFFE ID, expiry, days left
  fastmesh --help

Environment: FASTMESH_HTTP_ADDRESS, FASTMESH_HTTP_PORT, FASTMESH_ADMIN_ADDRESS,
FASTMESH_ADMIN_PORT, FASTMESH_ADMIN_TOKEN, FASTMESH_LOG_LEVEL override the config file. CONSUL_HTTP_ADDR and
CONSUL_HTTP_TOKEN are the Consul defaults, as for Consul's own tools. The default KV key
is fastmesh/config/<gateway.name>.`

class UsageError extends Error {}

function fail (message: string, code: number): never {
  process.stderr.write(message.endsWith('\n') ? message : message + '\n')
  process.exit(code)
}

async function validate (args: string[]): Promise<void> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} })
  if (positionals.length !== 1) throw new UsageError('validate takes exactly one FILE')
  const file = positionals[0]!
  try {
    // The same compile step a gateway runs: custom plugins are imported and every plugin's options checked.
    const loaded = await loadConfigFile(file)
    const warnings = loaded.warnings ?? []
    process.stdout.write(warnings.length === 0 ? 'ok\n' : `ok, with ${warnings.length} warning${warnings.length === 1 ? '' : 's'}\n`)
    for (const w of warnings) process.stderr.write(`${file}: ${w.path}: warning: ${w.message}${w.hint !== undefined ? `\n    hint: ${w.hint}` : ''}\n`)
  } catch (err) {
    if (err instanceof ConfigError) {
      // An unreadable file has no JSON path to point at: say so in one line.
      if (err.code === 'FASTMESH_ERR_CONFIG_READ') fail(`${err.code}: ${err.message}`, 2)
      const lines = err.problems.map((p) => `${file}: ${p.path}: ${p.message}${p.hint !== undefined ? `\n    hint: ${p.hint}` : ''}`)
      fail(`${err.code}: ${lines.length} problem${lines.length === 1 ? '' : 's'} in ${file}\n${lines.join('\n')}`, 2)
    }
    throw err
  }
}

async function start (args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', short: 'c' },
      mode: { type: 'string' },
      kv: { type: 'string' },
      'kv-shared': { type: 'string' },
      consul: { type: 'string' }
    }
  })
  if (values.config === undefined && values.kv === undefined) throw new UsageError('start needs --config FILE or --kv KEY')
  if (values['kv-shared'] !== undefined && values.kv === undefined) throw new UsageError('--kv-shared needs --kv')
  const { Gateway } = await lazy.gateway()
  const { createLogger } = await lazy.logger()
  const { loadSnapshot } = await lazy.reconciler()
  const early = createLogger({ level: process.env.FASTMESH_LOG_LEVEL ?? 'info' })
  // The CLI only wires: a provider (the file, watched; or Consul KV over an optional base
  // file) and a gateway that takes every config version from it.
  let provider: ConfigProvider
  if (values.kv !== undefined) {
    const base = values.config !== undefined ? parseBaseOrFail(await readFileOrFail(values.config), values.config) : undefined
    const baseConsul = (base as { discovery?: { consul?: { address?: string, token?: string } } } | undefined)?.discovery?.consul
    const { ConsulClient, resolveConsul } = await lazy.consul()
    const { KvConfigProvider } = await lazy.kv()
    provider = new KvConfigProvider({
      client: new ConsulClient(resolveConsul({ ...baseConsul, ...(values.consul !== undefined ? { address: values.consul } : {}) })),
      keys: [...(values['kv-shared'] !== undefined ? [values['kv-shared']] : []), values.kv],
      base,
      log: early.child({ component: 'kv' })
    })
  } else {
    const { FileConfigProvider } = await lazy.fileProvider()
    provider = new FileConfigProvider(values.config!, { log: early, watch: true })
  }
  let loaded
  try {
    loaded = await loadSnapshot(await provider.snapshot('start'))
  } catch (err) {
    if (err instanceof ConfigError) fail(`${err.message}`, 2)
    throw err
  }
  if (values.kv === undefined && values.mode !== undefined && values.mode !== loaded.config.gateway.mode) {
    throw new UsageError(`--mode ${values.mode} differs from gateway.mode "${loaded.config.gateway.mode}" in ${values.config}`)
  }
  const log = createLogger({ level: loaded.config.telemetry.logging.level })
  for (const w of loaded.warnings ?? []) log.warn({ path: w.path, hint: w.hint }, `config warning: ${w.message}`)
  const gateway = new Gateway({ loaded, log, provider, handleSignals: true })
  await gateway.start()
}

function parseBaseOrFail (text: string, file: string): unknown {
  try {
    return parseConfigText(text, file)
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, 2)
    throw err
  }
}

async function readFileOrFail (file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (err) {
    fail(`FASTMESH_ERR_CONFIG_READ: cannot read ${file}: ${(err as Error).message}`, 2)
  }
}

async function consulFrom (address: string | undefined): Promise<ConsulClient> {
  const { ConsulClient, resolveConsul } = await lazy.consul()
  try {
    return new ConsulClient(resolveConsul(address !== undefined ? { address } : {}))
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

async function register (args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      name: { type: 'string' },
      id: { type: 'string' },
      address: { type: 'string' },
      port: { type: 'string' },
      tag: { type: 'string', multiple: true },
      meta: { type: 'string', multiple: true },
      'check-http': { type: 'string' },
      'check-tcp': { type: 'string' },
      'check-ttl': { type: 'string' },
      interval: { type: 'string' },
      timeout: { type: 'string' },
      'deregister-after': { type: 'string' },
      consul: { type: 'string' }
    }
  })
  if (!isServiceName(values.name)) throw new UsageError(`--name is required: ${SERVICE_NAME_RULE}`)
  const port = Number(values.port)
  if (values.port === undefined || !Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--port must be a port number 1-65535, got ${values.port ?? 'nothing'}`)
  const meta: Record<string, string> = {}
  for (const kv of values.meta ?? []) {
    const eq = kv.indexOf('=')
    if (eq <= 0) throw new UsageError(`--meta takes key=value, got "${kv}"`)
    meta[kv.slice(0, eq)] = kv.slice(eq + 1)
  }
  const kinds = (['check-http', 'check-tcp', 'check-ttl'] as const).filter((k) => values[k] !== undefined)
  if (kinds.length > 1) throw new UsageError(`give at most one of --check-http, --check-tcp, --check-ttl (got ${kinds.map((k) => '--' + k).join(', ')})`)
  for (const k of ['check-ttl', 'interval', 'timeout', 'deregister-after'] as const) {
    const v = values[k]
    if (v !== undefined && !isDuration(v)) throw new UsageError(`--${k} takes a duration like 10s or 1.5s, got "${v}"`)
  }
  if (values['check-http'] !== undefined && !/^https?:\/\//.test(values['check-http'])) throw new UsageError(`--check-http takes a URL, got "${values['check-http']}"`)
  if (values['check-tcp'] !== undefined && !/^[^:]+:[0-9]+$/.test(values['check-tcp'])) throw new UsageError(`--check-tcp takes host:port, got "${values['check-tcp']}"`)
  if (kinds.length === 0 && (values.interval !== undefined || values.timeout !== undefined || values['deregister-after'] !== undefined)) throw new UsageError('--interval, --timeout and --deregister-after need a check (--check-http, --check-tcp or --check-ttl)')
  const client = await consulFrom(values.consul)
  const check = kinds.length === 0
    ? undefined
    : {
        ...(values['check-http'] !== undefined ? { http: values['check-http'] } : {}),
        ...(values['check-tcp'] !== undefined ? { tcp: values['check-tcp'] } : {}),
        ...(values['check-ttl'] !== undefined ? { ttl: values['check-ttl'] } : {}),
        ...(values.interval !== undefined ? { interval: values.interval } : {}),
        ...(values.timeout !== undefined ? { timeout: values.timeout } : {}),
        ...(values['deregister-after'] !== undefined ? { deregisterCriticalServiceAfter: values['deregister-after'] } : {})
      }
  const { registerService } = await lazy.registration()
  try {
    const id = await registerService(client, {
      name: values.name,
      ...(values.id !== undefined ? { id: values.id } : {}),
      address: values.address ?? '127.0.0.1',
      port,
      tags: values.tag ?? [],
      meta,
      ...(check !== undefined ? { check } : {})
    })
    process.stdout.write(`registered ${id} in ${client.settings.url}\n`)
  } finally {
    client.close()
  }
}

async function deregister (args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { consul: { type: 'string' } } })
  if (positionals.length !== 1) throw new UsageError('deregister takes exactly one service ID')
  const client = await consulFrom(values.consul)
  const { deregisterService } = await lazy.registration()
  try {
    await deregisterService(client, positionals[0]!)
    process.stdout.write(`deregistered ${positionals[0]} from ${client.settings.url}\n`)
  } finally {
    client.close()
  }
}

async function configCommand (args: string[]): Promise<void> {
  const [sub, ...rest] = args
  const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { key: { type: 'string' }, consul: { type: 'string' }, base: { type: 'string' } } })
  if (sub === 'push') {
    if (positionals.length !== 1) throw new UsageError('config push takes exactly one FILE')
    const file = positionals[0]!
    let loaded
    try {
      if (values.base === undefined) {
        loaded = await loadConfigFile(file, {})
      } else {
        // FILE is a layer over BASE (a gateway started with `--config BASE --kv KEY`): check
        // what that gateway would run, the two merged as the KV provider merges them.
        const { mergeLayers } = await lazy.kv()
        const layers = [parseConfigText(await readFileOrFail(values.base), values.base), parseConfigText(await readFileOrFail(file), file)]
        // Relative paths in it resolve from the working directory, as in a KV-configured gateway.
        loaded = await compileConfig(mergeLayers(layers), `kv:${file} over ${values.base}`, {})
      }
    } catch (err) {
      if (err instanceof ConfigError) fail(`${err.message}\nnothing was written`, 2)
      throw err
    }
    const key = values.key ?? `fastmesh/config/${loaded.config.gateway.name}`
    const client = await consulFrom(values.consul)
    try {
      const ok = await client.consul.kv.set(key, await readFile(file, 'utf8'))
      if (ok !== true) throw new Error(`Consul refused the write of ${key}`)
      process.stdout.write(`pushed ${file} to ${key} in ${client.settings.url}\n`)
    } finally {
      client.close()
    }
    return
  }
  if (sub === 'get') {
    if (positionals.length !== 0) throw new UsageError('config get takes no positional arguments')
    const key = values.key ?? 'fastmesh/config/fastmesh'
    const client = await consulFrom(values.consul)
    try {
      const { Cancellable } = await lazy.consul()
      const r = await client.kvGet(key, 0n, '1s', new Cancellable())
      if (r.data === undefined || r.data.Value === null) fail(`no value at ${key} in ${client.settings.url}`, 1)
      process.stdout.write(r.data.Value.endsWith('\n') ? r.data.Value : r.data.Value + '\n')
    } finally {
      client.close()
    }
    return
  }
  throw new UsageError(`config takes push or get, got ${sub === undefined ? 'nothing' : `"${sub}"`}`)
}

function positiveNumber (flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!(Number.isFinite(n) && n > 0)) throw new UsageError(`--${flag} takes a positive number, got "${value}"`)
  return n
}

function daysLeft (notAfter: Date): string {
  const days = (notAfter.getTime() - Date.now()) / 86_400_000
  return days <= 0 ? 'expired' : days.toFixed(days < 1 ? 2 : 1)
}

async function certsCommand (args: string[]): Promise<void> {
  const [sub, ...rest] = args
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      dir: { type: 'string' },
      'trust-domain': { type: 'string' },
      dc: { type: 'string' },
      days: { type: 'string' },
      force: { type: 'boolean' },
      service: { type: 'string' },
      hours: { type: 'string' }
    }
  })
  if (sub !== 'init' && sub !== 'issue' && sub !== 'show') throw new UsageError(`certs takes init, issue or show, got ${sub === undefined ? 'nothing' : `"${sub}"`}`)
  if (positionals.length !== 0) throw new UsageError(`certs ${sub} takes no positional arguments, got "${positionals[0]}"`)
  if (values.dir === undefined || values.dir === '') throw new UsageError(`certs ${sub} needs --dir DIR`)
  const allowed: Record<typeof sub, readonly string[]> = {
    init: ['dir', 'trust-domain', 'dc', 'days', 'force'],
    issue: ['dir', 'service', 'dc', 'hours'],
    show: ['dir']
  }
  for (const [k, v] of Object.entries(values)) {
    if (v !== undefined && !allowed[sub].includes(k)) throw new UsageError(`certs ${sub} does not take --${k}`)
  }
  const dir = values.dir
  const ca = await lazy.localCa()
  try {
    if (sub === 'init') {
      const days = positiveNumber('days', values.days)
      const made = await ca.createLocalCa(dir, {
        ...(values['trust-domain'] !== undefined ? { trustDomain: values['trust-domain'] } : {}),
        ...(values.dc !== undefined ? { datacenter: values.dc } : {}),
        ...(days !== undefined ? { validityDays: days } : {}),
        force: values.force === true
      })
      process.stdout.write(`wrote ${made.certFile} (CA for spiffe://${made.trustDomain}, default datacenter ${made.datacenter}, serial ${made.serial}, expires ${made.notAfter.toISOString()})\n`)
      process.stdout.write(`wrote ${made.keyFile} (mode 0600)\n`)
      if (made.previousRootFile !== undefined) {
        process.stdout.write(`kept the previous CA certificate as ${made.previousRootFile}: it stays trusted until you remove it, after reissuing every leaf\n`)
      }
      return
    }
    if (sub === 'issue') {
      if (values.service === undefined) throw new UsageError('certs issue needs --service NAME')
      const hours = positiveNumber('hours', values.hours)
      const leaf = await ca.issueLeaf(dir, values.service, {
        ...(values.dc !== undefined ? { datacenter: values.dc } : {}),
        ...(hours !== undefined ? { validityHours: hours } : {})
      })
      process.stdout.write(`wrote ${leaf.certFile} (${leaf.spiffeId}, serial ${leaf.serial}, expires ${leaf.notAfter.toISOString()})\n`)
      process.stdout.write(`wrote ${leaf.keyFile} (mode 0600)\n`)
      return
    }
    let listed
    try {
      listed = await ca.listCertificates(dir)
    } catch (err) {
      fail(`cannot read ${dir}: ${(err as Error).message}`, 1)
    }
    if (listed.length === 0) {
      process.stdout.write(`no certificates in ${dir}; create a CA with \`fastmesh certs init --dir ${dir}\`\n`)
      return
    }
    const rows = listed.map((c) => [
      c.kind === 'leaf' ? c.service ?? '' : c.kind === 'ca' ? '(ca)' : '(root)',
      c.spiffeId ?? '-',
      c.notAfter?.toISOString() ?? '-',
      c.notAfter !== undefined ? daysLeft(c.notAfter) : '-',
      c.problem ?? ''
    ])
    const header = ['SERVICE', 'SPIFFE ID', 'NOT AFTER', 'DAYS LEFT', 'PROBLEM']
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
    for (const r of [header, ...rows]) process.stdout.write(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd() + '\n')
  } catch (err) {
    if ((err as { code?: string }).code === 'FASTMESH_ERR_IDENTITY_BAD_NAME') throw new UsageError((err as Error).message)
    throw err
  }
}

/** The demo config ships in the package: config/demo.yaml beside dist/. */
function demoConfigPath (): string {
  const here = dirname(fileURLToPath(import.meta.url))
  return resolve(here, '../../../config/demo.yaml')
}

async function demo (args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } } })
  const file = values.config ?? demoConfigPath()
  const doc = parseConfigText(await readFile(file, 'utf8'), file) as {
    discovery?: { embedded?: { services?: Record<string, { endpoints?: Array<{ id?: string, port: number }> }> } }
  }
  // FASTMESH_DEMO_BASE_PORT moves every sample instance to consecutive ports from there.
  let nextPort = process.env.FASTMESH_DEMO_BASE_PORT !== undefined ? Number(process.env.FASTMESH_DEMO_BASE_PORT) : undefined
  if (nextPort !== undefined && !(Number.isInteger(nextPort) && nextPort > 0 && nextPort < 65000)) throw new UsageError('FASTMESH_DEMO_BASE_PORT must be a port number')
  const samples: SampleService[] = []
  const { startSampleService } = await lazy.demo()
  const { Gateway } = await lazy.gateway()
  const { createLogger } = await lazy.logger()
  for (const [name, svc] of Object.entries(doc.discovery?.embedded?.services ?? {})) {
    for (const ep of svc.endpoints ?? []) {
      if (nextPort !== undefined) ep.port = nextPort++
      samples.push(await startSampleService(name, ep.id ?? `${name}-${ep.port}`, ep.port))
    }
  }
  let loaded
  try {
    loaded = await compileConfig(doc, file)
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, 2)
    throw err
  }
  const log = createLogger({ level: loaded.config.telemetry.logging.level })
  const { FileConfigProvider } = await lazy.fileProvider()
  const gateway = new Gateway({ loaded, log, provider: new FileConfigProvider(file, { log, watch: values.config !== undefined }), handleSignals: true })
  await gateway.start()
  const edge = `http://127.0.0.1:${gateway.httpAddress.port}`
  // With a token, the hints name the variable, never the secret itself.
  const tokenHint = process.env.FASTMESH_ADMIN_TOKEN !== undefined && process.env.FASTMESH_ADMIN_TOKEN !== '' ? '$FASTMESH_ADMIN_TOKEN' : '<listeners.admin.token>'
  const admin = `${loaded.config.listeners.admin.token !== undefined ? `-H "Authorization: Bearer ${tokenHint}" ` : ''}http://127.0.0.1:${gateway.adminAddress.port}`
  const orders = samples.find((s) => s.name === 'orders')
  process.stderr.write(`
fastmesh demo mesh is up — ${samples.length} sample instances behind the edge gateway.

  curl ${edge}/catalog/items           catalog (prefix stripped), round robin over 2 instances
  curl ${edge}/orders/42               orders
  curl -X POST -d '{}' ${edge}/orders  orders-create route (POST only)
  curl ${edge}/users/7                 users, rewritten to /v1/users/7
  curl -H 'x-beta: 1' ${edge}/users    header-matched route with a response header
  curl ${edge}/nothing                 404 with a FASTMESH_ERR_NO_ROUTE body

  curl ${admin}/routes                 routes in match order
  curl ${admin}/services               endpoints with health
${orders !== undefined ? `  curl -X POST http://127.0.0.1:${orders.port}/_demo/fail     take ${orders.instance} out of rotation (/_demo/recover brings it back)\n` : ''}
Stop with Ctrl-C.
`)
  const stopSamples = async (): Promise<void> => { await Promise.all(samples.map(async (s) => { await s.close() })) }
  process.once('exit', () => { for (const s of samples) s.server.close() })
  process.once('SIGTERM', () => { void stopSamples() })
  process.once('SIGINT', () => { void stopSamples() })
}

/** One sample service as its own process: what each docker-compose host runs beside its node gateway. */
async function sampleService (args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { name: { type: 'string' }, instance: { type: 'string' }, port: { type: 'string' }, address: { type: 'string' }, calls: { type: 'string' }, via: { type: 'string' } }
  })
  if (!isServiceName(values.name)) throw new UsageError(`--name is required: ${SERVICE_NAME_RULE}`)
  const port = Number(values.port)
  if (values.port === undefined || !/^[0-9]+$/.test(values.port) || port < 1 || port > 65535) throw new UsageError(`--port must be a port number 1-65535, got ${values.port ?? 'nothing'}`)
  const address = values.address ?? '127.0.0.1'
  const instance = values.instance ?? `${values.name}-${port}`
  const calls = sampleCalls(values.calls, values.via, process.env.HTTP_PROXY ?? process.env.http_proxy)
  const { startSampleService } = await lazy.demo()
  let sample: SampleService
  try {
    sample = await startSampleService(values.name, instance, port, address, calls)
  } catch (err) {
    fail(`${(err as { code?: string }).code ?? 'error'}: sample service ${values.name} cannot listen on ${address}:${port}: ${(err as Error).message}`, 1)
  }
  const through = calls === undefined ? '' : `, calling ${calls.services.join(', ')} through ${'proxy' in calls.through ? `the proxy ${calls.through.proxy}` : `${calls.through.gateway} (Host header)`}`
  process.stdout.write(`sample service ${sample.name} (${sample.instance}) listening on ${address}:${sample.port}${through}\n`)
  // Closed on SIGTERM (docker stop) and SIGINT, so the process ends by itself with code 0.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => { void sample.close() })
}

/** `--calls a,b` through `--via URL` (Host header), or else through the HTTP_PROXY the environment gives. */
function sampleCalls (list: string | undefined, via: string | undefined, proxy: string | undefined): SampleCalls | undefined {
  if (list === undefined) {
    if (via !== undefined) throw new UsageError('--via needs --calls')
    return undefined
  }
  const services = list.split(',').map((x) => x.trim())
  for (const s of services) if (!isServiceName(s)) throw new UsageError(`--calls takes service names separated by commas: "${s}": ${SERVICE_NAME_RULE}`)
  const gateway = via ?? proxy
  if (gateway === undefined) throw new UsageError('--calls needs --via URL (the node gateway\'s outbound listener) or HTTP_PROXY in the environment')
  let url: URL
  try {
    url = new URL(gateway)
  } catch {
    throw new UsageError(`${via !== undefined ? '--via' : 'HTTP_PROXY'} must be an http:// URL, got "${gateway}"`)
  }
  if (url.protocol !== 'http:') throw new UsageError(`${via !== undefined ? '--via' : 'HTTP_PROXY'} must be an http:// URL, got "${gateway}"`)
  return { services, through: via !== undefined ? { gateway } : { proxy: gateway } }
}

async function main (argv: string[]): Promise<void> {
  const [command, ...rest] = argv
  switch (command) {
    case 'start': return await start(rest)
    case 'validate': return await validate(rest)
    case 'demo': return await demo(rest)
    case 'sample-service': return await sampleService(rest)
    case 'register': return await register(rest)
    case 'deregister': return await deregister(rest)
    case 'config': return await configCommand(rest)
    case 'certs': return await certsCommand(rest)
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n')
      return
    default:
      throw new UsageError(`unknown command "${command}"`)
  }
}

// A reader that stops early (`fastmesh certs issue ... | head -1`) closes the pipe: that is
// not a failure of the command, so exit quietly as tools killed by SIGPIPE do.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0)
  fail(`cannot write to stdout: ${err.message}`, 1)
})

main(process.argv.slice(2)).catch((err: unknown) => {
  const code = (err as { code?: string }).code
  if (err instanceof UsageError || code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL' || code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    fail(`FASTMESH_ERR_CLI_USAGE: ${(err as Error).message}\n\n${USAGE}`, 2)
  }
  fail(`${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}`, 1)
})

