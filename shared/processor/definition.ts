/** What a processor gives the runtime: its settings, amqplib's `connect`, and its media (the outputs and the job). */
import type { AmqpConnect } from '../amqp/types.ts'
import type { MetadataOf, RequestOf } from '../messages.ts'
import type { MediaType } from '../names.ts'
import type { Logger } from '../ops/log.ts'
import type { RuntimeSettings } from './config.ts'
import type { JobContext, JobOutput, PlannedOutput } from './job.ts'

export interface ProcessorDefinition<T extends MediaType> {
  settings: RuntimeSettings & { type: T }
  /** amqplib's `connect`. */
  connect: AmqpConnect
  /** Every output a request may make (what a cancel removes). */
  outputs(request: RequestOf<T>): PlannedOutput[]
  /** Makes one job's outputs. Throws a JobError for an expected failure; anything else it throws is a fault. */
  handle(request: RequestOf<T>, job: JobContext): Promise<JobOutput<MetadataOf<T>>>
  /** Where the processor logs; by default JSON lines on stdout at `settings.log`'s level. */
  log?: Logger
}
