// A real headless browser for page tests: Debian's chromium (installed by `npm run setup`),
// driven by playwright-core, with a fresh profile, no network beyond what the page asks for,
// and no browser download ever (playwright's own browsers are not used).
import type { TestContext } from 'node:test'
import fs from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext } from 'playwright-core'
import { defer } from './gateway.js'

export const CHROMIUM = '/usr/bin/chromium'

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

/** Fails (never skips) when the browser is missing, naming what installs it. */
export function assertChromium (): void {
  try {
    fs.accessSync(CHROMIUM, fs.constants.X_OK)
  } catch {
    throw new Error(`${CHROMIUM} is missing: the service-graph page test drives Debian's chromium. Run \`npm run setup\` (it runs \`apt-get install chromium\` as root on Debian), or \`sudo apt-get install chromium\`.`)
  }
}

/** A browser with a fresh profile, closed (and its profile removed) when the test ends. */
export async function startBrowser (t: TestContext): Promise<BrowserContext> {
  assertChromium()
  const profile = await mkdtemp(join(tmpdir(), 'fastmesh-chromium-'))
  defer(t, async () => { await rm(profile, { recursive: true, force: true }) })
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 60_000 })
  defer(t, async () => { await context.close() })
  return context
}
