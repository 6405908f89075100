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
import { s3ClientOptions } from '@app/shared'
import type { Config } from './config.ts'

export interface StoredObject {
  body: ReadableStream<Uint8Array>
  contentType: string | undefined
  size: number | undefined
}

export interface Storage {
  bucket: string
  /** Streams `body` to `key` in parts; never holds more than a few parts in memory. */
  put(key: string, body: ReadableStream<Uint8Array>, contentType: string): Promise<void>
  get(key: string): Promise<StoredObject | undefined>
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
      // 5 MiB parts (the S3 minimum), two in flight: memory stays near 10-20 MiB whatever the file's size.
      const upload = new Upload({
        client,
        params: { Bucket: config.bucket, Key: key, Body: body, ContentType: contentType },
        partSize: 5 * 1024 * 1024,
        queueSize: 2,
        leavePartsOnError: false,
      })
      await upload.done()
    },
    async get(key) {
      try {
        const object = await client.send(new GetObjectCommand({ Bucket: config.bucket, Key: key }))
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
