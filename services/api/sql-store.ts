/**
 * The store's queries, written once for SQLite and PostgreSQL (db.ts). Every read-modify-write runs in one
 * transaction with the job's row locked (on PostgreSQL; a SQLite write transaction holds the whole file), so two
 * API instances applying the same message, or sweeping the same stalled job, change it once.
 */
import { createHash } from 'node:crypto'
import { JOB_STATUSES, type ErrorInfo, type JobStatus } from '@app/shared'
import type { Db, Queryable, Row } from './db.ts'
import {
  afterResult,
  afterUpdate,
  isFinal,
  type ApiKey,
  type Applied,
  type DeadLetter,
  type HistoryEntry,
  type JobCounts,
  type JobState,
  type MediaRecord,
  type OutboxMessage,
  type StallAction,
  type Store,
} from './store.ts'

export interface SqlStoreOptions {
  /** Names this API instance in the job history (which instance applied what). */
  origin?: string
}

/** Why a job's status changed, as the history keeps it. */
type Reason = HistoryEntry['reason']

export function createSqlStore(db: Db, options: SqlStoreOptions = {}): Store {
  const origin = options.origin ?? null
  const now = () => new Date().toISOString()
  const text = (value: unknown) => (value === null || value === undefined ? null : String(value))
  const num = (value: unknown) => (value === null || value === undefined ? null : Number(value))

  const toJobState = (row: Row): JobState => ({
    status: row.status as JobState['status'],
    stage: row.stage as JobState['stage'],
    progress: Number(row.progress),
    etaSeconds: num(row.eta_seconds),
    error: row.error ? JSON.parse(String(row.error)) : null,
    outputs: JSON.parse(String(row.outputs)),
  })
  const toOutbox = (r: Row): OutboxMessage => ({
    messageId: String(r.message_id),
    jobId: String(r.job_id),
    queue: String(r.queue),
    type: String(r.type),
    body: r.body as Uint8Array,
    traceparent: text(r.traceparent),
  })
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
  const toKey = (r: Row): ApiKey => ({
    id: String(r.id),
    tenant: String(r.tenant),
    name: text(r.name),
    prefix: String(r.prefix),
    createdAt: String(r.created_at),
    revokedAt: text(r.revoked_at),
  })

  const JOB_COLUMNS =
    'id, media_id, type, status, stage, progress, eta_seconds, error, outputs, redrives, created_at, traceparent, ' +
    '(SELECT tenant FROM media WHERE media.id = jobs.media_id) AS tenant'
  const selectJob = (tx: Queryable, jobId: string) => tx.get(`SELECT ${JOB_COLUMNS} FROM jobs WHERE id = ?${db.lockRows}`, [jobId])
  const writeJob = (tx: Queryable, jobId: string, next: JobState) =>
    tx.run('UPDATE jobs SET status = ?, stage = ?, progress = ?, eta_seconds = ?, error = ?, outputs = ?, updated_at = ? WHERE id = ?', [
      next.status, next.stage, next.progress, next.etaSeconds, next.error ? JSON.stringify(next.error) : null, JSON.stringify(next.outputs), now(), jobId,
    ])
  const record = (tx: Queryable, jobId: string, status: JobStatus, reason: Reason) =>
    tx.run('INSERT INTO job_history (job_id, status, reason, origin, at) VALUES (?, ?, ?, ?, ?)', [jobId, status, reason, origin, Date.now()])
  const insertOutbox = (tx: Queryable, m: Omit<OutboxMessage, 'traceparent'>, createdAt: number) =>
    tx.run('INSERT INTO outbox (message_id, job_id, queue, type, body, created_at) VALUES (?, ?, ?, ?, ?, ?)', [m.messageId, m.jobId, m.queue, m.type, m.body, createdAt])
  /** Queues a fresh copy of a job's request; created "long ago", so the relay sends it on its next round. */
  const requeueRequest = async (tx: Queryable, jobId: string, messageId: string) => {
    const original = await tx.get('SELECT queue, type, body FROM outbox WHERE job_id = ? ORDER BY created_at DESC LIMIT 1', [jobId])
    if (!original) throw new Error(`job ${jobId} has no request to send again`)
    await insertOutbox(tx, { messageId, jobId, queue: String(original.queue), type: String(original.type), body: original.body as Uint8Array }, 0)
  }

  /** Reads the job (locked), computes its next state and writes it, in the transaction `tx`. */
  const changeIn = async (
    tx: Queryable,
    jobId: string,
    reason: Reason,
    next: (job: JobState) => JobState | null,
    options: { also?: (tx: Queryable, job: JobState) => Promise<unknown>; seen?: boolean } = {}
  ): Promise<Applied | undefined> => {
    const row = await selectJob(tx, jobId)
    if (!row) return undefined // a media deleted since (or a message that was never ours)
    const job = toJobState(row)
    // Any word from a processor, even one that changes nothing, shows the job is alive.
    if (options.seen && !isFinal(job.status)) await tx.run('UPDATE jobs SET seen_at = ? WHERE id = ?', [Date.now(), jobId])
    const about = {
      mediaId: String(row.media_id),
      previous: job.status,
      type: row.type as Applied['type'],
      tenant: String(row.tenant),
      createdAt: String(row.created_at),
      traceparent: text(row.traceparent),
    }
    const updated = next(job)
    if (!updated) return { ...about, status: job.status, changed: false }
    await writeJob(tx, jobId, updated)
    if (updated.status !== job.status) await record(tx, jobId, updated.status, reason)
    await options.also?.(tx, updated)
    return { ...about, status: updated.status, changed: true }
  }
  const failIn = (tx: Queryable, jobId: string, error: ErrorInfo, reason: Reason) =>
    changeIn(tx, jobId, reason, (job) => (isFinal(job.status) ? null : { ...job, status: 'failed', stage: 'finished', etaSeconds: null, error }))

  return {
    async createMedia(media) {
      const at = now()
      await db.transaction(async (tx) => {
        await tx.run(
          'INSERT INTO media (id, tenant, filename, kind, format, size, bucket, source_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
          [media.id, media.tenant, media.filename, media.kind, media.format, media.size, media.bucket, media.sourceKey, at, at]
        )
        await tx.run("INSERT INTO jobs (id, media_id, type, status, stage, created_at, updated_at, traceparent) VALUES (?, ?, ?, 'queued', 'queued', ?, ?, ?)", [
          media.jobId, media.id, media.type, at, at, media.traceparent ?? null,
        ])
        await record(tx, media.jobId, 'queued', 'created')
        await insertOutbox(tx, media.request, Date.now())
      })
    },
    async getMedia(id) {
      const row = await db.get(
        `SELECT m.*, j.id AS job_id, j.type, j.status, j.stage, j.progress, j.eta_seconds, j.error, j.outputs, j.updated_at AS job_updated_at, j.traceparent
         FROM media m JOIN jobs j ON j.media_id = m.id WHERE m.id = ? ORDER BY j.created_at DESC LIMIT 1`,
        [id]
      )
      if (!row) return undefined
      const updatedAt = [String(row.updated_at), String(row.job_updated_at)].sort().at(-1)!
      return {
        ...toJobState(row),
        id: String(row.id),
        tenant: String(row.tenant),
        filename: text(row.filename),
        kind: row.kind as MediaRecord['kind'],
        format: String(row.format),
        size: Number(row.size),
        bucket: String(row.bucket),
        sourceKey: String(row.source_key),
        jobId: String(row.job_id),
        type: row.type as MediaRecord['type'],
        metadata: row.metadata ? JSON.parse(String(row.metadata)) : null,
        traceparent: text(row.traceparent),
        createdAt: String(row.created_at),
        updatedAt,
      }
    },
    async deleteMedia(id) {
      await db.run('DELETE FROM media WHERE id = ?', [id])
    },
    async markPublished(messageId) {
      await db.run('UPDATE outbox SET published_at = ? WHERE message_id = ? AND published_at IS NULL', [Date.now(), messageId])
    },
    async claimUnpublished(olderThanMs, leaseMs) {
      return db.transaction(async (tx) => {
        const at = Date.now()
        // Rows another instance is sending (claimed, or locked right now) are skipped: each goes out once a round.
        // The trace is the job's: every copy of its request (a relay, a re-drive) carries the upload's traceparent.
        const rows = await tx.all(
          `SELECT message_id, job_id, queue, type, body, (SELECT traceparent FROM jobs WHERE jobs.id = outbox.job_id) AS traceparent
           FROM outbox WHERE published_at IS NULL AND created_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)
           ORDER BY created_at LIMIT 500${db.claimRows}`,
          [at - olderThanMs, at]
        )
        for (const row of rows) await tx.run('UPDATE outbox SET claimed_until = ? WHERE message_id = ?', [at + leaseMs, String(row.message_id)])
        return rows.map(toOutbox)
      })
    },
    async unclaim(messageIds) {
      for (const id of messageIds) await db.run('UPDATE outbox SET claimed_until = NULL WHERE message_id = ?', [id])
    },
    async claimRound(name, everyMs) {
      const at = Date.now()
      // Inserted, or moved on when due: one instance gets the row back (the others' conditions fail on the new value).
      const row = await db.get(
        `INSERT INTO rounds (name, next_at, holder) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET next_at = excluded.next_at, holder = excluded.holder WHERE rounds.next_at <= ?
         RETURNING name`,
        [name, at + everyMs, origin, at]
      )
      return row !== undefined
    },
    async applyUpdate(update) {
      return db.transaction((tx) => changeIn(tx, update.jobId, 'update', (job) => afterUpdate(job, update), { seen: true }))
    },
    async applyResult(result) {
      return db.transaction((tx) =>
        changeIn(tx, result.jobId, 'result', (job) => afterResult(job, result), {
          also: async (tx) => {
            if (result.status !== 'completed') return
            await tx.run('UPDATE media SET metadata = ?, updated_at = ? WHERE id = (SELECT media_id FROM jobs WHERE id = ?)', [
              JSON.stringify(result.metadata), now(), result.jobId,
            ])
          },
        })
      )
    },
    async cancel(mediaId) {
      return db.transaction(async (tx) => {
        const latest = await tx.get('SELECT id FROM jobs WHERE media_id = ? ORDER BY created_at DESC LIMIT 1', [mediaId])
        if (!latest) return undefined
        const row = (await selectJob(tx, String(latest.id)))!
        const job = toJobState(row)
        if (isFinal(job.status)) return { outcome: 'final' as const, status: job.status }
        await writeJob(tx, String(row.id), { ...job, status: 'cancelled', stage: 'finished', etaSeconds: null })
        await record(tx, String(row.id), 'cancelled', 'cancel')
        return { outcome: 'cancelled' as const, jobId: String(row.id), type: row.type as MediaRecord['type'] }
      })
    },
    async recordDeadLetter(letter, failure) {
      return db.transaction(async (tx) => {
        await tx.run(
          `INSERT INTO dead_letters (id, tenant, type, queue, reason, deliveries, job_id, problem, message_id, digest, headers, body, dead_at)
           VALUES (?, (SELECT m.tenant FROM jobs j JOIN media m ON m.id = j.media_id WHERE j.id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT DO NOTHING`,
          [
            letter.id, letter.jobId, letter.type, letter.queue, letter.reason, letter.deliveries, letter.jobId, letter.problem, letter.messageId,
            createHash('sha256').update(letter.body).digest('hex'), JSON.stringify(letter.headers), letter.body, letter.deadAt,
          ]
        )
        return failure && letter.jobId ? failIn(tx, letter.jobId, failure, 'dead_letter') : undefined
      })
    },
    async listDeadLetters(limit, tenant) {
      const rows =
        tenant === undefined
          ? await db.all('SELECT * FROM dead_letters ORDER BY dead_at DESC LIMIT ?', [limit])
          : await db.all('SELECT * FROM dead_letters WHERE tenant = ? ORDER BY dead_at DESC LIMIT ?', [tenant, limit])
      return rows.map((r) => {
        const { body: _body, headers: _headers, ...rest } = toDeadLetter(r)
        return rest
      })
    },
    async getDeadLetter(id) {
      const row = await db.get('SELECT * FROM dead_letters WHERE id = ?', [id])
      return row ? toDeadLetter(row) : undefined
    },
    async deleteDeadLetter(id) {
      return (await db.run('DELETE FROM dead_letters WHERE id = ?', [id])) > 0
    },
    async redriveRequest(id, messageId) {
      return db.transaction(async (tx) => {
        const letter = await tx.get(`SELECT job_id FROM dead_letters WHERE id = ?${db.lockRows}`, [id])
        const row = letter?.job_id ? await selectJob(tx, String(letter.job_id)) : undefined
        if (!letter || !row) return undefined
        const status = row.status as MediaRecord['status']
        // A job that completed or was cancelled since is left alone: its user has an answer already.
        if (status === 'completed' || status === 'cancelled') return { conflict: status }
        const jobId = String(letter.job_id)
        await writeJob(tx, jobId, { ...toJobState(row), status: 'queued', stage: 'queued', progress: 0, etaSeconds: null, error: null, outputs: [] })
        await tx.run('UPDATE jobs SET redrives = 0, seen_at = NULL WHERE id = ?', [jobId])
        await record(tx, jobId, 'queued', 'redrive')
        await requeueRequest(tx, jobId, messageId)
        await tx.run('DELETE FROM dead_letters WHERE id = ?', [id])
        return { mediaId: String(row.media_id) }
      })
    },
    async sweepStalled(silentMs, maxRedrives, types) {
      return db.transaction(async (tx) => {
        const at = Date.now()
        // A type is live when a processor consumes its queue, or when another of its jobs was heard from lately
        // (a processor whose slots are all leased consumes nothing, yet is alive). Rows another instance's sweep
        // holds are skipped; once it commits they are no longer silent (re-driven) or no longer processing (failed),
        // so no job is re-driven or failed twice.
        const rows = await tx.all(
          `SELECT id, media_id, redrives FROM jobs WHERE status = 'processing' AND seen_at < ?
           AND (type IN (${types.map(() => '?').join(', ') || 'NULL'})
                OR EXISTS (SELECT 1 FROM jobs AS other WHERE other.type = jobs.type AND other.status = 'processing' AND other.seen_at >= ?))
           LIMIT 500${db.claimRows}`,
          [at - silentMs, ...types, at - silentMs]
        )
        const actions: StallAction[] = []
        for (const row of rows) {
          const jobId = String(row.id)
          const redrives = Number(row.redrives)
          if (redrives < maxRedrives) {
            // Counted from now: the re-driven copy gets a full period to show signs of life.
            await tx.run('UPDATE jobs SET redrives = ?, seen_at = ? WHERE id = ?', [redrives + 1, at, jobId])
            await record(tx, jobId, 'processing', 'stall_redrive')
            await requeueRequest(tx, jobId, crypto.randomUUID())
            actions.push({ jobId, mediaId: String(row.media_id), action: 'redriven' })
            continue
          }
          await failIn(
            tx,
            jobId,
            {
              code: 'stalled',
              class: 'crash',
              message: `no processor reported on the job for ${Math.round(silentMs / 1000)} s, ${redrives + 1} times (re-driven ${redrives} times); gave up`,
            },
            'stalled'
          )
          actions.push({ jobId, mediaId: String(row.media_id), action: 'failed' })
        }
        return actions
      })
    },
    async history(jobId) {
      const rows = await db.all('SELECT status, reason, origin, at FROM job_history WHERE job_id = ? ORDER BY id', [jobId])
      return rows.map((r) => ({ status: r.status as JobStatus, reason: r.reason as Reason, origin: text(r.origin), at: new Date(Number(r.at)).toISOString() }))
    },
    async countSilent(silentMs) {
      const row = await db.get("SELECT COUNT(*) AS n FROM jobs WHERE status = 'processing' AND seen_at < ?", [Date.now() - silentMs])
      return Number(row!.n)
    },
    async countDeadLetters() {
      return Number((await db.get('SELECT COUNT(*) AS n FROM dead_letters'))!.n)
    },
    async countJobs() {
      const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as JobCounts
      for (const row of await db.all('SELECT status, COUNT(*) AS n FROM jobs GROUP BY status')) counts[row.status as keyof JobCounts] = Number(row.n)
      return counts
    },
    async countJobsByType() {
      const rows = await db.all('SELECT type, status, COUNT(*) AS n FROM jobs GROUP BY type, status')
      return rows.map((r) => ({ type: r.type as MediaRecord['type'], status: r.status as JobStatus, count: Number(r.n) }))
    },
    async outboxBacklog() {
      const row = (await db.get('SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE published_at IS NULL'))!
      return { count: Number(row.n), oldestAt: num(row.oldest) }
    },
    async createKey(key, hash) {
      const inserted = await db.run(
        'INSERT INTO api_keys (id, tenant, name, hash, prefix, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
        [key.id, key.tenant, key.name, hash, key.prefix, key.createdAt, key.revokedAt]
      )
      return inserted > 0
    },
    async findKey(hash) {
      const row = await db.get('SELECT * FROM api_keys WHERE hash = ?', [hash])
      return row ? { record: toKey(row), hash: String(row.hash) } : undefined
    },
    async listKeys(tenant) {
      const rows =
        tenant === undefined
          ? await db.all('SELECT * FROM api_keys ORDER BY created_at DESC')
          : await db.all('SELECT * FROM api_keys WHERE tenant = ? ORDER BY created_at DESC', [tenant])
      return rows.map(toKey)
    },
    async revokeKey(id) {
      return db.transaction(async (tx) => {
        await tx.run('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', [now(), id])
        const row = await tx.get('SELECT * FROM api_keys WHERE id = ?', [id])
        return row ? toKey(row) : undefined
      })
    },
    async countActiveKeys() {
      return Number((await db.get('SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL'))!.n)
    },
    async ping() {
      await db.get('SELECT 1 AS ok')
    },
    close: () => db.close(),
  }
}
