/**
 * What the parts of a running processor share. runtime.ts makes it; connection.ts, consumer.ts and deliveries.ts
 * each take the fields they use. The jobs running here are shared because every part acts on them (a delivery
 * runs one, the consumer counts them against the prefetch, a closed channel interrupts them); the hold on the
 * broker because the connection's setup makes it and the consumers are refitted on it.
 */
import type { AmqpChannel, AmqpConfirmChannel, AmqpContext, AmqpMessage, AmqpModel } from '../amqp/types.ts'
import type { JobClass, MediaType } from '../names.ts'
import type { Logger } from '../ops/log.ts'
import type { Publisher } from '../publisher.ts'
import type { ProcessorDefinition } from './definition.ts'
import type { ProcessorEvents } from './events.ts'
import type { ProcessorMetrics } from './metrics.ts'
import type { Storage } from './storage.ts'
import type { createWorkDirs } from './workdirs.ts'

/** A delivery being worked on, and the channel it must be settled on. */
export interface Run {
  jobId: string
  message: AmqpMessage
  channel: AmqpChannel
  /** The queue it came from: interactive or bulk. */
  cls: JobClass
  /** Aborted to stop the job; the reason says why (Cancelled, Interrupted, or a JobError for the time limit). */
  stop: AbortController
  /** Acked at the ack deadline: the job no longer depends on its channel, and only its heartbeats vouch for it. */
  leased: boolean
}

/** The processor's hold on the broker, as the last setup left it. */
export interface BrokerHold {
  publisher?: Publisher
  /** The current connection and its channel, on which the consumer is (re)created. */
  link?: { model: AmqpModel; channel: AmqpConfirmChannel }
  /** The consumer of each class's request queue, while there is one. */
  consumers: Partial<Record<JobClass, { channel: AmqpChannel; tag: string; prefetch: number }>>
}

export interface ProcessorState<T extends MediaType> {
  definition: ProcessorDefinition<T>
  settings: ProcessorDefinition<T>['settings']
  events: ProcessorEvents
  log: Logger
  /** Each job's logger (its ids and trace on every line), from its delivery until its outcome is reported. */
  jobLogs: Map<string, Logger>
  logOf(jobId: string): Logger
  metrics: ProcessorMetrics
  /** How the AMQP layer logs and counts broker failures, and knows that the processor is stopping. */
  amqp: AmqpContext
  storage: Storage
  workDirs: ReturnType<typeof createWorkDirs>
  inFlight: Set<Promise<void>>
  /** The jobs running here by job id: to cancel, to lease, to interrupt when their channel dies, to hand back. */
  running: Map<string, Run>
  /** Aborts when the service stops: backoff waits end, and no consumer is created again. */
  stopping: AbortSignal
  /** Aborts when the shutdown's grace period is over: leased jobs stop retrying their publishes. */
  pastGrace: AbortSignal
  broker: BrokerHold
}
