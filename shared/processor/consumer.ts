/**
 * The consumer of the request queue, kept at the processor's concurrency. A job acked at its ack deadline (the
 * lease) keeps its slot here but frees one at the broker, which counts only unacked deliveries against the
 * prefetch; and a running consumer's prefetch cannot be changed. So the consumer is cancelled and created again
 * with the slots left whenever they change: at a lease, and when a job of an earlier consumer ends.
 */
import { consumeOrReconnect } from '../amqp/channels.ts'
import type { AmqpChannel, AmqpConfirmChannel, AmqpMessage, AmqpModel } from '../amqp/types.ts'
import type { MediaType } from '../names.ts'
import { describeError } from './errors.ts'
import type { ProcessorState, Run } from './state.ts'

export interface Consumer {
  /** Acks a job's delivery at the ack deadline and lets the job carry on under a lease (see runtime.ts). */
  lease(run: Run): Promise<void>
  /**
   * Cancels the consumer and creates it again when the free slots changed (or `change` is given, which runs
   * while there is no consumer); one refit at a time.
   */
  fitConsumer(change?: () => void): Promise<void>
  /** Slots for the current consumer's deliveries: those not taken by leased jobs or by an earlier consumer's. */
  freeSlots(): number
}

export function createConsumer<T extends MediaType>(
  state: Pick<
    ProcessorState<T>,
    'settings' | 'events' | 'log' | 'logOf' | 'metrics' | 'amqp' | 'inFlight' | 'running' | 'stopping' | 'broker'
  >,
  onMessage: (channel: AmqpChannel, message: AmqpMessage) => Promise<void>
): Consumer {
  const { settings, events, log, logOf, metrics, inFlight, running, stopping, broker } = state

  function lease(run: Run): Promise<void> {
    // Around a consumer re-created with one slot less: the ack frees a prefetch slot that the job still occupies.
    return fitConsumer(() => {
      // It may have finished, been stopped or lost its channel while the consumer was being cancelled.
      if (running.get(run.jobId) !== run || run.stop.signal.aborted) return
      try {
        run.channel.ack(run.message)
      } catch (error) {
        metrics.brokerErrors.inc({ operation: 'settle' })
        return logOf(run.jobId).warn({ err: error }, `could not ack at the ack deadline: ${describeError(error)}`)
      }
      run.leased = true
      events.emit('leased', { jobId: run.jobId })
    })
  }

  let fitting = Promise.resolve()
  // Cancelling a consumer leaves its unacked deliveries with the channel: their jobs run on and settle them there.
  function fitConsumer(change?: () => void): Promise<void> {
    fitting = fitting
      .then(async () => {
        if (!change && (broker.consumer?.prefetch ?? 0) === freeSlots()) return
        if (broker.consumer) {
          const { channel, tag } = broker.consumer
          broker.consumer = undefined
          await channel.cancel(tag).catch(() => {})
        }
        change?.()
        const prefetch = freeSlots()
        if (prefetch > 0 && broker.link) await consume(broker.link.model, broker.link.channel, prefetch)
      })
      .catch((error) => {
        metrics.brokerErrors.inc({ operation: 'consume' })
        log.error(
          { err: error },
          `could not consume (the channel is gone; a reconnect follows): ${describeError(error)}`
        )
      })
    return fitting
  }

  function freeSlots(): number {
    if (stopping.aborted) return 0
    let taken = 0
    for (const run of running.values())
      if (run.leased || run.message.fields.consumerTag !== broker.consumer?.tag) taken++
    return Math.max(0, settings.concurrency - taken)
  }

  async function consume(model: AmqpModel, channel: AmqpConfirmChannel, prefetch: number): Promise<void> {
    // Per consumer (quorum queues refuse a global prefetch); it applies to consumers created after it.
    await channel.prefetch(prefetch)
    const { consumerTag } = await consumeOrReconnect(model, channel, settings.queues.request, state.amqp, (message) => {
      const task = onMessage(channel, message).catch((error) =>
        log.error({ err: error }, `unexpected error: ${describeError(error)}`)
      )
      inFlight.add(task)
      void task.finally(() => inFlight.delete(task))
    })
    broker.consumer = { channel, tag: consumerTag, prefetch }
  }

  return { lease, fitConsumer, freeSlots }
}
