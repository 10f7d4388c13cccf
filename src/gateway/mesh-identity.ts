// A gateway's mesh identity: the identity provider (Consul's CA or files) holding the leaves
// of the gateway and its local services, and the mesh context made from it (TLS contexts,
// authorization) that listeners, versions and the endpoint layer use.
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import type { MeshContext } from './app.js'
import type { IdentityProvider } from '../identity/types.js'
import { ConsulIdentityProvider } from '../identity/consul-provider.js'
import { MeshTls } from '../identity/mesh-tls.js'
import { Authorizer } from '../identity/authorization.js'
import { configBaseDir } from '../config/load.js'
import type { FastmeshConfig } from '../config/validate.js'
import { durationMs } from '../config/duration.js'
import type { ConsulClient } from '../discovery/consul/client.js'
import { fastmeshError } from '../errors.js'

/** The provider `mesh.identity` names, not started; relative `dir` from the config's base directory. */
export async function identityProviderFor (config: FastmeshConfig, configSource: string, consul: ConsulClient | undefined, log: Logger): Promise<IdentityProvider> {
  const mesh = config.mesh
  const selfIdentity = config.gateway.name
  if (mesh.identity.provider === 'consul') {
    if (consul === undefined) throw fastmeshError('IDENTITY_UNAVAILABLE', [selfIdentity, 'consul', 'mesh.identity.provider is consul but discovery.consul is not configured'])
    return new ConsulIdentityProvider(consul, log)
  }
  const dir = mesh.identity.dir
  if (dir === undefined) throw fastmeshError('IDENTITY_UNAVAILABLE', [selfIdentity, 'files', 'mesh.identity.dir is required with provider files'])
  const { FilesIdentityProvider } = await import('../identity/files-provider.js')
  const id = mesh.identity
  return new FilesIdentityProvider({
    dir: resolve(configBaseDir(configSource), dir),
    log,
    selfIssue: id.selfIssue,
    leafValidityMs: durationMs(id.leafValidity),
    warnBeforeMs: durationMs(id.warnBefore),
    ...(id.renewBefore !== undefined ? { renewBeforeMs: durationMs(id.renewBefore) } : {})
  })
}

/** The identities a gateway holds leaves for: itself, then each local service. */
export function meshIdentities (config: FastmeshConfig): string[] {
  return [config.gateway.name, ...config.localServices.map((s) => s.name)]
}

/** TLS contexts and authorization over a started provider. */
export function meshContextFor (config: FastmeshConfig, identity: IdentityProvider, consul: ConsulClient | undefined, log: Logger): MeshContext {
  const mesh = config.mesh
  return {
    mtls: mesh.mtls as 'strict' | 'permissive',
    tls: new MeshTls(identity, log.child({ component: 'identity' })),
    selfIdentity: config.gateway.name,
    authorizer: new Authorizer({
      rules: mesh.authorization.rules,
      provider: mesh.authorization.provider,
      defaultAction: mesh.authorization.defaultAction,
      cacheTtlMs: durationMs(mesh.authorization.cacheTtl),
      consul,
      log: log.child({ component: 'authorization' })
    })
  }
}
