/**
 * The part of amqplib (2.x, with its built-in connection recovery) that the services use, as structural types: a
 * service passes `amqp.connect`, so this package imports no client library. A backend in another language needs
 * none of this; it is how the TypeScript services speak the protocol. Also what a service gives the layer in return
 * (`AmqpContext`).
 */
import type { Buffer } from 'node:buffer'
import type { BrokerAddress } from '../broker-urls.ts'
import type { Logger } from '../ops/log.ts'
import type { ConfirmChannelLike } from '../publisher.ts'

export interface AmqpMessage {
  content: Buffer
  /** `consumerTag` is optional as in amqplib's `Message`; every delivery from `consume` has it. */
  fields: { deliveryTag: number; redelivered: boolean; consumerTag?: string }
  properties: {
    messageId?: string
    correlationId?: string
    type?: string
    headers?: Record<string, unknown>
  }
}

export interface AmqpChannel {
  on(event: 'error', listener: (error: Error) => void): unknown
  on(event: 'close', listener: () => void): unknown
  assertExchange(name: string, type: string, options: { durable: boolean; autoDelete: boolean }): Promise<unknown>
  assertQueue(name: string, options: Record<string, unknown>): Promise<{ queue: string }>
  /** Rejects (and closes the channel) when the queue does not exist. */
  checkQueue(name: string): Promise<{ messageCount: number; consumerCount: number }>
  bindQueue(queue: string, exchange: string, routingKey: string): Promise<unknown>
  prefetch(count: number): Promise<unknown>
  consume(
    queue: string,
    onMessage: (message: AmqpMessage | null) => void,
    options?: { noAck?: boolean }
  ): Promise<{ consumerTag: string }>
  cancel(consumerTag: string): Promise<unknown>
  ack(message: AmqpMessage): void
  nack(message: AmqpMessage, allUpTo?: boolean, requeue?: boolean): void
  close(): Promise<void>
}

export type AmqpConfirmChannel = AmqpChannel & ConfirmChannelLike<Buffer>

/** One live connection, as the recovery `setup` gets it. */
export interface AmqpModel {
  createChannel(): Promise<AmqpChannel>
  createConfirmChannel(): Promise<AmqpConfirmChannel>
  close(): Promise<void>
}

/** The recovering connection `connect` resolves with. */
export interface AmqpConnection {
  close(): Promise<void>
  /** Resolves once connected (`connect` resolves at once when `recovery.waitForConnect` is false). */
  waitForConnect(): Promise<unknown>
  on(event: 'connect' | 'unblocked', listener: () => void): unknown
  on(event: 'disconnect' | 'connect-failed' | 'reconnect-failed' | 'error', listener: (error: Error) => void): unknown
  on(event: 'blocked', listener: (reason: string) => void): unknown
}

export interface AmqpConnectOptions {
  /** Absent: amqplib's own (a connection without a name). */
  clientProperties?: Record<string, unknown>
  recovery: {
    initialMaxRetries: number
    maxDelay: number
    waitForConnect?: boolean
    setup: (model: AmqpModel) => Promise<void>
  }
}

/**
 * amqplib's `connect`, as a service passes it. It is given an address object, not a URL string: re-pointed at the
 * next node of RABBITMQ_URL after each failed attempt or lost connection (`connectInTurn`, broker-urls.ts).
 */
export type AmqpConnect = (address: BrokerAddress, options: AmqpConnectOptions) => Promise<AmqpConnection>

/** The failures the layer counts, as the `operation` of the error metrics (a service counts its publishes itself). */
export type AmqpOperation = 'connection' | 'channel' | 'consume' | 'settle' | 'publish'

/** What a service gives the layer: where it logs, how it counts a failure, and whether it is shutting down. */
export interface AmqpContext {
  log: Logger
  failed(operation: AmqpOperation): void
  /** True once the service closes: a channel closing or a consumer cancelled then calls for no reconnect. */
  closing(): boolean
}
