/** The HTTP API: `createApp(deps)` builds it from its parts; nothing here connects to anything by itself. */
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { Broker } from './broker.ts'
import type { Changes } from './changes.ts'
import { ApiError, codeOfStatus } from './errors.ts'
import type { Outbox } from './outbox.ts'
import { adminRoutes } from './routes/admin.ts'
import { healthRoutes } from './routes/health.ts'
import { mediaRoutes } from './routes/media.ts'
import type { Storage } from './storage.ts'
import type { Store } from './store.ts'

export interface AppDeps {
  system: string
  store: Store
  storage: Storage
  broker: Broker
  /** Media changes: announced when this instance makes one, watched by SSE streams. */
  changes: Changes
  /** Sends job requests written to the store, now (`send`) or again (`relay`, after a re-drive). */
  outbox: Outbox
  maxUploadBytes: number
  /** A processing job silent this long is stalled. */
  stallMs: number
  /** The bearer token of `/v1/admin`; null disables it. */
  adminToken: string | null
  /** Aborts this system's multipart uploads older than the given age; returns their keys. */
  sweepUploads: (olderThanMs: number) => Promise<string[]>
}

export function createApp(deps: AppDeps) {
  const app = new Hono()
  app.route('/', healthRoutes(deps))
  app.route('/v1/media', mediaRoutes(deps))
  app.route('/v1/admin', adminRoutes(deps))
  app.notFound((c) => c.json(new ApiError(404, 'not_found', `no route for ${c.req.method} ${new URL(c.req.url).pathname}`).toJSON(), 404))
  app.onError((error, c) => {
    if (error instanceof ApiError) return c.json(error.toJSON(), error.status, error.headers)
    if (error instanceof HTTPException) {
      // hono's own middleware: bearerAuth answers with a response of its own (our body, WWW-Authenticate); the
      // rest (a validator's malformed JSON) only has a message, which gets our body.
      if (error.res) return error.getResponse()
      return c.json(new ApiError(error.status, codeOfStatus(error.status), error.message).toJSON(), error.status)
    }
    console.error(`api: ${c.req.method} ${new URL(c.req.url).pathname} failed`, error)
    return c.json(new ApiError(500, 'internal', 'an internal error occurred; it has been logged').toJSON(), 500)
  })
  return app
}
