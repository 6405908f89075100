/**
 * S3 for direct uploads: presigned URLs the client uploads with (a single PUT, or the parts of a multipart upload),
 * and the multipart calls the API makes for it; and the presigned GETs a player fetches segments with when the store
 * serves them (playback/addresses.ts). Presigning is local (no request); the multipart calls are requests.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'

/** How long a presigned URL works. */
export const PRESIGNED_SECONDS = 3600

export interface UploadedPart {
  PartNumber: number
  ETag: string
  Size?: number
}

export type S3Uploads = ReturnType<typeof createS3Uploads>

export function createS3Uploads(client: S3Client, bucket: string) {
  const Bucket = bucket
  const expiresIn = PRESIGNED_SECONDS
  return {
    /**
     * A URL to PUT the whole file to. `contentType` is not signed (the SDK signs only the host), so a client may send
     * another; nothing trusts it: the original is judged from its bytes when the upload is completed.
     */
    presignPut: (key: string, contentType?: string) =>
      getSignedUrl(client, new PutObjectCommand({ Bucket, Key: key, ContentType: contentType }), { expiresIn }),
    async createMultipart(key: string, contentType?: string): Promise<string> {
      const { UploadId } = await client.send(
        new CreateMultipartUploadCommand({ Bucket, Key: key, ContentType: contentType })
      )
      if (!UploadId) throw new Error('S3 returned no upload id')
      return UploadId
    },
    /** A URL to GET the object for `seconds` (a Range header still works: it is not signed). */
    presignGet: (key: string, seconds: number) =>
      getSignedUrl(client, new GetObjectCommand({ Bucket, Key: key }), { expiresIn: seconds }),
    presignPart: (key: string, uploadId: string, partNumber: number) =>
      getSignedUrl(client, new UploadPartCommand({ Bucket, Key: key, UploadId: uploadId, PartNumber: partNumber }), {
        expiresIn,
      }),
    async listParts(key: string, uploadId: string): Promise<UploadedPart[]> {
      const parts: UploadedPart[] = []
      let marker: string | undefined
      do {
        const page = await client.send(
          new ListPartsCommand({ Bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker })
        )
        for (const p of page.Parts ?? []) parts.push({ PartNumber: p.PartNumber!, ETag: p.ETag!, Size: p.Size })
        marker = page.IsTruncated ? page.NextPartNumberMarker : undefined
      } while (marker)
      return parts
    },
    async completeMultipart(key: string, uploadId: string, parts: UploadedPart[]): Promise<void> {
      const sorted = parts
        .map(({ PartNumber, ETag }) => ({ PartNumber, ETag }))
        .sort((a, b) => a.PartNumber - b.PartNumber)
      await client.send(
        new CompleteMultipartUploadCommand({ Bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: sorted } })
      )
    },
    async abortMultipart(key: string, uploadId: string): Promise<void> {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: key, UploadId: uploadId }))
    },
  }
}
