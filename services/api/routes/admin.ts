/**
 * `/v1/admin`: operator tools, behind `Authorization: Bearer <ADMIN_TOKEN>` (disabled when ADMIN_TOKEN is unset).
 * Dead letters: list, inspect, re-drive (send again to the queue they died in) or discard. And the sweep of
 * abandoned multipart uploads, on demand.
 */
import { Hono } from 'hono'
import { Buffer } from 'node:buffer'
import { bearerAuth } from 'hono/bearer-auth'
import * as v from 'valibot'
import type { AppDeps } from '../app.ts'
import { ApiError } from '../errors.ts'
import { TenantSchema, issueKey } from '../keys.ts'
import { json, param, query } from '../validate.ts'

/** A malformed id names no dead letter or key, so it answers as an unknown one does: 404. */
const IdParams = v.object({ id: v.pipe(v.string(), v.uuid('must be a UUID')) })
const LIMIT_RULE = 'must be a whole number from 1 to 1000'
const ListQuery = v.object({
  tenant: v.optional(TenantSchema),
  limit: v.optional(
    v.pipe(v.string(LIMIT_RULE), v.regex(/^\d{1,4}$/, LIMIT_RULE), v.transform(Number), v.minValue(1, LIMIT_RULE), v.maxValue(1000, LIMIT_RULE)),
    '100'
  ),
})
const NewKey = v.object({
  tenant: TenantSchema,
  name: v.optional(v.pipe(v.string('must be a string'), v.maxLength(200, 'must be at most 200 characters'))),
})
const KeysQuery = v.object({ tenant: v.optional(TenantSchema) })
const SECONDS_RULE = 'must be a whole number of seconds'
const SweepQuery = v.object({
  olderThanSeconds: v.optional(v.pipe(v.string(SECONDS_RULE), v.regex(/^\d{1,10}$/, SECONDS_RULE), v.transform(Number)), '86400'),
})

export function adminRoutes(deps: AppDeps) {
  const app = new Hono()
  const token = deps.adminToken
  if (!token) {
    app.all('*', () => {
      throw new ApiError(404, 'not_found', 'the admin API is disabled; set ADMIN_TOKEN (16 characters or more) to enable it')
    })
    return app
  }
  app.use(
    '*',
    bearerAuth({
      token,
      noAuthenticationHeader: { message: { error: { code: 'unauthorized', message: 'send Authorization: Bearer <ADMIN_TOKEN>' } } },
      invalidToken: { message: { error: { code: 'unauthorized', message: 'the admin token is wrong' } } },
      invalidAuthenticationHeader: { message: { error: { code: 'bad_request', message: 'the Authorization header must be "Bearer <token>"' } } },
    })
  )

  app.get('/dead-letters', query(ListQuery), async (c) => {
    const { limit, tenant } = c.req.valid('query')
    return c.json({ deadLetters: await deps.store.listDeadLetters(limit, tenant) })
  })

  /** Creates an API key for a tenant. The key is in this answer only: the API keeps its hash. */
  app.post('/keys', json(NewKey), async (c) => {
    const { tenant, name } = c.req.valid('json')
    const { key, record } = await issueKey(deps.store, tenant, { name })
    return c.json({ ...record, key }, 201)
  })

  app.get('/keys', query(KeysQuery), async (c) => {
    return c.json({ keys: await deps.store.listKeys(c.req.valid('query').tenant) })
  })

  /** Revokes a key: from the next request on, on every API instance (keys are read from the database each time). */
  app.delete('/keys/:id', param(IdParams, 404), async (c) => {
    const key = await deps.store.revokeKey(c.req.valid('param').id)
    if (!key) throw new ApiError(404, 'not_found', `no API key with id ${c.req.valid('param').id}`)
    return c.json(key)
  })

  app.get('/dead-letters/:id', param(IdParams, 404), async (c) => {
    const letter = await findLetter(deps, c.req.valid('param').id)
    const { body, ...rest } = letter
    const text = readableText(body)
    return c.json({ ...rest, ...(text === null ? { bodyBase64: Buffer.from(body).toString('base64') } : { body: text }) })
  })

  /**
   * Sends a dead letter again. A request of one of our jobs puts the job back to `queued` and goes through the
   * outbox; anything else well-formed (an update, a result, a request of no job here, so nothing for the outbox to
   * hold) goes straight back to its queue. A malformed message would only die again.
   */
  app.post('/dead-letters/:id/redrive', param(IdParams, 404), async (c) => {
    const letter = await findLetter(deps, c.req.valid('param').id)
    if (letter.problem) {
      throw new ApiError(422, 'unprocessable', `the message is malformed (${letter.problem}); re-driving it would fail again. Discard it instead.`)
    }
    if (letter.queue.endsWith('.request') && letter.jobId) {
      const outcome = await deps.store.redriveRequest(letter.id, crypto.randomUUID())
      if (outcome && 'conflict' in outcome) {
        throw new ApiError(409, 'conflict', `job ${letter.jobId} is ${outcome.conflict} meanwhile; there is nothing to re-drive`)
      }
      if (outcome) {
        deps.changes.announce(outcome.mediaId)
        void deps.outbox.relay()
        return c.json({ redriven: letter.id, jobId: letter.jobId, mediaId: outcome.mediaId }, 202)
      }
    }
    try {
      await deps.broker.publish(letter.queue, letter.body, {
        correlationId: letter.jobId ?? letter.id,
        type: 'redriven',
        messageId: crypto.randomUUID(),
      })
    } catch (error) {
      throw new ApiError(503, 'queue_unavailable', `the message could not be sent again (${(error as Error).message}); try again shortly`)
    }
    await deps.store.deleteDeadLetter(letter.id)
    return c.json({ redriven: letter.id, jobId: letter.jobId }, 202)
  })

  /** Runs the multipart-upload sweep now (it also runs hourly), for uploads older than `olderThanSeconds`. */
  app.post('/sweep', query(SweepQuery), async (c) => {
    try {
      return c.json({ abortedUploads: await deps.sweepUploads(c.req.valid('query').olderThanSeconds * 1000) })
    } catch (error) {
      throw new ApiError(503, 'storage_unavailable', `the sweep failed: ${(error as Error).message}`)
    }
  })

  app.delete('/dead-letters/:id', param(IdParams, 404), async (c) => {
    const letter = await findLetter(deps, c.req.valid('param').id)
    await deps.store.deleteDeadLetter(letter.id)
    return c.body(null, 204)
  })

  return app
}

/** The dead letter of a validated id, or 404. */
async function findLetter(deps: AppDeps, id: string) {
  const letter = await deps.store.getDeadLetter(id)
  if (!letter) throw new ApiError(404, 'not_found', `no dead letter with id ${id}`)
  return letter
}

/** The body as text when it is valid UTF-8 without control characters (JSON usually is), else null. */
function readableText(body: Uint8Array): string | null {
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(body)
    return /[\u0000-\u0008\u000e-\u001f]/.test(text) ? null : text
  } catch {
    return null
  }
}
