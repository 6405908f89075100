/**
 * The outbox: each job's request, written in the transaction that creates (or re-drives) the job, and marked sent
 * once the broker confirms it. What stays unconfirmed is claimed by one instance's relay at a time and sent again.
 */
import { num, placeholders, text, type Db, type Queryable, type Row } from './db.ts'

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

export interface OutboxRepo {
  /** Records the broker's confirm of these requests (one statement, however many). */
  markPublished(messageIds: readonly string[]): Promise<void>
  /**
   * Requests written at least `olderThanMs` ago, not yet confirmed by the broker and not claimed by another
   * instance; they are claimed for `leaseMs` (if this instance dies sending them, another takes them after that).
   */
  claimUnpublished(olderThanMs: number, leaseMs: number): Promise<OutboxMessage[]>
  /** Gives claimed requests back (they could not be sent), for the next relay round of any instance. */
  unclaim(messageIds: readonly string[]): Promise<void>
  backlog(): Promise<OutboxBacklog>
}

/** Writes a request into the outbox, in the transaction of its job: its state row, and its body apart. */
export async function insertOutbox(tx: Queryable, m: Omit<OutboxMessage, 'traceparent'>, createdAt: number) {
  await tx.run('INSERT INTO outbox (message_id, job_id, queue, type, created_at) VALUES (?, ?, ?, ?, ?)', [
    m.messageId,
    m.jobId,
    m.queue,
    m.type,
    createdAt,
  ])
  await tx.run('INSERT INTO outbox_bodies (message_id, body) VALUES (?, ?)', [m.messageId, m.body])
}

/** A request's body, as a column of a query on `outbox` (a subquery, so PostgreSQL's FOR UPDATE locks no body). */
export const OUTBOX_BODY = '(SELECT body FROM outbox_bodies b WHERE b.message_id = outbox.message_id) AS body'

const toOutbox = (r: Row): OutboxMessage => ({
  messageId: String(r.message_id),
  jobId: String(r.job_id),
  queue: String(r.queue),
  type: String(r.type),
  body: r.body as Uint8Array,
  traceparent: text(r.traceparent),
})

export function createOutboxRepo(db: Db): OutboxRepo {
  return {
    async markPublished(messageIds) {
      if (!messageIds.length) return
      await db.run(
        `UPDATE outbox SET published_at = ? WHERE message_id IN (${placeholders(messageIds)}) AND published_at IS NULL`,
        [Date.now(), ...messageIds]
      )
    },
    async claimUnpublished(olderThanMs, leaseMs) {
      return db.transaction(async (tx) => {
        const at = Date.now()
        // Rows another instance is sending (claimed, or locked right now) are skipped: each goes out once a round.
        // The trace is the job's: every copy of its request (a relay, a re-drive) carries the upload's traceparent.
        const rows = await tx.all(
          `SELECT message_id, job_id, queue, type, ${OUTBOX_BODY}, (SELECT traceparent FROM jobs WHERE jobs.id = outbox.job_id) AS traceparent
           FROM outbox WHERE published_at IS NULL AND created_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)
           ORDER BY created_at LIMIT 500${db.claimRows}`,
          [at - olderThanMs, at]
        )
        const claimed = rows.map(toOutbox)
        if (claimed.length) {
          const ids = claimed.map((m) => m.messageId)
          await tx.run(`UPDATE outbox SET claimed_until = ? WHERE message_id IN (${placeholders(ids)})`, [
            at + leaseMs,
            ...ids,
          ])
        }
        return claimed
      })
    },
    async unclaim(messageIds) {
      if (!messageIds.length) return
      await db.run(`UPDATE outbox SET claimed_until = NULL WHERE message_id IN (${placeholders(messageIds)})`, [
        ...messageIds,
      ])
    },
    async backlog() {
      const row = (await db.get(
        'SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE published_at IS NULL'
      ))!
      return { count: Number(row.n), oldestAt: num(row.oldest) }
    },
  }
}
