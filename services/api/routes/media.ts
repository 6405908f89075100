/**
 * `/v1/media`: upload, list, read a media's state, follow it (Server-Sent Events), cancel or delete it, and fetch its
 * outputs or a signed link to one. Every route needs the key and counts against its request rate (429); a media of
 * another tenant answers as one that does not exist (404).
 */
import { Hono, type Context } from 'hono'
import { createMiddleware } from 'hono/factory'
import * as v from 'valibot'
import { MediaIdSchema, OutputNameSchema } from '@app/shared'
import type { Caller, Keyed } from '../auth/access.ts'
import { LINK_SECONDS, signedUrl, type Links } from '../auth/links.ts'
import {
  AcceptedSchema,
  MediaListSchema,
  MediaSchema,
  OutputLinkSchema,
  PlaybackSchema,
  PrioritySchema,
  type Accepted,
  type MediaList,
  type Playback,
} from '../http/bodies.ts'
import { ApiError } from '../http/errors.ts'
import { uploadSlots } from '../http/limits.ts'
import { ListQuery, encodeCursor, mediaQuery } from '../http/listing.ts'
import { followMedia } from '../http/media-events.ts'
import { API_KEY, documenter, eventStreamAnswer, jsonAnswer } from '../http/openapi.ts'
import { playbackOf, playbackSeconds } from '../playback/playback.ts'
import type { PaceRule } from '../uploads/pace.ts'
import { present } from '../http/present.ts'
import { OutputPathSchema, RANGE_PARAMETER, outputAnswers, outputOf, sendOutput } from '../http/send-output.ts'
import { json, param, query } from '../http/validate.ts'
import { cancelJob, deleteMedia, type CancelDeps } from '../jobs/cancel.ts'
import { askedClass } from '../jobs/priority.ts'
import { reprocessMedia } from '../jobs/reprocess.ts'
import type { Changes } from '../jobs/changes.ts'
import type { EventRepo } from '../store/events.ts'
import type { ApiMetrics } from '../metrics.ts'
import { uploadOutcome } from '../metrics.ts'
import type { Objects } from '../s3/objects.ts'
import type { MediaRecord, MediaRepo } from '../store/media.ts'
import type { IdempotencyRepo } from '../store/uploads.ts'
import { admitReceived, type AdmitDeps } from '../uploads/admit.ts'
import { IDEMPOTENCY_KEY, idempotently } from '../uploads/idempotency.ts'
import { receiveUpload } from '../uploads/intake.ts'
import { PresetArraySchema, PresetListSchema, type Presets } from '../uploads/presets.ts'
import type { LimitRepo } from '../store/limits.ts'
import { checkQuota, declaredLength } from '../uploads/quota.ts'

/** The presets an upload is made with: `?presets=a,b`, or the `X-Presets` header; neither: the tenant's defaults. */
const PRESETS_HEADER = 'X-Presets'
const UploadQuery = v.object({
  presets: v.optional(
    v.pipe(PresetListSchema, v.description("The presets to make, comma-separated (the tenant's defaults when absent)."))
  ),
  priority: v.optional(PrioritySchema),
})
const ReprocessBody = v.object({
  presets: v.optional(
    v.pipe(PresetArraySchema, v.description("The presets to make (the tenant's defaults when absent)."))
  ),
  priority: v.optional(
    v.pipe(PrioritySchema, v.description('bulk unless asked otherwise: a reprocess should not hold up new uploads.'))
  ),
})
/** The `X-Presets` header's names, or null when absent; 400 when it is not a list of preset names. */
function presetsHeader(header: string | undefined): string[] | null {
  if (header === undefined) return null
  const parsed = v.safeParse(PresetListSchema, header)
  if (!parsed.success) throw new ApiError(400, 'bad_request', `header ${PRESETS_HEADER} ${parsed.issues[0].message}`)
  return parsed.output
}

/** A malformed id names no media, so it answers as an unknown one does: 404. */
const MediaParams = v.object({ id: MediaIdSchema })
const OutputParams = v.object({ id: MediaIdSchema, name: OutputNameSchema })
const OutputFileParams = v.object({ id: MediaIdSchema, name: OutputPathSchema })
const SECONDS_RULE = `must be a whole number of seconds from ${LINK_SECONDS.min} to ${LINK_SECONDS.max}`
const Seconds = (description: string) =>
  v.pipe(
    v.string(SECONDS_RULE),
    v.regex(/^\d{1,7}$/, SECONDS_RULE),
    v.transform(Number),
    v.minValue(LINK_SECONDS.min, SECONDS_RULE),
    v.maxValue(LINK_SECONDS.max, SECONDS_RULE),
    v.description(description)
  )
const LinkQuery = v.object({
  expiresIn: v.optional(
    Seconds(
      `How long the link works, in seconds: ${LINK_SECONDS.min} to ${LINK_SECONDS.max} (${LINK_SECONDS.default} when not given).`
    ),
    String(LINK_SECONDS.default)
  ),
})
const PlaybackQuery = v.object({
  expiresIn: v.optional(
    Seconds(
      `How long the links work, in seconds: ${LINK_SECONDS.min} to ${LINK_SECONDS.max} (when not given, ${LINK_SECONDS.default} or twice the video's duration, whichever is longer).`
    )
  ),
})

export interface MediaRouteDeps extends AdmitDeps, CancelDeps {
  media: MediaRepo
  objects: Objects
  idempotency: IdempotencyRepo
  changes: Pick<Changes, 'watch'>
  /** The event log: the per-media stream's ids are its numbers. */
  events: Pick<EventRepo, 'latestOf'>
  links: Links
  presets: Presets
  metrics: Pick<ApiMetrics, 'upload' | 's3Errors'>
  maxUploadBytes: number
  /** Per key: uploads in flight, and how slow an upload may be. */
  limits: { concurrentUploads: number; pace: PaceRule }
  /** Where the uploads in flight are counted across instances (PostgreSQL), or null (in memory). */
  sharedLimits: LimitRepo | null
}

export function mediaRoutes(deps: MediaRouteDeps, keyed: Keyed) {
  return (
    new Hono<Caller>()
      .use('*', keyed)

      .post(
        '/',
        uploadDoc,
        countUpload(deps.metrics),
        uploadSlots(deps.limits.concurrentUploads, deps.sharedLimits),
        query(UploadQuery),
        async (c) => {
          const seen = c.get('upload')
          // Before a byte is read: unknown presets are refused (422), and nothing is stored.
          const presets = c.req.valid('query').presets ?? presetsHeader(c.req.header(PRESETS_HEADER))
          const chosen = await deps.presets.choose(c.get('tenant'), presets)
          const outcome = await idempotently<Accepted>(
            deps.idempotency,
            c.get('tenant'),
            c.req.header(IDEMPOTENCY_KEY),
            async (retry) => {
              // Over its quota, a tenant's upload is refused before a byte is read (a retry of an accepted one is not
              // a new upload). The size is the body's declared length, when there is one.
              if (!retry)
                await checkQuota(deps.store.quotas, c.get('tenant'), declaredLength(c.req.header('content-length')))
              const received = await receiveUpload(c.req.raw, {
                maxBytes: deps.maxUploadBytes,
                pace: deps.limits.pace,
                fingerprint: c.req.header(IDEMPOTENCY_KEY) !== undefined,
              })
              seen.kind = received.sniffed.kind
              seen.received = () => received.size
              if (retry) {
                // A retry of an upload that was answered: read it only to compare it with the first, and store nothing.
                await drain(received.body)
                return { replayed: retry.replay(received.sha256!) }
              }
              const asked = askedClass(c.req.valid('query').priority, c.get('keyPriority'))
              const accepted = await admitReceived(deps, c.var, received, chosen, asked)
              // (Hashed only when an Idempotency-Key asked for it: without one, no fingerprint is kept.)
              return { created: accepted, fingerprint: received.sha256 ?? '', location: `/v1/media/${accepted.id}` }
            }
          )
          if ('replayed' in outcome) return c.json(outcome.replayed.body as Accepted, 202, outcome.replayed.headers)
          c.header('Location', outcome.location)
          return c.json(outcome.created satisfies Accepted, 202)
        }
      )

      .get('/', listDoc, query(ListQuery), async (c) => {
        const wanted = mediaQuery(c.req.valid('query'))
        const origin = new URL(c.req.url).origin
        // One more than asked: whether there is a next page, without a count.
        const found = await deps.media.list(c.get('tenant'), { ...wanted, limit: wanted.limit + 1 })
        const page = found.slice(0, wanted.limit)
        const next = found.length > wanted.limit ? encodeCursor(page.at(-1)!) : null
        return c.json({ media: page.map((media) => present(media, origin)), next } satisfies MediaList, 200)
      })

      .get('/:id', getDoc, param(MediaParams, 404), async (c) => {
        const media = await findMedia(deps, c.req.valid('param').id, c.get('tenant'))
        return c.json(present(media, new URL(c.req.url).origin), 200)
      })

      /**
       * A new job on the media's original with the presets given (its tenant's defaults when none): the media keeps
       * serving its outputs until the new ones are made (jobs/reprocess.ts).
       */
      .post('/:id/reprocess', reprocessDoc, param(MediaParams, 404), json(ReprocessBody), async (c) => {
        const media = await findMedia(deps, c.req.valid('param').id, c.get('tenant'))
        const { presets, priority } = c.req.valid('json')
        const chosen = await deps.presets.choose(c.get('tenant'), presets ?? null)
        const accepted = await reprocessMedia(deps, media, chosen, c.var, askedClass(priority, c.get('keyPriority')))
        c.header('Location', `/v1/media/${media.id}`)
        return c.json(accepted satisfies Accepted, 202)
      })

      /** Cancels the media's job (jobs/cancel.ts: whichever final state is recorded first wins). */
      .post('/:id/cancel', cancelDoc, param(MediaParams, 404), async (c) => {
        const media = await findMedia(deps, c.req.valid('param').id, c.get('tenant'))
        await cancelJob(deps, media, jobLog(c, media))
        return c.json(present((await deps.media.get(media.id))!, new URL(c.req.url).origin), 200)
      })

      /** Cancels whatever is running and deletes the media's objects and records. */
      .delete('/:id', deleteDoc, param(MediaParams, 404), async (c) => {
        const media = await findMedia(deps, c.req.valid('param').id, c.get('tenant'))
        await deleteMedia(deps, media, jobLog(c, media))
        return c.body(null, 204)
      })

      /** Server-Sent Events: the current state, each change, then the end (http/media-events.ts). */
      .get('/:id/events', eventsDoc, param(MediaParams, 404), async (c) => {
        const media = await findMedia(deps, c.req.valid('param').id, c.get('tenant'))
        return followMedia(c, deps, media.id)
      })

      /** A link to one output that works without the key until it expires: for an <img> or a <video>. */
      .get('/:id/outputs/:name/link', linkDoc, param(OutputParams, 404), query(LinkQuery), async (c) => {
        const { id, name } = c.req.valid('param')
        const media = await findMedia(deps, id, c.get('tenant'))
        outputOf(media, name)
        const expiresAt = Math.floor(Date.now() / 1000) + c.req.valid('query').expiresIn
        const url = await signedUrl(deps.links, new URL(c.req.url).origin, { id: media.id, name }, expiresAt)
        return c.json(
          { url, expiresAt: new Date(expiresAt * 1000).toISOString() } satisfies v.InferOutput<typeof OutputLinkSchema>,
          200
        )
      })

      /** Signed links to play the video with no key: HLS, storyboard, poster, downloads (playback/playback.ts). */
      .get('/:id/playback', playbackDoc, param(MediaParams, 404), query(PlaybackQuery), async (c) => {
        const media = await findMedia(deps, c.req.valid('param').id, c.get('tenant'))
        const seconds = c.req.valid('query').expiresIn ?? playbackSeconds(media)
        const expiresAt = Math.floor(Date.now() / 1000) + seconds
        const origin = new URL(c.req.url).origin
        return c.json((await playbackOf(media, { origin, expiresAt, links: deps.links })) satisfies Playback, 200)
      })

      .get('/:id/outputs/:name', outputDoc, param(OutputFileParams, 404), async (c) => {
        const {
          id,
          name: { name, file },
        } = c.req.valid('param')
        const media = await findMedia(deps, id, c.get('tenant'))
        // A playlist's addresses are its outputs' file names, beside it under this route (a player sends the key).
        const output = outputOf(media, name, file)
        return sendOutput(deps.objects, media, output, c.req.header('range'), 86_400, { kind: 'keyed' })
      })
  )
}

// Every media route needs the key and counts against its request rate (429).
const doc = documenter({ tag: 'media', security: API_KEY, errors: [401, 429] })
const BINARY = { type: 'string', format: 'binary' } as const

const uploadDoc = doc({
  operationId: 'uploadMedia',
  summary: 'Upload an image or a video',
  description:
    'The file is the raw body (any Content-Type but multipart; what it is is judged from its first bytes, not its declared type or name) or the field `file` of a multipart/form-data body. It is stored, and a job to process it is queued. Follow it with GET /v1/media/{id}/events or GET /v1/media/{id}.',
  parameters: [
    {
      in: 'header',
      name: 'Content-Disposition',
      description:
        "A raw body's file name (RFC 6266): `attachment; filename*=UTF-8''…` or `attachment; filename=\"…\"`. Kept as metadata only.",
      schema: { type: 'string' },
    },
    {
      in: 'header',
      name: 'X-Filename',
      description:
        'A raw body\'s file name when there is no Content-Disposition; percent-encoded UTF-8 when it contains "%". Kept as metadata only.',
      schema: { type: 'string' },
    },
    {
      in: 'header',
      name: 'X-Presets',
      description:
        "The presets to make, comma-separated, as `?presets=` (which wins when both are given). Neither: the tenant's defaults. An unknown name is refused (422) before anything is stored.",
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
        schema: {
          type: 'object',
          properties: { file: { ...BINARY, description: "The file; its part's filename is kept as metadata." } },
          required: ['file'],
        },
      },
    },
  },
  responses: {
    202: jsonAnswer('Stored, and its job queued.', AcceptedSchema, {
      Location: { description: 'The media: /v1/media/{id}.', schema: { type: 'string' } },
    }),
  },
  errors: [400, 408, 409, 413, 415, 422, 503],
})

const listDoc = doc({
  operationId: 'listMedia',
  summary: "The media of this API key's tenant, newest first, a page at a time",
  description:
    'Filter by `status` and `kind` (each a comma-separated list); follow `next` as `cursor` for the next page. Pages are keyset-paged: media added meanwhile never make a page skip or repeat one.',
  responses: { 200: jsonAnswer('A page of media.', MediaListSchema) },
  errors: [400],
})

const getDoc = doc({
  operationId: 'getMedia',
  summary: "A media's state, metadata and outputs",
  responses: { 200: jsonAnswer('The media.', MediaSchema) },
  errors: [404],
})

const reprocessDoc = doc({
  operationId: 'reprocessMedia',
  summary: "Make the media's outputs again, with other presets",
  description:
    "A new job on the same original. The media keeps serving its current outputs until the new job completes, then serves the new ones (and the earlier are deleted); a reprocess that fails or is cancelled leaves it as it was. Its progress is the media's `reprocess`. Webhooks get `media.completed` again when it completes. One job of a media runs at a time (409 while one does).",
  responses: { 202: jsonAnswer('The job, queued.', AcceptedSchema) },
  errors: [400, 404, 409, 422, 503],
})

const cancelDoc = doc({
  operationId: 'cancelMedia',
  summary: "Cancel the media's job",
  description:
    'Whichever final state is recorded first wins: a job that completed or failed first makes the cancel a 409.',
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
  summary: "Follow a media's processing as Server-Sent Events",
  description:
    "Event `state` carries the media as GET /v1/media/{id} answers it: first the current state, then each change; its `id` is the number of the media's latest change in the tenant's event log, and `Last-Event-ID` skips a state the client has (a final media's stream then ends at once). The stream ends after a final state (completed, failed, cancelled; while a reprocess runs, after its final state), or after event `deleted` (data `{\"id\"}`) when the media is deleted. Comments keep an idle stream alive. EventSource cannot send the Authorization header; read the stream with fetch.",
  responses: {
    200: eventStreamAnswer('Events `state` (data: the Media JSON) and `deleted` (data: {"id"}).'),
  },
  errors: [404],
})

const playbackDoc = doc({
  operationId: 'getPlayback',
  summary: 'Signed links to play a video with no API key: HLS, storyboard, poster and downloads',
  description:
    'Give `hls` to hls.js or to a native player (`<video src>` on Safari): the playlists are served with every address in them rewritten into a link with the same expiry, and segments are fetched by byte range (206). Past `expiresAt`, or with a link changed in any way, the links answer 403: ask again. Any API instance serves them. While a reprocess runs the current outputs are played.',
  responses: { 200: jsonAnswer('The links.', PlaybackSchema) },
  errors: [400, 404, 409],
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

/** Reads a stream to its end, keeping nothing (its reader hashes and counts it); its error is the upload's. */
async function drain(body: ReadableStream<Uint8Array>): Promise<void> {
  const reader = body.getReader()
  while (!(await reader.read()).done);
}

/** A request's logger, with the media's ids. */
const jobLog = (c: Context<Caller>, media: MediaRecord) =>
  c.get('log').child({ mediaId: media.id, jobId: media.jobId, tenant: media.tenant })

/** What an upload was, as far as it got: counted (kind, outcome, bytes received) once it is answered. */
interface UploadSeen {
  kind: string
  received: () => number
}

/** Counts every upload once answered, whatever answered it (the slots' 429, a handler's error, or the 202). */
function countUpload(metrics: Pick<ApiMetrics, 'upload'>) {
  return createMiddleware<{ Variables: { upload: UploadSeen } }>(async (c, next) => {
    const seen: UploadSeen = { kind: 'unknown', received: () => 0 }
    c.set('upload', seen)
    await next()
    metrics.upload(seen.kind, uploadOutcome(c.res.status), seen.received())
  })
}

/**
 * The media of a validated id, if the caller's tenant owns it; otherwise 404, the same answer as for an id that
 * does not exist, so a tenant cannot even learn that another's media exists. Every media route goes through here.
 */
async function findMedia(deps: { media: Pick<MediaRepo, 'get'> }, id: string, tenant: string): Promise<MediaRecord> {
  const media = await deps.media.get(id)
  if (!media || media.tenant !== tenant) throw new ApiError(404, 'not_found', `no media with id ${id}`)
  return media
}
