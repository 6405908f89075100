/**
 * S3 for direct uploads: presigned URLs the client uploads with (a single PUT, or the parts of a multipart
 * upload), the multipart calls the API makes for it, and what the API reads back once the client says it is done
 * (the object's size, and its first bytes to judge its kind).
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import { s3ClientOptions } from '@app/shared'
import type { Config } from './config.ts'

/** How long a presigned URL works. */
export const PRESIGNED_SECONDS = 3600

export interface UploadedPart {
  PartNumber: number
  ETag: string
  Size?: number
}

export function createPresigner(config: Config['s3']) {
  const client = new S3Client(s3ClientOptions(config))
  const Bucket = config.bucket
  const expiresIn = PRESIGNED_SECONDS
  return {
    /** A URL to PUT the whole file to; `contentType` becomes a signed header the client must send. */
    putUrl: (key: string, contentType?: string) => getSignedUrl(client, new PutObjectCommand({ Bucket, Key: key, ContentType: contentType }), { expiresIn }),
    async createMultipart(key: string, contentType?: string): Promise<string> {
      const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket, Key: key, ContentType: contentType }))
      if (!UploadId) throw new Error('S3 returned no upload id')
      return UploadId
    },
    partUrl: (key: string, uploadId: string, partNumber: number) =>
      getSignedUrl(client, new UploadPartCommand({ Bucket, Key: key, UploadId: uploadId, PartNumber: partNumber }), { expiresIn }),
    async listParts(key: string, uploadId: string): Promise<UploadedPart[]> {
      const parts: UploadedPart[] = []
      let marker: string | undefined
      do {
        const page = await client.send(new ListPartsCommand({ Bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }))
        for (const p of page.Parts ?? []) parts.push({ PartNumber: p.PartNumber!, ETag: p.ETag!, Size: p.Size })
        marker = page.IsTruncated ? page.NextPartNumberMarker : undefined
      } while (marker)
      return parts
    },
    async completeMultipart(key: string, uploadId: string, parts: UploadedPart[]): Promise<void> {
      const sorted = parts.map(({ PartNumber, ETag }) => ({ PartNumber, ETag })).sort((a, b) => a.PartNumber - b.PartNumber)
      await client.send(new CompleteMultipartUploadCommand({ Bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: sorted } }))
    },
    async abortMultipart(key: string, uploadId: string): Promise<void> {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: key, UploadId: uploadId }))
    },
    /** The stored object's size, or null when there is none. */
    async size(key: string): Promise<number | null> {
      try {
        return (await client.send(new HeadObjectCommand({ Bucket, Key: key }))).ContentLength ?? 0
      } catch (error) {
        if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return null
        throw error
      }
    },
    /** The first `bytes` of the object (all of a shorter one). */
    async head(key: string, bytes: number): Promise<Uint8Array> {
      const object = await client.send(new GetObjectCommand({ Bucket, Key: key, Range: `bytes=0-${bytes - 1}` }))
      return object.Body!.transformToByteArray()
    },
    /** Copies `from` to `to` inside the bucket (S3 copies up to 5 GB, the most a single PUT can store). */
    async copy(from: string, to: string): Promise<void> {
      await client.send(new CopyObjectCommand({ Bucket, Key: to, CopySource: `${Bucket}/${from.split('/').map(encodeURIComponent).join('/')}` }))
    },
    /** The keys under `prefix`. */
    async list(prefix: string): Promise<string[]> {
      const keys: string[] = []
      let token: string | undefined
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken: token }))
        for (const object of page.Contents ?? []) if (object.Key) keys.push(object.Key)
        token = page.IsTruncated ? page.NextContinuationToken : undefined
      } while (token)
      return keys
    },
    async remove(key: string): Promise<void> {
      await client.send(new DeleteObjectCommand({ Bucket, Key: key }))
    },
    close: () => client.destroy(),
  }
}
export type Presigner = ReturnType<typeof createPresigner>
