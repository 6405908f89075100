/**
 * Publishing that outlives a refused message: a confirm channel of its own, replaced when the broker refuses a
 * publish, and the publish tried again on the new one with backoff until a deadline.
 *
 * Why: on RabbitMQ 3.10 a channel whose first publish to a quorum queue comes while the node the queue's record names
 * as leader is down has that publish, and every later one to that queue, refused (basic.nack) until the node is back;
 * a channel opened once the record names the new leader (a second or two) publishes at once (infra/CLUSTER.md). A
 * refused result used to fail its job after the delivery limit. AMQP does not tell these refusals apart from
 * `x-overflow: reject-publish` (a full queue): both are retried the same way, and a queue still full at the deadline
 * fails the publish as before. An unroutable message (no such queue) is not retried: another channel will not find
 * the queue either. Nor is a confirm that never came: the message may have arrived, and the caller decides.
 *
 * The channel is not the consumers' and is not watched like theirs: replacing it, or losing it to a channel error,
 * touches no delivery and closes no connection.
 */
import { Buffer } from 'node:buffer'
import { PublishError, createPublisher, type Publisher } from '../publisher.ts'
import type { AmqpConfirmChannel, AmqpContext, AmqpModel } from './types.ts'

/** How long a refused publish is tried again on fresh channels before it fails (a leader's failover takes seconds). */
export const PUBLISH_RETRY_DEADLINE_MS = 30_000
/** The wait before the n-th retry (from 0): 100 ms doubling, at most 2 s. */
export const publishRetryDelayMs = (retry: number) => Math.min(2000, 100 * 2 ** retry)

export interface RefreshingPublisher extends Publisher {
  /** Closes the current channel; publishes after this reject. */
  close(): Promise<void>
}

/** A publisher on `model` (one connection; a reconnect makes a new one) that replaces its channel when refused. */
export function refreshingPublisher(options: {
  model: AmqpModel
  context: Pick<AmqpContext, 'log' | 'failed'>
  timeoutMs?: number
  deadlineMs?: number
}): RefreshingPublisher {
  const { model, context } = options
  const deadlineMs = options.deadlineMs ?? PUBLISH_RETRY_DEADLINE_MS
  let current: Promise<{ channel: AmqpConfirmChannel; publisher: Publisher }> | undefined
  let closed = false

  function open() {
    if (current) return current
    const opening = model.createConfirmChannel().then((channel) => {
      channel.on('error', (error) => {
        context.failed('channel')
        context.log.warn({ err: error }, `publishing channel error: ${error.message}`)
      })
      // Gone (a channel error, the connection lost): the next publish opens another.
      channel.on('close', () => {
        if (current === opening) current = undefined
      })
      const publisher = createPublisher(
        channel,
        (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        options.timeoutMs
      )
      return { channel, publisher }
    })
    current = opening
    // A channel that could not be opened is not kept: the next publish tries again.
    opening.catch(() => {
      if (current === opening) current = undefined
    })
    return opening
  }

  /** Drops `channel` (if still the current one) for a fresh one at the next publish, and closes it. */
  function replace(opened: ReturnType<typeof open>, channel: AmqpConfirmChannel) {
    if (current === opened) current = undefined
    channel.close().catch(() => {})
  }

  async function withRetries(target: string, send: (publisher: Publisher) => Promise<void>): Promise<void> {
    const deadline = Date.now() + deadlineMs
    for (let retry = 0; ; retry++) {
      if (closed) throw new PublishError(`could not publish to ${target}: the publisher is closed`, 'closed')
      const opened = open()
      const { channel, publisher } = await opened
      try {
        return await send(publisher)
      } catch (error) {
        const again = error instanceof PublishError && (error.reason === 'refused' || error.reason === 'closed')
        const wait = publishRetryDelayMs(retry)
        if (!again || closed || Date.now() + wait > deadline) throw error
        context.failed('publish')
        context.log.warn(
          { err: error, retry: retry + 1 },
          `${error.message}; trying again on a fresh channel in ${wait} ms`
        )
        replace(opened, channel)
        await new Promise((resolve) => setTimeout(resolve, wait))
      }
    }
  }

  return {
    publish: (queue, body, ids) => {
      // One message id across the retries, so a consumer can tell a copy that did arrive from a new message.
      const messageId = ids.messageId ?? crypto.randomUUID()
      return withRetries(queue, (publisher) => publisher.publish(queue, body, { ...ids, messageId }))
    },
    broadcast: (exchange, body, ids) => {
      const messageId = ids.messageId ?? crypto.randomUUID()
      return withRetries(exchange, (publisher) => publisher.broadcast(exchange, body, { ...ids, messageId }))
    },
    async close() {
      closed = true
      const open = await current?.catch(() => undefined)
      current = undefined
      await open?.channel.close().catch(() => {})
    },
  }
}
