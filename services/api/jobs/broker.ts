/**
 * The API's side of RabbitMQ: publishes requests with confirms and consumes every type's updates and results.
 * Connecting (`connectBroker`) and consuming (`broker.consume`) are separate steps, so the handlers can be built
 * from the connected broker. Connects through `@app/shared/amqp` (amqplib's built-in recovery); channels, topology
 * and (once given) consumers are re-created after every reconnect.
 */
import amqp from 'amqplib'
import type * as v from 'valibot'
import {
  CancelSchema,
  MediaChangedSchema,
  cancelExchange,
  encodeMessage,
  eventsExchange,
  JobUpdateSchema,
  MEDIA_TYPES,
  MESSAGES,
  decodeMessage,
  declareTopology,
  parseTraceparent,
  queueNames,
  topology,
  TRACEPARENT,
  type JobUpdate,
  type MediaType,
  type Publisher,
  type ResultOf,
  type TraceContext,
} from '@app/shared'
import {
  connectRecovering,
  consumeOrReconnect,
  refreshingPublisher,
  settle,
  watchChannel,
  type AmqpChannel,
  type AmqpContext,
  type AmqpMessage,
  type AmqpModel,
} from '@app/shared/amqp'
import type { Logger } from '@app/shared/ops'

/** A message as it arrived on a `.dead` queue, still undecoded: it may be anything. */
export interface RawDeadLetter {
  body: Uint8Array
  headers: Record<string, unknown>
  messageId: string | null
  correlationId: string | null
}

export interface Handlers {
  /** `trace`: the processor's span, from the message's `traceparent` header (null when it sent none). */
  onUpdate(type: MediaType, update: JobUpdate, trace: TraceContext | null): Promise<void>
  onResult(type: MediaType, result: ResultOf<MediaType>, trace: TraceContext | null): Promise<void>
  /** A message the broker dead-lettered (a request it gave up on, or anything malformed). */
  onDeadLetter(type: MediaType, letter: RawDeadLetter): Promise<void>
  /** A media changed on another API instance (this instance's own broadcasts are not heard back). */
  onMediaChanged(change: { mediaId: string; tenant?: string; seq?: number }): void
}

/** One queue as the broker counts it: messages ready (not those delivered and unacked), and consumers. */
export interface QueueStats {
  type: MediaType
  queue: 'request' | 'bulk' | 'updates' | 'results' | 'dead'
  messages: number
  consumers: number
}

export interface Broker {
  /** Resolves when the broker confirmed the message; rejects when it refuses, or stays disconnected for 2 s. */
  publish(
    queue: string,
    body: Uint8Array,
    ids: { correlationId: string; type: string; messageId: string; priority?: number; headers?: Record<string, string> }
  ): Promise<void>
  /** Tells every processor to stop the job (processors that miss it find the job's cancel marker). */
  broadcastCancel(jobId: string): Promise<void>
  /** Tells the other API instances that a media changed. Best effort: SSE clients also re-read on a heartbeat. */
  broadcastChange(change: { mediaId: string; tenant: string; seq: number }): void
  /**
   * Starts consuming updates, results, dead letters and the other instances' change broadcasts: now when connected,
   * and again after every reconnect. Rejects when the consumers cannot be started on the connection of the moment.
   */
  consume(handlers: Handlers): Promise<void>
  isConnected(): boolean
  /** Why the broker refuses publishes right now (a memory or disk alarm), or null. */
  blocked(): string | null
  /** How many processors consume the type's request queue (0 while none runs, or when disconnected). */
  consumers(type: MediaType): Promise<number>
  /** Every queue of every type, as the broker counts it now; rejects when disconnected. */
  queueStats(): Promise<QueueStats[]>
  close(): Promise<void>
}

export interface BrokerOptions {
  /** One broker, or the nodes of a cluster (RABBITMQ_URL's list): each reconnect moves to the next. */
  url: string | readonly string[]
  system: string
  publishTimeoutMs: number
  /** This API instance, named in its broadcasts so that it can ignore them when the fanout brings them back. */
  instanceId: string
  log: Logger
  /** Told of each failure, by operation (publish, connection, channel, consume, settle): the error metrics. */
  onError?: (operation: string) => void
}

/** How long a publish waits for a lost connection to come back before it fails (then the upload gets 503). */
const RECONNECT_WAIT_MS = 2_000
/** How many updates and results the API applies at once, per queue. */
const CONSUMER_PREFETCH = 32

/**
 * How long a publish the broker refuses is tried again on fresh channels: long enough for a quorum queue's leader
 * record to move after its node is lost (a second or two), short enough for an upload waiting on it.
 */
const API_PUBLISH_RETRY_MS = 2500

/** Connects (retrying twice), declares the topology and readies the publisher; consuming waits for `consume`. */
export async function connectBroker(options: BrokerOptions): Promise<Broker> {
  const { log } = options
  const failed = options.onError ?? (() => {})
  let publisher: Publisher | undefined
  let inspector: AmqpChannel | undefined
  let connected = false
  let closing = false
  const context: AmqpContext = { log, failed, closing: () => closing }
  /** Given by `consume`; from then on every (re)connection starts the consumers. */
  let handlers: Handlers | undefined
  /** The connection the last setup ran on, and the one the consumers were last started on. */
  let current: AmqpModel | undefined
  let consumingOn: AmqpModel | undefined
  /** Messages being applied, so that closing lets them finish (and ack) first. */
  const inFlight = new Set<Promise<void>>()
  let stopConsuming = async () => {}
  let closeConsuming = async () => {}
  /** Publishes waiting for a reconnect (a dropped connection usually comes back within a second). */
  const waiters: (() => void)[] = []
  const reconnected = (timeoutMs: number) =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(connected), timeoutMs)
      waiters.push(() => (clearTimeout(timer), resolve(true)))
    })

  const watch = <C extends AmqpChannel>(model: AmqpModel, channel: C, name: string): C =>
    watchChannel(model, channel, context, { name })

  /** Starts every consumer on `model`, once per connection (setup and `consume` may both ask). */
  async function startConsuming(model: AmqpModel, handlers: Handlers): Promise<void> {
    if (consumingOn === model) return
    consumingOn = model
    // Each instance hears the others' changes through a queue of its own, gone when the instance is.
    const events = watch(model, await model.createChannel(), 'events')
    const { queue } = await events.assertQueue('', { exclusive: true, autoDelete: true })
    await events.bindQueue(queue, eventsExchange(options.system), '')
    await events.consume(
      queue,
      (message) => {
        if (!message) return
        const decoded = decodeMessage(MediaChangedSchema, message.content)
        // This instance told its own watchers when it made the change: only the others' broadcasts are news.
        if (decoded.ok && decoded.value.origin !== options.instanceId) {
          const { mediaId, tenant, seq } = decoded.value
          handlers.onMediaChanged({ mediaId, tenant, seq })
        }
      },
      { noAck: true }
    )

    const consuming = watch(model, await model.createChannel(), 'consuming')
    await consuming.prefetch(CONSUMER_PREFETCH)
    const tags: string[] = []
    /** Consumes a queue; a consumer the broker cancels (its queue deleted) forces a reconnect that re-declares it. */
    const consume = async <T>(
      queue: string,
      decode: Decode<T>,
      apply: (value: T, message: AmqpMessage) => Promise<void>
    ) => {
      const { consumerTag } = await consumeOrReconnect(model, consuming, queue, context, (message) => {
        const applying = handle(consuming, message, queue, decode, (value) => apply(value, message), context)
        inFlight.add(applying)
        void applying.finally(() => inFlight.delete(applying))
      })
      tags.push(consumerTag)
    }
    for (const type of MEDIA_TYPES) {
      const names = queueNames(options.system, type)
      await consume(
        names.updates,
        (bytes) => decodeMessage(JobUpdateSchema, bytes),
        (u, m) => handlers.onUpdate(type, u, traceOf(m))
      )
      await consume(
        names.results,
        (bytes) => decodeMessage(MESSAGES[type].result as v.GenericSchema<unknown, ResultOf<MediaType>>, bytes),
        (r, m) => handlers.onResult(type, r, traceOf(m))
      )
      // Dead letters are taken off the broker into the store, where operators list, inspect and re-drive them.
      await consume(
        names.dead,
        (bytes) => ({ ok: true, value: bytes }),
        (body, message) =>
          handlers.onDeadLetter(type, {
            body,
            headers: message.properties.headers ?? {},
            messageId: message.properties.messageId ?? null,
            correlationId: message.properties.correlationId ?? null,
          })
      )
    }
    stopConsuming = () => Promise.all(tags.map((tag) => consuming.cancel(tag).catch(() => {}))).then(() => {})
    // Closing the channel before the connection lets its last acks reach the broker (a connection closed at once
    // can overtake them, and the broker then redelivers what was applied).
    closeConsuming = () => consuming.close().catch(() => {})
  }

  const urls = typeof options.url === 'string' ? [options.url] : options.url
  const { connection, blocked } = await connectRecovering(
    {
      connect: amqp.connect,
      urls,
      whileBlocked: 'uploads get 503 until it recovers',
      async setup(model) {
        const declaring = watch(model, await model.createConfirmChannel(), 'declaring')
        for (const type of MEDIA_TYPES) await declareTopology(declaring, topology(options.system, type))
        await declaring.assertExchange(eventsExchange(options.system), 'fanout', { durable: true, autoDelete: false })
        // Its own channel, replaced when the broker refuses a message (a quorum queue's leader lost, on RabbitMQ 3.10).
        // A client waits on the publish of its upload: tried again for API_PUBLISH_RETRY_MS only, then a 503 (a full
        // queue is refused the same way, and should answer soon); the outbox relay sends what stays unsent later.
        publisher = refreshingPublisher({
          model,
          context,
          timeoutMs: options.publishTimeoutMs,
          deadlineMs: API_PUBLISH_RETRY_MS,
        })
        inspector = watch(model, await model.createChannel(), 'inspecting')
        // No await between these two lines: a `consume` called meanwhile either sees this connection or left its
        // handlers for this setup to start.
        current = model
        if (handlers) await startConsuming(model, handlers)
        connected = true
        for (const resolve of waiters.splice(0)) resolve()
      },
    },
    context
  )
  // The layer logs and counts the loss; publishes wait for the setup that follows, and consumers restart there.
  connection.on('disconnect', () => {
    connected = false
    current = undefined
  })

  return {
    async publish(queue, body, ids) {
      // Disconnected: a dropped connection usually comes back within a second, so wait a little before refusing.
      if (!connected && !closing && !(await reconnected(RECONNECT_WAIT_MS))) {
        throw new Error(`not connected to RabbitMQ (still reconnecting after ${RECONNECT_WAIT_MS / 1000} s)`)
      }
      if (!publisher || closing) throw new Error('not connected to RabbitMQ')
      // A blocked connection holds publishes without error until the alarm clears: refuse at once instead.
      const blockedBy = blocked()
      if (blockedBy) throw new Error(`RabbitMQ refuses new messages (${blockedBy})`)
      return publisher.publish(queue, body, ids).catch((error) => {
        failed('publish')
        throw error
      })
    },
    broadcastCancel(jobId) {
      if (!connected || !publisher) return Promise.reject(new Error('not connected to RabbitMQ'))
      const body = encodeMessage(CancelSchema, { version: 1, jobId, at: new Date().toISOString() })
      return publisher.broadcast(cancelExchange(options.system), body, { correlationId: jobId, type: 'job.cancel' })
    },
    broadcastChange({ mediaId, tenant, seq }) {
      if (!connected || !publisher) return
      const body = encodeMessage(MediaChangedSchema, { version: 1, mediaId, tenant, seq, origin: options.instanceId })
      publisher
        .broadcast(eventsExchange(options.system), body, { correlationId: mediaId, type: 'media.changed' })
        .catch(() => {})
    },
    async consume(given) {
      if (handlers) throw new Error('the broker already consumes')
      if (closing) throw new Error('the broker is closed')
      handlers = given
      const model = current
      if (!model) return // disconnected: the next setup starts them
      try {
        await startConsuming(model, given)
      } catch (error) {
        // Whatever did start goes with the connection; the reconnect that follows starts every consumer afresh.
        consumingOn = undefined
        if (!closing) model.close().catch(() => {})
        throw new Error(`could not start consuming: ${(error as Error).message}`, { cause: error })
      }
    },
    isConnected: () => connected,
    blocked,
    async consumers(type) {
      if (!connected || !inspector) return 0
      return (await inspector.checkQueue(queueNames(options.system, type).request)).consumerCount
    },
    async queueStats() {
      if (!connected || !inspector) throw new Error('not connected to RabbitMQ')
      const stats: QueueStats[] = []
      for (const type of MEDIA_TYPES) {
        const names = queueNames(options.system, type)
        for (const queue of ['request', 'bulk', 'updates', 'results', 'dead'] as const) {
          const { messageCount, consumerCount } = await inspector.checkQueue(names[queue])
          stats.push({ type, queue, messages: messageCount, consumers: consumerCount })
        }
      }
      return stats
    },
    /** Stops consuming, lets the messages being applied finish (5 s at most), and disconnects. */
    async close() {
      closing = true
      await stopConsuming()
      await Promise.race([Promise.allSettled(inFlight), new Promise((resolve) => setTimeout(resolve, 5_000))])
      await closeConsuming()
      connected = false
      await connection.close().catch(() => {})
    },
  }
}

type Decode<T> = (bytes: Uint8Array) => { ok: true; value: T } | { ok: false; reason: string }

/** The sender's trace, from a message's `traceparent` header. */
const traceOf = (message: AmqpMessage): TraceContext | null =>
  parseTraceparent(message.properties.headers?.[TRACEPARENT])

/**
 * Applies one message and acks it once applied. A malformed message is dead-lettered at once (requeueing it would
 * loop); a failure to apply (the database) requeues it, and the queue's delivery limit bounds the retries.
 */
async function handle<T>(
  channel: AmqpChannel,
  message: AmqpMessage,
  queue: string,
  decode: Decode<T>,
  apply: (value: T) => Promise<void>,
  context: AmqpContext
): Promise<void> {
  const { log } = context
  const about = { queue, messageId: message.properties.messageId, jobId: message.properties.correlationId }
  const decoded = decode(message.content)
  if (!decoded.ok) {
    log.error(
      { ...about, reason: decoded.reason },
      `dead-lettering a malformed message from ${queue}: ${decoded.reason}`
    )
    return settle(() => channel.nack(message, false, false), context, about)
  }
  try {
    await apply(decoded.value)
    settle(() => channel.ack(message), context, about)
  } catch (error) {
    log.error(
      { ...about, err: error },
      `could not apply a message from ${queue}, requeueing: ${(error as Error).message}`
    )
    // A second's pause: `.dead` queues have no delivery limit, and the store may need a moment to come back.
    setTimeout(() => settle(() => channel.nack(message, false, true), context, about), 1_000)
  }
}
