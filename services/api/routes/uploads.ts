/**
 * `/v1/uploads`: resumable uploads over tus 1.0 (tus.ts). Every request but OPTIONS needs the API key; the tus
 * protocol's own answers (201 with Location, 204 with Upload-Offset, …) come from @tus/server. Not in the OpenAPI
 * document, which cannot describe a protocol of its own: see docs/uploads.md and https://tus.io/protocols/resumable-upload.
 */
import { Hono } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { Tus } from '../uploads/tus.ts'
import type { Caller, Keyed } from '../auth/access.ts'

export function uploadRoutes(deps: { tus: Pick<Tus, 'handle'> }, keyed: Keyed) {
  // OPTIONS (tus's discovery, and browsers' preflight) carries no key.
  const unlessOptions = createMiddleware<Caller>((c, next) => (c.req.method === 'OPTIONS' ? next() : keyed(c, next)))
  const handle = createMiddleware<Caller>(async (c) => {
    const tenant = c.req.method === 'OPTIONS' ? '' : c.get('tenant')
    c.res = await deps.tus.handle(c.req.raw, {
      tenant,
      keyPriority: c.get('keyPriority'),
      trace: c.get('trace'),
      log: c.get('log'),
    })
  })
  return new Hono<Caller>().use('*', unlessOptions).all('/', handle).all('/:id', handle)
}
