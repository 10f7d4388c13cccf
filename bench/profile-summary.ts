// Summarises a V8 .cpuprofile (node --cpu-prof) of a proxy under load: where the CPU goes
// by package, the top functions by self time, and fastmesh's own functions by total time,
// with dist/ positions mapped back to the TypeScript sources through their source maps.
//   node dist/bench/profile-summary.js FILE.cpuprofile [--top 25] [--from 3]
// --from S skips the first S seconds of the profile (process start-up: module loading,
// config validation, schema compilation), leaving the time under load.
import { readFileSync, existsSync } from 'node:fs'
import { SourceMap, type SourceMapPayload } from 'node:module'
import { fileURLToPath } from 'node:url'
import { dirname, relative, resolve } from 'node:path'
import { parseArgs } from 'node:util'

interface CallFrame { functionName: string, url: string, lineNumber: number, columnNumber: number }
interface ProfileNode { id: number, callFrame: CallFrame, children?: number[] }
interface Profile { nodes: ProfileNode[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }

const repoRoot = fileURLToPath(new URL('../../', import.meta.url))
const maps = new Map<string, SourceMap | null>()

function sourceMapFor (file: string): SourceMap | null {
  let m = maps.get(file)
  if (m === undefined) {
    const mapFile = `${file}.map`
    m = existsSync(mapFile) ? new SourceMap(JSON.parse(readFileSync(mapFile, 'utf8')) as SourceMapPayload) : null
    maps.set(file, m)
  }
  return m
}

/** `src/gateway/app.ts:123` for compiled fastmesh code, else a short form of the URL. */
function where (cf: CallFrame): string {
  if (cf.url === '') return ''
  const file = cf.url.startsWith('file://') ? fileURLToPath(cf.url) : cf.url
  const map = file.startsWith('/') ? sourceMapFor(file) : null
  if (map !== null) {
    const e = map.findEntry(cf.lineNumber, cf.columnNumber)
    if ('originalSource' in e && typeof e.originalSource === 'string') {
      const src = e.originalSource.startsWith('file://') ? fileURLToPath(e.originalSource) : resolve(dirname(file), e.originalSource)
      return `${relative(repoRoot, src)}:${e.originalLine + 1}`
    }
  }
  const nm = file.lastIndexOf('node_modules/')
  if (nm !== -1) return `${file.slice(nm + 13)}:${cf.lineNumber + 1}`
  return `${file.startsWith(repoRoot) ? relative(repoRoot, file) : file}:${cf.lineNumber + 1}`
}

function category (cf: CallFrame): string {
  const u = cf.url
  if (u === '') {
    if (cf.functionName === '(garbage collector)') return 'GC'
    if (cf.functionName === '(idle)') return 'idle'
    if (cf.functionName === '(program)') return 'program (native, not attributed)'
    return 'native'
  }
  const nm = u.lastIndexOf('node_modules/')
  if (nm !== -1) {
    const rest = u.slice(nm + 13).split('/')
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!
  }
  if (u.startsWith('node:')) return 'node core'
  if (u.includes('/dist/src/') || u.includes('/dist/plugins/')) return 'fastmesh'
  if (u.includes('/dist/bench/')) return 'bench'
  return 'other'
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, from: { type: 'string', default: '0' } } })
if (positionals.length !== 1) { console.error('usage: node dist/bench/profile-summary.js FILE.cpuprofile [--top N] [--from SECONDS]'); process.exit(2) }
const top = Number(values.top)
const fromUs = Number(values.from) * 1e6
const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile

const byId = new Map<number, ProfileNode>()
const parent = new Map<number, number>()
for (const n of profile.nodes) byId.set(n.id, n)
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

const key = (cf: CallFrame): string => `${cf.functionName || '(anonymous)'} ${where(cf)}`
const self = new Map<string, number>()
const total = new Map<string, number>()
const cats = new Map<string, number>()
const catOf = new Map<string, string>()
let all = 0
let at = 0
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0
  at += dt
  if (at < fromUs) continue
  const leaf = byId.get(profile.samples[i]!)
  if (leaf === undefined) continue
  all += dt
  const k = key(leaf.callFrame)
  self.set(k, (self.get(k) ?? 0) + dt)
  const c = category(leaf.callFrame)
  cats.set(c, (cats.get(c) ?? 0) + dt)
  const seen = new Set<string>()
  // Bounded by the stack depth: parents form a tree rooted at (root).
  for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
    const node = byId.get(id)!
    const nk = key(node.callFrame)
    if (seen.has(nk)) continue
    seen.add(nk)
    total.set(nk, (total.get(nk) ?? 0) + dt)
    catOf.set(nk, category(node.callFrame))
  }
}
const busy = all - (cats.get('idle') ?? 0)
const pct = (v: number, of: number): string => `${((100 * v) / of).toFixed(1).padStart(5)}%`
const rows = (m: Map<string, number>, of: number, n: number, filter: (k: string) => boolean = () => true): string =>
  [...m].filter(([k]) => filter(k)).sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `  ${pct(v, of)}  ${k}`).join('\n')

console.log(`profile: ${positionals[0]} — ${(all / 1e6).toFixed(1)} s sampled${fromUs > 0 ? ` after the first ${values.from} s` : ''}, ${(busy / 1e6).toFixed(1)} s busy (shares below are of busy time)`)
cats.delete('idle')
console.log(`\nby package (self time):\n${rows(cats, busy, 20)}`)
console.log(`\ntop ${top} functions by self time:\n${rows(self, busy, top, (k) => !k.startsWith('(idle)'))}`)
console.log(`\nfastmesh functions by total time (self + callees):\n${rows(total, busy, top, (k) => catOf.get(k) === 'fastmesh')}`)
