/**
 * The JSON bodies the API answers with, as valibot schemas. The OpenAPI document shows them (`resolver`), and the
 * handlers build their answers `satisfies` them, so a body and its documentation cannot drift apart without tsc
 * failing; `hc` clients see the same types. `ref` metadata makes a schema a named component of the document.
 */
import * as v from 'valibot'
import {
  ErrorInfoSchema,
  ImageMetadataSchema,
  JOB_STATUSES,
  JobClassSchema,
  JobIdSchema,
  MEDIA_KIND_LIST,
  MEDIA_TYPES,
  MediaIdSchema,
  OutputInfoSchema,
  STAGES,
  VideoMetadataSchema,
} from '@app/shared'
import { WEBHOOK_EVENTS } from '../store/webhooks.ts'

const Count = v.pipe(v.number(), v.integer(), v.minValue(0))
const Timestamp = v.pipe(
  v.string(),
  v.isoTimestamp(),
  v.description('An RFC 3339 timestamp in UTC, e.g. 2026-11-22T08:00:00.000Z.')
)
const Uuid = v.pipe(v.string(), v.uuid())
/** A job's class: which request queue it waits in (docs/scheduling.md). */
export const PrioritySchema = v.pipe(
  JobClassSchema,
  v.description(
    "interactive (an upload someone waits for: the default) or bulk (reprocessing, re-drives, imports: run after interactive work, on all but one of a processor's slots). A tenant with more jobs waiting than the fair share, or a bulk key, gets bulk whatever is asked."
  )
)

const Kind = v.pipe(
  v.picklist(MEDIA_KIND_LIST),
  v.description('What the upload is: image, video or audio, judged from its content.')
)

// ── Media ────────────────────────────────────────────────────────────────────────────────────────────────────

const { key: _key, ...outputEntries } = OutputInfoSchema.entries
export const MediaOutputSchema = v.pipe(
  v.object({
    ...outputEntries,
    url: v.pipe(
      v.string(),
      v.url(),
      v.description('Where to fetch it: GET /v1/media/{id}/outputs/{name}, with the same API key.')
    ),
  }),
  v.metadata({ ref: 'MediaOutput' })
)

export const MediaSchema = v.pipe(
  v.object({
    id: v.pipe(MediaIdSchema, v.description('The media: a UUID.')),
    jobId: v.pipe(JobIdSchema, v.description('Its processing job: a UUID.')),
    kind: Kind,
    filename: v.pipe(
      v.nullable(v.string()),
      v.description('The name the client gave the file, made harmless to display; metadata only.')
    ),
    format: v.pipe(
      v.string(),
      v.description('The format judged from the first bytes: jpeg, png, webp, heic, mp4, mov, …')
    ),
    size: v.pipe(Count, v.description("The original's size in bytes.")),
    status: v.pipe(
      v.picklist(JOB_STATUSES),
      v.description('completed, failed and cancelled are final: the media no longer changes.')
    ),
    stage: v.picklist(STAGES),
    progress: v.pipe(v.number(), v.minValue(0), v.maxValue(100), v.description('Percent done.')),
    etaSeconds: v.pipe(v.nullable(v.number()), v.description('Estimated seconds left; null when unknown.')),
    error: v.pipe(v.nullable(ErrorInfoSchema), v.description('Why the job failed; null unless it did.')),
    metadata: v.pipe(
      v.nullable(v.union([ImageMetadataSchema, VideoMetadataSchema])),
      v.description('What processing learned of the original (image or video); null until it completes.')
    ),
    outputs: v.pipe(
      v.array(MediaOutputSchema),
      v.description(
        'What was made, once the job completed: by default for an image `thumb` and `preview`, for a video `poster` and its renditions; otherwise what its presets make.'
      )
    ),
    traceId: v.pipe(
      v.nullable(v.pipe(v.string(), v.regex(/^[0-9a-f]{32}$/))),
      v.description(
        'The W3C trace id of the upload (from its `traceparent`, or made by the API): every log line of the job, in the API and the processors, carries it.'
      )
    ),
    presets: v.pipe(
      v.nullable(v.array(v.string())),
      v.description('The presets its outputs were made with (null for media made before presets).')
    ),
    priority: v.pipe(PrioritySchema, v.description('The class its job ran (or waits) in: interactive or bulk.')),
    srcsets: v.pipe(
      v.record(v.string(), v.string()),
      v.description(
        'Each responsive set of its outputs, as an HTML `srcset`: "<url> 320w, <url> 640w, …", by the set\'s name (`srcset` for the built-in preset).'
      )
    ),
    reprocess: v.pipe(
      v.nullable(
        v.object({
          jobId: JobIdSchema,
          status: v.picklist(JOB_STATUSES),
          stage: v.picklist(STAGES),
          progress: v.pipe(v.number(), v.minValue(0), v.maxValue(100)),
          etaSeconds: v.nullable(v.number()),
          error: v.nullable(ErrorInfoSchema),
          presets: v.nullable(v.array(v.string())),
          priority: PrioritySchema,
        })
      ),
      v.description(
        'A newer job than the one whose outputs the media serves (POST /v1/media/{id}/reprocess), until it completes and its outputs replace these; after it failed or was cancelled, what became of it. null when there is none.'
      )
    ),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  }),
  v.metadata({ ref: 'Media' })
)
export type Media = v.InferOutput<typeof MediaSchema>

export const OutputLinkSchema = v.pipe(
  v.object({
    url: v.pipe(
      v.string(),
      v.url(),
      v.description("The output's URL with `expires` and `signature`: no API key needed.")
    ),
    expiresAt: Timestamp,
  }),
  v.metadata({ ref: 'OutputLink' })
)

const SignedUrl = (what: string) =>
  v.pipe(v.string(), v.url(), v.description(`${what}: a signed link, no API key needed, until expiresAt.`))

export const PlaybackSchema = v.pipe(
  v.object({
    hls: v.pipe(
      v.nullable(SignedUrl('The HLS master playlist')),
      v.description(
        'The HLS master playlist (for hls.js, Safari, a native player): every address in it, and in the playlists it names, is a link that expires with it. Null when the video was made without a stream.'
      )
    ),
    storyboard: v.pipe(
      v.nullable(SignedUrl('The storyboard')),
      v.description(
        'A WebVTT file whose cues map time ranges to regions of one sprite (`<link>#xywh=x,y,w,h`): previews for the seek bar. Null when none was made.'
      )
    ),
    poster: v.nullable(SignedUrl('The poster (WebP)')),
    downloads: v.pipe(
      v.array(
        v.object({
          name: v.string(),
          width: v.number(),
          height: v.number(),
          size: v.pipe(v.number(), v.description('Bytes.')),
          url: SignedUrl('The progressive MP4'),
        })
      ),
      v.description('The progressive MP4 of each rung, smallest first; empty when the video was made to stream only.')
    ),
    audio: v.pipe(
      v.array(
        v.object({
          name: v.string(),
          contentType: v.pipe(v.string(), v.description('audio/mp4 (AAC) or audio/webm (Opus).')),
          size: v.pipe(v.number(), v.description('Bytes.')),
          url: SignedUrl('The encoding'),
        })
      ),
      v.description(
        "A sound's encodings, to list as <source> elements of an <audio> (AAC plays everywhere; Opus is smaller). Empty for a video."
      )
    ),
    peaks: v.pipe(
      v.nullable(SignedUrl('The waveform peaks')),
      v.description("A sound's waveform peaks (audiowaveform JSON, version 2) to draw; null for a video.")
    ),
    expiresAt: Timestamp,
  }),
  v.metadata({ ref: 'Playback' })
)
export type Playback = v.InferOutput<typeof PlaybackSchema>

export const MediaListSchema = v.pipe(
  v.object({
    media: v.pipe(v.array(MediaSchema), v.description('Newest first.')),
    next: v.pipe(v.nullable(v.string()), v.description('The `cursor` of the next page; null on the last one.')),
  }),
  v.metadata({ ref: 'MediaList' })
)
export type MediaList = v.InferOutput<typeof MediaListSchema>

export const AcceptedSchema = v.pipe(
  v.object({
    id: MediaIdSchema,
    jobId: JobIdSchema,
    kind: Kind,
    status: v.literal('queued'),
    priority: PrioritySchema,
  }),
  v.metadata({ ref: 'Accepted' })
)
export type Accepted = v.InferOutput<typeof AcceptedSchema>

// ── Health ───────────────────────────────────────────────────────────────────────────────────────────────────

const CheckSchema = v.union([v.object({ ok: v.literal(true) }), v.object({ ok: v.literal(false), error: v.string() })])
export const HealthSchema = v.pipe(
  v.object({
    status: v.picklist(['ok', 'unavailable']),
    auth: v.pipe(
      v.picklist(['keys', 'none']),
      v.description('keys: media routes need an API key; none: they are open (AUTH=none).')
    ),
    down: v.pipe(v.array(v.string()), v.description('The checks that failed: database, rabbitmq, s3.')),
    checks: v.object({ database: CheckSchema, rabbitmq: CheckSchema, s3: CheckSchema }),
    jobs: v.pipe(
      v.nullable(v.object({ queued: Count, processing: Count, completed: Count, failed: Count, cancelled: Count })),
      v.description('Jobs by status, over every tenant; null when the database is down.')
    ),
    stalled: v.pipe(v.nullable(Count), v.description('Jobs processing with no word for longer than the stall time.')),
    deadLetters: v.pipe(v.nullable(Count), v.description('Dead letters awaiting an operator.')),
  }),
  v.metadata({ ref: 'Health' })
)
export type Health = v.InferOutput<typeof HealthSchema>

export const LiveSchema = v.pipe(v.object({ status: v.literal('alive') }), v.metadata({ ref: 'Live' }))
export const ReadySchema = v.pipe(
  v.object({
    status: v.picklist(['ready', 'unavailable']),
    down: v.pipe(v.array(v.string()), v.description('The checks that failed: database, rabbitmq, s3.')),
    checks: v.object({ database: CheckSchema, rabbitmq: CheckSchema, s3: CheckSchema }),
  }),
  v.metadata({ ref: 'Ready' })
)

// ── Webhooks ─────────────────────────────────────────────────────────────────────────────────────────────────

const WebhookEvent = v.pipe(
  v.picklist(WEBHOOK_EVENTS),
  v.description('media.completed, media.failed, media.cancelled or media.deleted.')
)
export const NewWebhookSchema = v.object({
  url: v.pipe(
    v.string(),
    v.maxLength(2048),
    v.description('Where deliveries are POSTed: https (unless the operator allows http), not a private address.')
  ),
  events: v.pipe(
    v.array(WebhookEvent),
    v.minLength(1, 'must name at least one event'),
    v.maxLength(WEBHOOK_EVENTS.length)
  ),
})
export const WebhookSchema = v.pipe(
  v.object({
    id: Uuid,
    url: v.string(),
    events: v.array(WebhookEvent),
    createdAt: Timestamp,
    disabledAt: v.pipe(
      v.nullable(Timestamp),
      v.description('Set when the endpoint answered 410 Gone: nothing more is sent.')
    ),
    disabledReason: v.nullable(v.string()),
  }),
  v.metadata({ ref: 'Webhook' })
)
export const WebhookWithSecretSchema = v.pipe(
  v.object({
    ...WebhookSchema.entries,
    secret: v.pipe(
      v.string(),
      v.description('`whsec_…`: verifies the `webhook-signature` of each delivery. In this answer only.')
    ),
  }),
  v.metadata({ ref: 'WebhookWithSecret' })
)
export const WebhookListSchema = v.object({ webhooks: v.array(WebhookSchema) })
export const WebhookDeliverySchema = v.pipe(
  v.object({
    id: v.pipe(
      v.string(),
      v.description('The `webhook-id` header: the same on every attempt, so a receiver can drop repeats.')
    ),
    webhookId: Uuid,
    event: WebhookEvent,
    mediaId: MediaIdSchema,
    status: v.pipe(
      v.picklist(['pending', 'delivered', 'failed']),
      v.description('pending: not yet delivered and still tried; failed: given up.')
    ),
    attempts: Count,
    nextAt: v.pipe(v.nullable(Timestamp), v.description('When a pending delivery is tried next.')),
    lastStatus: v.pipe(
      v.nullable(v.number()),
      v.description('The HTTP status of the last attempt; null when it got none.')
    ),
    lastError: v.nullable(v.string()),
    createdAt: Timestamp,
    deliveredAt: v.nullable(Timestamp),
    history: v.pipe(
      v.array(
        v.object({
          number: v.pipe(Count, v.description('1 for the first attempt.')),
          at: Timestamp,
          durationMs: v.pipe(v.number(), v.description('From the request sent to the answer (or the error).')),
          status: v.pipe(v.nullable(v.number()), v.description('The HTTP status answered; null when none was.')),
          error: v.pipe(v.nullable(v.string()), v.description('Why it did not count as delivered; null when it did.')),
          outcome: v.pipe(
            v.picklist(['delivered', 'retry', 'failed']),
            v.description('retry: tried again later; failed: given up.')
          ),
        })
      ),
      v.description('Every attempt, oldest first (the last 50).')
    ),
  }),
  v.metadata({ ref: 'WebhookDelivery' })
)
export const WebhookDeliveryListSchema = v.object({ deliveries: v.array(WebhookDeliverySchema) })

// ── Admin ────────────────────────────────────────────────────────────────────────────────────────────────────

export const ApiKeySchema = v.pipe(
  v.object({
    id: Uuid,
    tenant: v.string(),
    name: v.nullable(v.string()),
    prefix: v.pipe(
      v.string(),
      v.description("The key's first characters, to recognise it by; the API keeps only its hash.")
    ),
    priority: v.pipe(
      JobClassSchema,
      v.description(
        "The class of this key's uploads: a bulk key's (an importer's) always wait behind interactive work."
      )
    ),
    createdAt: Timestamp,
    revokedAt: v.nullable(Timestamp),
  }),
  v.metadata({ ref: 'ApiKey' })
)
export const IssuedKeySchema = v.object({
  ...ApiKeySchema.entries,
  key: v.pipe(v.string(), v.description('The key itself, in this answer only.')),
})
export const KeyListSchema = v.object({ keys: v.array(ApiKeySchema) })

const deadLetterEntries = {
  id: Uuid,
  tenant: v.optional(
    v.pipe(v.nullable(v.string()), v.description("The tenant of the letter's job, when it names one of ours."))
  ),
  type: v.picklist(MEDIA_TYPES),
  queue: v.pipe(v.string(), v.description('The queue it died in, e.g. <system>.media.images.request.')),
  reason: v.pipe(v.string(), v.description("The broker's reason: delivery_limit or rejected.")),
  deliveries: v.nullable(Count),
  jobId: v.nullable(v.string()),
  problem: v.pipe(
    v.nullable(v.string()),
    v.description('What is wrong with the body by the protocol, or null when it reads fine.')
  ),
  messageId: v.nullable(v.string()),
  deadAt: Timestamp,
}
export const DeadLetterSummarySchema = v.pipe(v.object(deadLetterEntries), v.metadata({ ref: 'DeadLetterSummary' }))
export const DeadLetterListSchema = v.object({ deadLetters: v.array(DeadLetterSummarySchema) })
export const DeadLetterSchema = v.object({
  ...deadLetterEntries,
  headers: v.record(v.string(), v.unknown()),
  body: v.optional(
    v.pipe(v.string(), v.description('The message body as text, when it is readable UTF-8 (JSON usually is).'))
  ),
  bodyBase64: v.optional(
    v.pipe(v.string(), v.description('The message body in base64, when it is not readable text.'))
  ),
})
export const RedrivenSchema = v.object({
  redriven: v.pipe(Uuid, v.description('The dead letter sent again.')),
  jobId: v.nullable(v.string()),
  mediaId: v.optional(
    v.pipe(MediaIdSchema, v.description('When it was a request of one of our jobs: the job is queued again.'))
  ),
})
export const QueueListSchema = v.object({
  queues: v.pipe(
    v.array(
      v.object({
        type: v.picklist(MEDIA_TYPES),
        queue: v.pipe(
          v.picklist(['request', 'bulk', 'updates', 'results', 'dead']),
          v.description("Which of the type's queues: <system>.media.<type>.<queue>.")
        ),
        messages: v.pipe(Count, v.description('Messages ready (not those delivered and awaiting an ack).')),
        consumers: v.pipe(
          Count,
          v.description('Consumers attached: processors on a request queue, API instances on updates and results.')
        ),
      })
    ),
    v.description('Every queue of this system, as the broker counts it now.')
  ),
})
export const SweepSchema = v.object({
  abortedUploads: v.pipe(v.array(v.string()), v.description('The keys of the multipart uploads aborted.')),
})
