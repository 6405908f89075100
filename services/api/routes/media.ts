/** `/v1/media`: upload, read a media's state, and fetch its outputs. */
import { Hono, type Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import { streamSSE } from 'hono/streaming'
import * as v from 'valibot'
import { MediaIdSchema, OutputNameSchema, cancelMarkerKey, formatTraceparent, type TraceContext } from '@app/shared'
import type { Logger } from '@app/shared/ops'
import { admitMedia, unavailable } from '../admit.ts'
import type { AppDeps } from '../app.ts'
import type { Caller, Keyed } from '../auth.ts'
import { AcceptedSchema, MediaListSchema, MediaSchema, OutputLinkSchema, type Accepted, type MediaList } from '../bodies.ts'
import { ApiError } from '../errors.ts'
import { claimKey, IDEMPOTENCY_KEY, idempotencyKeyOf, replay } from '../idempotency.ts'
import { receiveUpload, type Received } from '../intake.ts'
import { uploadSlots } from '../limits.ts'
import { uploadOutcome } from '../metrics.ts'
import { API_KEY, documenter, jsonAnswer } from '../openapi.ts'
import { CONTENT_TYPES, originalKey, outputPrefix } from '../recipes.ts'
import { isFinal, type MediaRecord } from '../store.ts'
import { present } from '../present.ts'
import { param, query } from '../validate.ts'
import { ListQuery, encodeCursor, mediaQuery } from '../listing.ts'
import { LINK_SECONDS, LINKS_PATH } from '../links.ts'
import { RANGE_PARAMETER, outputAnswers, outputOf, sendOutput } from '../send-output.ts'

/** What uploads are taken; audio-only files are refused (no processor makes anything of them). */
const ACCEPTED_KINDS = ['image', 'video'] as const
/** A malformed id names no media, so it answers as an unknown one does: 404. */
const MediaParams = v.object({ id: MediaIdSchema })
const OutputParams = v.object({ id: MediaIdSchema, name: OutputNameSchema })
const SECONDS_RULE = `must be a whole number of seconds from ${LINK_SECONDS.min} to ${LINK_SECONDS.max}`
const LinkQuery = v.object({
  expiresIn: v.optional(
    v.pipe(
      v.string(SECONDS_RULE),
      v.regex(/^\d{1,7}$/, SECONDS_RULE),
      v.transform(Number),
      v.minValue(LINK_SECONDS.min, SECONDS_RULE),
      v.maxValue(LINK_SECONDS.max, SECONDS_RULE),
      v.description(`How long the link works, in seconds: ${LINK_SECONDS.min} to ${LINK_SECONDS.max} (${LINK_SECONDS.default} when not given).`)
    ),
    String(LINK_SECONDS.default)
  ),
})

// Every media route needs the key and counts against its request rate (429).
const doc = documenter({ tag: 'media', security: API_KEY, errors: [401, 429] })
const BINARY = { type: 'string', format: 'binary' } as const

export function mediaRoutes(deps: AppDeps, keyed: Keyed) {
  return new Hono<Caller>()
    .use('*', keyed)

    .post('/', uploadDoc, countUpload(deps), uploadSlots(deps.limits.concurrentUploads), async (c) => {
      const seen = c.get('upload')
      const key = idempotencyKeyOf(c.req.header(IDEMPOTENCY_KEY))
      const claim = key ? await claimKey(deps.store, c.get('tenant'), key) : null
      const received = await receiveUpload(c.req.raw, { maxBytes: deps.maxUploadBytes, kinds: ACCEPTED_KINDS, pace: deps.limits.pace }).catch(
        async (error) => {
          if (claim && 'claimed' in claim) await claim.claimed.release()
          throw error
        }
      )
      const { sniffed } = received
      seen.kind = sniffed.kind
      seen.received = () => received.size
      if (claim && 'answered' in claim) {
        // A retry of an upload that was answered: read it only to compare it with the first, and store nothing.
        await drain(received.body)
        const again = replay(claim, received.sha256!)
        return c.json(again.body as Accepted, 202, again.headers)
      }
      try {
        const accepted = await storeAndAdmit(deps, { tenant: c.get('tenant'), log: c.get('log'), trace: c.get('trace') }, received)
        const location = `/v1/media/${accepted.id}`
        await claim?.claimed.answer(received.sha256!, { status: 202, body: JSON.stringify(accepted), location })
        c.header('Location', location)
        return c.json(accepted satisfies Accepted, 202)
      } catch (error) {
        // Nothing was made: a retry with the key runs afresh.
        await claim?.claimed.release().catch(() => {})
        throw error
      }
    })

    .get('/', listDoc, query(ListQuery), async (c) => {
      const wanted = mediaQuery(c.req.valid('query'))
      const origin = new URL(c.req.url).origin
      // One more than asked: whether there is a next page, without a count.
      const found = await deps.store.listMedia(c.get('tenant'), { ...wanted, limit: wanted.limit + 1 })
      const page = found.slice(0, wanted.limit)
      const next = found.length > wanted.limit ? encodeCursor(page.at(-1)!) : null
      return c.json({ media: page.map((media) => present(media, origin)), next } satisfies MediaList, 200)
    })

    .get('/:id', getDoc, param(MediaParams, 404), async (c) => {
      const media = await findMedia(deps, c.req.valid('param').id, c.get('tenant'))
      return c.json(present(media, new URL(c.req.url).origin), 200)
    })

    /**
     * Cancels the media's job. The rule for a cancel racing completion: whichever final state the store records first
     * wins. A cancel recorded first makes any later result change nothing (and the API deletes that result's
     * outputs); a result recorded first makes the cancel a 409.
     */
    .post('/:id/cancel', cancelDoc, param(MediaParams, 404), async (c) => {
      const media = await findMedia(deps, c.req.valid('param').id, c.get('tenant'))
      await cancelJob(deps, media, jobLog(c, media))
      return c.json(present((await deps.store.getMedia(media.id))!, new URL(c.req.url).origin), 200)
    })

    /** Cancels whatever is running and deletes the media's objects and records. */
    .delete('/:id', deleteDoc, param(MediaParams, 404), async (c) => {
      const media = await findMedia(deps, c.req.valid('param').id, c.get('tenant'))
      try {
        if (!isFinal(media.status)) await cancelJob(deps, media, jobLog(c, media))
      } catch (error) {
        // 409: it finished meanwhile, which is fine for a delete; anything else stops it.
        if (!(error instanceof ApiError && error.status === 409)) throw error
      }
      const fresh = (await deps.store.getMedia(media.id)) ?? media
      const keys = [fresh.sourceKey, ...fresh.outputs.map((o) => o.key), cancelMarkerKey(outputPrefix(deps.system, fresh.jobId))]
      await Promise.all(keys.map((key) => deps.storage.delete(key)))
      // With its `media.deleted` event for the tenant's webhooks, in the same transaction.
      await deps.store.deleteMedia(media.id, { announce: true })
      deps.changes.announce(media.id)
      return c.body(null, 204)
    })

    /**
     * Server-Sent Events: the current state first (event `state`), then each change, then the stream ends after the
     * final state. Changes applied here are heard at once; those applied by another API instance come over the events
     * fanout.
     */
    .get('/:id/events', eventsDoc, param(MediaParams, 404), async (c) => {
      const id = (await findMedia(deps, c.req.valid('param').id, c.get('tenant'))).id
      const origin = new URL(c.req.url).origin
      return streamSSE(c, async (stream) => {
        let last = ''
        let sequence = 0
        /** Sends the state if it changed; resolves true once there is nothing more to send. */
        const sendState = async (): Promise<boolean> => {
          const media = await deps.store.getMedia(id)
          if (!media) {
            await stream.writeSSE({ event: 'deleted', data: JSON.stringify({ id }) })
            return true
          }
          const data = JSON.stringify(present(media, origin))
          if (data !== last) {
            last = data
            await stream.writeSSE({ event: 'state', data, id: String(++sequence) })
          }
          return isFinal(media.status)
        }
        if (await sendState()) return
        await new Promise<void>((resolve) => {
          let queue = Promise.resolve(false)
          const finish = () => {
            unwatch()
            clearInterval(heartbeat)
            resolve()
          }
          // Sends run one after another, so states go out in order.
          const onChange = () => {
            queue = queue
              .then(async (done) => done || (await sendState()))
              .then(
                (done) => {
                  if (done) finish()
                  return done
                },
                () => {
                  finish() // the client went away mid-write
                  return true
                }
              )
          }
          const unwatch = deps.changes.watch(id, onChange)
          // A comment keeps proxies from closing an idle stream; the re-read covers an announcement that was lost.
          const heartbeat = setInterval(() => {
            stream.write(': keep-alive\n\n').catch(finish)
            onChange()
          }, HEARTBEAT_MS)
          stream.onAbort(finish)
          onChange() // a change between the first read and subscribing
        })
      })
    })

    /** A link to one output that works without the key until it expires: for an <img> or a <video>. */
    .get('/:id/outputs/:name/link', linkDoc, param(OutputParams, 404), query(LinkQuery), async (c) => {
      const { id, name } = c.req.valid('param')
      const media = await findMedia(deps, id, c.get('tenant'))
      outputOf(media, name)
      const expiresAt = Math.floor(Date.now() / 1000) + c.req.valid('query').expiresIn
      const url = `${new URL(c.req.url).origin}${LINKS_PATH}/${media.id}/${name}?${await deps.links.sign(media.id, name, expiresAt)}`
      return c.json({ url, expiresAt: new Date(expiresAt * 1000).toISOString() } satisfies v.InferOutput<typeof OutputLinkSchema>, 200)
    })

    .get('/:id/outputs/:name', outputDoc, param(OutputParams, 404), async (c) => {
      const { id, name } = c.req.valid('param')
      const media = await findMedia(deps, id, c.get('tenant'))
      return sendOutput(deps.storage, media, outputOf(media, name), c.req.header('range'), 86_400)
    })
}

const uploadDoc = doc({
  operationId: 'uploadMedia',
  summary: 'Upload an image or a video',
  description:
    'The file is the raw body (any Content-Type but multipart; what it is is judged from its first bytes, not its declared type or name) or the field `file` of a multipart/form-data body. It is stored, and a job to process it is queued. Follow it with GET /v1/media/{id}/events or GET /v1/media/{id}.',
  parameters: [
    {
      in: 'header',
      name: 'Content-Disposition',
      description: 'A raw body\'s file name (RFC 6266): `attachment; filename*=UTF-8\'\'…` or `attachment; filename="…"`. Kept as metadata only.',
      schema: { type: 'string' },
    },
    {
      in: 'header',
      name: 'X-Filename',
      description: 'A raw body\'s file name when there is no Content-Disposition; percent-encoded UTF-8 when it contains "%". Kept as metadata only.',
      schema: { type: 'string' },
    },
    {
      in: 'header',
      name: 'Idempotency-Key',
      description:
        'Any unique token (a UUID, say), sent again with a retry: within 24 hours a retry of an accepted upload gets the first answer (with `Idempotent-Replayed: true`) and creates nothing; the same key with a different file gets 422, and while the first request is still being answered, 409.',
      schema: { type: 'string', minLength: 1, maxLength: 255 },
    },
  ],
  requestBody: {
    required: true,
    content: {
      'application/octet-stream': { schema: { ...BINARY, description: 'The file itself.' } },
      'multipart/form-data': {
        schema: { type: 'object', properties: { file: { ...BINARY, description: 'The file; its part\'s filename is kept as metadata.' } }, required: ['file'] },
      },
    },
  },
  responses: {
    202: jsonAnswer('Stored, and its job queued.', AcceptedSchema, { Location: { description: 'The media: /v1/media/{id}.', schema: { type: 'string' } } }),
  },
  errors: [400, 408, 409, 413, 415, 422, 503],
})

const listDoc = doc({
  operationId: 'listMedia',
  summary: 'The media of this API key\'s tenant, newest first, a page at a time',
  description:
    'Filter by `status` and `kind` (each a comma-separated list); follow `next` as `cursor` for the next page. Pages are keyset-paged: media added meanwhile never make a page skip or repeat one.',
  responses: { 200: jsonAnswer('A page of media.', MediaListSchema) },
  errors: [400],
})

const getDoc = doc({
  operationId: 'getMedia',
  summary: 'A media\'s state, metadata and outputs',
  responses: { 200: jsonAnswer('The media.', MediaSchema) },
  errors: [404],
})

const cancelDoc = doc({
  operationId: 'cancelMedia',
  summary: 'Cancel the media\'s job',
  description: 'Whichever final state is recorded first wins: a job that completed or failed first makes the cancel a 409.',
  responses: { 200: jsonAnswer('Cancelled; the media as it is now.', MediaSchema) },
  errors: [404, 409, 503],
})

const deleteDoc = doc({
  operationId: 'deleteMedia',
  summary: 'Delete the media, its original and its outputs',
  description: 'A job still running is cancelled first.',
  responses: { 204: { description: 'Deleted.' } },
  errors: [404, 503],
})

const eventsDoc = doc({
  operationId: 'mediaEvents',
  summary: 'Follow a media\'s processing as Server-Sent Events',
  description:
    'Event `state` (with an increasing `id`) carries the media as GET /v1/media/{id} answers it: first the current state, then each change. The stream ends after a final state (completed, failed, cancelled), or after event `deleted` (data `{"id"}`) when the media is deleted. Comments keep an idle stream alive. EventSource cannot send the Authorization header; read the stream with fetch.',
  responses: {
    200: {
      description: 'The event stream.',
      content: { 'text/event-stream': { schema: { type: 'string', description: 'Events `state` (data: the Media JSON) and `deleted` (data: {"id"}).' } } },
    },
  },
  errors: [404],
})

const outputDoc = doc({
  operationId: 'getOutput',
  summary: 'The bytes of one output',
  description:
    'Outputs are written once per job, so they may be cached for good. One byte range (`Range: bytes=…`) is answered 206, as video players ask to seek. Without the key: a signed link (GET …/link).',
  parameters: [RANGE_PARAMETER],
  responses: outputAnswers('private, max-age=86400, immutable'),
  errors: [404, 416],
})

const linkDoc = doc({
  operationId: 'getOutputLink',
  summary: 'A signed link to one output, which works without the key until it expires',
  description:
    'For a browser: an <img> or <video> cannot send the API key, but can load this URL (with ranges, so a video streams and seeks). Any API instance serves it. Anyone holding the link can fetch that one output until `expiresAt`: hand it only to whom may see it.',
  responses: { 200: jsonAnswer('The link and when it stops working.', OutputLinkSchema) },
  errors: [400, 404],
})

const HEARTBEAT_MS = 15_000

/**
 * Cancels a media's job: first the marker (so a processor that misses the broadcast still finds it), then the
 * record (the API's answer from then on), then the broadcast (so a running job stops within moments).
 */
async function cancelJob(deps: AppDeps, media: MediaRecord, log: Logger): Promise<void> {
  if (isFinal(media.status)) throw new ApiError(409, 'conflict', `media ${media.id} is already ${media.status}; there is nothing to cancel`)
  const marker = cancelMarkerKey(outputPrefix(deps.system, media.jobId))
  try {
    await deps.storage.mark(marker)
  } catch (error) {
    log.warn({ err: error }, `writing the cancel marker failed: ${(error as Error).message}`)
    throw new ApiError(503, 'storage_unavailable', 'the cancel could not be recorded; try again')
  }
  const outcome = await deps.store.cancel(media.id)
  if (outcome?.outcome !== 'cancelled') {
    await deps.storage.delete(marker).catch(() => {})
    throw new ApiError(409, 'conflict', `media ${media.id} is already ${outcome?.status ?? 'gone'}; there is nothing to cancel`)
  }
  await deps.broker.broadcastCancel(outcome.jobId).catch((error) => {
    log.warn({ err: error }, `the cancel was not broadcast (${(error as Error).message}); processors will find its marker`)
  })
  deps.changes.announce(media.id)
}

/**
 * Stores a received upload as its media's original, then admits it (the media, its job, the request): 503 when S3
 * cannot take it. The upload's span is the job's trace: it goes with every copy of the request.
 */
async function storeAndAdmit(deps: AppDeps, caller: { tenant: string; log: Logger; trace: TraceContext }, received: Received): Promise<Accepted> {
  const id = crypto.randomUUID()
  const sourceKey = originalKey(deps.system, id)
  try {
    await deps.storage.put(sourceKey, received.body, CONTENT_TYPES[received.sniffed.format] ?? 'application/octet-stream')
  } catch (error) {
    // The upload's own fault (over the limit, cut off) is the answer, however the store reported it.
    if (received.failure) throw received.failure
    deps.metrics.s3Errors.inc({ operation: 'put' })
    caller.log.warn({ mediaId: id, err: error }, `storing the upload failed: ${(error as Error).message}`)
    throw unavailable('storage_unavailable', 'the upload could not be stored; try again shortly')
  }
  const original = {
    id,
    tenant: caller.tenant,
    filename: received.filename,
    kind: received.sniffed.kind,
    format: received.sniffed.format,
    size: received.size,
    sourceKey,
    traceparent: formatTraceparent(caller.trace),
  }
  return admitMedia(deps, original, caller.log)
}

/** Reads a stream to its end, keeping nothing (its reader hashes and counts it); its error is the upload's. */
async function drain(body: ReadableStream<Uint8Array>): Promise<void> {
  const reader = body.getReader()
  while (!(await reader.read()).done);
}

/** A request's logger, with the media's ids. */
const jobLog = (c: Context<Caller>, media: MediaRecord) => c.get('log').child({ mediaId: media.id, jobId: media.jobId, tenant: media.tenant })

/** What an upload was, as far as it got: counted (kind, outcome, bytes received) once it is answered. */
interface UploadSeen {
  kind: string
  received: () => number
}

/** Counts every upload once answered, whatever answered it (the slots' 429, a handler's error, or the 202). */
function countUpload(deps: AppDeps) {
  return createMiddleware<{ Variables: { upload: UploadSeen } }>(async (c, next) => {
    const seen: UploadSeen = { kind: 'unknown', received: () => 0 }
    c.set('upload', seen)
    await next()
    deps.metrics.upload(seen.kind, uploadOutcome(c.res.status), seen.received())
  })
}

/**
 * The media of a validated id, if the caller's tenant owns it; otherwise 404, the same answer as for an id that
 * does not exist, so a tenant cannot even learn that another's media exists. Every media route goes through here.
 */
async function findMedia(deps: AppDeps, id: string, tenant: string): Promise<MediaRecord> {
  const media = await deps.store.getMedia(id)
  if (!media || media.tenant !== tenant) throw new ApiError(404, 'not_found', `no media with id ${id}`)
  return media
}
