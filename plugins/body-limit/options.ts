// Options of the built-in route plugin `body-limit` (the config checks them without loading the plugin).
import { Type, type Static } from '@sinclair/typebox'
import type { PluginOptionsDefinition } from '../types.js'

export const BodyLimitOptionsSchema = Type.Object({
  maxBytes: Type.Integer({ minimum: 0, description: 'Largest request body, in bytes; 0 allows none.' })
}, { additionalProperties: false })

export type BodyLimitOptions = Static<typeof BodyLimitOptionsSchema>

export const bodyLimitOptions: PluginOptionsDefinition<typeof BodyLimitOptionsSchema> = {
  name: 'body-limit',
  description: 'Refuse request bodies larger than `maxBytes` with 413: a declared Content-Length before the upstream is called, a chunked body the moment it passes the limit (counted as it streams, never buffered); the connection is then closed.',
  optionsSchema: BodyLimitOptionsSchema,
  example: `plugins:
  - name: body-limit
    options:
      maxBytes: 1048576`
}
