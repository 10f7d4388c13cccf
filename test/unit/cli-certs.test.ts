// `fastmesh certs init | issue | show`, run as a child process in a temporary directory.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { CLI, spawnCli } from '../helpers/cli.js'

async function tempDir (t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastmesh-cli-certs-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return dir
}

test('certs init, issue and show: files written, what was written printed, exit 0', async (t) => {
  const dir = join(await tempDir(t), 'certs')
  const init = await spawnCli(['certs', 'init', '--dir', dir, '--trust-domain', 'cli.test'])
  assert.equal(init.code, 0, init.stderr)
  assert.match(init.stdout, new RegExp(`wrote ${join(dir, 'ca.pem')} \\(CA for spiffe://cli\\.test`))
  assert.match(init.stdout, new RegExp(`wrote ${join(dir, 'ca-key.pem')} \\(mode 0600\\)`))
  assert.equal((await stat(join(dir, 'ca-key.pem'))).mode & 0o777, 0o600)

  const orders = await spawnCli(['certs', 'issue', '--dir', dir, '--service', 'orders'])
  assert.equal(orders.code, 0, orders.stderr)
  assert.match(orders.stdout, new RegExp(`wrote ${join(dir, 'orders.pem')} \\(spiffe://cli\\.test/ns/default/dc/dc1/svc/orders, serial [0-9A-F]+, expires `))
  assert.match(orders.stdout, /orders-key\.pem \(mode 0600\)/)
  const web = await spawnCli(['certs', 'issue', '--dir', dir, '--service', 'web', '--dc', 'east', '--hours', '12'])
  assert.equal(web.code, 0, web.stderr)
  const webCert = new X509Certificate(await readFile(join(dir, 'web.pem'), 'utf8'))
  assert.match(webCert.subjectAltName ?? '', /URI:spiffe:\/\/cli\.test\/ns\/default\/dc\/east\/svc\/web/)
  const hours = (new Date(webCert.validTo).getTime() - Date.now()) / 3_600_000
  assert.ok(hours > 11.9 && hours <= 12, String(hours))
  assert.deepEqual((await readdir(dir)).sort(), ['ca-key.pem', 'ca.pem', 'orders-key.pem', 'orders.pem', 'web-key.pem', 'web.pem'])

  const show = await spawnCli(['certs', 'show', '--dir', dir])
  assert.equal(show.code, 0, show.stderr)
  const lines = show.stdout.trim().split('\n')
  assert.match(lines[0]!, /^SERVICE\s+SPIFFE ID\s+NOT AFTER\s+DAYS LEFT/)
  assert.match(lines[1]!, /^\(ca\)\s+spiffe:\/\/cli\.test\s+\S+Z\s+3650\.0$/)
  assert.match(lines[2]!, /^orders\s+spiffe:\/\/cli\.test\/ns\/default\/dc\/dc1\/svc\/orders\s+\S+Z\s+3\.0$/)
  assert.match(lines[3]!, /^web\s+spiffe:\/\/cli\.test\/ns\/default\/dc\/east\/svc\/web\s+\S+Z\s+0\.50$/)
  assert.equal(lines.length, 4)
})

test('certs init refuses an existing CA (exit 1) unless --force', async (t) => {
  const dir = await tempDir(t)
  assert.equal((await spawnCli(['certs', 'init', '--dir', dir])).code, 0)
  const again = await spawnCli(['certs', 'init', '--dir', dir])
  assert.equal(again.code, 1)
  assert.match(again.stderr, /^FASTMESH_ERR_IDENTITY_CA_EXISTS: A CA already exists in .*; pass --force to replace it/)
  const forced = await spawnCli(['certs', 'init', '--dir', dir, '--force'])
  assert.equal(forced.code, 0, forced.stderr)
  assert.match(forced.stdout, /kept the previous CA certificate as .*roots\/previous-[0-9A-F]+\.pem/)
})

test('certs issue without a CA exits 1 naming `fastmesh certs init`', async (t) => {
  const dir = await tempDir(t)
  const r = await spawnCli(['certs', 'issue', '--dir', dir, '--service', 'orders'])
  assert.equal(r.code, 1)
  assert.ok(r.stderr.startsWith('FASTMESH_ERR_IDENTITY_MISSING: '), r.stderr)
  assert.ok(r.stderr.includes(`fastmesh certs init --dir ${dir}`), r.stderr)
})

test('bad flags and names are usage errors (exit 2, usage shown)', async (t) => {
  const dir = await tempDir(t)
  assert.equal((await spawnCli(['certs', 'init', '--dir', dir])).code, 0)
  const cases: Array<[string[], RegExp]> = [
    [['certs'], /certs takes init, issue or show, got nothing/],
    [['certs', 'renew', '--dir', dir], /certs takes init, issue or show, got "renew"/],
    [['certs', 'init'], /certs init needs --dir DIR/],
    [['certs', 'issue', '--dir', dir], /certs issue needs --service NAME/],
    [['certs', 'issue', '--dir', dir, '--service', 'bad name'], /Invalid service name "bad name"/],
    [['certs', 'issue', '--dir', dir, '--service', 'ca'], /would clash with the CA/],
    [['certs', 'issue', '--dir', dir, '--service', 'orders', '--hours', 'soon'], /--hours takes a positive number, got "soon"/],
    [['certs', 'issue', '--dir', dir, '--service', 'orders', '--force'], /certs issue does not take --force/],
    [['certs', 'show', '--dir', dir, '--bogus'], /Unknown option '--bogus'/],
    [['certs', 'init', '--dir', join(dir, 'x'), '--trust-domain', 'no/slash'], /Invalid trust domain/]
  ]
  for (const [args, message] of cases) {
    const r = await spawnCli(args)
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, /^FASTMESH_ERR_CLI_USAGE: /, args.join(' '))
    assert.match(r.stderr, message, args.join(' '))
    assert.match(r.stderr, /fastmesh certs issue --dir DIR --service NAME/, 'usage lists the certs commands')
  }
  assert.deepEqual((await readdir(dir)).sort(), ['ca-key.pem', 'ca.pem'], 'nothing written by a refused command')
})

test('--help lists the certs commands', async () => {
  const r = await spawnCli(['--help'])
  assert.equal(r.code, 0)
  assert.match(r.stdout, /fastmesh certs init --dir DIR/)
  assert.match(r.stdout, /fastmesh certs show --dir DIR/)
})

test('certs issue into a closed pipe (`| head -1`) exits 0 quietly instead of an EPIPE stack trace', async (t) => {
  const dir = join(await tempDir(t), 'certs')
  assert.equal((await spawnCli(['certs', 'init', '--dir', dir])).code, 0)
  const child = spawn(process.execPath, [CLI, 'certs', 'issue', '--dir', dir, '--service', 'orders'], { stdio: ['ignore', 'pipe', 'pipe'] })
  // The reader is gone before the first line: every write of the command meets EPIPE (as when
  // `head -1` has exited), whatever the timing of its writes.
  child.stdout.destroy()
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, 20_000)
  const code = await new Promise<number | null>((resolve) => { child.once('close', (c) => { resolve(c) }) })
  clearTimeout(timer)
  assert.equal(stderr, '')
  assert.equal(code, 0)
  // It did its work before writing: the leaf is there.
  assert.match(new X509Certificate(await readFile(join(dir, 'orders.pem'), 'utf8')).subjectAltName ?? '', /svc\/orders/)
})

