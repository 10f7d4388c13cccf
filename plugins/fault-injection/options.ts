// Options of the built-in route plugin `fault-injection` (the config checks them without loading the plugin).
import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, timerDurationProblem } from '../../src/config/duration.js'
import type { PluginOptionProblem, PluginOptionsDefinition } from '../types.js'

const Percent = Type.Number({ minimum: 0, maximum: 100, description: 'Share of the requests (in %) that get the fault.' })
const Status = Type.Integer({ minimum: 400, maximum: 599, description: 'HTTP status of the fault.' })

export const FaultInjectionOptionsSchema = Type.Object({
  delay: Type.Optional(Type.Object({
    percent: Percent,
    duration: Type.String({ pattern: DURATION_PATTERN, description: 'How long the request is held before it goes on.' })
  }, { additionalProperties: false, description: 'Hold requests before they are forwarded.' })),
  abort: Type.Optional(Type.Object({
    percent: Percent,
    status: Type.Optional(Status),
    reset: Type.Optional(Type.Boolean({ description: 'Close the client\'s connection instead of answering.' }))
  }, { additionalProperties: false, description: 'Answer requests at once with `status` (FASTMESH_ERR_FAULT_INJECTED), or reset the connection; the upstream is not called.' })),
  response: Type.Optional(Type.Object({
    percent: Percent,
    status: Type.Optional(Status),
    reset: Type.Optional(Type.Boolean({ description: 'The try fails as a connection closed before any response byte.' }))
  }, { additionalProperties: false, description: 'Per upstream try: the picked endpoint "answers" `status` or "resets" without being called; retries and outlier detection react as to a real failure.' })),
  when: Type.Optional(Type.Object({
    header: Type.Optional(Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", description: 'Only requests carrying this header (any value).' })),
    callers: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Only inbound calls from these callers: service names or SPIFFE IDs.' }))
  }, { additionalProperties: false, description: 'Which requests may get faults (all when left out).' })),
  seed: Type.Optional(Type.Integer({ minimum: 0, description: 'Seed of the random choices, for a reproducible sequence (tests, chaos runs); default: unseeded.' }))
}, { additionalProperties: false })

export type FaultInjectionOptions = Static<typeof FaultInjectionOptionsSchema>

/** At least one fault; an abort or a response fault is either a status or a reset, never both or neither. */
function faultInjectionOptionProblems (options: FaultInjectionOptions): PluginOptionProblem[] {
  // Only `when` (or nothing): the plugin would run on every request and never inject a fault.
  if (options.delay === undefined && options.abort === undefined && options.response === undefined) {
    return [{ path: '$', message: 'injects no fault', hint: 'give delay, abort or response (each with its percent)' }]
  }
  const problems: PluginOptionProblem[] = []
  // The delay is one timer: past the longest, Node fires it at once and nothing is delayed.
  const tooLong = options.delay !== undefined ? timerDurationProblem(options.delay.duration) : undefined
  if (tooLong !== undefined) problems.push({ path: '$.delay.duration', message: tooLong, hint: 'use a shorter delay' })
  for (const kind of ['abort', 'response'] as const) {
    const f = options[kind]
    if (f !== undefined && (f.status === undefined) === (f.reset !== true)) {
      problems.push({ path: `$.${kind}`, message: f.status === undefined ? 'has neither status nor reset: true' : 'has both status and reset: true', hint: 'give either status or reset: true' })
    }
  }
  return problems
}

export const faultInjectionOptions: PluginOptionsDefinition<typeof FaultInjectionOptionsSchema> = {
  name: 'fault-injection',
  description: 'Delay or abort a share of the requests, or fail upstream tries, to test how callers and the mesh cope; marked with x-fastmesh-fault.',
  optionsSchema: FaultInjectionOptionsSchema,
  checkOptions: faultInjectionOptionProblems,
  example: `plugins:
  - name: fault-injection
    options:
      delay: { percent: 10, duration: 500ms }
      abort: { percent: 5, status: 503 }
      when: { header: x-chaos }`
}
