// The service-graph page's one file (service-graph.html, read from the package's src/admin)
// and the headers it is served with: a Content-Security-Policy that allows exactly its own
// inline script and style (by hash) and fetches to the admin API itself, nothing else.
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface ServiceGraphPage {
  readonly html: string
  readonly headers: Readonly<Record<string, string>>
}

/** src/admin/service-graph.html, from dist/src/admin (built) or src/admin (this file's source twin). */
export const SERVICE_GRAPH_HTML = resolve(dirname(fileURLToPath(import.meta.url)), '../../../src/admin/service-graph.html')

const hashOf = (text: string): string => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`

/** The hashes of every inline `<tag>` block of `html`, for a CSP source list. */
function inlineHashes (html: string, tag: 'script' | 'style'): string {
  const blocks = [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => hashOf(m[1]!))
  return blocks.length > 0 ? blocks.join(' ') : "'none'"
}

let loaded: Promise<ServiceGraphPage> | undefined

export async function loadServiceGraphPage (): Promise<ServiceGraphPage> {
  loaded ??= (async () => {
    const html = await readFile(SERVICE_GRAPH_HTML, 'utf8')
    const csp = [
      "default-src 'none'",
      `script-src ${inlineHashes(html, 'script')}`,
      `style-src ${inlineHashes(html, 'style')}`,
      "connect-src 'self'",
      "img-src data:",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'"
    ].join('; ')
    return {
      html,
      headers: {
        'content-type': 'text/html; charset=utf-8',
        'content-security-policy': csp,
        'x-content-type-options': 'nosniff',
        'x-frame-options': 'DENY',
        'referrer-policy': 'no-referrer',
        'cache-control': 'no-store'
      }
    }
  })()
  return await loaded
}
