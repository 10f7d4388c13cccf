// Config validation: every problem reported at once, each with its exact JSON path and a hint.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { checkConfig, ConfigError, loadConfigText, type CheckedConfig } from '../../src/config/load.js'
import { validateConfigDocument, type ConfigProblem } from '../../src/config/validate.js'

/** A valid document with two services; tests add or break one thing. */
function base (extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    discovery: {
      embedded: {
        services: {
          users: { endpoints: [{ address: '127.0.0.1', port: 9301 }] },
          orders: { endpoints: [{ address: '127.0.0.1', port: 9201 }] }
        }
      }
    },
    ...extra
  }
}

function route (name: string, more: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, destination: { service: 'users' }, ...more }
}

function problems (doc: unknown): readonly ConfigProblem[] {
  return validateConfigDocument(structuredClone(doc)).problems
}

function paths (doc: unknown): string[] {
  return problems(doc).map((p) => p.path)
}

/** The single problem a document has; fails when there are none or several. */
function onlyProblem (doc: unknown): ConfigProblem {
  const ps = problems(doc)
  assert.equal(ps.length, 1, `expected exactly one problem, got:\n${ps.map((p) => `${p.path}: ${p.message}`).join('\n')}`)
  return ps[0]!
}

function load (doc: unknown, env: NodeJS.ProcessEnv = {}): CheckedConfig {
  return checkConfig(structuredClone(doc), 'test.yaml', env)
}

test('a valid document has no problems and gives a config', () => {
  const result = validateConfigDocument(base({ routes: [route('users')] }))
  assert.deepEqual(result.problems, [])
  assert.ok(result.config)
})

test('a document that is not a mapping is one problem at $', () => {
  for (const doc of [null, 3, 'routes', []]) {
    const p = onlyProblem(doc)
    assert.equal(p.path, '$')
    assert.match(p.message, /must be a mapping/)
  }
})

test('malformed YAML names the line and column', () => {
  const text = 'gateway:\n  name: x\nroutes: [1, 2\nlisteners: {}\n'
  assert.throws(() => loadConfigText(text, 'bad.yaml', {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.equal(err.code, 'FASTMESH_ERR_CONFIG_PARSE')
    assert.match(err.message, /bad\.yaml/)
    assert.match(err.message, /line 4, column 1/)
    assert.equal(err.problems[0]!.hint, 'line 4, column 1')
    assert.doesNotMatch(err.problems[0]!.message, /line 4/, 'the position is in the hint, not repeated in the message')
    assert.ok(err.cause !== undefined, 'keeps the YAML error as cause')
    return true
  })
})

test('duplicate YAML keys are a parse error with their position', () => {
  assert.throws(() => loadConfigText('gateway: {}\ngateway: {}\n', 'dup.yaml', {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.equal(err.code, 'FASTMESH_ERR_CONFIG_PARSE')
    assert.match(err.problems[0]!.message, /unique/)
    assert.equal(err.problems[0]!.hint, 'line 2, column 1')
    return true
  })
})

test('unknown top-level key: path and did-you-mean', () => {
  const p = onlyProblem(base({ rouets: [] }))
  assert.equal(p.path, '$.rouets')
  assert.equal(p.message, 'unknown key "rouets"')
  assert.equal(p.hint, 'did you mean "routes"?')
})

test('misspelt required key in a route is one problem: destinaton → destination', () => {
  const p = onlyProblem(base({ routes: [{ name: 'a', destinaton: { service: 'users' } }] }))
  assert.equal(p.path, '$.routes[0].destinaton')
  assert.equal(p.hint, 'did you mean "destination"?')
})

test('unknown key two levels down: destination.stripPrefx', () => {
  const p = onlyProblem(base({ routes: [route('a', { destination: { service: 'users', stripPrefx: true } })] }))
  assert.equal(p.path, '$.routes[0].destination.stripPrefx')
  assert.equal(p.hint, 'did you mean "stripPrefix"?')
})

test('unknown key deep inside a map and an array: endpoints[0].adress', () => {
  const doc = base()
  const services = (doc.discovery as { embedded: { services: Record<string, unknown> } }).embedded.services
  services.users = { endpoints: [{ adress: '127.0.0.1', port: 1 }] }
  const p = onlyProblem(doc)
  assert.equal(p.path, '$.discovery.embedded.services.users.endpoints[0].adress')
  assert.equal(p.hint, 'did you mean "address"?')
})

test('unknown key with nothing close lists the allowed keys', () => {
  const p = onlyProblem(base({ gateway: { zzzzzzzz: 1 } }))
  assert.equal(p.path, '$.gateway.zzzzzzzz')
  assert.match(p.hint ?? '', /allowed keys: name, mode, trustForwardedHeaders/)
})

test('a port given as a string is a type error at the port', () => {
  const p = onlyProblem(base({ listeners: { http: { port: '8080' } } }))
  assert.equal(p.path, '$.listeners.http.port')
  assert.equal(p.message, 'must be integer, got string "8080"')
})

test('a port out of range names the range', () => {
  const p = onlyProblem(base({ listeners: { admin: { port: 70000 } } }))
  assert.equal(p.path, '$.listeners.admin.port')
  assert.match(p.message, /65535/)
})

test('routes given as a mapping is a type error at $.routes', () => {
  const p = onlyProblem(base({ routes: { users: route('users') } }))
  assert.equal(p.path, '$.routes')
  assert.equal(p.message, 'must be array, got an object')
})

test('enum error lists the values and guesses: gateway.mode "edgee"', () => {
  const p = onlyProblem(base({ gateway: { mode: 'edgee' } }))
  assert.equal(p.path, '$.gateway.mode')
  assert.equal(p.message, 'must be one of "edge", "node", got string "edgee"')
  assert.equal(p.hint, 'did you mean "edge"?')
})

test('a duration without a unit is a pattern error at the key', () => {
  const p = onlyProblem(base({ routes: [route('a', { timeout: '15' })] }))
  assert.equal(p.path, '$.routes[0].timeout')
  assert.match(p.message, /does not match/)
})

test('match.path with two keys: one problem at match.path', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { path: { prefix: '/a', exact: '/a' } } })] }))
  assert.equal(p.path, '$.routes[0].match.path')
  assert.equal(p.message, 'has "prefix" and "exact"; give exactly one')
})

test('match.path with an unknown key: path to the key and did-you-mean', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { path: { prefx: '/a' } } })] }))
  assert.equal(p.path, '$.routes[0].match.path.prefx')
  assert.equal(p.message, 'unknown key "prefx"')
  assert.equal(p.hint, 'did you mean "prefix"?')
})

test('match.path with one right key and a wrong value reports that value, not the union', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { path: { prefix: 'api' } } })] }))
  assert.equal(p.path, '$.routes[0].match.path.prefix')
  assert.match(p.message, /"api" does not match \^\//)
})

test('match.path given as a string or empty mapping names the four keys', () => {
  const s = onlyProblem(base({ routes: [route('a', { match: { path: '/api' } })] }))
  assert.equal(s.path, '$.routes[0].match.path')
  assert.match(s.message, /must be a mapping with one of the keys exact, prefix, template, regex/)
  const e = onlyProblem(base({ routes: [route('a', { match: { path: {} } })] }))
  assert.equal(e.path, '$.routes[0].match.path')
  assert.match(e.message, /is empty/)
})

test('union errors of one route do not hide or leak into another route (routes[1] vs routes[10])', () => {
  const routes = Array.from({ length: 11 }, (_, i) => route(`r${i}`, { match: { path: { prefix: `/r${i}` } } }))
  routes[1] = route('r1', { match: { path: { prefix: 'no-slash' } } })
  routes[10] = route('r10', { match: { path: { prefix: '/x', exact: '/x' } } })
  assert.deepEqual(paths(base({ routes })), ['$.routes[1].match.path.prefix', '$.routes[10].match.path'])
})

test('duplicate route names: the second is reported, naming the first', () => {
  const p = onlyProblem(base({ routes: [route('users'), route('users')] }))
  assert.equal(p.path, '$.routes[1].name')
  assert.equal(p.message, 'duplicate route name "users"')
  assert.match(p.hint ?? '', /\$\.routes\[0\]/)
})

test('a route to an unknown service: did-you-mean among the declared services', () => {
  const p = onlyProblem(base({ routes: [route('a', { destination: { service: 'user' } })] }))
  assert.equal(p.path, '$.routes[0].destination.service')
  assert.equal(p.message, 'unknown service "user"')
  assert.equal(p.hint, 'did you mean "users"?')
})

test('a route to an unknown service with nothing close lists the known ones', () => {
  const p = onlyProblem(base({ routes: [route('a', { destination: { service: 'billing' } })] }))
  assert.match(p.hint ?? '', /known: users, orders/)
})

test('an invalid path regex is reported at match.path.regex', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { path: { regex: '/(a' } } })] }))
  assert.equal(p.path, '$.routes[0].match.path.regex')
  assert.match(p.message, /^invalid regular expression/)
})

test('an invalid header regex is reported at the header condition', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { headers: [{ name: 'x', regex: '[' }] } })] }))
  assert.equal(p.path, '$.routes[0].match.headers[0].regex')
})

test('a bad template is reported at match.path.template', () => {
  for (const template of ['/a/:id/:id', '/a/*/b', '/a/x:y', '/a//b']) {
    const p = onlyProblem(base({ routes: [route('a', { match: { path: { template } } })] }))
    assert.equal(p.path, '$.routes[0].match.path.template', template)
  }
})

test('stripPrefix without a path prefix is reported at destination.stripPrefix', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { path: { exact: '/a' } }, destination: { service: 'users', stripPrefix: true } })] }))
  assert.equal(p.path, '$.routes[0].destination.stripPrefix')
  assert.equal(p.message, 'needs match.path.prefix')
})

test('stripPrefix with rewritePath is reported at destination', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { path: { prefix: '/a' } }, destination: { service: 'users', stripPrefix: true, rewritePath: '/b' } })] }))
  assert.equal(p.path, '$.routes[0].destination')
})

test('rewritePath naming a parameter the path does not capture', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { path: { template: '/users/:id' } }, destination: { service: 'users', rewritePath: '/v1/:user' } })] }))
  assert.equal(p.path, '$.routes[0].destination.rewritePath')
  assert.equal(p.message, 'parameter ":user" is not captured by match.path')
  assert.equal(p.hint, 'captured: :id')
})

test('rewritePath may use regex named groups', () => {
  assert.deepEqual(problems(base({ routes: [route('a', { match: { path: { regex: '/u/(?<id>[0-9]+)' } }, destination: { service: 'users', rewritePath: '/v1/:id' } })] })), [])
})

test('a header condition with two conditions, and one with none', () => {
  const doc = base({ routes: [route('a', { match: { headers: [{ name: 'x', exact: '1', prefix: '1' }, { name: 'y' }] } })] })
  const ps = problems(doc)
  assert.deepEqual(ps.map((p) => p.path), ['$.routes[0].match.headers[0]', '$.routes[0].match.headers[1]'])
  assert.equal(ps[0]!.message, 'has exact and prefix; give exactly one')
  assert.equal(ps[1]!.message, 'has no condition')
})

test('a query condition with two conditions is reported at match.query[i]', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { query: [{ name: 'q', present: true, regex: 'x' }] } })] }))
  assert.equal(p.path, '$.routes[0].match.query[0]')
})

test('an unknown plugin name: did-you-mean among built-in and custom plugins', () => {
  const p = onlyProblem(base({ routes: [route('a', { plugins: [{ name: 'header' }] })] }))
  assert.equal(p.path, '$.routes[0].plugins[0].name')
  assert.equal(p.message, 'unknown plugin "header"')
  assert.equal(p.hint, 'did you mean "headers"?')
  const custom = base({ customPlugins: { 'audit-log': { module: './audit.js' } }, routes: [route('a', { plugins: [{ name: 'audit-lg' }] })] })
  assert.equal(onlyProblem(custom).hint, 'did you mean "audit-log"?')
})

test('a custom plugin declared under customPlugins is accepted', () => {
  assert.deepEqual(problems(base({ customPlugins: { audit: { module: './audit.js' } }, routes: [route('a', { plugins: [{ name: 'audit' }] })] })), [])
})

test('invalid options of a built-in plugin: the path points into the options', () => {
  const typo = onlyProblem(base({ routes: [route('a', { plugins: [{ name: 'headers', options: { requst: {} } }] })] }))
  assert.equal(typo.path, '$.routes[0].plugins[0].options.requst')
  assert.equal(typo.hint, 'did you mean "request"?')
  const type = onlyProblem(base({ routes: [route('a', { plugins: [{ name: 'headers', options: { response: { set: { 'x-a': 5 } } } }] })] }))
  assert.equal(type.path, '$.routes[0].plugins[0].options.response.set["x-a"]')
  assert.match(type.message, /must be string/)
})

test('a header name that is not a token is reported, not silently ignored (regression: pattern-keyed records)', () => {
  const p = onlyProblem(base({ routes: [route('a', { plugins: [{ name: 'headers', options: { request: { set: { 'bad header': 'v' } } } }] })] }))
  assert.equal(p.path, '$.routes[0].plugins[0].options.request.set["bad header"]')
  assert.match(p.message, /not a valid name/)
})

test('a service name that is not valid is reported, not left unchecked (regression: pattern-keyed records)', () => {
  const doc = base()
  const services = (doc.discovery as { embedded: { services: Record<string, unknown> } }).embedded.services
  services['bad name!'] = { endpoints: 'not an array' }
  const p = onlyProblem(doc)
  assert.equal(p.path, '$.discovery.embedded.services["bad name!"]')
  assert.match(p.hint ?? '', /names must match/)
})

test('duplicate endpoints of one service are reported at the second', () => {
  const doc = base()
  const services = (doc.discovery as { embedded: { services: Record<string, unknown> } }).embedded.services
  services.users = { endpoints: [{ address: '127.0.0.1', port: 1 }, { address: '127.0.0.1', port: 1 }] }
  assert.equal(onlyProblem(doc).path, '$.discovery.embedded.services.users.endpoints[1]')
})

test('hosts accept names, wildcards, ports and [IPv6] literals', () => {
  assert.deepEqual(problems(base({ routes: [route('a', { match: { hosts: ['api.example.com', '*.example.com', 'x.test:8080', '[::1]', '[::1]:8080'] } })] })), [])
  assert.deepEqual(paths(base({ routes: [route('a', { match: { hosts: ['a b', 'ok.test'] } })] })), ['$.routes[0].match.hosts[0]'])
})

test('three independent mistakes give three problems, each at its path', () => {
  const doc = base({
    gateway: { mode: 'edgee' },
    listeners: { http: { port: 'eighty' } },
    routes: [route('a', { destination: { service: 'users', stripPrefx: true } })]
  })
  assert.deepEqual(paths(doc), ['$.gateway.mode', '$.listeners.http.port', '$.routes[0].destination.stripPrefx'])
})

test('schema and cross-reference mistakes are reported in the same run', () => {
  const doc = base({
    gateway: { mode: 'edgee' },
    routes: [
      route('a', { destination: { service: 'user' } }),
      route('b', { match: { path: { regex: '(' } } }),
      route('c', { destinaton: { service: 'users' } })
    ]
  })
  assert.deepEqual(paths(doc).sort(), [
    '$.gateway.mode',
    '$.routes[0].destination.service',
    '$.routes[1].match.path.regex',
    '$.routes[2].destinaton'
  ])
})

test('env overrides listener addresses, ports and the log level', () => {
  const { config } = load(base(), {
    FASTMESH_HTTP_PORT: '9999',
    FASTMESH_HTTP_ADDRESS: '0.0.0.0',
    FASTMESH_ADMIN_PORT: '0',
    FASTMESH_ADMIN_ADDRESS: '::1',
    FASTMESH_LOG_LEVEL: 'debug'
  })
  assert.deepEqual(config.listeners.http, { address: '0.0.0.0', port: 9999 })
  assert.deepEqual(config.listeners.admin, { address: '::1', port: 0, allowedHosts: [] })
  assert.equal(config.telemetry.logging.level, 'debug')
})

test('env overrides win over the file and keep the file\'s other listener keys', () => {
  const { config } = load(base({ listeners: { http: { address: '10.0.0.1', port: 80 } } }), { FASTMESH_HTTP_PORT: '81' })
  assert.deepEqual(config.listeners.http, { address: '10.0.0.1', port: 81 })
})

test('a non-numeric FASTMESH_HTTP_PORT is a problem at $.listeners.http.port', () => {
  assert.throws(() => load(base(), { FASTMESH_HTTP_PORT: 'http' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.equal(err.code, 'FASTMESH_ERR_CONFIG_INVALID')
    assert.deepEqual(err.problems.map((p) => p.path), ['$.listeners.http.port'])
    return true
  })
})

test('FASTMESH_TRACING_ENDPOINT turns tracing on towards that collector, FASTMESH_TRACING_RATIO sets the ratio; the file\'s other tracing settings stay', () => {
  const { config } = load(base({ telemetry: { tracing: { enabled: false, serviceName: 'edge-a', otlp: { endpoint: 'http://file:4318', timeout: '3s' } } } }), { FASTMESH_TRACING_ENDPOINT: 'http://jaeger:4318', FASTMESH_TRACING_RATIO: '0.25' })
  assert.equal(config.telemetry.tracing.enabled, true)
  assert.equal(config.telemetry.tracing.otlp.endpoint, 'http://jaeger:4318')
  assert.equal(config.telemetry.tracing.otlp.timeout, '3s')
  assert.equal(config.telemetry.tracing.serviceName, 'edge-a')
  assert.equal(config.telemetry.tracing.sampler.ratio, 0.25)
  assert.equal(load(base(), {}).config.telemetry.tracing.enabled, false, 'off without them')
  assert.throws(() => load(base(), { FASTMESH_TRACING_ENDPOINT: 'http://jaeger:4318', FASTMESH_TRACING_RATIO: 'half' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.deepEqual(err.problems.map((p) => p.path), ['$.telemetry.tracing.sampler.ratio'])
    return true
  })
})

test('an invalid FASTMESH_LOG_LEVEL is an enum problem', () => {
  assert.throws(() => load(base(), { FASTMESH_LOG_LEVEL: 'verbose' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.deepEqual(err.problems.map((p) => p.path), ['$.telemetry.logging.level'])
    return true
  })
})

test('defaults are filled', () => {
  const { config } = load(base({ routes: [route('a', { match: { path: { prefix: '/a' } } })] }))
  const r = config.routes[0]!
  assert.equal(r.timeout, '15s')
  assert.equal(r.idleTimeout, '60s')
  assert.deepEqual(r.plugins, [])
  assert.deepEqual(config.listeners.http, { address: '127.0.0.1', port: 8080 })
  assert.deepEqual(config.listeners.admin, { address: '127.0.0.1', port: 15000, allowedHosts: [] })
  assert.equal(config.gateway.mode, 'edge')
  assert.equal(config.gateway.name, 'fastmesh')
  assert.equal(config.limits.maxHeaderBytes, 16384)
  assert.equal(config.telemetry.logging.level, 'info')
  assert.equal(config.mesh.mtls, 'off')
  assert.deepEqual(config.discovery.embedded.services.users!.endpoints[0], { address: '127.0.0.1', port: 9301, weight: 1, tags: [], meta: {} })
})

test('built-in plugin options get their defaults', () => {
  const { config } = load(base({ routes: [route('a', { plugins: [{ name: 'headers', options: { request: { set: { 'x-a': '1' } } } }] })] }))
  assert.deepEqual(config.routes[0]!.plugins[0]!.options, {
    request: { set: { 'x-a': '1' }, add: {}, remove: [] },
    response: { set: {}, add: {}, remove: [] }
  })
})

test('the loaded config is deeply frozen', () => {
  const { config } = load(base({ routes: [route('a', { match: { path: { prefix: '/a' } } })] }))
  assert.ok(Object.isFrozen(config))
  assert.ok(Object.isFrozen(config.routes))
  assert.ok(Object.isFrozen(config.routes[0]!.match!.path))
  assert.ok(Object.isFrozen(config.discovery.embedded.services.users!.endpoints[0]))
  assert.throws(() => { (config.gateway as { name: string }).name = 'x' }, TypeError)
})

test('checkConfig throws one ConfigError listing every problem in its message', () => {
  assert.throws(() => load(base({ gateway: { mode: 'x' }, routes: [route('a', { destination: { service: 'nope' } })] })), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.equal(err.code, 'FASTMESH_ERR_CONFIG_INVALID')
    assert.equal(err.problems.length, 2)
    assert.match(err.message, /\$\.gateway\.mode/)
    assert.match(err.message, /\$\.routes\[0\]\.destination\.service/)
    return true
  })
})

test('a route method Node\'s parser does not know (FOO) is refused at its JSON path, listing the methods Node accepts', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { methods: ['GET', 'FOO'] } })] }))
  assert.equal(p.path, '$.routes[0].match.methods[1]')
  assert.match(p.message, /unknown method "FOO"/)
  assert.match(p.hint ?? '', /GET, .*POST/)
})

test('a misspelt route method gets a did-you-mean: PSOT → POST', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { methods: ['PSOT'] } })] }))
  assert.equal(p.path, '$.routes[0].match.methods[0]')
  assert.match(p.hint ?? '', /did you mean "POST"\?/)
})

test('a route on CONNECT is refused: every listener answers CONNECT with 501', () => {
  const p = onlyProblem(base({ routes: [route('a', { match: { methods: ['CONNECT'] } })] }))
  assert.equal(p.path, '$.routes[0].match.methods[0]')
  assert.match(p.hint ?? '', /501/)
})

test('extension methods Node knows (PURGE, PROPFIND) are accepted in a route', () => {
  assert.deepEqual(problems(base({ routes: [route('a', { match: { methods: ['PURGE', 'PROPFIND', 'GET'] } })] })), [])
})

test('limits.headerTimeout defaults to 10s, apart from requestTimeout', () => {
  const { config } = load(base())
  assert.equal(config.limits.headerTimeout, '10s')
  assert.equal(config.limits.requestTimeout, '5m')
})

test('services have outlier detection on and generous circuit limits with no config at all', () => {
  const { config } = load(base({ services: { users: {} } }))
  assert.equal(config.services.users!.outlierDetection.enabled, true)
  assert.equal(config.services.users!.outlierDetection.consecutiveGatewayErrors, 5)
  assert.equal(config.services.users!.circuitBreaker.maxRequests, 1024)
  assert.deepEqual(config.services.users!.failover, [])
})

test('a failover loop between services (A → B → A) is refused once, at the first target of the loop', () => {
  const p = onlyProblem(base({ services: { users: { failover: [{ service: 'orders' }] }, orders: { failover: [{ service: 'users' }] } } }))
  assert.equal(p.path, '$.services.users.failover[0].service')
  assert.match(p.message, /failover loop: users → orders → users/)
})

test('a longer failover loop (A → B → C → A) is refused with the whole loop in the message', () => {
  const doc = base({ services: { a: { failover: [{ service: 'b' }] }, b: { failover: [{ service: 'c' }] }, c: { failover: [{ service: 'a' }] } } })
  ;(doc.discovery as Record<string, unknown>).consul = {}
  const p = onlyProblem(doc)
  assert.equal(p.path, '$.services.a.failover[0].service')
  assert.match(p.message, /failover loop: a → b → c → a/)
})

test('a failover target that is the primary itself is refused at its path', () => {
  const p = onlyProblem(base({ services: { users: { subset: { tags: ['v1'] }, failover: [{ subset: { tags: ['v1'] } }] } } }))
  assert.equal(p.path, '$.services.users.failover[0]')
  assert.match(p.message, /fails over to "users" itself/)
})

test('an empty failover target is refused: it would name the primary', () => {
  const p = onlyProblem(base({ services: { users: { failover: [{}] } } }))
  assert.equal(p.path, '$.services.users.failover[0]')
  assert.match(p.hint ?? '', /subset, service, datacenter/)
})

test('a repeated failover target is refused, naming the earlier one', () => {
  const p = onlyProblem(base({ services: { users: { failover: [{ service: 'orders' }, { service: 'orders' }] } } }))
  assert.equal(p.path, '$.services.users.failover[1]')
  assert.match(p.hint ?? '', /\$\.services\.users\.failover\[0\]/)
})

test('a failover target service unknown to the embedded registry is refused with a did-you-mean', () => {
  const p = onlyProblem(base({ services: { users: { failover: [{ service: 'ordres' }] } } }))
  assert.equal(p.path, '$.services.users.failover[0].service')
  assert.match(p.hint ?? '', /did you mean "orders"\?/)
})

test('failover to another datacenter needs discovery.consul', () => {
  const p = onlyProblem(base({ services: { users: { failover: [{ datacenter: 'dc2' }] } } }))
  assert.equal(p.path, '$.services.users.failover[0].datacenter')
})

test('failover to another subset, service and datacenter is accepted with Consul', () => {
  const doc = base({ services: { users: { failover: [{ subset: { tags: ['v1'] } }, { service: 'orders' }, { datacenter: 'dc2' }] } } })
  ;(doc.discovery as Record<string, unknown>).consul = {}
  assert.deepEqual(problems(doc), [])
})

test('durations: 0s is accepted as "no limit" for request time limits', () => {
  assert.deepEqual(paths(base({
    routes: [route('r', { timeout: '0s', requestTimeout: '0s', idleTimeout: '0s', retries: { perTryTimeout: '0s', backoff: { base: '0ms', max: '0ms' } } })],
    limits: { headerTimeout: '0s', requestTimeout: '0s', drainTimeout: '0s' }
  })), [])
})

test('durations: 0s is refused where a limit cannot be off (health-check interval, mirror timeout), with its path', () => {
  const doc = base({ routes: [route('r', { mirror: { service: 'orders', timeout: '0s' } })] })
  ;(doc.discovery as { embedded: { services: { users: Record<string, unknown> } } }).embedded.services.users.healthCheck = { path: '/h', interval: '0s' }
  assert.deepEqual(paths(doc).sort(), ['$.discovery.embedded.services.users.healthCheck.interval', '$.routes[0].mirror.timeout'])
  assert.match(problems(doc)[0]!.message, /must be longer than 0/)
})

test('durations: a duration longer than a timer can wait is refused (a 1000h mirror timeout would fire at once)', () => {
  const p = onlyProblem(base({ routes: [route('r', { mirror: { service: 'orders', timeout: '1000h' } })] }))
  assert.equal(p.path, '$.routes[0].mirror.timeout')
  assert.match(p.message, /longest timer/)
})

test('durations: certificate lifetimes under mesh.identity are not timer-bound', () => {
  const ps = problems(base({ mesh: { identity: { leafValidity: '8760h' } } })).filter((p) => p.message.includes('longest timer'))
  assert.deepEqual(ps, [])
})

test('a service-level perTryTimeout longer than the requestTimeout of a route using it is refused at the route', () => {
  const p = onlyProblem(base({ services: { users: { retries: { perTryTimeout: '5s' } } }, routes: [route('r', { requestTimeout: '2s' })] }))
  assert.equal(p.path, '$.routes[0].requestTimeout')
  assert.match(p.message, /per-try timeout of service "users" \(5s\)/)
})

// --- secrets in problems, addresses, the admin listener -----------------------------------

/** Every problem's text (path, message, hint), for asserting what a refusal would print. */
function problemText (doc: unknown): string {
  return problems(doc).map((p) => `${p.path}: ${p.message} (${p.hint ?? ''})`).join('\n')
}

test('regression: a problem about a secret-named value does not quote the value', () => {
  const doc = base()
  ;(doc.discovery as Record<string, unknown>).consul = { token: 987654321 }
  const p = onlyProblem(doc)
  assert.equal(p.path, '$.discovery.consul.token')
  assert.equal(p.message, 'must be string, got number <redacted>')
  assert.ok(!problemText(doc).includes('987654321'))
})

test('regression: a problem about a credential-bearing header match value does not quote the value', () => {
  const doc = base({ routes: [route('r', { match: { headers: [{ name: 'x-internal-token', exact: 4242424242 }] } })] })
  const text = problemText(doc)
  assert.match(text, /\$\.routes\[0\]\.match\.headers\[0\]\.exact: must be string, got number <redacted>/)
  assert.ok(!text.includes('4242424242'), text)
})

test('regression: a problem quoting a URL does not show the URL\'s password', () => {
  const text = problemText(base({ routes: [route('r', { match: { hosts: ['http://admin:hunter2@shop.example'] } })] }))
  assert.match(text, /\$\.routes\[0\]\.match\.hosts\[0\]/)
  assert.ok(!text.includes('hunter2'), text)
})

test('regression: a Consul address with credentials is refused at validation, without printing the password', () => {
  for (const address of ['http://fastmesh:s3cretpw@consul.internal:8500', 'fastmesh:s3cretpw@consul.internal:8500']) {
    const doc = base()
    ;(doc.discovery as Record<string, unknown>).consul = { address }
    const p = onlyProblem(doc)
    assert.equal(p.path, '$.discovery.consul.address')
    assert.match(p.message, /credentials/)
    assert.match(p.message, /discovery\.consul\.token or env CONSUL_HTTP_TOKEN/)
    assert.ok(!problemText(doc).includes('s3cretpw'))
  }
})

test('a Consul address the gateway could not start with is refused at validation', () => {
  for (const address of ['a:b:c', 'consul:99999', 'http://consul:8500/v1']) {
    const doc = base()
    ;(doc.discovery as Record<string, unknown>).consul = { address }
    assert.deepEqual(paths(doc), ['$.discovery.consul.address'], address)
  }
  const ok = base()
  ;(ok.discovery as Record<string, unknown>).consul = { address: 'https://[::1]:8501' }
  assert.deepEqual(problems(ok), [])
})

test('an embedded endpoint address that is neither an IP address nor a host name is refused', () => {
  const doc = base()
  ;(doc.discovery as { embedded: { services: Record<string, unknown> } }).embedded.services.users = { endpoints: [{ address: 'not an address!', port: 1 }, { address: '[::1]', port: 2 }, { address: '::1', port: 3 }, { address: 'users.internal', port: 4 }] }
  assert.deepEqual(paths(doc), ['$.discovery.embedded.services.users.endpoints[0].address', '$.discovery.embedded.services.users.endpoints[1].address'])
})

test('an endpoint id with "/" or ".." is refused', () => {
  for (const id of ['a/b', '..', 'x..y', 'has space']) {
    const doc = base()
    ;(doc.discovery as { embedded: { services: Record<string, unknown> } }).embedded.services.users = { endpoints: [{ id, address: '127.0.0.1', port: 1 }] }
    assert.deepEqual(paths(doc), ['$.discovery.embedded.services.users.endpoints[0].id'], id)
  }
})

test('regression: an admin listener off loopback without a token is refused, naming listeners.admin.token and FASTMESH_ADMIN_TOKEN', () => {
  for (const address of ['0.0.0.0', '::', '10.1.2.3', 'gateway.internal']) {
    const p = onlyProblem(base({ listeners: { admin: { address, port: 15000 } } }))
    assert.equal(p.path, '$.listeners.admin.token', address)
    assert.match(p.message, /is required/)
    assert.match(p.hint ?? '', /FASTMESH_ADMIN_TOKEN/)
  }
  assert.throws(() => load(base(), { FASTMESH_ADMIN_ADDRESS: '0.0.0.0' }), (err: ConfigError) => err.problems.some((p) => p.path === '$.listeners.admin.token'))
})

test('an admin listener on loopback needs no token', () => {
  for (const address of ['127.0.0.1', '127.0.0.2', '::1', 'localhost']) {
    assert.deepEqual(problems(base({ listeners: { admin: { address, port: 15000 } } })), [], address)
  }
})

test('an admin listener off loopback with a token, from the file or FASTMESH_ADMIN_TOKEN, is accepted', () => {
  const token = 'f0e1d2c3b4a59687f0e1d2c3'
  assert.deepEqual(problems(base({ listeners: { admin: { address: '0.0.0.0', port: 15000, token } } })), [])
  const { config } = load(base(), { FASTMESH_ADMIN_ADDRESS: '0.0.0.0', FASTMESH_ADMIN_TOKEN: token })
  assert.equal(config.listeners.admin.token, token)
  assert.equal(config.listeners.admin.address, '0.0.0.0')
})

test('an empty FASTMESH_ADMIN_TOKEN is no token', () => {
  const { config } = load(base(), { FASTMESH_ADMIN_TOKEN: '' })
  assert.equal(config.listeners.admin.token, undefined)
})

test('an admin token shorter than 16 characters is refused without being quoted', () => {
  const doc = base({ listeners: { admin: { address: '127.0.0.1', port: 15000, token: 'short-tok' } } })
  assert.deepEqual(paths(doc), ['$.listeners.admin.token'])
  assert.ok(!problemText(doc).includes('short-tok'))
})

test('admin allowedHosts take host names and IP literals without a port', () => {
  assert.deepEqual(problems(base({ listeners: { admin: { port: 15000, allowedHosts: ['gateway.internal', '10.0.0.5', '[fd00::5]'] } } })), [])
  assert.deepEqual(paths(base({ listeners: { admin: { port: 15000, allowedHosts: ['gateway.internal:15000'] } } })), ['$.listeners.admin.allowedHosts[0]'])
})

test('regression: one YAML-aliased object used for two listeners gets each listener\'s own defaults (not an unknown key)', () => {
  const text = 'listeners:\n  admin: &lo { address: 127.0.0.1, port: 0 }\n  outbound: *lo\n  http: *lo\n'
  const { config } = loadConfigText(text, 'test.yaml', {})
  assert.deepEqual(config.listeners.admin, { address: '127.0.0.1', port: 0, allowedHosts: [] })
  assert.deepEqual(config.listeners.outbound, { address: '127.0.0.1', port: 0 })
  assert.deepEqual(config.listeners.http, { address: '127.0.0.1', port: 0 })
})

test('a YAML alias inside the node it names is one problem at $, not a crash', () => {
  assert.throws(() => loadConfigText('a: &x { b: *x }\n', 'test.yaml', {}), (err: ConfigError) => err.problems.length === 1 && err.problems[0]!.path === '$')
})

test('a custom plugin named like a built-in one is refused at its customPlugins key', () => {
  const p = onlyProblem(base({ customPlugins: { 'rate-limit': { module: './mine.js' } } }))
  assert.equal(p.path, '$.customPlugins["rate-limit"]')
  assert.match(p.message, /built-in plugin/)
})

test('a mirror that could hold more bodies than limits.mirrorBufferBytes is valid, with a warning at its JSON path', () => {
  const doc = base({
    limits: { mirrorBufferBytes: 64 * 1024 * 1024 },
    routes: [
      route('users', { mirror: { service: 'orders', maxConcurrent: 512, maxBodyBytes: 1024 * 1024 } }),
      route('fits', { mirror: { service: 'orders', maxConcurrent: 64, maxBodyBytes: 1024 * 1024 } }),
      route('huge-body', { mirror: { service: 'orders', maxBodyBytes: 128 * 1024 * 1024 } })
    ]
  })
  const result = validateConfigDocument(structuredClone(doc))
  assert.deepEqual(result.problems, [])
  assert.ok(result.config)
  assert.deepEqual(result.warnings?.map((w) => w.path), ['$.routes[0].mirror', '$.routes[2].mirror.maxBodyBytes'])
  assert.match(result.warnings![0]!.message, /may hold up to 512 MiB of request bodies \(maxConcurrent 512 × maxBodyBytes 1 MiB\), more than limits\.mirrorBufferBytes \(64 MiB\)/)
  assert.match(result.warnings![1]!.message, /128 MiB is more than limits\.mirrorBufferBytes \(64 MiB\): bodies above 64 MiB are never mirrored/)
  assert.deepEqual(load(doc).warnings?.map((w) => w.path), ['$.routes[0].mirror', '$.routes[2].mirror.maxBodyBytes'])
})

test('the default mirror settings (64 × 64 KiB) stay well within the default limits.mirrorBufferBytes: no warning', () => {
  const result = validateConfigDocument(base({ routes: [route('users', { mirror: { service: 'orders' } })] }))
  assert.equal(result.warnings, undefined)
  assert.equal(result.config?.limits.mirrorBufferBytes, 64 * 1024 * 1024)
})

test('telemetry.logging.accessLog takes true/false or { enabled, sampleRatio }; a wrong kind or ratio is named at its path', () => {
  assert.equal(load(base()).config.telemetry.logging.accessLog, true)
  assert.deepEqual(load(base({ telemetry: { logging: { accessLog: { sampleRatio: 0.1 } } } })).config.telemetry.logging.accessLog, { sampleRatio: 0.1 })
  const problems = (logging: unknown): readonly ConfigProblem[] => validateConfigDocument(base({ telemetry: { logging } })).problems
  assert.deepEqual(problems({ accessLog: 'yes' }).map((p) => [p.path, p.message]), [['$.telemetry.logging.accessLog', 'must be boolean or a mapping with one of the keys enabled, sampleRatio, got string "yes"']])
  assert.deepEqual(problems({ accessLog: { sampleRatio: 1.5 } }).map((p) => p.path), ['$.telemetry.logging.accessLog.sampleRatio'])
})

test('telemetry.tracing: an OTLP endpoint that is not an http(s) base URL is refused at its path, without printing credentials', () => {
  const tracing = (otlp: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> => base({ telemetry: { tracing: { enabled: true, otlp, ...extra } } })
  for (const [endpoint, message] of [['collector:4318', /scheme "collector"/], ['not a url', /is not a URL/], ['ftp://collector:21', /scheme "ftp"/], ['http://collector:4318/?x=1', /query or fragment/]] as const) {
    const p = onlyProblem(tracing({ endpoint }))
    assert.equal(p.path, '$.telemetry.tracing.otlp.endpoint', endpoint)
    assert.match(p.message, message)
    assert.match(p.hint ?? '', /v1\/traces/)
  }
  assert.ok(!problemText(tracing({ endpoint: 'grpc://user:hunter2@collector:4317' })).includes('hunter2'))
  assert.deepEqual(paths(tracing({ endpoint: 'http://c:4318', headers: { 'bad header': 'x' } })), ['$.telemetry.tracing.otlp.headers["bad header"]'])
  assert.deepEqual(paths(tracing({ endpoint: 'http://c:4318' }, { sampler: { ratio: 1.5 } })), ['$.telemetry.tracing.sampler.ratio'])
  assert.deepEqual(paths(tracing({ endpoint: 'http://c:4318', timeout: '0s' })), ['$.telemetry.tracing.otlp.timeout'])
  assert.deepEqual(problems(tracing({ endpoint: 'https://otlp.example.com/otlp', headers: { 'x-honeycomb-team': 'k' } }, { sampler: { ratio: 0.01 }, serviceName: 'edge' })), [])
  const config = load(base()).config
  assert.equal(config.telemetry.tracing.enabled, false, 'off by default')
  assert.equal(config.telemetry.tracing.sampler.ratio, 1)
  assert.equal(config.telemetry.tracing.otlp.endpoint, 'http://127.0.0.1:4318')
})

test('listeners.outbound.identity names a local service of a node gateway with the mesh on; otherwise a problem at its path', () => {
  const node = (outbound: Record<string, unknown>, more: Record<string, unknown> = {}): Record<string, unknown> => base({
    gateway: { name: 'node-a', mode: 'node' },
    mesh: { mtls: 'strict', identity: { provider: 'files', dir: '/etc/fastmesh/ca' } },
    localServices: [{ name: 'web', port: 9000 }],
    listeners: { outbound: { address: '127.0.0.1', port: 15001, ...outbound } },
    ...more
  })
  assert.deepEqual(problems(node({ identity: 'web' })), [])
  assert.equal(load(node({ identity: 'web' })).config.listeners.outbound.identity, 'web')
  assert.equal(load(node({})).config.listeners.outbound.identity, undefined, 'default: the gateway\'s own identity')

  const unknown = onlyProblem(node({ identity: 'wbe' }))
  assert.equal(unknown.path, '$.listeners.outbound.identity')
  assert.match(unknown.message, /"wbe" is not a local service of this gateway/)
  assert.equal(unknown.hint, 'did you mean "web"?')
  assert.match(onlyProblem(node({ identity: 'billing' })).hint ?? '', /declared: web/)

  const edge = onlyProblem(base({ listeners: { outbound: { address: '127.0.0.1', port: 15001, identity: 'web' } } }))
  assert.equal(edge.path, '$.listeners.outbound.identity')
  assert.match(edge.message, /only for gateway\.mode "node"/)

  const meshOff = onlyProblem(node({ identity: 'web' }, { mesh: { mtls: 'off' } }))
  assert.equal(meshOff.path, '$.listeners.outbound.identity')
  assert.match(meshOff.message, /needs the mesh on/)
})

test('gateway.workers takes 1-64 or auto (default 1); a rate-limit counting in memory warns that each worker counts its own share', () => {
  assert.equal(load(base()).config.gateway.workers, 1)
  assert.equal(load(base({ gateway: { workers: 'auto' } })).config.gateway.workers, 'auto')
  assert.deepEqual(paths(base({ gateway: { workers: 0 } })), ['$.gateway.workers'])
  assert.deepEqual(paths(base({ gateway: { workers: 'all' } })), ['$.gateway.workers'])
  const limited = (workers: unknown): Record<string, unknown> => base({
    gateway: { workers },
    plugins: [{ name: 'rate-limit', options: { max: 100 } }],
    routes: [
      route('local', { plugins: [{ name: 'rate-limit', options: { max: 10 } }] }),
      route('shared', { plugins: [{ name: 'rate-limit', options: { max: 10, store: { redis: { url: 'redis://127.0.0.1:6379' } } } }] })
    ]
  })
  assert.equal(validateConfigDocument(limited(1)).warnings, undefined)
  const result = validateConfigDocument(limited(4))
  assert.deepEqual(result.warnings?.map((w) => w.path), ['$.plugins[0]', '$.routes[0].plugins[0]'])
  assert.match(result.warnings![0]!.message, /with gateway.workers 4, the gateway as a whole admits up to 4 × max per window/)
  assert.match(validateConfigDocument(limited('auto')).warnings![0]!.message, /one `max` per core/)
})
