// Runs every *.test.js under dist/test with node's test runner (Node 20's --test takes no
// globs, and a directory argument would also run helpers and fixtures as test files).
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'

function find (dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return find(path)
    return name.endsWith('.test.js') ? [path] : []
  })
}

const roots = process.argv.slice(2).filter((a) => !a.startsWith('--'))
const flags = process.argv.slice(2).filter((a) => a.startsWith('--'))
const files = (roots.length > 0 ? roots : ['dist/test']).flatMap((r) => statSync(r).isDirectory() ? find(r) : [r]).sort()
if (files.length === 0) {
  console.error(`no *.test.js files under ${roots.join(', ') || 'dist/test'}; run the build first`)
  process.exit(1)
}
const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', '--test-concurrency=1', ...flags, ...files], { stdio: 'inherit' })
process.exit(result.status ?? 1)
