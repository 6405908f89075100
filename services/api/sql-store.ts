/**
 * The store's queries, written once for SQLite and PostgreSQL (db.ts). Every read-modify-write runs in one
 * transaction with the job's row locked (on PostgreSQL; a SQLite write transaction holds the whole file), so two
 * API instances applying the same message, or sweeping the same stalled job, change it once.
 */
import { createHash } from 'node:crypto'
import { JOB_STATUSES, type ErrorInfo, type JobStatus } from '@app/shared'
import type { Db, Param, Queryable, Row } from './db.ts'
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
  type DueDelivery,
  type DirectUpload,
  type Webhook,
  type WebhookDelivery,
  type WebhookEvent,
} from './store.ts'

export interface SqlStoreOptions {
  /** Names this API instance in the job history (which instance applied what). */
  origin?: string
}

/** Why a job's status changed, as the history keeps it. */
type Reason = HistoryEntry['reason']

/** `?, ?, ?` for an `IN (…)` of these values (one statement for a batch, not a round trip per row). */
const placeholders = (values: readonly unknown[]) => values.map(() => '?').join(', ')

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
  const toDirectUpload = (r: Row): DirectUpload => ({
    key: String(r.key),
    id: String(r.id),
    tenant: String(r.tenant),
    uploadId: text(r.upload_id),
    filename: text(r.filename),
    mediaId: text(r.media_id),
    createdAt: Number(r.created_at),
  })
  const toWebhook = (r: Row): Webhook => ({
    id: String(r.id),
    tenant: String(r.tenant),
    url: String(r.url),
    events: JSON.parse(String(r.events)),
    secrets: JSON.parse(String(r.secrets)),
    createdAt: String(r.created_at),
    disabledAt: text(r.disabled_at),
    disabledReason: text(r.disabled_reason),
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

  /** A media with its latest job: the columns `toMedia` reads. */
  const MEDIA_SELECT = `SELECT m.*, j.id AS job_id, j.type, j.status, j.stage, j.progress, j.eta_seconds, j.error, j.outputs, j.updated_at AS job_updated_at, j.traceparent
       FROM media m JOIN jobs j ON j.id = (SELECT id FROM jobs WHERE media_id = m.id ORDER BY created_at DESC LIMIT 1)`
  const toMedia = (row: Row): MediaRecord => ({
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
    updatedAt: [String(row.updated_at), String(row.job_updated_at)].sort().at(-1)!,
  })
  /** A media with its latest job, read on `q` (the store's connection, or a transaction's). */
  const readMedia = async (q: Queryable, id: string): Promise<MediaRecord | undefined> => {
    const row = await q.get(`${MEDIA_SELECT} WHERE m.id = ?`, [id])
    return row && toMedia(row)
  }

  /**
   * Writes an event for every enabled webhook of the media's tenant that wants it, in the transaction of the change
   * (the outbox of events): with the media as it is now, so each delivery says what the event saw.
   */
  const announce = async (tx: Queryable, mediaId: string, event: WebhookEvent) => {
    const media = await readMedia(tx, mediaId)
    if (!media) return
    const hooks = await tx.all('SELECT id, events FROM webhooks WHERE tenant = ? AND disabled_at IS NULL', [media.tenant])
    const at = Date.now()
    for (const hook of hooks) {
      if (!(JSON.parse(String(hook.events)) as string[]).includes(event)) continue
      await tx.run(
        "INSERT INTO webhook_deliveries (id, webhook_id, event, media_id, media, status, next_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
        [`msg_${crypto.randomUUID().replaceAll('-', '')}`, String(hook.id), event, mediaId, JSON.stringify(media), at, at]
      )
    }
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
    // After `also`, so a completed media's event carries its metadata.
    if (updated.status !== job.status && isFinal(updated.status)) await announce(tx, about.mediaId, `media.${updated.status}` as WebhookEvent)
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
    getMedia: (id) => readMedia(db, id),
    async listMedia(tenant, { kinds, statuses, after, limit }) {
      const where = ['m.tenant = ?']
      const params: Param[] = [tenant]
      if (kinds?.length) where.push(`m.kind IN (${placeholders(kinds)})`), params.push(...kinds)
      if (statuses?.length) where.push(`j.status IN (${placeholders(statuses)})`), params.push(...statuses)
      if (after) where.push('(m.created_at < ? OR (m.created_at = ? AND m.id < ?))'), params.push(after.createdAt, after.createdAt, after.id)
      const rows = await db.all(`${MEDIA_SELECT} WHERE ${where.join(' AND ')} ORDER BY m.created_at DESC, m.id DESC LIMIT ?`, [...params, limit])
      return rows.map(toMedia)
    },
    async deleteMedia(id, options = {}) {
      if (!options.announce) return void (await db.run('DELETE FROM media WHERE id = ?', [id]))
      await db.transaction(async (tx) => {
        await announce(tx, id, 'media.deleted')
        await tx.run('DELETE FROM media WHERE id = ?', [id])
      })
    },
    async markPublished(messageIds) {
      if (!messageIds.length) return
      await db.run(`UPDATE outbox SET published_at = ? WHERE message_id IN (${placeholders(messageIds)}) AND published_at IS NULL`, [Date.now(), ...messageIds])
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
        const claimed = rows.map(toOutbox)
        if (claimed.length) {
          const ids = claimed.map((m) => m.messageId)
          await tx.run(`UPDATE outbox SET claimed_until = ? WHERE message_id IN (${placeholders(ids)})`, [at + leaseMs, ...ids])
        }
        return claimed
      })
    },
    async unclaim(messageIds) {
      if (!messageIds.length) return
      await db.run(`UPDATE outbox SET claimed_until = NULL WHERE message_id IN (${placeholders(messageIds)})`, [...messageIds])
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
        await announce(tx, mediaId, 'media.cancelled')
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
           AND (type IN (${placeholders(types) || 'NULL'})
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
    async claimLease(name, holder, ttlMs) {
      const at = Date.now()
      // Inserted, or taken over when free (expired) or already this holder's; the others' conditions fail.
      const row = await db.get(
        `INSERT INTO leases (name, holder, until) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until WHERE leases.until < ? OR leases.holder = excluded.holder
         RETURNING name`,
        [name, holder, at + ttlMs, at]
      )
      return row !== undefined
    },
    async releaseLease(name, holder) {
      await db.run('DELETE FROM leases WHERE name = ? AND holder = ?', [name, holder])
    },
    async claimIdempotencyKey(tenant, key, { keepMs, staleMs }) {
      return db.transaction(async (tx) => {
        const at = Date.now()
        const row = await tx.get(`SELECT fingerprint, status, body, location, created_at FROM idempotency_keys WHERE tenant = ? AND key = ?${db.lockRows}`, [tenant, key])
        const answered = row?.status !== null && row?.status !== undefined
        const age = row ? at - Number(row.created_at) : Infinity
        if (row && answered && age <= keepMs) {
          const answer = { status: Number(row.status), body: String(row.body), location: text(row.location) }
          return { state: 'answered' as const, fingerprint: String(row.fingerprint), answer }
        }
        if (row && !answered && age <= staleMs) return { state: 'pending' as const }
        // Unused, expired, or left by a request that died: this request's now. Two racing inserts: one wins (the
        // primary key), the other finds it pending on a retry of its own.
        await tx.run('DELETE FROM idempotency_keys WHERE tenant = ? AND key = ?', [tenant, key])
        const inserted = await tx.run('INSERT INTO idempotency_keys (tenant, key, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING', [tenant, key, at])
        return inserted > 0 ? { state: 'claimed' as const } : { state: 'pending' as const }
      })
    },
    async answerIdempotencyKey(tenant, key, fingerprint, answer) {
      await db.run('UPDATE idempotency_keys SET fingerprint = ?, status = ?, body = ?, location = ? WHERE tenant = ? AND key = ?', [
        fingerprint, answer.status, answer.body, answer.location, tenant, key,
      ])
    },
    async releaseIdempotencyKey(tenant, key) {
      await db.run('DELETE FROM idempotency_keys WHERE tenant = ? AND key = ? AND status IS NULL', [tenant, key])
    },
    async sweepIdempotencyKeys(olderThanMs) {
      return db.run('DELETE FROM idempotency_keys WHERE created_at < ?', [Date.now() - olderThanMs])
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
    async recordDirectUpload(u) {
      await db.run('INSERT INTO direct_uploads (key, id, tenant, upload_id, filename, media_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)', [
        u.key, u.id, u.tenant, u.uploadId, u.filename, u.mediaId, u.createdAt,
      ])
    },
    async getDirectUpload(key) {
      const row = await db.get('SELECT * FROM direct_uploads WHERE key = ?', [key])
      return row ? toDirectUpload(row) : undefined
    },
    async completeDirectUpload(key, mediaId) {
      await db.run('UPDATE direct_uploads SET media_id = ? WHERE key = ?', [mediaId, key])
    },
    async deleteDirectUpload(key) {
      await db.run('DELETE FROM direct_uploads WHERE key = ?', [key])
    },
    async staleDirectUploads(olderThanMs, limit) {
      const rows = await db.all('SELECT * FROM direct_uploads WHERE media_id IS NULL AND created_at < ? ORDER BY created_at LIMIT ?', [Date.now() - olderThanMs, limit])
      return rows.map(toDirectUpload)
    },
    async createWebhook(w) {
      await db.run('INSERT INTO webhooks (id, tenant, url, events, secrets, created_at) VALUES (?, ?, ?, ?, ?, ?)', [
        w.id, w.tenant, w.url, JSON.stringify(w.events), JSON.stringify(w.secrets), w.createdAt,
      ])
    },
    async listWebhooks(tenant) {
      return (await db.all('SELECT * FROM webhooks WHERE tenant = ? ORDER BY created_at DESC', [tenant])).map(toWebhook)
    },
    async getWebhook(id) {
      const row = await db.get('SELECT * FROM webhooks WHERE id = ?', [id])
      return row ? toWebhook(row) : undefined
    },
    async deleteWebhook(id) {
      return (await db.run('DELETE FROM webhooks WHERE id = ?', [id])) > 0
    },
    async setWebhookSecrets(id, secrets) {
      await db.run('UPDATE webhooks SET secrets = ? WHERE id = ?', [JSON.stringify(secrets), id])
      const row = await db.get('SELECT * FROM webhooks WHERE id = ?', [id])
      return row ? toWebhook(row) : undefined
    },
    async claimDueDeliveries(limit, leaseMs) {
      // Asked every second by every instance: a plain read first, so an idle system takes no write lock.
      const any = await db.get("SELECT 1 AS due FROM webhook_deliveries WHERE status = 'pending' AND next_at <= ? LIMIT 1", [Date.now()])
      if (!any) return []
      return db.transaction(async (tx) => {
        const at = Date.now()
        // Rows another instance is sending (claimed, or locked right now) are skipped: each goes out once.
        const rows = await tx.all(
          `SELECT d.id, d.event, d.media, d.body, d.attempts, d.created_at, d.webhook_id FROM webhook_deliveries d
           WHERE d.status = 'pending' AND d.next_at <= ? AND (d.claimed_until IS NULL OR d.claimed_until < ?)
           ORDER BY d.next_at LIMIT ?${db.claimRows}`,
          [at, at, limit]
        )
        const due: DueDelivery[] = []
        for (const row of rows) {
          const hook = await tx.get('SELECT * FROM webhooks WHERE id = ?', [String(row.webhook_id)])
          if (!hook) continue
          if (hook.disabled_at !== null && hook.disabled_at !== undefined) {
            // Disabled since the event was written (it answered 410): nothing more goes to it.
            await tx.run("UPDATE webhook_deliveries SET status = 'failed', last_error = 'the endpoint is disabled' WHERE id = ?", [String(row.id)])
            continue
          }
          await tx.run('UPDATE webhook_deliveries SET claimed_until = ? WHERE id = ?', [at + leaseMs, String(row.id)])
          due.push({
            id: String(row.id),
            event: row.event as WebhookEvent,
            media: JSON.parse(String(row.media)) as MediaRecord,
            body: text(row.body),
            attempts: Number(row.attempts),
            createdAt: Number(row.created_at),
            webhook: toWebhook(hook),
          })
        }
        return due
      })
    },
    async recordDeliveryAttempt(id, body, outcome) {
      await db.transaction(async (tx) => {
        const at = Date.now()
        const status = outcome.kind === 'delivered' ? 'delivered' : outcome.kind === 'retry' ? 'pending' : 'failed'
        await tx.run(
          `UPDATE webhook_deliveries SET body = ?, status = ?, attempts = attempts + 1, next_at = ?, claimed_until = NULL,
           last_status = ?, last_error = ?, delivered_at = ? WHERE id = ?`,
          [
            body, status, outcome.kind === 'retry' ? outcome.nextAt : at, outcome.status, outcome.kind === 'delivered' ? null : outcome.error,
            outcome.kind === 'delivered' ? at : null, id,
          ]
        )
        if (outcome.kind === 'failed' && outcome.disable) {
          await tx.run('UPDATE webhooks SET disabled_at = ?, disabled_reason = ? WHERE id = (SELECT webhook_id FROM webhook_deliveries WHERE id = ?)', [
            now(), outcome.disable, id,
          ])
        }
      })
    },
    async listDeliveries(webhookId, limit) {
      const rows = await db.all('SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY created_at DESC, id LIMIT ?', [webhookId, limit])
      const iso = (ms: unknown) => (ms === null || ms === undefined ? null : new Date(Number(ms)).toISOString())
      return rows.map((r) => ({
        id: String(r.id),
        webhookId: String(r.webhook_id),
        event: r.event as WebhookEvent,
        mediaId: String(r.media_id),
        status: r.status as WebhookDelivery['status'],
        attempts: Number(r.attempts),
        nextAt: r.status === 'pending' ? iso(r.next_at) : null,
        lastStatus: num(r.last_status),
        lastError: text(r.last_error),
        createdAt: iso(r.created_at)!,
        deliveredAt: iso(r.delivered_at),
      }))
    },
    async redeliver(webhookId, deliveryId) {
      const changed = await db.run(
        "UPDATE webhook_deliveries SET status = 'pending', next_at = ?, claimed_until = NULL WHERE id = ? AND webhook_id = ?",
        [Date.now(), deliveryId, webhookId]
      )
      return changed > 0
    },
    async sharedSecret(name, fresh) {
      await db.run('INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING', [name, fresh])
      return String((await db.get('SELECT value FROM secrets WHERE name = ?', [name]))!.value)
    },
    async ping() {
      await db.get('SELECT 1 AS ok')
    },
    close: () => db.close(),
  }
}
