/**
 * The API's S3: one SDK client for objects and for direct uploads' presigning and multipart calls, and Bun's writer
 * for streaming uploads where there is Bun. (tus's S3 store keeps a client of its own: @tus/s3-store makes it.)
 */
import { S3Client } from '@aws-sdk/client-s3'
import { s3ClientOptions } from '@app/shared'
import { nativeS3Writer } from '../adapter/s3-writer.ts'
import type { Config } from '../config.ts'
import { createObjects } from './objects.ts'
import { createS3Uploads } from './uploads.ts'

export type S3 = ReturnType<typeof openS3>

/** `onFailure` hears of each failed request of `objects`, by operation: the error metrics. */
export function openS3(config: Config['s3'], onFailure: (operation: string) => void = () => {}) {
  const client = new S3Client(s3ClientOptions(config))
  return {
    objects: createObjects(client, config.bucket, { writer: nativeS3Writer(config), onFailure }),
    uploads: createS3Uploads(client, config.bucket),
    close: () => client.destroy(),
  }
}
