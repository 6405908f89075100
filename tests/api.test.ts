/** HTTP edge cases, configuration errors, and memory while streaming large uploads. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { queueNames } from '@app/shared'
import { spawnApi } from './helpers/api-process.ts'
import { apiKey, testEnv } from './helpers/env.ts'
import { appendLog } from './helpers/logs.ts'
import { connectRabbit } from './helpers/rabbit.ts'
import { testS3 } from './helpers/s3.ts'
import { startStack, type Stack } from './helpers/stack.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

const root = join(import.meta.dir, '..')
const PNG_HEAD = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

/** A body of `size` bytes that starts like a PNG, produced chunk by chunk (never held whole). */
function pngLikeStream(size: number, chunk = 256 * 1024): ReadableStream<Uint8Array> {
  let sent = 0
  const block = new Uint8Array(chunk).map((_, i) => (i * 31) & 0xff)
  return new ReadableStream({
    pull(controller) {
      if (sent >= size) return controller.close()
      const part = block.slice(0, Math.min(chunk, size - sent))
      if (sent === 0) part.set(PNG_HEAD)
      sent += part.byteLength
      controller.enqueue(part)
    },
  })
}

describe('HTTP', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ images: false, env: { MAX_UPLOAD_BYTES: '100k' } })
  })
  afterAll(async () => {
    await stack.stop()
  })

  test('an upload over MAX_UPLOAD_BYTES gets 413, declared or streamed, raw or multipart', async () => {
    const big = new Uint8Array(150 * 1024)
    big.set(PNG_HEAD)
    const declared = await stack.upload(big)
    const streamed = await stack.fetch(`/v1/media`, { method: 'POST', body: pngLikeStream(300 * 1024) })
    const form = new FormData()
    form.append('file', new Blob([big]), 'big.png')
    const multipart = await stack.fetch(`/v1/media`, { method: 'POST', body: form })
    for (const res of [declared, streamed, multipart]) {
      expect(res.status).toBe(413)
      expect(await res.json()).toEqual({
        error: { code: 'payload_too_large', message: expect.stringContaining('102400') },
      })
    }
  })

  test('a multipart body without a "file" field gets 400', async () => {
    const form = new FormData()
    form.append('photo', new Blob([PNG_HEAD]), 'x.png')
    const res = await stack.fetch(`/v1/media`, { method: 'POST', body: form })
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain('"file"')
  })

  test('a sound file is taken as audio, judged from its first bytes (an ID3 header: MP3)', async () => {
    const mp3 = new Uint8Array([0x49, 0x44, 0x33, 4, 0, 0, 0, 0, 0, 0, ...new Array(100).fill(0)])
    const res = await stack.upload(mp3, { 'content-type': 'image/png' })
    expect(res.status).toBe(202)
    expect(((await res.json()) as { kind: string }).kind).toBe('audio')
  })

  test('unknown media, malformed ids, unknown outputs and unknown routes get 404', async () => {
    const { id } = (await (await stack.upload(readPng())).json()) as { id: string }
    for (const path of [
      `/v1/media/${crypto.randomUUID()}`,
      '/v1/media/not-an-id',
      `/v1/media/${id}/outputs/thumb`,
      '/v2/nothing',
    ]) {
      const res = await stack.fetch(path)
      expect(res.status).toBe(404)
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_found')
    }
  })

  test('health reports the database, RabbitMQ and S3, and job counts', async () => {
    const res = await fetch(`${stack.url}/health`)
    expect(res.status).toBe(200)
    const body = (await res.json()) as {
      status: string
      checks: Record<string, { ok: boolean }>
      jobs: Record<string, number>
    }
    expect(body.status).toBe('ok')
    expect(body.checks).toEqual({ database: { ok: true }, rabbitmq: { ok: true }, s3: { ok: true } })
    expect(Object.keys(body.jobs).sort()).toEqual(['cancelled', 'completed', 'failed', 'processing', 'queued'])
    expect(body.jobs.queued).toBeGreaterThanOrEqual(1)
  })
})

describe('an upload that fails after S3 has taken parts of it', () => {
  const MiB = 1024 * 1024
  let stack: Stack
  let s3: ReturnType<typeof testS3>
  beforeAll(async () => {
    stack = await startStack({ images: false, env: { MAX_UPLOAD_BYTES: '6m' } })
    s3 = testS3(stack.env)
  })
  afterAll(async () => {
    s3.close()
    await stack.stop()
  })
  /** Objects and unfinished multipart uploads under this stack's originals. */
  const leftovers = async () => {
    const prefix = `${stack.env.SYSTEM}/originals/`
    return [...(await s3.keys(prefix)), ...(await s3.openUploads(prefix))]
  }

  test('passing the limit gets 413 (not the storage error it surfaces as), and nothing is left', async () => {
    // Past the first 5 MiB part and over the limit, yet within the server's own cap (the limit + 1 MiB).
    const res = await stack.fetch(`/v1/media`, { method: 'POST', body: pngLikeStream(6.5 * MiB) })
    expect(res.status).toBe(413)
    expect(await res.json()).toEqual({
      error: { code: 'payload_too_large', message: expect.stringContaining(String(6 * MiB)) },
    })
    expect(await leftovers()).toEqual([])
    expect((await stack.api.store.media.countJobs()).queued).toBe(0)
  })

  test('a client that breaks off gets 400, raw or multipart, and nothing is left', async () => {
    const boundary = 'x-boundary-x'
    /** A PNG-like body that breaks off at the limit, after the first 5 MiB part has gone to S3. */
    const brokenOff = (prefix: string) => {
      let sent = 0
      return new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent === 0 && prefix) controller.enqueue(new TextEncoder().encode(prefix))
          if (sent >= 6 * MiB) return controller.error(new Error('connection reset by the client'))
          const chunk = new Uint8Array(MiB)
          if (sent === 0) chunk.set(PNG_HEAD)
          sent += chunk.byteLength
          controller.enqueue(chunk)
        },
      })
    }
    const part = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n`
    for (const [prefix, type] of [
      ['', 'application/octet-stream'],
      [part, `multipart/form-data; boundary=${boundary}`],
    ] as const) {
      // Through app.request: a real client that breaks off never reads the answer, but the API still gives one.
      const res = await stack.api.app.request('/v1/media', {
        method: 'POST',
        body: brokenOff(prefix),
        headers: { ...apiKey, 'content-type': type },
      })
      expect(res.status).toBe(400)
      expect(await res.json()).toEqual({
        error: { code: 'bad_request', message: expect.stringContaining('interrupted') },
      })
    }
    expect(await leftovers()).toEqual([])
    expect((await stack.api.store.media.countJobs()).queued).toBe(0)
  })
})

describe('when S3 refuses the upload', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ images: false, env: { S3_BUCKET: 'no-such-bucket-here' } })
  })
  afterAll(async () => {
    await stack.stop()
  })

  test('the upload gets 503 storage_unavailable with Retry-After, and no job is recorded', async () => {
    const res = await stack.upload(readPng())
    expect(res.status).toBe(503)
    expect(res.headers.get('retry-after')).toBe('5')
    expect(await res.json()).toEqual({
      error: { code: 'storage_unavailable', message: expect.stringContaining('could not be stored') },
    })
    expect((await stack.api.store.media.countJobs()).queued).toBe(0)
  })
})

describe('the outbox', () => {
  const ADMIN_TOKEN = 'outbox-test-token-0123456789'
  let stack: Stack
  let rabbit: Awaited<ReturnType<typeof connectRabbit>>
  beforeAll(async () => {
    stack = await startStack({ images: false, env: { ADMIN_TOKEN } })
    rabbit = await connectRabbit()
  })
  afterAll(async () => {
    await rabbit.close()
    await stack.stop()
  })
  const admin = (path: string, method = 'GET') =>
    fetch(`${stack.url}/v1/admin${path}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  const status = async (id: string) =>
    ((await (await stack.fetch(`/v1/media/${id}`)).json()) as { status: string }).status

  test('a request the broker dead-lettered is sent again through the outbox, as bulk work, when an operator re-drives it', async () => {
    const names = queueNames(stack.env.SYSTEM!, 'images')
    const { id, jobId } = (await (await stack.upload(readPng())).json()) as { id: string; jobId: string }
    // Play the broker giving up on the request: take it off its queue and dead-letter it as RabbitMQ would.
    const request = await rabbit.nextMessage(names.request)
    await rabbit.publishRaw(names.dead, request.content, {
      correlationId: jobId,
      headers: { 'x-first-death-queue': names.request, 'x-first-death-reason': 'delivery_limit' },
    })
    const deadline = Date.now() + 10_000
    while ((await status(id)) !== 'failed') {
      if (Date.now() > deadline) throw new Error('the dead letter did not fail its job within 10 s')
      await Bun.sleep(20)
    }
    const { deadLetters } = (await (await admin('/dead-letters')).json()) as {
      deadLetters: { id: string; jobId: string }[]
    }
    const letter = deadLetters.find((l) => l.jobId === jobId)!

    expect((await admin(`/dead-letters/${letter.id}/redrive`, 'POST')).status).toBe(202)
    expect(await status(id)).toBe('queued')
    // An operator's re-drive is bulk work: it goes to the bulk queue, its job marked bulk.
    const again = await rabbit.nextMessage(names.bulk)
    expect(again.properties.priority).toBe(0)
    expect((await stack.api.store.media.get(id))!.cls).toBe('bulk')
    expect(JSON.parse(again.content.toString())).toEqual(JSON.parse(request.content.toString()))
    expect(again.properties.messageId).not.toBe(request.properties.messageId) // a fresh copy, from a fresh outbox row
  })
})

function readPng(): Uint8Array {
  const png = new Uint8Array(64)
  png.set(PNG_HEAD)
  return png
}

/** Runs a service entry with `env`; resolves with its exit code and output (it must exit within `timeoutMs`). */
async function runEntry(service: string, env: Record<string, string>, timeoutMs = 15_000) {
  const child = Bun.spawn(['bun', join(root, 'services', service, 'main.ts')], {
    env: { PATH: process.env.PATH!, ...env },
    stderr: 'pipe',
    stdout: 'pipe',
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const code = await child.exited
  clearTimeout(timer)
  return { code, stderr: await new Response(child.stderr).text() }
}

describe('configuration', () => {
  test('a bad environment variable stops a service with a message naming it', async () => {
    const api = await runEntry('api', { ...testEnv(), PORT: 'eighty', MAX_UPLOAD_BYTES: 'lots' })
    expect(api.code).toBe(2)
    expect(api.stderr).toContain('PORT')
    expect(api.stderr).toContain('MAX_UPLOAD_BYTES')
    const images = await runEntry('images', { ...testEnv(), IMAGE_CONCURRENCY: '0', S3_ACCESS_KEY_ID: '' })
    expect(images.code).toBe(2)
    expect(images.stderr).toMatch(/IMAGE_CONCURRENCY/)
    expect(images.stderr).toMatch(/S3_ACCESS_KEY_ID/)
    const videos = await runEntry('videos', { ...testEnv(), VIDEO_CONCURRENCY: 'two', MAX_VIDEO_SECONDS: '-5' })
    expect(videos.code).toBe(2)
    expect(videos.stderr).toContain('VIDEO_CONCURRENCY')
    expect(videos.stderr).toContain('MAX_VIDEO_SECONDS')
    const audio = await runEntry('audio', { ...testEnv(), MAX_AUDIO_CHANNELS: 'stereo', AUDIO_TMP_DIR: '' })
    expect(audio.code).toBe(2)
    expect(audio.stderr).toContain('MAX_AUDIO_CHANNELS')
    expect(audio.stderr).toContain('AUDIO_TMP_DIR')
    const system = await runEntry('api', { ...testEnv(), SYSTEM: 'Has.Dots' })
    expect(system.stderr).toContain('SYSTEM')
  })

  test('an unreachable RabbitMQ stops a service with a message saying how to start it', async () => {
    for (const service of ['api', 'images', 'videos', 'audio']) {
      const result = await runEntry(service, { ...testEnv(), RABBITMQ_URL: 'amqp://guest:guest@127.0.0.1:1' })
      expect(result.code).toBe(1)
      expect(result.stderr).toContain('rabbitmq-server')
    }
  })
})

describe('memory', () => {
  test('a 400 MB multipart upload streams through the API without being held in memory', async () => {
    const env = testEnv({ PORT: String(20000 + Math.floor(Math.random() * 20000)) })
    const child = await spawnApi(env)
    try {
      const peak = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]) * 1024
      const upload = async (size: number) => {
        const boundary = 'x-boundary-x'
        const head = new TextEncoder().encode(
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n`
        )
        const tail = new TextEncoder().encode(`\r\n--${boundary}--\r\n`)
        const file = pngLikeStream(size).getReader()
        let stage = 0
        const body = new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (stage === 0) return (stage++, controller.enqueue(head))
            if (stage === 1) {
              const { value, done } = await file.read()
              if (!done) return controller.enqueue(value)
              stage++
            }
            controller.enqueue(tail)
            controller.close()
          },
        })
        const res = await fetch(`http://127.0.0.1:${env.PORT}/v1/media`, {
          method: 'POST',
          body,
          headers: { ...apiKey, 'content-type': `multipart/form-data; boundary=${boundary}` },
        })
        expect(res.status).toBe(202)
      }
      // The first upload loads the S3 client and warms the runtime; what follows must not grow with the file.
      await upload(32 * 1024 * 1024)
      const warm = peak()
      const size = 400 * 1024 * 1024
      await upload(size)
      const growth = peak() - warm
      appendLog(
        `api: peak RSS ${(warm / 2 ** 20).toFixed(0)} MiB after warm-up, +${(growth / 2 ** 20).toFixed(0)} MiB for a 400 MiB upload`
      )
      // Holding the file would cost at least its size; streaming costs buffers that do not scale with it, plus
      // garbage the collector has not yet reclaimed (measured 70–135 MiB for both 400 and 800 MiB uploads).
      expect(growth).toBeLessThan(size / 2)
    } finally {
      await child.kill('SIGTERM')
    }
  }, 120_000)
})
