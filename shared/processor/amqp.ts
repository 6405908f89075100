/**
 * The part of amqplib (2.x, with its built-in connection recovery) that the runtime uses, as structural types:
 * a processor passes `amqp.connect`, so this package imports no client library. A backend in another language
 * needs none of this; it is how the TypeScript processors speak the protocol.
 */
import type { Buffer } from 'node:buffer'
import type { BrokerAddress } from '../broker-urls.ts'
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
  bindQueue(queue: string, exchange: string, routingKey: string): Promise<unknown>
  prefetch(count: number): Promise<unknown>
  consume(queue: string, onMessage: (message: AmqpMessage | null) => void, options?: { noAck?: boolean }): Promise<{ consumerTag: string }>
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
  clientProperties: Record<string, unknown>
  recovery: { initialMaxRetries: number; maxDelay: number; waitForConnect?: boolean; setup: (model: AmqpModel) => Promise<void> }
}

/**
 * amqplib's `connect`, as the processor passes it. It is given an address object, not a URL string: re-pointed at
 * the next node of RABBITMQ_URL after each failed attempt or lost connection (`connectInTurn`, broker-urls.ts).
 */
export type AmqpConnect = (address: BrokerAddress, options: AmqpConnectOptions) => Promise<AmqpConnection>
