/**
 * The byte limit on an original, which both processors apply the same way: refused before the download when the
 * request declares more, and stopped during it when more arrives (a request's `size` is the backend's word and S3's
 * length the store's: neither is trusted to bound the disk a job fills).
 */
import { join } from 'node:path'
import type { JobContext } from './job.ts'
import { byteLimitFailure, type ByteLimit } from './limits.ts'
import type { JobStorage } from './storage.ts'

/** Downloads a request's original to `file`, held to `limit` by its declared size first, then by what arrives. */
export async function downloadOriginal(
  storage: Pick<JobStorage, 'download'>,
  source: { bucket: string; key: string; size: number },
  file: string,
  limit: ByteLimit
): Promise<void> {
  if (source.size > limit.maxBytes) throw byteLimitFailure(source.size, limit)
  await storage.download(source.bucket, source.key, file, limit)
}

/** A job's first step: reports `downloading`, then downloads its original to `<workDir>/original`; returns that path. */
export async function fetchOriginal(
  job: Pick<JobContext, 'workDir' | 'storage' | 'report'>,
  source: { bucket: string; key: string; size: number },
  limit: ByteLimit
): Promise<string> {
  job.report('downloading', 0)
  const file = join(job.workDir, 'original')
  await downloadOriginal(job.storage, source, file, limit)
  return file
}
