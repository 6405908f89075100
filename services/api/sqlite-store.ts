/**
 * Store on SQLite through `node:sqlite`, which both Bun and Deno provide. WAL mode and a busy timeout let several
 * API processes share one file; every change runs in an IMMEDIATE transaction, so read-modify-write is atomic.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { JOB_STATUSES, type ImageResult, type JobUpdate, type VideoResult } from '@app/shared'
import { afterResult, afterUpdate, isFinal, type Applied, type JobCounts, type JobState, type MediaRecord, type Store } from './store.ts'

const SCHEMA_VERSION = 1
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

type Row = Record<string, unknown>

export function openSqliteStore(path: string): Store {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
  const db = new DatabaseSync(path)
  db.exec('PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;')
  const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version
  if (version > SCHEMA_VERSION) throw new Error(`the database ${path} has schema ${version}, newer than this API (${SCHEMA_VERSION})`)
  db.exec(SCHEMA)
  db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`)

  const transaction = <T>(work: () => T): T => {
    db.exec('BEGIN IMMEDIATE')
    try {
      const result = work()
      db.exec('COMMIT')
      return result
    } catch (error) {
      db.exec('ROLLBACK')
      throw error
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

  /** Reads the job, computes its next state, writes it: all inside one transaction. */
  const change = (jobId: string, next: (job: JobState) => JobState | null, also?: (job: JobState) => void): Applied | undefined =>
    transaction(() => {
      const row = selectJob.get(jobId) as Row | undefined
      if (!row) return undefined // a media deleted since (or a message that was never ours)
      const job = toJobState(row)
      const updated = next(job)
      if (!updated) return { mediaId: String(row.media_id), status: job.status, changed: false }
      writeJob(jobId, updated)
      also?.(updated)
      return { mediaId: String(row.media_id), status: updated.status, changed: true }
    })

  return {
    async createMedia(media) {
      const at = now()
      transaction(() => {
        db.prepare(
          'INSERT INTO media (id, kind, format, size, bucket, source_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'
        ).run(media.id, media.kind, media.format, media.size, media.bucket, media.sourceKey, at, at)
        db.prepare(
          "INSERT INTO jobs (id, media_id, type, status, stage, created_at, updated_at) VALUES (?, ?, ?, 'queued', 'queued', ?, ?)"
        ).run(media.jobId, media.id, media.type, at, at)
        const r = media.request
        db.prepare('INSERT INTO outbox (message_id, job_id, queue, type, body, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
          r.messageId, r.jobId, r.queue, r.type, r.body, Date.now()
        )
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
      return change(update.jobId, (job) => afterUpdate(job, update))
    },
    async applyResult(result: ImageResult | VideoResult) {
      return change(
        result.jobId,
        (job) => afterResult(job, result),
        () => {
          if (result.status !== 'completed') return
          db.prepare('UPDATE media SET metadata = ?, updated_at = ? WHERE id = (SELECT media_id FROM jobs WHERE id = ?)').run(
            JSON.stringify(result.metadata), now(), result.jobId
          )
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
    async countJobs() {
      const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as JobCounts
      for (const row of db.prepare('SELECT status, COUNT(*) AS n FROM jobs GROUP BY status').all() as Row[]) {
        counts[row.status as keyof JobCounts] = Number(row.n)
      }
      return counts
    },
    async ping() {
      db.prepare('SELECT 1').get()
    },
    async close() {
      db.close()
    },
  }
}
