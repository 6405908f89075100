/** Direct S3 access for tests: what objects and unfinished multipart uploads exist under a prefix. */
import { ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'

export function testS3(env: Record<string, string>) {
  const client = new S3Client({
    endpoint: env.S3_ENDPOINT,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: env.S3_ACCESS_KEY_ID!, secretAccessKey: env.S3_SECRET_ACCESS_KEY! },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
  return {
    client,
    /** The keys under `prefix`. */
    async keys(prefix: string): Promise<string[]> {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: env.S3_BUCKET, Prefix: prefix }))
      return (listed.Contents ?? []).map((o) => o.Key!).sort()
    },
    /** The keys of multipart uploads under `prefix` that were neither completed nor aborted. */
    async openUploads(prefix: string): Promise<string[]> {
      const listed = await client.send(new ListMultipartUploadsCommand({ Bucket: env.S3_BUCKET, Prefix: prefix }))
      return (listed.Uploads ?? []).map((u) => u.Key!).sort()
    },
    close: () => client.destroy(),
  }
}
