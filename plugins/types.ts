// The contract of a route plugin: an ordinary Fastify plugin plus a typed options schema.
import type { Static, TSchema } from '@sinclair/typebox'
import type { FastifyPluginAsync } from 'fastify'

export interface RoutePluginDefinition<S extends TSchema = TSchema> {
  readonly name: string
  /** One line for docs/plugins.md. */
  readonly description: string
  /** Options are validated against it (ajv, defaults filled) before the plugin is registered. */
  readonly optionsSchema: S
  readonly plugin: FastifyPluginAsync<Static<S> & Record<string, unknown>>
}

/** What a response-side plugin gets: the upstream's headers, to edit in place before they go out. */
export type UpstreamHeadersEditor = (headers: Record<string, string | string[] | undefined>, statusCode: number) => void

declare module 'fastify' {
  interface FastifyReply {
    /** Registers an edit of the upstream response headers (runs before they are written). */
    onUpstreamHeaders(editor: UpstreamHeadersEditor): void
  }
}
