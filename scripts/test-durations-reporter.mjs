// A node --test reporter that prints nothing and records how long each test file's tests took
// (the sum of its top-level tests) in the JSON file named by FASTMESH_TEST_DURATIONS, merged
// with what an earlier run recorded. scripts/run-tests.mjs starts the longest files first.
import { readFileSync, writeFileSync } from 'node:fs'

export default async function * durations (source) {
  const file = process.env.FASTMESH_TEST_DURATIONS
  const seconds = new Map()
  for await (const event of source) {
    if ((event.type === 'test:pass' || event.type === 'test:fail') && event.data.nesting === 0 && typeof event.data.file === 'string') {
      seconds.set(event.data.file, (seconds.get(event.data.file) ?? 0) + (event.data.details?.duration_ms ?? 0) / 1000)
    }
  }
  if (file === undefined || seconds.size === 0) return
  try {
    record(file, seconds)
  } catch (err) {
    // Only the order of the next run depends on it: say so, never fail the run.
    yield `could not record test durations in ${file}: ${err.message}\n`
  }
}

function record (file, seconds) {
  let known = {}
  try {
    known = JSON.parse(readFileSync(file, 'utf8'))
  } catch {
    // none yet, or unreadable: start again
  }
  for (const [path, s] of seconds) known[path] = Math.round(s * 10) / 10
  writeFileSync(file, JSON.stringify(known, null, 1) + '\n')
}
