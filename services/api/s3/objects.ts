/**
 * The API's objects in S3: originals streamed in, outputs streamed out (whole or a byte range), the checks an
 * upload's completion makes (its size, its first bytes, a copy out of its staging key), markers, listing, removal,
 * and the sweep of multipart uploads a killed process left behind. One SDK client for all of it (s3/open.ts).
 */
import {
  AbortMultipartUploadCommand,
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { classifyS3Error } from '@app/shared'
import type { ByteRange } from '../http/ranges.ts'

export interface StoredObject {
  body: ReadableStream<Uint8Array>
  contentType: string | undefined
  size: number | undefined
}

/** Streams a body to a key: Bun's own writer where the API runs on Bun (adapter/s3-writer.ts), else lib-storage. */
export type StreamWriter = (key: string, body: ReadableStream<Uint8Array>, contentType: string) => Promise<void>

export interface Objects {
  bucket: string
  /** Streams `body` to `key` in parts; never holds more than a few parts in memory. */
  put(key: string, body: ReadableStream<Uint8Array>, contentType: string): Promise<void>
  /** The object, or the bytes `range` of it; undefined when there is no such object. */
  get(key: string, range?: ByteRange): Promise<StoredObject | undefined>
  /** The object's size, or null when there is none. */
  size(key: string): Promise<number | null>
  /** The first `bytes` of the object (all of a shorter one). */
  readHead(key: string, bytes: number): Promise<Uint8Array>
  /** Copies `from` to `to` inside the bucket (up to 5 GB, the most a single PUT can store). */
  copy(from: string, to: string): Promise<void>
  /** The keys under `prefix`. */
  list(prefix: string): Promise<string[]>
  /** Writes an empty object (a marker). */
  mark(key: string): Promise<void>
  remove(key: string): Promise<void>
  /**
   * Aborts multipart uploads under `prefix` started more than `olderThanMs` ago: what a process killed mid-upload
   * leaves behind (S3 bills the parts until then). Returns the keys of those aborted.
   */
  abortStaleUploads(prefix: string, olderThanMs: number): Promise<string[]>
  ping(): Promise<void>
}

/**
 * `onFailure` hears of each S3 request that failed, by operation (the error metrics). Not of `put`: an upload also
 * fails when its client's stream breaks, which only the caller can tell apart, so the caller counts those.
 */
export function createObjects(
  client: S3Client,
  bucket: string,
  options: { writer: StreamWriter | null; onFailure: (operation: string) => void }
): Objects {
  const Bucket = bucket
  const counted = async <T>(operation: string, request: () => Promise<T>): Promise<T> => {
    try {
      return await request()
    } catch (error) {
      // A missing object is an answer, not a failure of the store.
      if (classifyS3Error(error).kind !== 'missing') options.onFailure(operation)
      throw error
    }
  }
  const missing = (error: unknown) => classifyS3Error(error).kind === 'missing'

  async function abortStale(prefix: string, olderThanMs: number): Promise<string[]> {
    const aborted: string[] = []
    const cutoff = Date.now() - olderThanMs
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    do {
      const page = await client.send(
        new ListMultipartUploadsCommand({
          Bucket,
          Prefix: prefix,
          KeyMarker: keyMarker,
          UploadIdMarker: uploadIdMarker,
        })
      )
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || !upload.Initiated || upload.Initiated.getTime() > cutoff) continue
        await client.send(new AbortMultipartUploadCommand({ Bucket, Key: upload.Key, UploadId: upload.UploadId }))
        aborted.push(upload.Key)
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined
    } while (keyMarker)
    return aborted
  }

  return {
    bucket,
    async put(key, body, contentType) {
      if (options.writer) {
        try {
          return await options.writer(key, body, contentType)
        } catch (error) {
          // The native writer cannot abort: the multipart upload it may have begun is aborted here (the hourly sweep
          // aborts it if this fails too).
          await abortStale(key, 0).catch(() => {})
          throw error
        }
      }
      // 5 MiB parts (the S3 minimum), two in flight.
      const upload = new Upload({
        client,
        params: { Bucket, Key: key, Body: body, ContentType: contentType },
        partSize: 5 * 1024 * 1024,
        queueSize: 2,
        leavePartsOnError: false,
      })
      await upload.done()
    },
    async get(key, range) {
      try {
        const object = await counted('get', () =>
          client.send(
            new GetObjectCommand({ Bucket, Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) })
          )
        )
        return {
          body: object.Body!.transformToWebStream() as ReadableStream<Uint8Array>,
          contentType: object.ContentType,
          size: object.ContentLength,
        }
      } catch (error) {
        if (missing(error)) return undefined
        throw error
      }
    },
    async size(key) {
      try {
        return (
          (await counted('head', () => client.send(new HeadObjectCommand({ Bucket, Key: key })))).ContentLength ?? 0
        )
      } catch (error) {
        if (missing(error)) return null
        throw error
      }
    },
    async readHead(key, bytes) {
      const object = await counted('get', () =>
        client.send(new GetObjectCommand({ Bucket, Key: key, Range: `bytes=0-${bytes - 1}` }))
      )
      return object.Body!.transformToByteArray()
    },
    async copy(from, to) {
      const source = `${Bucket}/${from.split('/').map(encodeURIComponent).join('/')}`
      await counted('copy', () => client.send(new CopyObjectCommand({ Bucket, Key: to, CopySource: source })))
    },
    async list(prefix) {
      const keys: string[] = []
      let token: string | undefined
      do {
        const page = await counted('list', () =>
          client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken: token }))
        )
        for (const object of page.Contents ?? []) if (object.Key) keys.push(object.Key)
        token = page.IsTruncated ? page.NextContinuationToken : undefined
      } while (token)
      return keys
    },
    async mark(key) {
      await counted('mark', () => client.send(new PutObjectCommand({ Bucket, Key: key, Body: new Uint8Array(0) })))
    },
    async remove(key) {
      await counted('remove', () => client.send(new DeleteObjectCommand({ Bucket, Key: key })))
    },
    abortStaleUploads: (prefix, olderThanMs) => counted('sweep', () => abortStale(prefix, olderThanMs)),
    async ping() {
      await counted('ping', () =>
        client.send(new HeadBucketCommand({ Bucket }), { abortSignal: AbortSignal.timeout(3_000) })
      )
    },
  }
}
