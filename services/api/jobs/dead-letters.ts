/**
 * Reading what the broker dead-letters. A request the broker gave up on (its delivery limit: the processor died or
 * failed on every delivery) fails its job; anything malformed is kept with a note of what is wrong with it.
 * Either way the message lands in the store, where operators list, inspect, re-drive or discard it.
 */
import * as v from 'valibot'
import {
  DELIVERY_LIMIT,
  JobIdSchema,
  JobUpdateSchema,
  MESSAGES,
  decodeMessage,
  type ErrorInfo,
  type MediaType,
} from '@app/shared'
import type { RawDeadLetter } from './broker.ts'
import type { DeadLetter } from '../store/dead-letters.ts'

/** What each queue of a type carries: its request, the updates, its result. */
const schemasOf = (type: MediaType) =>
  ({ request: MESSAGES[type].request, updates: JobUpdateSchema, results: MESSAGES[type].result }) as const

/** The dead letter to keep, and the failure to give its job (null when it fails none). */
export function readDeadLetter(type: MediaType, raw: RawDeadLetter): { letter: DeadLetter; failure: ErrorInfo | null } {
  const headers = plain(raw.headers) as Record<string, unknown>
  const death = firstDeath(headers)
  const queue = death.queue ?? 'unknown'
  const kind = (['request', 'updates', 'results'] as const).find((k) => queue.endsWith(`.${k}`))
  const decoded = kind
    ? decodeMessage(schemasOf(type)[kind] as v.GenericSchema, raw.body)
    : ({ ok: false, reason: `it came from an unknown queue (${queue})` } as const)
  const jobId = decoded.ok
    ? (decoded.value as { jobId: string }).jobId
    : v.is(JobIdSchema, raw.correlationId)
      ? raw.correlationId
      : null
  // The broker's count of earlier deliveries, plus those a processor carried over when it handed the job back.
  const deliveries =
    typeof headers['x-delivery-count'] === 'number'
      ? Number(headers['x-delivery-count']) + 1 + Number(headers['x-media-attempts'] ?? 0)
      : death.reason === 'delivery_limit'
        ? DELIVERY_LIMIT + 1
        : null
  const letter: DeadLetter = {
    id: crypto.randomUUID(),
    type,
    queue,
    reason: death.reason ?? 'unknown',
    deliveries,
    jobId,
    problem: decoded.ok ? null : decoded.reason,
    messageId: raw.messageId,
    headers,
    body: raw.body,
    deadAt: new Date().toISOString(),
  }
  // Only a well-formed request of ours fails a job: a malformed one could name any job.
  const failure: ErrorInfo | null =
    kind === 'request' && decoded.ok
      ? {
          code: 'crashed',
          class: 'crash',
          message:
            letter.reason === 'delivery_limit'
              ? `gave up after ${deliveries ?? 'several'} attempts: the processor stopped (crashed, was killed or lost its ` +
                'connection) on every one. An operator can re-drive the job once the cause is fixed.'
              : `a processor refused the request (${letter.reason}). An operator can re-drive the job once the cause is fixed.`,
        }
      : null
  return { letter, failure }
}

/** The broker's record of the first death: `x-first-death-*` headers, else the `x-death` table. */
function firstDeath(headers: Record<string, unknown>): { queue: string | null; reason: string | null } {
  const deaths = Array.isArray(headers['x-death']) ? (headers['x-death'] as Record<string, unknown>[]) : []
  const last = deaths.at(-1)
  const text = (value: unknown) => (typeof value === 'string' ? value : null)
  return {
    queue: text(headers['x-first-death-queue']) ?? text(last?.queue),
    reason: text(headers['x-first-death-reason']) ?? text(last?.reason),
  }
}

/** Headers as JSON-safe values (amqplib decodes some field types into Buffers and Dates). */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return new TextDecoder().decode(value)
  if (value instanceof Date) return value.toISOString()
  if (typeof value === 'bigint') return Number(value)
  if (Array.isArray(value)) return value.map(plain)
  if (value && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]))
  return value
}
