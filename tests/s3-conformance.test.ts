/**
 * The embedded S3 store (infra/s3-server.ts) against S3's behaviour: one list of cases run on our store and on moto's
 * S3 server, through the clients the system uses (@aws-sdk/client-s3 configured as `s3ClientOptions`, Bun.S3Client,
 * presigned URLs fetched with `fetch`). moto checks no signature (it can, with INITIAL_NO_AUTH_ACTION_COUNT and
 * access keys made through its IAM API, which the moto helper's fixed key pair is not), so signature cases run on
 * our store only. Then, on our store only: hostile input, durability across a restart, CORS and HeadBucket.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  PutObjectTaggingCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { bunS3Options, s3ClientOptions } from '../shared/env.ts'
import { createS3Uploads } from '../services/api/s3/uploads.ts'
// The presigner itself (a dependency of the API), for a URL signed in the past.
import { getSignedUrl } from '../services/api/node_modules/@aws-sdk/s3-request-presigner'
import { LOCAL_S3_CREDENTIALS, startS3Server, type LocalS3 } from '../infra/s3-server.ts'
import { startMoto } from './helpers/moto.ts'

const MiB = 1024 * 1024
const directory = mkdtempSync(join(tmpdir(), 's3-conformance-'))
afterAll(() => rmSync(directory, { recursive: true, force: true }))

interface Server {
  endpoint: string
  bucket: string
  credentials: { accessKeyId: string; secretAccessKey: string }
  stop(): Promise<void>
}

interface Target {
  name: string
  ours: boolean
  start(): Promise<Server>
}

/** Our store on its own directory inside this file's (`<dir>/<name>/root`: anything escaping it shows beside it). */
async function startOurs(name: string): Promise<Server & { root: string; s3: LocalS3 }> {
  const root = join(directory, name, 'root')
  mkdirSync(root, { recursive: true })
  const s3 = await startS3Server({ port: 0, directory: root, bucket: 'media-test' })
  return {
    endpoint: s3.endpoint,
    bucket: s3.bucket,
    credentials: LOCAL_S3_CREDENTIALS,
    root,
    s3,
    stop: () => s3.close(),
  }
}

const TARGETS: Target[] = [
  { name: 'the embedded store', ours: true, start: () => startOurs('conformance') },
  {
    name: "moto's S3 server",
    ours: false,
    async start() {
      const moto = await startMoto('media-test')
      return {
        endpoint: moto.endpoint,
        bucket: 'media-test',
        credentials: { accessKeyId: moto.env.S3_ACCESS_KEY_ID!, secretAccessKey: moto.env.S3_SECRET_ACCESS_KEY! },
        stop: () => moto.stop(),
      }
    },
  },
]

/** The system's clients for a server. */
function clientsFor(server: Server, overrides: Partial<{ secretAccessKey: string; accessKeyId: string }> = {}) {
  const settings = {
    endpoint: server.endpoint,
    region: 'us-east-1',
    ...server.credentials,
    ...overrides,
    timeoutSeconds: 30,
  }
  const sdk = new S3Client(s3ClientOptions(settings))
  const bun = new Bun.S3Client({ ...bunS3Options(settings), bucket: server.bucket })
  return { sdk, bun, uploads: createS3Uploads(sdk, server.bucket) }
}

/** What an S3 call that should fail failed with. */
async function failure(call: Promise<unknown>): Promise<{ name: string; status: number | undefined; message: string }> {
  try {
    await call
  } catch (error) {
    const e = error as { name: string; message: string; $metadata?: { httpStatusCode?: number } }
    return { name: e.name, status: e.$metadata?.httpStatusCode, message: e.message }
  }
  throw new Error('expected the call to fail')
}

/** Removes every object and multipart upload under `prefix`. */
async function clean(sdk: S3Client, Bucket: string, prefix: string): Promise<void> {
  const listed = await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: prefix }))
  const objects = (listed.Contents ?? []).map((o) => ({ Key: o.Key! }))
  if (objects.length) await sdk.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: objects } }))
  const uploads = await sdk.send(new ListMultipartUploadsCommand({ Bucket, Prefix: prefix }))
  for (const u of uploads.Uploads ?? [])
    await sdk.send(new AbortMultipartUploadCommand({ Bucket, Key: u.Key!, UploadId: u.UploadId! }))
}

const bytes = (n: number, seed = 1) => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff
  return out
}

for (const target of TARGETS) {
  describe(`on ${target.name}`, () => {
    let server: Server
    let sdk: S3Client
    let bun: Bun.S3Client
    let uploads: ReturnType<typeof createS3Uploads>
    let Bucket: string
    beforeAll(async () => {
      server = await target.start()
      ;({ sdk, bun, uploads } = clientsFor(server))
      Bucket = server.bucket
    })
    afterAll(async () => {
      sdk.destroy()
      await server.stop()
    })

    describe('objects', () => {
      afterAll(() => clean(sdk, Bucket, 'objects/'))

      test('a put object is read back whole, with its content type, metadata and headers, and one ETag everywhere', async () => {
        const Key = 'objects/plain.txt'
        const put = await sdk.send(
          new PutObjectCommand({
            Bucket,
            Key,
            Body: 'hello, store',
            ContentType: 'text/plain',
            Metadata: { origin: 'test', 'media-id': '42' },
            CacheControl: 'max-age=60',
            ContentDisposition: 'attachment; filename="plain.txt"',
          })
        )
        expect(put.ETag).toMatch(/^"[0-9a-f]{32}"$/)
        const got = await sdk.send(new GetObjectCommand({ Bucket, Key }))
        expect(await got.Body!.transformToString()).toBe('hello, store')
        expect(got.ContentType).toBe('text/plain')
        expect(got.Metadata).toEqual({ origin: 'test', 'media-id': '42' })
        expect(got.CacheControl).toBe('max-age=60')
        expect(got.ContentDisposition).toBe('attachment; filename="plain.txt"')
        expect(got.ETag).toBe(put.ETag)
        const head = await sdk.send(new HeadObjectCommand({ Bucket, Key }))
        expect(head.ContentLength).toBe(12)
        expect(head.ETag).toBe(put.ETag)
        const listed = await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: Key }))
        expect(listed.Contents?.map((o) => [o.Key, o.ETag, o.Size])).toEqual([[Key, put.ETag, 12]])
      })

      test('overwriting replaces the content and changes the ETag', async () => {
        const Key = 'objects/overwritten'
        const first = await sdk.send(new PutObjectCommand({ Bucket, Key, Body: 'first' }))
        const second = await sdk.send(new PutObjectCommand({ Bucket, Key, Body: 'second version' }))
        expect(second.ETag).not.toBe(first.ETag)
        const got = await sdk.send(new GetObjectCommand({ Bucket, Key }))
        expect(await got.Body!.transformToString()).toBe('second version')
        expect(got.ETag).toBe(second.ETag)
      })

      test('a deleted object is gone (NoSuchKey, HEAD 404), and deleting a missing key still answers 204', async () => {
        const Key = 'objects/deleted'
        await sdk.send(new PutObjectCommand({ Bucket, Key, Body: 'x' }))
        const deleted = await sdk.send(new DeleteObjectCommand({ Bucket, Key }))
        expect(deleted.$metadata.httpStatusCode).toBe(204)
        expect(await failure(sdk.send(new GetObjectCommand({ Bucket, Key })))).toMatchObject({
          name: 'NoSuchKey',
          status: 404,
        })
        expect(await failure(sdk.send(new HeadObjectCommand({ Bucket, Key })))).toMatchObject({ status: 404 })
        const again = await sdk.send(new DeleteObjectCommand({ Bucket, Key }))
        expect(again.$metadata.httpStatusCode).toBe(204)
      })

      test('DeleteObjects removes each key named, a missing one included', async () => {
        await sdk.send(new PutObjectCommand({ Bucket, Key: 'objects/many/1', Body: '1' }))
        await sdk.send(new PutObjectCommand({ Bucket, Key: 'objects/many/2', Body: '2' }))
        const result = await sdk.send(
          new DeleteObjectsCommand({
            Bucket,
            Delete: { Objects: [{ Key: 'objects/many/1' }, { Key: 'objects/many/2' }, { Key: 'objects/many/none' }] },
          })
        )
        expect(result.Deleted?.map((d) => d.Key).sort()).toEqual([
          'objects/many/1',
          'objects/many/2',
          'objects/many/none',
        ])
        expect(result.Errors ?? []).toEqual([])
        const listed = await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: 'objects/many/' }))
        expect(listed.KeyCount).toBe(0)
      })

      test('a key with spaces, unicode, +, %, = and & works for put, get, head, list, copy, presigned GET and Bun', async () => {
        const Key = 'objects/odd keys/a b+c%20d=e&f ü 日本.txt'
        await sdk.send(new PutObjectCommand({ Bucket, Key, Body: 'odd', ContentType: 'text/plain' }))
        expect(await (await sdk.send(new GetObjectCommand({ Bucket, Key }))).Body!.transformToString()).toBe('odd')
        expect((await sdk.send(new HeadObjectCommand({ Bucket, Key }))).ContentLength).toBe(3)
        const listed = await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: 'objects/odd keys/' }))
        expect(listed.Contents?.map((o) => o.Key)).toEqual([Key])
        await sdk.send(
          new CopyObjectCommand({ Bucket, Key: `${Key}.copy`, CopySource: `${Bucket}/${encodeURIComponent(Key)}` })
        )
        expect(
          await (await sdk.send(new GetObjectCommand({ Bucket, Key: `${Key}.copy` }))).Body!.transformToString()
        ).toBe('odd')
        expect(await (await fetch(await uploads.presignGet(Key, 60))).text()).toBe('odd')
        expect(await bun.file(Key).text()).toBe('odd')
      })

      test('a missing key is NoSuchKey (404), a missing bucket NoSuchBucket (404)', async () => {
        expect(await failure(sdk.send(new GetObjectCommand({ Bucket, Key: 'objects/none' })))).toMatchObject({
          name: 'NoSuchKey',
          status: 404,
        })
        expect(
          await failure(sdk.send(new GetObjectCommand({ Bucket: 'no-such-bucket-here', Key: 'objects/none' })))
        ).toMatchObject({ name: 'NoSuchBucket', status: 404 })
        expect(await failure(sdk.send(new ListObjectsV2Command({ Bucket: 'no-such-bucket-here' })))).toMatchObject({
          name: 'NoSuchBucket',
          status: 404,
        })
      })

      test('HeadBucket answers 200 for the bucket and 404 for another', async () => {
        expect((await sdk.send(new HeadBucketCommand({ Bucket }))).$metadata.httpStatusCode).toBe(200)
        expect(await failure(sdk.send(new HeadBucketCommand({ Bucket: 'no-such-bucket-here' })))).toMatchObject({
          status: 404,
        })
      })
    })

    describe('ranges', () => {
      const Key = 'ranges/ten'
      beforeAll(() => sdk.send(new PutObjectCommand({ Bucket, Key, Body: '0123456789' })))
      afterAll(() => clean(sdk, Bucket, 'ranges/'))

      test('bytes=a-b, a- and -n answer 206 with the bytes and a Content-Range', async () => {
        for (const [Range, body, contentRange] of [
          ['bytes=2-5', '2345', 'bytes 2-5/10'],
          ['bytes=7-', '789', 'bytes 7-9/10'],
          ['bytes=-3', '789', 'bytes 7-9/10'],
          ['bytes=8-100', '89', 'bytes 8-9/10'],
        ] as const) {
          const got = await sdk.send(new GetObjectCommand({ Bucket, Key, Range }))
          expect(got.$metadata.httpStatusCode).toBe(206)
          expect(got.ContentRange).toBe(contentRange)
          expect(await got.Body!.transformToString()).toBe(body)
        }
      })

      test('a range past the end is InvalidRange (416)', async () => {
        expect(await failure(sdk.send(new GetObjectCommand({ Bucket, Key, Range: 'bytes=10-' })))).toMatchObject({
          name: 'InvalidRange',
          status: 416,
        })
      })

      test("Bun's client reads a slice, and a presigned GET honours a Range", async () => {
        expect(await bun.file(Key).slice(3, 6).text()).toBe('345')
        const ranged = await fetch(await uploads.presignGet(Key, 60), { headers: { Range: 'bytes=1-2' } })
        expect(ranged.status).toBe(206)
        expect(await ranged.text()).toBe('12')
      })

      test('a large object is read whole and in a range from its middle', async () => {
        const big = bytes(3 * MiB + 17)
        await sdk.send(new PutObjectCommand({ Bucket, Key: 'ranges/big', Body: big }))
        const whole = new Uint8Array(await bun.file('ranges/big').arrayBuffer())
        expect(whole.length).toBe(big.length)
        expect(Buffer.compare(whole, big)).toBe(0)
        const middle = await sdk.send(
          new GetObjectCommand({ Bucket, Key: 'ranges/big', Range: `bytes=${MiB}-${2 * MiB + 9}` })
        )
        expect(Buffer.compare(await middle.Body!.transformToByteArray(), big.subarray(MiB, 2 * MiB + 10))).toBe(0)
      })
    })

    describe('listing', () => {
      const keys = ['list/a', 'list/b/1', 'list/b/2', 'list/c', 'list/d/e/f', 'list/e']
      beforeAll(async () => {
        for (const Key of [...keys, 'other/x']) await sdk.send(new PutObjectCommand({ Bucket, Key, Body: Key }))
      })
      afterAll(async () => {
        await clean(sdk, Bucket, 'list/')
        await clean(sdk, Bucket, 'other/')
      })

      test('ListObjectsV2 lists the keys under a prefix in order, with KeyCount', async () => {
        const listed = await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: 'list/' }))
        expect(listed.Contents?.map((o) => o.Key)).toEqual(keys)
        expect(listed.KeyCount).toBe(keys.length)
        expect(listed.IsTruncated).toBe(false)
      })

      test('a delimiter rolls keys up into CommonPrefixes', async () => {
        const listed = await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: 'list/', Delimiter: '/' }))
        expect(listed.Contents?.map((o) => o.Key)).toEqual(['list/a', 'list/c', 'list/e'])
        expect(listed.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['list/b/', 'list/d/'])
        expect(listed.KeyCount).toBe(5)
      })

      test('max-keys pages with a continuation token, delimiter or not, until IsTruncated is false', async () => {
        for (const Delimiter of [undefined, '/']) {
          const seen: string[] = []
          let ContinuationToken: string | undefined
          do {
            const page = await sdk.send(
              new ListObjectsV2Command({ Bucket, Prefix: 'list/', Delimiter, MaxKeys: 2, ContinuationToken })
            )
            expect(page.KeyCount).toBeLessThanOrEqual(2)
            seen.push(...(page.Contents ?? []).map((o) => o.Key!), ...(page.CommonPrefixes ?? []).map((p) => p.Prefix!))
            ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined
          } while (ContinuationToken)
          expect(seen.sort()).toEqual(Delimiter ? ['list/a', 'list/b/', 'list/c', 'list/d/', 'list/e'] : keys)
        }
      })

      test('start-after lists the keys after it', async () => {
        const listed = await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: 'list/', StartAfter: 'list/b/2' }))
        expect(listed.Contents?.map((o) => o.Key)).toEqual(['list/c', 'list/d/e/f', 'list/e'])
      })

      test('ListObjects (v1) pages with a marker', async () => {
        const first = await sdk.send(new ListObjectsCommand({ Bucket, Prefix: 'list/', MaxKeys: 3 }))
        expect(first.Contents?.map((o) => o.Key)).toEqual(keys.slice(0, 3))
        expect(first.IsTruncated).toBe(true)
        const rest = await sdk.send(new ListObjectsCommand({ Bucket, Prefix: 'list/', Marker: 'list/b/2' }))
        expect(rest.Contents?.map((o) => o.Key)).toEqual(keys.slice(3))
      })
    })

    describe('copy', () => {
      beforeAll(() =>
        sdk.send(
          new PutObjectCommand({
            Bucket,
            Key: 'copy/source',
            Body: 'source',
            ContentType: 'image/png',
            Metadata: { a: '1' },
          })
        )
      )
      afterAll(() => clean(sdk, Bucket, 'copy/'))

      test('CopyObject copies content and metadata (COPY), or takes new metadata (REPLACE)', async () => {
        const copied = await sdk.send(
          new CopyObjectCommand({ Bucket, Key: 'copy/kept', CopySource: `${Bucket}/copy/source` })
        )
        expect(copied.CopyObjectResult?.ETag).toMatch(/^"[0-9a-f]{32}"$/)
        const kept = await sdk.send(new GetObjectCommand({ Bucket, Key: 'copy/kept' }))
        expect([await kept.Body!.transformToString(), kept.ContentType, kept.Metadata]).toEqual([
          'source',
          'image/png',
          { a: '1' },
        ])
        expect(kept.ETag).toBe(copied.CopyObjectResult!.ETag)
        await sdk.send(
          new CopyObjectCommand({
            Bucket,
            Key: 'copy/replaced',
            CopySource: `${Bucket}/copy/source`,
            MetadataDirective: 'REPLACE',
            ContentType: 'image/webp',
            Metadata: { b: '2' },
          })
        )
        const replaced = await sdk.send(new HeadObjectCommand({ Bucket, Key: 'copy/replaced' }))
        expect([replaced.ContentType, replaced.Metadata, replaced.ContentLength]).toEqual(['image/webp', { b: '2' }, 6])
      })

      test('copying a missing object is NoSuchKey', async () => {
        const copy = sdk.send(new CopyObjectCommand({ Bucket, Key: 'copy/x', CopySource: `${Bucket}/copy/none` }))
        expect(await failure(copy)).toMatchObject({ name: 'NoSuchKey', status: 404 })
      })
    })

    describe('multipart uploads', () => {
      afterAll(() => clean(sdk, Bucket, 'multipart/'))
      const part1 = bytes(5 * MiB, 1)
      const part2 = bytes(5 * MiB, 2)
      const part3 = bytes(1000, 3)

      async function begin(Key: string) {
        const created = await sdk.send(
          new CreateMultipartUploadCommand({ Bucket, Key, ContentType: 'video/mp4', Metadata: { owner: 'tenant-1' } })
        )
        return created.UploadId!
      }
      const upload = async (Key: string, UploadId: string, PartNumber: number, Body: Uint8Array) =>
        (await sdk.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber, Body }))).ETag!

      test('parts are listed in pages, the upload is listed, and Complete makes the object with a "<hex>-N" ETag', async () => {
        const Key = 'multipart/video.mp4'
        const UploadId = await begin(Key)
        const etags = [
          await upload(Key, UploadId, 1, part1),
          await upload(Key, UploadId, 2, part2),
          await upload(Key, UploadId, 3, part3),
        ]
        const first = await sdk.send(new ListPartsCommand({ Bucket, Key, UploadId, MaxParts: 2 }))
        expect(first.Parts?.map((p) => [p.PartNumber, p.ETag, p.Size])).toEqual([
          [1, etags[0], 5 * MiB],
          [2, etags[1], 5 * MiB],
        ])
        expect(first.IsTruncated).toBe(true)
        expect(String(first.NextPartNumberMarker)).toBe('2')
        const second = await sdk.send(
          new ListPartsCommand({ Bucket, Key, UploadId, MaxParts: 2, PartNumberMarker: first.NextPartNumberMarker })
        )
        expect(second.Parts?.map((p) => p.PartNumber)).toEqual([3])
        expect(second.IsTruncated).toBe(false)

        const listed = await sdk.send(new ListMultipartUploadsCommand({ Bucket, Prefix: 'multipart/video' }))
        expect(listed.Uploads?.map((u) => [u.Key, u.UploadId])).toEqual([[Key, UploadId]])
        // moto answers a fixed date (2010); ours the time the upload began (the sweeper ages uploads by it).
        if (target.ours) expect(Date.now() - listed.Uploads![0]!.Initiated!.getTime()).toBeLessThan(60_000)

        const done = await sdk.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key,
            UploadId,
            MultipartUpload: { Parts: etags.map((ETag, i) => ({ PartNumber: i + 1, ETag })) },
          })
        )
        expect(done.ETag).toMatch(/^"[0-9a-f]{32}-3"$/)
        const got = await sdk.send(new GetObjectCommand({ Bucket, Key }))
        expect([got.ContentType, got.Metadata, got.ETag, got.ContentLength]).toEqual([
          'video/mp4',
          { owner: 'tenant-1' },
          done.ETag,
          10 * MiB + 1000,
        ])
        const body = await got.Body!.transformToByteArray()
        expect(Buffer.compare(body, Buffer.concat([part1, part2, part3]))).toBe(0)
        const after = await sdk.send(new ListMultipartUploadsCommand({ Bucket, Prefix: 'multipart/video' }))
        expect(after.Uploads ?? []).toEqual([])
      })

      test('Complete refuses a wrong ETag or a missing part (InvalidPart), a wrong order (InvalidPartOrder) and a small part before the last (EntityTooSmall), and the upload stays', async () => {
        const Key = 'multipart/refused'
        const UploadId = await begin(Key)
        const e1 = await upload(Key, UploadId, 1, part1)
        const e2 = await upload(Key, UploadId, 2, part2)
        const e3 = await upload(Key, UploadId, 3, part3)
        const e4 = await upload(Key, UploadId, 4, part3)
        const complete = (Parts: CompletedPart[]) =>
          failure(sdk.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts } })))
        expect(await complete([{ PartNumber: 1, ETag: '"00000000000000000000000000000000"' }])).toMatchObject({
          name: 'InvalidPart',
          status: 400,
        })
        expect(
          await complete([
            { PartNumber: 1, ETag: e1 },
            { PartNumber: 7, ETag: e2 },
          ])
        ).toMatchObject({
          name: 'InvalidPart',
          status: 400,
        })
        // moto sorts the list instead (and would complete the upload): ours only.
        if (target.ours)
          expect(
            await complete([
              { PartNumber: 2, ETag: e2 },
              { PartNumber: 1, ETag: e1 },
            ])
          ).toMatchObject({ name: 'InvalidPartOrder', status: 400 })
        expect(
          await complete([
            { PartNumber: 3, ETag: e3 },
            { PartNumber: 4, ETag: e4 },
          ])
        ).toMatchObject({
          name: 'EntityTooSmall',
          status: 400,
        })
        const parts = await sdk.send(new ListPartsCommand({ Bucket, Key, UploadId }))
        expect(parts.Parts?.map((p) => p.PartNumber)).toEqual([1, 2, 3, 4])
        // A subset of the parts is a whole object.
        await sdk.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key,
            UploadId,
            MultipartUpload: {
              Parts: [
                { PartNumber: 2, ETag: e2 },
                { PartNumber: 4, ETag: e4 },
              ],
            },
          })
        )
        expect((await sdk.send(new HeadObjectCommand({ Bucket, Key }))).ContentLength).toBe(5 * MiB + 1000)
      })

      test('an aborted upload is gone: its parts, its listing, and further calls on it are NoSuchUpload', async () => {
        const Key = 'multipart/aborted'
        const UploadId = await begin(Key)
        await upload(Key, UploadId, 1, part3)
        const aborted = await sdk.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }))
        expect(aborted.$metadata.httpStatusCode).toBe(204)
        const listed = await sdk.send(new ListMultipartUploadsCommand({ Bucket, Prefix: Key }))
        expect(listed.Uploads ?? []).toEqual([])
        const calls = [() => sdk.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }))]
        // moto answers these on an aborted upload with an HTML page (500): ours only.
        if (target.ours)
          calls.push(
            () => sdk.send(new ListPartsCommand({ Bucket, Key, UploadId })),
            () => sdk.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 2, Body: part3 })),
            () =>
              sdk.send(
                new CompleteMultipartUploadCommand({
                  Bucket,
                  Key,
                  UploadId,
                  MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"x"' }] },
                })
              )
          )
        for (const call of calls) expect(await failure(call())).toMatchObject({ name: 'NoSuchUpload', status: 404 })
      })

      test('presigned part URLs upload parts a browser can complete with the ETags they answer', async () => {
        const Key = 'multipart/presigned'
        const UploadId = await begin(Key)
        const Parts: CompletedPart[] = []
        for (const [i, body] of [part1, part3].entries()) {
          const put = await fetch(await uploads.presignPart(Key, UploadId, i + 1), { method: 'PUT', body })
          expect(put.status).toBe(200)
          Parts.push({ PartNumber: i + 1, ETag: put.headers.get('etag')! })
        }
        expect(await uploads.listParts(Key, UploadId)).toEqual([
          { PartNumber: 1, ETag: Parts[0]!.ETag!, Size: 5 * MiB },
          { PartNumber: 2, ETag: Parts[1]!.ETag!, Size: 1000 },
        ])
        await sdk.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts } }))
        expect((await sdk.send(new HeadObjectCommand({ Bucket, Key }))).ContentLength).toBe(5 * MiB + 1000)
      })
    })

    describe('presigned URLs and Bun.S3Client', () => {
      afterAll(() => clean(sdk, Bucket, 'presigned/'))

      test('a presigned PUT stores the body with the signed content type, and a presigned GET reads it', async () => {
        const Key = 'presigned/put.png'
        const put = await fetch(await uploads.presignPut(Key, 'image/png'), {
          method: 'PUT',
          headers: { 'Content-Type': 'image/png' },
          body: 'png bytes',
        })
        expect(put.status).toBe(200)
        expect(put.headers.get('etag')).toMatch(/^"[0-9a-f]{32}"$/)
        const got = await fetch(await uploads.presignGet(Key, 60))
        expect([got.status, got.headers.get('content-type'), await got.text()]).toEqual([200, 'image/png', 'png bytes'])
      })

      test("Bun's client writes (single and multipart), checks, sizes, presigns and deletes", async () => {
        await bun.write('presigned/bun-small', 'small')
        expect(await bun.exists('presigned/bun-small')).toBe(true)
        expect(await bun.exists('presigned/bun-none')).toBe(false)
        expect(await bun.size('presigned/bun-small')).toBe(5)
        const writer = bun.file('presigned/bun-big').writer({ partSize: 5 * MiB, type: 'video/mp4' })
        writer.write(bytes(6 * MiB))
        await writer.end()
        const stat = await bun.file('presigned/bun-big').stat()
        expect([stat.size, stat.type]).toEqual([6 * MiB, 'video/mp4'])
        expect(await (await fetch(bun.presign('presigned/bun-small'))).text()).toBe('small')
        await bun.unlink('presigned/bun-small')
        expect(await bun.exists('presigned/bun-small')).toBe(false)
      })
    })
  })
}

describe('on the embedded store only', () => {
  let server: Awaited<ReturnType<typeof startOurs>>
  let sdk: S3Client
  let uploads: ReturnType<typeof createS3Uploads>
  const Bucket = 'media-test'
  beforeAll(async () => {
    server = await startOurs('ours')
    ;({ sdk, uploads } = clientsFor(server))
  })
  afterAll(async () => {
    sdk.destroy()
    await server.stop()
  })

  /** A client whose requests `change` after they are built (before signing) or when sent (after signing). */
  function alteredClient(
    step: 'build' | 'deserialize',
    change: (request: { path: string; headers: Record<string, string>; body: unknown }) => void,
    options = {}
  ) {
    const client = new S3Client({
      ...s3ClientOptions({
        endpoint: server.endpoint,
        region: 'us-east-1',
        ...LOCAL_S3_CREDENTIALS,
        timeoutSeconds: 30,
      }),
      maxAttempts: 1,
      ...options,
    })
    const alter: Parameters<typeof client.middlewareStack.add>[0] = (next) => (args) => {
      change(args.request as { path: string; headers: Record<string, string>; body: unknown })
      return next(args)
    }
    client.middlewareStack.add(alter, { step, name: 'alterRequest' } as { step: 'deserialize'; name: string })
    return client
  }

  describe('signatures (moto checks none by default)', () => {
    afterAll(() => clean(sdk, Bucket, 'signed/'))
    beforeAll(() => sdk.send(new PutObjectCommand({ Bucket, Key: 'signed/x', Body: 'x', ContentType: 'text/plain' })))

    test('a presigned GET with a tampered signature, or used for another key, is SignatureDoesNotMatch (403)', async () => {
      const url = await uploads.presignGet('signed/x', 60)
      const tampered = url.replace(/X-Amz-Signature=([0-9a-f])/, (_, c) => `X-Amz-Signature=${c === '0' ? '1' : '0'}`)
      const other = url.replace('/signed/x?', '/signed/y?')
      for (const changed of [tampered, other]) {
        const answer = await fetch(changed)
        expect(answer.status).toBe(403)
        expect(await answer.text()).toContain('<Code>SignatureDoesNotMatch</Code>')
      }
    })

    test('a presigned PUT sent with another content type than it was signed for is refused, and stores nothing', async () => {
      // Signed as a header: the API's presignPut signs only the host (see the report), so this signs it explicitly.
      const url = await getSignedUrl(
        sdk,
        new PutObjectCommand({ Bucket, Key: 'signed/typed', ContentType: 'image/png' }),
        {
          expiresIn: 60,
          signableHeaders: new Set(['content-type']),
        }
      )
      expect(new URL(url).searchParams.get('X-Amz-SignedHeaders')).toBe('content-type;host')
      const answer = await fetch(url, { method: 'PUT', headers: { 'Content-Type': 'text/html' }, body: '<script>' })
      expect(answer.status).toBe(403)
      expect(await failure(sdk.send(new HeadObjectCommand({ Bucket, Key: 'signed/typed' })))).toMatchObject({
        status: 404,
      })
    })

    test('a signature that leaves the host out is refused (403), as S3 refuses it', async () => {
      const url = await getSignedUrl(sdk, new PutObjectCommand({ Bucket, Key: 'signed/hostless' }), {
        expiresIn: 60,
        signableHeaders: new Set(['content-type']),
        unsignableHeaders: new Set(['host']),
      })
      expect(new URL(url).searchParams.get('X-Amz-SignedHeaders')).toBe('content-type')
      const answer = await fetch(url, { method: 'PUT', headers: { 'Content-Type': 'text/plain' }, body: 'x' })
      expect(answer.status).toBe(403)
      expect(await answer.text()).toContain('<HeadersNotSigned>host</HeadersNotSigned>')
      expect(await failure(sdk.send(new HeadObjectCommand({ Bucket, Key: 'signed/hostless' })))).toMatchObject({
        status: 404,
      })
    })

    test('an expired presigned URL is AccessDenied: Request has expired', async () => {
      const url = await getSignedUrl(sdk, new GetObjectCommand({ Bucket, Key: 'signed/x' }), {
        expiresIn: 60,
        signingDate: new Date(Date.now() - 3600_000),
      })
      const answer = await fetch(url)
      expect(answer.status).toBe(403)
      expect(await answer.text()).toMatch(/<Code>AccessDenied<\/Code><Message>Request has expired<\/Message>/)
    })

    test('a presigned URL valid for more than 7 days is refused', async () => {
      const url = (await uploads.presignGet('signed/x', 60)).replace(/X-Amz-Expires=\d+/, 'X-Amz-Expires=604801')
      expect((await fetch(url)).status).toBe(400)
    })

    test('the wrong secret is SignatureDoesNotMatch, another access key InvalidAccessKeyId (both 403)', async () => {
      const wrongSecret = clientsFor(server, { secretAccessKey: 'wrong' }).sdk
      expect(await failure(wrongSecret.send(new GetObjectCommand({ Bucket, Key: 'signed/x' })))).toMatchObject({
        name: 'SignatureDoesNotMatch',
        status: 403,
      })
      const stranger = clientsFor(server, { accessKeyId: 'SOMEONE', secretAccessKey: 'ELSE' }).sdk
      expect(await failure(stranger.send(new HeadBucketCommand({ Bucket })))).toMatchObject({ status: 403 })
      expect(await failure(stranger.send(new GetObjectCommand({ Bucket, Key: 'signed/x' })))).toMatchObject({
        name: 'InvalidAccessKeyId',
        status: 403,
      })
    })

    test('an unsigned request is AccessDenied (403), a garbage Authorization header is malformed (400)', async () => {
      const unsigned = await fetch(`${server.endpoint}/${Bucket}/signed/x`)
      expect(unsigned.status).toBe(403)
      expect(await unsigned.text()).toContain('<Code>AccessDenied</Code>')
      const garbage = await fetch(`${server.endpoint}/${Bucket}/signed/x`, { headers: { Authorization: 'garbage' } })
      expect(garbage.status).toBe(400)
      expect(await garbage.text()).toContain('<Code>AuthorizationHeaderMalformed</Code>')
    })

    test('a request signed an hour ago is RequestTimeTooSkewed (403)', async () => {
      const skewed = alteredClient('build', () => {}, { systemClockOffset: -3600_000 })
      expect(await failure(skewed.send(new GetObjectCommand({ Bucket, Key: 'signed/x' })))).toMatchObject({
        name: 'RequestTimeTooSkewed',
        status: 403,
      })
    })
  })

  describe('hostile input', () => {
    afterAll(() => clean(sdk, Bucket, ''))

    test('no key leaves the bucket directory: ../x, a/../../x, ./x and their encoded forms', async () => {
      const attempts: Promise<unknown>[] = []
      for (const Key of ['../x', 'a/../../x', './x', '..', 'a/./../../../x'])
        attempts.push(sdk.send(new PutObjectCommand({ Bucket, Key, Body: 'escape' })).catch(() => undefined))
      for (const path of [
        `/${Bucket}/..%2F..%2Fx`,
        `/${Bucket}/%2E%2E/%2E%2E/x`,
        `/${Bucket}/a%2F..%2F..%2F..%2Fx`,
        `/${Bucket}/..%5C..%5Cx`,
      ])
        attempts.push(
          alteredClient('build', (request) => {
            request.path = path
          })
            .send(new PutObjectCommand({ Bucket, Key: 'placeholder', Body: 'escape' }))
            .catch(() => undefined)
        )
      await Promise.all(attempts)
      // Only the root beside the root, and in the root only the bucket and the store's own area.
      expect(readdirSync(join(server.root, '..'))).toEqual(['root'])
      expect(readdirSync(server.root).sort()).toEqual(['.store', Bucket])
      // What was stored is inside the bucket, under its literal key.
      const keys = ((await sdk.send(new ListObjectsV2Command({ Bucket }))).Contents ?? []).map((o) => o.Key)
      for (const key of keys) expect(['../../x', 'a/../../../x', '..\\..\\x']).toContain(key!)
    })

    test('a body that does not match its signed SHA-256 is refused (400) and leaves no object', async () => {
      const swapped = alteredClient('deserialize', (request) => {
        request.body = 'evil'
      })
      expect(
        await failure(swapped.send(new PutObjectCommand({ Bucket, Key: 'hostile/swapped', Body: 'good' })))
      ).toMatchObject({
        name: 'XAmzContentSHA256Mismatch',
        status: 400,
      })
      expect(await failure(sdk.send(new HeadObjectCommand({ Bucket, Key: 'hostile/swapped' })))).toMatchObject({
        status: 404,
      })
    })

    test('a truncated body (Content-Length larger than sent) leaves no object and no temporary file', async () => {
      const url = new URL(await uploads.presignPut('hostile/truncated'))
      const socket = await Bun.connect({ hostname: url.hostname, port: Number(url.port), socket: { data() {} } })
      socket.write(
        `PUT ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: 1000\r\n\r\n0123456789`
      )
      socket.end()
      const tmp = join(server.root, '.store', 'tmp')
      const deadline = Date.now() + 10_000
      while (readdirSync(tmp).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
      expect(readdirSync(tmp)).toEqual([])
      expect(await failure(sdk.send(new HeadObjectCommand({ Bucket, Key: 'hostile/truncated' })))).toMatchObject({
        status: 404,
      })
    })

    test('garbage XML to CompleteMultipartUpload is MalformedXML (400)', async () => {
      const Key = 'hostile/garbage'
      const { UploadId } = await sdk.send(new CreateMultipartUploadCommand({ Bucket, Key }))
      const garbage = alteredClient('build', (request) => {
        request.body = '<CompleteMultipartUpload><Part><PartNumber>x'
        request.headers['content-length'] = String(Buffer.byteLength(request.body as string))
      })
      const sent = garbage.send(
        new CompleteMultipartUploadCommand({
          Bucket,
          Key,
          UploadId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"a"' }] },
        })
      )
      expect(await failure(sent)).toMatchObject({ name: 'MalformedXML', status: 400 })
    })

    test('an aws-chunked body (STREAMING-*) is NotImplemented (501), naming it', async () => {
      const chunked = alteredClient('build', (request) => {
        request.headers['x-amz-content-sha256'] = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD'
      })
      const refused = await failure(chunked.send(new PutObjectCommand({ Bucket, Key: 'hostile/chunked', Body: 'x' })))
      expect(refused).toMatchObject({ name: 'NotImplemented', status: 501 })
      expect(refused.message).toContain('STREAMING-AWS4-HMAC-SHA256-PAYLOAD')
    })

    test('an operation the store lacks is NotImplemented (501), naming it', async () => {
      await sdk.send(new PutObjectCommand({ Bucket, Key: 'hostile/tagged', Body: 'x' }))
      const refused = await failure(
        sdk.send(
          new PutObjectTaggingCommand({
            Bucket,
            Key: 'hostile/tagged',
            Tagging: { TagSet: [{ Key: 'a', Value: 'b' }] },
          })
        )
      )
      expect(refused).toMatchObject({ name: 'NotImplemented', status: 501 })
      expect(refused.message).toContain('PutObjectTagging')
    })

    test('after all of it the store still answers a good request', async () => {
      await sdk.send(new PutObjectCommand({ Bucket, Key: 'hostile/fine', Body: 'fine' }))
      expect(
        await (await sdk.send(new GetObjectCommand({ Bucket, Key: 'hostile/fine' }))).Body!.transformToString()
      ).toBe('fine')
    })
  })

  describe('layout', () => {
    afterAll(() => clean(sdk, Bucket, 'layout/'))

    test('a key and the keys under it as a folder are both storable ("a" and "a/b")', async () => {
      await sdk.send(new PutObjectCommand({ Bucket, Key: 'layout/a', Body: 'a' }))
      await sdk.send(new PutObjectCommand({ Bucket, Key: 'layout/a/b', Body: 'a/b' }))
      await sdk.send(new PutObjectCommand({ Bucket, Key: 'layout/a/', Body: 'a/' }))
      expect(await (await sdk.send(new GetObjectCommand({ Bucket, Key: 'layout/a' }))).Body!.transformToString()).toBe(
        'a'
      )
      expect(
        await (await sdk.send(new GetObjectCommand({ Bucket, Key: 'layout/a/b' }))).Body!.transformToString()
      ).toBe('a/b')
      const listed = await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: 'layout/' }))
      expect(listed.Contents?.map((o) => o.Key)).toEqual(['layout/a', 'layout/a/', 'layout/a/b'])
    })

    test('a key longer than 1024 bytes, or with a part too long for a file name, is KeyTooLongError (400)', async () => {
      for (const Key of [`layout/${'k'.repeat(1100)}`, `layout/${'ü'.repeat(100)}`])
        expect(await failure(sdk.send(new PutObjectCommand({ Bucket, Key, Body: 'x' })))).toMatchObject({
          name: 'KeyTooLongError',
          status: 400,
        })
    })

    test('a reader during overwrites sees the old or the new object whole, never a mix', async () => {
      const Key = 'layout/contended'
      const versions = [new Uint8Array(300 * 1024).fill(97), new Uint8Array(200 * 1024).fill(98)]
      await sdk.send(new PutObjectCommand({ Bucket, Key, Body: versions[0] }))
      let writing = true
      const writer = (async () => {
        for (let i = 1; i <= 60; i++) await sdk.send(new PutObjectCommand({ Bucket, Key, Body: versions[i % 2] }))
        writing = false
      })()
      const url = await uploads.presignGet(Key, 60)
      let reads = 0
      const reader = async () => {
        while (writing) {
          const answer = await fetch(url)
          const body = new Uint8Array(await answer.arrayBuffer())
          expect([answer.status, body.length, body[0]]).toBeOneOf([
            [200, 300 * 1024, 97],
            [200, 200 * 1024, 98],
          ])
          expect(Number(answer.headers.get('content-length'))).toBe(body.length)
          expect(body.every((b) => b === body[0])).toBe(true)
          reads++
        }
      }
      await Promise.all([writer, reader(), reader(), reader()])
      expect(reads).toBeGreaterThan(10)
    })

    test('uploads in progress and files being written never appear in a listing', async () => {
      await sdk.send(new CreateMultipartUploadCommand({ Bucket, Key: 'layout/pending' }))
      const listed = await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: 'layout/pending' }))
      expect(listed.KeyCount).toBe(0)
    })

    test('HeadBucket answers without listing the objects (a dangling link in the bucket does not matter)', async () => {
      for (let i = 0; i < 20; i++) await sdk.send(new PutObjectCommand({ Bucket, Key: `layout/many/${i}`, Body: 'x' }))
      symlinkSync(join(server.root, 'nowhere'), join(server.root, Bucket, 'dangling'))
      expect((await sdk.send(new HeadBucketCommand({ Bucket }))).$metadata.httpStatusCode).toBe(200)
      expect((await sdk.send(new ListObjectsV2Command({ Bucket, Prefix: 'layout/many/' }))).KeyCount).toBe(20)
      rmSync(join(server.root, Bucket, 'dangling'))
    })
  })

  describe('CORS', () => {
    afterAll(() => clean(sdk, Bucket, 'cors/'))

    test('a preflight from any origin is allowed the methods and the headers it asks for', async () => {
      const answer = await fetch(`${server.endpoint}/${Bucket}/cors/x`, {
        method: 'OPTIONS',
        headers: {
          Origin: 'http://console.example',
          'Access-Control-Request-Method': 'PUT',
          'Access-Control-Request-Headers': 'content-type',
        },
      })
      expect(answer.status).toBe(200)
      expect(answer.headers.get('access-control-allow-origin')).toBe('*')
      expect(answer.headers.get('access-control-allow-methods')).toContain('PUT')
      expect(answer.headers.get('access-control-allow-headers')).toBe('content-type')
      expect(answer.headers.get('access-control-expose-headers')).toContain('ETag')
    })

    test('a signed request with an Origin is answered with Access-Control-Allow-Origin and the ETag exposed', async () => {
      const put = await fetch(await uploads.presignPut('cors/x', 'image/png'), {
        method: 'PUT',
        headers: { Origin: 'http://console.example', 'Content-Type': 'image/png' },
        body: 'x',
      })
      expect(put.status).toBe(200)
      expect(put.headers.get('access-control-allow-origin')).toBe('*')
      expect(put.headers.get('access-control-expose-headers')).toContain('ETag')
      const unsigned = await fetch(`${server.endpoint}/${Bucket}/cors/x`, {
        headers: { Origin: 'http://console.example' },
      })
      expect(unsigned.status).toBe(403)
    })
  })
})

describe('durability: a new store on the same directory', () => {
  test('keeps every object with its content type, metadata and ETag, and an upload in progress that can then be completed', async () => {
    const first = await startOurs('durable')
    const client = clientsFor(first).sdk
    const Bucket = first.bucket
    const plain = await client.send(
      new PutObjectCommand({ Bucket, Key: 'plain', Body: 'plain', ContentType: 'text/plain' })
    )
    const described = await client.send(
      new PutObjectCommand({
        Bucket,
        Key: 'meta/one',
        Body: 'meta',
        ContentType: 'image/avif',
        Metadata: { tenant: 't1' },
      })
    )
    const { UploadId: doneId } = await client.send(
      new CreateMultipartUploadCommand({ Bucket, Key: 'multi', ContentType: 'video/mp4' })
    )
    const p1 = await client.send(
      new UploadPartCommand({ Bucket, Key: 'multi', UploadId: doneId, PartNumber: 1, Body: bytes(5 * MiB) })
    )
    const p2 = await client.send(
      new UploadPartCommand({ Bucket, Key: 'multi', UploadId: doneId, PartNumber: 2, Body: 'end' })
    )
    const multi = await client.send(
      new CompleteMultipartUploadCommand({
        Bucket,
        Key: 'multi',
        UploadId: doneId,
        MultipartUpload: {
          Parts: [
            { PartNumber: 1, ETag: p1.ETag },
            { PartNumber: 2, ETag: p2.ETag },
          ],
        },
      })
    )
    const { UploadId: openId } = await client.send(
      new CreateMultipartUploadCommand({ Bucket, Key: 'pending', ContentType: 'audio/mpeg', Metadata: { n: '1' } })
    )
    const open1 = await client.send(
      new UploadPartCommand({ Bucket, Key: 'pending', UploadId: openId, PartNumber: 1, Body: 'half' })
    )
    client.destroy()
    await first.stop()

    const second = await startOurs('durable')
    const again = clientsFor(second).sdk
    try {
      const heads = await Promise.all(
        ['plain', 'meta/one', 'multi'].map((Key) => again.send(new HeadObjectCommand({ Bucket, Key })))
      )
      expect(heads.map((h) => [h.ETag, h.ContentType, h.Metadata, h.ContentLength])).toEqual([
        [plain.ETag, 'text/plain', {}, 5],
        [described.ETag, 'image/avif', { tenant: 't1' }, 4],
        [multi.ETag, 'video/mp4', {}, 5 * MiB + 3],
      ])
      const listed = await again.send(new ListMultipartUploadsCommand({ Bucket }))
      expect(listed.Uploads?.map((u) => [u.Key, u.UploadId])).toEqual([['pending', openId]])
      await again.send(
        new CompleteMultipartUploadCommand({
          Bucket,
          Key: 'pending',
          UploadId: openId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: open1.ETag }] },
        })
      )
      const done = await again.send(new GetObjectCommand({ Bucket, Key: 'pending' }))
      expect([await done.Body!.transformToString(), done.ContentType, done.Metadata]).toEqual([
        'half',
        'audio/mpeg',
        { n: '1' },
      ])
      expect(existsSync(join(second.root, '.store', 'uploads', Bucket, openId!))).toBe(false)
    } finally {
      again.destroy()
      await second.stop()
    }
  })
})

describe('an earlier release: the data s3rver left in the directory', () => {
  test('is in the store after the upgrade, with its content type, metadata and ETag, and s3rver files are gone', async () => {
    const root = join(directory, 'upgraded', 'root')
    const objects = join(root, 'media-test', 'sys', 'originals')
    mkdirSync(objects, { recursive: true })
    // s3rver 3.7.1's filesystem store: the bytes, the stored headers as JSON, the MD5 (its ETag) beside them.
    writeFileSync(join(objects, 'photo._S3rver_object'), 'jpeg bytes')
    writeFileSync(
      join(objects, 'photo._S3rver_metadata.json'),
      JSON.stringify({ 'content-type': 'image/jpeg', 'cache-control': 'max-age=60', 'x-amz-meta-tenant': 't1' })
    )
    writeFileSync(join(objects, 'photo._S3rver_object.md5'), createHash('md5').update('jpeg bytes').digest('hex'))
    writeFileSync(join(root, 'media-test', 'bare._S3rver_object'), 'no metadata')
    mkdirSync(join(root, 'media-test', '._S3rver_uploads', 'abc'), { recursive: true })

    const upgraded = await startOurs('upgraded')
    const client = clientsFor(upgraded).sdk
    try {
      const photo = await client.send(new GetObjectCommand({ Bucket: 'media-test', Key: 'sys/originals/photo' }))
      expect([await photo.Body!.transformToString(), photo.ContentType, photo.CacheControl, photo.Metadata]).toEqual([
        'jpeg bytes',
        'image/jpeg',
        'max-age=60',
        { tenant: 't1' },
      ])
      expect(photo.ETag).toBe(`"${createHash('md5').update('jpeg bytes').digest('hex')}"`)
      const bare = await client.send(new GetObjectCommand({ Bucket: 'media-test', Key: 'bare' }))
      expect(await bare.Body!.transformToString()).toBe('no metadata')
      const listed = await client.send(new ListObjectsV2Command({ Bucket: 'media-test' }))
      expect(listed.Contents?.map((o) => o.Key)).toEqual(['bare', 'sys/originals/photo'])
      expect(readdirSync(objects).filter((name) => name.includes('_S3rver_'))).toEqual([])
      expect(existsSync(join(root, 'media-test', '._S3rver_uploads'))).toBe(false)
    } finally {
      client.destroy()
      await upgraded.stop()
    }
    // Moved once: a later start finds the store's own layout and leaves it as it is.
    const again = await startOurs('upgraded')
    const client2 = clientsFor(again).sdk
    try {
      const head = await client2.send(new HeadObjectCommand({ Bucket: 'media-test', Key: 'sys/originals/photo' }))
      expect(head.ContentLength).toBe('jpeg bytes'.length)
    } finally {
      client2.destroy()
      await again.stop()
    }
  })
})
