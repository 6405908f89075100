/** Direct broker access for tests: raw publishes, reading queues, and removing a run's namespaces. */
import amqp from 'amqplib'
import { MEDIA_TYPES, cancelExchange, deadLetterExchange, eventsExchange, queueNames } from '@app/shared'

const namespaces = new Set<string>()
const url = () => process.env.TEST_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672'

export function trackNamespace(system: string): void {
  namespaces.add(system)
}

/** Deletes every queue and exchange of the namespaces this run created. */
export async function deleteNamespaces(): Promise<void> {
  const connection = await amqp.connect(url())
  for (const system of namespaces) {
    for (const type of MEDIA_TYPES) {
      for (const queue of Object.values(queueNames(system, type))) {
        // deleteQueue on a missing queue is fine; a fresh channel per call keeps one error from poisoning the rest.
        const channel = await connection.createChannel()
        channel.on('error', () => {})
        await channel.deleteQueue(queue).catch(() => {})
        await channel.close().catch(() => {})
      }
    }
    for (const exchange of [deadLetterExchange(system), cancelExchange(system), eventsExchange(system)]) {
      const channel = await connection.createChannel()
      channel.on('error', () => {})
      await channel.deleteExchange(exchange).catch(() => {})
      await channel.close().catch(() => {})
    }
  }
  namespaces.clear()
  await connection.close()
}

/** A plain connection for tests that publish raw bytes or read queues. */
export async function connectRabbit() {
  const connection = await amqp.connect(url())
  const channel = await connection.createConfirmChannel()
  return {
    /** Publishes raw bytes to a queue (as a misbehaving or foreign producer would) and waits for the confirm. */
    async publishRaw(queue: string, body: Uint8Array | string, options: amqp.Options.Publish = {}) {
      channel.sendToQueue(queue, Buffer.from(body), { persistent: true, contentType: 'application/json', ...options })
      await channel.waitForConfirms()
    },
    /** Waits for the next message on a queue, up to `timeoutMs`, and acks it. */
    async nextMessage(queue: string, timeoutMs = 10_000): Promise<amqp.GetMessage> {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const message = await channel.get(queue, { noAck: true })
        if (message) return message
        if (Date.now() > deadline) throw new Error(`no message arrived on ${queue} within ${timeoutMs} ms`)
        await Bun.sleep(25)
      }
    },
    async messageCount(queue: string): Promise<number> {
      return (await channel.checkQueue(queue)).messageCount
    },
    async consumerCount(queue: string): Promise<number> {
      return (await channel.checkQueue(queue)).consumerCount
    },
    async close() {
      await connection.close()
    },
  }
}
