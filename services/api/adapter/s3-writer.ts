/**
 * Streaming an upload to S3 with Bun's own S3 writer, where the API runs on Bun (Deno keeps lib-storage). Issue 13
 * measured a 1 GiB upload at +60 MB of RSS this way, at +220 MB through lib-storage (whose part buffers Bun's
 * allocator keeps), and faster. `flush` after each chunk is the writer's backpressure (without it the whole body was
 * buffered). The writer cannot abort: `end(error)` still completes the object, so a failed body never reaches `end`
 * (the caller aborts the multipart upload it may have begun). Nor does it time out: a store that stops answering
 * fails the upload after S3_TIMEOUT_SECONDS without progress, as the SDK's requests do.
 */
import { bunS3Options } from '@app/shared'
import type { Config } from '../config.ts'
import type { StreamWriter } from '../s3/objects.ts'

/** The writer, or null where there is no Bun. */
export function nativeS3Writer(config: Config['s3']): StreamWriter | null {
  if (typeof Bun === 'undefined') return null
  const client = new Bun.S3Client(bunS3Options(config))
  const timeoutMs = config.timeoutSeconds * 1000
  const bounded = async <T>(step: T | Promise<T>): Promise<T> => {
    let timer: ReturnType<typeof setTimeout> | undefined
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`S3 made no progress for ${config.timeoutSeconds} s`)), timeoutMs)
    })
    try {
      return await Promise.race([step, stalled])
    } finally {
      clearTimeout(timer)
    }
  }
  return async (key, body, contentType) => {
    const writer = client
      .file(key, { bucket: config.bucket })
      .writer({ type: contentType, partSize: 5 * 1024 * 1024, queueSize: 2 })
    const reader = body.getReader()
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      writer.write(chunk.value)
      await bounded(writer.flush())
    }
    await bounded(writer.end())
  }
}
