/** A media as the store reads it: its row joined with its latest job's. */
import type { ImageMetadata, MediaType, VideoMetadata } from '@app/shared'
import { num, text, type Queryable, type Row } from './db.ts'
import type { JobState } from './rules.ts'

export type MediaKind = 'image' | 'video'

export interface MediaRecord extends JobState {
  id: string
  /** The tenant whose key created it; no other tenant ever sees it. */
  tenant: string
  /** The file name the client gave, sanitised (see uploads/filename.ts); metadata only, never part of a key or path. */
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

export const toJobState = (row: Row): JobState => ({
  status: row.status as JobState['status'],
  stage: row.stage as JobState['stage'],
  progress: Number(row.progress),
  etaSeconds: num(row.eta_seconds),
  error: row.error ? JSON.parse(String(row.error)) : null,
  outputs: JSON.parse(String(row.outputs)),
})

/** A media with its latest job: the columns `toMedia` reads. */
export const MEDIA_SELECT = `SELECT m.*, j.id AS job_id, j.type, j.status, j.stage, j.progress, j.eta_seconds, j.error, j.outputs, j.updated_at AS job_updated_at, j.traceparent
       FROM media m JOIN jobs j ON j.id = (SELECT id FROM jobs WHERE media_id = m.id ORDER BY created_at DESC LIMIT 1)`

export const toMedia = (row: Row): MediaRecord => ({
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
export async function readMedia(q: Queryable, id: string): Promise<MediaRecord | undefined> {
  const row = await q.get(`${MEDIA_SELECT} WHERE m.id = ?`, [id])
  return row && toMedia(row)
}
