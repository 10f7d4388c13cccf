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
//   3. on Debian/apt machines, the Debian packages of `debian.suite`, fetched with
//      `apt-get download` from the mirror this machine already uses, through a private
//      source list and private state/cache dirs (the system's apt setup is not touched;
//      signatures are verified with the Debian archive keyring), unpacked with
//      `dpkg-deb -x`, and the listed files copied into .tools/. Shared libraries the
//      binary needs that are not installed on the machine are unpacked too, into a lib
//      dir of their own, and .tools/bin/<bin> is then a small shell wrapper that runs the
//      binary with that dir on LD_LIBRARY_PATH (nothing is installed system-wide).
//   Or, for a component with `system` (chromium: a browser needs dozens of libraries that
//   cannot sensibly live beside it in .tools), the Debian packages installed system-wide
//   with `apt-get install`, when the script runs as root on Debian; else the command to run.
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
 * The components. To add one (promtool, chromium, ...), add an entry:
 *   name        what the messages call it
 *   usedBy      what needs it (for the messages)
 *   bin         command name; available as .tools/bin/<bin>
 *   minVersion  lowest acceptable version, 'MAJOR.MINOR[.PATCH]'
 *   versionArgs arguments that print the version; versionPattern captures it
 *   debian      how to get it from Debian's packages:
 *     suite     the suite to fetch from; null = the machine's own suite (VERSION_CODENAME),
 *               for binaries linked against the machine's own libraries (Debian machines only)
 *     packages  [{ name, license, files?, libs? }], fetched together:
 *                 files  { '<path in the .deb>': '<path under .tools>' }, copied as they are
 *                 libs   shared-object names ('libfoo.so.1') of the package, found wherever
 *                        the package keeps them (usr/lib/<multiarch>/...), copied into libDir
 *     libDir    (with libs) where they go, under .tools
 *     run       (with libDir) the binary, under .tools: .tools/bin/<bin> is then a shell
 *               wrapper that execs it with libDir on LD_LIBRARY_PATH; without `run`, one of
 *               the files must be copied to bin/<bin> itself
 *   system      instead of `debian`: { packages: ['<name>', ...] } installed with
 *               `apt-get install --no-install-recommends` (root on Debian only)
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
      packages: [
        { name: 'consul', license: 'MPL-2.0', files: { 'usr/bin/consul': 'bin/consul' } },
      ],
    },
    otherwise:
      'Install Consul >= 1.8 from HashiCorp\'s packages (https://developer.hashicorp.com/consul/install, ' +
      'or the zip files at https://releases.hashicorp.com/consul/) so that `consul` is on PATH, ' +
      'or copy the binary out of the docker image into .tools/bin: ' +
      'id=$(docker create hashicorp/consul:1.8.7) && mkdir -p .tools/bin && ' +
      'docker cp "$id:/bin/consul" .tools/bin/consul && docker rm "$id"',
  },
  {
    name: 'Redis',
    usedBy: 'the tests of rate limits shared through Redis',
    bin: 'redis-server',
    minVersion: '6.2',
    versionArgs: ['--version'],
    versionPattern: /Redis server v=(\d+\.\d+(?:\.\d+)?)/,
    debian: {
      suite: null, // linked against the machine's own libssl, libsystemd, ...
      packages: [
        // Debian's `redis-server` package holds only a symlink redis-server -> redis-check-rdb
        // (plus config and init scripts): the server is this binary of redis-tools, which
        // runs as the server under any name but redis-check-rdb/redis-check-aof.
        { name: 'redis-tools', license: 'BSD-3-Clause', files: { 'usr/bin/redis-check-rdb': 'redis/bin/redis-server' } },
        // its libraries that a Debian machine does not have without Redis installed
        { name: 'libjemalloc2', license: 'BSD-2-Clause', libs: ['libjemalloc.so.2'] },
        { name: 'liblzf1', license: 'BSD-2-Clause', libs: ['liblzf.so.1'] },
      ],
      libDir: 'redis/lib',
      run: 'redis/bin/redis-server',
    },
    otherwise:
      'Install Redis >= 6.2 so that `redis-server` is on PATH: `apt-get install redis-server` on ' +
      'Debian or Ubuntu, `dnf install redis` on Fedora, `brew install redis` on macOS ' +
      '(https://redis.io/docs/latest/operate/oss_and_stack/install/).',
  },
  {
    name: 'promtool',
    usedBy: 'the metrics tests (`promtool check metrics` on a real scrape)',
    bin: 'promtool',
    minVersion: '2.0',
    versionArgs: ['--version'],
    versionPattern: /promtool, version (\d+\.\d+(?:\.\d+)?)/,
    debian: {
      // A static Go binary: any suite's runs here; bookworm's is Prometheus 2.42.
      suite: 'bookworm',
      packages: [
        { name: 'prometheus', license: 'Apache-2.0', files: { 'usr/bin/promtool': 'bin/promtool' } },
      ],
    },
    otherwise:
      'Install Prometheus\'s promtool so that `promtool` is on PATH: `apt-get install prometheus` on ' +
      'Debian or Ubuntu, or take `promtool` from a release archive at https://prometheus.io/download/ ' +
      'and copy it to .tools/bin/promtool.',
  },
  {
    // The same Debian package as promtool (fetched again: each entry installs on its own).
    name: 'Prometheus',
    usedBy: '`npm run mesh` (scrapes every gateway\'s /metrics) and the local-mesh test',
    bin: 'prometheus',
    minVersion: '2.0',
    versionArgs: ['--version'],
    versionPattern: /prometheus, version (\d+\.\d+(?:\.\d+)?)/,
    debian: {
      suite: 'bookworm', // static, as promtool
      packages: [
        { name: 'prometheus', license: 'Apache-2.0', files: { 'usr/bin/prometheus': 'bin/prometheus' } },
      ],
    },
    otherwise:
      'Install Prometheus so that `prometheus` is on PATH: `apt-get install prometheus` on Debian or ' +
      'Ubuntu, or take `prometheus` from a release archive at https://prometheus.io/download/ and copy ' +
      'it to .tools/bin/prometheus.',
  },
  {
    name: 'Chromium',
    usedBy: 'the service-graph page test (headless Chromium driven by playwright-core; no browser is ever downloaded)',
    bin: 'chromium',
    minVersion: '100.0',
    versionArgs: ['--version'],
    versionPattern: /Chromium (\d+\.\d+(?:\.\d+)?)/,
    system: { packages: ['chromium'] },
    otherwise:
      'Install Debian\'s Chromium so that /usr/bin/chromium exists: `sudo apt-get install chromium` ' +
      '(Ubuntu: the `chromium-browser` snap is not driven by the tests; use a Debian machine or container).',
  },
  {
    name: 'docker-compose',
    usedBy: 'the docker-compose.yml test (`docker-compose config` checks and resolves the file; no Docker engine is needed)',
    bin: 'docker-compose',
    minVersion: '1.27',
    versionArgs: ['--version'],
    versionPattern: /docker-compose version (\d+\.\d+(?:\.\d+)?)/,
    // A Python program with a dozen Python libraries: a system package, as Chromium.
    system: { packages: ['docker-compose'] },
    otherwise:
      'Install Debian\'s docker-compose so that `docker-compose` is on PATH: `sudo apt-get install docker-compose` ' +
      '(or any docker-compose 1.27+ that accepts the Compose Specification).',
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
    const libs = v ? [] : missingLibraries(component)
    notes.push(`${rel(local)} is ${v ? `version ${v}` : `not runnable${libs.length > 0 ? ` (missing ${libs.join(', ')})` : ''}`}, need >= ${component.minVersion}`)
  }
  return { found: false, notes }
}

/** The binary that .tools/bin/<bin> runs: itself, or what its wrapper execs. */
function localBinary(component) {
  return path.join(TOOLS, component.debian?.run ?? path.join('bin', component.bin))
}

/**
 * Shared libraries the .tools copy needs that the dynamic loader does not find (with the
 * component's libDir on LD_LIBRARY_PATH, as its wrapper runs it); [] when `ldd` is not there
 * or the binary is static.
 */
function missingLibraries(component) {
  const bin = localBinary(component)
  if (!fs.existsSync(bin) || !findOnPath('ldd')) return []
  const libDir = component.debian?.libDir
  const env = libDir
    ? { ...process.env, LD_LIBRARY_PATH: [path.join(TOOLS, libDir), process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') }
    : process.env
  const r = run('ldd', [bin], { env, timeout: 10_000 })
  return [...r.stdout.matchAll(/^\s*(\S+) => not found/gm)].map((m) => m[1])
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

/** Why the component's Debian route cannot be used here, or null when it can. */
function debianUnavailableReason(component) {
  if (process.platform !== 'linux') return `this is ${process.platform}, not Debian`
  const osr = readOsRelease()
  const ids = [osr.ID, ...(osr.ID_LIKE ?? '').split(/\s+/)].filter(Boolean)
  if (!ids.includes('debian')) return `this is ${osr.PRETTY_NAME ?? 'a Linux'} without apt`
  if (component.debian.suite === null) {
    // binaries linked against the machine's own libraries come from the machine's own suite
    if (osr.ID !== 'debian') return `this is ${osr.PRETTY_NAME ?? osr.ID}, not Debian, whose packages ${component.name} would need`
    if (!osr.VERSION_CODENAME) return `/etc/os-release names no VERSION_CODENAME, the Debian suite to fetch ${component.name} from`
  }
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

/** Copies src to dest with the mode given, through a temp name: a half-written file is never in place. */
function installFile(src, dest, mode) {
  fs.mkdirSync(path.dirname(dest), { recursive: true })
  const partial = `${dest}.partial-${process.pid}`
  fs.copyFileSync(src, partial) // follows symlinks (liblzf.so.1 -> liblzf.so.1.5): the file itself
  fs.chmodSync(partial, mode)
  fs.renameSync(partial, dest)
}

/** The text of .tools/bin/<bin> for a component with `run`: exec it with libDir on LD_LIBRARY_PATH. */
function wrapperScript(component) {
  const binDir = path.join(TOOLS, 'bin')
  const target = path.relative(binDir, path.join(TOOLS, component.debian.run))
  const libDir = path.relative(binDir, path.join(TOOLS, component.debian.libDir))
  const pkgs = component.debian.packages.map((p) => p.name).join(', ')
  return [
    '#!/bin/sh',
    `# Written by scripts/setup.mjs: runs ${component.name} from the Debian packages ${pkgs},`,
    `# unpacked into .tools/, with the shared libraries unpacked beside it (not installed`,
    '# system-wide). exec: the process started as this script is the binary itself.',
    'here=$(dirname "$(readlink -f "$0")")',
    `LD_LIBRARY_PATH="$here/${libDir}\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"`,
    'export LD_LIBRARY_PATH',
    `exec "$here/${target}" "$@"`,
    '',
  ].join('\n')
}

/** Fetches the component's Debian packages and copies their files into .tools. Returns the binary path. */
function installFromDebian(component) {
  const { suite: wantedSuite, packages, libDir, run: runTarget } = component.debian
  const suite = wantedSuite ?? readOsRelease().VERSION_CODENAME
  const names = packages.map((p) => p.name)
  const mirror = debianMirror()
  const licenses = packages.map((p) => `${p.name}: ${p.license}`).join(', ')
  log(`${component.name}: fetching Debian package(s) ${names.map((n) => `\`${n}\``).join(', ')} from ${mirror.uri} ${suite}/main (${licenses}; mirror from ${mirror.from})`)

  const tmp = makeTempDir(names[0])
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
  mustRun('apt-get', ['-q', 'download', ...aptOptions, ...names], { cwd: dirs.download })
  const debs = fs.readdirSync(dirs.download).filter((f) => f.endsWith('.deb'))

  // What to copy where: [source in an unpacked package, destination under .tools]
  const copies = []
  for (const pkg of packages) {
    const found = debs.filter((f) => f.startsWith(`${pkg.name}_`))
    if (found.length !== 1) throw new SetupError(`expected one ${pkg.name}_*.deb after \`apt-get download ${names.join(' ')}\`, found: ${debs.join(', ') || 'none'}`)
    const deb = found[0]
    const into = path.join(dirs.extract, pkg.name)
    mustRun('dpkg-deb', ['-x', path.join(dirs.download, deb), into])
    for (const [from, to] of Object.entries(pkg.files ?? {})) {
      if (!fs.existsSync(path.join(into, from))) throw new SetupError(`${deb} has no ${from}`)
      copies.push([path.join(into, from), to])
    }
    if ((pkg.libs ?? []).length > 0) {
      const all = fs.readdirSync(into, { recursive: true }).map(String)
      for (const lib of pkg.libs) {
        const hit = all.filter((f) => path.basename(f) === lib && /(^|\/)lib(64)?\//.test(f)).sort()[0]
        if (!hit) throw new SetupError(`${deb} has no ${lib} in a lib dir`)
        copies.push([path.join(into, hit), path.join(libDir, lib)])
      }
    }
  }
  log(`${component.name}: fetched and unpacked ${debs.join(', ')} in ${((Date.now() - started) / 1000).toFixed(1)} s`)

  // .tools/bin/<bin> last: while it is missing the component counts as not installed.
  const binRel = path.join('bin', component.bin)
  copies.sort(([, a], [, b]) => Number(a === binRel) - Number(b === binRel))
  for (const [src, to] of copies) {
    installFile(src, path.join(TOOLS, to), libDir && to.startsWith(`${libDir}/`) ? 0o644 : 0o755)
  }
  if (runTarget) {
    const staged = path.join(tmp, 'wrapper')
    fs.writeFileSync(staged, wrapperScript(component))
    installFile(staged, path.join(TOOLS, binRel), 0o755)
  }
  removeTempDirs()
  const missing = missingLibraries(component)
  if (missing.length > 0) {
    throw new SetupError(`${rel(localBinary(component))} needs shared libraries this machine does not have: ${missing.join(', ')} ` +
      '(add the Debian packages that hold them to its COMPONENTS entry, or install them with apt-get)')
  }
  return path.join(TOOLS, binRel)
}

// --- system packages ---------------------------------------------------------------------

/** Why the component's system packages cannot be installed here, or null when they can. */
function systemUnavailableReason() {
  if (process.platform !== 'linux') return `this is ${process.platform}, not Debian`
  const osr = readOsRelease()
  if (osr.ID !== 'debian') return `this is ${osr.PRETTY_NAME ?? 'a Linux'}, not Debian`
  if (!findOnPath('apt-get')) return '`apt-get` is not on PATH'
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'installing system packages needs root; this script does not use sudo'
  return null
}

/** Installs the component's Debian packages system-wide; returns the binary path. */
function installSystemPackages(component) {
  const names = component.system.packages
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const install = ['-q', '-y', 'install', '--no-install-recommends', ...names]
  log(`${component.name}: installing Debian package(s) ${names.map((n) => `\`${n}\``).join(', ')} system-wide with apt-get`)
  const started = Date.now()
  // The machine's package lists may be old or absent (a fresh container): update once on failure.
  if (!run('apt-get', install, { env }).ok) {
    mustRun('apt-get', ['-q', 'update'], { env })
    mustRun('apt-get', install, { env })
  }
  log(`${component.name}: installed in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  const bin = findOnPath(component.bin)
  if (!bin) throw new SetupError(`\`apt-get install ${names.join(' ')}\` succeeded but \`${component.bin}\` is not on PATH`)
  return bin
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
    const why = component.debian ? debianUnavailableReason(component) : component.system ? systemUnavailableReason() : 'no automatic install'
    console.error(why
      ? `setup: it cannot be installed automatically here (${why}). ${component.otherwise}`
      : `setup: run \`${SETUP_COMMAND}\` to install it into .tools/.`)
    failed++
    continue
  }
  for (const note of found.notes) log(`${component.name}: ${note}`)
  const why = component.debian ? debianUnavailableReason(component) : component.system ? systemUnavailableReason() : 'no automatic install'
  if (why) {
    console.error(`setup: ${missingMessage(component, [])}, and it cannot be installed automatically here (${why}).`)
    console.error(`setup: ${component.otherwise}`)
    failed++
    continue
  }
  try {
    const installed = component.system ? installSystemPackages(component) : installFromDebian(component)
    const version = versionOf(component, installed)
    if (!version || compareVersions(version, component.minVersion) < 0) {
      throw new SetupError(`${rel(installed)} reports ${version ? `version ${version}` : 'no version'}, need >= ${component.minVersion}`)
    }
    log(`${component.name} ${version} installed: ${installed.startsWith(TOOLS) ? rel(installed) : installed}`)
  } catch (err) {
    if (!(err instanceof SetupError)) throw err
    console.error(`setup: installing ${component.name} failed: ${err.message}`)
    console.error(`setup: otherwise: ${component.otherwise}`)
    failed++
  }
}
if (failed > 0) process.exit(1)
