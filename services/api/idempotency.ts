/**
 * Idempotency-Key (the IETF draft's header, as Stripe uses it): a client that retries a creating request after a
 * timeout sends the same key, and gets the first answer back instead of a second media. Keys are per tenant and
 * kept a day. A retry with the same key must be the same request (its `fingerprint`: for an upload, the SHA-256 of
 * the file); a different one gets 422. Only a request that created something keeps its answer: one that failed
 * frees its key, so its retry runs afresh. A key whose request is still being answered gets 409.
 */
import * as v from 'valibot'
import { ApiError } from './errors.ts'
import type { IdempotentAnswer, Store } from './store.ts'

/** The header (requests may send it on POST /v1/media and on a direct upload's completion). */
export const IDEMPOTENCY_KEY = 'Idempotency-Key'
/** Set on an answer given again to a retry. */
export const IDEMPOTENT_REPLAYED = 'Idempotent-Replayed'
/** How long an answer is kept for retries. */
export const IDEMPOTENCY_KEEP_MS = 24 * 3_600_000
/** A key claimed this long ago and never answered belongs to a request that died (a 2 GB upload can take hours). */
const PENDING_STALE_MS = 6 * 3_600_000

/** Printable ASCII without spaces, as a UUID or any opaque token the client makes. */
const KeySchema = v.pipe(v.string(), v.regex(/^[\x21-\x7e]{1,255}$/, 'Idempotency-Key must be 1 to 255 printable ASCII characters, without spaces'))

/** The request's key, or null when it sent none; 400 when it is malformed. */
export function idempotencyKeyOf(header: string | undefined): string | null {
  if (header === undefined) return null
  const parsed = v.safeParse(KeySchema, header)
  if (!parsed.success) throw new ApiError(400, 'bad_request', parsed.issues[0].message)
  return parsed.output
}

/** A key in use by this request: answer it (keep the answer) or release it (the request failed). */
export interface ClaimedKey {
  answer(fingerprint: string, answer: IdempotentAnswer): Promise<void>
  release(): Promise<void>
}

/**
 * Claims `key` for a request of `tenant`. Returns the claim, or the earlier answer (with its request's fingerprint)
 * that a retry must be compared with; throws 409 while another request holds the key.
 */
export async function claimKey(
  store: Store,
  tenant: string,
  key: string
): Promise<{ claimed: ClaimedKey } | { answered: IdempotentAnswer; fingerprint: string }> {
  const claim = await store.claimIdempotencyKey(tenant, key, { keepMs: IDEMPOTENCY_KEEP_MS, staleMs: PENDING_STALE_MS })
  if (claim.state === 'pending') {
    throw new ApiError(409, 'conflict', `a request with this ${IDEMPOTENCY_KEY} is still being answered; retry once it is`)
  }
  if (claim.state === 'answered') return { answered: claim.answer, fingerprint: claim.fingerprint }
  return {
    claimed: {
      answer: (fingerprint, answer) => store.answerIdempotencyKey(tenant, key, fingerprint, answer),
      release: () => store.releaseIdempotencyKey(tenant, key),
    },
  }
}

/**
 * The earlier answer's body (parsed) and headers, to give again; 422 when the retry is not the same request. Only
 * answers that created something are kept, so its status is the route's success status.
 */
export function replay(earlier: { answered: IdempotentAnswer; fingerprint: string }, fingerprint: string): { body: unknown; headers: Record<string, string> } {
  if (fingerprint !== earlier.fingerprint) {
    throw new ApiError(422, 'idempotency_key_reused', `this ${IDEMPOTENCY_KEY} was used with a different request in the last 24 hours; use a new key`)
  }
  const headers: Record<string, string> = { [IDEMPOTENT_REPLAYED]: 'true' }
  if (earlier.answered.location) headers.Location = earlier.answered.location
  return { body: JSON.parse(earlier.answered.body), headers }
}
