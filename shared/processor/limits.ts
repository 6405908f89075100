/**
 * How a processor's limits refuse a file (`limit_exceeded`, naming the variable and what the file holds), and the
 * byte limit on an original, which both processors apply the same way: refused before the download when the
 * request declares more, and stopped during it when more arrives (a request's `size` is the backend's word and S3's
 * length the store's: neither is trusted to bound the disk a job fills).
 */
import { JobError } from './errors.ts'
import type { JobStorage } from './storage.ts'

/** A byte limit and the variable that sets it: a refusal names both, so an operator knows what to raise. */
export interface ByteLimit {
  maxBytes: number
  variable: string
}

/** A refusal over a limit, worded the same by every check: `<what the file holds>, over <VARIABLE> (<limit>)`. */
export function overLimit(found: string, variable: string, limit: string | number): JobError {
  return new JobError('limit_exceeded', `${found}, over ${variable} (${limit})`)
}

/** `1.5 GiB`, `200 MiB`, `12 KiB`, `900 bytes`: the units `bytesVar` reads (powers of 1024). */
export function formatBytes(bytes: number): string {
  for (const [unit, size] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= size) return `${Math.round((bytes / size) * 10) / 10} ${unit}`
  }
  return `${bytes} bytes`
}

/** The refusal of an original of `bytes`; `stopped` when its download was cut off there, its real size unknown. */
export function byteLimitFailure(bytes: number, limit: ByteLimit, stopped = false): JobError {
  const found = stopped ? `the original's download was stopped after ${bytes} bytes` : `the original is ${formatBytes(bytes)} (${bytes} bytes)`
  return overLimit(found, limit.variable, formatBytes(limit.maxBytes))
}

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
