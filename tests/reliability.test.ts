/** Jobs survive a processor that is down, duplicated and reordered messages, and malformed ones. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import sharp from 'sharp'
import { queueNames } from '@app/shared'
import { quadrants } from './helpers/image-fixtures.ts'
import { connectRabbit } from './helpers/rabbit.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'
import { readConfig as readImagesConfig, start as startImages } from '../services/images/main.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

let rabbit: Awaited<ReturnType<typeof connectRabbit>>
beforeAll(async () => {
  rabbit = await connectRabbit()
})
afterAll(async () => {
  await rabbit.close()
})

const jpeg = async () =>
  sharp(await quadrants(300, 200))
    .jpeg()
    .toBuffer()
const accept = async (stack: Stack) => {
  const res = await stack.upload(await jpeg())
  expect(res.status).toBe(202)
  return (await res.json()) as { id: string; jobId: string }
}
const ADMIN_TOKEN = 'test-admin-token-0123456789'
const admin = (stack: Stack, path: string, method = 'GET') =>
  fetch(`${stack.url}/v1/admin${path}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
interface Letter {
  id: string
  queue: string
  reason: string
  problem: string | null
  jobId: string | null
  deliveries: number | null
}
/** Polls the admin list until it holds `count` dead letters; fails after `timeoutMs`. */
async function waitForDeadLetters(stack: Stack, count: number, timeoutMs = 10_000): Promise<Letter[]> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const { deadLetters } = (await (await admin(stack, '/dead-letters')).json()) as { deadLetters: Letter[] }
    if (deadLetters.length >= count || Date.now() > deadline) return deadLetters
    await Bun.sleep(50)
  }
}
const getMedia = async (stack: Stack, id: string) => (await (await stack.fetch(`/v1/media/${id}`)).json()) as MediaBody

describe('with the processor down', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ images: false })
  })
  afterAll(async () => {
    await stack.stop()
  })

  test('an upload made while the processor is down completes once it starts', async () => {
    const { id } = await accept(stack)
    expect(await rabbit.messageCount(queueNames(stack.env.SYSTEM!, 'images').request)).toBe(1)
    expect((await getMedia(stack, id)).status).toBe('queued')
    await stack.startImages()
    const media = await stack.waitForFinal(id)
    expect(media.status).toBe('completed')
    expect(media.outputs.map((o) => o.name)).toEqual(['thumb', 'preview'])
    await stack.stopImages()
  })

  test('duplicated and out-of-order updates and results leave the same final state', async () => {
    const names = queueNames(stack.env.SYSTEM!, 'images')
    const a = await accept(stack)
    const b = await accept(stack)
    const at = new Date().toISOString()
    const update = (jobId: string, status: string, stage: string, progress: number) =>
      JSON.stringify({ version: 1, jobId, status, stage, progress, at })
    const completed = (jobId: string) =>
      JSON.stringify({
        version: 1,
        jobId,
        status: 'completed',
        at,
        outputs: [
          { name: 'thumb', key: `x/${jobId}/thumb.webp`, contentType: 'image/webp', size: 10, width: 32, height: 24 },
        ],
        metadata: { format: 'jpeg', width: 300, height: 200, hasAlpha: false, pages: 1, orientation: 1 },
      })
    const failed = (jobId: string) =>
      JSON.stringify({
        version: 1,
        jobId,
        status: 'failed',
        at,
        error: { code: 'invalid_media', message: 'a late, conflicting result' },
      })

    // Job A: the tidy order. Job B: the same messages shuffled, duplicated, with a stale result and updates after the end.
    for (const [queue, body] of [
      [names.updates, update(a.jobId, 'processing', 'downloading', 0)],
      [names.updates, update(a.jobId, 'processing', 'processing', 40)],
      [names.updates, update(a.jobId, 'processing', 'uploading', 80)],
      [names.updates, update(a.jobId, 'completed', 'finished', 100)],
      [names.results, completed(a.jobId)],
    ] as const)
      await rabbit.publishRaw(queue, body)
    for (const [queue, body] of [
      [names.updates, update(b.jobId, 'processing', 'uploading', 80)],
      [names.updates, update(b.jobId, 'processing', 'processing', 40)],
      [names.results, completed(b.jobId)],
      [names.updates, update(b.jobId, 'processing', 'downloading', 0)],
      [names.results, completed(b.jobId)],
      [names.results, failed(b.jobId)],
      [names.updates, update(b.jobId, 'processing', 'processing', 90)],
      [names.updates, update(b.jobId, 'completed', 'finished', 100)],
      [names.updates, update(b.jobId, 'processing', 'uploading', 80)],
    ] as const)
      await rabbit.publishRaw(queue, body)

    // A sentinel on each queue, behind everything above: once both are applied, so is the rest.
    const c = await accept(stack)
    await rabbit.publishRaw(names.updates, update(c.jobId, 'processing', 'processing', 7))
    await rabbit.publishRaw(names.results, failed(c.jobId))
    await stack.waitForFinal(c.id)
    const deadline = Date.now() + 10_000
    while ((await getMedia(stack, c.id)).progress !== 7 && Date.now() < deadline) await Bun.sleep(20)
    expect((await getMedia(stack, c.id)).progress).toBe(7)

    const final = async (id: string) => {
      const { status, stage, progress, error, metadata, outputs } = await getMedia(stack, id)
      return { status, stage, progress, error, metadata, outputs: outputs.map(({ url, ...o }) => o) }
    }
    const stateA = await final(a.id)
    expect(stateA).toMatchObject({ status: 'completed', stage: 'finished', progress: 100, error: null })
    expect(await final(b.id)).toEqual(stateA)
  })
})

describe('with the API down', () => {
  test('results that arrive while the API is down are applied when it starts again', async () => {
    const first = await startStack({ images: false })
    const { id } = await accept(first)
    await first.stop()
    // The processor finishes while no API runs; its updates and result wait in their durable queues.
    const { SYSTEM, DATA_DIR } = first.env
    const names = queueNames(SYSTEM!, 'images')
    const alone = await startImages(readImagesConfig(first.env))
    const deadline = Date.now() + 15_000
    while ((await rabbit.messageCount(names.results)) === 0) {
      if (Date.now() > deadline) throw new Error('the processor sent no result')
      await Bun.sleep(20)
    }
    await alone.stop()
    const second = await startStack({ images: false, env: { SYSTEM: SYSTEM!, DATA_DIR: DATA_DIR! } })
    try {
      const media = await second.waitForFinal(id)
      expect(media.status).toBe('completed')
      expect(media.outputs.map((o) => o.name)).toEqual(['thumb', 'preview'])
    } finally {
      await second.stop()
    }
  })
})

describe('malformed messages', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ env: { ADMIN_TOKEN } })
  })
  afterAll(async () => {
    await stack.stop()
  })

  test('are dead-lettered on every queue, listed for operators with what is wrong, and both sides keep serving', async () => {
    const names = queueNames(stack.env.SYSTEM!, 'images')
    const junk = [
      'not json at all',
      '{"version": 2, "jobId": "x"}',
      '{"version": 1, "jobId": "not-a-uuid", "status": "completed"}',
      '\xff\xfe',
    ]
    for (const queue of [names.request, names.updates, names.results]) {
      for (const body of junk) await rabbit.publishRaw(queue, body, { messageId: `junk-${queue}` })
    }
    const letters = await waitForDeadLetters(stack, junk.length * 3)
    expect(letters).toHaveLength(junk.length * 3)
    for (const queue of [names.request, names.updates, names.results]) {
      const problems = letters.filter((l) => l.queue === queue).map((l) => l.problem)
      expect(problems).toEqual(
        expect.arrayContaining([
          expect.stringContaining('not UTF-8 JSON'),
          expect.stringContaining('unknown message version 2'),
          expect.stringContaining('must be a UUID'),
        ])
      )
      expect(problems).toHaveLength(junk.length)
    }
    for (const letter of letters) expect(letter.reason).toBe('rejected')
    // One inspected: the body as sent, the broker's headers; a malformed one cannot be re-driven, only discarded.
    const one = letters.find((l) => l.queue === names.updates && l.problem?.includes('version 2'))!
    const detail = await admin(stack, `/dead-letters/${one.id}`)
    expect(await detail.json()).toMatchObject({
      id: one.id,
      body: '{"version": 2, "jobId": "x"}',
      messageId: `junk-${names.updates}`,
    })
    expect((await admin(stack, `/dead-letters/${one.id}/redrive`, 'POST')).status).toBe(422)
    expect((await admin(stack, `/dead-letters/${one.id}`, 'DELETE')).status).toBe(204)
    expect((await admin(stack, `/dead-letters/${one.id}`)).status).toBe(404)
    expect((await fetch(`${stack.url}/v1/admin/dead-letters`)).status).toBe(401)

    const res = await stack.upload(await jpeg())
    const media = await stack.waitForFinal(((await res.json()) as { id: string }).id)
    expect(media.status).toBe('completed')
  })
})

describe('graceful shutdown', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ images: false, env: { SHUTDOWN_GRACE_SECONDS: '1' } })
  })
  afterAll(async () => {
    process.kill(Number(process.env.TEST_S3_PID), 'SIGCONT')
    await stack.stop()
  })

  test('a job still running when the grace period ends goes back to the queue as a fresh message, and completes later', async () => {
    const { id } = await accept(stack)
    const queue = queueNames(stack.env.SYSTEM!, 'images').request
    const s3 = Number(process.env.TEST_S3_PID)
    let processor: Awaited<ReturnType<typeof startImages>> | undefined
    try {
      // S3 hangs, so the job cannot finish: it is still running when the processor is told to stop.
      process.kill(s3, 'SIGSTOP')
      processor = await startImages(readImagesConfig(stack.env))
      const deadline = Date.now() + 10_000
      while ((await rabbit.messageCount(queue)) > 0 && Date.now() < deadline) await Bun.sleep(20)
      const started = Date.now()
      await processor.stop()
      processor = undefined
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_000) // it waited out the grace period
    } finally {
      process.kill(s3, 'SIGCONT')
      await processor?.stop()
    }
    // Handed back: a new message (delivered 0 times before), not a redelivery counted against the delivery limit.
    const message = await rabbit.nextMessage(queue, 5_000)
    expect(message.fields.redelivered).toBe(false)
    expect(message.properties.headers?.['x-delivery-count'] ?? 0).toBe(0)
    expect(message.properties.headers?.['x-media-attempts']).toBe(0)
    expect(await rabbit.messageCount(queue)).toBe(0) // and only that one
    // (read off the queue to look at it; put back as it was for the next processor)
    await rabbit.publishRaw(queue, message.content, { ...message.properties, headers: message.properties.headers })
    await stack.startImages()
    expect((await stack.waitForFinal(id)).status).toBe('completed')
  }, 30_000)
})
