// The balancing policies a config may name and their defaults: one place for the schema
// (src/config/schema.ts) and the service layer (src/balancer/policies), which reads them here.

export const POLICIES = ['round_robin', 'random', 'least_request', 'ewma', 'ring_hash', 'maglev'] as const
export type PolicyName = typeof POLICIES[number]

export const RING_VIRTUAL_NODES = 128
export const MAGLEV_TABLE_SIZE = 65537
export const EWMA_DECAY = '10s'
export const EWMA_DEFAULT_RTT = '30ms'
