// Route layer, request target: the one normalisation of the path every entry applies before
// routing, authorization and plugins see it (and the upstream gets what they saw).
// Policy and the reasons for it: docs/routing.md, "Path normalisation".

/** What `%2F` and `%5C` (an escaped `/` or `\`) in a path do; see `gateway.escapedSlashes`. */
export type EscapedSlashesAction = 'reject' | 'unescape' | 'keep'

export interface RequestTarget {
  /** The normalised path: starts with `/`, no `//`, no `.` or `..` segment. */
  readonly path: string
  /** Everything from `?` on (byte for byte as sent, without a fragment), or ''. */
  readonly search: string
  /** `path + search`: the request target to route and forward (the given string when nothing changed). */
  readonly target: string
}

/** Why a request target cannot be normalised (answered 400). */
export interface RequestTargetProblem {
  readonly problem: string
}

const HEX = '0123456789ABCDEF'

function hexValue (c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  const l = c | 0x20
  if (l >= 97 && l <= 102) return l - 87
  return -1
}

/** RFC 3986 §2.3: ALPHA DIGIT - . _ ~ — an escape of these means the same as the character. */
function isUnreserved (b: number): boolean {
  return (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || (b >= 48 && b <= 57) || b === 45 || b === 46 || b === 95 || b === 126
}

/**
 * The request target (origin form) as routing, authorization, plugins, logs and the upstream
 * all see it, or a problem (400). Decodes once: escapes of unreserved characters become the
 * characters (`%61` → `a`, `%2e` → `.`), other escapes stay, upper-cased; escaped slashes
 * follow `escapedSlashes`; `\` is `/`; `//`, `.` and `..` are resolved (RFC 3986 §5.2.4, never
 * above `/`); a `#fragment` is dropped; the query is kept as sent.
 */
export function normalizeRequestTarget (url: string, escapedSlashes: EscapedSlashesAction): RequestTarget | RequestTargetProblem {
  // The fragment is the client's own; it ends the request target wherever it starts.
  const hash = url.indexOf('#')
  const end = hash === -1 ? url.length : hash
  let q = url.indexOf('?')
  if (q > end) q = -1
  const pathEnd = q === -1 ? end : q
  // Origin form only (listeners turn absolute form into it): `*` (OPTIONS *) names no path to forward.
  if (url.charCodeAt(0) !== 47 /* / */) return { problem: `request target ${JSON.stringify(url.slice(0, 64))} is not a path (origin form); OPTIONS * is not forwarded` }
  // Fast path, taken by nearly every request: nothing to decode or resolve.
  let plain = true
  for (let i = 0; i < pathEnd; i++) {
    const c = url.charCodeAt(i)
    if (c === 37 /* % */ || c === 92 /* \ */ || c === 59 /* ; */ || c < 0x21 || c > 0x7e ||
        (c === 47 && (url.charCodeAt(i + 1) === 47 || url.charCodeAt(i + 1) === 46 /* . */))) {
      plain = false
      break
    }
  }
  const search = q === -1 ? '' : url.slice(q, end)
  if (plain) {
    if (hash === -1) return { path: q === -1 ? url : url.slice(0, q), search, target: url }
    const path = url.slice(0, pathEnd)
    return { path, search, target: url.slice(0, end) }
  }
  const path = normalizePath(url.slice(0, pathEnd), escapedSlashes)
  if (typeof path !== 'string') return path
  return { path, search, target: path + search }
}

/** The slow path: decode once, check UTF-8, then resolve segments. */
function normalizePath (raw: string, escapedSlashes: EscapedSlashesAction): string | RequestTargetProblem {
  let out = ''
  // UTF-8 check of the escaped bytes (Unicode Table 3-7): how many continuation bytes are
  // still due, and the range the next one must be in (rules out overlong forms like %C0%AE,
  // surrogates and code points above U+10FFFF).
  let due = 0
  let lo = 0x80
  let hi = 0xbf
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i)
    if (c < 0x21 || c > 0x7e) return { problem: `the path has a raw byte 0x${c.toString(16)}; send it percent-encoded` }
    if (c !== 37 /* % */) {
      if (due > 0) return { problem: 'the percent-encoded bytes of the path are not valid UTF-8' }
      out += c === 92 /* \ */ ? '/' : raw[i]
      continue
    }
    const h1 = hexValue(raw.charCodeAt(i + 1))
    const h2 = hexValue(raw.charCodeAt(i + 2))
    if (h1 < 0 || h2 < 0) return { problem: `invalid percent-encoding at ${JSON.stringify(raw.slice(i, i + 3))} (a % must be followed by two hex digits)` }
    const b = h1 * 16 + h2
    i += 2
    if (due > 0) {
      if (b < lo || b > hi) return { problem: 'the percent-encoded bytes of the path are not valid UTF-8' }
      due--
      lo = 0x80
      hi = 0xbf
      out += '%' + HEX[h1]! + HEX[h2]!
      continue
    }
    if (b >= 0x80) {
      if (b >= 0xc2 && b <= 0xdf) due = 1
      else if (b >= 0xe0 && b <= 0xef) { due = 2; if (b === 0xe0) lo = 0xa0; else if (b === 0xed) hi = 0x9f } else if (b >= 0xf0 && b <= 0xf4) { due = 3; if (b === 0xf0) lo = 0x90; else if (b === 0xf4) hi = 0x8f } else return { problem: 'the percent-encoded bytes of the path are not valid UTF-8 (overlong or invalid lead byte)' }
      out += '%' + HEX[h1]! + HEX[h2]!
      continue
    }
    if (isUnreserved(b)) {
      out += String.fromCharCode(b)
    } else if (b === 0x2f || b === 0x5c) {
      if (escapedSlashes === 'reject') return { problem: `the path has an escaped slash or backslash (${raw.slice(i - 2, i + 1)}), refused by gateway.escapedSlashes: reject` }
      out += escapedSlashes === 'unescape' ? '/' : '%' + HEX[h1]! + HEX[h2]!
    } else if (b === 0) {
      // A decoded NUL truncates the path in C-string upstreams.
      return { problem: 'the path has an escaped NUL byte (%00)' }
    } else {
      out += '%' + HEX[h1]! + HEX[h2]!
    }
  }
  if (due > 0) return { problem: 'the percent-encoded bytes of the path are not valid UTF-8 (truncated sequence)' }
  return removeDotSegments(out)
}

/** `//` collapsed, `.` and `..` resolved (never above `/`); a path that ends in one keeps a final `/`. */
function removeDotSegments (p: string): string | RequestTargetProblem {
  const segments = p.split('/')
  const kept: string[] = []
  let trailing = false
  // segments[0] is the empty text before the leading `/`.
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!
    const last = i === segments.length - 1
    if (s === '' || s === '.') {
      trailing = last
    } else if (s === '..') {
      kept.pop()
      trailing = last
    } else {
      // Tomcat and Jetty drop path parameters and then resolve `..;x` as `..`: a request
      // this gateway would route under one prefix would be served from another.
      const semi = s.indexOf(';')
      if (semi !== -1) {
        const name = s.slice(0, semi)
        if (name === '.' || name === '..') return { problem: `the path has a dot segment with parameters (${JSON.stringify(s.slice(0, 32))})` }
      }
      kept.push(s)
      trailing = false
    }
  }
  if (kept.length === 0) return '/'
  return '/' + kept.join('/') + (trailing ? '/' : '')
}
