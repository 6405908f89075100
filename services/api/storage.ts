/** The API's S3 access: streaming uploads of originals, streaming reads of outputs, and a health check. */
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { bunS3Options, s3ClientOptions } from '@app/shared'
import type { Config } from './config.ts'
import type { ByteRange } from './ranges.ts'

export interface StoredObject {
  body: ReadableStream<Uint8Array>
  contentType: string | undefined
  size: number | undefined
}

export interface Storage {
  bucket: string
  /** Streams `body` to `key` in parts; never holds more than a few parts in memory. */
  put(key: string, body: ReadableStream<Uint8Array>, contentType: string): Promise<void>
  /** The object, or the bytes `range` of it; undefined when there is no such object. */
  get(key: string, range?: ByteRange): Promise<StoredObject | undefined>
  /** Writes an empty object (a marker). */
  mark(key: string): Promise<void>
  delete(key: string): Promise<void>
  /**
   * Aborts multipart uploads under `prefix` started more than `olderThanMs` ago: what a process killed mid-upload
   * leaves behind (S3 bills the parts until then). Returns the keys of those aborted.
   */
  abortStaleUploads(prefix: string, olderThanMs: number): Promise<string[]>
  ping(): Promise<void>
  close(): void
}

/**
 * `onFailure` hears of each S3 request that failed, by operation (the error metrics). Not of `put`: an upload also
 * fails when its client's stream breaks, which only the caller can tell apart, so the caller counts those.
 */
export function createStorage(config: Config['s3'], onFailure: (operation: string) => void = () => {}): Storage {
  const client = new S3Client(s3ClientOptions(config))
  // Uploads go through Bun's own client where there is one (see putNative); on Deno, through lib-storage.
  const native = typeof Bun === 'undefined' ? null : new Bun.S3Client(bunS3Options(config))
  const counted = async <T>(operation: string, request: () => Promise<T>): Promise<T> => {
    try {
      return await request()
    } catch (error) {
      onFailure(operation)
      throw error
    }
  }
  return {
    bucket: config.bucket,
    async put(key, body, contentType) {
      if (native) return putNative(native, key, body, contentType)
      // 5 MiB parts (the S3 minimum), two in flight.
      const upload = new Upload({
        client,
        params: { Bucket: config.bucket, Key: key, Body: body, ContentType: contentType },
        partSize: 5 * 1024 * 1024,
        queueSize: 2,
        leavePartsOnError: false,
      })
      await upload.done()
    },
    async get(key, range) {
      try {
        const object = await client.send(
          new GetObjectCommand({ Bucket: config.bucket, Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) })
        )
        // A missing key is an answer, not a failure: counted only past here.
        return {
          body: object.Body!.transformToWebStream() as ReadableStream<Uint8Array>,
          contentType: object.ContentType,
          size: object.ContentLength,
        }
      } catch (error) {
        if ((error as { name?: string }).name === 'NoSuchKey') return undefined
        onFailure('get')
        throw error
      }
    },
    async mark(key) {
      await counted('mark', () => client.send(new PutObjectCommand({ Bucket: config.bucket, Key: key, Body: new Uint8Array(0) })))
    },
    async delete(key) {
      await counted('delete', () => client.send(new DeleteObjectCommand({ Bucket: config.bucket, Key: key })))
    },
    abortStaleUploads: (prefix, olderThanMs) => counted('sweep', () => abortStale(prefix, olderThanMs)),
    async ping() {
      await counted('ping', () => client.send(new HeadBucketCommand({ Bucket: config.bucket }), { abortSignal: AbortSignal.timeout(3_000) }))
    },
    close: () => client.destroy(),
  }

  /**
   * Streams `body` to `key` with Bun's own S3 writer: issue 13 measured a 1 GiB upload at +60 MB of RSS this way, at
   * +220 MB through lib-storage (whose part buffers Bun's allocator keeps), and faster. `flush` after each chunk is
   * the writer's backpressure (without it the whole body was buffered). The writer cannot abort: `end(error)` still
   * completes the object. So a failed body never reaches `end`, and the multipart upload it may have begun is
   * aborted here (the hourly sweep aborts it if this fails too). Nor does it time out: a store that stops answering
   * fails the upload after S3_TIMEOUT_SECONDS without progress, as the SDK's requests do.
   */
  async function putNative(client: Bun.S3Client, key: string, body: ReadableStream<Uint8Array>, contentType: string): Promise<void> {
    const writer = client.file(key, { bucket: config.bucket }).writer({ type: contentType, partSize: 5 * 1024 * 1024, queueSize: 2 })
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
    try {
      const reader = body.getReader()
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        writer.write(chunk.value)
        await bounded(writer.flush())
      }
      await bounded(writer.end())
    } catch (error) {
      await abortStale(key, 0).catch(() => {})
      throw error
    }
  }

  async function abortStale(prefix: string, olderThanMs: number): Promise<string[]> {
    const aborted: string[] = []
    const cutoff = Date.now() - olderThanMs
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    do {
      const page = await client.send(
        new ListMultipartUploadsCommand({ Bucket: config.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker })
      )
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || !upload.Initiated || upload.Initiated.getTime() > cutoff) continue
        await client.send(new AbortMultipartUploadCommand({ Bucket: config.bucket, Key: upload.Key, UploadId: upload.UploadId }))
        aborted.push(upload.Key)
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined
    } while (keyMarker)
    return aborted
  }
}
