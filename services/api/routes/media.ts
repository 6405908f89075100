/** `/v1/media`: upload, read a media's state, and fetch its outputs. */
import { Hono } from 'hono'
import * as v from 'valibot'
import { ImageRequestSchema, VideoRequestSchema, encodeMessage, queueNames, type MediaType } from '@app/shared'
import type { AppDeps } from '../app.ts'
import { ApiError } from '../errors.ts'
import { receiveUpload } from '../intake.ts'
import { CONTENT_TYPES, IMAGE_RECIPE, VIDEO_RECIPE } from '../recipes.ts'
import type { MediaRecord } from '../store.ts'

const IdSchema = v.pipe(v.string(), v.uuid())
/** What uploads are taken; audio-only files are refused (no processor makes anything of them). */
const ACCEPTED_KINDS = ['image', 'video'] as const
/** Multipart framing (boundaries, part headers) on top of the file itself. */
const MULTIPART_SLACK = 64 * 1024

export function mediaRoutes(deps: AppDeps) {
  const app = new Hono()

  app.post('/', async (c) => {
    const declared = Number(c.req.header('content-length') ?? NaN)
    if (declared === 0) throw new ApiError(400, 'empty_body', 'the upload is empty')
    if (declared > deps.maxUploadBytes + MULTIPART_SLACK) {
      throw new ApiError(413, 'payload_too_large', `the upload is larger than the limit of ${deps.maxUploadBytes} bytes`)
    }
    const id = crypto.randomUUID()
    const jobId = crypto.randomUUID()
    const sourceKey = `${deps.system}/originals/${id}`
    const { sniffed, size } = await receiveUpload(
      c.req.raw,
      deps.maxUploadBytes,
      (sniffed, body) => deps.storage.put(sourceKey, body, CONTENT_TYPES[sniffed.format] ?? 'application/octet-stream'),
      ACCEPTED_KINDS
    )

    const type: MediaType = sniffed.kind === 'image' ? 'images' : 'videos'
    const common = {
      version: 1 as const,
      jobId,
      mediaId: id,
      source: { bucket: deps.storage.bucket, key: sourceKey, format: sniffed.format, size },
      output: { bucket: deps.storage.bucket, prefix: `${deps.system}/outputs/${jobId}` },
    }
    const body =
      type === 'images'
        ? encodeMessage(ImageRequestSchema, { ...common, recipe: IMAGE_RECIPE })
        : encodeMessage(VideoRequestSchema, { ...common, recipe: VIDEO_RECIPE })
    const request = { messageId: crypto.randomUUID(), jobId, queue: queueNames(deps.system, type).request, type: 'job.request', body }
    await deps.store.createMedia({ id, kind: sniffed.kind, format: sniffed.format, size, bucket: deps.storage.bucket, sourceKey, jobId, type, request })

    try {
      await deps.broker.publish(request.queue, body, { correlationId: jobId, type: request.type, messageId: request.messageId })
    } catch (error) {
      // Not accepted: undo, so that nothing half-made remains and the client knows to retry.
      await deps.store.deleteMedia(id)
      await deps.storage.delete(sourceKey).catch(() => {})
      throw new ApiError(503, 'queue_unavailable', `the job could not be queued (${(error as Error).message}); try again shortly`)
    }
    await deps.store.markPublished(request.messageId)
    c.header('Location', `/v1/media/${id}`)
    return c.json({ id, jobId, kind: sniffed.kind, status: 'queued' }, 202)
  })

  app.get('/:id', async (c) => {
    const media = await findMedia(deps, c.req.param('id'))
    return c.json(present(media, new URL(c.req.url).origin))
  })

  app.get('/:id/outputs/:name', async (c) => {
    const media = await findMedia(deps, c.req.param('id'))
    const name = c.req.param('name')
    const output = media.outputs.find((o) => o.name === name)
    if (!output) throw new ApiError(404, 'not_found', `media ${media.id} has no output named ${JSON.stringify(name)}`)
    const object = await deps.storage.get(output.key)
    if (!object) throw new ApiError(404, 'not_found', `the output ${name} of media ${media.id} is no longer stored`)
    return new Response(object.body, {
      headers: {
        'Content-Type': output.contentType,
        ...(object.size !== undefined ? { 'Content-Length': String(object.size) } : {}),
        // Outputs are written once per job: a new job writes new keys, so a cached copy never goes stale.
        'Cache-Control': 'private, max-age=86400, immutable',
      },
    })
  })

  return app
}

async function findMedia(deps: AppDeps, id: string): Promise<MediaRecord> {
  const media = v.is(IdSchema, id) ? await deps.store.getMedia(id) : undefined
  if (!media) throw new ApiError(404, 'not_found', `no media with id ${JSON.stringify(id)}`)
  return media
}

/** The public shape of a media record. */
export function present(media: MediaRecord, origin: string) {
  return {
    id: media.id,
    jobId: media.jobId,
    kind: media.kind,
    format: media.format,
    size: media.size,
    status: media.status,
    stage: media.stage,
    progress: media.progress,
    etaSeconds: media.etaSeconds,
    error: media.error,
    metadata: media.metadata,
    outputs: media.outputs.map((o) => ({
      name: o.name,
      contentType: o.contentType,
      size: o.size,
      width: o.width,
      height: o.height,
      ...(o.durationSeconds !== undefined ? { durationSeconds: o.durationSeconds } : {}),
      url: `${origin}/v1/media/${media.id}/outputs/${encodeURIComponent(o.name)}`,
    })),
    createdAt: media.createdAt,
    updatedAt: media.updatedAt,
  }
}
