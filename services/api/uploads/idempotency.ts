/**
 * Idempotency-Key (the IETF draft's header, as Stripe uses it): a client that retries a creating request after a
 * timeout sends the same key, and gets the first answer back instead of a second media. Keys are per tenant and
 * kept a day. A retry with the same key must be the same request (its `fingerprint`: for an upload, the SHA-256 of
 * the file); a different one gets 422. Only a request that created something keeps its answer: one that failed
 * frees its key, so its retry runs afresh. A key whose request is still being answered gets 409.
 */
import * as v from 'valibot'
import { ApiError } from '../http/errors.ts'
import type { IdempotencyRepo, IdempotentAnswer } from '../store/uploads.ts'

/** The header (requests may send it on POST /v1/media and on a direct upload's completion). */
export const IDEMPOTENCY_KEY = 'Idempotency-Key'
/** Set on an answer given again to a retry. */
export const IDEMPOTENT_REPLAYED = 'Idempotent-Replayed'
/** How long an answer is kept for retries. */
export const IDEMPOTENCY_KEEP_MS = 24 * 3_600_000
/** A key claimed this long ago and never answered belongs to a request that died (a 2 GB upload can take hours). */
const PENDING_STALE_MS = 6 * 3_600_000

/** Printable ASCII without spaces, as a UUID or any opaque token the client makes. */
const KeySchema = v.pipe(
  v.string(),
  v.regex(/^[\x21-\x7e]{1,255}$/, 'Idempotency-Key must be 1 to 255 printable ASCII characters, without spaces')
)

/** The request's key, or null when it sent none; 400 when it is malformed. */
export function idempotencyKeyOf(header: string | undefined): string | null {
  if (header === undefined) return null
  const parsed = v.safeParse(KeySchema, header)
  if (!parsed.success) throw new ApiError(400, 'bad_request', parsed.issues[0].message)
  return parsed.output
}

/** A retry of a request that was answered: `replay` gives that answer again if the retry is the same request. */
export interface Retry {
  /** The earlier answer's body (parsed) and headers; 422 when `fingerprint` is not the earlier request's. */
  replay(fingerprint: string): { body: unknown; headers: Record<string, string> }
}

/** What a request under a key did: gave an earlier answer again, or created something (whose answer is kept). */
export type Outcome<T> =
  | { replayed: { body: unknown; headers: Record<string, string> } }
  | { created: T; fingerprint: string; location: string }

/**
 * Runs a creating request under its Idempotency-Key (none sent: it just runs). `run` is told whether this is a retry
 * of an answered request (`retry`), and either replays that answer or creates; what it creates is kept as the key's
 * answer. When it fails, the key is freed, so a retry runs afresh. While another request holds the key: 409.
 */
export async function idempotently<T>(
  repo: IdempotencyRepo,
  tenant: string,
  header: string | undefined,
  run: (retry: Retry | null) => Promise<Outcome<T>>
): Promise<Outcome<T>> {
  const key = idempotencyKeyOf(header)
  if (key === null) return run(null)
  const claim = await repo.claim(tenant, key, { keepMs: IDEMPOTENCY_KEEP_MS, staleMs: PENDING_STALE_MS })
  if (claim.state === 'pending')
    throw new ApiError(
      409,
      'conflict',
      `a request with this ${IDEMPOTENCY_KEY} is still being answered; retry once it is`
    )
  if (claim.state === 'answered') return run({ replay: (fingerprint) => replay(claim, fingerprint) })
  try {
    const outcome = await run(null)
    if ('created' in outcome) {
      await repo.answer(tenant, key, outcome.fingerprint, {
        status: 202,
        body: JSON.stringify(outcome.created),
        location: outcome.location,
      })
    }
    return outcome
  } catch (error) {
    await repo.release(tenant, key).catch(() => {})
    throw error
  }
}

/**
 * The earlier answer's body (parsed) and headers, to give again; 422 when the retry is not the same request. Only
 * answers that created something are kept, so its status is the route's success status.
 */
function replay(
  earlier: { answer: IdempotentAnswer; fingerprint: string },
  fingerprint: string
): { body: unknown; headers: Record<string, string> } {
  if (fingerprint !== earlier.fingerprint) {
    throw new ApiError(
      422,
      'idempotency_key_reused',
      `this ${IDEMPOTENCY_KEY} was used with a different request in the last 24 hours; use a new key`
    )
  }
  const headers: Record<string, string> = { [IDEMPOTENT_REPLAYED]: 'true' }
  if (earlier.answer.location) headers.Location = earlier.answer.location
  return { body: JSON.parse(earlier.answer.body), headers }
}
