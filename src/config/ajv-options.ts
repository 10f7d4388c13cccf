// Options every ajv instance in the gateway process shares (config, plugin options, admin).

/**
 * `optimize: false` keeps ajv's code optimiser off. To count name uses it builds one plain
 * object per generated name (`err613`, `data244`, ...), and the config schema alone makes
 * over a thousand distinct ones: each is a new hidden-class transition from V8's
 * empty-object map, whose transition table holds 1,536. Once it is full, objects that start
 * from that map get a fresh hidden class each time — Node's own `process.nextTick` tick
 * objects among them — and the inline caches that read them go megamorphic for the life of
 * the process. That made every nextTick about 6x dearer and cost the edge some 5 µs per
 * request (issue 8). The unoptimised validators run only when a config is loaded.
 * test/integration/hidden-classes.test.ts guards the room left in that table.
 */
export const AJV_CODE_OPTIONS = { optimize: false } as const
