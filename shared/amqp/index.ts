/**
 * @module @app/shared/amqp: the one AMQP layer of the TypeScript services, the API's broker and the processor
 * runtime alike (connect in turn over the URL list, recover, close on a closed channel or a cancelled consumer,
 * settle). It takes amqplib through structural types. Not re-exported by `@app/shared`, so a backend that needs only
 * the schemas pulls in valibot alone.
 */
export { consumeOrReconnect, settle, watchChannel } from './channels.ts'
export { connectRecovering, type RecoveringConnection, type RecoveringOptions } from './connection.ts'
export {
  PUBLISH_RETRY_DEADLINE_MS,
  publishRetryDelayMs,
  refreshingPublisher,
  type RefreshingPublisher,
} from './publishing.ts'
export type {
  AmqpChannel,
  AmqpConfirmChannel,
  AmqpConnect,
  AmqpConnectOptions,
  AmqpConnection,
  AmqpContext,
  AmqpMessage,
  AmqpModel,
  AmqpOperation,
} from './types.ts'
