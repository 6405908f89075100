/**
 * Publishing as the protocol requires: persistent, `application/json`, `messageId` and `correlationId` (the job id)
 * set, `mandatory` so an unroutable message is an error rather than silently confirmed, and resolved only once
 * the broker has confirmed it. Written against the part of amqplib's ConfirmChannel it uses, so this package
 * stays free of runtime-specific imports.
 */
import { MESSAGE_CONTENT_TYPE } from './codec.ts'

export interface PublishProperties {
  persistent: boolean
  mandatory: boolean
  contentType: string
  messageId: string
  correlationId: string
  type: string
  timestamp: number
  priority?: number
  headers?: Record<string, string | number>
}

/** The part of an amqplib ConfirmChannel a publisher needs; `C` is the runtime's byte type (Buffer in Node/Bun). */
export interface ConfirmChannelLike<C> {
  sendToQueue(queue: string, content: C, options: PublishProperties, callback: (err: unknown) => void): boolean
  publish(
    exchange: string,
    routingKey: string,
    content: C,
    options: PublishProperties,
    callback: (err: unknown) => void
  ): boolean
  on(event: 'return', listener: (message: { properties: { messageId?: string } }) => void): unknown
}

/**
 * Why a publish failed: `refused` (basic.nack: a full queue, or a quorum queue without a reachable leader),
 * `unroutable` (no such queue), `timeout` (no confirm in time: it may still arrive), `closed` (the channel closed or
 * threw before a confirm).
 */
export type PublishFailure = 'refused' | 'unroutable' | 'timeout' | 'closed'

export class PublishError extends Error {
  override name = 'PublishError'
  constructor(
    message: string,
    readonly reason: PublishFailure
  ) {
    super(message)
  }
}

export interface PublishIds {
  correlationId: string
  type: string
  messageId?: string
  /** The AMQP priority (a request's class, CLASS_PRIORITY in names.ts). */
  priority?: number
  headers?: Record<string, string | number>
}

export interface Publisher {
  /** Resolves once the broker has taken responsibility for the message; rejects with a PublishError otherwise. */
  publish(queue: string, body: Uint8Array, ids: PublishIds): Promise<void>
  /**
   * Publishes to a fanout exchange. Not `mandatory`: a broadcast that no one hears is not an error (whoever must
   * act on it has another way to learn of it).
   */
  broadcast(exchange: string, body: Uint8Array, ids: Omit<PublishIds, 'headers' | 'priority'>): Promise<void>
}

/**
 * Wraps a confirm channel. `toContent` converts bytes for the client library (amqplib wants a Buffer).
 * A publish that is not confirmed within `timeoutMs` rejects; the message may still arrive, which the protocol's
 * idempotent consumers tolerate.
 */
export function createPublisher<C>(
  channel: ConfirmChannelLike<C>,
  toContent: (bytes: Uint8Array) => C,
  timeoutMs = 10_000
): Publisher {
  // RabbitMQ sends basic.return before the basic.ack of the same message, so a returned id is known by then.
  const returned = new Set<string>()
  channel.on('return', (message) => {
    if (message.properties.messageId) returned.add(message.properties.messageId)
  })
  const send = (
    target: string,
    body: Uint8Array,
    ids: PublishIds,
    route: (content: C, properties: PublishProperties, callback: (err: unknown) => void) => boolean,
    mandatory: boolean
  ) => {
    const messageId = ids.messageId ?? crypto.randomUUID()
    const properties: PublishProperties = {
      persistent: true,
      mandatory,
      contentType: MESSAGE_CONTENT_TYPE,
      messageId,
      correlationId: ids.correlationId,
      type: ids.type,
      timestamp: Math.floor(Date.now() / 1000),
      ...(ids.priority === undefined ? {} : { priority: ids.priority }),
      ...(ids.headers ? { headers: ids.headers } : {}),
    }
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new PublishError(`the broker did not confirm a message to ${target} within ${timeoutMs} ms`, 'timeout')
          ),
        timeoutMs
      )
      const settle = (error?: PublishError) => {
        clearTimeout(timer)
        returned.delete(messageId)
        if (error) reject(error)
        else resolve()
      }
      try {
        route(toContent(body), properties, (err) => {
          if (err) settle(refusalOf(target, err))
          else if (returned.has(messageId))
            settle(new PublishError(`no queue named ${target}: the message was unroutable`, 'unroutable'))
          else settle()
        })
      } catch (err) {
        settle(new PublishError(`could not publish to ${target}: ${describe(err)}`, 'closed'))
      }
    })
  }
  return {
    publish: (queue, body, ids) => send(queue, body, ids, (c, p, cb) => channel.sendToQueue(queue, c, p, cb), true),
    broadcast: (exchange, body, ids) =>
      send(exchange, body, ids, (c, p, cb) => channel.publish(exchange, '', c, p, cb), false),
  }
}

/**
 * amqplib calls a confirm's callback with an error both for a basic.nack ("message nacked") and for a channel that
 * closed before the confirm came ("channel closed").
 */
function refusalOf(target: string, err: unknown): PublishError {
  return /nack/i.test(describe(err))
    ? new PublishError(`the broker refused a message to ${target}: ${describe(err)}`, 'refused')
    : new PublishError(
        `the channel closed before the broker confirmed a message to ${target}: ${describe(err)}`,
        'closed'
      )
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
