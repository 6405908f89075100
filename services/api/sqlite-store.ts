/**
 * Store on SQLite through `node:sqlite`, which both Bun and Deno provide. WAL mode and a busy timeout let several
 * API processes share one file; every change runs in an IMMEDIATE transaction, so read-modify-write is atomic.
 */
import { createHash } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { JOB_STATUSES, type ErrorInfo, type ImageResult, type JobUpdate, type VideoResult } from '@app/shared'
import {
  afterResult,
  afterUpdate,
  isFinal,
  type ApiKey,
  type Applied,
  type DeadLetter,
  type JobCounts,
  type JobState,
  type MediaRecord,
  type StallAction,
  type Store,
} from './store.ts'

const SCHEMA_VERSION = 3
const SCHEMA = `
CREATE TABLE IF NOT EXISTS media (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  format TEXT NOT NULL,
  size INTEGER NOT NULL,
  bucket TEXT NOT NULL,
  source_key TEXT NOT NULL,
  metadata TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  media_id TEXT NOT NULL REFERENCES media(id) ON DELETE CASCADE,
  type TEXT NOT NULL,
  status TEXT NOT NULL,
  stage TEXT NOT NULL,
  progress REAL NOT NULL DEFAULT 0,
  eta_seconds REAL,
  error TEXT,
  outputs TEXT NOT NULL DEFAULT '[]',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_media_id ON jobs (media_id);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS outbox (
  message_id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  queue TEXT NOT NULL,
  type TEXT NOT NULL,
  body BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  published_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
`
/** Version 2: when a processor last reported on a job and how often it was re-driven; dead letters. */
const MIGRATION_2 = `
ALTER TABLE jobs ADD COLUMN seen_at INTEGER;
ALTER TABLE jobs ADD COLUMN redrives INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_silent ON jobs (seen_at) WHERE status = 'processing';
CREATE TABLE dead_letters (
  id TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  queue TEXT NOT NULL,
  reason TEXT NOT NULL,
  deliveries INTEGER,
  job_id TEXT,
  problem TEXT,
  message_id TEXT,
  digest TEXT NOT NULL,
  headers TEXT NOT NULL,
  body BLOB NOT NULL,
  dead_at TEXT NOT NULL
);
-- At-least-once dead-lettering may deliver a dead letter twice: the same message id and body is kept once.
CREATE UNIQUE INDEX dead_letters_message ON dead_letters (queue, message_id, digest) WHERE message_id IS NOT NULL;
`

/**
 * Version 3: tenants and API keys. Media made before keys existed belong to the tenant `default` (the tenant of an
 * API run with AUTH=none). Dead letters take their job's tenant.
 */
const MIGRATION_3 = `
ALTER TABLE media ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE media ADD COLUMN filename TEXT;
CREATE INDEX media_tenant ON media (tenant, created_at);
ALTER TABLE dead_letters ADD COLUMN tenant TEXT;
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT,
  hash TEXT NOT NULL UNIQUE,
  prefix TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
`

type Row = Record<string, unknown>

export function openSqliteStore(path: string): Store {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
  const db = new DatabaseSync(path)
  db.exec('PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;')
  const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version
  if (version > SCHEMA_VERSION) throw new Error(`the database ${path} has schema ${version}, newer than this API (${SCHEMA_VERSION})`)
  db.exec('BEGIN IMMEDIATE')
  try {
    db.exec(SCHEMA)
    if (version < 2) db.exec(MIGRATION_2)
    if (version < 3) db.exec(MIGRATION_3)
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`)
    db.exec('COMMIT')
  } catch (error) {
    db.exec('ROLLBACK')
    throw error
  }

  let depth = 0
  /** Runs `work` in one IMMEDIATE transaction; nested calls join the outer one. */
  const transaction = <T>(work: () => T): T => {
    if (depth > 0) return work()
    db.exec('BEGIN IMMEDIATE')
    depth++
    try {
      const result = work()
      db.exec('COMMIT')
      return result
    } catch (error) {
      db.exec('ROLLBACK')
      throw error
    } finally {
      depth--
    }
  }
  const now = () => new Date().toISOString()

  const selectMedia = db.prepare(`
    SELECT m.*, j.id AS job_id, j.type, j.status, j.stage, j.progress, j.eta_seconds, j.error, j.outputs, j.updated_at AS job_updated_at
    FROM media m JOIN jobs j ON j.media_id = m.id WHERE m.id = ? ORDER BY j.created_at DESC LIMIT 1`)
  const selectJob = db.prepare('SELECT media_id, status, stage, progress, eta_seconds, error, outputs FROM jobs WHERE id = ?')
  const updateJob = db.prepare(
    'UPDATE jobs SET status = ?, stage = ?, progress = ?, eta_seconds = ?, error = ?, outputs = ?, updated_at = ? WHERE id = ?'
  )

  const toJobState = (row: Row): JobState => ({
    status: row.status as JobState['status'],
    stage: row.stage as JobState['stage'],
    progress: Number(row.progress),
    etaSeconds: row.eta_seconds === null ? null : Number(row.eta_seconds),
    error: row.error ? JSON.parse(String(row.error)) : null,
    outputs: JSON.parse(String(row.outputs)),
  })
  const writeJob = (jobId: string, next: JobState) =>
    updateJob.run(next.status, next.stage, next.progress, next.etaSeconds, next.error ? JSON.stringify(next.error) : null, JSON.stringify(next.outputs), now(), jobId)

  const touchJob = db.prepare('UPDATE jobs SET seen_at = ? WHERE id = ?')
  const insertOutbox = db.prepare('INSERT INTO outbox (message_id, job_id, queue, type, body, created_at) VALUES (?, ?, ?, ?, ?, ?)')
  /** Queues a fresh copy of a job's request; created "long ago", so the relay sends it on its next round. */
  const requeueRequest = (jobId: string, messageId: string) => {
    const original = db.prepare('SELECT queue, type, body FROM outbox WHERE job_id = ? ORDER BY created_at DESC LIMIT 1').get(jobId) as Row | undefined
    if (!original) throw new Error(`job ${jobId} has no request to send again`)
    insertOutbox.run(messageId, jobId, String(original.queue), String(original.type), original.body as Uint8Array, 0)
  }

  /** Reads the job, computes its next state, writes it: all inside one transaction. */
  const change = (
    jobId: string,
    next: (job: JobState) => JobState | null,
    options: { also?: (job: JobState) => void; seen?: boolean } = {}
  ): Applied | undefined =>
    transaction(() => {
      const row = selectJob.get(jobId) as Row | undefined
      if (!row) return undefined // a media deleted since (or a message that was never ours)
      const job = toJobState(row)
      // Any word from a processor, even one that changes nothing, shows the job is alive.
      if (options.seen && !isFinal(job.status)) touchJob.run(Date.now(), jobId)
      const updated = next(job)
      if (!updated) return { mediaId: String(row.media_id), status: job.status, changed: false }
      writeJob(jobId, updated)
      options.also?.(updated)
      return { mediaId: String(row.media_id), status: updated.status, changed: true }
    })
  const failJob = (jobId: string, error: ErrorInfo) =>
    change(jobId, (job) => (isFinal(job.status) ? null : { ...job, status: 'failed', stage: 'finished', etaSeconds: null, error }))
  const toDeadLetter = (r: Row): DeadLetter => ({
    id: String(r.id),
    tenant: r.tenant === null ? null : String(r.tenant),
    type: r.type as DeadLetter['type'],
    queue: String(r.queue),
    reason: String(r.reason),
    deliveries: r.deliveries === null ? null : Number(r.deliveries),
    jobId: r.job_id === null ? null : String(r.job_id),
    problem: r.problem === null ? null : String(r.problem),
    messageId: r.message_id === null ? null : String(r.message_id),
    headers: JSON.parse(String(r.headers)),
    body: r.body as Uint8Array,
    deadAt: String(r.dead_at),
  })

  const toKey = (r: Row): ApiKey => ({
    id: String(r.id),
    tenant: String(r.tenant),
    name: r.name === null ? null : String(r.name),
    prefix: String(r.prefix),
    createdAt: String(r.created_at),
    revokedAt: r.revoked_at === null ? null : String(r.revoked_at),
  })

  return {
    async createMedia(media) {
      const at = now()
      transaction(() => {
        db.prepare(
          'INSERT INTO media (id, tenant, filename, kind, format, size, bucket, source_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
        ).run(media.id, media.tenant, media.filename, media.kind, media.format, media.size, media.bucket, media.sourceKey, at, at)
        db.prepare(
          "INSERT INTO jobs (id, media_id, type, status, stage, created_at, updated_at) VALUES (?, ?, ?, 'queued', 'queued', ?, ?)"
        ).run(media.jobId, media.id, media.type, at, at)
        const r = media.request
        insertOutbox.run(r.messageId, r.jobId, r.queue, r.type, r.body, Date.now())
      })
    },
    async getMedia(id) {
      const row = selectMedia.get(id) as Row | undefined
      if (!row) return undefined
      const job = toJobState(row)
      const updatedAt = [String(row.updated_at), String(row.job_updated_at)].sort().at(-1)!
      return {
        ...job,
        id: String(row.id),
        tenant: String(row.tenant),
        filename: row.filename === null ? null : String(row.filename),
        kind: row.kind as MediaRecord['kind'],
        format: String(row.format),
        size: Number(row.size),
        bucket: String(row.bucket),
        sourceKey: String(row.source_key),
        jobId: String(row.job_id),
        type: row.type as MediaRecord['type'],
        metadata: row.metadata ? JSON.parse(String(row.metadata)) : null,
        createdAt: String(row.created_at),
        updatedAt,
      }
    },
    async deleteMedia(id) {
      db.prepare('DELETE FROM media WHERE id = ?').run(id)
    },
    async markPublished(messageId) {
      db.prepare('UPDATE outbox SET published_at = ? WHERE message_id = ? AND published_at IS NULL').run(Date.now(), messageId)
    },
    async unpublished(olderThanMs) {
      const rows = db
        .prepare('SELECT * FROM outbox WHERE published_at IS NULL AND created_at <= ? ORDER BY created_at LIMIT 500')
        .all(Date.now() - olderThanMs) as Row[]
      return rows.map((r) => ({
        messageId: String(r.message_id),
        jobId: String(r.job_id),
        queue: String(r.queue),
        type: String(r.type),
        body: r.body as Uint8Array,
      }))
    },
    async applyUpdate(update: JobUpdate) {
      return change(update.jobId, (job) => afterUpdate(job, update), { seen: true })
    },
    async applyResult(result: ImageResult | VideoResult) {
      return change(
        result.jobId,
        (job) => afterResult(job, result),
        {
          also() {
            if (result.status !== 'completed') return
            db.prepare('UPDATE media SET metadata = ?, updated_at = ? WHERE id = (SELECT media_id FROM jobs WHERE id = ?)').run(
              JSON.stringify(result.metadata), now(), result.jobId
            )
          },
        }
      )
    },
    async cancel(mediaId) {
      return transaction(() => {
        const row = db
          .prepare('SELECT id, type, status, stage, progress, eta_seconds, error, outputs FROM jobs WHERE media_id = ? ORDER BY created_at DESC LIMIT 1')
          .get(mediaId) as Row | undefined
        if (!row) return undefined
        const job = toJobState(row)
        if (isFinal(job.status)) return { outcome: 'final' as const, status: job.status }
        writeJob(String(row.id), { ...job, status: 'cancelled', stage: 'finished', etaSeconds: null })
        return { outcome: 'cancelled' as const, jobId: String(row.id), type: row.type as MediaRecord['type'] }
      })
    },
    async recordDeadLetter(letter, failure) {
      return transaction(() => {
        db.prepare(
          `INSERT OR IGNORE INTO dead_letters (id, tenant, type, queue, reason, deliveries, job_id, problem, message_id, digest, headers, body, dead_at)
           VALUES (?, (SELECT m.tenant FROM jobs j JOIN media m ON m.id = j.media_id WHERE j.id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
        ).run(
          letter.id, letter.jobId, letter.type, letter.queue, letter.reason, letter.deliveries, letter.jobId, letter.problem,
          letter.messageId, createHash('sha256').update(letter.body).digest('hex'), JSON.stringify(letter.headers), letter.body, letter.deadAt
        )
        return failure && letter.jobId ? failJob(letter.jobId, failure) : undefined
      })
    },
    async listDeadLetters(limit, tenant) {
      const rows = (
        tenant === undefined
          ? db.prepare('SELECT * FROM dead_letters ORDER BY dead_at DESC LIMIT ?').all(limit)
          : db.prepare('SELECT * FROM dead_letters WHERE tenant = ? ORDER BY dead_at DESC LIMIT ?').all(tenant, limit)
      ) as Row[]
      return rows.map((r) => {
        const { body: _body, headers: _headers, ...rest } = toDeadLetter(r)
        return rest
      })
    },
    async getDeadLetter(id) {
      const row = db.prepare('SELECT * FROM dead_letters WHERE id = ?').get(id) as Row | undefined
      return row ? toDeadLetter(row) : undefined
    },
    async deleteDeadLetter(id) {
      return Number(db.prepare('DELETE FROM dead_letters WHERE id = ?').run(id).changes) > 0
    },
    async redriveRequest(id, messageId) {
      return transaction(() => {
        const letter = db.prepare('SELECT job_id FROM dead_letters WHERE id = ?').get(id) as Row | undefined
        const row = letter?.job_id ? (selectJob.get(String(letter.job_id)) as Row | undefined) : undefined
        if (!letter || !row) return undefined
        const status = row.status as MediaRecord['status']
        // A job that completed or was cancelled since is left alone: its user has an answer already.
        if (status === 'completed' || status === 'cancelled') return { conflict: status }
        const jobId = String(letter.job_id)
        writeJob(jobId, { ...toJobState(row), status: 'queued', stage: 'queued', progress: 0, etaSeconds: null, error: null, outputs: [] })
        db.prepare('UPDATE jobs SET redrives = 0, seen_at = NULL WHERE id = ?').run(jobId)
        requeueRequest(jobId, messageId)
        db.prepare('DELETE FROM dead_letters WHERE id = ?').run(id)
        return { mediaId: String(row.media_id) }
      })
    },
    async sweepStalled(silentMs, maxRedrives, types) {
      return transaction(() => {
        const at = Date.now()
        // A type is live when a processor consumes its queue, or when another of its jobs was heard from lately
        // (a processor whose slots are all leased consumes nothing, yet is alive).
        const rows = db
          .prepare(
            `SELECT id, media_id, redrives FROM jobs WHERE status = 'processing' AND seen_at < ?
             AND (type IN (${types.map(() => '?').join(', ') || 'NULL'})
                  OR EXISTS (SELECT 1 FROM jobs AS other WHERE other.type = jobs.type AND other.status = 'processing' AND other.seen_at >= ?))
             LIMIT 500`
          )
          .all(at - silentMs, ...types, at - silentMs) as Row[]
        return rows.map((row): StallAction => {
          const jobId = String(row.id)
          const redrives = Number(row.redrives)
          if (redrives < maxRedrives) {
            // Counted from now: the re-driven copy gets a full period to show signs of life.
            db.prepare('UPDATE jobs SET redrives = ?, seen_at = ? WHERE id = ?').run(redrives + 1, at, jobId)
            requeueRequest(jobId, crypto.randomUUID())
            return { jobId, mediaId: String(row.media_id), action: 'redriven' }
          }
          failJob(jobId, {
            code: 'stalled',
            class: 'crash',
            message: `no processor reported on the job for ${Math.round(silentMs / 1000)} s, ${redrives + 1} times (re-driven ${redrives} times); gave up`,
          })
          return { jobId, mediaId: String(row.media_id), action: 'failed' }
        })
      })
    },
    async countSilent(silentMs) {
      const row = db.prepare("SELECT COUNT(*) AS n FROM jobs WHERE status = 'processing' AND seen_at < ?").get(Date.now() - silentMs) as Row
      return Number(row.n)
    },
    async countDeadLetters() {
      return Number((db.prepare('SELECT COUNT(*) AS n FROM dead_letters').get() as Row).n)
    },
    async countJobs() {
      const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as JobCounts
      for (const row of db.prepare('SELECT status, COUNT(*) AS n FROM jobs GROUP BY status').all() as Row[]) {
        counts[row.status as keyof JobCounts] = Number(row.n)
      }
      return counts
    },
    async createKey(key, hash) {
      const inserted = db
        .prepare('INSERT OR IGNORE INTO api_keys (id, tenant, name, hash, prefix, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(key.id, key.tenant, key.name, hash, key.prefix, key.createdAt, key.revokedAt)
      return Number(inserted.changes) > 0
    },
    async findKey(hash) {
      const row = db.prepare('SELECT * FROM api_keys WHERE hash = ?').get(hash) as Row | undefined
      return row ? { record: toKey(row), hash: String(row.hash) } : undefined
    },
    async listKeys(tenant) {
      const rows = (
        tenant === undefined
          ? db.prepare('SELECT * FROM api_keys ORDER BY created_at DESC').all()
          : db.prepare('SELECT * FROM api_keys WHERE tenant = ? ORDER BY created_at DESC').all(tenant)
      ) as Row[]
      return rows.map(toKey)
    },
    async revokeKey(id) {
      return transaction(() => {
        db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(now(), id)
        const row = db.prepare('SELECT * FROM api_keys WHERE id = ?').get(id) as Row | undefined
        return row ? toKey(row) : undefined
      })
    },
    async countActiveKeys() {
      return Number((db.prepare('SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL').get() as Row).n)
    },
    async ping() {
      db.prepare('SELECT 1').get()
    },
    async close() {
      db.close()
    },
  }
}
