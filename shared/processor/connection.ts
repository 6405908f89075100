/**
 * The processor's connection: to RABBITMQ_URL's nodes in turn, recovered by amqplib, with a setup that makes
 * everything a reconnect loses (the channel, the topology, the publisher, the cancel listener and the consumer);
 * what a closed channel means for the jobs whose deliveries were on it; and the checks `/readyz` answers with.
 */
import { hostname } from 'node:os'
import { watchChannel } from '../amqp/channels.ts'
import { refreshingPublisher } from '../amqp/publishing.ts'
import { connectRecovering, type RecoveringConnection } from '../amqp/connection.ts'
import type { AmqpChannel } from '../amqp/types.ts'
import { describeBrokerUrls } from '../broker-urls.ts'
import { JOB_CLASSES, requestQueue, type MediaType } from '../names.ts'
import type { Check } from '../ops/health.ts'
import { declareTopology, topology } from '../topology.ts'
import { listenForCancels } from './cancels.ts'
import type { Consumer } from './consumer.ts'
import { Cancelled, Interrupted, describeError } from './errors.ts'
import type { ProcessorState } from './state.ts'

type ConnectionState<T extends MediaType> = Pick<
  ProcessorState<T>,
  'definition' | 'settings' | 'events' | 'log' | 'logOf' | 'amqp' | 'running' | 'broker'
>

/** Connects and runs the setup; rejects naming the broker when it cannot be reached. */
export function connectProcessor<T extends MediaType>(
  state: ConnectionState<T>,
  consumer: Pick<Consumer, 'fitConsumer' | 'forget'>
): Promise<RecoveringConnection> {
  const { definition, settings, log, amqp, running, broker } = state
  return connectRecovering(
    {
      connect: definition.connect,
      urls: settings.rabbitmqUrl,
      clientProperties: { connection_name: `${settings.type} ${settings.system} ${hostname()}:${process.pid}` },
      async setup(model) {
        const channel = watchChannel(model, await model.createConfirmChannel(), amqp, {
          onClose: () => {
            if (broker.link?.channel === channel) broker.link = undefined
            for (const cls of JOB_CLASSES)
              if (broker.consumers[cls]?.channel === channel) broker.consumers[cls] = undefined
            consumer.forget(channel)
            interruptJobsOn(state, channel, 'its channel closed')
          },
        })
        await declareTopology(channel, topology(settings.system, settings.type))
        // A channel of its own, replaced when the broker refuses a message (a quorum queue's leader lost: its
        // results would otherwise go round to the delivery limit); the consumer's channel is never touched by it.
        broker.publisher = refreshingPublisher({ model, context: amqp })
        await listenForCancels(
          model,
          settings.system,
          (jobId) => running.get(jobId)?.stop.abort(new Cancelled('by its backend')),
          log
        )
        broker.link = { model, channel }
        await consumer.fitConsumer()
      },
    },
    amqp
  ).catch((error) => {
    throw new Error(`cannot reach RabbitMQ at ${describeBrokerUrls(settings.rabbitmqUrl)}: ${describeError(error)}`, {
      cause: error,
    })
  })
}

/** Stops the held jobs whose deliveries were on `channel`: the broker has put them back, and they will come again. */
function interruptJobsOn<T extends MediaType>(
  state: Pick<ProcessorState<T>, 'events' | 'logOf' | 'running'>,
  channel: AmqpChannel,
  why: string
): void {
  for (const run of state.running.values()) {
    if (run.channel !== channel) continue
    if (run.leased) {
      state.logOf(run.jobId).info({ why }, `leased job carries on (${why})`)
      continue
    }
    if (run.stop.signal.aborted) continue
    run.stop.abort(new Interrupted(why))
    state.events.emit('interrupted', { jobId: run.jobId, why })
  }
}

/** What `/readyz` asks: connected, consuming both queues (unless their slots are taken), and a slot free for another job. */
export function readinessChecks<T extends MediaType>(
  state: Pick<ProcessorState<T>, 'settings' | 'running' | 'stopping' | 'broker'>,
  consumer: Pick<Consumer, 'freeSlots'>
): Record<string, Check> {
  const { settings, running, stopping, broker } = state
  return {
    broker: () => {
      if (!broker.link) throw new Error('not connected')
    },
    consumer: () => {
      if (stopping.aborted) throw new Error('stopping')
      for (const cls of JOB_CLASSES)
        if (consumer.freeSlots(cls) > 0 && !broker.consumers[cls])
          throw new Error(`not consuming ${requestQueue(settings.queues, cls)}`)
    },
    slots: () => {
      if (running.size >= settings.concurrency) throw new Error(`all ${settings.concurrency} busy`)
    },
  }
}
