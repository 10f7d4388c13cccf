// Options of the built-in route plugin `headers` (the config checks them without loading the plugin).
import { Type, type Static } from '@sinclair/typebox'
import type { PluginOptionsDefinition } from '../types.js'

const HeaderEdits = Type.Object({
  set: Type.Record(Type.String({ pattern: '^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$' }), Type.String(), { default: {}, additionalProperties: false, description: 'Replace (or create) these headers.' }),
  add: Type.Record(Type.String({ pattern: '^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$' }), Type.String(), { default: {}, additionalProperties: false, description: 'Append a value, keeping existing ones.' }),
  remove: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'Drop these headers.' })
}, { additionalProperties: false, default: {} })

export const HeadersOptionsSchema = Type.Object({
  request: HeaderEdits,
  response: HeaderEdits
}, { additionalProperties: false })

export type HeadersOptions = Static<typeof HeadersOptionsSchema>

export type HeaderEdits = Static<typeof HeaderEdits>

export const headersOptions: PluginOptionsDefinition<typeof HeadersOptionsSchema> = {
  name: 'headers',
  description: 'Edit request headers sent upstream and response headers sent to the client.',
  optionsSchema: HeadersOptionsSchema,
  example: `plugins:
  - name: headers
    options:
      request: { set: { x-gateway: edge }, remove: [x-debug] }
      response: { set: { x-frame-options: DENY }, remove: [server] }`
}
