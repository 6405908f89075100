/** The embedded store's own answers, before s3rver's: HeadBucket, which s3rver answers with a full listing. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { HeadBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LOCAL_S3_CREDENTIALS, startS3Server, type LocalS3 } from '../infra/s3-server.ts'

let s3: LocalS3
let directory: string
const client = (credentials: { accessKeyId: string; secretAccessKey: string }) =>
  new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials, maxAttempts: 1 })

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 's3-server-test-'))
  s3 = await startS3Server({ port: 0, directory, bucket: 'media' })
})
afterAll(async () => {
  await s3.close()
  rmSync(directory, { recursive: true, force: true })
})

describe('HeadBucket', () => {
  test('answers 200 for the bucket, 404 for another, without listing the objects', async () => {
    const ours = client(LOCAL_S3_CREDENTIALS)
    for (let i = 0; i < 20; i++) await ours.send(new PutObjectCommand({ Bucket: 'media', Key: `a/${i}`, Body: 'x' }))
    // s3rver's own answer stats every file in the bucket and fails on this one: only an answer that lists nothing passes.
    symlinkSync(join(directory, 'nowhere'), join(directory, 'media', 'dangling'))
    const head = await ours.send(new HeadBucketCommand({ Bucket: 'media' }))
    expect(head.$metadata.httpStatusCode).toBe(200)
    const missing = await ours.send(new HeadBucketCommand({ Bucket: 'nope' })).catch((error) => error)
    expect(missing.$metadata?.httpStatusCode).toBe(404)
  })

  test('another access key is refused, as s3rver refuses it', async () => {
    const stranger = client({ accessKeyId: 'SOMEONE', secretAccessKey: 'ELSE' })
    const refused = await stranger.send(new HeadBucketCommand({ Bucket: 'media' })).catch((error) => error)
    expect(refused.$metadata?.httpStatusCode).toBe(403)
  })
})
