/**
 * The consumers of the two request queues (interactive and bulk) and the gate between them and the processor's
 * slots.
 *
 * The gate: a job starts while fewer than `concurrency` run (leased ones included); bulk work starts only while it
 * holds fewer than `bulkSlots` (concurrency − 1, so one slot is always left for interactive work; 1 when the
 * concurrency is 1, see `bulkSlotsOf`). A delivery that cannot start yet is held, unacked, and the next free slot
 * goes to a held interactive delivery before a bulk one. The broker counts unacked deliveries against each
 * consumer's prefetch, so at most concurrency − 1 deliveries are ever held; one held past the ack deadline is handed
 * back rather than kept past the broker's consumer_timeout.
 *
 * Interactive work still in the broker goes first too. The broker sends the next interactive request only once the
 * last one is acked, which comes after its result is confirmed, while its slot is free here a little earlier: a held
 * bulk delivery would take that slot first every time. So the slot of an interactive job stays closed to bulk work
 * until its delivery is settled and the broker, asked, has no interactive request ready (or one is ready but has not
 * come here within LINGER_MS: another processor took it).
 *
 * The prefetch: a job acked at its ack deadline (the lease) keeps its slot here but frees one at the broker; and a
 * running consumer's prefetch cannot be changed. So a consumer is cancelled and created again with the slots left
 * whenever they change: at a lease, and when a job of an earlier consumer ends.
 */
import { consumeOrReconnect, settle } from '../amqp/channels.ts'
import type { AmqpChannel, AmqpConfirmChannel, AmqpMessage, AmqpModel } from '../amqp/types.ts'
import { CLASS_PRIORITY, JOB_CLASSES, requestQueue, type JobClass, type MediaType } from '../names.ts'
import { attemptOf, carriedHeaders } from './attempts.ts'
import { describeError } from './errors.ts'
import type { ProcessorState, Run } from './state.ts'

export interface Consumer {
  /** Acks a job's delivery at the ack deadline and lets the job carry on under a lease (see runtime.ts). */
  lease(run: Run): Promise<void>
  /**
   * Starts held deliveries that now fit, then cancels a consumer and creates it again when its slots changed (or
   * `change` is given, which runs while there is no consumer); one refit at a time.
   */
  fitConsumer(change?: () => void): Promise<void>
  /** The prefetch a consumer of `cls` gets now: slots not taken by leased jobs or by an earlier consumer's. */
  freeSlots(cls: JobClass): number
  /** Forgets the held deliveries of a closed channel: the broker has them back. */
  forget(channel: AmqpChannel): void
  /** Hands every held delivery back (at shutdown): published again unchanged, then acked. */
  handBackHeld(): Promise<void>
  /** Deliveries waiting here for a slot, by class. */
  held(): Record<JobClass, number>
}

/**
 * The slots bulk work may hold: all but one, so an interactive upload never waits for a whole bulk job. A
 * single-slot processor (the video default) lets bulk work take its one slot: reserving it would stop bulk work
 * (a library's reprocess) for good. Interactive work still goes first whenever the slot frees, so an upload waits
 * at most one bulk job there.
 */
export const bulkSlotsOf = (concurrency: number): number => (concurrency > 1 ? concurrency - 1 : 1)

/** How long the slot of a finished interactive job waits for the interactive request the broker said was ready. */
const LINGER_MS = 200

interface Held {
  cls: JobClass
  channel: AmqpChannel
  message: AmqpMessage
  /** The hand-back at the ack deadline. */
  timer: ReturnType<typeof setTimeout>
}

export function createConsumer<T extends MediaType>(
  state: Pick<
    ProcessorState<T>,
    'settings' | 'events' | 'log' | 'logOf' | 'metrics' | 'amqp' | 'inFlight' | 'running' | 'stopping' | 'broker'
  >,
  onMessage: (channel: AmqpChannel, message: AmqpMessage, cls: JobClass) => Promise<void>
): Consumer {
  const { settings, events, log, logOf, metrics, inFlight, running, stopping, broker, amqp } = state
  const bulkSlots = bulkSlotsOf(settings.concurrency)
  const waiting: Held[] = []
  /** Interactive deliveries started here whose slot is not yet open to bulk work (see the comment at the top). */
  let interactiveTasks = 0
  /** Told when an interactive delivery arrives: the slots kept for one stop waiting. */
  const arrivals = new Set<() => void>()

  function lease(run: Run): Promise<void> {
    // Around consumers re-created with one slot less: the ack frees a prefetch slot that the job still occupies.
    return fitConsumer(() => {
      // It may have finished, been stopped or lost its channel while the consumers were being cancelled.
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

  const runningOf = (cls: JobClass) => {
    let n = 0
    for (const run of running.values()) if (run.cls === cls) n++
    return n
  }

  /** The held delivery to start next, interactive first, or -1 when none fits a free slot. */
  function next(): number {
    if (stopping.aborted || running.size >= settings.concurrency) return -1
    const interactive = waiting.findIndex((h) => h.cls === 'interactive')
    if (interactive >= 0) return interactive
    const bulk = runningOf('bulk')
    // Slots of interactive jobs that ended but are still kept for interactive work count as taken.
    const kept = Math.max(0, interactiveTasks - runningOf('interactive'))
    if (bulk >= bulkSlots || running.size + kept >= settings.concurrency) return -1
    return waiting.findIndex((h) => h.cls === 'bulk')
  }

  /**
   * Starts what fits. A delivery's run is in `running` from the synchronous start of `onMessage` (one refused or
   * dropped as a duplicate never is), so the count is right for the next turn of the loop.
   */
  function pump(): void {
    for (let i = next(); i >= 0; i = next()) {
      const [held] = waiting.splice(i, 1)
      clearTimeout(held!.timer)
      const interactive = held!.cls === 'interactive'
      if (interactive) interactiveTasks++
      const task = onMessage(held!.channel, held!.message, held!.cls)
        .catch((error) => log.error({ err: error }, `unexpected error: ${describeError(error)}`))
        .then(() => (interactive ? lingerForInteractive() : undefined))
        .finally(() => {
          if (interactive) interactiveTasks--
          pump()
        })
      inFlight.add(task)
      void task.finally(() => inFlight.delete(task))
    }
  }

  /**
   * After an interactive delivery is settled: while the broker has interactive requests ready, wait (a while) for one
   * to come here before the slot opens to bulk work.
   */
  async function lingerForInteractive(): Promise<void> {
    const link = broker.link
    if (stopping.aborted || !link || !broker.consumers.interactive) return
    const { messageCount } = await link.channel.checkQueue(settings.queues.request).catch(() => ({ messageCount: 0 }))
    if (messageCount === 0 || waiting.some((h) => h.cls === 'interactive')) return
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer)
        arrivals.delete(done)
        resolve()
      }
      const timer = setTimeout(done, LINGER_MS)
      arrivals.add(done)
    })
  }

  function admit(cls: JobClass, channel: AmqpChannel, message: AmqpMessage): void {
    const held: Held = { cls, channel, message, timer: setTimeout(() => void handBack(held), settings.ackDeadlineMs) }
    waiting.push(held)
    // Started first, so the slots kept for it see it running before they open.
    pump()
    if (cls === 'interactive') for (const arrived of [...arrivals]) arrived()
  }

  /** A held delivery published again as it came (its attempts unchanged: waiting is no attempt), then acked. */
  async function handBack(held: Held): Promise<void> {
    const at = waiting.indexOf(held)
    if (at < 0) return
    waiting.splice(at, 1)
    clearTimeout(held.timer)
    const { properties, content } = held.message
    try {
      if (!broker.publisher) throw new Error('not connected to the broker')
      await broker.publisher.publish(requestQueue(settings.queues, held.cls), content, {
        correlationId: properties.correlationId ?? properties.messageId ?? 'unnamed',
        type: properties.type ?? 'job.request',
        priority: CLASS_PRIORITY[held.cls],
        headers: carriedHeaders(properties.headers, attemptOf(properties.headers) - 1),
      })
      settle(() => held.channel.ack(held.message), amqp)
    } catch (error) {
      // The broker delivers it again (counting a delivery): better than holding it past its consumer_timeout.
      log.warn({ err: error }, `a waiting request could not be handed back: ${describeError(error)}`)
      settle(() => held.channel.nack(held.message, false, true), amqp)
    }
  }

  let fitting = Promise.resolve()
  // Cancelling a consumer leaves its unacked deliveries with the channel: their jobs run on and settle them there.
  function fitConsumer(change?: () => void): Promise<void> {
    pump()
    fitting = fitting
      .then(async () => {
        const refit = JOB_CLASSES.filter((cls) => change || (broker.consumers[cls]?.prefetch ?? 0) !== freeSlots(cls))
        if (!refit.length) return
        for (const cls of refit) {
          const consumer = broker.consumers[cls]
          if (!consumer) continue
          broker.consumers[cls] = undefined
          await consumer.channel.cancel(consumer.tag).catch(() => {})
        }
        change?.()
        for (const cls of refit) {
          const prefetch = freeSlots(cls)
          if (prefetch > 0 && broker.link) await consume(broker.link.model, broker.link.channel, cls, prefetch)
        }
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

  function freeSlots(cls: JobClass): number {
    if (stopping.aborted) return 0
    const tag = broker.consumers[cls]?.tag
    let leased = 0
    let leasedBulk = 0
    let earlier = 0
    for (const run of running.values()) {
      if (run.leased) {
        leased++
        if (run.cls === 'bulk') leasedBulk++
      } else if (run.cls === cls && run.message.fields.consumerTag !== tag) earlier++
    }
    for (const held of waiting) if (held.cls === cls && held.message.fields.consumerTag !== tag) earlier++
    const slots =
      cls === 'interactive'
        ? settings.concurrency - leased
        : Math.min(bulkSlots - leasedBulk, settings.concurrency - leased)
    return Math.max(0, slots - earlier)
  }

  async function consume(model: AmqpModel, channel: AmqpConfirmChannel, cls: JobClass, prefetch: number) {
    // Per consumer (quorum queues refuse a global prefetch); it applies to consumers created after it.
    await channel.prefetch(prefetch)
    const queue = requestQueue(settings.queues, cls)
    const { consumerTag } = await consumeOrReconnect(model, channel, queue, state.amqp, (message) =>
      admit(cls, channel, message)
    )
    broker.consumers[cls] = { channel, tag: consumerTag, prefetch }
  }

  function forget(channel: AmqpChannel): void {
    for (const held of waiting.filter((h) => h.channel === channel)) {
      clearTimeout(held.timer)
      waiting.splice(waiting.indexOf(held), 1)
    }
  }

  async function handBackHeld(): Promise<void> {
    await Promise.all([...waiting].map(handBack))
  }

  function held(): Record<JobClass, number> {
    const counts = { interactive: 0, bulk: 0 }
    for (const h of waiting) counts[h.cls]++
    return counts
  }

  return { lease, fitConsumer, freeSlots, forget, handBackHeld, held }
}
