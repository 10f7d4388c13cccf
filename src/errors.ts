// The one error catalogue: every error fastmesh raises or answers with has a stable
// FASTMESH_ERR_* code, an HTTP status where it reaches a client, and a line for docs/errors.md.
import createError from '@fastify/error'

export interface CatalogueEntry {
  readonly code: string
  readonly statusCode: number
  /** util.format template; %s are filled from the constructor arguments. */
  readonly message: string
  /** One sentence for docs/errors.md: when it happens and what to do. */
  readonly description: string
}

function entry<C extends string> (code: C, statusCode: number, message: string, description: string) {
  return { code, statusCode, message, description } as const
}

/** Kept in step with docs/errors.md by test/unit/errors.test.ts. */
export const catalogue = {
  NO_ROUTE: entry('FASTMESH_ERR_NO_ROUTE', 404, 'No route matches %s %s (host %s)',
    'No configured route matched the request\'s host, path, method, headers and query. Check `GET /routes` on the admin listener.'),
  NO_HEALTHY_ENDPOINT: entry('FASTMESH_ERR_NO_HEALTHY_ENDPOINT', 503, 'Service "%s" has no healthy endpoint',
    'The destination service is known but none of its endpoints is passing its health checks. Check `GET /services` on the admin listener.'),
  OVERFLOW: entry('FASTMESH_ERR_OVERFLOW', 503, 'Service "%s" is over its circuit-breaker limit %s (%s)',
    'A circuit-breaker limit of the destination (`services.<name>.circuitBreaker`: concurrent requests, pending requests or concurrent retries) is reached; the gateway answers at once instead of queueing, and the header `x-fastmesh-overflow` names the limit.'),
  RATE_LIMITED: entry('FASTMESH_ERR_RATE_LIMITED', 429, 'Rate limit of route "%s" reached (%s requests per %s); retry in %s s',
    'The route\'s `rate-limit` plugin counted more requests for this key (client, caller, header or route) in the window than `max`; `Retry-After` and the `RateLimit-*` headers say when to come back.'),
  RATE_LIMIT_UNAVAILABLE: entry('FASTMESH_ERR_RATE_LIMIT_UNAVAILABLE', 503, 'Rate limit store of route "%s" is unavailable: %s',
    'A `rate-limit` plugin with a Redis store and `failMode: closed` could not reach Redis within its `timeout`; with `failMode: open` such requests are let through instead.'),
  FAULT_INJECTED: entry('FASTMESH_ERR_FAULT_INJECTED', 503, 'Fault injected by route "%s": abort with %s',
    'The route\'s `fault-injection` plugin aborted this request on purpose (its `abort.status` is the answer\'s status); the response header `x-fastmesh-fault: abort` marks it.'),
  IP_DENIED: entry('FASTMESH_ERR_IP_DENIED', 403, 'Client address %s may not call route "%s"',
    'The route\'s `ip-filter` plugin refused the client address (not in `allow`, or in `deny`); the address is the connection\'s peer, or the first X-Forwarded-For address when `gateway.trustForwardedHeaders` is on.'),
  UNAUTHENTICATED: entry('FASTMESH_ERR_UNAUTHENTICATED', 401, 'Route "%s" needs a valid bearer token: %s',
    'The route\'s `jwt` plugin found no `Authorization: Bearer` token, or the token does not verify (malformed, bad signature, expired or not yet valid, wrong issuer or audience, a key that is not known, or a JWKS that could not be fetched within its timeout); `WWW-Authenticate` carries the RFC 6750 error. The token itself is never logged or echoed.'),
  FORBIDDEN_CLAIMS: entry('FASTMESH_ERR_FORBIDDEN_CLAIMS', 403, 'The token may not call route "%s": %s',
    'The route\'s `jwt` plugin verified the token, but it lacks a claim (or a claim value) listed in `requiredClaims`; `WWW-Authenticate` says `error="insufficient_scope"`.'),
  OVERLOADED: entry('FASTMESH_ERR_OVERLOADED', 503, 'The gateway is overloaded (%s); retry in %s s',
    'The `load-shedding` plugin found the gateway past one of its thresholds (event-loop delay or utilisation, heap, RSS) and answered at once without calling the upstream; `Retry-After` says when to come back. Admin, health and readiness endpoints are never shed.'),
  BODY_TOO_LARGE: entry('FASTMESH_ERR_BODY_TOO_LARGE', 413, 'Request body exceeds the limit of route "%s" (%s bytes)',
    'The route\'s `body-limit` plugin refused a body larger than its `maxBytes`: a declared Content-Length before the upstream is called, a body of unknown length (chunked) the moment the bytes streamed past the limit (the upstream\'s request is aborted; an answer already begun is cut). The connection is closed after it.'),
  UPSTREAM_FAILURE: entry('FASTMESH_ERR_UPSTREAM_FAILURE', 502, 'Upstream %s of service "%s" failed: %s',
    'The gateway could not connect to the chosen endpoint, or it answered with something that is not valid HTTP.'),
  UPSTREAM_TIMEOUT: entry('FASTMESH_ERR_UPSTREAM_TIMEOUT', 504, 'Upstream %s of service "%s" did not answer within %s ms',
    'The endpoint did not send response headers within the route\'s `timeout`.'),
  REQUEST_HEADERS_TOO_LARGE: entry('FASTMESH_ERR_REQUEST_HEADERS_TOO_LARGE', 431, 'Request headers exceed %s bytes',
    'The request\'s header section is larger than `limits.maxHeaderBytes`.'),
  BAD_REQUEST: entry('FASTMESH_ERR_BAD_REQUEST', 400, 'Malformed request: %s',
    'The request is not valid HTTP/1.1 (or its path cannot be normalised).'),
  BAD_HOST: entry('FASTMESH_ERR_BAD_HOST', 400, 'Invalid Host header: %s',
    'The request has no Host header (HTTP/1.1), several Host lines, or a value that is not one host name or IP literal with an optional port 0-65535 (RFC 9112 §3.2); it is refused before any route or upstream is chosen.'),
  REQUEST_TIMEOUT: entry('FASTMESH_ERR_REQUEST_TIMEOUT', 408, 'Request not received in time: %s',
    'The client sent the request headers slower than `limits.headerTimeout`, or the whole request slower than `limits.requestTimeout`; the connection is closed.'),
  URI_TOO_LONG: entry('FASTMESH_ERR_URI_TOO_LONG', 414, 'Request line exceeds %s bytes',
    'The request target alone is larger than `limits.maxHeaderBytes`; shorten the URL (or move data into the body).'),
  EXPECTATION_FAILED: entry('FASTMESH_ERR_EXPECTATION_FAILED', 417, 'Expect "%s" is not supported; only 100-continue is',
    'The request carried an `Expect` header other than `100-continue`, which the gateway cannot meet.'),
  METHOD_NOT_IMPLEMENTED: entry('FASTMESH_ERR_METHOD_NOT_IMPLEMENTED', 501, 'Method %s is not supported by the gateway',
    'CONNECT (tunnelling) is not offered, and methods Node\'s HTTP parser does not know (`http.METHODS`) cannot be received.'),
  HTTP_VERSION_NOT_SUPPORTED: entry('FASTMESH_ERR_HTTP_VERSION_NOT_SUPPORTED', 505, 'HTTP version %s is not supported; use HTTP/1.1 or HTTP/1.0',
    'The request line names an HTTP version other than 1.0 or 1.1 (for example `HTTP/2.0`, or the HTTP/2 connection preface on a plaintext listener).'),
  SHUTTING_DOWN: entry('FASTMESH_ERR_SHUTTING_DOWN', 503, 'The gateway is shutting down',
    'The gateway is draining before exit; clients should retry on another replica.'),
  ROUTE_PLUGIN: entry('FASTMESH_ERR_ROUTE_PLUGIN', 400, '%s',
    'A route plugin refused the request with an HTTP status but no error code of its own; the status (4xx or 5xx) and the headers are the plugin\'s.'),
  INTERNAL: entry('FASTMESH_ERR_INTERNAL', 500, 'Internal gateway error: %s',
    'A bug in fastmesh or in a route plugin. The access log and error log carry the request id.'),
  CONFIG_READ: entry('FASTMESH_ERR_CONFIG_READ', 500, 'Cannot read config %s: %s',
    'The config file does not exist or is not readable.'),
  CONFIG_PARSE: entry('FASTMESH_ERR_CONFIG_PARSE', 500, 'Config %s is not valid YAML/JSON: %s',
    'The config file is not well-formed. The message names the line and column.'),
  CONFIG_INVALID: entry('FASTMESH_ERR_CONFIG_INVALID', 500, 'Config %s is invalid:\n%s',
    'The config document does not match the schema (docs/config.md) or refers to something that does not exist. Each problem is listed with its JSON path and a hint.'),
  PLUGIN_UNKNOWN: entry('FASTMESH_ERR_PLUGIN_UNKNOWN', 500, 'Unknown plugin "%s" at %s',
    'A route names a plugin that is neither built in nor declared under `customPlugins`.'),
  PLUGIN_LOAD: entry('FASTMESH_ERR_PLUGIN_LOAD', 500, 'Cannot load plugin "%s" from %s: %s',
    'A custom plugin module could not be imported or does not export a Fastify plugin.'),
  ADMIN_BAD_REQUEST: entry('FASTMESH_ERR_ADMIN_BAD_REQUEST', 400, 'Invalid admin request: %s',
    'An admin API call had a missing or malformed field; the message names it.'),
  ADMIN_NOT_FOUND: entry('FASTMESH_ERR_ADMIN_NOT_FOUND', 404, '%s',
    'The admin API has no such service, endpoint or resource.'),
  ADMIN_RELOAD_FAILED: entry('FASTMESH_ERR_ADMIN_RELOAD_FAILED', 409, 'Reload refused, the running config stays: %s',
    'A reload was asked for but the new config is invalid; the previous version keeps serving.'),
  ADMIN_MISDIRECTED: entry('FASTMESH_ERR_ADMIN_MISDIRECTED', 421, 'The admin API does not answer to Host %s; %s',
    'The Host header names none of the admin listener\'s own addresses (on loopback: `localhost`, `127.0.0.1`, `[::1]`, the bound address) or `listeners.admin.allowedHosts`, so a web page reaching it through a DNS-rebinding name is refused; call it by one of those names or add the name to allowedHosts (docs/admin.md, "Access").'),
  ADMIN_UNAUTHORIZED: entry('FASTMESH_ERR_ADMIN_UNAUTHORIZED', 401, 'The admin API needs %s',
    'The admin listener has a token (`listeners.admin.token`, env FASTMESH_ADMIN_TOKEN) and the request did not carry it as `Authorization: Bearer <token>`; only `/live` and `/ready` answer without it.'),
  ADMIN_CROSS_ORIGIN: entry('FASTMESH_ERR_ADMIN_CROSS_ORIGIN', 403, 'Cross-origin admin request refused: Origin %s is not this admin listener',
    'A request that changes something (any method but GET and HEAD) came with an `Origin` other than the admin listener\'s own, as a browser sends from another site\'s page; call the admin API from a tool (curl, the CLI), not from a web page.'),
  ADMIN_UNSUPPORTED_MEDIA_TYPE: entry('FASTMESH_ERR_ADMIN_UNSUPPORTED_MEDIA_TYPE', 415, 'Admin request bodies must be application/json, got %s',
    'A request to the admin API that takes a body (or sends one) is not `Content-Type: application/json`; other types are refused so a web page cannot send a form or text/plain request without the browser asking first.'),
  ADMIN_BODY_TOO_LARGE: entry('FASTMESH_ERR_ADMIN_BODY_TOO_LARGE', 413, 'Admin request body exceeds %s bytes',
    'The body of an admin request is larger than the admin API takes (64 KiB); an endpoint registration is a few hundred bytes.'),
  ADMIN_CONFLICT: entry('FASTMESH_ERR_ADMIN_CONFLICT', 409, '%s',
    'An admin change would silently replace or remove what the config file owns (an endpoint declared under `discovery.embedded.services`); change the config instead, or register under another id.'),
  LISTEN: entry('FASTMESH_ERR_LISTEN', 500, 'Cannot listen on %s: %s',
    'A listener address is in use or not permitted.'),
  WORKER_REFUSED: entry('FASTMESH_ERR_WORKER_REFUSED', 500, 'Not every worker could build the new version: %s',
    'With `gateway.workers` above 1 a reload is all or nothing: a worker could not build the new config version (or did not answer in 30 s), so no worker serves it and every worker keeps the running one; the worker\'s error follows.'),
  IDENTITY_UNAVAILABLE: entry('FASTMESH_ERR_IDENTITY_UNAVAILABLE', 503, 'No certificate for %s from the %s identity provider: %s',
    'The gateway has no leaf certificate (or CA roots) for an identity it needs; with Consul, check the agent and Connect.'),
  FORBIDDEN: entry('FASTMESH_ERR_FORBIDDEN', 403, '%s may not call %s: %s',
    'Authorization (Consul intentions or `mesh.authorization.rules`) denied the caller\'s verified identity.'),
  UNKNOWN_LOCAL_SERVICE: entry('FASTMESH_ERR_UNKNOWN_LOCAL_SERVICE', 421, 'This node gateway does not serve "%s"',
    'An inbound mesh call named (by SNI) a service that is not among this node\'s `localServices`.'),
  CLI_USAGE: entry('FASTMESH_ERR_CLI_USAGE', 400, '%s',
    'The command line is wrong; `fastmesh --help` shows the usage.'),
  IDENTITY_MISSING: entry('FASTMESH_ERR_IDENTITY_MISSING', 500, 'Identity file %s is missing; create it with `%s`',
    'A certificate or key the gateway needs is not in the certs directory (or did not appear within the start timeout); the message gives the `fastmesh certs` command that writes it.'),
  IDENTITY_INVALID: entry('FASTMESH_ERR_IDENTITY_INVALID', 500, 'Identity file %s is refused: %s',
    'A certificate or key is unreadable, does not match its key, names another service in its SPIFFE ID or does not chain to a trusted root; a running gateway keeps the previous one.'),
  IDENTITY_BAD_NAME: entry('FASTMESH_ERR_IDENTITY_BAD_NAME', 400, 'Invalid %s "%s": %s',
    'A service name, datacenter or trust domain given to `fastmesh certs` cannot appear in a certificate or file name.'),
  IDENTITY_CA_EXISTS: entry('FASTMESH_ERR_IDENTITY_CA_EXISTS', 500, 'A CA already exists in %s; pass --force to replace it',
    '`fastmesh certs init` refuses to overwrite a CA; with `--force` the old CA certificate is kept under `roots/` so its leaves keep verifying until reissued.')
} as const

export type ErrorKey = keyof typeof catalogue
export type FastmeshErrorCode = (typeof catalogue)[ErrorKey]['code']

export interface FastmeshError extends Error {
  code: FastmeshErrorCode
  statusCode: number
}

const constructors = new Map<ErrorKey, createError.FastifyErrorConstructor>()
for (const [key, e] of Object.entries(catalogue)) {
  constructors.set(key as ErrorKey, createError(e.code, e.message, e.statusCode))
}

/** Makes the catalogue's error `key`; `cause` keeps the underlying error for logs. */
export function fastmeshError (key: ErrorKey, args: unknown[] = [], cause?: unknown): FastmeshError {
  const Ctor = constructors.get(key)!
  const err = new Ctor(...args) as unknown as FastmeshError
  if (cause !== undefined) (err as Error & { cause?: unknown }).cause = cause
  return err
}

export function isFastmeshError (err: unknown): err is FastmeshError {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined
  return typeof code === 'string' && code.startsWith('FASTMESH_ERR_')
}

/** What an error response needs: ours, or a plugin's own (e.g. 429 from a rate limiter). */
export interface ResponseError {
  readonly statusCode: number
  readonly code: string
  readonly message: string
}

/** The small JSON body every gateway-made error response carries. */
export function errorBody (err: ResponseError, requestId: string): string {
  return JSON.stringify({ error: { code: err.code, message: err.message, requestId } })
}
