/**
 * Stalled jobs: a job a processor started and then went silent on (no heartbeat) is re-driven, then failed as
 * `stalled`; a late result from the silent processor changes nothing. The "processor" here is the test itself,
 * consuming the request queue, so it can start a job and then say nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import amqp from 'amqplib'
import sharp from 'sharp'
import {
  ImageRequestSchema,
  ImageResultSchema,
  JobUpdateSchema,
  decodeMessage,
  encodeMessage,
  queueNames,
} from '@app/shared'
import { RABBITMQ_URL } from './helpers/env.ts'
import { connectRabbit } from './helpers/rabbit.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

describe('a processor that goes silent', () => {
  let stack: Stack
  let connection: amqp.ChannelModel
  let channel: amqp.Channel
  let rabbit: Awaited<ReturnType<typeof connectRabbit>>
  const deliveries: { jobId: string; at: number }[] = []
  let delivered: () => void = () => {}
  let heartbeatJob = ''
  let heartbeatJobId = ''

  beforeAll(async () => {
    stack = await startStack({ images: false, env: { STALL_SECONDS: '1', MAX_REDRIVES: '1' } })
    rabbit = await connectRabbit()
    // A consumer that takes requests and never settles them: to the API, a processor that hung.
    connection = await amqp.connect(RABBITMQ_URL)
    channel = await connection.createChannel()
    await channel.consume(queueNames(stack.env.SYSTEM!, 'images').request, (message) => {
      const decoded = message && decodeMessage(ImageRequestSchema, message.content)
      if (decoded?.ok) deliveries.push({ jobId: decoded.value.jobId, at: Date.now() })
      delivered()
    })
  })
  afterAll(async () => {
    await connection.close()
    await rabbit.close()
    await stack.stop()
  })

  const nextDelivery = (count: number, timeoutMs: number) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`only ${deliveries.length} deliveries after ${timeoutMs} ms`)),
        timeoutMs
      )
      delivered = () => {
        if (deliveries.length < count) return
        clearTimeout(timer)
        resolve()
      }
      delivered()
    })

  test('is re-driven once it stays silent past STALL_SECONDS, then failed as stalled; a late result changes nothing', async () => {
    const res = await stack.upload(
      await sharp({ create: { width: 64, height: 48, channels: 3, background: '#08f' } })
        .png()
        .toBuffer()
    )
    expect(res.status).toBe(202)
    const { id, jobId } = (await res.json()) as { id: string; jobId: string }
    await nextDelivery(1, 10_000)
    const names = queueNames(stack.env.SYSTEM!, 'images')
    const update = (progress: number) =>
      encodeMessage(JobUpdateSchema, {
        version: 1,
        jobId,
        status: 'processing',
        stage: 'processing',
        progress,
        at: new Date().toISOString(),
      })
    await rabbit.publishRaw(names.updates, update(10))

    // Silent from here: the sweep sends the request again (MAX_REDRIVES=1), then gives up.
    await nextDelivery(2, 10_000)
    expect(deliveries.map((d) => d.jobId)).toEqual([jobId, jobId])
    await rabbit.publishRaw(names.updates, update(20)) // the re-driven copy starts, then also goes silent
    const media = await stack.waitForFinal(id, 15_000)
    expect(media.status).toBe('failed')
    expect(media.error).toEqual({
      code: 'stalled',
      class: 'crash',
      message: expect.stringContaining('no processor reported on the job'),
    })

    // The first processor wakes up and reports success: the job stays failed (the first final state wins).
    const late = encodeMessage(ImageResultSchema, {
      version: 1,
      jobId,
      status: 'completed',
      outputs: [],
      metadata: { format: 'png', width: 64, height: 48, hasAlpha: false, pages: 1, orientation: 1 },
      at: new Date().toISOString(),
    })
    await rabbit.publishRaw(names.results, late)
    await rabbit.publishRaw(names.updates, update(90))
    const health = (await (await fetch(`${stack.url}/health`)).json()) as {
      jobs: Record<string, number>
      stalled: number
    }
    expect(health.jobs.failed).toBe(1)
    // The late messages are consumed (the queues drain) and the job is as it was.
    const deadline = Date.now() + 5_000
    while (
      (await rabbit.messageCount(names.results)) + (await rabbit.messageCount(names.updates)) > 0 &&
      Date.now() < deadline
    )
      await Bun.sleep(50)
    const after = (await (await stack.fetch(`/v1/media/${id}`)).json()) as MediaBody
    expect(after.status).toBe('failed')
    expect(after.error?.code).toBe('stalled')
  }, 40_000)

  test('a job whose processor keeps sending heartbeats is never stalled, however long it runs', async () => {
    const before = deliveries.length
    const res = await stack.upload(
      await sharp({ create: { width: 32, height: 32, channels: 3, background: '#f80' } })
        .png()
        .toBuffer()
    )
    const { id, jobId } = (await res.json()) as { id: string; jobId: string }
    await nextDelivery(before + 1, 10_000)
    const names = queueNames(stack.env.SYSTEM!, 'images')
    // Heartbeats every 300 ms for 4 s: four times the stall time, without progress.
    for (let i = 0; i < 13; i++) {
      await rabbit.publishRaw(
        names.updates,
        encodeMessage(JobUpdateSchema, {
          version: 1,
          jobId,
          status: 'processing',
          stage: 'processing',
          progress: 50,
          at: new Date().toISOString(),
        })
      )
      await Bun.sleep(300)
    }
    expect(deliveries.length).toBe(before + 1) // never re-driven
    const media = (await (await stack.fetch(`/v1/media/${id}`)).json()) as MediaBody
    expect(media.status).toBe('processing')
    heartbeatJob = id
    heartbeatJobId = jobId
  }, 20_000)

  test('with no processor running, a silent job is reported in /health but waits instead of being re-driven', async () => {
    // The last processor of the type goes away (its held requests go back to the queue).
    await channel.close()
    const names = queueNames(stack.env.SYSTEM!, 'images')
    const gone = Date.now() + 10_000
    while ((await rabbit.consumerCount(names.request)) > 0 && Date.now() < gone) await Bun.sleep(100)
    expect(await rabbit.consumerCount(names.request)).toBe(0)
    // One last heartbeat, then silence.
    const heartbeat = {
      version: 1,
      jobId: heartbeatJobId,
      status: 'processing',
      stage: 'processing',
      progress: 50,
      at: new Date().toISOString(),
    } as const
    await rabbit.publishRaw(names.updates, encodeMessage(JobUpdateSchema, heartbeat))
    const waiting = await rabbit.messageCount(names.request)
    // Silent for three stall periods (with a sweep every second) while nothing consumes the queue.
    const deadline = Date.now() + 3_000
    let health: { stalled: number }
    do {
      await Bun.sleep(250)
      health = (await (await fetch(`${stack.url}/health`)).json()) as { stalled: number }
    } while (Date.now() < deadline)
    expect(health.stalled).toBe(1)
    const media = (await (await stack.fetch(`/v1/media/${heartbeatJob}`)).json()) as MediaBody
    expect(media.status).toBe('processing')
    expect(await rabbit.messageCount(names.request)).toBe(waiting) // nothing re-driven
  }, 20_000)
})
