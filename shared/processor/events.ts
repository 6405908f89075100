/**
 * What a processor does with each job, as events: for tests to wait on (rather than on log sentences), for
 * metrics, and for the log itself (`logEvents`). Every event's detail names the job.
 */
import type { ErrorInfo } from '../messages.ts'
import type { JobClass } from '../names.ts'
import type { Logger } from '../ops/log.ts'

export interface ProcessorEventMap {
  /** A delivery of a job started running here, from the interactive or the bulk queue. */
  received: { jobId: string; attempt: number; cls: JobClass }
  /** The job held its delivery up to the ack deadline: acked, it carries on under a lease. */
  leased: { jobId: string }
  /** A fault; the job is tried again after `delayMs` (its delivery requeued, or a copy handed back). */
  retrying: { jobId: string; attempt: number; delayMs: number; reason: string }
  /** A copy of the request was published again: at shutdown, or after a fault of a leased job. */
  'handed-back': { jobId: string; attemptsMade: number; why: string }
  /** The job's result was confirmed by the broker. */
  completed: { jobId: string }
  failed: { jobId: string; error: ErrorInfo }
  cancelled: { jobId: string }
  /** The job lost its delivery (its channel closed) and stopped; the broker delivers it again. */
  interrupted: { jobId: string; why: string }
  /** A second delivery of a job running here, dropped (`requeued`: its run was interrupted, so the copy went back). */
  duplicate: { jobId: string; requeued: boolean }
  /** A message on the request queue that is not a valid request: dead-lettered (and failed, when it names a job). */
  refused: { jobId: string | null; messageId: string | null; reason: string }
  /** A leased job's result or hand-back could not be published; the backend's stall rule re-drives it. */
  lost: { jobId: string; what: string; reason: string }
}
export type ProcessorEventType = keyof ProcessorEventMap

export class ProcessorEvents extends EventTarget {
  emit<K extends ProcessorEventType>(type: K, detail: ProcessorEventMap[K]): void {
    this.dispatchEvent(new CustomEvent(type, { detail }))
  }

  on<K extends ProcessorEventType>(type: K, listener: (detail: ProcessorEventMap[K]) => void): () => void {
    const handler = (event: Event) => listener((event as CustomEvent<ProcessorEventMap[K]>).detail)
    this.addEventListener(type, handler)
    return () => this.removeEventListener(type, handler)
  }

  /** The next event of `type` that `match` accepts; rejects after `timeoutMs`, naming what it waited for. */
  next<K extends ProcessorEventType>(
    type: K,
    match: (detail: ProcessorEventMap[K]) => boolean = () => true,
    timeoutMs = 30_000
  ): Promise<ProcessorEventMap[K]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off()
        reject(new Error(`no "${type}" event came within ${timeoutMs} ms`))
      }, timeoutMs)
      const off = this.on(type, (detail) => {
        if (!match(detail)) return
        clearTimeout(timer)
        off()
        resolve(detail)
      })
    })
  }
}

/**
 * Writes one log line per event that an operator should see, with the job's own logger (`logOf`: its ids and trace
 * on every line). The message says what happened; the fields say to what.
 */
export function logEvents(events: ProcessorEvents, logOf: (jobId: string) => Logger, log: Logger): void {
  events.on('received', ({ jobId, attempt, cls }) => logOf(jobId).info({ attempt, class: cls }, 'job started'))
  events.on('leased', ({ jobId }) =>
    logOf(jobId).info('job still running at the ack deadline; acked, continuing under a lease')
  )
  events.on('retrying', ({ jobId, attempt, delayMs, reason }) =>
    logOf(jobId).error({ attempt, delayMs, reason }, `attempt ${attempt} hit a fault, retrying in ${delayMs / 1000} s`)
  )
  events.on('handed-back', ({ jobId, why, attemptsMade }) =>
    logOf(jobId).info({ why, attemptsMade }, `job handed back to the queue (${why})`)
  )
  events.on('completed', ({ jobId }) => logOf(jobId).info('job completed'))
  events.on('failed', ({ jobId, error }) =>
    logOf(jobId).warn({ code: error.code, error: error.message }, `job failed: ${error.code}: ${error.message}`)
  )
  events.on('cancelled', ({ jobId }) => logOf(jobId).info('job cancelled'))
  events.on('interrupted', ({ jobId, why }) =>
    logOf(jobId).warn({ why }, `job interrupted (${why}); the broker delivers it again`)
  )
  events.on('duplicate', ({ jobId, requeued }) =>
    logOf(jobId).warn({ requeued }, `job already running here; ${requeued ? 'requeued' : 'dropped'} a second delivery`)
  )
  events.on('refused', ({ jobId, messageId, reason }) =>
    log.error({ jobId: jobId ?? undefined, messageId, reason }, `dead-lettering a malformed request: ${reason}`)
  )
  events.on('lost', ({ jobId, what, reason }) =>
    logOf(jobId).error(
      { what, reason },
      `leased job LOST ${what} (${reason}); the backend re-drives the job once its heartbeats stop`
    )
  )
}
