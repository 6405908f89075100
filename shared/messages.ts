/**
 * Every message that crosses a queue, as valibot schemas. JSON is camelCase and every message carries
 * `version: 1`; PROTOCOL.md shows each shape with an example for backends written in other languages.
 * Unknown keys are ignored on decode (so a newer peer may add fields); a different `version` is refused.
 */
import * as v from 'valibot'

const int = (min: number, max: number) => v.pipe(v.number(), v.integer(), v.minValue(min), v.maxValue(max))

export const JobIdSchema = v.pipe(v.string(), v.uuid('must be a UUID'))
export const MediaIdSchema = v.pipe(v.string(), v.uuid('must be a UUID'))

/** An S3 bucket name (the portable subset of the rules). */
export const BucketSchema = v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name'))
/** Object keys are written by the backend; no empty segments, no `.`/`..`, so no key can look like a path escape. */
export const ObjectKeySchema = v.pipe(
  v.string(),
  v.maxLength(1024),
  v.regex(/^(?!.*(?:^|\/)\.{1,2}(?:\/|$))[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/, 'must be a relative key of [A-Za-z0-9._-] segments')
)
/** Output names become file names and URL segments. */
export const OutputNameSchema = v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'must be 1-32 of a-z, 0-9, "_", "-"'))
/** Machine-readable error codes are snake_case; KNOWN_ERROR_CODES lists the ones in use. */
export const ErrorCodeSchema = v.pipe(v.string(), v.regex(/^[a-z][a-z0-9_]{1,63}$/, 'must be a snake_case code'))
export const TimestampSchema = v.pipe(v.string(), v.isoTimestamp('must be an ISO 8601 timestamp'))

export const KNOWN_ERROR_CODES = [
  'invalid_media', // the file is corrupt, truncated or not what it claims to be
  'unsupported_format', // a real file of a kind this processor cannot decode
  'limit_exceeded', // over a pixel, duration or size limit
  'source_missing', // the source object does not exist
  'timeout', // the job ran past its wall-clock limit
  'processing_error', // anything unexpected; the message says what
  'gave_up', // a transient fault (S3, network, broker) outlasted every retry
  'crashed', // the processor died on every delivery; the broker dead-lettered the request (set by the backend)
  'stalled', // no processor reported on the job for too long, too many times (set by the backend)
] as const

/**
 * Why a job failed, which decides whether trying again can help:
 * `input`: the file itself (corrupt, unsupported, over a limit, too slow to decode). Never retried.
 * `transient`: the infrastructure (S3, network, broker). Retried with backoff up to the delivery limit first.
 * `crash`: the processor died or hung on every attempt (a poison job, or a broken host). Re-drivable by an operator.
 * `internal`: a bug; the message says what.
 */
export const FAILURE_CLASSES = ['input', 'transient', 'crash', 'internal'] as const
export type FailureClass = (typeof FAILURE_CLASSES)[number]

/** The class of a known error code, for errors whose sender did not say (older or third-party processors). */
export function failureClassOf(code: string): FailureClass {
  if (code === 'gave_up') return 'transient'
  if (code === 'crashed' || code === 'stalled') return 'crash'
  if (code === 'processing_error') return 'internal'
  if ((KNOWN_ERROR_CODES as readonly string[]).includes(code)) return 'input'
  return 'internal'
}

export const ErrorInfoSchema = v.object({
  code: ErrorCodeSchema,
  message: v.pipe(v.string(), v.minLength(1), v.maxLength(2000)),
  class: v.optional(v.picklist(FAILURE_CLASSES)),
})
export type ErrorInfo = v.InferOutput<typeof ErrorInfoSchema>

/** Where the original is; `format` is what the backend sniffed from its magic bytes, and processors hold it to it. */
export const SourceSchema = v.object({
  bucket: BucketSchema,
  key: ObjectKeySchema,
  format: v.pipe(v.string(), v.regex(/^[a-z0-9]{2,16}$/)),
  size: int(1, Number.MAX_SAFE_INTEGER),
})
/** Outputs are written to `<bucket>/<prefix>/<name>.<ext>`; the same job always writes the same keys. */
export const OutputTargetSchema = v.object({ bucket: BucketSchema, prefix: ObjectKeySchema })

const uniqueNames = <T extends { name: string }>(items: T[]) => new Set(items.map((i) => i.name)).size === items.length

// ── Images ─────────────────────────────────────────────────────────────────────────────────────────────────────

export const ImageFormatSchema = v.picklist(['webp', 'jpeg', 'png', 'avif'])
/** One image output: fitted inside `width`×`height`, aspect kept, never upscaled. */
export const ImageOutputSpecSchema = v.object({
  name: OutputNameSchema,
  format: ImageFormatSchema,
  width: int(1, 8192),
  height: int(1, 8192),
  quality: v.optional(int(1, 100), 80),
})
export const ImageRequestSchema = v.object({
  version: v.literal(1),
  jobId: JobIdSchema,
  mediaId: MediaIdSchema,
  source: SourceSchema,
  output: OutputTargetSchema,
  recipe: v.object({
    outputs: v.pipe(
      v.array(ImageOutputSpecSchema),
      v.minLength(1),
      v.maxLength(16),
      v.check(uniqueNames, 'output names must be unique')
    ),
  }),
})
export type ImageRequest = v.InferOutput<typeof ImageRequestSchema>
export type ImageOutputSpec = v.InferOutput<typeof ImageOutputSpecSchema>

/** What the processor learned of an image. Width and height are as displayed, after EXIF orientation. */
export const ImageMetadataSchema = v.object({
  format: v.string(),
  width: int(1, 1 << 30),
  height: int(1, 1 << 30),
  hasAlpha: v.boolean(),
  /** Pages or animation frames; 1 for a still image. */
  pages: int(1, 1 << 20),
  /** EXIF orientation of the original (1-8); 1 when absent or meaningless. */
  orientation: int(1, 8),
  /** Colour space of the original as libvips names it (srgb, cmyk, b-w, rgb16, …). */
  space: v.optional(v.string()),
})
export type ImageMetadata = v.InferOutput<typeof ImageMetadataSchema>

// ── Videos ─────────────────────────────────────────────────────────────────────────────────────────────────────

/**
 * One H.264/AAC MP4 rendition whose displayed short side is `height` (so a portrait 1080×1920 video has a 1080p rung
 * at 1080×1920). Rungs above the source are skipped; the smallest is always made, at source size if need be.
 */
export const VideoRenditionSpecSchema = v.object({ name: OutputNameSchema, height: int(16, 4320) })
export const VideoRequestSchema = v.object({
  version: v.literal(1),
  jobId: JobIdSchema,
  mediaId: MediaIdSchema,
  source: SourceSchema,
  output: OutputTargetSchema,
  recipe: v.object({
    /** A WebP still fitted inside `width`×`height`. */
    poster: v.object({ name: OutputNameSchema, width: int(16, 8192), height: int(16, 8192) }),
    renditions: v.pipe(
      v.array(VideoRenditionSpecSchema),
      v.minLength(1),
      v.maxLength(8),
      v.check(uniqueNames, 'rendition names must be unique')
    ),
  }),
})
export type VideoRequest = v.InferOutput<typeof VideoRequestSchema>

/** What the processor learned of a video. Width and height are as displayed, after rotation. */
export const VideoMetadataSchema = v.object({
  container: v.string(),
  durationSeconds: v.pipe(v.number(), v.minValue(0)),
  width: int(1, 1 << 20),
  height: int(1, 1 << 20),
  frameRate: v.pipe(v.number(), v.minValue(0)),
  videoCodec: v.string(),
  audioCodec: v.nullable(v.string()),
  /** Bits per second of the whole file. */
  bitrate: v.pipe(v.number(), v.minValue(0)),
  /** Degrees the picture is turned for display: 0, 90, 180 or 270. */
  rotation: v.picklist([0, 90, 180, 270]),
})
export type VideoMetadata = v.InferOutput<typeof VideoMetadataSchema>

// ── Updates and results (both types) ───────────────────────────────────────────────────────────────────────────

export const JOB_STATUSES = ['queued', 'processing', 'completed', 'failed', 'cancelled'] as const
export type JobStatus = (typeof JOB_STATUSES)[number]
export const STAGES = ['queued', 'downloading', 'processing', 'uploading', 'finished'] as const

/**
 * A change in a job's progress. Updates are advisory and may arrive duplicated or out of order: a backend keeps
 * the highest status and the highest progress it has seen. The job's final state comes from its result.
 */
export const JobUpdateSchema = v.object({
  version: v.literal(1),
  jobId: JobIdSchema,
  status: v.picklist(['processing', 'completed', 'failed', 'cancelled']),
  stage: v.picklist(STAGES),
  progress: v.pipe(v.number(), v.minValue(0), v.maxValue(100)),
  /** Estimated seconds left, where the processor can tell. */
  etaSeconds: v.optional(v.nullable(v.pipe(v.number(), v.minValue(0)))),
  error: v.optional(ErrorInfoSchema),
  at: TimestampSchema,
})
export type JobUpdate = v.InferOutput<typeof JobUpdateSchema>

export const OutputInfoSchema = v.object({
  name: OutputNameSchema,
  key: ObjectKeySchema,
  contentType: v.string(),
  size: int(0, Number.MAX_SAFE_INTEGER),
  width: int(1, 1 << 20),
  height: int(1, 1 << 20),
  durationSeconds: v.optional(v.pipe(v.number(), v.minValue(0))),
})
export type OutputInfo = v.InferOutput<typeof OutputInfoSchema>

function resultSchema<M extends v.GenericSchema>(metadata: M) {
  return v.variant('status', [
    v.object({
      version: v.literal(1),
      jobId: JobIdSchema,
      status: v.literal('completed'),
      outputs: v.pipe(v.array(OutputInfoSchema), v.check(uniqueNames, 'output names must be unique')),
      metadata,
      at: TimestampSchema,
    }),
    v.object({ version: v.literal(1), jobId: JobIdSchema, status: v.literal('failed'), error: ErrorInfoSchema, at: TimestampSchema }),
    v.object({ version: v.literal(1), jobId: JobIdSchema, status: v.literal('cancelled'), at: TimestampSchema }),
  ])
}
/** The final outcome of an image job: exactly one per job is applied, however often it is delivered. */
export const ImageResultSchema = resultSchema(ImageMetadataSchema)
export type ImageResult = v.InferOutput<typeof ImageResultSchema>
/** The final outcome of a video job. */
export const VideoResultSchema = resultSchema(VideoMetadataSchema)
export type VideoResult = v.InferOutput<typeof VideoResultSchema>

/** Broadcast on `<system>.media.cancel` when a backend cancels a job (see `cancelMarkerKey` for the durable half). */
export const CancelSchema = v.object({ version: v.literal(1), jobId: JobIdSchema, at: TimestampSchema })
export type Cancel = v.InferOutput<typeof CancelSchema>

/** Between backend instances on `<system>.media.events`: this media changed; read it again. */
export const MediaChangedSchema = v.object({ version: v.literal(1), mediaId: MediaIdSchema })
