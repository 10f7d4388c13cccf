// A route plugin that does nothing (no hook, no decorator), for the `edge_noop_plugin`
// benchmark: any plugin moves its route off the fast path into Fastify, and this measures
// that move alone.
export const description = 'Benchmark: a plugin that does nothing.'

export default async function noopPlugin (): Promise<void> {}
