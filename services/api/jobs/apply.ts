/**
 * What the API does with what the broker brings: processors' updates and results applied to the store, dead letters
 * kept for operators, and other instances' changes passed to this one's watchers. Every change applied here is
 * counted in the metrics and logged on the job's trace (the store announces it: changes.ts).
 */
import { traceFields, type Logger } from '@app/shared/ops'
import { parseTraceparent, type TraceContext } from '@app/shared'
import type { Handlers } from './broker.ts'
import type { Changes } from './changes.ts'
import { readDeadLetter } from './dead-letters.ts'
import type { ApiMetrics } from '../metrics.ts'
import { outputPrefix } from '../uploads/object-keys.ts'
import type { Objects } from '../s3/objects.ts'
import type { Applied } from '../store/jobs.ts'
import type { Store } from '../store/open.ts'

export function createHandlers(deps: {
  system: string
  store: Store
  objects: Objects
  changes: Pick<Changes, 'heard'>
  log: Logger
  metrics: ApiMetrics
}): Handlers {
  const { system, store, objects, changes, log, metrics } = deps
  /**
   * The lines of a job applied here carry its ids and the upload's trace (the job's own traceparent; the message's
   * when the job has none, as for jobs made before traces were kept).
   */
  const jobLog = (jobId: string, applied: Applied, sender: TraceContext | null) =>
    log.child({
      jobId,
      mediaId: applied.mediaId,
      tenant: applied.tenant,
      ...traceFields(parseTraceparent(applied.traceparent) ?? sender),
    })
  /** Removes outputs of a job: only keys under the job's own prefix (a message never names what else is deleted). */
  const removeOutputs = async (jobId: string, outputs: readonly { key: string }[]) => {
    const prefix = `${outputPrefix(system, jobId)}/`
    await Promise.all(outputs.filter((o) => o.key.startsWith(prefix)).map((o) => objects.remove(o.key)))
  }
  return {
    async onUpdate(_type, update, trace) {
      const applied = await store.media.applyUpdate(update)
      if (!applied?.changed) return
      metrics.applied(applied)
      if (applied.previous === 'queued')
        jobLog(update.jobId, applied, trace).info({ stage: update.stage }, 'job processing')
    },
    async onResult(_type, result, trace) {
      const applied = await store.media.applyResult(result)
      if (applied?.changed) {
        metrics.applied(applied)
        const line = jobLog(result.jobId, applied, trace)
        if (result.status === 'failed')
          line.warn(
            { status: result.status, code: result.error.code },
            `job failed: ${result.error.code}: ${result.error.message}`
          )
        else
          line.info(
            { status: result.status, outputs: result.status === 'completed' ? result.outputs.length : undefined },
            `job ${result.status}`
          )
      }
      // Outputs of a job that was cancelled (or whose media was deleted) before its result came: remove them, so
      // nothing of a cancelled job remains whichever way the race went.
      if (result.status === 'completed' && (!applied || applied.status === 'cancelled'))
        await removeOutputs(result.jobId, result.outputs)
      // A reprocess completed: the media serves its outputs now, and the earlier job's go (after the switch, so a
      // reader never meets a missing output).
      if (applied?.replaced) await removeOutputs(applied.replaced.jobId, applied.replaced.outputs)
    },
    async onDeadLetter(type, raw) {
      const { letter, failure } = readDeadLetter(type, raw)
      log.error(
        {
          jobId: letter.jobId ?? undefined,
          queue: letter.queue,
          reason: letter.reason,
          problem: letter.problem ?? undefined,
        },
        `dead letter from ${letter.queue} (${letter.reason})` + (letter.problem ? `: ${letter.problem}` : '')
      )
      const applied = await store.deadLetters.record(letter, failure)
      if (applied?.changed) metrics.applied(applied)
    },
    onMediaChanged: (change) => changes.heard(change),
  }
}
