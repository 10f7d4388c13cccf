// Runs every *.test.js under dist/test with node's test runner (Node 20's --test takes no
// globs, and a directory argument would also run helpers and fixtures as test files).
//
// Two passes. Most files run several at a time (each is its own process, binds port 0 or free
// ports, and asserts behaviour, not speed), the longest first by the durations the last run
// recorded (dist/test-durations.json), so that no long file starts last. The files in SERIAL
// run afterwards, one at a time, with the machine to themselves. Each pass prints node's own
// summary (ℹ tests / ℹ pass / ℹ fail); the last line sums both: `N passed, N failed`. The
// exit code is non-zero when either pass failed.
//
//   node scripts/run-tests.mjs [FILE|DIR...] [--node-test-flag...]
//   FASTMESH_TEST_CONCURRENCY=1 node scripts/run-tests.mjs   # everything one file at a time
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawn } from 'node:child_process'

/**
 * Files (under dist/test) that run alone, after the rest, and why. Add to this list only for a
 * reason of this kind; a test that merely got slower under load should assert behaviour instead.
 */
const SERIAL = new Map([
  // A dozen processes in network namespaces on a fixed subnet (10.213.77.0/24), fixed ports
  // inside them, and the heaviest start-up of the suite: it gets the machine to itself.
  ['e2e/mesh-netns.test.js', 'network namespaces on a fixed subnet, a dozen processes'],
  // Asserts that a 300 ms timer fires within 250 ms of its limit (the bug it guards was 700 ms
  // late): a timing test on purpose, kept away from CPU-heavy neighbours.
  ['integration/timeouts.test.js', 'asserts timer lateness under 250 ms']
])

const DEFAULT_CONCURRENCY = 4
const SCRIPTS = dirname(fileURLToPath(import.meta.url))
const TEST_ROOT = resolve(SCRIPTS, '..', 'dist', 'test')
const DURATIONS = resolve(SCRIPTS, '..', 'dist', 'test-durations.json')
const DURATIONS_REPORTER = join(SCRIPTS, 'test-durations-reporter.mjs')

function find (dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return find(path)
    return name.endsWith('.test.js') ? [path] : []
  })
}

const roots = process.argv.slice(2).filter((a) => !a.startsWith('--'))
const flags = process.argv.slice(2).filter((a) => a.startsWith('--'))
const files = (roots.length > 0 ? roots : [TEST_ROOT]).flatMap((r) => statSync(r).isDirectory() ? find(r) : [r]).sort()
if (files.length === 0) {
  console.error(`no *.test.js files under ${roots.join(', ') || 'dist/test'}; run the build first`)
  process.exit(1)
}
const concurrency = Number(process.env.FASTMESH_TEST_CONCURRENCY ?? DEFAULT_CONCURRENCY)
if (!Number.isInteger(concurrency) || concurrency < 1) {
  console.error(`FASTMESH_TEST_CONCURRENCY must be a whole number of files, at least 1 (got ${process.env.FASTMESH_TEST_CONCURRENCY})`)
  process.exit(1)
}
const isSerial = (file) => SERIAL.has(relative(TEST_ROOT, resolve(file)).split('\\').join('/'))

/** Seconds each file took last time; a file not seen yet counts as long (it may be). */
let known = {}
try {
  known = JSON.parse(readFileSync(DURATIONS, 'utf8'))
} catch {
  // no earlier run: file order
}
const duration = (file) => known[resolve(file)] ?? Infinity
const longestFirst = (list) => [...list].sort((a, b) => duration(b) - duration(a) || (a < b ? -1 : 1))

const passes = [
  { name: `${concurrency} files at a time`, concurrency, files: longestFirst(files.filter((f) => !isSerial(f))) },
  { name: 'one file at a time (scripts/run-tests.mjs SERIAL)', concurrency: 1, files: files.filter(isSerial) }
].filter((p) => p.files.length > 0)

/** The current child, so an interrupt reaches it (and its own children, via its clean-up). */
let child
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (child !== undefined && child.exitCode === null) child.kill(signal)
    process.exitCode = 130
  })
}

/** Longer than any test here takes on a loaded 2-core machine (the slowest, the exchange fuzz, takes about 20 s). */
const TEST_TIMEOUT_MS = 180_000

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g
/** node's summary lines: `ℹ pass 12` from the spec reporter, `# pass 12` from tap (a --test-reporter flag). */
const SUMMARY = /^(?:ℹ|#) (tests|pass|fail|cancelled|skipped|todo) (\d+)$/

/** Runs one `node --test` pass, its output passed through; resolves with its exit status and node's summary counts. */
async function run (pass) {
  const reporters = ['--test-reporter=spec', '--test-reporter-destination=stdout', `--test-reporter=${DURATIONS_REPORTER}`, '--test-reporter-destination=stderr']
  // A test that hangs (a helper awaiting an event that never comes) fails by name after
  // TEST_TIMEOUT_MS instead of stalling the whole run until CI gives up.
  const args = ['--test', ...reporters, `--test-concurrency=${pass.concurrency}`, `--test-timeout=${TEST_TIMEOUT_MS}`, ...flags, ...pass.files]
  const env = { ...process.env, FASTMESH_TEST_DURATIONS: DURATIONS }
  // Output is piped (to read the summary), so keep spec's colours when our own output is a terminal.
  if (process.stdout.isTTY && process.env.NO_COLOR === undefined) env.FORCE_COLOR = '1'
  child = spawn(process.execPath, args, { stdio: ['inherit', 'pipe', 'inherit'], env })
  const counts = {}
  let pending = ''
  child.stdout.on('data', (chunk) => {
    process.stdout.write(chunk)
    const lines = (pending + chunk.toString('utf8')).split('\n')
    pending = lines.pop()
    for (const line of lines) {
      const m = SUMMARY.exec(line.replace(ANSI, '').trim())
      if (m !== null) counts[m[1]] = Number(m[2])
    }
  })
  const status = await new Promise((resolve) => {
    child.on('close', (code, signal) => { resolve(signal !== null ? 1 : code) })
  })
  return { status, counts }
}

const started = Date.now()
let passed = 0
let failed = 0
let skipped = 0
let ok = true
const timings = []
for (const pass of passes) {
  const t0 = Date.now()
  console.log(`\n▶ ${pass.files.length} test files, ${pass.name}\n`)
  const { status, counts } = await run(pass)
  timings.push(`${pass.name}: ${pass.files.length} files in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  if (process.exitCode === 130) {
    console.log('\ninterrupted')
    process.exit(130)
  }
  if (counts.pass === undefined || counts.fail === undefined) {
    console.error(`no summary from node --test (exit status ${status}): counted as a failure`)
    failed++
    ok = false
  }
  passed += counts.pass ?? 0
  failed += (counts.fail ?? 0) + (counts.cancelled ?? 0)
  skipped += (counts.skipped ?? 0) + (counts.todo ?? 0)
  if (status !== 0) ok = false
}
console.log(`\n${timings.join('; ')}; ${((Date.now() - started) / 1000).toFixed(1)} s in all`)
console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`)
if (!ok && failed === 0) console.log('(a test process failed outside any test: see above)')
process.exit(ok ? 0 : 1)
