/**
 * The API's side of RabbitMQ: publishes requests with confirms and consumes both types' updates and results.
 * Uses amqplib's built-in recovery; channels, topology and consumers are re-created after every reconnect.
 */
import amqp, { type ChannelModel, type ConsumeMessage } from 'amqplib'
import {
  CancelSchema,
  ImageResultSchema,
  MediaChangedSchema,
  cancelExchange,
  encodeMessage,
  eventsExchange,
  JobUpdateSchema,
  MEDIA_TYPES,
  VideoResultSchema,
  createPublisher,
  decodeMessage,
  declareTopology,
  queueNames,
  topology,
  type ImageResult,
  type JobUpdate,
  type MediaType,
  type Publisher,
  type VideoResult,
} from '@app/shared'

export interface Handlers {
  onUpdate(type: MediaType, update: JobUpdate): Promise<void>
  onResult(type: MediaType, result: ImageResult | VideoResult): Promise<void>
  /** A media changed, applied here or by another API instance. */
  onMediaChanged(mediaId: string): void
}

export interface Broker {
  /** Resolves when the broker confirmed the message; rejects at once when disconnected. */
  publish(queue: string, body: Uint8Array, ids: { correlationId: string; type: string; messageId: string }): Promise<void>
  /** Tells every processor to stop the job (processors that miss it find the job's cancel marker). */
  broadcastCancel(jobId: string): Promise<void>
  /** Tells every API instance (this one too) that a media changed. Best effort: SSE clients also get a final read. */
  announce(mediaId: string): void
  isConnected(): boolean
  close(): Promise<void>
}

/** How many updates and results the API applies at once, per queue. */
const CONSUMER_PREFETCH = 32
const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

export async function connectBroker(options: { url: string; system: string; publishTimeoutMs: number }, handlers: Handlers): Promise<Broker> {
  let publisher: Publisher | undefined
  let connected = false

  const connection = await amqp.connect(options.url, {
    recovery: {
      initialMaxRetries: 2,
      maxDelay: 5_000,
      async setup(model: ChannelModel) {
        const publishing = await model.createConfirmChannel()
        publishing.on('error', (error) => console.error(`api: publishing channel error: ${error.message}`))
        for (const type of MEDIA_TYPES) await declareTopology(publishing, topology(options.system, type))
        await publishing.assertExchange(eventsExchange(options.system), 'fanout', { durable: true, autoDelete: false })
        publisher = createPublisher(publishing, toBuffer, options.publishTimeoutMs)

        // Each instance hears every change through a queue of its own, gone when the instance is.
        const events = await model.createChannel()
        events.on('error', (error) => console.error(`api: events channel error: ${error.message}`))
        const { queue } = await events.assertQueue('', { exclusive: true, autoDelete: true })
        await events.bindQueue(queue, eventsExchange(options.system), '')
        await events.consume(
          queue,
          (message) => {
            if (!message) return
            const decoded = decodeMessage(MediaChangedSchema, message.content)
            if (decoded.ok) handlers.onMediaChanged(decoded.value.mediaId)
          },
          { noAck: true }
        )

        const consuming = await model.createChannel()
        consuming.on('error', (error) => console.error(`api: consuming channel error: ${error.message}`))
        await consuming.prefetch(CONSUMER_PREFETCH)
        for (const type of MEDIA_TYPES) {
          const names = queueNames(options.system, type)
          const resultSchema = type === 'images' ? ImageResultSchema : VideoResultSchema
          await consuming.consume(names.updates, (message) =>
            handle(consuming, message, names.updates, (bytes) => decodeMessage(JobUpdateSchema, bytes), (u) => handlers.onUpdate(type, u))
          )
          await consuming.consume(names.results, (message) =>
            handle(consuming, message, names.results, (bytes) => decodeMessage(resultSchema, bytes), (r) => handlers.onResult(type, r))
          )
        }
        connected = true
      },
    },
  })
  connection.on('disconnect', (error) => {
    connected = false
    console.warn(`api: lost the broker (${error.message}); reconnecting`)
  })
  connection.on('reconnect-failed', (error) => console.error(`api: gave up reconnecting to the broker: ${error.message}`))
  connection.on('error', (error) => console.error(`api: broker error: ${error.message}`))

  return {
    publish(queue, body, ids) {
      if (!connected || !publisher) return Promise.reject(new Error('not connected to RabbitMQ'))
      return publisher.publish(queue, body, ids)
    },
    broadcastCancel(jobId) {
      if (!connected || !publisher) return Promise.reject(new Error('not connected to RabbitMQ'))
      const body = encodeMessage(CancelSchema, { version: 1, jobId, at: new Date().toISOString() })
      return publisher.broadcast(cancelExchange(options.system), body, { correlationId: jobId, type: 'job.cancel' })
    },
    announce(mediaId) {
      if (!connected || !publisher) return
      const body = encodeMessage(MediaChangedSchema, { version: 1, mediaId })
      publisher.broadcast(eventsExchange(options.system), body, { correlationId: mediaId, type: 'media.changed' }).catch(() => {})
    },
    isConnected: () => connected,
    async close() {
      connected = false
      await connection.close().catch(() => {})
    },
  }
}

/**
 * Applies one message and acks it once applied. A malformed message is dead-lettered at once (requeueing it would
 * loop); a failure to apply (the database) requeues it, and the queue's delivery limit bounds the retries.
 */
function handle<T>(
  channel: amqp.Channel,
  message: ConsumeMessage | null,
  queue: string,
  decode: (bytes: Uint8Array) => { ok: true; value: T } | { ok: false; reason: string },
  apply: (value: T) => Promise<void>
): void {
  if (message === null) return void console.error(`api: the broker cancelled the consumer of ${queue}`)
  const settle = (action: () => void) => {
    try {
      action()
    } catch (error) {
      console.warn(`api: could not settle a delivery from ${queue} (channel closed; it will be redelivered)`)
    }
  }
  const decoded = decode(message.content)
  if (!decoded.ok) {
    console.error(`api: dead-lettering a malformed message from ${queue} (${message.properties.messageId ?? 'no id'}): ${decoded.reason}`)
    return settle(() => channel.nack(message, false, false))
  }
  apply(decoded.value).then(
    () => settle(() => channel.ack(message)),
    (error) => {
      console.error(`api: could not apply a message from ${queue}, requeueing: ${(error as Error).message}`)
      settle(() => channel.nack(message, false, true))
    }
  )
}
