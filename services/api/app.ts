/**
 * The HTTP API: `createApp(deps)` builds it from its parts; nothing here connects to anything by itself. The routes
 * are chained, so the app's type carries every route's input and answers: `AppType` is what `hc` clients take
 * (client.ts), and `GET /openapi.json` documents the same routes (openapi.ts).
 */
import { Hono } from 'hono'
import type { ApplyGlobalResponse } from 'hono/client'
import { cors } from 'hono/cors'
import { HTTPException } from 'hono/http-exception'
import { secureHeaders } from 'hono/secure-headers'
import { LINKS_PATH } from './auth/links.ts'
import type { AppDeps } from './deps.ts'
import { ApiError, codeOfStatus } from './http/errors.ts'
import { TUS_PATH } from './uploads/tus.ts'
import { keyedAccess } from './http/limits.ts'
import { observe, type Observed } from './http/observe.ts'
import { OPEN, documenter, openApiRoute, type ErrorAnswers } from './http/openapi.ts'
import { adminRoutes } from './routes/admin.ts'
import { consoleCsp, consoleRoutes, isConsolePath } from './routes/console.ts'
import { directRoutes } from './routes/direct.ts'
import { eventRoutes, socketRoute } from './routes/events.ts'
import { healthRoutes } from './routes/health.ts'
import { linkRoutes } from './routes/links.ts'
import { mediaRoutes } from './routes/media.ts'
import { presetRoutes } from './routes/presets.ts'
import { tenantQuotaRoutes, usageRoutes } from './routes/quotas.ts'
import { uploadRoutes } from './routes/uploads.ts'
import { webhookRoutes } from './routes/webhooks.ts'

export type { AppDeps }

/** Headers a browser may send and read across origins. */
/** tus's request and answer headers (https://tus.io/protocols/resumable-upload), for browser clients. */
const TUS_REQUEST_HEADERS = [
  'Tus-Resumable',
  'Upload-Length',
  'Upload-Offset',
  'Upload-Metadata',
  'Upload-Defer-Length',
  'Upload-Concat',
  'X-HTTP-Method-Override',
  'X-Requested-With',
]
const TUS_RESPONSE_HEADERS = [
  'Upload-Offset',
  'Upload-Length',
  'Upload-Expires',
  'Upload-Metadata',
  'Tus-Resumable',
  'Tus-Version',
  'Tus-Extension',
  'Tus-Max-Size',
  'X-Media-Id',
]
const CORS_REQUEST_HEADERS = [
  'Authorization',
  'Content-Type',
  'Content-Disposition',
  'X-Filename',
  'Idempotency-Key',
  'X-Presets',
  'Last-Event-ID',
  'Range',
  'traceparent',
  ...TUS_REQUEST_HEADERS,
]
const CORS_RESPONSE_HEADERS = [
  'Location',
  'Retry-After',
  'RateLimit-Limit',
  'RateLimit-Remaining',
  'RateLimit-Reset',
  'RateLimit-Policy',
  'traceparent',
  'Idempotent-Replayed',
  'Content-Range',
  'Accept-Ranges',
  ...TUS_RESPONSE_HEADERS,
]

export function createApp(deps: AppDeps) {
  const app = new Hono<Observed>()
  // First: every request gets its trace and its logger, and is counted and logged once answered (errors included).
  app.use('*', observe(deps))
  // The API answers JSON and media bytes, never pages: nothing it serves may run scripts or be framed. The one page,
  // the console, may run its own script and load from its own origin, and nothing else.
  // Outputs may be shown on other origins (an <img> on the customer's site) once CORS lets them; through a signed
  // link, always (that is what a link is for).
  const noScripts = { defaultSrc: ["'none'"], frameAncestors: ["'none'"], sandbox: [] }
  const apiHeaders = secureHeaders({
    contentSecurityPolicy: noScripts,
    crossOriginResourcePolicy: deps.corsOrigins.length ? 'cross-origin' : 'same-origin',
  })
  const linkHeaders = secureHeaders({ contentSecurityPolicy: noScripts, crossOriginResourcePolicy: 'cross-origin' })
  const consoleHeaders = secureHeaders({
    contentSecurityPolicy: consoleCsp(deps.segmentStore ? [deps.segmentStore.origin] : []),
    crossOriginResourcePolicy: 'same-origin',
    xFrameOptions: 'DENY',
  })
  app.use('*', (c, next) => {
    if (isConsolePath(c.req.path)) return consoleHeaders(c, next)
    return c.req.path.startsWith(`${LINKS_PATH}/`) ? linkHeaders(c, next) : apiHeaders(c, next)
  })
  // Before authentication: a preflight carries no key. A signed link may be read from any origin (hls.js on a
  // customer's page fetches playlists and segments): the link is the credential, and no cookie is ever involved.
  const linkCors = cors({
    origin: '*',
    allowMethods: ['GET', 'HEAD', 'OPTIONS'],
    allowHeaders: ['Range'],
    exposeHeaders: ['Content-Range', 'Accept-Ranges'],
    maxAge: 600,
  })
  const apiCors = deps.corsOrigins.length
    ? cors({
        origin: deps.corsOrigins.includes('*') ? '*' : [...deps.corsOrigins],
        allowMethods: ['GET', 'HEAD', 'POST', 'PATCH', 'DELETE', 'OPTIONS'],
        allowHeaders: CORS_REQUEST_HEADERS,
        exposeHeaders: CORS_RESPONSE_HEADERS,
        maxAge: 600,
      })
    : null
  app.use('*', async (c, next) => {
    if (c.req.path.startsWith(`${LINKS_PATH}/`)) return linkCors(c, next)
    if (!apiCors) return next()
    const answer = await apiCors(c, next)
    // CORS answers every OPTIONS itself; under /v1/uploads that OPTIONS is also tus's discovery, whose answer must
    // say which tus this server speaks (Tus-Version, Tus-Extension, Tus-Max-Size): those come from the tus server.
    if (answer && c.req.method === 'OPTIONS' && (c.req.path === TUS_PATH || c.req.path.startsWith(`${TUS_PATH}/`))) {
      // A store without tus (the embedded one answers 501) leaves the preflight as it is.
      const discovery = await deps.tus
        .handle(c.req.raw, { tenant: '', keyPriority: 'interactive', trace: c.get('trace'), log: c.get('log') })
        .catch(() => null)
      discovery?.headers.forEach((value, name) => {
        if (/^tus-/i.test(name)) answer.headers.set(name, value)
      })
    }
    return answer
  })
  const quotaDeps = { adminToken: deps.adminToken, quotas: deps.store.quotas }
  const keyed = keyedAccess({ store: deps.store, auth: deps.auth, requestsPerMinute: deps.limits.requestsPerMinute })
  const routes = app
    .route('/', consoleRoutes(deps.console))
    .route('/', healthRoutes(deps))
    .route('/v1/media', mediaRoutes(deps, keyed))
    .route('/v1/presets', presetRoutes(deps, keyed))
    .route(LINKS_PATH, linkRoutes(deps))
    .route('/v1/webhooks', webhookRoutes(deps, keyed))
    .route('/v1/direct-uploads', directRoutes(deps, keyed))
    .route('/v1/uploads', uploadRoutes(deps, keyed))
    .route('/v1/usage', usageRoutes(quotaDeps, keyed))
    .route('/v1/events', eventRoutes(deps, keyed))
    .route('/v1/ws', socketRoute(deps, keyed))
    .route('/v1/admin/tenants', tenantQuotaRoutes(quotaDeps))
    .route('/v1/admin', adminRoutes(deps))
    .get('/openapi.json', openApiDoc, openApiRoute(app))
  app.notFound((c) =>
    c.json(new ApiError(404, 'not_found', `no route for ${c.req.method} ${new URL(c.req.url).pathname}`).toJSON(), 404)
  )
  app.onError((error, c) => {
    if (error instanceof ApiError) return c.json(error.toJSON(), error.status, error.headers)
    if (error instanceof HTTPException) {
      // hono's own middleware: bearerAuth answers with a response of its own (our body, WWW-Authenticate); the
      // rest (a validator's malformed JSON) only has a message, which gets our body.
      if (error.res) return error.getResponse()
      return c.json(new ApiError(error.status, codeOfStatus(error.status), error.message).toJSON(), error.status)
    }
    c.get('log').error({ err: error }, `${c.req.method} ${new URL(c.req.url).pathname} failed: ${error.message}`)
    return c.json(new ApiError(500, 'internal', 'an internal error occurred; it has been logged').toJSON(), 500)
  })
  return routes
}

/**
 * The API's type for `hc<AppType>(url)`: each route's input and answers, plus our error body at every error status
 * (errors are thrown as ApiError, so the handlers' own types do not show them).
 */
export type AppType = ApplyGlobalResponse<ReturnType<typeof createApp>, ErrorAnswers>

const openApiDoc = documenter({ tag: 'service', security: OPEN, errors: [] })({
  operationId: 'openApi',
  summary: 'This document: OpenAPI 3.1',
  responses: {
    200: { description: 'The OpenAPI document.', content: { 'application/json': { schema: { type: 'object' } } } },
  },
})
