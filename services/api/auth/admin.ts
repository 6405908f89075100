/**
 * The operators' API (`/v1/admin`) is behind `Authorization: Bearer <ADMIN_TOKEN>`; with no token configured it is
 * disabled, and every path under it answers the same 404, known route or not (the routes stay, for one document).
 */
import { bearerAuth } from 'hono/bearer-auth'
import { createMiddleware } from 'hono/factory'
import type { MiddlewareHandler } from 'hono'
import { ApiError } from '../http/errors.ts'

export function adminGuard(token: string | null): MiddlewareHandler {
  if (!token) {
    return createMiddleware(() => {
      throw new ApiError(
        404,
        'not_found',
        'the admin API is disabled; set ADMIN_TOKEN (16 characters or more) to enable it'
      )
    })
  }
  return bearerAuth({
    token,
    noAuthenticationHeader: {
      message: { error: { code: 'unauthorized', message: 'send Authorization: Bearer <ADMIN_TOKEN>' } },
    },
    invalidToken: { message: { error: { code: 'unauthorized', message: 'the admin token is wrong' } } },
    invalidAuthenticationHeader: {
      message: { error: { code: 'bad_request', message: 'the Authorization header must be "Bearer <token>"' } },
    },
  })
}
