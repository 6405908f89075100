/** Direct broker access for tests: raw publishes and reading queues. */
import amqp from 'amqplib'
import { RABBITMQ_URL, startInfra } from './infra.ts'

/** A plain connection for tests that publish raw bytes or read queues. */
export async function connectRabbit() {
  await startInfra() // a clear error when RabbitMQ is down, and the S3 server the test will want next
  const connection = await amqp.connect(RABBITMQ_URL)
  const channel = await connection.createConfirmChannel()
  return {
    /** Publishes raw bytes to a queue (as a misbehaving or foreign producer would) and waits for the confirm. */
    async publishRaw(queue: string, body: Uint8Array | string, options: amqp.Options.Publish = {}) {
      channel.sendToQueue(queue, Buffer.from(body), { persistent: true, contentType: 'application/json', ...options })
      await channel.waitForConfirms()
    },
    /** Publishes to an exchange (a fanout: the routing key is ignored) and waits for the confirm. */
    async publishToExchange(exchange: string, body: Uint8Array | string) {
      channel.publish(exchange, '', Buffer.from(body), { contentType: 'application/json' })
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
