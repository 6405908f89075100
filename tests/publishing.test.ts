/**
 * The publisher that replaces its channel when the broker refuses a message (shared/amqp/publishing.ts), on the real
 * RabbitMQ. A real refusal is made with a queue that is full (`x-max-length` 1, `x-overflow: reject-publish`): the
 * broker nacks every publish to it, as it does to a quorum queue whose leader cannot be reached. A classic queue: a
 * quorum queue applies the limit after the fact (it takes one message past it), which would blur the count here.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import amqp from 'amqplib'
import { PublishError } from '@app/shared'
import { PUBLISH_RETRY_DEADLINE_MS, refreshingPublisher } from '../shared/amqp/publishing.ts'
import type { AmqpModel } from '../shared/amqp/types.ts'
import { testEnv } from './helpers/env.ts'
import { useInfra } from './helpers/infra.ts'
import { connectRabbit } from './helpers/rabbit.ts'

await useInfra()

const env = testEnv()
const full = `${env.SYSTEM}.media.test-full`
const body = new TextEncoder().encode('{}')
let connection: amqp.ChannelModel
let rabbit: Awaited<ReturnType<typeof connectRabbit>>
const warnings: string[] = []
const context = { log: { warn: (_: unknown, message: string) => warnings.push(message) }, failed: () => {} }

/** The connection as the publisher sees it, counting the channels it opens. */
function counted() {
  const opened = { channels: 0 }
  const model = {
    createConfirmChannel: () => {
      opened.channels++
      return connection.createConfirmChannel()
    },
    close: () => connection.close(),
  } as unknown as AmqpModel
  return { model, opened }
}

beforeAll(async () => {
  connection = await amqp.connect(env.RABBITMQ_URL!)
  rabbit = await connectRabbit()
  const setup = await connection.createChannel()
  await setup.assertQueue(full, {
    durable: true,
    arguments: { 'x-queue-type': 'classic', 'x-max-length': 1, 'x-overflow': 'reject-publish' },
  })
  await setup.close()
  await rabbit.publishRaw(full, '{"first":true}')
})
afterAll(async () => {
  const cleanup = await connection.createChannel()
  await cleanup.deleteQueue(full)
  await connection.close()
  await rabbit.close()
})

test('a refused publish is tried again on fresh channels until its deadline, then fails as refused', async () => {
  const { model, opened } = counted()
  const publisher = refreshingPublisher({ model, context: context as never, deadlineMs: 1500 })
  const started = Date.now()
  const error = await publisher.publish(full, body, { correlationId: 'j', type: 'job.test' }).catch((e) => e)
  expect(error).toBeInstanceOf(PublishError)
  expect((error as PublishError).reason).toBe('refused')
  // 100, 200, 400, 800 ms of backoff fit in 1.5 s: five tries, each on a channel of its own.
  expect(Date.now() - started).toBeGreaterThanOrEqual(700)
  expect(Date.now() - started).toBeLessThan(1500 + 1000)
  expect(opened.channels).toBeGreaterThanOrEqual(4)
  expect(warnings.some((w) => w.includes('trying again on a fresh channel'))).toBe(true)
  await publisher.close()
})

test('a publish refused while the queue is full goes through once it has room, exactly once', async () => {
  const { model, opened } = counted()
  const publisher = refreshingPublisher({ model, context: context as never })
  const messageId = crypto.randomUUID()
  const publishing = publisher.publish(full, body, { correlationId: 'j', type: 'job.test', messageId })
  // Room is made after the first refusals: the message that filled the queue is taken off it.
  await Bun.sleep(400)
  expect((await rabbit.nextMessage(full)).content.toString()).toBe('{"first":true}')
  await publishing
  expect(opened.channels).toBeGreaterThan(1)
  const arrived = await rabbit.nextMessage(full)
  expect(arrived.properties.messageId).toBe(messageId)
  expect(await rabbit.messageCount(full)).toBe(0)
  await rabbit.publishRaw(full, '{"first":true}')
  await publisher.close()
})

test('an unroutable message fails at once, on the one channel; a closed publisher refuses', async () => {
  const { model, opened } = counted()
  const publisher = refreshingPublisher({ model, context: context as never })
  const error = await publisher
    .publish(`${env.SYSTEM}.media.no-such-queue`, body, { correlationId: 'j', type: 'job.test' })
    .catch((e) => e)
  expect((error as PublishError).reason).toBe('unroutable')
  expect(opened.channels).toBe(1)
  await publisher.close()
  const closed = await publisher.publish(full, body, { correlationId: 'j', type: 'job.test' }).catch((e) => e)
  expect((closed as PublishError).reason).toBe('closed')
  expect(PUBLISH_RETRY_DEADLINE_MS).toBeGreaterThanOrEqual(10_000)
})
