/**
 * The one way an original stored in S3 becomes a media and its queued job, whichever way it was uploaded (a POST
 * body, a tus upload, a direct upload to S3): the media, its job and the job's request in one transaction (the
 * outbox, so a request is never lost in between), then the request sent. If the broker does not take it, everything
 * is undone (the original included) and the caller answers 503, so the client knows to retry.
 *
 * An upload that reached S3 without passing through the API's body reader (tus, direct) is judged here first, the
 * same way for both (`admitStored`): its size against the limit, its kind from its first bytes, and a refused one
 * removed with its record.
 */
import {
  MESSAGES,
  encodeMessage,
  formatTraceparent,
  queueNames,
  requestQueue,
  typeOfKind,
  type JobClass,
  type MediaKind,
  type MediaType,
  type RequestOf,
  type TraceContext,
} from '@app/shared'
import type { Logger } from '@app/shared/ops'
import type * as v from 'valibot'
import type { ApiMetrics } from '../metrics.ts'
import type { Accepted as AcceptedBody } from '../http/bodies.ts'
import { ApiError } from '../http/errors.ts'
import { onClientsBehalf } from '../s3/answers.ts'
import type { Outbox } from '../jobs/outbox.ts'
import type { Received } from './intake.ts'
import type { Chosen } from './presets.ts'
import { CONTENT_TYPES, originalKey, outputPrefix } from './object-keys.ts'
import type { Objects } from '../s3/objects.ts'
import type { DirectUpload } from '../store/uploads.ts'
import { judgeHead, tooLarge } from './rules.ts'
import { SNIFF_BYTES, type Sniffed } from './sniff.ts'
import { chooseClass } from '../jobs/priority.ts'
import { refineKind } from './tracks.ts'
import type { OutboxMessage } from '../store/outbox.ts'
import type { Store } from '../store/open.ts'

export interface StoredOriginal {
  /** The media's id, chosen by the upload path (a tus upload's id is its media's). */
  id: string
  tenant: string
  filename: string | null
  kind: MediaKind
  format: string
  size: number
  sourceKey: string
  /** The upload's W3C traceparent: the job's trace. */
  traceparent: string
  /** The presets chosen for it (uploads/presets.ts): resolved for its kind here. */
  chosen: Chosen
  /** The class asked for (by the request or its key; jobs/priority.ts), or null: decided here. */
  asked: JobClass | null
}

export interface AdmitDeps {
  system: string
  /** A tenant with more jobs waiting than this gets bulk jobs (0: off). */
  fairShare: number
  store: Store
  objects: Objects
  outbox: Outbox
}

export async function admitMedia(deps: AdmitDeps, original: StoredOriginal, log: Logger): Promise<AcceptedBody> {
  const { id, sourceKey, traceparent } = original
  const jobId = crypto.randomUUID()
  const type: MediaType = typeOfKind(original.kind)
  const source = { bucket: deps.objects.bucket, key: sourceKey, format: original.format, size: original.size }
  const { names, recipe } = original.chosen.recipeFor(original.kind)
  const cls = await chooseClass(deps.store.quotas, original.tenant, original.asked, deps.fairShare)
  const request = jobRequest(deps, type, { jobId, mediaId: id, source }, recipe, cls)
  const jobLog = log.child({ mediaId: id, jobId, tenant: original.tenant })
  await deps.store.media.create({
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
    presets: names,
  })
  try {
    await deps.outbox.send({ ...request, traceparent })
  } catch (error) {
    // Not accepted: undo, so that nothing half-made remains and the client knows to retry.
    await deps.store.media.remove(id)
    await deps.objects.remove(sourceKey).catch(() => {})
    jobLog.warn({ err: error }, `the job could not be queued: ${(error as Error).message}`)
    // The broker layer words these itself (not connected, refusing new messages and why); they hold no secrets.
    throw unavailable(
      'queue_unavailable',
      `the job could not be queued (${(error as Error).message}); try again shortly`
    )
  }
  jobLog.info(
    { kind: original.kind, format: original.format, size: original.size, class: cls },
    'upload accepted; job queued'
  )
  return { id, jobId, kind: original.kind, status: 'queued', priority: cls }
}

/** A 503 that tells the client when to try again. */
export const unavailable = (code: string, message: string) => new ApiError(503, code, message, { 'Retry-After': '5' })

/** The outbox row of a new job: its request to the type's processors (`cls`'s queue), validated as it is encoded. */
export function jobRequest(
  deps: Pick<AdmitDeps, 'system' | 'objects'>,
  type: MediaType,
  job: { jobId: string; mediaId: string; source: RequestOf<MediaType>['source'] },
  recipe: RequestOf<MediaType>['recipe'],
  cls: JobClass
): Omit<OutboxMessage, 'traceparent'> {
  const common = {
    version: 1 as const,
    ...job,
    output: { bucket: deps.objects.bucket, prefix: outputPrefix(deps.system, job.jobId) },
  }
  // Checked against the type's own schema as it is encoded: a recipe of another type fails here, not in a processor.
  const body = encodeMessage(MESSAGES[type].request as v.GenericSchema, { ...common, recipe })
  return {
    messageId: crypto.randomUUID(),
    jobId: job.jobId,
    queue: requestQueue(queueNames(deps.system, type), cls),
    type: 'job.request',
    body,
  }
}

/** Who is uploading, for the lines and the trace of the job. */
export interface Uploader {
  trace: TraceContext
  log: Logger
}

/**
 * Judges an upload already in S3 at `upload.key` and admits it: refused (the object, `alsoRemove` and the upload's
 * record removed) when it is missing (409, nothing to remove), empty (400), over `maxBytes` (413) or not an accepted
 * kind (415); otherwise its media and job, and the upload recorded as completed.
 */
export async function admitStored(
  deps: AdmitDeps & { maxUploadBytes: number },
  upload: DirectUpload,
  uploader: Uploader,
  options: { chosen: Chosen; asked: JobClass | null; size?: number; alsoRemove?: string[] }
): Promise<AcceptedBody> {
  const size = options.size ?? (await onClientsBehalf(() => deps.objects.size(upload.key)))
  if (size === null) throw new ApiError(409, 'conflict', `nothing has been uploaded to ${upload.key} yet`)
  const refuse = async (error: ApiError) => {
    await onClientsBehalf(() =>
      Promise.all([upload.key, ...(options.alsoRemove ?? [])].map((key) => deps.objects.remove(key)))
    )
    await deps.store.uploads.remove(upload.key)
    return error
  }
  if (size === 0) throw await refuse(new ApiError(400, 'empty_body', 'the upload is empty'))
  if (size > deps.maxUploadBytes) throw await refuse(tooLarge(deps.maxUploadBytes))
  let sniffed
  try {
    sniffed = judgeHead(await onClientsBehalf(() => deps.objects.readHead(upload.key, SNIFF_BYTES)))
    sniffed = await storedKind(deps.objects, upload.key, size, sniffed)
    // An MP4 found to hold only sound is audio: the presets chosen must fit that too (422 otherwise).
    options.chosen.recipeFor(sniffed.kind)
  } catch (error) {
    throw error instanceof ApiError && [415, 422].includes(error.status) ? await refuse(error) : error
  }
  const original = {
    id: upload.id,
    tenant: upload.tenant,
    filename: upload.filename,
    kind: sniffed.kind,
    format: sniffed.format,
    size,
    sourceKey: upload.key,
    chosen: options.chosen,
    asked: options.asked,
  }
  const accepted = await admitMedia(deps, { ...original, traceparent: formatTraceparent(uploader.trace) }, uploader.log)
  await deps.store.uploads.complete(upload.key, accepted.id)
  return accepted
}

/**
 * Stores a received upload (a POST body) as its media's original, then admits it: 503 when S3 cannot take it. The
 * upload's span is the job's trace: it goes with every copy of the request.
 */
export async function admitReceived(
  deps: AdmitDeps & { metrics: Pick<ApiMetrics, 's3Errors'> },
  uploader: Uploader & { tenant: string },
  received: Received,
  chosen: Chosen,
  asked: JobClass | null
): Promise<AcceptedBody> {
  // The presets must fit what the upload is before anything of it is stored (422 otherwise).
  try {
    chosen.recipeFor(received.sniffed.kind)
  } catch (error) {
    await received.body.cancel().catch(() => {})
    throw error
  }
  const id = crypto.randomUUID()
  const sourceKey = originalKey(deps.system, id)
  try {
    await deps.objects.put(
      sourceKey,
      received.body,
      CONTENT_TYPES[received.sniffed.format] ?? 'application/octet-stream'
    )
  } catch (error) {
    // The upload's own fault (over the limit, cut off) is the answer, however the store reported it.
    if (received.failure) throw received.failure
    deps.metrics.s3Errors.inc({ operation: 'put' })
    uploader.log.warn({ mediaId: id, err: error }, `storing the upload failed: ${(error as Error).message}`)
    throw unavailable('storage_unavailable', 'the upload could not be stored; try again shortly')
  }
  const { filename, size } = received
  let sniffed: Sniffed
  try {
    sniffed = await storedKind(deps.objects, sourceKey, size, received.sniffed)
    if (sniffed.kind !== received.sniffed.kind) chosen.recipeFor(sniffed.kind)
  } catch (error) {
    await deps.objects.remove(sourceKey).catch(() => {})
    throw error
  }
  const original = {
    id,
    tenant: uploader.tenant,
    filename,
    kind: sniffed.kind,
    format: sniffed.format,
    size,
    sourceKey,
    traceparent: formatTraceparent(uploader.trace),
    chosen,
    asked,
  }
  return admitMedia(deps, original, uploader.log)
}

/** What a stored original is, its tracks considered (tracks.ts): read with ranged GETs on the client's behalf. */
function storedKind(objects: Pick<Objects, 'get'>, key: string, size: number, sniffed: Sniffed): Promise<Sniffed> {
  return onClientsBehalf(() =>
    refineKind(
      sniffed,
      async (start, end) => {
        const object = await objects.get(key, { start, end: end - 1 })
        return object ? new Uint8Array(await new Response(object.body).arrayBuffer()) : new Uint8Array()
      },
      size
    )
  )
}
