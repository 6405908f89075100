/**
 * `/v1/admin`: operator tools, behind `Authorization: Bearer <ADMIN_TOKEN>` (disabled when ADMIN_TOKEN is unset).
 * Dead letters: list, inspect, re-drive (send again to the queue they died in) or discard. And the sweep of
 * abandoned multipart uploads, on demand.
 */
import { Hono } from 'hono'
import { Buffer } from 'node:buffer'
import * as v from 'valibot'
import { JobClassSchema } from '@app/shared'
import { adminGuard } from '../auth/admin.ts'
import {
  ApiKeySchema,
  DeadLetterListSchema,
  DeadLetterSchema,
  IssuedKeySchema,
  KeyListSchema,
  QueueListSchema,
  RedrivenSchema,
  SweepSchema,
} from '../http/bodies.ts'
import { ApiError } from '../http/errors.ts'
import { TenantSchema, issueKey } from '../auth/keys.ts'
import { ADMIN_TOKEN, documenter, jsonAnswer } from '../http/openapi.ts'
import { json, param, query } from '../http/validate.ts'
import type { Broker } from '../jobs/broker.ts'
import { redriveLetter, type RedriveDeps } from '../jobs/redrive.ts'
import type { DeadLetterRepo } from '../store/dead-letters.ts'
import type { KeyRepo } from '../store/keys.ts'

/** A malformed id names no dead letter or key, so it answers as an unknown one does: 404. */
const IdParams = v.object({ id: v.pipe(v.string(), v.uuid('must be a UUID')) })
const LIMIT_RULE = 'must be a whole number from 1 to 1000'
const ListQuery = v.object({
  tenant: v.optional(v.pipe(TenantSchema, v.description("Only the dead letters of this tenant's jobs."))),
  limit: v.optional(
    v.pipe(
      v.string(LIMIT_RULE),
      v.regex(/^\d{1,4}$/, LIMIT_RULE),
      v.description('How many, newest first: 1 to 1000.'),
      v.transform(Number),
      v.minValue(1, LIMIT_RULE),
      v.maxValue(1000, LIMIT_RULE)
    ),
    '100'
  ),
})
const NewKey = v.object({
  tenant: v.pipe(
    TenantSchema,
    v.description('The tenant the key acts for: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit.')
  ),
  name: v.optional(
    v.pipe(
      v.string('must be a string'),
      v.maxLength(200, 'must be at most 200 characters'),
      v.description('A label, such as where the key is used.')
    )
  ),
  priority: v.optional(
    v.pipe(
      JobClassSchema,
      v.description(
        'bulk: every upload made with this key is bulk work (an importer, a migration). Default interactive.'
      )
    )
  ),
})
const KeysQuery = v.object({ tenant: v.optional(v.pipe(TenantSchema, v.description("Only this tenant's keys."))) })
const SECONDS_RULE = 'must be a whole number of seconds'
const SweepQuery = v.object({
  olderThanSeconds: v.optional(
    v.pipe(
      v.string(SECONDS_RULE),
      v.regex(/^\d{1,10}$/, SECONDS_RULE),
      v.description('Abort uploads started longer ago than this.'),
      v.transform(Number)
    ),
    '86400'
  ),
})

/** Every admin route needs the token; a malformed Authorization header is a 400. */
const doc = documenter({ tag: 'admin', security: ADMIN_TOKEN, errors: [400, 401, 404] })

export interface AdminRouteDeps extends RedriveDeps {
  /** The bearer token of `/v1/admin`; null disables it. */
  adminToken: string | null
  deadLetters: DeadLetterRepo
  keys: KeyRepo
  broker: Pick<Broker, 'queueStats' | 'publish'>
  /** Aborts this system's abandoned uploads older than the given age; returns their keys. */
  sweepUploads: (olderThanMs: number) => Promise<string[]>
}

export function adminRoutes(deps: AdminRouteDeps) {
  const guard = adminGuard(deps.adminToken)
  return (
    new Hono()
      .use('*', guard)

      .get('/dead-letters', listLettersDoc, query(ListQuery), async (c) => {
        const { limit, tenant } = c.req.valid('query')
        return c.json(
          { deadLetters: await deps.deadLetters.list(limit, tenant) } satisfies v.InferOutput<
            typeof DeadLetterListSchema
          >,
          200
        )
      })

      /** The depth of every queue of this system, asked of the broker now. */
      .get('/queues', queuesDoc, async (c) => {
        try {
          return c.json({ queues: await deps.broker.queueStats() } satisfies v.InferOutput<typeof QueueListSchema>, 200)
        } catch (error) {
          throw new ApiError(
            503,
            'queue_unavailable',
            `the broker could not be asked (${(error as Error).message}); try again shortly`
          )
        }
      })

      /** Creates an API key for a tenant. The key is in this answer only: the API keeps its hash. */
      .post('/keys', createKeyDoc, json(NewKey), async (c) => {
        const { tenant, name, priority } = c.req.valid('json')
        const { key, record } = await issueKey(deps, tenant, { name, priority })
        return c.json({ ...record, key } satisfies v.InferOutput<typeof IssuedKeySchema>, 201)
      })

      .get('/keys', listKeysDoc, query(KeysQuery), async (c) => {
        return c.json(
          { keys: await deps.keys.list(c.req.valid('query').tenant) } satisfies v.InferOutput<typeof KeyListSchema>,
          200
        )
      })

      /** Revokes a key: from the next request on, on every API instance (keys are read from the database each time). */
      .delete('/keys/:id', revokeKeyDoc, param(IdParams, 404), async (c) => {
        const key = await deps.keys.revoke(c.req.valid('param').id)
        if (!key) throw new ApiError(404, 'not_found', `no API key with id ${c.req.valid('param').id}`)
        return c.json(key satisfies v.InferOutput<typeof ApiKeySchema>, 200)
      })

      .get('/dead-letters/:id', getLetterDoc, param(IdParams, 404), async (c) => {
        const letter = await findLetter(deps, c.req.valid('param').id)
        const { body, ...rest } = letter
        const text = readableText(body)
        const shown = {
          ...rest,
          ...(text === null ? { bodyBase64: Buffer.from(body).toString('base64') } : { body: text }),
        }
        return c.json(shown satisfies v.InferOutput<typeof DeadLetterSchema>, 200)
      })

      /** Sends a dead letter again (jobs/redrive.ts). */
      .post('/dead-letters/:id/redrive', redriveDoc, param(IdParams, 404), async (c) => {
        const letter = await findLetter(deps, c.req.valid('param').id)
        return c.json((await redriveLetter(deps, letter)) satisfies v.InferOutput<typeof RedrivenSchema>, 202)
      })

      /** Runs the multipart-upload sweep now (it also runs hourly), for uploads older than `olderThanSeconds`. */
      .post('/sweep', sweepDoc, query(SweepQuery), async (c) => {
        try {
          return c.json(
            {
              abortedUploads: await deps.sweepUploads(c.req.valid('query').olderThanSeconds * 1000),
            } satisfies v.InferOutput<typeof SweepSchema>,
            200
          )
        } catch (error) {
          throw new ApiError(503, 'storage_unavailable', `the sweep failed: ${(error as Error).message}`)
        }
      })

      .delete('/dead-letters/:id', deleteLetterDoc, param(IdParams, 404), async (c) => {
        const letter = await findLetter(deps, c.req.valid('param').id)
        await deps.deadLetters.remove(letter.id)
        return c.body(null, 204)
      })
  )
}

const listLettersDoc = doc({
  operationId: 'listDeadLetters',
  summary: 'The newest dead letters',
  responses: { 200: jsonAnswer('Dead letters, newest first, without their bodies.', DeadLetterListSchema) },
})
const queuesDoc = doc({
  operationId: 'listQueues',
  summary: 'Messages and consumers of every queue, now',
  responses: { 200: jsonAnswer('Each queue of each media type.', QueueListSchema) },
  errors: [503],
})
const getLetterDoc = doc({
  operationId: 'getDeadLetter',
  summary: 'One dead letter, with its headers and body',
  responses: {
    200: jsonAnswer('The dead letter: its body as text when it reads as such, else in base64.', DeadLetterSchema),
  },
})
const redriveDoc = doc({
  operationId: 'redriveDeadLetter',
  summary: 'Send a dead letter again',
  description:
    'A request of one of our jobs puts the job back to queued and is sent again through the outbox; any other well-formed message goes straight back to the queue it died in. A malformed one is refused (422): discard it.',
  responses: { 202: jsonAnswer('Sent again; the dead letter is gone.', RedrivenSchema) },
  errors: [409, 422, 503],
})
const deleteLetterDoc = doc({
  operationId: 'deleteDeadLetter',
  summary: 'Discard a dead letter',
  responses: { 204: { description: 'Discarded.' } },
})
const createKeyDoc = doc({
  operationId: 'createKey',
  summary: 'Create an API key for a tenant',
  responses: { 201: jsonAnswer('The key (in this answer only) and its record.', IssuedKeySchema) },
})
const listKeysDoc = doc({
  operationId: 'listKeys',
  summary: 'API keys, newest first (their records; never the keys)',
  responses: { 200: jsonAnswer("The keys' records.", KeyListSchema) },
})
const revokeKeyDoc = doc({
  operationId: 'revokeKey',
  summary: 'Revoke an API key',
  description: 'From the next request on, on every API instance. Revoking twice keeps the first time.',
  responses: { 200: jsonAnswer("The key's record, revoked.", ApiKeySchema) },
})
const sweepDoc = doc({
  operationId: 'sweepUploads',
  summary: 'Abort abandoned multipart uploads now',
  description: 'The sweep also runs hourly.',
  responses: { 200: jsonAnswer('What was aborted.', SweepSchema) },
  errors: [503],
})

/** The dead letter of a validated id, or 404. */
async function findLetter(deps: Pick<AdminRouteDeps, 'deadLetters'>, id: string) {
  const letter = await deps.deadLetters.get(id)
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
