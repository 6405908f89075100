/** A media as the store reads it: its row joined with its latest job's. */
import type { ImageMetadata, JobClass, MediaType, VideoMetadata } from '@app/shared'
import { num, text, type Queryable, type Row } from './db.ts'
import type { JobState } from './rules.ts'

import type { MediaKind } from '@app/shared'
export type { MediaKind }

/** A newer job of a media than the one it serves (a reprocess), as far as it got. */
export interface PendingJob {
  jobId: string
  status: JobState['status']
  stage: JobState['stage']
  progress: number
  etaSeconds: number | null
  error: JobState['error']
  presets: string[] | null
  cls: JobClass
}

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
  /** The class of its current job: which request queue it went to. */
  cls: JobClass
  metadata: ImageMetadata | VideoMetadata | null
  /** The W3C traceparent of the upload that made it (null for media made before traces were kept). */
  traceparent: string | null
  /** The presets its current job was made with (null for media made before presets). */
  presets: string[] | null
  /** A newer job than the one whose outputs it serves (a reprocess), or null. */
  reprocess: PendingJob | null
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

/**
 * A media with its current job (whose outputs it serves) and, when a newer job of it exists (a reprocess), that one:
 * the columns `toMedia` reads.
 */
export const MEDIA_SELECT = `SELECT m.*, j.id AS job_id, j.type, j.status, j.stage, j.progress, j.eta_seconds, j.error, j.outputs,
         j.updated_at AS job_updated_at, j.traceparent, j.presets, j.class,
         r.id AS r_id, r.status AS r_status, r.stage AS r_stage, r.progress AS r_progress, r.eta_seconds AS r_eta_seconds,
         r.error AS r_error, r.presets AS r_presets, r.class AS r_class, r.updated_at AS r_updated_at
       FROM media m JOIN jobs j ON j.id = m.current_job_id
       LEFT JOIN jobs r ON r.id = (SELECT id FROM jobs WHERE media_id = m.id ORDER BY created_at DESC LIMIT 1) AND r.id <> m.current_job_id`

const names = (value: unknown): string[] | null => (value ? (JSON.parse(String(value)) as string[]) : null)

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
  cls: row.class as JobClass,
  metadata: row.metadata ? JSON.parse(String(row.metadata)) : null,
  traceparent: text(row.traceparent),
  presets: names(row.presets),
  reprocess: row.r_id
    ? {
        jobId: String(row.r_id),
        status: row.r_status as PendingJob['status'],
        stage: row.r_stage as PendingJob['stage'],
        progress: Number(row.r_progress),
        etaSeconds: num(row.r_eta_seconds),
        error: row.r_error ? JSON.parse(String(row.r_error)) : null,
        presets: names(row.r_presets),
        cls: row.r_class as JobClass,
      }
    : null,
  createdAt: String(row.created_at),
  updatedAt: [String(row.updated_at), String(row.job_updated_at), text(row.r_updated_at) ?? ''].sort().at(-1)!,
})

/** A media with its latest job, read on `q` (the store's connection, or a transaction's). */
export async function readMedia(q: Queryable, id: string): Promise<MediaRecord | undefined> {
  const row = await q.get(`${MEDIA_SELECT} WHERE m.id = ?`, [id])
  return row && toMedia(row)
}
