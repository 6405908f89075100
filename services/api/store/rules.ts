/**
 * The rules that make applying updates and results idempotent, apart from any database: a job only moves forward,
 * and its first final state wins. The store applies them inside each change's transaction (jobs.ts).
 */
import {
  failureClassOf,
  isFinal,
  type ErrorInfo,
  type JobStatus,
  type JobUpdate,
  type OutputInfo,
  type ResultOf,
  type MediaType,
} from '@app/shared'

export type Stage = JobUpdate['stage']

export interface JobState {
  status: JobStatus
  stage: Stage
  progress: number
  etaSeconds: number | null
  error: ErrorInfo | null
  outputs: OutputInfo[]
}

export { isFinal }
const STAGE_ORDER: readonly Stage[] = ['queued', 'downloading', 'processing', 'uploading', 'finished']

/**
 * The job after an update, or null when the update changes nothing. Updates are advisory: status only moves from
 * `queued` to `processing`, and stage and progress only grow, so duplicates and reorderings leave the same state.
 * The final status is set by the result alone, which carries the outputs and metadata.
 */
export function afterUpdate(job: JobState, update: JobUpdate): JobState | null {
  if (isFinal(job.status)) return null
  const progress = Math.max(job.progress, Math.round(update.progress * 10) / 10)
  const stage = STAGE_ORDER.indexOf(update.stage) > STAGE_ORDER.indexOf(job.stage) ? update.stage : job.stage
  const etaSeconds =
    update.progress >= job.progress && update.etaSeconds !== undefined ? update.etaSeconds : job.etaSeconds
  const next: JobState = { ...job, status: 'processing', stage, progress, etaSeconds }
  const changed =
    next.status !== job.status ||
    next.stage !== job.stage ||
    next.progress !== job.progress ||
    next.etaSeconds !== job.etaSeconds
  return changed ? next : null
}

/** The job after its result, or null when it already has a final state (first result wins). */
export function afterResult(job: JobState, result: ResultOf<MediaType>): JobState | null {
  if (isFinal(job.status)) return null
  if (result.status === 'completed') {
    return {
      ...job,
      status: 'completed',
      stage: 'finished',
      progress: 100,
      etaSeconds: 0,
      error: null,
      outputs: result.outputs,
    }
  }
  if (result.status === 'failed')
    return { ...job, status: 'failed', stage: 'finished', etaSeconds: null, error: withClass(result.error) }
  return { ...job, status: 'cancelled', stage: 'finished', etaSeconds: null }
}

/** The error with its failure class, derived from the code where the processor did not say. */
export function withClass(error: ErrorInfo): ErrorInfo {
  return { ...error, class: error.class ?? failureClassOf(error.code) }
}
