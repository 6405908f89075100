/**
 * A channel's troubles, handled one way in every service. amqplib recovers a lost connection, never a channel: a
 * channel closed under a live connection (an ack timeout, a deleted queue) and a consumer the broker cancels (its
 * queue deleted) both close the whole connection, so that recovery runs the service's setup again. An ack or nack
 * on a channel that died meanwhile throws; the broker has put that delivery back already.
 */
import type { AmqpChannel, AmqpContext, AmqpMessage, AmqpModel } from './types.ts'

/**
 * Logs and counts the channel's errors; when it closes, runs `onClose`, then closes the connection unless the
 * service is closing.
 */
export function watchChannel<C extends AmqpChannel>(
  model: AmqpModel,
  channel: C,
  context: AmqpContext,
  options: { name?: string; onClose?: () => void } = {}
): C {
  const which = options.name ? `${options.name} channel` : 'channel'
  channel.on('error', (error) => {
    context.failed('channel')
    context.log.error({ err: error }, `${which} error: ${error.message}`)
  })
  channel.on('close', () => {
    options.onClose?.()
    if (!context.closing()) model.close().catch(() => {})
  })
  return channel
}

/** Consumes `queue` on `channel`; if the broker cancels the consumer, closes the connection to consume again. */
export function consumeOrReconnect(
  model: AmqpModel,
  channel: AmqpChannel,
  queue: string,
  context: AmqpContext,
  onMessage: (message: AmqpMessage) => void
): Promise<{ consumerTag: string }> {
  return channel.consume(queue, (message) => {
    if (message !== null) return onMessage(message)
    context.failed('consume')
    context.log.error(
      { queue },
      `the broker cancelled the consumer of ${queue} (queue deleted?); reconnecting to consume it again`
    )
    if (!context.closing()) model.close().catch(() => {})
  })
}

/** Acks or nacks; on a dead channel, counts and logs it (`about` names the delivery) instead of throwing. */
export function settle(
  action: () => void,
  context: Pick<AmqpContext, 'log' | 'failed'>,
  about: Record<string, unknown> = {}
): void {
  try {
    action()
  } catch (error) {
    context.failed('settle')
    const why = error instanceof Error ? error.message : String(error)
    context.log.warn(
      { ...about, err: error },
      `could not settle a delivery (channel closed; it will be delivered again): ${why}`
    )
  }
}
