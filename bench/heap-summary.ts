// A V8 heap snapshot (.heapsnapshot) summed by what its objects are: count and self size per
// constructor (closures by function name, arrays, strings, code, ...), and for each the
// retainers their bytes hang off (the retaining object's kind and the edge's name). Two
// snapshots compared: what grew, per unit of what differs between them (e.g. per service).
//   node dist/bench/heap-summary.js FILE [BASE_FILE] [--per N] [--top N]
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

interface RawSnapshot {
  snapshot: { meta: { node_fields: string[], node_types: [string[], ...unknown[]], edge_fields: string[], edge_types: [string[], ...unknown[]] } }
  nodes: number[]
  edges: number[]
  strings: string[]
}

/** Self bytes and count of one kind of object, with the bytes by retainer (`kind.edge`). */
export interface KindTotal {
  count: number
  bytes: number
  retainers: Map<string, number>
}

export interface HeapSummary {
  readonly totalBytes: number
  readonly nodes: number
  readonly byKind: Map<string, KindTotal>
}

/** The kind an object is counted under: its constructor, `(closure) fn`, `(array)`, `(string)`, ... */
function kindOf (type: string, name: string): string {
  switch (type) {
    case 'object': return name
    case 'closure': return `(closure) ${name === '' ? '<anonymous>' : name}`
    case 'native': return `(native) ${name.split(' ')[0] ?? name}`
    case 'hidden': return `(hidden) ${name.split(' ')[0] ?? name}`
    case 'code': return '(code)'
    case 'string': case 'concatenated string': case 'sliced string': return '(string)'
    case 'number': return '(number)'
    case 'array': return `(array) ${name === '' ? '' : name.split(' ')[0]}`.trimEnd()
    default: return `(${type})`
  }
}

export function summarizeHeapSnapshot (file: string): HeapSummary {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as RawSnapshot
  const meta = raw.snapshot.meta
  const nf = meta.node_fields
  const nodeFields = nf.length
  const iType = nf.indexOf('type')
  const iName = nf.indexOf('name')
  const iSize = nf.indexOf('self_size')
  const iEdges = nf.indexOf('edge_count')
  const ef = meta.edge_fields
  const edgeFields = ef.length
  const iEdgeType = ef.indexOf('type')
  const iEdgeName = ef.indexOf('name_or_index')
  const iTo = ef.indexOf('to_node')
  const nodeTypes = meta.node_types[0]
  const edgeTypes = meta.edge_types[0]
  const { nodes, edges, strings } = raw
  const count = nodes.length / nodeFields
  const kinds: string[] = new Array<string>(count)
  for (let n = 0; n < count; n++) {
    const o = n * nodeFields
    kinds[n] = kindOf(nodeTypes[nodes[o + iType]!]!, strings[nodes[o + iName]!]!)
  }
  // The first strong retainer of each node (weak edges and the snapshot's synthetic roots skipped).
  const retainer = new Int32Array(count).fill(-1)
  const retainerEdge: string[] = new Array<string>(count)
  let e = 0
  for (let n = 0; n < count; n++) {
    const edgeCount = nodes[n * nodeFields + iEdges]!
    for (let k = 0; k < edgeCount; k++, e += edgeFields) {
      const type = edgeTypes[edges[e + iEdgeType]!]
      if (type === 'weak' || type === 'shortcut') continue
      const to = edges[e + iTo]! / nodeFields
      if (retainer[to] !== -1) continue
      retainer[to] = n
      retainerEdge[to] = type === 'element' || type === 'hidden' ? `[${type}]` : String(strings[edges[e + iEdgeName]!])
    }
  }
  const byKind = new Map<string, KindTotal>()
  let totalBytes = 0
  for (let n = 0; n < count; n++) {
    const size = nodes[n * nodeFields + iSize]!
    totalBytes += size
    const kind = kinds[n]!
    let t = byKind.get(kind)
    if (t === undefined) byKind.set(kind, t = { count: 0, bytes: 0, retainers: new Map() })
    t.count++
    t.bytes += size
    const r = retainer[n]!
    const via = r === -1 ? '(none)' : `${kinds[r]}.${retainerEdge[n]}`
    t.retainers.set(via, (t.retainers.get(via) ?? 0) + size)
  }
  return { totalBytes, nodes: count, byKind }
}

export interface KindGrowth {
  readonly kind: string
  readonly count: number
  readonly bytes: number
  /** The retainers holding most of the growth, by bytes. */
  readonly retainers: ReadonlyArray<{ readonly via: string, readonly bytes: number }>
}

/** What `big` holds beyond `base`, divided by `per`, largest first. */
export function heapGrowth (big: HeapSummary, base: HeapSummary | undefined, per = 1, top = 25): KindGrowth[] {
  const out: KindGrowth[] = []
  for (const [kind, t] of big.byKind) {
    const b = base?.byKind.get(kind)
    const bytes = (t.bytes - (b?.bytes ?? 0)) / per
    const countDiff = (t.count - (b?.count ?? 0)) / per
    const retainers = [...t.retainers]
      .map(([via, v]) => ({ via, bytes: (v - (b?.retainers.get(via) ?? 0)) / per }))
      .filter((r) => r.bytes > 0)
      .sort((x, y) => y.bytes - x.bytes)
      .slice(0, 3)
    out.push({ kind, count: countDiff, bytes, retainers })
  }
  return out.sort((x, y) => y.bytes - x.bytes).slice(0, top)
}

export function formatGrowth (rows: readonly KindGrowth[], unit: string): string {
  const lines = [`${'bytes/' + unit}`.padStart(12) + `  ${'count/' + unit}`.padStart(12) + '  kind  (retained via: bytes)']
  for (const r of rows) {
    const via = r.retainers.map((v) => `${v.via}: ${Math.round(v.bytes)}`).join(', ')
    lines.push(`${Math.round(r.bytes)}`.padStart(12) + `  ${r.count.toFixed(2)}`.padStart(12) + `  ${r.kind}  (${via})`)
  }
  return lines.join('\n')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { per: { type: 'string', default: '1' }, top: { type: 'string', default: '30' }, help: { type: 'boolean', short: 'h' } } })
  if (values.help === true || positionals.length === 0) {
    process.stdout.write('Usage: node dist/bench/heap-summary.js FILE [BASE_FILE] [--per N] [--top N]\n\nSelf bytes and counts of a heap snapshot by constructor, with the retainers they hang\noff; with BASE_FILE, what FILE holds beyond it, divided by N (e.g. the services added).\n')
    process.exit(positionals.length === 0 && values.help !== true ? 1 : 0)
  }
  const big = summarizeHeapSnapshot(positionals[0]!)
  const base = positionals[1] !== undefined ? summarizeHeapSnapshot(positionals[1]) : undefined
  const per = Number(values.per)
  process.stdout.write(`heap ${(big.totalBytes / 1048576).toFixed(1)} MiB${base !== undefined ? ` (base ${(base.totalBytes / 1048576).toFixed(1)} MiB; ${((big.totalBytes - base.totalBytes) / per).toFixed(0)} bytes per unit)` : ''}\n`)
  process.stdout.write(formatGrowth(heapGrowth(big, base, per, Number(values.top)), 'unit') + '\n')
}
