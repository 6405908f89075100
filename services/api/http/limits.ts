/**
 * Per-key limits, so that one client cannot starve the others: a request rate (hono-rate-limiter, a fixed window
 * per key) and a number of uploads in flight. Both answer 429 with `Retry-After`. They count per API instance:
 * behind a load balancer of N instances a key gets up to N times these (a shared counter store can follow).
 */
import { every } from 'hono/combine'
import { createMiddleware } from 'hono/factory'
import { rateLimiter } from 'hono-rate-limiter'
import { requireKey, type AuthMode, type Caller, type Keyed } from '../auth/access.ts'
import type { Store } from '../store/open.ts'
import { ApiError } from './errors.ts'

const WINDOW_MS = 60_000

/**
 * The key check and the request rate, made once per app and shared by every keyed route group, so that a key has
 * one budget across all of them (a limiter made per group would give it one budget per group).
 */
export function keyedAccess(deps: { store: Pick<Store, 'keys'>; auth: AuthMode; requestsPerMinute: number }): Keyed {
  return every(requireKey(deps), requestRate(deps.requestsPerMinute)) as Keyed
}

/** At most `perMinute` requests per key per minute (0: no limit). Runs after `requireKey`. */
export function requestRate(perMinute: number) {
  if (perMinute === 0) return createMiddleware<Caller>((_c, next) => next())
  return rateLimiter<Caller>({
    windowMs: WINDOW_MS,
    limit: perMinute,
    standardHeaders: 'draft-6',
    keyGenerator: (c) => c.get('keyId'),
    // The limiter has set Retry-After and RateLimit-* on the context; the body is ours.
    handler: (c) =>
      c.json(
        new ApiError(
          429,
          'rate_limited',
          `this API key made more than ${perMinute} requests in a minute; retry after the time in Retry-After`
        ).toJSON(),
        429
      ),
  })
}

/** At most `max` uploads in flight per key; the slot is held until the upload is stored (or refused). */
export function uploadSlots(max: number) {
  const busy = new Map<string, number>()
  return createMiddleware<Caller>(async (c, next) => {
    const key = c.get('keyId')
    const held = busy.get(key) ?? 0
    if (held >= max) {
      throw new ApiError(
        429,
        'too_many_uploads',
        `this API key already has ${max} uploads in progress; retry when one has finished`,
        { 'Retry-After': '1' }
      )
    }
    busy.set(key, held + 1)
    try {
      await next()
    } finally {
      const left = (busy.get(key) ?? 1) - 1
      if (left > 0) busy.set(key, left)
      else busy.delete(key)
    }
  })
}
