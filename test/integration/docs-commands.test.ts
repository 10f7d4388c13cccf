// Every shell command of README.md and docs/tutorial.md, run as a reader runs them: block by
// block in one terminal session from the project root, long-running ones (`npm start`,
// `npm run mesh`) in the background until they say they are ready, each block's output
// checked against the `text` block the document shows after it (test/helpers/doc-commands.ts).
// So the docs cannot rot: a changed port, flag, route or output fails here.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { PROJECT_ROOT } from '../helpers/consul.js'
import { DocSession, outputMatches, shellBlocks, type DocBlock } from '../helpers/doc-commands.js'

const BLOCK_TIMEOUT_MS = 120_000
const READY_TIMEOUT_MS = 180_000
// How long a block marked `eventually` may take to match (a pushed config, a passing health
// check, an intention: each applies within a few seconds).
const SETTLE_MS = 30_000

async function runDocument (file: string): Promise<{ ran: number, skipped: Array<{ line: number, reason: string }> }> {
  const blocks = shellBlocks(readFileSync(path.join(PROJECT_ROOT, file), 'utf8'))
  assert.ok(blocks.length > 0, `${file} has shell blocks`)
  // The environment of a fresh terminal: nothing of the test runner's own.
  const env = { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C.UTF-8', TERM: 'dumb' }
  const session = new DocSession(PROJECT_ROOT, env)
  const backgrounds: Array<{ block: DocBlock, stop: () => Promise<string> }> = []
  const skipped: Array<{ line: number, reason: string }> = []
  let ran = 0
  try {
    for (const block of blocks) {
      const where = `${file}:${block.line}`
      if (block.directive?.kind === 'skip') {
        skipped.push({ line: block.line, reason: block.directive.reason })
        continue
      }
      ran++
      if (block.directive?.kind === 'background') {
        const started = await session.background(block.script, { text: block.directive.until, url: block.directive.untilUrl }, READY_TIMEOUT_MS)
          .catch((err: Error) => { throw new Error(`${where}: ${block.script}\n${err.message}`) })
        backgrounds.push({ block, stop: started.stop })
        continue
      }
      const deadline = Date.now() + SETTLE_MS
      for (let attempt = 1; ; attempt++) {
        const r = await session.run(block.script, BLOCK_TIMEOUT_MS)
        const matched = r.code === 0 && (block.expected === undefined || outputMatches(block.expected, r.stdout))
        if (matched) break
        // Only a block marked `eventually` (it changes nothing) runs again.
        if (block.directive?.kind !== 'eventually' || Date.now() > deadline) {
          assert.fail(`${where}: after ${attempt} run(s), exit code ${r.code}\n--- block ---\n${block.script}\n` +
            (block.expected !== undefined ? `--- expected ---\n${block.expected.join('\n')}\n` : '') +
            `--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`)
        }
        await sleep(1_000)
      }
    }
    // Ctrl-C on each long-running command, the last started first: each must end with all its processes.
    for (const bg of backgrounds.reverse()) {
      await bg.stop().catch((err: Error) => { throw new Error(`${file}:${bg.block.line}: ${err.message}`) })
    }
  } finally {
    await session.close()
  }
  return { ran, skipped }
}

describe('the commands in the docs', { timeout: 600_000 }, () => {
  it('README.md: the demo starts, the local mesh comes up, and Ctrl-C stops each with every process it started', async () => {
    const { ran, skipped } = await runDocument('README.md')
    assert.ok(ran >= 2, `ran ${ran} blocks`)
    // What is not run, and why, is said in the README itself (a doc-test comment).
    for (const s of skipped) assert.ok(s.reason.length > 10, `README.md:${s.line} skipped with a reason`)
  })

  it('docs/tutorial.md, every step against `npm run mesh`', async () => {
    const scratch = path.join(PROJECT_ROOT, 'tutorial')
    const existed = existsSync(scratch)
    try {
      const { ran, skipped } = await runDocument('docs/tutorial.md')
      assert.deepEqual(skipped, [], 'every tutorial command runs')
      assert.ok(ran >= 15, `ran ${ran} blocks`)
    } finally {
      // The tutorial's scratch folder (git-ignored), unless the developer had one already.
      if (!existed) rmSync(scratch, { recursive: true, force: true })
    }
  })
})
