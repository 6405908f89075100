/**
 * One attempt of a job, apart from the broker: the cancel-marker checks before the work and before reporting
 * completion, the media code run with its context, and the outcome sorted into a result, a fault or an
 * interruption. A cancelled job removes every output its request could have made, whichever attempt wrote them.
 */
import type { ErrorInfo, OutputInfo } from '../messages.ts'
import { cancelMarkerKey } from '../names.ts'
import type { Logger } from '../ops/log.ts'
import { OUTPUT_FORMATS, outputKey, type OutputFormat } from '../outputs.ts'
import { Cancelled, Interrupted, JobError } from './errors.ts'
import type { JobStorage, UploadBody } from './storage.ts'
import type { Stage } from './updates.ts'

/** What the media code gets for one job. */
export interface JobContext {
  /** A directory of the job's own, removed when the job ends. */
  workDir: string
  /** Aborts when the job is cancelled, runs past its time, or the processor stops it; its reason says which. */
  signal: AbortSignal
  /** Which attempt this is (1 for the first). */
  attempt: number
  /** Progress in a stage, 0-100; the runtime sends it at the protocol's rate. */
  report(stage: Stage, progress: number, etaSeconds?: number | null): void
  /** S3, stopped by `signal`. */
  storage: JobStorage
  /** The job's logger: its job, media and trace ids are on every line. */
  log: Logger
  /** Uploads output `name` (one the processor plans for the request) as `<output.prefix>/<name>.<extension>`. */
  putOutput(
    name: string,
    format: OutputFormat,
    body: UploadBody
  ): Promise<{ key: string; contentType: string; size: number }>
}

/** What the media code returns for a completed job. */
export interface JobOutput<M> {
  outputs: OutputInfo[]
  metadata: M
}

interface RequestLike {
  jobId: string
  output: { bucket: string; prefix: string }
}

export type JobResult<M> =
  | { version: 1; jobId: string; status: 'completed'; outputs: OutputInfo[]; metadata: M; at: string }
  | { version: 1; jobId: string; status: 'failed'; error: ErrorInfo; at: string }
  | { version: 1; jobId: string; status: 'cancelled'; at: string }

/** How an attempt ended: with a result to report, with a fault to retry, or without its delivery. */
export type Settled<M> =
  | { kind: 'result'; result: JobResult<M> }
  | { kind: 'fault'; error: unknown }
  | { kind: 'interrupted' }

/** An output a processor may write for a request: the keys a cancel removes. */
export interface PlannedOutput {
  name: string
  format: OutputFormat
}

export async function attemptJob<R extends RequestLike, M>(
  request: R,
  context: Omit<JobContext, 'putOutput'> & {
    planned: PlannedOutput[]
    cleanup: JobStorage
    /** Told of each output stored: its format, size and how long storing it took. */
    onOutput?: (format: OutputFormat, bytes: number, seconds: number) => void
  },
  handle: (request: R, job: JobContext) => Promise<JobOutput<M>>
): Promise<Settled<M>> {
  const { jobId, output } = request
  const { signal, storage } = context
  const marker = cancelMarkerKey(output.prefix)
  const keys = context.planned.map((p) => outputKey(output.prefix, p.name, p.format))
  const putOutput: JobContext['putOutput'] = async (name, format, body) => {
    const key = outputKey(output.prefix, name, format)
    // Only planned keys: they are what a cancel removes.
    if (!keys.includes(key)) throw new Error(`output ${key} is not among the outputs planned for job ${jobId}`)
    const { contentType } = OUTPUT_FORMATS[format]
    const started = performance.now()
    const size = await storage.upload(output.bucket, key, body, contentType)
    context.onOutput?.(format, size, (performance.now() - started) / 1000)
    return { key, contentType, size }
  }
  const at = () => new Date().toISOString()
  try {
    // A cancel whose broadcast this processor missed (it was away, or started later) left this marker.
    if (await storage.exists(output.bucket, marker)) throw new Cancelled('its cancel marker is set')
    const { planned: _planned, cleanup: _cleanup, onOutput: _onOutput, ...job } = context
    const done = await handle(request, { ...job, putOutput })
    signal.throwIfAborted()
    if (await storage.exists(output.bucket, marker)) throw new Cancelled('its cancel marker is set')
    return {
      kind: 'result',
      result: { version: 1, jobId, status: 'completed', outputs: done.outputs, metadata: done.metadata, at: at() },
    }
  } catch (error) {
    // Once the signal fired, its reason says why the job stopped, whatever the work threw on its way out.
    const reason = signal.aborted ? signal.reason : error
    if (reason instanceof Interrupted) return { kind: 'interrupted' }
    if (reason instanceof Cancelled) {
      // Every planned key, not only this attempt's uploads: an earlier attempt, here or elsewhere, may have written
      // some. Not with the job's signal, which has fired; a failure here is a fault, and the attempt is retried.
      try {
        await Promise.all(keys.map((key) => context.cleanup.remove(output.bucket, key)))
      } catch (failure) {
        return { kind: 'fault', error: failure }
      }
      return { kind: 'result', result: { version: 1, jobId, status: 'cancelled', at: at() } }
    }
    if (reason instanceof JobError)
      return { kind: 'result', result: { version: 1, jobId, status: 'failed', error: reason.toInfo(), at: at() } }
    return { kind: 'fault', error: reason }
  }
}
