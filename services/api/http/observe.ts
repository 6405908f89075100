/**
 * The first middleware of every request: its trace (the client's W3C `traceparent` continued, or a new trace),
 * returned in the `traceparent` response header; a logger carrying the trace for the handlers (`c.get('log')`);
 * and, once answered, one log line and the HTTP metrics, by route pattern rather than path (no ids in labels).
 */
import { createMiddleware } from 'hono/factory'
import { routePath } from 'hono/route'
import { TRACEPARENT, childSpan, formatTraceparent, parseTraceparent, type TraceContext } from '@app/shared'
import { traceFields, type Logger } from '@app/shared/ops'
import type { ApiMetrics } from '../metrics.ts'

export interface Observed {
  Variables: { trace: TraceContext; log: Logger }
}

/** Probes and scrapes come every few seconds: their lines are written at debug, not info. */
const QUIET_PATHS = new Set(['/livez', '/readyz', '/metrics', '/health'])

export function observe(deps: { log: Logger; metrics: ApiMetrics }) {
  return createMiddleware<Observed>(async (c, next) => {
    const started = performance.now()
    const trace = childSpan(parseTraceparent(c.req.header(TRACEPARENT)))
    const log = deps.log.child(traceFields(trace))
    c.set('trace', trace)
    c.set('log', log)
    await next()
    c.header(TRACEPARENT, formatTraceparent(trace))
    const seconds = (performance.now() - started) / 1000
    // The last route matched is the handler's pattern; a request no route took has only the catch-all middleware.
    const pattern = routePath(c, -1)
    const route = pattern && pattern !== '*' && pattern !== '/*' ? pattern : 'unmatched'
    const status = c.res.status
    deps.metrics.request(c.req.method, route, status, seconds)
    const path = new URL(c.req.url).pathname
    // Set by the key check, on the routes that have one.
    const tenant = (c.var as { tenant?: string }).tenant
    const fields = { method: c.req.method, path, route, status, ms: Math.round(seconds * 1000), tenant }
    // 501 says what this deployment cannot do (tus on a store without ListParts, which the console asks on each
    // load), not that something broke.
    const level = status >= 500 && status !== 501 ? 'error' : QUIET_PATHS.has(path) ? 'debug' : 'info'
    log[level](fields, `${c.req.method} ${path} ${status}`)
  })
}
