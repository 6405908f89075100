/**
 * Reprocessing: a new job on a media's original, with other presets. The media serves its current outputs until the
 * new job completes, then the new ones, in the one transaction that applies the result (store/media.ts); the
 * earlier outputs are deleted after (apply.ts). A reprocess that fails or is cancelled leaves the media as it was.
 * One job of a media runs at a time: a reprocess while one runs is a 409.
 */
import { formatTraceparent, typeOfKind, type JobClass, type MediaType } from '@app/shared'
import type { Logger } from '@app/shared/ops'
import type { Accepted } from '../http/bodies.ts'
import { ApiError } from '../http/errors.ts'
import type { MediaRecord } from '../store/media.ts'
import { jobRequest, unavailable, type AdmitDeps, type Uploader } from '../uploads/admit.ts'
import type { Chosen } from '../uploads/presets.ts'
import { chooseClass } from './priority.ts'

export async function reprocessMedia(
  deps: AdmitDeps,
  media: MediaRecord,
  chosen: Chosen,
  uploader: Uploader & { log: Logger },
  asked: JobClass | null
): Promise<Accepted> {
  const { names, recipe } = chosen.recipeFor(media.kind)
  // Reprocessing is bulk work unless asked otherwise: a library's re-run must not hold up new uploads.
  const cls = await chooseClass(deps.store.quotas, media.tenant, asked ?? 'bulk', deps.fairShare)
  const jobId = crypto.randomUUID()
  const type: MediaType = typeOfKind(media.kind)
  const source = { bucket: media.bucket, key: media.sourceKey, format: media.format, size: media.size }
  const request = jobRequest(deps, type, { jobId, mediaId: media.id, source }, recipe, cls)
  const traceparent = formatTraceparent(uploader.trace)
  const added = await deps.store.media.addJob({ mediaId: media.id, jobId, type, presets: names, request, traceparent })
  if (added.outcome === 'missing') throw new ApiError(404, 'not_found', `no media with id ${media.id}`)
  if (added.outcome === 'busy') {
    throw new ApiError(
      409,
      'conflict',
      `media ${media.id} has a job still ${added.status} (${added.jobId}); reprocess it once that one is done`
    )
  }
  const log = uploader.log.child({ mediaId: media.id, jobId, tenant: media.tenant })
  try {
    await deps.outbox.send({ ...request, traceparent })
  } catch (error) {
    // Not accepted: the job goes, and the media is as it was.
    await deps.store.media.removeJob(jobId)
    log.warn({ err: error }, `the reprocess could not be queued: ${(error as Error).message}`)
    throw unavailable(
      'queue_unavailable',
      `the job could not be queued (${(error as Error).message}); try again shortly`
    )
  }
  log.info({ presets: names, class: cls }, 'reprocess queued')
  return { id: media.id, jobId, kind: media.kind, status: 'queued', priority: cls }
}
