#!/usr/bin/env node
// Makes the real components the tests run (see DESIGN.md, "Real components, and how they
// start") available in the git-ignored tools folder `.tools/`, and prints what it did.
//
//   node scripts/setup.mjs               install what is missing (what `npm run setup` runs)
//   node scripts/setup.mjs --check-only  install nothing; exit 1 naming `npm run setup` if
//                                        something is missing (what `npm test` runs first)
//
// Each component is one entry of COMPONENTS below. For each, in order:
//   1. the command on PATH, when its version is at least `minVersion`;
//   2. the copy already in .tools/bin;
//   3. on Debian/apt machines, the Debian package of `debian.suite`, fetched with
//      `apt-get download` from the mirror this machine already uses, through a private
//      source list and private state/cache dirs (the system's apt setup is not touched;
//      signatures are verified with the Debian archive keyring), unpacked with
//      `dpkg-deb -x`, and the listed files copied into .tools/.
// Plain ESM JavaScript with node built-ins only: it runs before `npm ci` has built anything.
// It writes nothing outside the project except temp dirs it removes.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const TOOLS = path.join(ROOT, '.tools')
const DEBIAN_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg'
const SETUP_COMMAND = 'npm run setup'

/**
 * The components. To add one (Redis, promtool, chromium, ...), add an entry:
 *   name        what the messages call it
 *   usedBy      what needs it (for the messages)
 *   bin         command name; installed as .tools/bin/<bin>
 *   minVersion  lowest acceptable version, 'MAJOR.MINOR[.PATCH]'
 *   versionArgs arguments that print the version; versionPattern captures it
 *   debian      { suite, package, license, files: { '<path in the .deb>': '<path under .tools>' } }
 *               suite null = the machine's own suite (VERSION_CODENAME)
 *   otherwise   what to do where the Debian route is not available
 */
const COMPONENTS = [
  {
    name: 'Consul',
    usedBy: 'the Consul integration tests',
    bin: 'consul',
    minVersion: '1.8',
    versionArgs: ['version'],
    versionPattern: /Consul v(\d+\.\d+(?:\.\d+)?)/,
    debian: {
      suite: 'bullseye',
      package: 'consul',
      license: 'MPL-2.0',
      files: { 'usr/bin/consul': 'bin/consul' },
    },
    otherwise:
      'Install Consul >= 1.8 from HashiCorp\'s packages (https://developer.hashicorp.com/consul/install, ' +
      'or the zip files at https://releases.hashicorp.com/consul/) so that `consul` is on PATH, ' +
      'or copy the binary out of the docker image into .tools/bin: ' +
      'id=$(docker create hashicorp/consul:1.8.7) && mkdir -p .tools/bin && ' +
      'docker cp "$id:/bin/consul" .tools/bin/consul && docker rm "$id"',
  },
]

// ---------------------------------------------------------------------------------------

const args = process.argv.slice(2)
const unknown = args.filter((a) => a !== '--check-only' && a !== '--help' && a !== '-h')
if (args.includes('--help') || args.includes('-h') || unknown.length > 0) {
  if (unknown.length > 0) console.error(`setup: unknown argument(s): ${unknown.join(' ')}`)
  console.error('usage: node scripts/setup.mjs [--check-only]')
  process.exit(unknown.length > 0 ? 2 : 0)
}
const checkOnly = args.includes('--check-only')

const log = (msg) => console.log(`setup: ${msg}`)
const rel = (p) => path.relative(ROOT, p) || '.'

/** Temp dirs to remove however the script ends. */
const tempDirs = new Set()
function removeTempDirs() {
  for (const dir of tempDirs) {
    try { fs.rmSync(dir, { recursive: true, force: true }) } catch { /* best effort */ }
    tempDirs.delete(dir)
  }
}
process.on('exit', removeTempDirs)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { removeTempDirs(); process.exit(128 + os.constants.signals[sig]) })
}
function makeTempDir(label) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `fastmesh-setup-${label}-`))
  tempDirs.add(dir)
  return dir
}

class SetupError extends Error {}

/** Runs a command synchronously; returns { ok, status, stdout, stderr, error }. */
function run(cmd, cmdArgs, opts = {}) {
  const r = spawnSync(cmd, cmdArgs, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts })
  return { ok: !r.error && r.status === 0, status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error }
}

/** Runs a command that must succeed; throws a SetupError with its output otherwise. */
function mustRun(cmd, cmdArgs, opts = {}) {
  log(`$ ${[cmd, ...cmdArgs].join(' ')}${opts.cwd ? `   (in ${opts.cwd})` : ''}`)
  const r = run(cmd, cmdArgs, opts)
  if (!r.ok) {
    const why = r.error ? r.error.message : `exit status ${r.status}`
    const out = `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-15).join('\n    ')
    throw new SetupError(`\`${[cmd, ...cmdArgs].join(' ')}\` failed (${why})${out ? `:\n    ${out}` : ''}`)
  }
  return r
}

function findOnPath(name) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue
    const candidate = path.join(dir, name)
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      if (fs.statSync(candidate).isFile()) return candidate
    } catch { /* not here */ }
  }
  return null
}

function compareVersions(a, b) {
  const pa = a.split('.').map(Number)
  const pb = b.split('.').map(Number)
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

/** The version the binary reports, or null when it does not run or says nothing usable. */
function versionOf(component, binPath) {
  const r = run(binPath, component.versionArgs, { timeout: 10_000 })
  if (!r.ok) return null
  return component.versionPattern.exec(`${r.stdout}\n${r.stderr}`)?.[1] ?? null
}

/** Where the component is usable from right now, or why not. */
function locate(component) {
  const notes = []
  const onPath = findOnPath(component.bin)
  if (onPath) {
    const v = versionOf(component, onPath)
    if (v && compareVersions(v, component.minVersion) >= 0) return { found: true, where: onPath, how: 'on PATH', version: v, notes }
    notes.push(`${onPath} on PATH is ${v ? `version ${v}` : 'not runnable'}, need >= ${component.minVersion}`)
  }
  const local = path.join(TOOLS, 'bin', component.bin)
  if (fs.existsSync(local)) {
    const v = versionOf(component, local)
    if (v && compareVersions(v, component.minVersion) >= 0) return { found: true, where: local, how: 'in .tools', version: v, notes }
    notes.push(`${rel(local)} is ${v ? `version ${v}` : 'not runnable'}, need >= ${component.minVersion}`)
  }
  return { found: false, notes }
}

// --- Debian ------------------------------------------------------------------------------

function readOsRelease() {
  try {
    const out = {}
    for (const line of fs.readFileSync('/etc/os-release', 'utf8').split('\n')) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line.trim())
      if (m) out[m[1]] = m[2].replace(/^["']|["']$/g, '')
    }
    return out
  } catch {
    return {}
  }
}

/** Why the Debian route cannot be used here, or null when it can. */
function debianUnavailableReason() {
  if (process.platform !== 'linux') return `this is ${process.platform}, not Debian`
  const osr = readOsRelease()
  const ids = [osr.ID, ...(osr.ID_LIKE ?? '').split(/\s+/)].filter(Boolean)
  if (!ids.includes('debian')) return `this is ${osr.PRETTY_NAME ?? 'a Linux'} without apt`
  for (const tool of ['apt-get', 'dpkg-deb']) {
    if (!findOnPath(tool)) return `\`${tool}\` is not on PATH`
  }
  if (!fs.existsSync(DEBIAN_KEYRING)) return `${DEBIAN_KEYRING} is missing (Debian package debian-archive-keyring)`
  return null
}

/** Entries of one-line .list files: [{ types, uris, suites, components }]. */
function parseOneLineSources(text) {
  const entries = []
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim()
    if (!line) continue
    const m = /^(deb|deb-src)\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line)
    if (m) entries.push({ types: [m[1]], uris: [m[2]], suites: [m[3]], components: m[4].split(/\s+/).filter(Boolean) })
  }
  return entries
}

/** Stanzas of deb822 .sources files: [{ types, uris, suites, components }]. */
function parseDeb822Sources(text) {
  const entries = []
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = {}
    let key = null
    for (const line of stanza.split('\n')) {
      if (/^\s*#/.test(line)) continue
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line)
      if (m) { key = m[1].toLowerCase(); fields[key] = m[2] }
      else if (key && /^\s+\S/.test(line)) fields[key] += ` ${line.trim()}`
    }
    if (!fields.uris || (fields.enabled ?? 'yes').trim().toLowerCase() === 'no') continue
    const list = (k) => (fields[k] ?? '').split(/\s+/).filter(Boolean)
    entries.push({ types: list('types'), uris: list('uris'), suites: list('suites'), components: list('components') })
  }
  return entries
}

/** The Debian archive mirror the machine's apt sources use (not -security, not third-party). */
function debianMirror() {
  const files = []
  if (fs.existsSync('/etc/apt/sources.list')) files.push('/etc/apt/sources.list')
  try {
    for (const f of fs.readdirSync('/etc/apt/sources.list.d').sort()) {
      if (f.endsWith('.list') || f.endsWith('.sources')) files.push(path.join('/etc/apt/sources.list.d', f))
    }
  } catch { /* no sources.list.d */ }
  const entries = []
  for (const f of files) {
    let text
    try { text = fs.readFileSync(f, 'utf8') } catch { continue }
    for (const e of f.endsWith('.sources') ? parseDeb822Sources(text) : parseOneLineSources(text)) entries.push({ ...e, file: f })
  }
  const codename = readOsRelease().VERSION_CODENAME
  const usable = entries.filter((e) =>
    e.types.includes('deb') && e.components.includes('main') &&
    e.uris.some((u) => /^(https?|ftp|file):/.test(u)))
  // The machine's own suite (bookworm, ...) from a main archive mirror; else any URI ending in /debian.
  const isArchive = (u) => !/debian-security|security\.debian\.org/.test(u)
  const pick =
    usable.find((e) => codename && e.suites.includes(codename) && e.uris.some(isArchive)) ??
    usable.find((e) => e.uris.some((u) => /\/debian\/?$/.test(u)))
  if (!pick) return { uri: 'http://deb.debian.org/debian', from: 'default (no Debian mirror found in the apt sources)' }
  const uri = pick.uris.find((u) => isArchive(u) && /^(https?|ftp|file):/.test(u)) ?? pick.uris[0]
  return { uri: uri.replace(/\/+$/, ''), from: pick.file }
}

/** Fetches the component's Debian package and copies its files into .tools. Returns the binary path. */
function installFromDebian(component) {
  const { suite: wantedSuite, package: pkg, files, license } = component.debian
  const suite = wantedSuite ?? readOsRelease().VERSION_CODENAME
  const mirror = debianMirror()
  log(`${component.name}: fetching Debian package \`${pkg}\` from ${mirror.uri} ${suite}/main (${license}; mirror from ${mirror.from})`)

  const tmp = makeTempDir(pkg)
  const dirs = { lists: path.join(tmp, 'lists'), cache: path.join(tmp, 'cache'), download: path.join(tmp, 'download'), extract: path.join(tmp, 'extract') }
  for (const d of [path.join(dirs.lists, 'partial'), path.join(dirs.cache, 'archives', 'partial'), dirs.download, dirs.extract]) {
    fs.mkdirSync(d, { recursive: true })
  }
  const sourceList = path.join(tmp, 'sources.list')
  fs.writeFileSync(sourceList, `deb [signed-by=${DEBIAN_KEYRING}] ${mirror.uri} ${suite} main\n`)

  // Everything apt reads or writes is pointed at the temp dir, except the dpkg status (read only).
  const aptOptions = [
    `Dir::Etc::SourceList=${sourceList}`,
    'Dir::Etc::SourceParts=/dev/null',
    'Dir::Etc::Preferences=/dev/null',
    'Dir::Etc::PreferencesParts=/dev/null',
    `Dir::State::Lists=${dirs.lists}`,
    `Dir::Cache=${dirs.cache}`,
    // the temp dir is private to this user; as root, apt would otherwise drop to `_apt` and warn
    'APT::Sandbox::User=root',
  ].flatMap((o) => ['-o', o])

  const started = Date.now()
  mustRun('apt-get', ['-q', 'update', ...aptOptions])
  mustRun('apt-get', ['-q', 'download', ...aptOptions, pkg], { cwd: dirs.download })
  const debs = fs.readdirSync(dirs.download).filter((f) => f.endsWith('.deb'))
  if (debs.length !== 1) throw new SetupError(`expected one .deb after \`apt-get download ${pkg}\`, found: ${debs.join(', ') || 'none'}`)
  mustRun('dpkg-deb', ['-x', path.join(dirs.download, debs[0]), dirs.extract])
  log(`${component.name}: fetched and unpacked ${debs[0]} in ${((Date.now() - started) / 1000).toFixed(1)} s`)

  let binPath = null
  for (const [from, to] of Object.entries(files)) {
    const src = path.join(dirs.extract, from)
    const dest = path.join(TOOLS, to)
    if (!fs.existsSync(src)) throw new SetupError(`${debs[0]} has no ${from}`)
    fs.mkdirSync(path.dirname(dest), { recursive: true })
    // copy next to the destination, then rename: a half-written binary is never in place
    const partial = `${dest}.partial-${process.pid}`
    fs.copyFileSync(src, partial)
    fs.chmodSync(partial, 0o755)
    fs.renameSync(partial, dest)
    if (to === path.join('bin', component.bin)) binPath = dest
  }
  removeTempDirs()
  return binPath ?? path.join(TOOLS, 'bin', component.bin)
}

// --- main --------------------------------------------------------------------------------

function missingMessage(component, notes) {
  return `${component.name} is missing (needed by ${component.usedBy})` +
    (notes.length > 0 ? ` — ${notes.join('; ')}` : '')
}

let failed = 0
for (const component of COMPONENTS) {
  const found = locate(component)
  if (found.found) {
    for (const note of found.notes) log(`${component.name}: not using ${note}`)
    log(`${component.name} ${found.version} ${found.how}: ${found.how === 'in .tools' ? rel(found.where) : found.where}`)
    continue
  }
  if (checkOnly) {
    console.error(`setup: ${missingMessage(component, found.notes)}.`)
    const why = component.debian ? debianUnavailableReason() : 'no automatic install'
    console.error(why
      ? `setup: it cannot be installed automatically here (${why}). ${component.otherwise}`
      : `setup: run \`${SETUP_COMMAND}\` to install it into .tools/.`)
    failed++
    continue
  }
  for (const note of found.notes) log(`${component.name}: ${note}`)
  const why = component.debian ? debianUnavailableReason() : 'no automatic install'
  if (why) {
    console.error(`setup: ${missingMessage(component, [])}, and it cannot be installed automatically here (${why}).`)
    console.error(`setup: ${component.otherwise}`)
    failed++
    continue
  }
  try {
    const installed = installFromDebian(component)
    const version = versionOf(component, installed)
    if (!version || compareVersions(version, component.minVersion) < 0) {
      throw new SetupError(`${rel(installed)} reports ${version ? `version ${version}` : 'no version'}, need >= ${component.minVersion}`)
    }
    log(`${component.name} ${version} installed: ${rel(installed)}`)
  } catch (err) {
    if (!(err instanceof SetupError)) throw err
    console.error(`setup: installing ${component.name} failed: ${err.message}`)
    console.error(`setup: otherwise: ${component.otherwise}`)
    failed++
  }
}
if (failed > 0) process.exit(1)
