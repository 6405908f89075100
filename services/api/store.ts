/**
 * The API's records: media, their processing jobs, and the outbox of requests still to be confirmed by the broker.
 * `Store` is what the rest of the API uses; `sql-store.ts` implements it over SQLite or PostgreSQL (`openStore` in
 * open-store.ts picks). The rules that make applying updates and results idempotent live here, independent of the
 * database.
 */
import { failureClassOf, isFinal, type ErrorInfo, type ImageMetadata, type ImageResult, type JobStatus, type JobUpdate } from '@app/shared'
import type { MediaType, OutputInfo, VideoMetadata, VideoResult } from '@app/shared'

export type MediaKind = 'image' | 'video'
export type Stage = JobUpdate['stage']

export interface JobState {
  status: JobStatus
  stage: Stage
  progress: number
  etaSeconds: number | null
  error: ErrorInfo | null
  outputs: OutputInfo[]
}

export interface MediaRecord extends JobState {
  id: string
  /** The tenant whose key created it; no other tenant ever sees it. */
  tenant: string
  /** The file name the client gave, sanitised (see filename.ts); metadata only, never part of a key or path. */
  filename: string | null
  kind: MediaKind
  format: string
  size: number
  bucket: string
  sourceKey: string
  jobId: string
  type: MediaType
  metadata: ImageMetadata | VideoMetadata | null
  /** The W3C traceparent of the upload that made it (null for media made before traces were kept). */
  traceparent: string | null
  createdAt: string
  updatedAt: string
}

/** Which of a tenant's media to list: a page of them, optionally filtered. */
export interface MediaQuery {
  kinds?: readonly MediaKind[]
  statuses?: readonly JobStatus[]
  /** The last media of the previous page: the page starts after it. */
  after?: { createdAt: string; id: string }
  limit: number
}

export interface NewMedia {
  id: string
  tenant: string
  filename: string | null
  kind: MediaKind
  format: string
  size: number
  bucket: string
  sourceKey: string
  jobId: string
  type: MediaType
  /** The request to publish, written in the same transaction (the outbox). */
  request: Omit<OutboxMessage, 'traceparent'>
  /** The W3C `traceparent` of the upload: sent with every copy of the job's request, and returned as `traceId`. */
  traceparent?: string | null
}

export interface OutboxMessage {
  messageId: string
  jobId: string
  queue: string
  type: string
  body: Uint8Array
  /** The job's trace, sent as the message's `traceparent` header (read from the job; not stored per message). */
  traceparent?: string | null
}

/** Requests accepted but not yet confirmed by the broker, and when the oldest was written (epoch ms), if any. */
export interface OutboxBacklog {
  count: number
  oldestAt: number | null
}

export type JobCounts = Record<JobStatus, number>

/** What applying a message did: the job's media and status afterwards, and whether anything changed. */
export interface Applied {
  mediaId: string
  status: JobStatus
  changed: boolean
  /** The status before: with `status`, what the change was (queued to processing, or to a final state). */
  previous: JobStatus
  type: MediaType
  tenant: string
  /** When the job was created (ISO 8601): its durations are measured from here. */
  createdAt: string
  traceparent: string | null
}

/** The answer a request with an Idempotency-Key got, kept to answer its retries. */
export interface IdempotentAnswer {
  status: number
  body: string
  location: string | null
}

/**
 * What claiming an Idempotency-Key found: nothing (now this request's, pending), a request with it still being
 * answered, or the answer of one that was, with what its request was (`fingerprint`).
 */
export type IdempotencyClaim =
  | { state: 'claimed' }
  | { state: 'pending' }
  | { state: 'answered'; fingerprint: string; answer: IdempotentAnswer }

export type CancelOutcome =
  | { outcome: 'cancelled'; jobId: string; type: MediaType }
  | { outcome: 'final'; status: JobStatus }

/** A message the broker dead-lettered, kept for operators to inspect, re-drive or discard. */
export interface DeadLetter {
  id: string
  /** The tenant of the letter's job, when it names one of ours (set by the store). */
  tenant?: string | null
  type: MediaType
  /** The queue it died in, e.g. `<system>.media.images.request`. */
  queue: string
  /** The broker's reason: `delivery_limit` (crashed or failed every delivery), `rejected` (refused as malformed). */
  reason: string
  /** How many times it was delivered before it died, where the broker says. */
  deliveries: number | null
  jobId: string | null
  /** What is wrong with the body by this API's reading of the protocol, or null when it reads fine. */
  problem: string | null
  messageId: string | null
  headers: Record<string, unknown>
  body: Uint8Array
  deadAt: string
}

/** An API key as the store keeps it: never the key itself, only its hash (beside this record) and a prefix. */
export interface ApiKey {
  id: string
  tenant: string
  name: string | null
  /** The key's first characters, to recognise it by. */
  prefix: string
  createdAt: string
  revokedAt: string | null
}

/** A direct upload the API handed out: its object key (`<system>/originals/<id>`), tenant and multipart upload. */
export interface DirectUpload {
  key: string
  /** The media id it becomes. */
  id: string
  tenant: string
  /** The S3 multipart upload, or null for a single presigned PUT. */
  uploadId: string | null
  filename: string | null
  /** Set once completed: the media it became. */
  mediaId: string | null
  createdAt: number
}

/** What a webhook may subscribe to: a media reaching a final state, or deleted. */
export const WEBHOOK_EVENTS = ['media.completed', 'media.failed', 'media.cancelled', 'media.deleted'] as const
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number]

/** A signing secret (`whsec_…`); during a rotation the old one stays valid until `expiresAt`. */
export interface WebhookSecret {
  secret: string
  expiresAt: string | null
}

/** An endpoint a tenant registered, and the events it wants. */
export interface Webhook {
  id: string
  tenant: string
  url: string
  events: WebhookEvent[]
  /** Newest first: every unexpired one signs each delivery. */
  secrets: WebhookSecret[]
  createdAt: string
  /** Set when the endpoint answered 410 Gone (or an operator disabled it): nothing more is sent. */
  disabledAt: string | null
  disabledReason: string | null
}

/** One event for one endpoint, and how its sending goes. Its id is the `webhook-id` header, the same on every attempt. */
export interface WebhookDelivery {
  id: string
  webhookId: string
  event: WebhookEvent
  mediaId: string
  status: 'pending' | 'delivered' | 'failed'
  attempts: number
  nextAt: string | null
  lastStatus: number | null
  lastError: string | null
  createdAt: string
  deliveredAt: string | null
}

/** A delivery due now, with what sending it needs: the media as it was at the event, and its endpoint. */
export interface DueDelivery {
  id: string
  event: WebhookEvent
  /** The media at the event (the body's `data`), as the store reads it. */
  media: MediaRecord
  /** The body as first sent (every retry sends the same bytes), or null before the first attempt. */
  body: string | null
  attempts: number
  /** When the event happened (epoch ms): retries stop a while after it. */
  createdAt: number
  webhook: Webhook
}

/** How an attempt went: delivered; to be tried again at `nextAt`; or given up (the endpoint disabled, on a 410). */
export type DeliveryOutcome =
  | { kind: 'delivered'; status: number }
  | { kind: 'retry'; nextAt: number; status: number | null; error: string }
  | { kind: 'failed'; status: number | null; error: string; disable?: string }

/** One change of a job's status (or a re-drive, which keeps it `processing`). */
export interface HistoryEntry {
  status: JobStatus
  reason: 'created' | 'update' | 'result' | 'cancel' | 'dead_letter' | 'redrive' | 'stall_redrive' | 'stalled'
  /** The API instance that made the change (null when the store was opened without one). */
  origin: string | null
  at: string
}

/** What the stall sweep did to one job. */
export interface StallAction {
  jobId: string
  mediaId: string
  action: 'redriven' | 'failed'
}

export interface Store {
  /** Writes the media, its job and the job's pending request in one transaction. */
  createMedia(media: NewMedia): Promise<void>
  getMedia(id: string): Promise<MediaRecord | undefined>
  /**
   * A tenant's media, newest first (by creation, then id): at most `limit`, of these kinds and statuses when given,
   * created before `after` (the last of the previous page) when given.
   */
  listMedia(tenant: string, query: MediaQuery): Promise<MediaRecord[]>
  /**
   * Removes a media and everything of it: when its request could not be published, or on DELETE (`announce`: the
   * tenant's webhooks get `media.deleted`, written in the same transaction).
   */
  deleteMedia(id: string, options?: { announce?: boolean }): Promise<void>
  /** Records the broker's confirm of these requests (one statement, however many). */
  markPublished(messageIds: readonly string[]): Promise<void>
  /**
   * Requests written at least `olderThanMs` ago, not yet confirmed by the broker and not claimed by another
   * instance; they are claimed for `leaseMs` (if this instance dies sending them, another takes them after that).
   */
  claimUnpublished(olderThanMs: number, leaseMs: number): Promise<OutboxMessage[]>
  /** Gives claimed requests back (they could not be sent), for the next relay round of any instance. */
  unclaim(messageIds: readonly string[]): Promise<void>
  /**
   * Whether this instance does the round of timer work `name` now: true for one caller at a time, and again only
   * `everyMs` later, across every instance on the database.
   */
  claimRound(name: string, everyMs: number): Promise<boolean>
  /** A job's status changes, oldest first: what happened, why, and which instance did it. */
  history(jobId: string): Promise<HistoryEntry[]>
  /** Applies an update (undefined: no such job). Never moves a job backwards or out of a final state. */
  applyUpdate(update: JobUpdate): Promise<Applied | undefined>
  /** Applies a result (undefined: no such job); the first final state of a job wins and later ones change nothing. */
  applyResult(result: ImageResult | VideoResult): Promise<Applied | undefined>
  /**
   * Keeps a dead letter. When it is a request of one of our jobs that the broker gave up on, the job fails in the
   * same transaction (class `crash`) unless it already has a final state.
   */
  recordDeadLetter(letter: DeadLetter, failJob: ErrorInfo | null): Promise<Applied | undefined>
  /** The newest dead letters, of one tenant's jobs when `tenant` is given. */
  listDeadLetters(limit: number, tenant?: string): Promise<Omit<DeadLetter, 'body' | 'headers'>[]>
  getDeadLetter(id: string): Promise<DeadLetter | undefined>
  deleteDeadLetter(id: string): Promise<boolean>
  /**
   * Re-drives a dead request of one of our jobs: the job goes back to `queued` (its failure cleared) and a fresh
   * copy of the request goes into the outbox, in one transaction; the dead letter is removed.
   */
  redriveRequest(id: string, messageId: string): Promise<{ mediaId: string } | { conflict: JobStatus } | undefined>
  /**
   * Jobs `processing` with no word for `silentMs`: each is re-driven (a fresh copy of its request into the outbox)
   * up to `maxRedrives` times, then failed as `stalled`. Only for types with a live processor: those given
   * (a processor consumes their queue), and those with another job heard from within `silentMs`.
   */
  sweepStalled(silentMs: number, maxRedrives: number, types: readonly MediaType[]): Promise<StallAction[]>
  /** How many jobs are processing with no word for `silentMs`. */
  countSilent(silentMs: number): Promise<number>
  countDeadLetters(): Promise<number>
  /** Cancels the media's job unless it is already final (undefined: no such media). */
  cancel(mediaId: string): Promise<CancelOutcome | undefined>
  countJobs(): Promise<JobCounts>
  /**
   * Takes the lease `name` for `holder` until `ttlMs` from now, or renews it when `holder` has it: true then. False
   * while another holder's lease runs. What a lease guards is the caller's (a tus upload being written, say): one
   * holder at a time across every instance on the database.
   */
  claimLease(name: string, holder: string, ttlMs: number): Promise<boolean>
  /** Gives the lease up, if `holder` has it. */
  releaseLease(name: string, holder: string): Promise<void>
  /**
   * Claims a tenant's Idempotency-Key for a request. A key answered more than `keepMs` ago, or left pending more
   * than `staleMs` ago (its request died), counts as unused.
   */
  claimIdempotencyKey(tenant: string, key: string, options: { keepMs: number; staleMs: number }): Promise<IdempotencyClaim>
  /** Keeps the answer of the request that claimed the key. */
  answerIdempotencyKey(tenant: string, key: string, fingerprint: string, answer: IdempotentAnswer): Promise<void>
  /** Frees a claimed key whose request made nothing (it failed): a retry runs afresh. */
  releaseIdempotencyKey(tenant: string, key: string): Promise<void>
  /** Forgets keys claimed more than `olderThanMs` ago; returns how many. */
  sweepIdempotencyKeys(olderThanMs: number): Promise<number>
  /** Jobs by type and status (the combinations that have any). */
  countJobsByType(): Promise<{ type: MediaType; status: JobStatus; count: number }[]>
  outboxBacklog(): Promise<OutboxBacklog>
  /** Stores a key by its hash; false when that hash is stored already (the existing record is left as it is). */
  createKey(key: ApiKey, hash: string): Promise<boolean>
  findKey(hash: string): Promise<{ record: ApiKey; hash: string } | undefined>
  /** Keys, newest first, of one tenant when given. */
  listKeys(tenant?: string): Promise<ApiKey[]>
  /** Revokes a key (undefined: no such key); revoking twice keeps the first time. */
  revokeKey(id: string): Promise<ApiKey | undefined>
  countActiveKeys(): Promise<number>
  recordDirectUpload(upload: DirectUpload): Promise<void>
  getDirectUpload(key: string): Promise<DirectUpload | undefined>
  /** Marks it completed as media `mediaId`. */
  completeDirectUpload(key: string, mediaId: string): Promise<void>
  deleteDirectUpload(key: string): Promise<void>
  /** Direct and tus uploads handed out more than `olderThanMs` ago and never completed: what the sweep removes. */
  staleDirectUploads(olderThanMs: number, limit: number): Promise<DirectUpload[]>
  createWebhook(webhook: Webhook): Promise<void>
  /** A tenant's webhooks, newest first. */
  listWebhooks(tenant: string): Promise<Webhook[]>
  getWebhook(id: string): Promise<Webhook | undefined>
  deleteWebhook(id: string): Promise<boolean>
  setWebhookSecrets(id: string, secrets: WebhookSecret[]): Promise<Webhook | undefined>
  /**
   * Deliveries due now, claimed for `leaseMs` (another instance sends them if this one has not by then): each is
   * sent by one instance at a time.
   */
  claimDueDeliveries(limit: number, leaseMs: number): Promise<DueDelivery[]>
  /** Records an attempt: its body (kept for the next ones) and outcome; a `disable` outcome disables the endpoint. */
  recordDeliveryAttempt(id: string, body: string, outcome: DeliveryOutcome): Promise<void>
  /** An endpoint's deliveries, newest first. */
  listDeliveries(webhookId: string, limit: number): Promise<WebhookDelivery[]>
  /** Sends a delivery again now (delivered or failed alike); false when there is no such delivery. */
  redeliver(webhookId: string, deliveryId: string): Promise<boolean>
  /**
   * The secret `name`: `fresh` is kept the first time any instance asks, and every instance on the database gets
   * that one from then on.
   */
  sharedSecret(name: string, fresh: string): Promise<string>
  ping(): Promise<void>
  close(): Promise<void>
}

export { isFinal }
const STAGE_ORDER: readonly Stage[] = ['queued', 'downloading', 'processing', 'uploading', 'finished']

/**
 * The job after an update, or null when the update changes nothing. Updates are advisory: status only moves from
 * `queued` to `processing`, and stage and progress only grow, so duplicates and reorderings leave the same state.
 * The final status is set by the result alone, which carries the outputs and metadata.
 */
export function afterUpdate(job: JobState, update: JobUpdate): JobState | null {
  if (isFinal(job.status)) return null
  const progress = Math.max(job.progress, Math.round(update.progress * 10) / 10)
  const stage = STAGE_ORDER.indexOf(update.stage) > STAGE_ORDER.indexOf(job.stage) ? update.stage : job.stage
  const etaSeconds = update.progress >= job.progress && update.etaSeconds !== undefined ? update.etaSeconds : job.etaSeconds
  const next: JobState = { ...job, status: 'processing', stage, progress, etaSeconds }
  const changed =
    next.status !== job.status || next.stage !== job.stage || next.progress !== job.progress || next.etaSeconds !== job.etaSeconds
  return changed ? next : null
}

/** The job after its result, or null when it already has a final state (first result wins). */
export function afterResult(job: JobState, result: ImageResult | VideoResult): JobState | null {
  if (isFinal(job.status)) return null
  if (result.status === 'completed') {
    return { ...job, status: 'completed', stage: 'finished', progress: 100, etaSeconds: 0, error: null, outputs: result.outputs }
  }
  if (result.status === 'failed') return { ...job, status: 'failed', stage: 'finished', etaSeconds: null, error: withClass(result.error) }
  return { ...job, status: 'cancelled', stage: 'finished', etaSeconds: null }
}

/** The error with its failure class, derived from the code where the processor did not say. */
export function withClass(error: ErrorInfo): ErrorInfo {
  return { ...error, class: error.class ?? failureClassOf(error.code) }
}
