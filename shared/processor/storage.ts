/**
 * The one S3 helper of a job: download, upload, exists, remove, each stopped by the job's signal (a cancel, a
 * timeout or a shutdown aborts the request in flight). Failures are sorted once, here: a missing source is
 * `source_missing`; a download over its byte limit is `limit_exceeded`; what retrying cannot fix (no such bucket,
 * access denied, bad credentials) is `storage_refused` at once; anything else (timeouts, 5xx, throttling, a dropped
 * connection) is a fault, retried after a backoff.
 */
import { DeleteObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { createReadStream, statSync } from 'node:fs'
import { s3ClientOptions } from '../env.ts'
import { classifyS3Error } from '../s3-errors.ts'
import { JobError } from './errors.ts'
import { createFastS3 } from './fast-s3.ts'
import type { ByteLimit } from './limits.ts'

export interface S3Settings {
  endpoint?: string
  region: string
  accessKeyId: string
  secretAccessKey: string
  timeoutSeconds: number
}

/** What an upload sends: a local file (streamed, multipart when large) or bytes in memory. */
export type UploadBody = { file: string } | Uint8Array

export interface JobStorage {
  /**
   * Streams an object to a local file. With `limit`, an object over it is refused (`limit_exceeded`): at once when
   * S3 states a larger length, else as soon as one byte too many arrives (the transfer is aborted there).
   */
  download(bucket: string, key: string, file: string, limit?: ByteLimit): Promise<void>
  /** Stores `body` at `key`; resolves with its size in bytes. */
  upload(bucket: string, key: string, body: UploadBody, contentType: string): Promise<number>
  exists(bucket: string, key: string): Promise<boolean>
  remove(bucket: string, key: string): Promise<void>
}

/** A multipart upload's part; a body in memory up to this size goes in one PutObject. */
const PART_SIZE = 8 * 1024 * 1024

/**
 * Sorts an S3 failure (shared/s3-errors.ts): the signal's reason when it stopped the request, `storage_refused` for
 * what retrying cannot fix (a refusal, an operation the store lacks), or a fault, retried after a backoff.
 */
function failure(error: unknown, what: string, signal: AbortSignal | undefined): Error {
  if (signal?.aborted) return signal.reason
  const { kind, name, status } = classifyS3Error(error)
  if (kind === 'refused' || kind === 'unsupported') {
    const detail = [name, status, (error as Error).message].filter(Boolean).join(', ')
    return new JobError('storage_refused', `S3 refused ${what} (${detail}); retrying cannot fix this`, { cause: error })
  }
  return new Error(`${what} failed`, { cause: error })
}

/** The operations of a JobStorage, as the `operation` of a counted failure. */
export type StorageOperation = 'download' | 'upload' | 'exists' | 'remove'

/** `onFailure` hears of each request S3 failed (not those a job's signal stopped): for the error metrics. */
export function createStorage(settings: S3Settings, onFailure: (operation: StorageOperation) => void = () => {}) {
  const client = new S3Client(s3ClientOptions(settings))
  const fast = createFastS3(settings, settings.timeoutSeconds * 1000)
  /** The helper for one job; every request it makes is aborted when `signal` aborts. */
  const bind = (signal?: AbortSignal): JobStorage => {
    const failed = (operation: StorageOperation, error: unknown, what: string) => {
      if (!signal?.aborted) onFailure(operation)
      return failure(error, what, signal)
    }
    return {
      async download(bucket, key, file, limit) {
        try {
          await fast.download(bucket, key, file, { limit, signal })
        } catch (error) {
          if (!signal?.aborted && error instanceof JobError) throw error
          if (!signal?.aborted && classifyS3Error(error).name === 'NoSuchKey') {
            throw new JobError('source_missing', `the original ${bucket}/${key} does not exist`)
          }
          throw failed('download', error, `downloading ${bucket}/${key}`)
        }
      },
      async upload(bucket, key, body, contentType) {
        const file = 'file' in body ? body.file : undefined
        const size = file ? statSync(file).size : (body as Uint8Array).byteLength
        if (size <= PART_SIZE) {
          // One PUT through Bun's client (fast-s3.ts): the SDK's PutObject, or lib-storage's Upload that would end in
          // it, cost several times the CPU on this side and as much again in the store.
          try {
            await fast.put(bucket, key, file ? Bun.file(file) : (body as Uint8Array), contentType, signal)
          } catch (error) {
            throw failed('upload', error, `uploading ${bucket}/${key}`)
          }
          return size
        }
        const upload = new Upload({
          client,
          params: {
            Bucket: bucket,
            Key: key,
            Body: file ? createReadStream(file) : (body as Uint8Array),
            ContentType: contentType,
          },
          // At most queueSize × partSize (16 MiB) in memory per upload, whatever the file's size.
          queueSize: 2,
          partSize: PART_SIZE,
          leavePartsOnError: false,
        })
        const abort = () => void upload.abort().catch(() => {})
        signal?.addEventListener('abort', abort, { once: true })
        try {
          await upload.done()
        } catch (error) {
          throw failed('upload', error, `uploading ${bucket}/${key}`)
        } finally {
          signal?.removeEventListener('abort', abort)
        }
        return size
      },
      async exists(bucket, key) {
        const answer = await fast.exists(bucket, key, signal).catch(() => null)
        if (answer !== null) return answer
        if (signal?.aborted) throw signal.reason
        // The fast HEAD failed without saying why (no status): the SDK's HEAD answers, or names the refusal.
        try {
          await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal })
          return true
        } catch (error) {
          if (!signal?.aborted && classifyS3Error(error).kind === 'missing') return false
          throw failed('exists', error, `checking ${bucket}/${key}`)
        }
      },
      async remove(bucket, key) {
        try {
          await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal })
        } catch (error) {
          throw failed('remove', error, `removing ${bucket}/${key}`)
        }
      },
    }
  }
  return { bind, destroy: () => client.destroy() }
}
export type Storage = ReturnType<typeof createStorage>
