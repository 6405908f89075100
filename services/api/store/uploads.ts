/**
 * Uploads the API handed out (direct to S3, and tus): for which tenant, and the media each became once completed; and
 * the answers given to Idempotency-Keys, per tenant, so that a retried upload gets the first answer.
 */
import type { JobClass } from '@app/shared'
import { text, type Db, type Row } from './db.ts'

/** A direct or tus upload the API handed out: its object key (`<system>/originals/<id>`), tenant and multipart upload. */
export interface DirectUpload {
  key: string
  /** The media id it becomes. */
  id: string
  tenant: string
  /** The S3 multipart upload, `tus` for a tus upload, or null for a single presigned PUT. */
  uploadId: string | null
  filename: string | null
  /** Set once completed: the media it became. */
  mediaId: string | null
  createdAt: number
  /** The presets named when it was handed out (tus), if any: checked then, applied when it becomes a media. */
  presets?: string[] | null
  /** The class asked for when it was handed out (tus metadata, or a bulk key), if any: applied when it becomes a media. */
  priority?: JobClass | null
}

export interface UploadRepo {
  record(upload: DirectUpload): Promise<void>
  get(key: string): Promise<DirectUpload | undefined>
  /** Marks it completed as media `mediaId`. */
  complete(key: string, mediaId: string): Promise<void>
  remove(key: string): Promise<void>
  /** Uploads handed out more than `olderThanMs` ago and never completed: what the sweep removes. */
  stale(olderThanMs: number, limit: number): Promise<DirectUpload[]>
}

const toUpload = (r: Row): DirectUpload => ({
  key: String(r.key),
  id: String(r.id),
  tenant: String(r.tenant),
  uploadId: text(r.upload_id),
  filename: text(r.filename),
  mediaId: text(r.media_id),
  createdAt: Number(r.created_at),
  presets: r.presets ? (JSON.parse(String(r.presets)) as string[]) : null,
  priority: r.class === 'bulk' || r.class === 'interactive' ? r.class : null,
})

export function createUploadRepo(db: Db): UploadRepo {
  return {
    async record(u) {
      await db.run(
        'INSERT INTO direct_uploads (key, id, tenant, upload_id, filename, media_id, created_at, presets, class) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
          u.key,
          u.id,
          u.tenant,
          u.uploadId,
          u.filename,
          u.mediaId,
          u.createdAt,
          u.presets ? JSON.stringify(u.presets) : null,
          u.priority ?? null,
        ]
      )
    },
    async get(key) {
      const row = await db.get('SELECT * FROM direct_uploads WHERE key = ?', [key])
      return row ? toUpload(row) : undefined
    },
    async complete(key, mediaId) {
      await db.run('UPDATE direct_uploads SET media_id = ? WHERE key = ?', [mediaId, key])
    },
    async remove(key) {
      await db.run('DELETE FROM direct_uploads WHERE key = ?', [key])
    },
    async stale(olderThanMs, limit) {
      const rows = await db.all(
        'SELECT * FROM direct_uploads WHERE media_id IS NULL AND created_at < ? ORDER BY created_at LIMIT ?',
        [Date.now() - olderThanMs, limit]
      )
      return rows.map(toUpload)
    },
  }
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

export interface IdempotencyRepo {
  /**
   * Claims a tenant's Idempotency-Key for a request. A key answered more than `keepMs` ago, or left pending more
   * than `staleMs` ago (its request died), counts as unused.
   */
  claim(tenant: string, key: string, options: { keepMs: number; staleMs: number }): Promise<IdempotencyClaim>
  /** Keeps the answer of the request that claimed the key. */
  answer(tenant: string, key: string, fingerprint: string, answer: IdempotentAnswer): Promise<void>
  /** Frees a claimed key whose request made nothing (it failed): a retry runs afresh. */
  release(tenant: string, key: string): Promise<void>
  /** Forgets keys claimed more than `olderThanMs` ago; returns how many. */
  sweep(olderThanMs: number): Promise<number>
}

export function createIdempotencyRepo(db: Db): IdempotencyRepo {
  return {
    async claim(tenant, key, { keepMs, staleMs }) {
      return db.transaction(async (tx) => {
        const at = Date.now()
        const row = await tx.get(
          `SELECT fingerprint, status, body, location, created_at FROM idempotency_keys WHERE tenant = ? AND key = ?${db.lockRows}`,
          [tenant, key]
        )
        const answered = row?.status !== null && row?.status !== undefined
        const age = row ? at - Number(row.created_at) : Infinity
        if (row && answered && age <= keepMs) {
          const answer = { status: Number(row.status), body: String(row.body), location: text(row.location) }
          return { state: 'answered' as const, fingerprint: String(row.fingerprint), answer }
        }
        if (row && !answered && age <= staleMs) return { state: 'pending' as const }
        // Unused, expired, or left by a request that died: this request's now. Two racing inserts: one wins (the
        // primary key), the other finds it pending. Only an expired or abandoned row is deleted: the row a racing
        // request inserted since this one read (committed after the read, so not locked by it) stays.
        await tx.run(
          'DELETE FROM idempotency_keys WHERE tenant = ? AND key = ? AND ((status IS NOT NULL AND created_at < ?) OR (status IS NULL AND created_at < ?))',
          [tenant, key, at - keepMs, at - staleMs]
        )
        const inserted = await tx.run(
          'INSERT INTO idempotency_keys (tenant, key, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
          [tenant, key, at]
        )
        return inserted > 0 ? { state: 'claimed' as const } : { state: 'pending' as const }
      })
    },
    async answer(tenant, key, fingerprint, answer) {
      await db.run(
        'UPDATE idempotency_keys SET fingerprint = ?, status = ?, body = ?, location = ? WHERE tenant = ? AND key = ?',
        [fingerprint, answer.status, answer.body, answer.location, tenant, key]
      )
    },
    async release(tenant, key) {
      await db.run('DELETE FROM idempotency_keys WHERE tenant = ? AND key = ? AND status IS NULL', [tenant, key])
    },
    sweep: (olderThanMs) => db.run('DELETE FROM idempotency_keys WHERE created_at < ?', [Date.now() - olderThanMs]),
  }
}
