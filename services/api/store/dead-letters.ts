/**
 * Dead letters: messages the broker gave up on, kept for operators to list, inspect, re-drive or discard. A request of
 * one of our jobs that died fails its job in the same transaction; a re-drive puts the job back to `queued` with a
 * fresh copy of its request in the outbox.
 */
import { createHash } from 'node:crypto'
import type { ErrorInfo, JobStatus, MediaType } from '@app/shared'
import { num, text, type Db, type Row } from './db.ts'
import type { Applied, JobChanges } from './jobs.ts'
import { toJobState } from './media-rows.ts'

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

export interface DeadLetterRepo {
  /**
   * Keeps a dead letter. When it is a request of one of our jobs that the broker gave up on, the job fails in the
   * same transaction (class `crash`) unless it already has a final state.
   */
  record(letter: DeadLetter, failJob: ErrorInfo | null): Promise<Applied | undefined>
  /** The newest dead letters, of one tenant's jobs when `tenant` is given. */
  list(limit: number, tenant?: string): Promise<Omit<DeadLetter, 'body' | 'headers'>[]>
  get(id: string): Promise<DeadLetter | undefined>
  remove(id: string): Promise<boolean>
  /**
   * Re-drives a dead request of one of our jobs: the job goes back to `queued` (its failure cleared) and a fresh
   * copy of the request goes into the outbox, in one transaction; the dead letter is removed.
   */
  redrive(id: string, messageId: string): Promise<{ mediaId: string } | { conflict: JobStatus } | undefined>
  count(): Promise<number>
}

const toDeadLetter = (r: Row): DeadLetter => ({
  id: String(r.id),
  tenant: text(r.tenant),
  type: r.type as DeadLetter['type'],
  queue: String(r.queue),
  reason: String(r.reason),
  deliveries: num(r.deliveries),
  jobId: text(r.job_id),
  problem: text(r.problem),
  messageId: text(r.message_id),
  headers: JSON.parse(String(r.headers)),
  body: r.body as Uint8Array,
  deadAt: String(r.dead_at),
})

export function createDeadLetterRepo(db: Db, jobs: JobChanges): DeadLetterRepo {
  return {
    record: (letter, failure) =>
      jobs.change(async (tx) => {
        await tx.run(
          `INSERT INTO dead_letters (id, tenant, type, queue, reason, deliveries, job_id, problem, message_id, digest, headers, body, dead_at)
           VALUES (?, (SELECT m.tenant FROM jobs j JOIN media m ON m.id = j.media_id WHERE j.id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT DO NOTHING`,
          [
            letter.id,
            letter.jobId,
            letter.type,
            letter.queue,
            letter.reason,
            letter.deliveries,
            letter.jobId,
            letter.problem,
            letter.messageId,
            createHash('sha256').update(letter.body).digest('hex'),
            JSON.stringify(letter.headers),
            letter.body,
            letter.deadAt,
          ]
        )
        return failure && letter.jobId ? jobs.failIn(tx, letter.jobId, failure, 'dead_letter') : undefined
      }),
    async list(limit, tenant) {
      const rows =
        tenant === undefined
          ? await db.all('SELECT * FROM dead_letters ORDER BY dead_at DESC LIMIT ?', [limit])
          : await db.all('SELECT * FROM dead_letters WHERE tenant = ? ORDER BY dead_at DESC LIMIT ?', [tenant, limit])
      return rows.map((r) => {
        const { body: _body, headers: _headers, ...rest } = toDeadLetter(r)
        return rest
      })
    },
    async get(id) {
      const row = await db.get('SELECT * FROM dead_letters WHERE id = ?', [id])
      return row ? toDeadLetter(row) : undefined
    },
    async remove(id) {
      return (await db.run('DELETE FROM dead_letters WHERE id = ?', [id])) > 0
    },
    redrive: (id, messageId) =>
      jobs.change(async (tx) => {
        const letter = await tx.get(`SELECT job_id FROM dead_letters WHERE id = ?${db.lockRows}`, [id])
        const row = letter?.job_id ? await jobs.selectJob(tx, String(letter.job_id)) : undefined
        if (!letter || !row) return undefined
        const status = row.status as JobStatus
        // A job that completed or was cancelled since is left alone: its user has an answer already.
        if (status === 'completed' || status === 'cancelled') return { conflict: status }
        const jobId = String(letter.job_id)
        const mediaId = String(row.media_id)
        await jobs.writeJob(tx, jobId, {
          ...toJobState(row),
          status: 'queued',
          stage: 'queued',
          progress: 0,
          etaSeconds: null,
          error: null,
          outputs: [],
        })
        await tx.run('UPDATE jobs SET redrives = 0, seen_at = NULL WHERE id = ?', [jobId])
        await jobs.record(tx, jobId, 'queued', 'redrive')
        // An operator's re-drive is bulk work: it must not cut in front of the uploads people wait for.
        await jobs.requeueRequest(tx, jobId, messageId, 'bulk')
        await tx.run('DELETE FROM dead_letters WHERE id = ?', [id])
        tx.changed(mediaId)
        return { mediaId }
      }),
    async count() {
      return Number((await db.get('SELECT COUNT(*) AS n FROM dead_letters'))!.n)
    },
  }
}
