/**
 * Media and their jobs: created with the job's request (the outbox) in one transaction, read and listed per tenant,
 * changed only through jobs.ts (updates and results applied, cancels, stalled jobs re-driven or failed), removed.
 */
import { JOB_STATUSES, classOfQueue, type JobStatus, type JobUpdate, type MediaType, type ResultOf } from '@app/shared'
import { isoNow, placeholders, text, type Db, type Param, type Queryable } from './db.ts'
import type { Applied, JobChanges, Reason } from './jobs.ts'
import { MEDIA_SELECT, readMedia, toMedia, type MediaKind, type MediaRecord } from './media-rows.ts'
import { insertOutbox, type OutboxMessage } from './outbox.ts'
import { afterResult, afterUpdate, isFinal } from './rules.ts'

export type { MediaKind, MediaRecord }

/** Which of a tenant's media to list: a page of them, optionally filtered. */
export interface MediaQuery {
  kinds?: readonly MediaKind[]
  statuses?: readonly JobStatus[]
  /** The last media of the previous page: the page starts after it. */
  after?: { createdAt: string; id: string }
  limit: number
}

/** A job to add to a media (a reprocess): the request for it, written with it, and what it was made with. */
export interface NewJob {
  mediaId: string
  jobId: string
  type: MediaType
  /** The presets its outputs come from. */
  presets: string[] | null
  request: Omit<OutboxMessage, 'traceparent'>
  traceparent?: string | null
}

/** A media to create: its record's own fields, the request for its job (written with it), and its upload's trace. */
export type NewMedia = Pick<
  MediaRecord,
  'id' | 'tenant' | 'filename' | 'kind' | 'format' | 'size' | 'bucket' | 'sourceKey' | 'jobId' | 'type'
> & {
  /** The request to publish, written in the same transaction (the outbox). */
  request: Omit<OutboxMessage, 'traceparent'>
  /** The W3C `traceparent` of the upload: sent with every copy of the job's request, and returned as `traceId`. */
  traceparent?: string | null
  /** The presets its outputs come from. */
  presets?: string[] | null
}

export type JobCounts = Record<JobStatus, number>

export type CancelOutcome =
  | { outcome: 'cancelled'; jobId: string; type: MediaType }
  | { outcome: 'final'; status: JobStatus }

/** One change of a job's status (or a re-drive, which keeps it `processing`). */
export interface HistoryEntry {
  status: JobStatus
  reason: Reason
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

export interface MediaRepo {
  /** Writes the media, its job (the one it serves) and the job's pending request in one transaction. */
  create(media: NewMedia): Promise<void>
  /**
   * Adds a job to a media (a reprocess) with its pending request, unless the media's latest job is still running
   * (`busy`) or the media is gone. The media serves its current job's outputs until the new job completes.
   */
  addJob(
    job: NewJob
  ): Promise<{ outcome: 'added' } | { outcome: 'busy'; jobId: string; status: JobStatus } | { outcome: 'missing' }>
  /** Removes a job added by `addJob` whose request could not be sent (never the job a media serves). */
  removeJob(jobId: string): Promise<void>
  get(id: string): Promise<MediaRecord | undefined>
  /**
   * A tenant's media, newest first (by creation, then id): at most `limit`, of these kinds and statuses when given,
   * created before `after` (the last of the previous page) when given.
   */
  list(tenant: string, query: MediaQuery): Promise<MediaRecord[]>
  /**
   * Removes a media and everything of it: when its request could not be published, or on DELETE (`event`: the
   * tenant's webhooks get `media.deleted`, written in the same transaction).
   */
  remove(id: string, options?: { event?: boolean }): Promise<void>
  /** A job's status changes, oldest first: what happened, why, and which instance did it. */
  history(jobId: string): Promise<HistoryEntry[]>
  /** Applies an update (undefined: no such job). Never moves a job backwards or out of a final state. */
  applyUpdate(update: JobUpdate): Promise<Applied | undefined>
  /** Applies a result (undefined: no such job); the first final state of a job wins and later ones change nothing. */
  applyResult(result: ResultOf<MediaType>): Promise<Applied | undefined>
  /** Cancels the media's job unless it is already final (undefined: no such media). */
  cancel(mediaId: string): Promise<CancelOutcome | undefined>
  /**
   * Jobs `processing` with no word for `silentMs`: each is re-driven (a fresh copy of its request into the outbox)
   * up to `maxRedrives` times, then failed as `stalled`. Only for types with a live processor: those given
   * (a processor consumes their queue), and those with another job heard from within `silentMs`.
   */
  sweepStalled(silentMs: number, maxRedrives: number, types: readonly MediaType[]): Promise<StallAction[]>
  /** How many jobs are processing with no word for `silentMs`. */
  countSilent(silentMs: number): Promise<number>
  countJobs(): Promise<JobCounts>
  /** Jobs by type and status (the combinations that have any). */
  countJobsByType(): Promise<{ type: MediaType; status: JobStatus; count: number }[]>
}

export function createMediaRepo(db: Db, jobs: JobChanges): MediaRepo {
  return {
    async create(media) {
      const at = isoNow()
      await jobs.change(async (tx) => {
        await tx.run(
          'INSERT INTO media (id, tenant, filename, kind, format, size, bucket, source_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
          [
            media.id,
            media.tenant,
            media.filename,
            media.kind,
            media.format,
            media.size,
            media.bucket,
            media.sourceKey,
            at,
            at,
          ]
        )
        await insertJob(tx, { ...media, mediaId: media.id }, at)
        await tx.run('UPDATE media SET current_job_id = ? WHERE id = ?', [media.jobId, media.id])
        await jobs.record(tx, media.jobId, 'queued', 'created')
        await insertOutbox(tx, media.request, Date.now())
        tx.changed(media.id, { created: true })
      })
    },
    addJob: (job) =>
      jobs.change(async (tx) => {
        const latest = await tx.get(
          `SELECT id, status, created_at FROM jobs WHERE media_id = ? ORDER BY created_at DESC LIMIT 1${db.lockRows}`,
          [job.mediaId]
        )
        if (!latest) return { outcome: 'missing' as const }
        if (!isFinal(latest.status as JobStatus))
          return { outcome: 'busy' as const, jobId: String(latest.id), status: latest.status as JobStatus }
        // A media's jobs are ordered by when they were made: the new one is made later than the latest even when
        // the clock reads the same millisecond, so "the newest job" is never a tie.
        const after = new Date(latest.created_at as string | Date).getTime() + 1
        await insertJob(tx, job, new Date(Math.max(Date.now(), after)).toISOString())
        await jobs.record(tx, job.jobId, 'queued', 'reprocess')
        await insertOutbox(tx, job.request, Date.now())
        tx.changed(job.mediaId)
        return { outcome: 'added' as const }
      }),
    removeJob: (jobId) =>
      jobs.change(async (tx) => {
        const row = await tx.get(
          'SELECT media_id FROM jobs WHERE id = ? AND id NOT IN (SELECT current_job_id FROM media WHERE current_job_id IS NOT NULL)',
          [jobId]
        )
        if (!row) return
        await tx.run('DELETE FROM jobs WHERE id = ?', [jobId])
        tx.changed(String(row.media_id))
      }),
    get: (id) => readMedia(db, id),
    async list(tenant, { kinds, statuses, after, limit }) {
      const where = ['m.tenant = ?']
      const params: Param[] = [tenant]
      if (kinds?.length) where.push(`m.kind IN (${placeholders(kinds)})`), params.push(...kinds)
      if (statuses?.length) where.push(`j.status IN (${placeholders(statuses)})`), params.push(...statuses)
      if (after)
        where.push('(m.created_at < ? OR (m.created_at = ? AND m.id < ?))'),
          params.push(after.createdAt, after.createdAt, after.id)
      const rows = await db.all(
        `${MEDIA_SELECT} WHERE ${where.join(' AND ')} ORDER BY m.created_at DESC, m.id DESC LIMIT ?`,
        [...params, limit]
      )
      return rows.map(toMedia)
    },
    remove: (id, options) => jobs.removeMedia(id, options),
    async history(jobId) {
      const rows = await db.all('SELECT status, reason, origin, at FROM job_history WHERE job_id = ? ORDER BY id', [
        jobId,
      ])
      return rows.map((r) => ({
        status: r.status as JobStatus,
        reason: r.reason as Reason,
        origin: text(r.origin),
        at: new Date(Number(r.at)).toISOString(),
      }))
    },
    applyUpdate: (update) =>
      jobs.change((tx) => jobs.changeIn(tx, update.jobId, 'update', (job) => afterUpdate(job, update), { seen: true })),
    applyResult: (result) =>
      jobs.change((tx) =>
        jobs.changeIn(tx, result.jobId, 'result', (job) => afterResult(job, result), {
          also: async (tx) => {
            if (result.status !== 'completed') return
            // A completed job is what the media serves from now on: its outputs replace the earlier job's (a
            // reprocess), whose objects the caller deletes.
            const media = await tx.get(
              `SELECT m.id, m.current_job_id, j.outputs FROM media m JOIN jobs j ON j.id = m.current_job_id
               WHERE m.id = (SELECT media_id FROM jobs WHERE id = ?)${db.lockRows}`,
              [result.jobId]
            )
            if (!media) return
            await tx.run('UPDATE media SET metadata = ?, current_job_id = ?, updated_at = ? WHERE id = ?', [
              JSON.stringify(result.metadata),
              result.jobId,
              isoNow(),
              String(media.id),
            ])
            if (String(media.current_job_id) === result.jobId) return
            return { replaced: { jobId: String(media.current_job_id), outputs: JSON.parse(String(media.outputs)) } }
          },
        })
      ),
    cancel: (mediaId) =>
      jobs.change(async (tx) => {
        const latest = await tx.get('SELECT id, type FROM jobs WHERE media_id = ? ORDER BY created_at DESC LIMIT 1', [
          mediaId,
        ])
        if (!latest) return undefined
        let final: JobStatus | undefined
        await jobs.changeIn(tx, String(latest.id), 'cancel', (job) => {
          if (isFinal(job.status)) return ((final = job.status), null)
          return { ...job, status: 'cancelled', stage: 'finished', etaSeconds: null }
        })
        if (final) return { outcome: 'final' as const, status: final }
        return { outcome: 'cancelled' as const, jobId: String(latest.id), type: latest.type as MediaType }
      }),
    sweepStalled: (silentMs, maxRedrives, types) =>
      jobs.change(async (tx) => {
        const at = Date.now()
        // A type is live when a processor consumes its queue, or when another of its jobs was heard from lately
        // (a processor whose slots are all leased consumes nothing, yet is alive). Rows another instance's sweep
        // holds are skipped; once it commits they are no longer silent (re-driven) or no longer processing (failed),
        // so no job is re-driven or failed twice.
        const rows = await tx.all(
          `SELECT id, media_id, redrives FROM jobs WHERE status = 'processing' AND seen_at < ?
           AND (type IN (${placeholders(types) || 'NULL'})
                OR EXISTS (SELECT 1 FROM jobs AS other WHERE other.type = jobs.type AND other.status = 'processing' AND other.seen_at >= ?))
           LIMIT 500${db.claimRows}`,
          [at - silentMs, ...types, at - silentMs]
        )
        const actions: StallAction[] = []
        for (const row of rows) {
          const jobId = String(row.id)
          const mediaId = String(row.media_id)
          const redrives = Number(row.redrives)
          if (redrives < maxRedrives) {
            // Counted from now: the re-driven copy gets a full period to show signs of life.
            await tx.run('UPDATE jobs SET redrives = ?, seen_at = ? WHERE id = ?', [redrives + 1, at, jobId])
            await jobs.record(tx, jobId, 'processing', 'stall_redrive')
            await jobs.requeueRequest(tx, jobId, crypto.randomUUID())
            tx.changed(mediaId)
            actions.push({ jobId, mediaId, action: 'redriven' })
            continue
          }
          const message = `no processor reported on the job for ${Math.round(silentMs / 1000)} s, ${redrives + 1} times (re-driven ${redrives} times); gave up`
          await jobs.failIn(tx, jobId, { code: 'stalled', class: 'crash', message }, 'stalled')
          actions.push({ jobId, mediaId, action: 'failed' })
        }
        return actions
      }),
    async countSilent(silentMs) {
      const row = await db.get("SELECT COUNT(*) AS n FROM jobs WHERE status = 'processing' AND seen_at < ?", [
        Date.now() - silentMs,
      ])
      return Number(row!.n)
    },
    async countJobs() {
      const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as JobCounts
      for (const row of await db.all('SELECT status, COUNT(*) AS n FROM jobs GROUP BY status'))
        counts[row.status as keyof JobCounts] = Number(row.n)
      return counts
    },
    async countJobsByType() {
      const rows = await db.all('SELECT type, status, COUNT(*) AS n FROM jobs GROUP BY type, status')
      return rows.map((r) => ({ type: r.type as MediaType, status: r.status as JobStatus, count: Number(r.n) }))
    },
  }
}

/** Writes a queued job of a media, with the presets it is made with. */
function insertJob(
  tx: Queryable,
  job: Pick<NewJob, 'jobId' | 'mediaId' | 'type' | 'request' | 'traceparent'> & { presets?: string[] | null },
  at: string
) {
  return tx.run(
    "INSERT INTO jobs (id, media_id, type, class, status, stage, created_at, updated_at, traceparent, presets) VALUES (?, ?, ?, ?, 'queued', 'queued', ?, ?, ?, ?)",
    [
      job.jobId,
      job.mediaId,
      job.type,
      // The class is where its request goes: one fact, kept with the job for listing and metrics.
      classOfQueue(job.request.queue),
      at,
      at,
      job.traceparent ?? null,
      job.presets ? JSON.stringify(job.presets) : null,
    ]
  )
}
