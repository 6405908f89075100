/**
 * @module @app/shared/processor: the consumer half of the protocol, for processors written in TypeScript. Not
 * re-exported by `@app/shared`, so a backend that needs only the schemas pulls in valibot alone.
 */
export type { AmqpConnect } from '../amqp/types.ts'
export { attemptOf } from './attempts.ts'
export { AllowedBucketsSchema, confinementFailure, type BucketScope } from './buckets.ts'
export { ProcessorEnv, configReader, runtimeSettings, type RuntimeSettings } from './config.ts'
export type { ProcessorDefinition } from './definition.ts'
export { Cancelled, Interrupted, JobError, describeError, untilAborted } from './errors.ts'
export {
  ffmpegArgv,
  ffmpegFailure,
  ffprobe,
  demuxersOf,
  inputGuard,
  parseClock,
  runFfmpeg,
  spawnCapture,
  tidyStderr,
  type FfmpegOptions,
  type FfmpegRun,
  type FfprobeOutput,
  type FfprobeStream,
} from './ffmpeg.ts'
export { ProcessorEvents, type ProcessorEventMap, type ProcessorEventType } from './events.ts'
export type { JobContext, JobOutput, PlannedOutput } from './job.ts'
export { byteLimitFailure, formatBytes, overLimit, type ByteLimit } from './limits.ts'
export { runProcessor } from './main.ts'
export { downloadOriginal, fetchOriginal } from './original.ts'
export { startProcessor, type Processor } from './runtime.ts'
export { etaSeconds } from './updates.ts'
export type { JobStorage, UploadBody } from './storage.ts'
