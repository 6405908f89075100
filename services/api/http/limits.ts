/**
 * Per-key limits, so that one client cannot starve the others: a request rate (hono-rate-limiter, a fixed window
 * per key) and a number of uploads in flight. Both answer 429 with `Retry-After`. On PostgreSQL both are counted in
 * the database (store/limits.ts), so N instances behind a load balancer allow a key these limits, not N times them;
 * on SQLite (one instance) they are counted in memory.
 */
import { every } from 'hono/combine'
import { createMiddleware } from 'hono/factory'
import { rateLimiter } from 'hono-rate-limiter'
import { requireKey, type AuthMode, type Caller, type Keyed } from '../auth/access.ts'
import type { LimitRepo } from '../store/limits.ts'
import type { Store } from '../store/open.ts'
import { ApiError } from './errors.ts'

const WINDOW_MS = 60_000

/**
 * The key check and the request rate, made once per app and shared by every keyed route group, so that a key has
 * one budget across all of them (a limiter made per group would give it one budget per group).
 */
export function keyedAccess(deps: {
  store: Pick<Store, 'keys' | 'limits'>
  auth: AuthMode
  requestsPerMinute: number
}): Keyed {
  return every(requireKey(deps), requestRate(deps.requestsPerMinute, deps.store.limits)) as Keyed
}

/**
 * At most `perMinute` requests per key per minute (0: no limit), counted in `shared` when given (else in memory).
 * Runs after `requireKey`.
 */
export function requestRate(perMinute: number, shared: LimitRepo | null = null) {
  if (perMinute === 0) return createMiddleware<Caller>((_c, next) => next())
  return rateLimiter<Caller>({
    windowMs: WINDOW_MS,
    limit: perMinute,
    ...(shared
      ? {
          store: {
            localKeys: false,
            increment: async (key: string) => {
              const { hits, resetAt } = await shared.hit(key, WINDOW_MS)
              return { totalHits: hits, resetTime: new Date(resetAt) }
            },
            decrement: (key: string) => shared.unhit(key, WINDOW_MS),
            // Only called to forget a key, which this service never asks: the window ends by itself.
            resetKey: async () => {},
          },
        }
      : {}),
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

/**
 * A slot counted in the database lives this long unless renewed, which a running upload does every third of it: an
 * instance that dies holding slots gives them back within a minute.
 */
const SLOT_TTL_MS = 60_000

/**
 * At most `max` uploads in flight per key; the slot is held until the upload is stored (or refused). Counted in
 * `shared` when given (across instances), else in memory.
 */
export function uploadSlots(max: number, shared: LimitRepo | null = null) {
  const refuse = () =>
    new ApiError(
      429,
      'too_many_uploads',
      `this API key already has ${max} uploads in progress; retry when one has finished`,
      { 'Retry-After': '1' }
    )
  if (shared) {
    return createMiddleware<Caller>(async (c, next) => {
      const id = crypto.randomUUID()
      if (!(await shared.takeSlot(c.get('keyId'), id, max, SLOT_TTL_MS))) throw refuse()
      const renew = setInterval(() => void shared.renewSlot(id, SLOT_TTL_MS).catch(() => {}), SLOT_TTL_MS / 3)
      try {
        await next()
      } finally {
        clearInterval(renew)
        await shared.releaseSlot(id).catch(() => {})
      }
    })
  }
  const busy = new Map<string, number>()
  return createMiddleware<Caller>(async (c, next) => {
    const key = c.get('keyId')
    const held = busy.get(key) ?? 0
    if (held >= max) throw refuse()
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
