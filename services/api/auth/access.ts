/**
 * Who is calling: every `/v1/media` request carries `Authorization: Bearer <API key>`, and the key's tenant owns
 * whatever the request makes and is the only one that sees it. A missing, malformed, unknown or revoked key gets
 * 401 with `WWW-Authenticate: Bearer` (RFC 6750). With AUTH=none (an operator's explicit choice, which /health
 * reports) every request is the tenant `default`.
 */
import type { JobClass } from '@app/shared'
import { createMiddleware } from 'hono/factory'
import type { MiddlewareHandler } from 'hono'
import { ApiError } from '../http/errors.ts'
import type { Observed } from '../http/observe.ts'
import type { Store } from '../store/open.ts'
import { authenticate } from './keys.ts'

export type AuthMode = 'keys' | 'none'
/** The tenant of every request when AUTH=none, and of media made before keys existed. */
export const OPEN_TENANT = 'default'
const REALM = 'media'

/** What a request's handlers may read: `c.get('tenant')`, the key (for per-key limits), the trace and the logger. */
export interface Caller {
  Variables: Observed['Variables'] & { tenant: string; keyId: string; keyPriority: JobClass }
}

export function requireKey(deps: { store: Pick<Store, 'keys'>; auth: AuthMode }) {
  return createMiddleware<Caller>(async (c, next) => {
    if (deps.auth === 'none') {
      c.set('tenant', OPEN_TENANT)
      c.set('keyId', OPEN_TENANT)
      c.set('keyPriority', 'interactive')
      return next()
    }
    const header = c.req.header('authorization')
    if (!header) throw unauthorized('send your API key as "Authorization: Bearer <key>"', `Bearer realm="${REALM}"`)
    const match = /^Bearer +([\x21-\x7e]+) *$/i.exec(header)
    if (!match)
      throw unauthorized(
        'the Authorization header must be "Bearer <key>"',
        `Bearer realm="${REALM}", error="invalid_request"`
      )
    const key = await authenticate(deps.store, match[1]!)
    // One answer for unknown and revoked keys: which keys once existed is nobody's business.
    if (!key)
      throw unauthorized(
        'the API key is not valid (unknown or revoked)',
        `Bearer realm="${REALM}", error="invalid_token"`
      )
    c.set('tenant', key.tenant)
    c.set('keyId', key.id)
    c.set('keyPriority', key.priority)
    return next()
  })
}

/** What every keyed route group runs first: the key check, then the key's request budget (http/limits.ts). */
export type Keyed = MiddlewareHandler<Caller>

const unauthorized = (message: string, challenge: string) =>
  new ApiError(401, 'unauthorized', message, { 'WWW-Authenticate': challenge })
