// A local CA for meshes without Consul Connect: `fastmesh certs init` makes the CA and
// `fastmesh certs issue` a leaf per service, in one directory that FilesIdentityProvider reads.
//
// Layout of the directory:
//   ca.pem, ca-key.pem             the CA (key 0600)
//   <service>.pem, <service>-key.pem  a leaf per service (key 0600)
//   roots/*.pem                    extra trusted roots (a replaced CA's cert lands here, so
//                                  leaves it issued keep verifying until they are reissued)
//
// The CA carries `spiffe://<trust-domain>` as a URI SAN (as Consul's CA does) and its default
// datacenter as the subject's OU; a leaf carries its SPIFFE ID and the service name as SANs.
import { webcrypto, randomBytes, createPrivateKey, X509Certificate as NodeX509 } from 'node:crypto'
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
// @peculiar/x509 v2 resolves its algorithms through tsyringe, which needs a Reflect metadata
// polyfill loaded first (the library's README says so; without it the import throws).
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { fastmeshError } from '../errors.js'
import { serviceSpiffeId, type LeafCertificate } from './types.js'
import { spiffeIdentity, uriSans } from './san.js'
import { SERVICE_NAME_RULE, isServiceName } from '../config/names.js'

export { uriSans }

x509.cryptoProvider.set(webcrypto)

/** SPIFFE trust domains: lowercase letters, digits, `.`, `-`, `_`. */
export const TRUST_DOMAIN_PATTERN = /^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$/

export const DEFAULT_TRUST_DOMAIN = 'fastmesh.local'
export const DEFAULT_DATACENTER = 'dc1'
export const CA_FILE = 'ca.pem'
export const CA_KEY_FILE = 'ca-key.pem'
export const ROOTS_DIR = 'roots'

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair

const EC_PARAMS: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' }
const SIGNING: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' }
const HOUR = 3_600_000
const DAY = 24 * HOUR
/** New certificates start a minute in the past, so a peer with a slightly slow clock accepts them. */
const BACKDATE_MS = 60_000

/** The validity window: explicit dates win; otherwise from a minute ago for `amount` units. */
function validity (opts: { notBefore?: Date, notAfter?: Date }, what: string, amount: number, unitMs: number): { notBefore: Date, notAfter: Date } {
  if (!(Number.isFinite(amount) && amount > 0)) throw new RangeError(`${what} must be a positive number, got ${amount}`)
  const now = Date.now()
  return { notBefore: opts.notBefore ?? new Date(now - BACKDATE_MS), notAfter: opts.notAfter ?? new Date(now + amount * unitMs) }
}

export function leafCertFile (service: string): string { return `${service}.pem` }
export function leafKeyFile (service: string): string { return `${service}-key.pem` }

/**
 * Throws FASTMESH_ERR_IDENTITY_BAD_NAME unless `service` can name a leaf. Besides the config's
 * pattern, `ca` and names ending in `-key` are refused: their files would be ca.pem / another
 * service's key file.
 */
export function assertServiceName (service: string): void {
  if (!isServiceName(service)) {
    throw fastmeshError('IDENTITY_BAD_NAME', ['service name', String(service), `use ${SERVICE_NAME_RULE}`])
  }
  if (service === 'ca' || service.endsWith('-key')) {
    throw fastmeshError('IDENTITY_BAD_NAME', ['service name', service, `its certificate file ${leafCertFile(service)} would clash with ${service === 'ca' ? 'the CA' : 'a key file'}`])
  }
}

/** Datacenters follow the service-name rule too (both are DNS labels in Consul). */
function assertDatacenter (dc: string): void {
  if (!isServiceName(dc)) {
    throw fastmeshError('IDENTITY_BAD_NAME', ['datacenter', String(dc), `use ${SERVICE_NAME_RULE}`])
  }
}

function normaliseTrustDomain (td: string): string {
  const lower = typeof td === 'string' ? td.toLowerCase() : ''
  if (!TRUST_DOMAIN_PATTERN.test(lower)) {
    throw fastmeshError('IDENTITY_BAD_NAME', ['trust domain', String(td), 'use a DNS-like name: letters, digits, . - _ (e.g. fastmesh.local)'])
  }
  return lower
}

export interface CaOptions {
  /** Default `fastmesh.local`; lower-cased. */
  trustDomain?: string
  /** Default datacenter of leaves issued by this CA (kept as the subject's OU). Default `dc1`. */
  datacenter?: string
  /** Default 3650. */
  validityDays?: number
  notBefore?: Date
  notAfter?: Date
}

export interface CaPem {
  readonly certPem: string
  readonly keyPem: string
  readonly trustDomain: string
  readonly datacenter: string
  readonly notBefore: Date
  readonly notAfter: Date
  readonly serial: string
}

export interface LeafOptions {
  /** Default: the CA's datacenter (`dc1` unless the CA was made with another). */
  datacenter?: string
  /** Default 72; capped at the CA's own expiry unless `notAfter` is given. */
  validityHours?: number
  /** Default: a minute ago. */
  notBefore?: Date
  /** Overrides validityHours, taken as is (e.g. in the past, for tests of expired leaves). */
  notAfter?: Date
}

export interface InMemoryLeafOptions extends LeafOptions {
  /** For tests: a URI SAN other than the service's SPIFFE ID (a wrong identity). */
  spiffeId?: string
  /** Default `[service]`. */
  dnsNames?: readonly string[]
  /** For tests: more URI SANs after the SPIFFE ID (a certificate SPIFFE forbids). */
  extraUris?: readonly string[]
}

/** A leaf as issued: the provider's LeafCertificate shape (serial in upper-case hex, as node's X509Certificate.serialNumber). */
export type LeafPem = LeafCertificate

async function generateKeys (): Promise<CryptoKeyPair> {
  return await webcrypto.subtle.generateKey(EC_PARAMS, true, ['sign', 'verify']) as CryptoKeyPair
}

async function privateKeyPem (key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key)
  return x509.PemConverter.encode(der, 'PRIVATE KEY')
}

/** A positive 128-bit serial (first bit clear, so no DER padding byte; never zero). */
function newSerial (): string {
  const b = randomBytes(16)
  b[0] = (b[0]! & 0x7f) | 0x01
  return b.toString('hex')
}

function pemOf (cert: x509.X509Certificate): string {
  return cert.toString('pem') + '\n'
}

function assertDates (notBefore: Date, notAfter: Date): void {
  if (!(notBefore instanceof Date) || Number.isNaN(notBefore.getTime()) || !(notAfter instanceof Date) || Number.isNaN(notAfter.getTime())) {
    throw new RangeError('notBefore and notAfter must be valid dates')
  }
  if (notAfter.getTime() <= notBefore.getTime()) throw new RangeError(`notAfter (${notAfter.toISOString()}) must be after notBefore (${notBefore.toISOString()})`)
}

/** Makes a self-signed ECDSA P-256 CA certificate and key, in memory. */
export async function createCaInMemory (opts: CaOptions = {}): Promise<CaPem> {
  const trustDomain = normaliseTrustDomain(opts.trustDomain ?? DEFAULT_TRUST_DOMAIN)
  const datacenter = opts.datacenter ?? DEFAULT_DATACENTER
  assertDatacenter(datacenter)
  const { notBefore, notAfter } = validity(opts, 'validityDays', opts.validityDays ?? 3650, DAY)
  assertDates(notBefore, notAfter)
  const keys = await generateKeys()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: newSerial(),
    name: [{ CN: [`fastmesh local CA ${trustDomain}`] }, { O: ['fastmesh'] }, { OU: [datacenter] }],
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }])
    ]
  })
  const certPem = pemOf(cert)
  const node = new NodeX509(certPem)
  return { certPem, keyPem: await privateKeyPem(keys.privateKey), trustDomain, datacenter, notBefore: new Date(node.validFrom), notAfter: new Date(node.validTo), serial: node.serialNumber }
}

/** The trust domain a CA certificate names in its `spiffe://<trust-domain>` URI SAN. */
export function caTrustDomain (cert: NodeX509): string | undefined {
  for (const uri of uriSans(cert)) {
    const m = /^spiffe:\/\/([^/]+)\/?$/.exec(uri)
    if (m !== null) return m[1]!.toLowerCase()
  }
  return undefined
}

interface LoadedCa {
  readonly cert: x509.X509Certificate
  readonly node: NodeX509
  readonly key: CryptoKey
  readonly trustDomain: string
  readonly datacenter: string
}

const CURVES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' }

async function loadCa (ca: { certPem: string, keyPem: string }, where: string): Promise<LoadedCa> {
  let node: NodeX509
  let cert: x509.X509Certificate
  try {
    node = new NodeX509(ca.certPem)
    cert = new x509.X509Certificate(ca.certPem)
  } catch (err) {
    throw fastmeshError('IDENTITY_INVALID', [where, `not a PEM certificate (${(err as Error).message})`], err)
  }
  if (!node.ca) throw fastmeshError('IDENTITY_INVALID', [where, 'the certificate is not a CA (basicConstraints CA:false)'])
  const trustDomain = caTrustDomain(node)
  if (trustDomain === undefined) throw fastmeshError('IDENTITY_INVALID', [where, 'the CA certificate has no spiffe://<trust-domain> URI SAN'])
  let keyObject
  try {
    keyObject = createPrivateKey(ca.keyPem)
  } catch (err) {
    throw fastmeshError('IDENTITY_INVALID', [where, `the CA key is not a PEM private key (${(err as Error).message})`], err)
  }
  if (!node.checkPrivateKey(keyObject)) throw fastmeshError('IDENTITY_INVALID', [where, 'the CA key does not match the CA certificate'])
  const curve = keyObject.asymmetricKeyType === 'ec' ? CURVES[keyObject.asymmetricKeyDetails?.namedCurve ?? ''] : undefined
  if (curve === undefined) throw fastmeshError('IDENTITY_INVALID', [where, `the CA key must be ECDSA (P-256, P-384 or P-521), got ${keyObject.asymmetricKeyType ?? 'unknown'}`])
  const der = keyObject.export({ format: 'der', type: 'pkcs8' })
  const key = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: curve }, false, ['sign'])
  const datacenter = cert.subjectName.getField('OU')[0] ?? DEFAULT_DATACENTER
  return { cert, node, key, trustDomain, datacenter: isServiceName(datacenter) ? datacenter : DEFAULT_DATACENTER }
}

/** Issues an ECDSA P-256 leaf for `service`, signed by `ca`, in memory. */
export async function issueLeafInMemory (ca: { certPem: string, keyPem: string }, service: string, opts: InMemoryLeafOptions = {}): Promise<LeafPem> {
  assertServiceName(service)
  const loaded = await loadCa(ca, 'CA')
  return await issueWith(loaded, service, opts)
}

async function issueWith (ca: LoadedCa, service: string, opts: InMemoryLeafOptions): Promise<LeafPem> {
  const datacenter = opts.datacenter ?? ca.datacenter
  assertDatacenter(datacenter)
  const window = validity(opts, 'validityHours', opts.validityHours ?? 72, HOUR)
  const notBefore = window.notBefore
  let notAfter = window.notAfter
  // A leaf cannot outlive its CA; cap it (unless the caller asked for exact dates).
  if (opts.notAfter === undefined && notAfter.getTime() > ca.cert.notAfter.getTime()) notAfter = ca.cert.notAfter
  assertDates(notBefore, notAfter)
  const spiffeId = opts.spiffeId ?? serviceSpiffeId(ca.trustDomain, datacenter, service)
  const keys = await generateKeys()
  const caKeyId = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: newSerial(),
    subject: [{ CN: [service] }],
    issuer: ca.cert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      caKeyId !== undefined ? new x509.AuthorityKeyIdentifierExtension(caKeyId) : await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey),
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: spiffeId },
        ...(opts.extraUris ?? []).map((value) => ({ type: 'url' as const, value })),
        ...(opts.dnsNames ?? [service]).map((value) => ({ type: 'dns' as const, value }))
      ])
    ]
  })
  const certPem = pemOf(cert)
  const node = new NodeX509(certPem)
  return {
    service,
    spiffeId,
    certPem,
    keyPem: await privateKeyPem(keys.privateKey),
    notBefore: new Date(node.validFrom),
    notAfter: new Date(node.validTo),
    serial: node.serialNumber
  }
}

async function exists (file: string): Promise<boolean> {
  try {
    await stat(file)
    return true
  } catch {
    return false
  }
}

/**
 * Writes `text` to `file` through a temporary file and a rename, so a watcher never reads a
 * half-written certificate. The temporary name starts with a dot and does not end in .pem.
 */
async function writeAtomic (dir: string, name: string, text: string, mode: number): Promise<void> {
  const tmp = join(dir, `.${name}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  try {
    await writeFile(tmp, text, { mode })
    await rename(tmp, join(dir, name))
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}

export interface CreateLocalCaOptions extends CaOptions {
  /**
   * Replace an existing CA; its certificate is kept as roots/previous-<serial>.pem, and its
   * trust domain and datacenter are the defaults of the new one.
   */
  force?: boolean
}

export interface CreatedCa extends CaPem {
  readonly certFile: string
  readonly keyFile: string
  /** Where the replaced CA's certificate went (with `force`), if there was one. */
  readonly previousRootFile?: string
}

/** Creates the CA in `dir` (made if missing, mode 0700): ca.pem and ca-key.pem (0600). */
export async function createLocalCa (dir: string, opts: CreateLocalCaOptions = {}): Promise<CreatedCa> {
  const certFile = join(dir, CA_FILE)
  const keyFile = join(dir, CA_KEY_FILE)
  const had = await exists(certFile) || await exists(keyFile)
  if (had && opts.force !== true) throw fastmeshError('IDENTITY_CA_EXISTS', [dir])
  // A replacement CA keeps the old one's trust domain and datacenter unless told otherwise:
  // leaves of the old CA stay valid identities while they are reissued.
  const old = had ? await readFile(certFile, 'utf8').catch(() => undefined) : undefined
  let oldCert: x509.X509Certificate | undefined
  let oldNode: NodeX509 | undefined
  try {
    if (old !== undefined) {
      oldNode = new NodeX509(old)
      oldCert = new x509.X509Certificate(old)
    }
  } catch {
    oldNode = undefined
    oldCert = undefined
  }
  const derivedTd = oldNode !== undefined ? caTrustDomain(oldNode) : undefined
  const derivedDc = oldCert?.subjectName.getField('OU')[0]
  const ca = await createCaInMemory({
    ...opts,
    trustDomain: opts.trustDomain ?? derivedTd ?? DEFAULT_TRUST_DOMAIN,
    datacenter: opts.datacenter ?? (isServiceName(derivedDc) ? derivedDc : DEFAULT_DATACENTER)
  })
  await mkdir(dir, { recursive: true, mode: 0o700 })
  let previousRootFile: string | undefined
  if (old !== undefined && oldNode !== undefined && oldNode.ca) {
    // Keep trusting the old CA until its leaves are reissued: rotation without dropping traffic.
    const name = `previous-${oldNode.serialNumber}.pem`
    await mkdir(join(dir, ROOTS_DIR), { recursive: true, mode: 0o700 })
    previousRootFile = join(dir, ROOTS_DIR, name)
    await writeAtomic(join(dir, ROOTS_DIR), name, old, 0o644)
  }
  // Key first: a reader seeing the new ca.pem finds the matching key.
  await writeAtomic(dir, CA_KEY_FILE, ca.keyPem, 0o600)
  await writeAtomic(dir, CA_FILE, ca.certPem, 0o644)
  return { ...ca, certFile, keyFile, ...(previousRootFile !== undefined ? { previousRootFile } : {}) }
}

async function readCaFiles (dir: string): Promise<{ certPem: string, keyPem: string }> {
  const read = async (name: string): Promise<string> => {
    try {
      return await readFile(join(dir, name), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw fastmeshError('IDENTITY_MISSING', [join(dir, name), `fastmesh certs init --dir ${dir}`], err)
      throw fastmeshError('IDENTITY_INVALID', [join(dir, name), (err as Error).message], err)
    }
  }
  return { certPem: await read(CA_FILE), keyPem: await read(CA_KEY_FILE) }
}

export interface IssuedLeaf extends LeafPem {
  readonly certFile: string
  readonly keyFile: string
}

/** Issues a leaf for `service` from the CA in `dir`: writes <service>.pem and <service>-key.pem (0600). */
export async function issueLeaf (dir: string, service: string, opts: LeafOptions = {}): Promise<IssuedLeaf> {
  assertServiceName(service)
  const ca = await loadCa(await readCaFiles(dir), join(dir, CA_FILE))
  const leaf = await issueWith(ca, service, { ...(opts.datacenter !== undefined ? { datacenter: opts.datacenter } : {}), ...(opts.validityHours !== undefined ? { validityHours: opts.validityHours } : {}), ...(opts.notBefore !== undefined ? { notBefore: opts.notBefore } : {}), ...(opts.notAfter !== undefined ? { notAfter: opts.notAfter } : {}) })
  const certFile = join(dir, leafCertFile(service))
  const keyFile = join(dir, leafKeyFile(service))
  // Key first, then the certificate: a reader that sees the new cert finds its key.
  await writeAtomic(dir, leafKeyFile(service), leaf.keyPem, 0o600)
  await writeAtomic(dir, leafCertFile(service), leaf.certPem, 0o644)
  return { ...leaf, certFile, keyFile }
}

export interface ListedCert {
  /** `ca`, `root` (roots/*.pem) or `leaf`. */
  readonly kind: 'ca' | 'root' | 'leaf'
  readonly file: string
  /** The service for leaves. */
  readonly service?: string
  /** The leaf's SPIFFE ID, or the CA's spiffe://<trust-domain>. */
  readonly spiffeId?: string
  readonly notBefore?: Date
  readonly notAfter?: Date
  readonly serial?: string
  /** Why the file is not usable (unparseable, wrong SAN, key missing or not matching). */
  readonly problem?: string
}

/** Everything in a certs directory, for `fastmesh certs show`; leaves are checked as FilesIdentityProvider does. */
export async function listCertificates (dir: string): Promise<ListedCert[]> {
  const names = await readdir(dir)
  const parse = async (file: string): Promise<NodeX509 | Error> => {
    try {
      return new NodeX509(await readFile(file, 'utf8'))
    } catch (err) {
      return err as Error
    }
  }
  const base = (kind: ListedCert['kind'], file: string, node: NodeX509) => ({ kind, file, notBefore: new Date(node.validFrom), notAfter: new Date(node.validTo), serial: node.serialNumber })
  const out: ListedCert[] = []
  const roots: Array<{ node: NodeX509, current: boolean }> = []
  const describeRoot = async (kind: 'ca' | 'root', file: string): Promise<void> => {
    const node = await parse(file)
    if (node instanceof Error) {
      out.push({ kind, file, problem: `cannot read: ${node.message}` })
      return
    }
    const td = caTrustDomain(node)
    if (node.ca) roots.push({ node, current: kind === 'ca' })
    out.push({ ...base(kind, file, node), ...(td !== undefined ? { spiffeId: `spiffe://${td}` } : {}), ...(node.ca ? {} : { problem: 'not a CA certificate' }) })
  }
  if (names.includes(CA_FILE)) await describeRoot('ca', join(dir, CA_FILE))
  if (names.includes(ROOTS_DIR)) {
    const extra = (await readdir(join(dir, ROOTS_DIR)).catch(() => [] as string[])).filter((n) => n.endsWith('.pem') && !n.startsWith('.')).sort()
    for (const n of extra) await describeRoot('root', join(dir, ROOTS_DIR, n))
  }
  const trustDomain = roots.find((r) => r.current) !== undefined ? caTrustDomain(roots.find((r) => r.current)!.node) : undefined
  const leaves = names.filter((n) => n.endsWith('.pem') && !n.endsWith('-key.pem') && n !== CA_FILE && !n.startsWith('.')).sort()
  for (const n of leaves) {
    const service = n.slice(0, -'.pem'.length)
    const file = join(dir, n)
    const node = await parse(file)
    if (node instanceof Error) {
      out.push({ kind: 'leaf', file, service, problem: `cannot read: ${node.message}` })
      continue
    }
    const id = spiffeIdentity(node)
    const spiffeId = id.ok ? id.uri : undefined
    const parsed = id.ok ? id.id : undefined
    const issuer = roots.find((r) => node.checkIssued(r.node) && node.verify(r.node.publicKey))
    let problem: string | undefined
    if (parsed === undefined) problem = id.ok ? 'no service SPIFFE ID in the URI SAN' : id.reason
    else if (parsed.service !== service) problem = `SPIFFE ID names service "${parsed.service}"`
    else if (trustDomain !== undefined && parsed.trustDomain !== trustDomain) problem = `trust domain "${parsed.trustDomain}" is not the CA's "${trustDomain}"`
    else if (issuer === undefined) problem = 'not signed by ca.pem or roots/*.pem'
    else {
      try {
        if (!node.checkPrivateKey(createPrivateKey(await readFile(join(dir, leafKeyFile(service)), 'utf8')))) problem = `${leafKeyFile(service)} does not match`
      } catch (err) {
        problem = `${leafKeyFile(service)}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : (err as Error).message}`
      }
    }
    if (problem === undefined && issuer !== undefined && !issuer.current) problem = 'signed by a previous CA (roots/): reissue it'
    out.push({ ...base('leaf', file, node), service, ...(spiffeId !== undefined ? { spiffeId } : {}), ...(problem !== undefined ? { problem } : {}) })
  }
  return out
}
