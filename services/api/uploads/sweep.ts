/**
 * What uploads leave behind, removed: multipart uploads a killed process left open under this system's keys;
 * direct and tus uploads handed out and never completed (what was stored of them, then their records); and what a
 * direct upload's presigned URL wrote after its upload was completed or forgotten (the URL works until it expires,
 * and what it writes then is read by nobody). Run hourly by one instance (jobs/timers.ts), and on demand by
 * operators (`POST /v1/admin/sweep`). Stores without ListMultipartUploads (some S3 clones) need a lifecycle rule
 * (AbortIncompleteMultipartUpload) instead.
 */
import type { Logger } from '@app/shared/ops'
import type { Objects } from '../s3/objects.ts'
import type { UploadRepo } from '../store/uploads.ts'
import { originalKey, stagingKey } from './object-keys.ts'

export interface SweepDeps {
  system: string
  objects: Pick<Objects, 'abortStaleUploads' | 'remove' | 'list'>
  uploads: Pick<UploadRepo, 'stale' | 'get' | 'remove'>
  log: Logger
}

/** Sweeps uploads older than `olderThanMs`; returns the keys of what it removed. */
export async function sweepUploads(deps: SweepDeps, olderThanMs: number): Promise<string[]> {
  const { system, objects, uploads, log } = deps
  const aborted = await objects.abortStaleUploads(`${system}/`, olderThanMs)
  if (aborted.length) log.warn({ keys: aborted }, `aborted ${aborted.length} abandoned multipart upload(s)`)
  // Their multipart uploads were aborted just above: what else was stored of them (a staged PUT, tus's .info) goes.
  const forgotten: string[] = []
  for (let batch = await uploads.stale(olderThanMs, 100); batch.length; batch = await uploads.stale(olderThanMs, 100)) {
    for (const upload of batch) {
      await objects.remove(upload.key)
      if (upload.uploadId === 'tus') await objects.remove(`${upload.key}.info`)
      if (upload.uploadId === null) await objects.remove(stagingKey(system, upload.id))
      await uploads.remove(upload.key)
      forgotten.push(upload.key)
    }
  }
  if (forgotten.length) log.warn({ keys: forgotten }, `forgot ${forgotten.length} direct upload(s) never completed`)
  const late: string[] = []
  for (const key of await objects.list(`${system}/uploads/`)) {
    const upload = await uploads.get(originalKey(system, key.slice(key.lastIndexOf('/') + 1)))
    if (upload && !upload.mediaId) continue
    await objects.remove(key)
    late.push(key)
  }
  if (late.length)
    log.warn(
      { keys: late },
      `removed ${late.length} object(s) written through a direct upload's URL after it was completed`
    )
  return [...new Set([...aborted, ...forgotten, ...late])]
}
