/** The image path end to end: HTTP upload → S3 → RabbitMQ → sharp → S3 → results applied → HTTP read. */
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import sharp from 'sharp'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ImageResultSchema, decodeMessage, queueNames, type ImageRequest } from '@app/shared'
import { readConfig as readImagesConfig, start as startImages } from '../services/images/main.ts'
import {
  animatedGif,
  hasGpsTag,
  hevcHeic,
  jpegWithExif,
  quadrantColours,
  quadrants,
  storeForOrientation,
} from './helpers/image-fixtures.ts'
import { apiKey, testEnv } from './helpers/env.ts'
import { connectRabbit } from './helpers/rabbit.ts'
import { testS3 } from './helpers/s3.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

let stack: Stack
beforeAll(async () => {
  stack = await startStack()
})
afterAll(async () => {
  await stack.stop()
})

async function uploadAndWait(body: BodyInit | Uint8Array, headers?: Record<string, string>): Promise<MediaBody> {
  const res = await stack.upload(body, headers)
  expect(res.status).toBe(202)
  const accepted = (await res.json()) as { id: string; jobId: string; kind: string; status: string }
  expect(accepted).toMatchObject({ kind: 'image', status: 'queued' })
  return stack.waitForFinal(accepted.id)
}
const fetchOutput = async (media: MediaBody, name: string) => {
  const res = await fetch(media.outputs.find((o) => o.name === name)!.url, { headers: apiKey })
  expect(res.status).toBe(200)
  return new Uint8Array(await res.arrayBuffer())
}

describe('uploads', () => {
  test('a raw upload completes with a 320 px thumb and a 1280 px preview, both WebP', async () => {
    const photo = await sharp(await quadrants(2000, 1500))
      .jpeg()
      .toBuffer()
    const media = await uploadAndWait(photo, { 'content-type': 'image/jpeg' })
    expect(media.status).toBe('completed')
    expect(media.metadata).toMatchObject({
      format: 'jpeg',
      width: 2000,
      height: 1500,
      hasAlpha: false,
      pages: 1,
      orientation: 1,
    })
    const thumb = await sharp(await fetchOutput(media, 'thumb')).metadata()
    const preview = await sharp(await fetchOutput(media, 'preview')).metadata()
    expect(thumb).toMatchObject({ format: 'webp', width: 320, height: 240 })
    expect(preview).toMatchObject({ format: 'webp', width: 1280, height: 960 })
    expect(media.outputs.map((o) => [o.name, o.contentType, o.width, o.height])).toEqual([
      ['thumb', 'image/webp', 320, 240],
      ['preview', 'image/webp', 1280, 960],
    ])
  })

  test('a multipart upload (field "file") completes the same way', async () => {
    const png = await sharp(await quadrants(900, 600))
      .png()
      .toBuffer()
    const form = new FormData()
    form.append('note', 'fields other than "file" are ignored')
    form.append('file', new Blob([png], { type: 'image/png' }), 'photo.png')
    const res = await stack.fetch(`/v1/media`, { method: 'POST', body: form })
    expect(res.status).toBe(202)
    const media = await stack.waitForFinal(((await res.json()) as { id: string }).id)
    expect(media.status).toBe('completed')
    expect(media.metadata).toMatchObject({ format: 'png', width: 900, height: 600 })
    expect(await sharp(await fetchOutput(media, 'preview')).metadata()).toMatchObject({
      format: 'webp',
      width: 900,
      height: 600,
    })
    expect(await sharp(await fetchOutput(media, 'thumb')).metadata()).toMatchObject({ width: 320, height: 213 })
  })

  test('a small image is never upscaled', async () => {
    const media = await uploadAndWait(
      await sharp(await quadrants(64, 48))
        .png()
        .toBuffer()
    )
    expect(media.outputs.map((o) => [o.width, o.height])).toEqual([
      [64, 48],
      [64, 48],
    ])
  })

  test('the stored original is identical byte for byte, through a multipart S3 upload', async () => {
    // Noise compresses badly, so this PNG is ~10 MB: more than one 5 MiB S3 part.
    const noise = new Uint8Array(1800 * 1800 * 3).map((_, i) => (i * 2654435761) >>> 24)
    const png = new Uint8Array(
      await sharp(noise, { raw: { width: 1800, height: 1800, channels: 3 } })
        .png({ compressionLevel: 0 })
        .toBuffer()
    )
    expect(png.byteLength).toBeGreaterThan(5 * 1024 * 1024)
    const res = await stack.upload(png)
    expect(res.status).toBe(202)
    const { id } = (await res.json()) as { id: string }
    const s3 = new S3Client({
      endpoint: stack.env.S3_ENDPOINT,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: stack.env.S3_ACCESS_KEY_ID!, secretAccessKey: stack.env.S3_SECRET_ACCESS_KEY! },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    })
    const stored = await s3.send(
      new GetObjectCommand({ Bucket: stack.env.S3_BUCKET, Key: `${stack.env.SYSTEM}/originals/${id}` })
    )
    const bytes = await stored.Body!.transformToByteArray()
    const digest = async (b: Uint8Array) =>
      new Uint8Array(await crypto.subtle.digest('SHA-256', new Uint8Array(b))).toString()
    expect(bytes.byteLength).toBe(png.byteLength)
    expect(await digest(bytes)).toBe(await digest(png))
    expect(stored.ContentType).toBe('image/png')
    s3.destroy()
    expect((await stack.waitForFinal(id)).status).toBe('completed')
  })
})

describe('orientation and privacy', () => {
  const upright = quadrants(120, 80)
  for (const orientation of [1, 2, 3, 4, 5, 6, 7, 8]) {
    test(`EXIF orientation ${orientation} comes out upright`, async () => {
      const reference = await upright
      const photo = await jpegWithExif(await storeForOrientation(reference, orientation), { orientation })
      const media = await uploadAndWait(photo)
      expect(media.status).toBe('completed')
      expect(media.metadata).toMatchObject({ width: 120, height: 80, orientation })
      const preview = await fetchOutput(media, 'preview')
      expect(await sharp(preview).metadata()).toMatchObject({ width: 120, height: 80 })
      const got = await quadrantColours(preview)
      const want = await quadrantColours(reference)
      for (let q = 0; q < 4; q++) {
        for (let c = 0; c < 3; c++) expect(Math.abs(got[q]![c]! - want[q]![c]!)).toBeLessThan(40)
      }
    })
  }

  test('a GPS position in the original never reaches an output', async () => {
    const photo = await jpegWithExif(await quadrants(200, 100), { orientation: 1, gps: true })
    expect(hasGpsTag((await sharp(photo).metadata()).exif)).toBe(true) // the fixture really carries GPS
    const media = await uploadAndWait(photo)
    for (const name of ['thumb', 'preview']) {
      const output = await fetchOutput(media, name)
      const meta = await sharp(output).metadata()
      expect(meta.exif).toBeUndefined()
      expect(hasGpsTag(output)).toBe(false)
    }
  })

  test('CMYK input comes out as 3-channel sRGB', async () => {
    const cmyk = await sharp(await quadrants(100, 100))
      .toColourspace('cmyk')
      .jpeg()
      .toBuffer()
    expect((await sharp(cmyk).metadata()).space).toBe('cmyk')
    const media = await uploadAndWait(cmyk)
    expect(media.metadata).toMatchObject({ space: 'cmyk' })
    const out = await sharp(await fetchOutput(media, 'thumb')).metadata()
    expect(out).toMatchObject({ space: 'srgb', channels: 3 })
  })
})

describe('bad input', () => {
  test('an empty body gets 400', async () => {
    const res = await stack.upload(new Uint8Array(0))
    expect(res.status).toBe(400)
    expect(await res.json()).toEqual({ error: { code: 'empty_body', message: expect.any(String) } })
  })

  test('a file that is not an image gets 415, whatever it claims to be', async () => {
    const res = await stack.upload('just some text, not a picture', { 'content-type': 'image/jpeg' })
    expect(res.status).toBe(415)
    expect(await res.json()).toEqual({
      error: { code: 'unsupported_media_type', message: expect.stringContaining('content') },
    })
  })

  test('a corrupt and a truncated image fail with a reason, and the processor keeps serving', async () => {
    const good = await sharp(await quadrants(400, 300))
      .jpeg()
      .toBuffer()
    const corrupt = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, ...crypto.getRandomValues(new Uint8Array(2000))])
    const truncated = good.subarray(0, Math.floor(good.length / 2))
    for (const bad of [corrupt, truncated]) {
      const media = await uploadAndWait(bad)
      expect(media.status).toBe('failed')
      expect(media.error?.code).toBe('invalid_media')
      expect(media.error?.message).toMatch(/corrupt|truncated|premature|decode/i)
      expect(media.outputs).toEqual([])
    }
    expect((await uploadAndWait(good)).status).toBe('completed')
  })

  test('an image over the pixel limit fails fast, before decoding', async () => {
    // 12000×12000 (144 MP) of one colour compresses to a few kB; the default limit is 50 MP.
    const bomb = await sharp({ create: { width: 12000, height: 12000, channels: 3, background: '#000' } })
      .png()
      .toBuffer()
    const started = Date.now()
    const media = await uploadAndWait(bomb)
    expect(media.status).toBe('failed')
    expect(media.error).toEqual({
      code: 'limit_exceeded',
      class: 'input',
      message: 'the image is 12000×12000 (144 MP), over MAX_IMAGE_PIXELS (50 MP)',
    })
    expect(Date.now() - started).toBeLessThan(5_000)
  })
})

describe('limits before decoding', () => {
  // Processors of their own, fed requests directly (the API would size-check some of these itself) and read from
  // their results queue.
  let rabbit: Awaited<ReturnType<typeof connectRabbit>>
  let limited: Awaited<ReturnType<typeof startAlone>>
  let tiny: Awaited<ReturnType<typeof startAlone>>
  /** A heif-convert first on PATH that logs each run and hands over to the real one. */
  const spy = { dir: '', log: '', path: process.env.PATH }

  async function startAlone(overrides: Record<string, string>) {
    const env = testEnv(overrides)
    const service = await startImages(readImagesConfig(env))
    const queues = queueNames(env.SYSTEM!, 'images')
    const s3 = testS3(env)
    return {
      /** Stores `body` (unless told not to), asks for a 64 px WebP of it, and waits for the result. */
      async run(body: Uint8Array, options: { format: string; size?: number; upload?: boolean }) {
        const jobId = crypto.randomUUID()
        const key = `${env.SYSTEM}/originals/${jobId}`
        if (options.upload !== false)
          await s3.client.send(new PutObjectCommand({ Bucket: env.S3_BUCKET, Key: key, Body: body }))
        const request: ImageRequest = {
          version: 1,
          jobId,
          mediaId: crypto.randomUUID(),
          source: { bucket: env.S3_BUCKET!, key, format: options.format, size: options.size ?? body.byteLength },
          output: { bucket: env.S3_BUCKET!, prefix: `${env.SYSTEM}/outputs/${jobId}` },
          recipe: { outputs: [{ name: 'thumb', format: 'webp', width: 64, height: 64, quality: 80 }] },
        }
        await rabbit.publishRaw(queues.request, JSON.stringify(request), {
          messageId: crypto.randomUUID(),
          correlationId: jobId,
          type: 'job.request',
        })
        const decoded = decodeMessage(ImageResultSchema, (await rabbit.nextMessage(queues.results, 15_000)).content)
        if (!decoded.ok) throw new Error(decoded.reason)
        expect(decoded.value.jobId).toBe(jobId)
        return { result: decoded.value, outputs: () => s3.keys(`${request.output.prefix}/`) }
      },
      async stop() {
        await service.stop()
        s3.close()
      },
    }
  }
  const refusal = (run: Awaited<ReturnType<typeof limited.run>>) =>
    run.result.status === 'failed' ? run.result.error : run.result

  beforeAll(async () => {
    spy.dir = mkdtempSync(join(tmpdir(), 'media-test-heif-spy-'))
    spy.log = join(spy.dir, 'runs.log')
    writeFileSync(spy.log, '')
    writeFileSync(
      join(spy.dir, 'heif-convert'),
      `#!/bin/sh\necho "$@" >> '${spy.log}'\nexec '${Bun.which('heif-convert')}' "$@"\n`
    )
    chmodSync(join(spy.dir, 'heif-convert'), 0o755)
    process.env.PATH = `${spy.dir}:${spy.path}`
    rabbit = await connectRabbit()
    ;[limited, tiny] = await Promise.all([
      startAlone({ MAX_IMAGE_TOTAL_PIXELS: '1000000', MAX_IMAGE_BYTES: '64k' }),
      startAlone({ MAX_IMAGE_PIXELS: '10000' }),
    ])
  })
  afterAll(async () => {
    process.env.PATH = spy.path
    await limited?.stop()
    await tiny?.stop()
    await rabbit?.close()
    rmSync(spy.dir, { recursive: true, force: true })
  })

  test('a GIF of 1500 frames (34 kB) is refused from its header, nothing made: MAX_IMAGE_FRAMES', async () => {
    const run = await limited.run(animatedGif(1500, 100, 100), { format: 'gif' })
    expect(refusal(run)).toEqual({
      code: 'limit_exceeded',
      class: 'input',
      message: 'the image has 1500 frames, over MAX_IMAGE_FRAMES (1000)',
    })
    expect(await run.outputs()).toEqual([])
  })

  test('frames within the frame limit that add up to too many pixels: MAX_IMAGE_TOTAL_PIXELS', async () => {
    // 200 frames of 100×100: 2 MP, over the 1 MP this processor allows. 10 such frames are fine.
    const run = await limited.run(animatedGif(200, 100, 100), { format: 'gif' })
    expect(refusal(run)).toEqual({
      code: 'limit_exceeded',
      class: 'input',
      message: "the image's 200 frames of 100×100 make 2 MP, over MAX_IMAGE_TOTAL_PIXELS (1 MP)",
    })
    const fine = await limited.run(animatedGif(10, 100, 100), { format: 'gif' })
    expect(fine.result).toMatchObject({
      status: 'completed',
      metadata: { format: 'gif', width: 100, height: 100, pages: 10 },
    })
  })

  test('over MAX_IMAGE_BYTES by its declared size (not downloaded), or by its real one when the request understates it', async () => {
    const noise = new Uint8Array(200 * 200 * 3).map((_, i) => (i * 2654435761) >>> 24)
    const png = new Uint8Array(
      await sharp(noise, { raw: { width: 200, height: 200, channels: 3 } })
        .png({ compressionLevel: 0 })
        .toBuffer()
    )
    const message = `the original is ${Math.round((png.byteLength / 1024) * 10) / 10} KiB (${png.byteLength} bytes), over MAX_IMAGE_BYTES (64 KiB)`
    // Not even stored: a download would have failed source_missing.
    const declared = await limited.run(png, { format: 'png', upload: false })
    const understated = await limited.run(png, { format: 'png', size: 100 })
    for (const run of [declared, understated])
      expect(refusal(run)).toEqual({ code: 'limit_exceeded', class: 'input', message })
  })

  test('an HEIC over the pixel limit is refused from its header before heif-convert runs; one within it is converted', async () => {
    const [large, small] = await Promise.all([hevcHeic(200, 100), hevcHeic(64, 48)])
    writeFileSync(spy.log, '')
    const refused = await tiny.run(large, { format: 'heic' })
    expect(refusal(refused)).toEqual({
      code: 'limit_exceeded',
      class: 'input',
      message: 'the image is 200×100 (20000 pixels), over MAX_IMAGE_PIXELS (10000 pixels)',
    })
    expect(readFileSync(spy.log, 'utf8')).toBe('')
    const converted = await tiny.run(small, { format: 'heic' })
    expect(converted.result).toMatchObject({ status: 'completed', metadata: { format: 'heic', width: 64, height: 48 } })
    expect(readFileSync(spy.log, 'utf8').trim().split('\n')).toHaveLength(1)
  })
})
