/** Cancelling and deleting: a cancelled job stops, never completes, and leaves no outputs, however the cancel reaches it. */
import { PutObjectCommand } from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { cancelMarkerKey, queueNames } from '@app/shared'
import { quadrants } from './helpers/image-fixtures.ts'
import { connectRabbit } from './helpers/rabbit.ts'
import { testS3 } from './helpers/s3.ts'
import { testEnv } from './helpers/env.ts'
import { appendLog } from './helpers/logs.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'
import { readConfig as readImagesConfig, start as startImages } from '../services/images/main.ts'
import { makeClip } from './helpers/video-fixtures.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

const work = mkdtempSync(join(tmpdir(), 'media-test-cancel-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

const jpeg = async () =>
  sharp(await quadrants(300, 200))
    .jpeg()
    .toBuffer()
const getMedia = async (stack: Stack, id: string) => (await (await stack.fetch(`/v1/media/${id}`)).json()) as MediaBody
const cancel = (stack: Stack, id: string) => stack.fetch(`/v1/media/${id}/cancel`, { method: 'POST' })
const outputsOf = (stack: Stack, jobId: string) => `${stack.env.SYSTEM}/outputs/${jobId}/`

/** Polls `check` until it holds or `timeoutMs` passes; returns how long it took. */
async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const started = Date.now()
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what} did not happen within ${timeoutMs} ms`)
    await Bun.sleep(10)
  }
  return Date.now() - started
}

/** The pids of ffmpeg processes working on a job (their arguments hold the job's work directory). */
function ffmpegOf(jobId: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
        return argv[0]?.endsWith('ffmpeg') === true && argv.some((arg) => arg.includes(jobId))
      } catch {
        return false // the process ended meanwhile
      }
    })
    .map(Number)
}

describe('a running video', () => {
  let stack: Stack
  const videosTmp = join(work, 'videos')
  beforeAll(async () => {
    stack = await startStack({ images: false, videos: true, env: { VIDEOS_TMP_DIR: videosTmp } })
  })
  afterAll(async () => {
    await stack.stop()
  })

  test('is stopped within 2 s of the cancel: ffmpeg gone, status cancelled, no outputs left', async () => {
    const clip = await makeClip(work, 'long.mp4', '960x540', 40)
    const res = await stack.upload(readFileSync(clip))
    const { id, jobId } = (await res.json()) as { id: string; jobId: string }
    await until(async () => (await getMedia(stack, id)).progress >= 15, 60_000, 'the transcode reaching 15%')
    expect(ffmpegOf(jobId).length).toBeGreaterThan(0)

    const started = Date.now()
    const answer = await cancel(stack, id)
    expect(answer.status).toBe(200)
    expect(((await answer.json()) as MediaBody).status).toBe('cancelled')
    await until(() => ffmpegOf(jobId).length === 0, 2_000, 'ffmpeg exiting')
    const elapsed = Date.now() - started
    appendLog(`cancel: ffmpeg gone ${elapsed} ms after the cancel request`)
    expect(elapsed).toBeLessThan(2_000)

    // The processor is done with the job once its work directory is gone; only the cancel marker may remain.
    await until(
      () => !readdirSync(videosTmp).some((pid) => existsSync(join(videosTmp, pid, jobId))),
      10_000,
      'the job cleaning up'
    )
    const s3 = testS3(stack.env)
    expect(await s3.keys(outputsOf(stack, jobId))).toEqual([cancelMarkerKey(outputsOf(stack, jobId).slice(0, -1))])
    s3.close()
    const media = await getMedia(stack, id)
    expect(media).toMatchObject({ status: 'cancelled', outputs: [] })
  }, 120_000)
})

describe('a queued image', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ images: false, env: { IMAGE_CONCURRENCY: '1' } })
  })
  afterAll(async () => {
    await stack.stop()
  })

  test('cancelled while the processors are stopped never runs once they start', async () => {
    const { id, jobId } = (await (await stack.upload(await jpeg())).json()) as { id: string; jobId: string }
    const answer = await cancel(stack, id)
    expect(answer.status).toBe(200)
    await stack.startImages()
    // One at a time, in order: once a later upload completes, the cancelled request has been handled.
    const later = (await (await stack.upload(await jpeg())).json()) as { id: string }
    expect((await stack.waitForFinal(later.id)).status).toBe('completed')
    expect(await getMedia(stack, id)).toMatchObject({ status: 'cancelled', outputs: [] })
    const s3 = testS3(stack.env)
    expect((await s3.keys(outputsOf(stack, jobId))).filter((k) => !k.endsWith('/.cancelled'))).toEqual([])
    s3.close()
    await stack.stopImages()
  })
})

describe('a processor that never heard the broadcast', () => {
  test('finds the cancel marker and reports cancelled, writing nothing', async () => {
    // The processor alone, as a backend whose broadcast was lost would meet it: only the marker tells it.
    const env = testEnv({ IMAGE_CONCURRENCY: '1' })
    const processor = await startImages(readImagesConfig(env))
    const rabbit = await connectRabbit()
    const names = queueNames(env.SYSTEM!, 'images')
    const s3 = testS3(env)
    /** Publishes a request for a real JPEG; with `marked`, its cancel marker is written first. */
    const request = async (marked: boolean) => {
      const jobId = crypto.randomUUID()
      const prefix = `${env.SYSTEM}/outputs/${jobId}`
      const source = `${env.SYSTEM}/originals/${jobId}`
      await s3.client.send(new PutObjectCommand({ Bucket: env.S3_BUCKET, Key: source, Body: await jpeg() }))
      if (marked)
        await s3.client.send(
          new PutObjectCommand({ Bucket: env.S3_BUCKET, Key: cancelMarkerKey(prefix), Body: new Uint8Array(0) })
        )
      await rabbit.publishRaw(
        names.request,
        JSON.stringify({
          version: 1,
          jobId,
          mediaId: crypto.randomUUID(),
          source: { bucket: env.S3_BUCKET, key: source, format: 'jpeg', size: 100 },
          output: { bucket: env.S3_BUCKET, prefix },
          recipe: { outputs: [{ name: 'thumb', format: 'webp', width: 32, height: 32 }] },
        })
      )
      return { jobId, prefix }
    }
    try {
      const control = await request(false)
      const marked = await request(true)
      const results = new Map<string, string>()
      for (let i = 0; i < 2; i++) {
        const { jobId, status } = JSON.parse((await rabbit.nextMessage(names.results, 10_000)).content.toString())
        results.set(jobId, status)
      }
      expect(results.get(control.jobId)).toBe('completed') // the same request, unmarked, is made
      expect(results.get(marked.jobId)).toBe('cancelled')
      expect(await s3.keys(`${control.prefix}/`)).toEqual([`${control.prefix}/thumb.webp`])
      expect(await s3.keys(`${marked.prefix}/`)).toEqual([cancelMarkerKey(marked.prefix)])
    } finally {
      s3.close()
      await rabbit.close()
      await processor.stop()
    }
  })
})

describe('finished and deleted media', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack()
  })
  afterAll(async () => {
    await stack.stop()
  })

  test('cancelling a completed job gets 409 and changes nothing', async () => {
    const { id } = (await (await stack.upload(await jpeg())).json()) as { id: string }
    const done = await stack.waitForFinal(id)
    const answer = await cancel(stack, id)
    expect(answer.status).toBe(409)
    expect(((await answer.json()) as { error: { code: string } }).error.code).toBe('conflict')
    expect(await getMedia(stack, id)).toEqual(done)
    expect((await cancel(stack, crypto.randomUUID())).status).toBe(404)
  })

  test('DELETE removes the media, its original and its outputs', async () => {
    const { id, jobId } = (await (await stack.upload(await jpeg())).json()) as { id: string; jobId: string }
    await stack.waitForFinal(id)
    const s3 = testS3(stack.env)
    expect((await s3.keys(outputsOf(stack, jobId))).length).toBe(2)
    const answer = await stack.fetch(`/v1/media/${id}`, { method: 'DELETE' })
    expect(answer.status).toBe(204)
    expect((await stack.fetch(`/v1/media/${id}`)).status).toBe(404)
    expect(await s3.keys(outputsOf(stack, jobId))).toEqual([])
    expect(await s3.keys(`${stack.env.SYSTEM}/originals/${id}`)).toEqual([])
    s3.close()
  })
})
