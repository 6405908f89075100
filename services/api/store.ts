/**
 * The API's records: media, their processing jobs, and the outbox of requests still to be confirmed by the broker.
 * `Store` is what the rest of the API uses; `sql-store.ts` implements it over SQLite or PostgreSQL (`openStore` in
 * open-store.ts picks). The rules that make applying updates and results idempotent live here, independent of the
 * database.
 */
import { failureClassOf, type ErrorInfo, type ImageMetadata, type ImageResult, type JobStatus, type JobUpdate } from '@app/shared'
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
  /** Removes a media and everything of it (used when its request could not be published). */
  deleteMedia(id: string): Promise<void>
  markPublished(messageId: string): Promise<void>
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
  ping(): Promise<void>
  close(): Promise<void>
}

const FINAL: readonly JobStatus[] = ['completed', 'failed', 'cancelled']
export const isFinal = (status: JobStatus) => FINAL.includes(status)
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
