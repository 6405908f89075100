/**
 * The consumer half of the protocol, for every processor: connect and recover, consume the type's request queue,
 * and take each delivery through its life (decode or refuse, the bucket confinement, the duplicate guard, updates
 * and heartbeats, the attempt, backoff and `gave_up`, the result confirmed before the ack), with the lease for long
 * jobs, the cancel fanout, and hand-back at shutdown. A processor gives it a `handle` for its media and nothing else.
 *
 * A job holds its delivery while it is safe to: the request is acked only after its result is confirmed, so a
 * processor that dies mid-job has the request redelivered. RabbitMQ closes the channel of a delivery held longer
 * than its consumer_timeout, so a job still running at the ack deadline trades its delivery for a lease: the
 * delivery is acked and the job carries on, vouched for by its heartbeats alone. A leased job no longer depends on
 * a channel: it survives a reconnect, and its result (or a hand-back after a fault) is retried for a while rather
 * than requeued. A lease keeps its slot: the processor never runs more than its concurrency, leased or not.
 *
 * This file wires the parts and stops them: connection.ts (connect, setup, readiness), deliveries.ts (one
 * delivery's life), consumer.ts (the lease and the prefetch refit).
 */
import { settle } from '../amqp/channels.ts'
import type { AmqpContext } from '../amqp/types.ts'
import type { MediaType } from '../names.ts'
import { createLogger, type Logger } from '../ops/log.ts'
import { createRegistry, type Registry } from '../ops/metrics.ts'
import { runChecks, type Readiness } from '../ops/health.ts'
import { startOpsServer, type OpsServer } from '../ops/server.ts'
import { attemptOf } from './attempts.ts'
import { connectProcessor, readinessChecks } from './connection.ts'
import { bulkSlotsOf, createConsumer } from './consumer.ts'
import { createDeliveries, type Deliveries } from './deliveries.ts'
import type { ProcessorDefinition } from './definition.ts'
import { Interrupted, describeError, sleep } from './errors.ts'
import { ProcessorEvents, logEvents } from './events.ts'
import { processorMetrics } from './metrics.ts'
import type { BrokerHold, ProcessorState, Run } from './state.ts'
import { createStorage } from './storage.ts'
import { createWorkDirs } from './workdirs.ts'

export interface Processor {
  events: ProcessorEvents
  /** The processor's metrics (also served on `/metrics` when `settings.metricsPort` is set). */
  registry: Registry
  /** Where `/metrics`, `/livez` and `/readyz` listen, or null. */
  opsPort: number | null
  /** What `/readyz` answers: connected to the broker, consuming, and a slot free for another job. */
  readiness(): Promise<Readiness>
  /**
   * Stops taking work and lets running jobs finish for up to the grace period. Jobs still running then are
   * stopped and handed back as fresh messages (held deliveries acked), so a shutdown costs no attempt; if a
   * hand-back fails, a held delivery is released to the broker, which delivers it again.
   */
  stop(): Promise<void>
}

/** Connects, declares the topology and consumes until stopped; reconnects by itself when the broker drops it. */
export async function startProcessor<T extends MediaType>(definition: ProcessorDefinition<T>): Promise<Processor> {
  const { settings } = definition
  const name = settings.type
  const events = new ProcessorEvents()
  const log = definition.log ?? createLogger(name, settings.log)
  const jobLogs = new Map<string, Logger>()
  const logOf = (jobId: string) => jobLogs.get(jobId) ?? log.child({ jobId })
  logEvents(events, logOf, log)
  const registry = createRegistry(name)
  const running = new Map<string, Run>()
  const metrics = processorMetrics(
    registry,
    settings.type,
    () => ({
      busy: running.size,
      free: Math.max(0, settings.concurrency - running.size),
      waiting: consumer.held(),
    }),
    async () => (await readiness()).ready
  )
  metrics.watch(events)
  const storage = createStorage(settings.s3, (operation) => metrics.s3Errors.inc({ operation }))
  const workDirs = createWorkDirs(settings.tmpDir)

  const inFlight = new Set<Promise<void>>()
  const stopping = new AbortController()
  const pastGrace = new AbortController()
  const broker: BrokerHold = { consumers: {} }
  const amqp: AmqpContext = {
    log,
    failed: (operation) => metrics.brokerErrors.inc({ operation }),
    closing: () => stopping.signal.aborted,
  }
  const state: ProcessorState<T> = {
    definition,
    settings,
    events,
    log,
    jobLogs,
    logOf,
    metrics,
    amqp,
    storage,
    workDirs,
    inFlight,
    running,
    stopping: stopping.signal,
    pastGrace: pastGrace.signal,
    broker,
  }
  const consumer = createConsumer(state, (channel, message, cls) => deliveries.onMessage(channel, message, cls))
  const deliveries: Deliveries = createDeliveries(state, consumer)

  const { connection, current } = await connectProcessor(state, consumer).catch((error) => {
    storage.destroy()
    workDirs.removeAll()
    throw error
  })

  const checks = readinessChecks(state, consumer)
  const readiness = () => runChecks(checks)
  let ops: OpsServer | null = null
  if (settings.metricsPort !== null) {
    ops = await startOpsServer({
      port: settings.metricsPort,
      registry,
      checks: () => checks,
    }).catch(async (error) => {
      await connection.close().catch(() => {})
      storage.destroy()
      workDirs.removeAll()
      throw error
    })
  }
  log.info(
    {
      queues: [settings.queues.request, settings.queues.bulk],
      concurrency: settings.concurrency,
      metricsPort: ops?.port ?? null,
    },
    `consuming ${settings.queues.request} and ${settings.queues.bulk} with concurrency ${settings.concurrency}, ` +
      `bulk work on ${bulkSlotsOf(settings.concurrency)} slot(s) at most (broker at ${current()})`
  )

  return {
    events,
    registry,
    opsPort: ops?.port ?? null,
    readiness,
    async stop() {
      stopping.abort()
      await consumer.fitConsumer()
      // Deliveries waiting for a slot would only wait out the grace period: back to their queues at once.
      await consumer.handBackHeld()
      const settled = Promise.allSettled(inFlight)
      const graceOver = sleep(settings.shutdownGraceMs).then(() => 'grace over' as const)
      if ((await Promise.race([settled, graceOver])) === 'grace over') {
        pastGrace.abort()
        for (const run of [...running.values()]) {
          // Stopping already (cancelled, past its time, or its channel closed): it settles its own delivery, or the
          // broker has it back.
          if (run.stop.signal.aborted) continue
          run.stop.abort(new Interrupted('shutting down'))
          // A shutdown is not the job's fault: the attempts made before this one are carried over unchanged.
          await deliveries
            .handBack(run, attemptOf(run.message.properties.headers) - 1, 'shutting down')
            .catch((error) => {
              if (run.leased)
                return events.emit('lost', {
                  jobId: run.jobId,
                  what: 'its hand-back at shutdown',
                  reason: describeError(error),
                })
              logOf(run.jobId).warn(
                { err: error },
                `could not be handed back (${describeError(error)}); the broker delivers it again`
              )
              settle(() => run.channel.nack(run.message, false, true), amqp)
            })
        }
        await settled
      }
      // The channel first: closing the connection at once can overtake the acks just written on the channel (amqplib
      // muxes channels onto the socket), and the broker then requeues deliveries that were acked or handed back.
      await broker.link?.channel.close().catch(() => {})
      await connection.close().catch(() => {})
      await ops?.close()
      storage.destroy()
      workDirs.removeAll()
    },
  }
}
