/** The HTTP API: `createApp(deps)` builds it from its parts; nothing here connects to anything by itself. */
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { Broker } from './broker.ts'
import { ApiError } from './errors.ts'
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
  /** Events named by media id, fired when a media changed. */
  changes: EventTarget
  maxUploadBytes: number
  /** A processing job silent this long is stalled. */
  stallMs: number
  /** The bearer token of `/v1/admin`; null disables it. */
  adminToken: string | null
  /** Sends what the outbox holds now (after a re-drive), rather than on the relay's next round. */
  relay: () => Promise<void>
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
    if (error instanceof ApiError) return c.json(error.toJSON(), error.status)
    if (error instanceof HTTPException) return error.getResponse() // hono's own middleware (bearerAuth)
    console.error(`api: ${c.req.method} ${new URL(c.req.url).pathname} failed`, error)
    return c.json(new ApiError(500, 'internal', 'an internal error occurred; it has been logged').toJSON(), 500)
  })
  return app
}
