/**
 * The one way an original stored in S3 becomes a media and its queued job, whichever way it was uploaded (a POST
 * body, a tus upload, a direct upload to S3): the media, its job and the job's request in one transaction (the
 * outbox, so a request is never lost in between), then the request sent. If the broker does not take it, everything
 * is undone (the original included) and the caller answers 503, so the client knows to retry.
 */
import { ImageRequestSchema, VideoRequestSchema, encodeMessage, queueNames, type ImageRequest, type MediaType } from '@app/shared'
import type { Logger } from '@app/shared/ops'
import type { Accepted } from './bodies.ts'
import { ApiError } from './errors.ts'
import type { Outbox } from './outbox.ts'
import { IMAGE_RECIPE, VIDEO_RECIPE, outputPrefix } from './recipes.ts'
import type { Storage } from './storage.ts'
import type { OutboxMessage, Store } from './store.ts'

export interface StoredOriginal {
  /** The media's id, chosen by the upload path (a tus upload's id is its media's). */
  id: string
  tenant: string
  filename: string | null
  kind: 'image' | 'video'
  format: string
  size: number
  sourceKey: string
  /** The upload's W3C traceparent: the job's trace. */
  traceparent: string
}

export interface AdmitDeps {
  system: string
  store: Store
  storage: Storage
  outbox: Outbox
}

export async function admitMedia(deps: AdmitDeps, original: StoredOriginal, log: Logger): Promise<Accepted> {
  const { id, sourceKey, traceparent } = original
  const jobId = crypto.randomUUID()
  const type: MediaType = original.kind === 'image' ? 'images' : 'videos'
  const source = { bucket: deps.storage.bucket, key: sourceKey, format: original.format, size: original.size }
  const request = jobRequest(deps, type, { jobId, mediaId: id, source })
  const jobLog = log.child({ mediaId: id, jobId, tenant: original.tenant })
  await deps.store.createMedia({
    id,
    tenant: original.tenant,
    filename: original.filename,
    kind: original.kind,
    format: original.format,
    size: original.size,
    bucket: source.bucket,
    sourceKey,
    jobId,
    type,
    request,
    traceparent,
  })
  try {
    await deps.outbox.send({ ...request, traceparent })
  } catch (error) {
    // Not accepted: undo, so that nothing half-made remains and the client knows to retry.
    await deps.store.deleteMedia(id)
    await deps.storage.delete(sourceKey).catch(() => {})
    jobLog.warn({ err: error }, `the job could not be queued: ${(error as Error).message}`)
    // The broker layer words these itself (not connected, refusing new messages and why); they hold no secrets.
    throw unavailable('queue_unavailable', `the job could not be queued (${(error as Error).message}); try again shortly`)
  }
  jobLog.info({ kind: original.kind, format: original.format, size: original.size }, 'upload accepted; job queued')
  return { id, jobId, kind: original.kind, status: 'queued' }
}

/** A 503 that tells the client when to try again. */
export const unavailable = (code: string, message: string) => new ApiError(503, code, message, { 'Retry-After': '5' })

/** The outbox row of a new job: its request to the type's processors, validated as it is encoded. */
function jobRequest(deps: AdmitDeps, type: MediaType, job: { jobId: string; mediaId: string; source: ImageRequest['source'] }): Omit<OutboxMessage, 'traceparent'> {
  const common = { version: 1 as const, ...job, output: { bucket: deps.storage.bucket, prefix: outputPrefix(deps.system, job.jobId) } }
  const body =
    type === 'images'
      ? encodeMessage(ImageRequestSchema, { ...common, recipe: IMAGE_RECIPE })
      : encodeMessage(VideoRequestSchema, { ...common, recipe: VIDEO_RECIPE })
  return { messageId: crypto.randomUUID(), jobId: job.jobId, queue: queueNames(deps.system, type).request, type: 'job.request', body }
}
