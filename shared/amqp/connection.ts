/**
 * The one way a service connects to RabbitMQ: to the nodes of RABBITMQ_URL in turn (`connectInTurn`), through
 * amqplib's built-in recovery, whose `setup` runs again after every reconnect (channels, topology, prefetch and
 * consumers do not survive one), with the connection's events logged and counted the same in every service.
 */
import { connectInTurn } from '../broker-urls.ts'
import type { AmqpConnect, AmqpConnection, AmqpContext, AmqpModel } from './types.ts'

export interface RecoveringOptions {
  /** amqplib's `connect`. */
  connect: AmqpConnect
  /** One broker, or the nodes of a cluster (RABBITMQ_URL's list): each reconnect moves to the next. */
  urls: readonly string[]
  /** Names the connection in `rabbitmqctl list_connections client_properties` (and the management UI). */
  clientProperties?: Record<string, unknown>
  /** Runs after every (re)connect; a service's channels, topology and consumers are made here. */
  setup(model: AmqpModel): Promise<void>
  /** What the service does while the broker blocks it, added to the log line that says so. */
  whileBlocked?: string
}

export interface RecoveringConnection {
  connection: AmqpConnection
  /** The node connected to, or tried next (without credentials). */
  current(): string
  /** Why the broker blocks publishing right now (a memory or disk alarm), or null. */
  blocked(): string | null
}

/**
 * Connects, retrying twice at startup (yet trying every URL once) before it rejects; once connected, reconnects by
 * itself for as long as it takes, backing off up to 5 s between attempts.
 */
export async function connectRecovering(
  options: RecoveringOptions,
  context: AmqpContext
): Promise<RecoveringConnection> {
  const { log, failed } = context
  let blockedBy: string | null = null
  const { connection, current } = await connectInTurn(options.connect, options.urls, {
    ...(options.clientProperties ? { clientProperties: options.clientProperties } : {}),
    recovery: {
      initialMaxRetries: 2,
      maxDelay: 5_000,
      async setup(model) {
        // The broker blocks a connection, not a service: a new connection starts unblocked.
        blockedBy = null
        await options.setup(model)
      },
    },
  })
  connection.on('disconnect', (error) => {
    failed('connection')
    log.warn({ err: error }, `lost the broker (${error.message}); reconnecting to ${current()}`)
  })
  connection.on('connect', () => log.info(`connected to the broker at ${current()}`))
  connection.on('reconnect-failed', (error) =>
    log.error({ err: error }, `gave up reconnecting to the broker: ${error.message}`)
  )
  connection.on('error', (error) => log.error({ err: error }, `broker error: ${error.message}`))
  connection.on('blocked', (reason) => {
    blockedBy = String(reason)
    const meanwhile = options.whileBlocked ? `; ${options.whileBlocked}` : ''
    log.warn({ reason: blockedBy }, `the broker blocks publishing (${blockedBy})${meanwhile}`)
  })
  connection.on('unblocked', () => {
    blockedBy = null
    log.info('the broker accepts publishing again')
  })
  return { connection, current, blocked: () => blockedBy }
}
