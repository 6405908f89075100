/**
 * Stopping a media's job, and deleting a media. A cancel writes the job's cancel marker first (so a processor that
 * misses the broadcast still finds it), then records the cancel (the API's answer from then on), then broadcasts it
 * (so a running job stops within moments). The rule for a cancel racing completion: whichever final state the store
 * records first wins. A cancel recorded first makes any later result change nothing (and its outputs are deleted,
 * apply.ts); a result recorded first makes the cancel a 409.
 */
import { cancelMarkerKey } from '@app/shared'
import type { Logger } from '@app/shared/ops'
import { ApiError } from '../http/errors.ts'
import type { Objects } from '../s3/objects.ts'
import type { MediaRecord, MediaRepo } from '../store/media.ts'
import { isFinal } from '../store/rules.ts'
import { outputPrefix } from '../uploads/object-keys.ts'
import type { Broker } from './broker.ts'

export interface CancelDeps {
  system: string
  media: Pick<MediaRepo, 'cancel' | 'get' | 'remove'>
  objects: Pick<Objects, 'mark' | 'remove'>
  broker: Pick<Broker, 'broadcastCancel'>
}

/** The job a cancel stops: a reprocess while it runs, else the job whose outputs the media serves. */
function runningJob(media: MediaRecord): { jobId: string; status: MediaRecord['status'] } {
  return media.reprocess && !isFinal(media.reprocess.status) ? media.reprocess : media
}

/** Cancels the media's running job; 409 when it is final already, 503 when the marker cannot be written. */
export async function cancelJob(deps: CancelDeps, media: MediaRecord, log: Logger): Promise<void> {
  const job = runningJob(media)
  if (isFinal(job.status))
    throw new ApiError(409, 'conflict', `media ${media.id} is already ${job.status}; there is nothing to cancel`)
  const marker = cancelMarkerKey(outputPrefix(deps.system, job.jobId))
  try {
    await deps.objects.mark(marker)
  } catch (error) {
    log.warn({ err: error }, `writing the cancel marker failed: ${(error as Error).message}`)
    throw new ApiError(503, 'storage_unavailable', 'the cancel could not be recorded; try again')
  }
  const outcome = await deps.media.cancel(media.id)
  if (outcome?.outcome !== 'cancelled') {
    await deps.objects.remove(marker).catch(() => {})
    throw new ApiError(
      409,
      'conflict',
      `media ${media.id} is already ${outcome?.status ?? 'gone'}; there is nothing to cancel`
    )
  }
  await deps.broker.broadcastCancel(outcome.jobId).catch((error) => {
    log.warn(
      { err: error },
      `the cancel was not broadcast (${(error as Error).message}); processors will find its marker`
    )
  })
}

/** Cancels whatever is running, then deletes the media's objects and records (its `media.deleted` event with them). */
export async function deleteMedia(deps: CancelDeps, media: MediaRecord, log: Logger): Promise<void> {
  try {
    if (!isFinal(runningJob(media).status)) await cancelJob(deps, media, log)
  } catch (error) {
    // 409: it finished meanwhile, which is fine for a delete; anything else stops it.
    if (!(error instanceof ApiError && error.status === 409)) throw error
  }
  const fresh = (await deps.media.get(media.id)) ?? media
  const keys = [
    fresh.sourceKey,
    ...fresh.outputs.map((o) => o.key),
    cancelMarkerKey(outputPrefix(deps.system, fresh.jobId)),
    ...(fresh.reprocess ? [cancelMarkerKey(outputPrefix(deps.system, fresh.reprocess.jobId))] : []),
  ]
  await Promise.all(keys.map((key) => deps.objects.remove(key)))
  await deps.media.remove(media.id, { event: true })
}
