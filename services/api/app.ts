/** The HTTP API: `createApp(deps)` builds it from its parts; nothing here connects to anything by itself. */
import { Hono } from 'hono'
import type { Broker } from './broker.ts'
import { ApiError } from './errors.ts'
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
}

export function createApp(deps: AppDeps) {
  const app = new Hono()
  app.route('/', healthRoutes(deps))
  app.route('/v1/media', mediaRoutes(deps))
  app.notFound((c) => c.json(new ApiError(404, 'not_found', `no route for ${c.req.method} ${new URL(c.req.url).pathname}`).toJSON(), 404))
  app.onError((error, c) => {
    if (error instanceof ApiError) return c.json(error.toJSON(), error.status)
    console.error(`api: ${c.req.method} ${new URL(c.req.url).pathname} failed`, error)
    return c.json(new ApiError(500, 'internal', 'an internal error occurred; it has been logged').toJSON(), 500)
  })
  return app
}
