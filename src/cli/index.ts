#!/usr/bin/env node
// The fastmesh command line: start | validate | demo. Exit codes: 0 ok, 1 runtime
// failure, 2 bad input (usage or invalid config).
import { parseArgs } from 'node:util'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { dirname, resolve } from 'node:path'
import { ConfigError, loadConfigFile, parseConfigText, checkConfig } from '../config/load.js'

import { createLogger } from '../telemetry/logger.js'
import { Gateway } from '../gateway/gateway.js'
import { startSampleService, type SampleService } from '../demo/sample-service.js'

const USAGE = `fastmesh — a service mesh whose data plane is a Fastify gateway

Usage:
  fastmesh start --config FILE       run a gateway (reloads on file change and SIGHUP)
  fastmesh validate FILE             check a config: prints "ok" or every problem (exit 2)
  fastmesh demo                      run the demo mesh (edge + sample services, no Consul)
  fastmesh --help

Environment: FASTMESH_HTTP_ADDRESS, FASTMESH_HTTP_PORT, FASTMESH_ADMIN_ADDRESS,
FASTMESH_ADMIN_PORT, FASTMESH_LOG_LEVEL override the config file.`

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
    await loadConfigFile(file)
    process.stdout.write('ok\n')
  } catch (err) {
    if (err instanceof ConfigError) {
      const lines = err.problems.map((p) => `${file}: ${p.path}: ${p.message}${p.hint !== undefined ? `\n    hint: ${p.hint}` : ''}`)
      fail(`${err.code}: ${lines.length} problem${lines.length === 1 ? '' : 's'} in ${file}\n${lines.join('\n')}`, 2)
    }
    throw err
  }
}

async function start (args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' }, mode: { type: 'string' } } })
  if (values.config === undefined) throw new UsageError('start needs --config FILE')
  let loaded
  try {
    loaded = await loadConfigFile(values.config)
  } catch (err) {
    if (err instanceof ConfigError) fail(`${err.message}`, 2)
    throw err
  }
  if (values.mode !== undefined && values.mode !== loaded.config.gateway.mode) {
    throw new UsageError(`--mode ${values.mode} differs from gateway.mode "${loaded.config.gateway.mode}" in ${values.config}`)
  }
  const log = createLogger({ level: loaded.config.telemetry.logging.level })
  const gateway = new Gateway({ loaded, log, watch: true, handleSignals: true })
  await gateway.start()
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
  for (const [name, svc] of Object.entries(doc.discovery?.embedded?.services ?? {})) {
    for (const ep of svc.endpoints ?? []) {
      if (nextPort !== undefined) ep.port = nextPort++
      samples.push(await startSampleService(name, ep.id ?? `${name}-${ep.port}`, ep.port))
    }
  }
  let loaded
  try {
    loaded = checkConfig(doc, file)
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, 2)
    throw err
  }
  const log = createLogger({ level: loaded.config.telemetry.logging.level })
  const gateway = new Gateway({ loaded, log, watch: values.config !== undefined, handleSignals: true })
  await gateway.start()
  const edge = `http://127.0.0.1:${gateway.httpAddress.port}`
  const admin = `http://127.0.0.1:${gateway.adminAddress.port}`
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

async function main (argv: string[]): Promise<void> {
  const [command, ...rest] = argv
  switch (command) {
    case 'start': return await start(rest)
    case 'validate': return await validate(rest)
    case 'demo': return await demo(rest)
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

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    fail(`FASTMESH_ERR_CLI_USAGE: ${(err as Error).message}\n\n${USAGE}`, 2)
  }
  fail(`${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}`, 1)
})

