/**
 * The one way a job's state changes in the store: read it locked, compute the next state, write it, keep its history,
 * write its webhook event when it reaches a final state (in the same transaction: the outbox of events), and once the
 * transaction commits, announce the media as changed. Every repository that changes a job (media.ts, dead-letters.ts)
 * goes through here, so none can forget the history, the event or the announcement.
 *
 * Every read-modify-write runs in one transaction with the job's row locked (on PostgreSQL; a SQLite write
 * transaction holds the whole file), so two API instances applying the same message, or sweeping the same stalled
 * job, change it once.
 */
import {
  queueOfClass,
  type ErrorInfo,
  type JobClass,
  type JobStatus,
  type MediaType,
  type OutputInfo,
} from '@app/shared'
import { isoNow, text, type Db, type Queryable, type Row } from './db.ts'
import { appendEvent, changeType } from './events.ts'
import { readMedia, toJobState } from './media-rows.ts'
import { OUTBOX_BODY, insertOutbox } from './outbox.ts'
import { isFinal, type JobState } from './rules.ts'
import type { WebhookEvent } from './webhooks.ts'

/** Why a job's status changed, as the history keeps it. */
export type Reason =
  | 'created'
  | 'update'
  | 'result'
  | 'cancel'
  | 'dead_letter'
  | 'redrive'
  | 'stall_redrive'
  | 'stalled'
  | 'reprocess'

/** What applying a message did: the job's media and status afterwards, and whether anything changed. */
export interface Applied {
  mediaId: string
  status: JobStatus
  changed: boolean
  /** The status before: with `status`, what the change was (queued to processing, or to a final state). */
  previous: JobStatus
  type: MediaType
  /** Which request queue it went to last. */
  cls: JobClass
  tenant: string
  /** When the job was created (ISO 8601): its durations are measured from here. */
  createdAt: string
  traceparent: string | null
  /** A reprocess completed: the job whose outputs the media served until now, and those outputs (to delete). */
  replaced?: Replaced
}

export interface Replaced {
  jobId: string
  outputs: OutputInfo[]
}

/**
 * A transaction in which media change: `changed` marks one to log (the event log, in this transaction) and to
 * announce once the transaction commits. A media deleted in it must say whose it was; a new one says so.
 */
export interface ChangeTx extends Queryable {
  changed(mediaId: string, about?: { tenant?: string; created?: boolean }): void
}

/** A committed change of a media, as the store announces it: its tenant and its number in the tenant's event log. */
export interface MediaChange {
  mediaId: string
  tenant: string
  seq: number
}

export interface JobChangeDeps {
  /** Names this API instance in the job history (which instance applied what). */
  origin: string | null
  /** Writes a media's webhook event in the transaction of its change. */
  recordEvent(tx: Queryable, mediaId: string, event: WebhookEvent): Promise<void>
  /** Told of each media a committed transaction changed. */
  announce(change: MediaChange): void
}

export type JobChanges = ReturnType<typeof createJobChanges>

export function createJobChanges(db: Db, deps: JobChangeDeps) {
  const JOB_COLUMNS =
    'id, media_id, type, class, status, stage, progress, eta_seconds, error, outputs, redrives, created_at, traceparent, ' +
    '(SELECT tenant FROM media WHERE media.id = jobs.media_id) AS tenant'
  const selectJob = (tx: Queryable, jobId: string) =>
    tx.get(`SELECT ${JOB_COLUMNS} FROM jobs WHERE id = ?${db.lockRows}`, [jobId])
  const writeJob = (tx: Queryable, jobId: string, next: JobState) =>
    tx.run(
      'UPDATE jobs SET status = ?, stage = ?, progress = ?, eta_seconds = ?, error = ?, outputs = ?, updated_at = ? WHERE id = ?',
      [
        next.status,
        next.stage,
        next.progress,
        next.etaSeconds,
        next.error ? JSON.stringify(next.error) : null,
        JSON.stringify(next.outputs),
        isoNow(),
        jobId,
      ]
    )
  const record = (tx: Queryable, jobId: string, status: JobStatus, reason: Reason) =>
    tx.run('INSERT INTO job_history (job_id, status, reason, origin, at) VALUES (?, ?, ?, ?, ?)', [
      jobId,
      status,
      reason,
      deps.origin,
      Date.now(),
    ])

  /**
   * Runs `work` in one transaction; each media it marks changed gets its event in the log, in the same transaction
   * (read as the change left it), and is announced once the transaction has committed.
   */
  async function change<T>(work: (tx: ChangeTx) => Promise<T>): Promise<T> {
    const changed = new Map<string, { tenant?: string; created?: boolean }>()
    const logged: MediaChange[] = []
    const result = await db.transaction(async (tx) => {
      const value = await work({
        ...tx,
        changed: (mediaId, about = {}) => void changed.set(mediaId, { ...changed.get(mediaId), ...about }),
      })
      for (const [mediaId, about] of changed) {
        const media = (await readMedia(tx, mediaId)) ?? null
        const tenant = media?.tenant ?? about.tenant
        if (tenant === undefined) throw new Error(`media ${mediaId} changed, but whose it was is unknown`)
        const seq = await appendEvent(tx, { tenant, mediaId, type: changeType(media, about.created === true), media })
        logged.push({ mediaId, tenant, seq })
      }
      return value
    })
    for (const each of logged) deps.announce(each)
    return result
  }

  /** Reads the job (locked), computes its next state and writes it, in the transaction `tx`. */
  async function changeIn(
    tx: ChangeTx,
    jobId: string,
    reason: Reason,
    next: (job: JobState) => JobState | null,
    options: { also?: (tx: Queryable, job: JobState) => Promise<{ replaced?: Replaced } | void>; seen?: boolean } = {}
  ): Promise<Applied | undefined> {
    const row = await selectJob(tx, jobId)
    if (!row) return undefined // a media deleted since (or a message that was never ours)
    const job = toJobState(row)
    // Any word from a processor, even one that changes nothing, shows the job is alive.
    if (options.seen && !isFinal(job.status))
      await tx.run('UPDATE jobs SET seen_at = ? WHERE id = ?', [Date.now(), jobId])
    const about = aboutJob(row, job)
    const updated = next(job)
    if (!updated) return { ...about, status: job.status, changed: false }
    await writeJob(tx, jobId, updated)
    if (updated.status !== job.status) await record(tx, jobId, updated.status, reason)
    const also = await options.also?.(tx, updated)
    // After `also`, so a completed media's event carries its metadata. A job whose outputs the media does not serve
    // (a reprocess that failed or was cancelled) is no event of the media's: it still serves what it did.
    if (updated.status !== job.status && isFinal(updated.status) && (await isCurrent(tx, about.mediaId, jobId)))
      await deps.recordEvent(tx, about.mediaId, `media.${updated.status}` as WebhookEvent)
    tx.changed(about.mediaId)
    return { ...about, status: updated.status, changed: true, ...(also?.replaced ? { replaced: also.replaced } : {}) }
  }

  const failIn = (tx: ChangeTx, jobId: string, error: ErrorInfo, reason: Reason) =>
    changeIn(tx, jobId, reason, (job) =>
      isFinal(job.status) ? null : { ...job, status: 'failed', stage: 'finished', etaSeconds: null, error }
    )

  /**
   * Queues a fresh copy of the job's latest request, created "long ago" so the relay sends it on its next round; with
   * `cls`, to that class's queue (the job's class too).
   */
  async function requeueRequest(tx: Queryable, jobId: string, messageId: string, cls?: JobClass): Promise<void> {
    const original = await tx.get(
      `SELECT queue, type, ${OUTBOX_BODY} FROM outbox WHERE job_id = ? ORDER BY created_at DESC LIMIT 1`,
      [jobId]
    )
    if (!original) throw new Error(`job ${jobId} has no request to send again`)
    if (cls) await tx.run('UPDATE jobs SET class = ? WHERE id = ?', [cls, jobId])
    await insertOutbox(
      tx,
      {
        messageId,
        jobId,
        queue: cls ? queueOfClass(String(original.queue), cls) : String(original.queue),
        type: String(original.type),
        body: original.body as Uint8Array,
      },
      0
    )
  }

  /** Whether the media serves the outputs of `jobId` (its current job). */
  const isCurrent = async (tx: Queryable, mediaId: string, jobId: string) =>
    (await tx.get('SELECT 1 AS yes FROM media WHERE id = ? AND current_job_id = ?', [mediaId, jobId])) !== undefined

  /** Removes a media and everything of it; with `event`, its tenant's webhooks get `media.deleted` in the same transaction. */
  const removeMedia = (id: string, options: { event?: boolean } = {}) =>
    change(async (tx) => {
      const row = await tx.get(`SELECT tenant FROM media WHERE id = ?${db.lockRows}`, [id])
      if (!row) return
      if (options.event) await deps.recordEvent(tx, id, 'media.deleted')
      await tx.run('DELETE FROM media WHERE id = ?', [id])
      tx.changed(id, { tenant: String(row.tenant) })
    })

  return { change, changeIn, failIn, selectJob, writeJob, record, requeueRequest, removeMedia }
}

/** The job's media and whereabouts, for an Applied. */
function aboutJob(row: Row, job: JobState) {
  return {
    mediaId: String(row.media_id),
    previous: job.status,
    type: row.type as Applied['type'],
    cls: row.class as JobClass,
    tenant: String(row.tenant),
    createdAt: String(row.created_at),
    traceparent: text(row.traceparent),
  }
}
