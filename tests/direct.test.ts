/**
 * Direct uploads to S3 with presigned URLs, against the real API and the embedded store, and moto as a second
 * implementation: a single PUT and a multipart upload become media; what POST /v1/media refuses is
 * refused and deleted; keys are the tenant's own; completing twice answers the same media.
 */
import { HeadObjectCommand, GetObjectCommand } from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import sharp from 'sharp'
import { issueKey } from '../services/api/auth/keys.ts'
import { useInfra } from './helpers/infra.ts'
import { startMoto, type Moto } from './helpers/moto.ts'
import { testS3 } from './helpers/s3.ts'
import { paddedPng } from './helpers/image-fixtures.ts'
import { startStack, type Stack } from './helpers/stack.ts'

await useInfra()

const MiB = 1024 * 1024
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')
const json = { 'content-type': 'application/json' }
const ADMIN_TOKEN = 'direct-test-admin-token-0123456789'

/** Uploads `bytes` in parts of `partSize` through presigned part URLs; returns the parts for the completion. */
async function uploadParts(
  stack: Stack,
  key: string,
  uploadId: string,
  bytes: Uint8Array<ArrayBuffer>,
  partSize: number
) {
  const numbers = Array.from({ length: Math.ceil(bytes.length / partSize) }, (_, i) => i + 1)
  const batch = await stack.fetch(
    `/v1/direct-uploads/s3/multipart/${encodeURIComponent(uploadId)}/batch?key=${encodeURIComponent(key)}&partNumbers=${numbers.join(',')}`
  )
  expect(batch.status).toBe(200)
  const { presignedUrls } = (await batch.json()) as { presignedUrls: Record<string, string> }
  const parts = []
  for (const n of numbers) {
    const put = await fetch(presignedUrls[String(n)]!, {
      method: 'PUT',
      body: bytes.slice((n - 1) * partSize, n * partSize),
    })
    expect(put.status).toBe(200)
    parts.push({ PartNumber: n, ETag: put.headers.get('etag')! })
  }
  return parts
}

describe('direct uploads on the embedded S3 server', () => {
  let stack: Stack
  let s3: ReturnType<typeof testS3>
  beforeAll(async () => {
    // No processor: these tests are about intake; the jobs wait in their queue.
    stack = await startStack({ images: false, env: { MAX_UPLOAD_BYTES: '8M', ADMIN_TOKEN } })
    s3 = testS3(stack.env)
  })
  afterAll(async () => {
    s3?.close()
    await stack?.stop()
  })

  const params = async (filename: string, type?: string) => {
    const res = await stack.fetch(
      `/v1/direct-uploads/s3/params?filename=${encodeURIComponent(filename)}${type ? `&type=${encodeURIComponent(type)}` : ''}`
    )
    expect(res.status).toBe(200)
    return (await res.json()) as {
      method: 'PUT'
      url: string
      headers: Record<string, string>
      key: string
      expires: number
    }
  }
  const complete = (key: string, headers: Record<string, string> = {}) =>
    stack.fetch(`/v1/direct-uploads/complete?key=${encodeURIComponent(key)}`, { method: 'POST', headers })
  const exists = (key: string) =>
    s3.client.send(new HeadObjectCommand({ Bucket: stack.env.S3_BUCKET, Key: key })).then(
      () => true,
      () => false
    )

  test('a single presigned PUT becomes a media, with its file name; completing it again answers the same media', async () => {
    const photo = await paddedPng(300_000)
    const target = await params('holiday.png', 'image/png')
    expect(target).toMatchObject({ method: 'PUT', headers: { 'content-type': 'image/png' }, expires: 3600 })
    expect(target.key).toMatch(new RegExp(`^${stack.env.SYSTEM}/originals/[0-9a-f-]{36}$`))
    expect((await fetch(target.url, { method: 'PUT', body: photo, headers: target.headers })).status).toBe(200)
    const done = await complete(target.key)
    expect(done.status).toBe(202)
    const accepted = (await done.json()) as { id: string; kind: string; status: string }
    expect(accepted).toMatchObject({ kind: 'image', status: 'queued' })
    expect(target.key.endsWith(accepted.id)).toBe(true)
    expect(done.headers.get('location')).toBe(`/v1/media/${accepted.id}`)
    const media = (await (await stack.fetch(`/v1/media/${accepted.id}`)).json()) as {
      filename: string
      size: number
      format: string
    }
    expect(media).toMatchObject({ filename: 'holiday.png', size: photo.length, format: 'png' })
    const again = await complete(target.key)
    expect(again.status).toBe(202)
    expect(await again.json()).toEqual(accepted)
  })

  test('a multipart upload through presigned part URLs becomes a media; the object is the file, byte for byte', async () => {
    const file = await paddedPng(6 * MiB + 12345)
    const created = await stack.fetch('/v1/direct-uploads/s3/multipart', {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ filename: 'big.png', type: 'image/png' }),
    })
    expect(created.status).toBe(200)
    const { key, uploadId, bucket } = (await created.json()) as { key: string; uploadId: string; bucket: string }
    expect(bucket).toBe(stack.env.S3_BUCKET!)
    const parts = await uploadParts(stack, key, uploadId, file, 5 * MiB)
    expect(parts).toHaveLength(2)
    const done = await stack.fetch(
      `/v1/direct-uploads/s3/multipart/${encodeURIComponent(uploadId)}/complete?key=${encodeURIComponent(key)}`,
      {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ parts }),
      }
    )
    expect(done.status).toBe(200)
    const answer = (await done.json()) as { location: string; key: string; id: string; kind: string }
    expect(answer).toMatchObject({ key, kind: 'image', location: `${stack.url}/v1/media/${answer.id}` })
    const stored = await s3.client.send(new GetObjectCommand({ Bucket: stack.env.S3_BUCKET, Key: key }))
    expect(sha256(await stored.Body!.transformToByteArray())).toBe(sha256(file))
    expect((await stack.fetch(`/v1/media/${answer.id}`)).status).toBe(200)
  })

  test('what POST /v1/media refuses is refused here too, and deleted from S3', async () => {
    const text = await params('notes.txt')
    await fetch(text.url, { method: 'PUT', body: 'plain text, not an image or a video'.repeat(20) })
    const refused = await complete(text.key)
    expect(refused.status).toBe(415)
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('unsupported_media_type')
    expect(await exists(text.key)).toBe(false)
    expect((await complete(text.key)).status).toBe(404) // forgotten with its object

    const big = await params('huge.png')
    await fetch(big.url, { method: 'PUT', body: await paddedPng(9 * MiB) })
    const tooLarge = await complete(big.key)
    expect(tooLarge.status).toBe(413)
    expect(await exists(big.key)).toBe(false)
  })

  test("completing before uploading is a 409; a key never handed out, or another tenant's, is a 404; no key is a 401", async () => {
    const target = await params('later.png')
    expect((await complete(target.key)).status).toBe(409)
    expect((await complete(`${stack.env.SYSTEM}/originals/${crypto.randomUUID()}`)).status).toBe(404)
    const other = await issueKey(stack.api.store, 'direct-other')
    expect((await complete(target.key, { authorization: `Bearer ${other.key}` })).status).toBe(404)
    expect((await fetch(`${stack.url}/v1/direct-uploads/s3/params?filename=x.png`)).status).toBe(401)
  })

  test('with an Idempotency-Key, a completion retried gets the first answer; the same key elsewhere gets 422', async () => {
    const first = await params('one.png')
    await fetch(first.url, { method: 'PUT', body: await paddedPng(50_000) })
    const idempotencyKey = crypto.randomUUID()
    const done = await complete(first.key, { 'idempotency-key': idempotencyKey })
    expect(done.status).toBe(202)
    const again = await complete(first.key, { 'idempotency-key': idempotencyKey })
    expect(again.headers.get('idempotent-replayed')).toBe('true')
    expect(await again.json()).toEqual(await done.json())
    const second = await params('two.png')
    await fetch(second.url, { method: 'PUT', body: await paddedPng(50_000) })
    expect((await complete(second.key, { 'idempotency-key': idempotencyKey })).status).toBe(422)
  })

  test('a completion names its presets: an unknown one is refused before anything is copied, the rest are made', async () => {
    const target = await params('chosen.png')
    await fetch(target.url, { method: 'PUT', body: await paddedPng(50_000) })
    const completeWith = (presets: string[]) =>
      stack.fetch(`/v1/direct-uploads/complete?key=${encodeURIComponent(target.key)}`, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ presets }),
      })
    const refused = await completeWith(['avatar', 'nope'])
    expect(refused.status).toBe(422)
    expect(await exists(target.key)).toBe(false) // not copied
    const done = await completeWith(['avatar'])
    expect(done.status).toBe(202)
    const { id } = (await done.json()) as { id: string }
    expect(((await (await stack.fetch(`/v1/media/${id}`)).json()) as { presets: string[] }).presets).toEqual(['avatar'])
  })

  test('uploads handed out and never completed are swept: their object and their record go', async () => {
    const target = await params('forgotten.png')
    await fetch(target.url, { method: 'PUT', body: await paddedPng(40_000) })
    const sweep = (seconds: number) =>
      stack.fetch(`/v1/admin/sweep?olderThanSeconds=${seconds}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      })
    // The PUT went to the staging object; the original's key is written only at completion.
    const staged = `${stack.env.SYSTEM}/uploads/${target.key.slice(target.key.lastIndexOf('/') + 1)}`
    // Not yet old enough: kept.
    expect(((await (await sweep(3600)).json()) as { abortedUploads: string[] }).abortedUploads).not.toContain(
      target.key
    )
    expect(await exists(staged)).toBe(true)
    // Past the millisecond it was recorded in, so it is older than 0 s by the store's clock.
    const recorded = Date.now()
    while (Date.now() <= recorded) await new Promise((resolve) => setTimeout(resolve, 1))
    expect(((await (await sweep(0)).json()) as { abortedUploads: string[] }).abortedUploads).toContain(target.key)
    expect(await exists(staged)).toBe(false)
    expect((await complete(target.key)).status).toBe(404)
  })

  test('parts uploaded so far are listed on the embedded store too (as Uppy resumes); an aborted upload is gone', async () => {
    const { key, uploadId } = (await (
      await stack.fetch('/v1/direct-uploads/s3/multipart', {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ filename: 'x.png' }),
      })
    ).json()) as {
      key: string
      uploadId: string
    }
    const [first] = await uploadParts(stack, key, uploadId, await paddedPng(5 * MiB), 5 * MiB)
    const address = `/v1/direct-uploads/s3/multipart/${encodeURIComponent(uploadId)}?key=${encodeURIComponent(key)}`
    expect(await (await stack.fetch(address)).json()).toEqual([{ PartNumber: 1, ETag: first!.ETag, Size: 5 * MiB }])
    expect((await stack.fetch(address, { method: 'DELETE' })).status).toBe(200)
    expect((await stack.fetch(address)).status).toBe(404)
  })
})

describe('direct uploads on moto', () => {
  let moto: Moto
  let stack: Stack
  let s3: ReturnType<typeof testS3>
  beforeAll(async () => {
    moto = await startMoto()
    // The image processor starts when a test needs it: until then jobs wait in their queue.
    stack = await startStack({ images: false, env: { ...moto.env, ADMIN_TOKEN } })
    s3 = testS3(stack.env)
  })
  afterAll(async () => {
    s3?.close()
    await stack?.stop()
    await moto?.stop()
  })
  const original = async (key: string) =>
    await s3.client
      .send(new GetObjectCommand({ Bucket: stack.env.S3_BUCKET, Key: key }))
      .then((o) => o.Body!.transformToByteArray())

  test("a second PUT to a completed upload's URL changes nothing the job reads; the sweep removes what it wrote", async () => {
    const jpeg = await sharp({ create: { width: 640, height: 480, channels: 3, background: '#3366aa' } })
      .jpeg({ quality: 60 })
      .toBuffer()
    const png = await sharp({ create: { width: 900, height: 1200, channels: 4, background: '#aa3366' } })
      .png()
      .toBuffer()
    const target = (await (
      await stack.fetch('/v1/direct-uploads/s3/params?filename=a.jpg&type=image%2Fjpeg')
    ).json()) as { url: string; key: string; headers: Record<string, string> }
    expect((await fetch(target.url, { method: 'PUT', body: jpeg, headers: target.headers })).status).toBe(200)
    const done = await stack.fetch(`/v1/direct-uploads/complete?key=${encodeURIComponent(target.key)}`, {
      method: 'POST',
    })
    expect(done.status).toBe(202)
    const { id } = (await done.json()) as { id: string }
    // The attack: the URL is still valid, and the job has not run yet.
    expect((await fetch(target.url, { method: 'PUT', body: png, headers: target.headers })).status).toBe(200)
    expect(sha256(await original(target.key))).toBe(sha256(jpeg))
    await stack.startImages()
    try {
      const media = await stack.waitForFinal(id)
      expect(media).toMatchObject({
        status: 'completed',
        format: 'jpeg',
        size: jpeg.length,
        metadata: { format: 'jpeg', width: 640, height: 480 },
      })
    } finally {
      await stack.stopImages()
    }
    // What the URL wrote after completion is read by nobody: the sweep removes it, and the original stays.
    const swept = await stack.fetch('/v1/admin/sweep?olderThanSeconds=86400', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    })
    expect(((await swept.json()) as { abortedUploads: string[] }).abortedUploads).toEqual([
      `${stack.env.SYSTEM}/uploads/${id}`,
    ])
    expect(sha256(await original(target.key))).toBe(sha256(jpeg))
  })

  test('a completed multipart upload cannot be written again through its part URLs', async () => {
    const file = await paddedPng(5 * MiB + 100)
    const { key, uploadId } = (await (
      await stack.fetch('/v1/direct-uploads/s3/multipart', {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ filename: 'parts.png' }),
      })
    ).json()) as {
      key: string
      uploadId: string
    }
    const base = `/v1/direct-uploads/s3/multipart/${encodeURIComponent(uploadId)}`
    const parts = await uploadParts(stack, key, uploadId, file, 5 * MiB)
    const done = await stack.fetch(`${base}/complete?key=${encodeURIComponent(key)}`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ parts }),
    })
    expect(done.status).toBe(200)
    // Every part URL the client holds now meets a completed upload: refused, and the original is unchanged.
    const { url } = (await (await stack.fetch(`${base}/1?key=${encodeURIComponent(key)}`)).json()) as { url: string }
    const late = await fetch(url, { method: 'PUT', body: await paddedPng(5 * MiB) })
    expect({ status: late.status, refused: !late.ok }).toEqual({ status: late.status, refused: true })
    expect(sha256(await original(key))).toBe(sha256(file))
  })

  test('parts uploaded so far are listed (as Uppy resumes), and an aborted upload is gone', async () => {
    const file = await paddedPng(5 * MiB + 100)
    const { key, uploadId } = (await (
      await stack.fetch('/v1/direct-uploads/s3/multipart', {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ filename: 'resume.png' }),
      })
    ).json()) as {
      key: string
      uploadId: string
    }
    const [first] = await uploadParts(stack, key, uploadId, file.slice(0, 5 * MiB), 5 * MiB)
    const base = `/v1/direct-uploads/s3/multipart/${encodeURIComponent(uploadId)}`
    const listed = (await (await stack.fetch(`${base}?key=${encodeURIComponent(key)}`)).json()) as {
      PartNumber: number
      ETag: string
      Size: number
    }[]
    expect(listed).toEqual([{ PartNumber: 1, ETag: first!.ETag, Size: 5 * MiB }])
    // The rest, through the single-part route, then the completion.
    const { url } = (await (await stack.fetch(`${base}/2?key=${encodeURIComponent(key)}`)).json()) as { url: string }
    const put = await fetch(url, { method: 'PUT', body: file.slice(5 * MiB) })
    const done = await stack.fetch(`${base}/complete?key=${encodeURIComponent(key)}`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ parts: [first, { PartNumber: 2, ETag: put.headers.get('etag') }] }),
    })
    expect(done.status).toBe(200)

    const other = (await (
      await stack.fetch('/v1/direct-uploads/s3/multipart', {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ filename: 'gone.png' }),
      })
    ).json()) as {
      key: string
      uploadId: string
    }
    const otherBase = `/v1/direct-uploads/s3/multipart/${encodeURIComponent(other.uploadId)}?key=${encodeURIComponent(other.key)}`
    expect((await stack.fetch(otherBase, { method: 'DELETE' })).status).toBe(200)
    expect((await stack.fetch(otherBase)).status).toBe(404)
  })
})
