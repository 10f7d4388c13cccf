// Runs the shell blocks of a Markdown document as a reader would: in order, in one terminal
// session (exports and `cd` carry over from block to block), from the project root.
//
// What a block is, and what the document says about it:
// - A fenced block tagged `sh` (or `bash`, `shell`) is run with `bash -e -o pipefail`: it must
//   exit 0. Processes it leaves in the background (`cmd &`) run until the document ends.
// - A fenced `text` block right after it (only blank lines between) is its expected output:
//   the block's stdout, line by line (blank lines dropped, each line trimmed), must be exactly
//   those lines, where `...` in an expected line stands for any text.
// - An HTML comment right before a block directs it (invisible in the rendered page):
//     <!-- doc-test: background until="TEXT" -->      long-running (`npm run mesh`): run it in the
//     <!-- doc-test: background until-url="URL" -->   background, wait until its output has TEXT
//                                                     or URL answers; stopped with SIGINT (Ctrl-C)
//                                                     when the document ends
//     <!-- doc-test: eventually -->                   run again (for a while) until its output
//                                                     matches: the mesh is eventually consistent (a
//                                                     pushed config, a passing check, an intention
//                                                     take a moment); only for blocks that change
//                                                     nothing, since they may run several times
//     <!-- doc-test: skip "REASON" -->                not run, for the reason given
import { spawn } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { onProcessExit } from './exit-hooks.js'

export interface DocBlock {
  /** 1-based line of the opening fence, for messages. */
  readonly line: number
  readonly script: string
  readonly expected?: readonly string[]
  readonly directive?: { readonly kind: 'background', readonly until?: string, readonly untilUrl?: string } | { readonly kind: 'skip', readonly reason: string } | { readonly kind: 'eventually' }
}

const SHELL_TAGS = new Set(['sh', 'bash', 'shell'])

/** The shell blocks of a Markdown text, with their expected output and directives. */
export function shellBlocks (markdown: string): DocBlock[] {
  const lines = markdown.split('\n')
  const fences: Array<{ line: number, endLine: number, tag: string, body: string[], before: string[] }> = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)\s*$/.exec(lines[i]!)
    if (open === null) continue
    const body: string[] = []
    let j = i + 1
    while (j < lines.length && !/^```\s*$/.test(lines[j]!)) body.push(lines[j++]!)
    if (j === lines.length) throw new Error(`line ${i + 1}: a fenced block that never ends`)
    // The non-blank lines between the previous fence (or the top) and this one.
    const start = fences.length > 0 ? fences[fences.length - 1]!.endLine + 1 : 0
    fences.push({ line: i + 1, endLine: j, tag: open[1]!, body, before: lines.slice(start, i) })
    i = j
  }
  const blocks: DocBlock[] = []
  for (let k = 0; k < fences.length; k++) {
    const f = fences[k]!
    if (!SHELL_TAGS.has(f.tag)) continue
    const next = fences[k + 1]
    const expected = next !== undefined && next.tag === 'text' && next.before.every((l) => l.trim() === '')
      ? next.body.map((l) => l.trim()).filter((l) => l !== '')
      : undefined
    const comment = [...f.before].reverse().find((l) => l.trim() !== '')
    const directive = comment !== undefined ? parseDirective(comment, f.line) : undefined
    blocks.push({ line: f.line, script: f.body.join('\n'), ...(expected !== undefined ? { expected } : {}), ...(directive !== undefined ? { directive } : {}) })
  }
  return blocks
}

function parseDirective (comment: string, line: number): DocBlock['directive'] {
  const m = /^<!--\s*doc-test:\s*(.*?)\s*-->$/.exec(comment.trim())
  if (m === null) return undefined
  const text = m[1]!
  if (text === 'eventually') return { kind: 'eventually' }
  const skip = /^skip\s+"([^"]+)"$/.exec(text)
  if (skip !== null) return { kind: 'skip', reason: skip[1]! }
  const bg = /^background\s+(until|until-url)="([^"]+)"$/.exec(text)
  if (bg !== null) return bg[1] === 'until' ? { kind: 'background', until: bg[2]! } : { kind: 'background', untilUrl: bg[2]! }
  throw new Error(`line ${line}: an unknown doc-test directive: ${comment.trim()}`)
}

/** Expected lines against output lines: same count, each equal, `...` matching any text. */
export function outputMatches (expected: readonly string[], stdout: string): boolean {
  const got = stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '')
  if (got.length !== expected.length) return false
  return expected.every((e, i) => new RegExp('^' + e.split('...').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$').test(got[i]!))
}

export interface BlockResult { readonly code: number | null, readonly stdout: string, readonly stderr: string }

/**
 * One reader's terminal: runs blocks with the environment and working directory the previous
 * blocks left, and stops every process they started (each block is its own process group).
 */
export class DocSession {
  private readonly dir = mkdtempSync(path.join(os.tmpdir(), 'fastmesh-doc-'))
  private readonly state = path.join(this.dir, 'state.sh')
  private readonly groups: Array<{ pgid: number, background: boolean }> = []
  private count = 0

  constructor (cwd: string, private readonly env: NodeJS.ProcessEnv) {
    writeFileSync(this.state, `cd ${quote(cwd)}\n`)
    onProcessExit(() => { for (const g of this.groups) signalGroup(g.pgid, 'SIGKILL') })
  }

  /** Runs a block to its end (its background processes stay). */
  async run (script: string, timeoutMs: number): Promise<BlockResult> {
    const n = ++this.count
    const file = path.join(this.dir, `block-${n}.sh`)
    // Carry exports and the directory over to the next block, as one terminal would.
    writeFileSync(file, `source ${quote(this.state)}\ntrap 'export -p > ${quote(this.state)}; printf "cd %q\\n" "$PWD" >> ${quote(this.state)}' EXIT\nset -e -o pipefail\n${script}\n`)
    const out = path.join(this.dir, `block-${n}.out`)
    const err = path.join(this.dir, `block-${n}.err`)
    const [o, e] = [openSync(out, 'w'), openSync(err, 'w')]
    const child = spawn('bash', ['--noprofile', '--norc', file], { detached: true, stdio: ['ignore', o, e], env: this.env })
    closeSync(o)
    closeSync(e)
    this.groups.push({ pgid: child.pid!, background: false })
    const timer = setTimeout(() => { signalGroup(child.pid!, 'SIGKILL') }, timeoutMs)
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => { resolve(c) }))
    clearTimeout(timer)
    return { code, stdout: readFileSync(out, 'utf8'), stderr: readFileSync(err, 'utf8') }
  }

  /** Starts a long-running block and waits until its output has `until`, or `untilUrl` answers. */
  async background (script: string, until: { text?: string, url?: string }, timeoutMs: number): Promise<{ output: () => string, stop: () => Promise<string> }> {
    const n = ++this.count
    const file = path.join(this.dir, `block-${n}.sh`)
    writeFileSync(file, `source ${quote(this.state)}\nset -e -o pipefail\n${script}\n`)
    const out = path.join(this.dir, `block-${n}.out`)
    const fd = openSync(out, 'w')
    const child = spawn('bash', ['--noprofile', '--norc', file], { detached: true, stdio: ['ignore', fd, fd], env: this.env })
    closeSync(fd)
    const pgid = child.pid!
    this.groups.push({ pgid, background: true })
    let exited: number | null | undefined
    child.once('exit', (c) => { exited = c })
    const output = (): string => readFileSync(out, 'utf8')
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (until.text !== undefined && output().includes(until.text)) break
      if (until.url !== undefined && await answers(until.url)) break
      if (exited !== undefined) throw new Error(`exited (code ${exited}) before it was ready:\n${output().slice(-3000)}`)
      if (Date.now() > deadline) throw new Error(`not ready after ${timeoutMs / 1000} s:\n${output().slice(-3000)}`)
      await sleep(250)
    }
    return {
      output,
      // As Ctrl-C in its terminal: SIGINT to its process group; then every process in it must end.
      stop: async () => {
        signalGroup(pgid, 'SIGINT')
        const gone = await groupGone(pgid, 20_000)
        if (!gone) signalGroup(pgid, 'SIGKILL')
        if (!gone) throw new Error(`processes of "${script}" were still running 20 s after SIGINT`)
        return output()
      }
    }
  }

  /** Stops what the blocks left running (their process groups), then removes the session's files. */
  async close (): Promise<void> {
    for (const g of this.groups) signalGroup(g.pgid, 'SIGTERM')
    for (const g of this.groups) if (!await groupGone(g.pgid, 10_000)) signalGroup(g.pgid, 'SIGKILL')
    rmSync(this.dir, { recursive: true, force: true })
  }
}

function quote (s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`
}

function signalGroup (pgid: number, signal: NodeJS.Signals): void {
  try { process.kill(-pgid, signal) } catch { /* the group is gone */ }
}

async function groupGone (pgid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      process.kill(-pgid, 0)
    } catch {
      return true
    }
    if (Date.now() > deadline) return false
    await sleep(100)
  }
}

async function answers (url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) })
    await res.arrayBuffer()
    return true
  } catch {
    return false
  }
}
