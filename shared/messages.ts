/**
 * Every message that crosses a queue, as valibot schemas. JSON is camelCase and every message carries
 * `version: 1`; PROTOCOL.md shows each shape with an example for backends written in other languages.
 * Unknown keys are ignored on decode (so a newer peer may add fields); a different `version` is refused.
 */
import * as v from 'valibot'
import type { MediaType } from './names.ts'
import type { OutputFormat } from './outputs.ts'

const int = (min: number, max: number) => v.pipe(v.number(), v.integer(), v.minValue(min), v.maxValue(max))

export const JobIdSchema = v.pipe(
  v.string(),
  v.uuid('must be a UUID'),
  v.description('The job: a UUID (8-4-4-4-12 hex digits, any version), new for every job.')
)
export const MediaIdSchema = v.pipe(
  v.string(),
  v.uuid('must be a UUID'),
  v.description("The backend's media record the job belongs to: a UUID.")
)

/** An S3 bucket name (the portable subset of the rules). */
export const BucketSchema = v.pipe(
  v.string(),
  v.regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name'),
  v.description('An S3 bucket name: 3-63 of a-z, 0-9, "." and "-", starting and ending with a letter or digit.')
)
/** Object keys are written by the backend; no empty segments, no `.`/`..`, so no key can look like a path escape. */
export const ObjectKeySchema = v.pipe(
  v.string(),
  v.maxLength(1024),
  v.regex(
    /^(?!.*(?:^|\/)\.{1,2}(?:\/|$))[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/,
    'must be a relative key of [A-Za-z0-9._-] segments'
  ),
  v.description(
    'An S3 key: at most 1024 characters, segments of A-Z a-z 0-9 . _ - joined by "/", no empty segment, no segment "." or "..", no leading or trailing "/".'
  )
)
/** Output names become file names and URL segments. */
export const OutputNameSchema = v.pipe(
  v.string(),
  v.regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'must be 1-32 of a-z, 0-9, "_", "-"'),
  v.description(
    'An output name: 1-32 of a-z, 0-9, "_" and "-", starting with a letter or digit. It names the output\'s file: <prefix>/<name>.<extension>.'
  )
)
/** Machine-readable error codes are snake_case; ERROR_CODES lists the ones in use. */
export const ErrorCodeSchema = v.pipe(
  v.string(),
  v.regex(/^[a-z][a-z0-9_]{1,63}$/, 'must be a snake_case code'),
  v.description('A snake_case error code; PROTOCOL.md lists those in use. Treat an unknown one as class internal.')
)
export const TimestampSchema = v.pipe(
  v.string(),
  v.isoTimestamp('must be an ISO 8601 timestamp'),
  v.description('When the message was made: an RFC 3339 timestamp, e.g. 2026-11-22T08:00:00.000Z.')
)

/**
 * Why a job failed, which decides whether trying again can help:
 * `input`: the file itself (corrupt, unsupported, over a limit, too slow to decode). Never retried.
 * `transient`: the infrastructure (S3, network, broker). Retried with backoff up to the attempt limit first.
 * `crash`: the processor died or hung on every attempt (a poison job, or a broken host). Re-drivable by an operator.
 * `internal`: a bug or a misconfiguration (a request the processor refuses, a bucket that does not exist, access
 * denied); the message says what. Retrying the same thing fails the same way.
 */
export const FAILURE_CLASSES = ['input', 'transient', 'crash', 'internal'] as const
export type FailureClass = (typeof FAILURE_CLASSES)[number]

/** Every error code in use, with its class and what it means (PROTOCOL.md lists this table). */
export const ERROR_CODES = {
  invalid_media: { class: 'input', meaning: 'the file is corrupt, truncated or not what it claims to be' },
  unsupported_format: { class: 'input', meaning: 'a real file of a kind this processor cannot decode' },
  limit_exceeded: {
    class: 'input',
    meaning:
      'over a limit of the processor (size, pixels, frames, streams, frame rate, duration); the message names it',
  },
  source_missing: { class: 'input', meaning: 'the source object does not exist' },
  timeout: { class: 'input', meaning: 'the job ran past its wall-clock limit' },
  invalid_request: {
    class: 'internal',
    meaning:
      "the request breaks a rule of the protocol, or names a bucket or key outside the processor's ALLOWED_BUCKETS; the message says which",
  },
  storage_refused: {
    class: 'internal',
    meaning: 'S3 refused the job for a reason retrying cannot fix: no such bucket, access denied',
  },
  processing_error: { class: 'internal', meaning: 'anything unexpected; the message says what' },
  gave_up: { class: 'transient', meaning: 'a transient fault (S3, network, broker) outlasted every attempt' },
  crashed: {
    class: 'crash',
    meaning: 'the processor died on every delivery; the broker dead-lettered the request (set by the backend)',
  },
  stalled: {
    class: 'crash',
    meaning: 'no processor reported on the job for too long, too many times (set by the backend)',
  },
} as const satisfies Record<string, { class: FailureClass; meaning: string }>
export type ErrorCode = keyof typeof ERROR_CODES

/** The class of an error code, for errors whose sender did not say (older or third-party processors). */
export function failureClassOf(code: string): FailureClass {
  return Object.hasOwn(ERROR_CODES, code) ? ERROR_CODES[code as ErrorCode].class : 'internal'
}

export const ErrorInfoSchema = v.object({
  code: ErrorCodeSchema,
  message: v.pipe(
    v.string(),
    v.minLength(1),
    v.maxLength(2000),
    v.description('What went wrong, for people: 1-2000 characters.')
  ),
  class: v.optional(
    v.pipe(
      v.picklist(FAILURE_CLASSES),
      v.description('Whether trying again can help (PROTOCOL.md). Absent: derive it from the code.')
    )
  ),
})
export type ErrorInfo = v.InferOutput<typeof ErrorInfoSchema>

/** Where the original is; `format` is what the backend sniffed from its magic bytes, and processors hold it to it. */
export const SourceSchema = v.object({
  bucket: BucketSchema,
  key: ObjectKeySchema,
  format: v.pipe(
    v.string(),
    v.regex(/^[a-z0-9]{2,16}$/),
    v.description(
      'What the backend judged the file to be from its first bytes (2-16 of a-z, 0-9). A video processor reads the file only as this container and refuses one it does not take.'
    )
  ),
  size: v.pipe(int(1, Number.MAX_SAFE_INTEGER), v.description("The original's size in bytes.")),
})
/** Outputs are written to `<bucket>/<prefix>/<name>.<ext>`; the same job always writes the same keys. */
export const OutputTargetSchema = v.object({
  bucket: BucketSchema,
  prefix: v.pipe(
    ObjectKeySchema,
    v.description(
      'Outputs go to <prefix>/<name>.<extension>, and the cancel marker to <prefix>/.cancelled. New for every job.'
    )
  ),
})

const uniqueNames = <T extends { name: string }>(items: T[]) => new Set(items.map((i) => i.name)).size === items.length

// ── Images ─────────────────────────────────────────────────────────────────────────────────────────────────────

export const ImageFormatSchema = v.picklist(['webp', 'jpeg', 'png', 'avif'])
export const IMAGE_FITS = ['inside', 'cover', 'contain'] as const
export const CROP_POSITIONS = ['centre', 'attention', 'entropy'] as const
/** The most widths a responsive set may have, and the most outputs one request may make (a set counts its widths). */
export const MAX_SET_WIDTHS = 10
export const MAX_IMAGE_OUTPUTS = 16

const Side = (what: string) => v.pipe(int(1, 8192), v.description(what))

/** The fields of an image output that its rules relate (here, and in the API's presets). */
interface OutputFields {
  format: string
  width?: number
  height?: number
  widths?: number[]
  fit?: string
  position?: string
  effort?: number
  animated?: boolean
}

/** How an image output's fields must go together: each rule, and what its refusal says. */
const IMAGE_OUTPUT_RULES: readonly [holds: (o: OutputFields) => boolean, message: string][] = [
  [
    (o) =>
      o.widths ? o.width === undefined && o.height === undefined : o.width !== undefined || o.height !== undefined,
    'an output has a box (width, height or both) or widths, not both',
  ],
  [
    (o) => !o.widths || o.fit === undefined || o.fit === 'inside',
    'a set (widths) is scaled to each width: its fit can only be inside',
  ],
  [
    (o) => (o.fit !== 'cover' && o.fit !== 'contain') || (o.width !== undefined && o.height !== undefined),
    'cover and contain need both width and height',
  ],
  [(o) => o.position === undefined || o.fit === 'cover', 'position is for fit cover only'],
  [(o) => o.effort === undefined || o.format === 'avif', 'effort is for avif only'],
  [(o) => !o.animated || o.format === 'webp', 'animated outputs are webp'],
]

/** The rules of an image output as one valibot action: the first broken one is the refusal. */
export function imageOutputRules<T extends OutputFields>() {
  return v.rawCheck<T>(({ dataset, addIssue }) => {
    if (!dataset.typed) return
    const broken = IMAGE_OUTPUT_RULES.find(([holds]) => !holds(dataset.value))
    if (broken) addIssue({ message: broken[1] })
  })
}

/**
 * One image output, or one responsive set of them. An output has a box (`width`, `height`, or both) and a `fit`:
 * `inside` (the default) fits the picture inside the box, aspect kept; `cover` fills the box exactly, cropping what
 * lies outside (where `position` says); `contain` fits inside and pads to exactly the box (transparent where the
 * format has alpha, white in JPEG). A set has `widths` instead: one output per width, named `<name>-<width>`, each
 * scaled to that width. Nothing is upscaled unless `enlarge` is true; a set skips widths above the source (but is
 * never empty: with every width above the source, it holds one output at the source's own width).
 */
export const ImageOutputSpecSchema = v.pipe(
  v.object({
    name: OutputNameSchema,
    format: ImageFormatSchema,
    width: v.optional(Side('The box: its width in pixels (absent: only the height bounds an inside fit).')),
    height: v.optional(Side('The box: its height in pixels (absent: only the width bounds an inside fit).')),
    widths: v.optional(
      v.pipe(
        v.array(int(1, 8192)),
        v.minLength(1),
        v.maxLength(MAX_SET_WIDTHS),
        v.check((ws) => ws.every((w, i) => i === 0 || w > ws[i - 1]!), 'widths must be increasing'),
        v.description(
          `A responsive set instead of one box: 1-${MAX_SET_WIDTHS} increasing widths, one output each, named <name>-<width>.`
        )
      )
    ),
    fit: v.optional(
      v.pipe(v.picklist(IMAGE_FITS), v.description('inside (default), cover (crop to the box) or contain (pad to it).'))
    ),
    position: v.optional(
      v.pipe(
        v.picklist(CROP_POSITIONS),
        v.description('For cover: what the crop keeps. centre (default), attention (the most salient region), entropy.')
      )
    ),
    quality: v.optional(
      v.pipe(
        int(1, 100),
        v.description(
          'Encoder quality for webp, jpeg and avif; png ignores it. Default 80, and 60 for avif (which looks alike).'
        )
      )
    ),
    effort: v.optional(v.pipe(int(0, 9), v.description('AVIF only: encoder effort 0 (fastest) to 9; default 2.'))),
    enlarge: v.optional(v.pipe(v.boolean(), v.description('Upscale a source smaller than the box. Default false.'))),
    animated: v.optional(
      v.pipe(
        v.boolean(),
        v.description('WebP only: keep every frame of an animated source (GIF, WebP). Default false: the first frame.')
      )
    ),
  }),
  imageOutputRules(),
  v.check(
    (o) => !o.widths || o.name.length + 1 + String(o.widths.at(-1)).length <= 32,
    "a set's output names (<name>-<width>) must stay within 32 characters"
  )
)
export type ImageOutputSpec = v.InferOutput<typeof ImageOutputSpecSchema>

/** The names of the outputs a spec may make: its own, or one per width of a set. */
export const outputNamesOf = (spec: Pick<ImageOutputSpec, 'name' | 'widths'>): string[] =>
  spec.widths ? spec.widths.map((w) => `${spec.name}-${w}`) : [spec.name]

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
      v.maxLength(MAX_IMAGE_OUTPUTS),
      v.check(
        (outputs) => outputs.flatMap(outputNamesOf).length <= MAX_IMAGE_OUTPUTS,
        `at most ${MAX_IMAGE_OUTPUTS} outputs, a set counting its widths`
      ),
      v.check((outputs) => {
        const names = outputs.flatMap(outputNamesOf)
        return new Set(names).size === names.length
      }, 'output names must be unique (a set names its outputs <name>-<width>)'),
      v.description(`1-${MAX_IMAGE_OUTPUTS} outputs (a set counting its widths); no two with the same name.`)
    ),
  }),
})
export type ImageRequest = v.InferOutput<typeof ImageRequestSchema>
/** What the processor learned of an image. Width and height are as displayed, after EXIF orientation. */
export const ImageMetadataSchema = v.object({
  format: v.pipe(v.string(), v.description('The decoded format: jpeg, png, webp, gif, tiff, heic, avif, …')),
  width: v.pipe(int(1, 1 << 30), v.description('As displayed, after EXIF orientation.')),
  height: v.pipe(int(1, 1 << 30), v.description('As displayed, after EXIF orientation.')),
  hasAlpha: v.boolean(),
  pages: v.pipe(int(1, 1 << 20), v.description('Pages or animation frames; 1 for a still image.')),
  orientation: v.pipe(
    int(1, 8),
    v.description('EXIF orientation of the original (1-8); 1 when absent or meaningless.')
  ),
  space: v.optional(
    v.pipe(v.string(), v.description('Colour space of the original as libvips names it (srgb, cmyk, b-w, rgb16, …).'))
  ),
  thumbhash: v.optional(
    v.pipe(
      v.string(),
      v.regex(/^[A-Za-z0-9+/]{4,64}={0,2}$/, 'must be base64'),
      v.description('A ThumbHash of the picture (base64): a placeholder of about 25 bytes to show while it loads.')
    )
  ),
  dominantColor: v.optional(
    v.pipe(v.string(), v.regex(/^#[0-9a-f]{6}$/, 'must be #rrggbb'), v.description('The dominant colour, #rrggbb.'))
  ),
})
export type ImageMetadata = v.InferOutput<typeof ImageMetadataSchema>

// ── Videos ─────────────────────────────────────────────────────────────────────────────────────────────────────

/**
 * One H.264/AAC MP4 rendition whose displayed short side is `height` (so a portrait 1080×1920 video has a 1080p rung
 * at 1080×1920). Rungs above the source are skipped; the smallest is always made, at source size if need be.
 */
export const VideoRenditionSpecSchema = v.object({
  name: OutputNameSchema,
  height: v.pipe(
    int(16, 4320),
    v.description('The displayed short side in pixels; a rung above the source is skipped, except the smallest.')
  ),
})
/** HLS segment lengths a request may ask for: multiples of the renditions' fixed 2 s keyframe interval. */
export const HLS_SEGMENT_SECONDS = [2, 4, 6, 8, 10] as const
/** Keyframes fall every this many seconds in every rendition, so segments start at the same times on every rung. */
export const VIDEO_KEYFRAME_SECONDS = 2

/** Streaming: an HLS master playlist over one fMP4 (CMAF) media playlist and one segment file per rung. */
export const VideoHlsSpecSchema = v.object({
  name: v.pipe(
    OutputNameSchema,
    v.description(
      'The master playlist <name>.m3u8; each rung is <name>-<rendition>.m3u8 over the segments <name>-<rendition>-media.m4s.'
    )
  ),
  segmentSeconds: v.optional(
    v.pipe(
      v.picklist(HLS_SEGMENT_SECONDS),
      v.description('Target segment length in seconds, a multiple of the 2 s keyframe interval (default 4).')
    )
  ),
})
/** Scrubbing previews: one JPEG sprite of small frames and a WebVTT file mapping time ranges to regions of it. */
export const VideoStoryboardSpecSchema = v.object({
  name: v.pipe(
    OutputNameSchema,
    v.description('The WebVTT file <name>.vtt; the sprite it points into is <name>-sprite.jpg.')
  ),
  width: v.optional(
    v.pipe(int(64, 320), v.description("Each frame's width in pixels (default 160); its height keeps the aspect."))
  ),
})
export type VideoHlsSpec = v.InferOutput<typeof VideoHlsSpecSchema>

type VideoRecipeShape = {
  poster: { name: string }
  renditions: { name: string }[]
  mp4?: boolean
  hls?: { name: string }
  storyboard?: { name: string }
}
/** The HLS outputs of a rung: its media playlist and its one segment file. */
export const hlsRungNames = (hls: string, rendition: string) => ({
  playlist: `${hls}-${rendition}`,
  segments: `${hls}-${rendition}-media`,
})
/** The storyboard's sprite, beside its WebVTT file. */
export const storyboardSpriteName = (storyboard: string) => `${storyboard}-sprite`

/**
 * Every output a video recipe may make, with its format: what a cancel removes and what names must not collide.
 * A rung above the source is skipped, so a result may list fewer.
 */
export function videoOutputsOf(recipe: VideoRecipeShape): { name: string; format: OutputFormat }[] {
  const outputs: { name: string; format: OutputFormat }[] = [{ name: recipe.poster.name, format: 'webp' }]
  if (recipe.mp4 !== false) for (const r of recipe.renditions) outputs.push({ name: r.name, format: 'mp4' })
  if (recipe.hls) {
    outputs.push({ name: recipe.hls.name, format: 'm3u8' })
    for (const r of recipe.renditions) {
      const rung = hlsRungNames(recipe.hls.name, r.name)
      outputs.push({ name: rung.playlist, format: 'm3u8' }, { name: rung.segments, format: 'm4s' })
    }
  }
  if (recipe.storyboard) {
    outputs.push(
      { name: recipe.storyboard.name, format: 'vtt' },
      { name: storyboardSpriteName(recipe.storyboard.name), format: 'jpeg' }
    )
  }
  return outputs
}

/** The rules of a video recipe across its fields: something to deliver, and output names that are valid and unique. */
export function videoRecipeRules<T extends VideoRecipeShape>() {
  return v.rawCheck<T>(({ dataset, addIssue }) => {
    if (!dataset.typed) return
    const recipe = dataset.value
    if (recipe.mp4 === false && !recipe.hls)
      addIssue({ message: 'a recipe without MP4 renditions (mp4: false) must ask for hls' })
    const seen = new Set<string>()
    for (const { name } of videoOutputsOf(recipe)) {
      if (!/^[a-z0-9][a-z0-9_-]{0,31}$/.test(name))
        addIssue({ message: `the output name ${name} is longer than 32 characters` })
      else if (seen.has(name)) addIssue({ message: `two outputs would be named ${name}: give them names of their own` })
      seen.add(name)
    }
  })
}

export const VideoRequestSchema = v.object({
  version: v.literal(1),
  jobId: JobIdSchema,
  mediaId: MediaIdSchema,
  source: SourceSchema,
  output: OutputTargetSchema,
  recipe: v.pipe(
    v.object({
      poster: v.pipe(
        v.object({ name: OutputNameSchema, width: int(16, 8192), height: int(16, 8192) }),
        v.description('A WebP still fitted inside width × height, never upscaled.')
      ),
      renditions: v.pipe(
        v.array(VideoRenditionSpecSchema),
        v.minLength(1),
        v.maxLength(8),
        v.check(uniqueNames, 'rendition names must be unique'),
        v.description('1-8 rungs of the ladder, H.264/AAC; no two with the same name.')
      ),
      mp4: v.optional(
        v.pipe(
          v.boolean(),
          v.description(
            'Whether each rung is also written as a progressive MP4 <rendition>.mp4 (for download); default true. False needs hls.'
          )
        )
      ),
      hls: v.optional(VideoHlsSpecSchema),
      storyboard: v.optional(VideoStoryboardSpecSchema),
    }),
    // Every output of a job has a name of its own (the result lists them by name).
    videoRecipeRules(),
    v.description('The poster, the rungs (as MP4, HLS or both) and the storyboard; every output has a name of its own.')
  ),
})
export type VideoRequest = v.InferOutput<typeof VideoRequestSchema>

/** What the processor learned of a video. Width and height are as displayed, after rotation. */
export const VideoMetadataSchema = v.object({
  container: v.pipe(v.string(), v.description('The source format the file was read as.')),
  durationSeconds: v.pipe(v.number(), v.minValue(0)),
  width: v.pipe(int(1, 1 << 20), v.description('As displayed, after rotation and with square pixels.')),
  height: v.pipe(int(1, 1 << 20), v.description('As displayed, after rotation and with square pixels.')),
  frameRate: v.pipe(v.number(), v.minValue(0)),
  videoCodec: v.pipe(v.string(), v.description('As ffprobe names it: h264, hevc, vp9, …')),
  audioCodec: v.pipe(v.nullable(v.string()), v.description('As ffprobe names it; null when the file has no audio.')),
  bitrate: v.pipe(v.number(), v.minValue(0), v.description('Bits per second of the whole file.')),
  rotation: v.pipe(
    v.picklist([0, 90, 180, 270]),
    v.description('Degrees clockwise the picture is turned for display.')
  ),
})
export type VideoMetadata = v.InferOutput<typeof VideoMetadataSchema>

// ── Audio ──────────────────────────────────────────────────────────────────────────────────────────────────────

/** What normalising means when a recipe does not say: EBU R 128's streaming target, as podcasts use. */
export const AUDIO_LOUDNESS_DEFAULTS = { targetLufs: -16, truePeakDb: -1.5, maxGainDb: 20 } as const
/** Waveform pairs when a recipe does not say: enough for a wide player, small as JSON. */
export const AUDIO_PEAKS_DEFAULT_PAIRS = 2000

type AudioRecipeShape = {
  aac?: { name: string }
  opus?: { name: string }
  peaks?: { name: string }
  cover?: { name: string }
}
/** Every output an audio recipe may make, with its format (the cover only when the file embeds one). */
export function audioOutputsOf(recipe: AudioRecipeShape): { name: string; format: OutputFormat }[] {
  return [
    ...(recipe.aac ? [{ name: recipe.aac.name, format: 'm4a' as const }] : []),
    ...(recipe.opus ? [{ name: recipe.opus.name, format: 'webm' as const }] : []),
    ...(recipe.peaks ? [{ name: recipe.peaks.name, format: 'json' as const }] : []),
    ...(recipe.cover ? [{ name: recipe.cover.name, format: 'webp' as const }] : []),
  ]
}

export const AudioRequestSchema = v.object({
  version: v.literal(1),
  jobId: JobIdSchema,
  mediaId: MediaIdSchema,
  source: SourceSchema,
  output: OutputTargetSchema,
  recipe: v.pipe(
    v.object({
      aac: v.optional(
        v.pipe(
          v.object({
            name: OutputNameSchema,
            bitrate: v.optional(v.pipe(int(32, 320), v.description('kbit/s; default 128.'))),
          }),
          v.description('AAC-LC at 48 kHz in MP4 (<name>.m4a, faststart): plays everywhere, podcast apps included.')
        )
      ),
      opus: v.optional(
        v.pipe(
          v.object({
            name: OutputNameSchema,
            bitrate: v.optional(v.pipe(int(16, 256), v.description('kbit/s; default 96.'))),
          }),
          v.description('Opus at 48 kHz in WebM (<name>.webm): smaller, for browsers.')
        )
      ),
      peaks: v.optional(
        v.pipe(
          v.object({
            name: OutputNameSchema,
            maxPairs: v.optional(
              v.pipe(int(100, 20000), v.description('The most min/max pairs the waveform holds; default 2000.'))
            ),
          }),
          v.description("Waveform peaks (<name>.json) in the BBC audiowaveform format's JSON, version 2, 8-bit.")
        )
      ),
      cover: v.optional(
        v.pipe(
          v.object({ name: OutputNameSchema, width: int(16, 4096), height: int(16, 4096) }),
          v.description(
            'The embedded cover art as WebP (<name>.webp) fitted inside width × height, never upscaled; left out when the file has none.'
          )
        )
      ),
      loudness: v.optional(
        v.pipe(
          v.object({
            targetLufs: v.optional(
              v.pipe(v.number(), v.minValue(-40), v.maxValue(-5), v.description('Integrated loudness; default -16.'))
            ),
            truePeakDb: v.optional(
              v.pipe(v.number(), v.minValue(-9), v.maxValue(0), v.description('True-peak ceiling, dBTP; default -1.5.'))
            ),
            maxGainDb: v.optional(
              v.pipe(
                v.number(),
                v.minValue(0),
                v.maxValue(40),
                v.description('The most gain applied, dB; default 20 (so noise is not blown up).')
              )
            ),
          }),
          v.description('Normalise the outputs to this loudness. Absent: no gain (the loudness is still measured).')
        )
      ),
    }),
    v.check((recipe) => !!(recipe.aac || recipe.opus || recipe.peaks), 'a recipe asks for aac, opus or peaks'),
    v.check((recipe) => {
      const names = audioOutputsOf(recipe).map((o) => o.name)
      return new Set(names).size === names.length
    }, 'output names must be unique'),
    v.description('The encodings, the waveform, the cover and the loudness; every output has a name of its own.')
  ),
})
export type AudioRequest = v.InferOutput<typeof AudioRequestSchema>

const Tag = v.optional(v.pipe(v.string(), v.maxLength(1000)))
/** What the processor learned of a sound file. */
export const AudioMetadataSchema = v.object({
  container: v.pipe(v.string(), v.description('The source format the file was read as.')),
  durationSeconds: v.pipe(
    v.number(),
    v.minValue(0),
    v.description('What decodes, which is what plays: headers may claim otherwise.')
  ),
  sampleRate: v.pipe(int(1, 1_000_000), v.description('Hz, of the source.')),
  channels: v.pipe(int(1, 64), v.description('Of the source; the outputs are mono or stereo.')),
  codec: v.pipe(v.string(), v.description('As ffprobe names it: mp3, aac, opus, vorbis, flac, pcm_s16le, …')),
  bitrate: v.pipe(v.number(), v.minValue(0), v.description('Bits per second of the whole file.')),
  tags: v.pipe(
    v.object({ title: Tag, artist: Tag, album: Tag, track: Tag, date: Tag, genre: Tag }),
    v.description('The tags the file carries (ID3, Vorbis comments, MP4 atoms), each up to 1000 characters.')
  ),
  loudness: v.pipe(
    v.object({
      integratedLufs: v.pipe(
        v.nullable(v.number()),
        v.description("The source's integrated loudness (EBU R 128), LUFS; null when it is silent (no gated block).")
      ),
      truePeakDb: v.pipe(
        v.nullable(v.number()),
        v.description("The source's true peak, dBTP; null when every sample is zero.")
      ),
      rangeLu: v.pipe(v.number(), v.minValue(0), v.description('Loudness range (LRA), LU.')),
      silent: v.pipe(
        v.boolean(),
        v.description('No 400 ms block above -70 LUFS (silence, or a clip too short to measure): no gain is applied.')
      ),
      gainDb: v.pipe(v.number(), v.description('The gain applied to the outputs, dB (0 when not normalised).')),
    }),
    v.description('Measured on the source; the gain is what the outputs got.')
  ),
  hasCover: v.pipe(v.boolean(), v.description('Whether the file embeds cover art.')),
})
export type AudioMetadata = v.InferOutput<typeof AudioMetadataSchema>

// ── Updates and results (both types) ───────────────────────────────────────────────────────────────────────────

export const JOB_STATUSES = ['queued', 'processing', 'completed', 'failed', 'cancelled'] as const
export type JobStatus = (typeof JOB_STATUSES)[number]
/** The statuses a job ends in: once in one, it never changes again. */
export const FINAL_STATUSES: readonly JobStatus[] = ['completed', 'failed', 'cancelled']
export const isFinal = (status: JobStatus) => FINAL_STATUSES.includes(status)
export const STAGES = ['queued', 'downloading', 'processing', 'uploading', 'finished'] as const

/**
 * A change in a job's progress. Updates are advisory and may arrive duplicated or out of order: a backend keeps
 * the highest status and the highest progress it has seen. The job's final state comes from its result.
 */
export const JobUpdateSchema = v.object({
  version: v.literal(1),
  jobId: JobIdSchema,
  status: v.picklist(['processing', 'completed', 'failed', 'cancelled']),
  stage: v.pipe(
    v.picklist(STAGES),
    v.description('Stages go queued, downloading, processing, uploading, finished; a short one may be skipped.')
  ),
  progress: v.pipe(
    v.number(),
    v.minValue(0),
    v.maxValue(100),
    v.description('Percent done; 100 only in a final update.')
  ),
  etaSeconds: v.optional(
    v.pipe(
      v.nullable(v.pipe(v.number(), v.minValue(0))),
      v.description('Estimated seconds left: absent or null when the processor cannot tell.')
    )
  ),
  error: v.optional(v.pipe(ErrorInfoSchema, v.description('Only on a failed update: the same error as the result.'))),
  at: TimestampSchema,
})
export type JobUpdate = v.InferOutput<typeof JobUpdateSchema>

export const OutputInfoSchema = v.object({
  name: OutputNameSchema,
  key: v.pipe(
    ObjectKeySchema,
    v.description("Where it is, in the request's output bucket: <prefix>/<name>.<extension>.")
  ),
  contentType: v.pipe(
    v.string(),
    v.description(
      'The content type of its format (PROTOCOL.md section 5): image/webp, video/mp4, audio/mp4, application/json, …'
    )
  ),
  size: v.pipe(int(0, Number.MAX_SAFE_INTEGER), v.description('Bytes.')),
  width: v.optional(v.pipe(int(1, 1 << 20), v.description('Pictures and video only.'))),
  height: v.optional(v.pipe(int(1, 1 << 20), v.description('Pictures and video only.'))),
  durationSeconds: v.optional(
    v.pipe(
      v.number(),
      v.minValue(0),
      v.description(
        "Outputs that play or cover time only (renditions, playlists, segments, the storyboard's WebVTT, audio encodings and peaks): their duration, read back from what was written."
      )
    )
  ),
  set: v.optional(
    v.pipe(OutputNameSchema, v.description('Outputs of a responsive set: the name of their set (the spec).'))
  ),
})
export type OutputInfo = v.InferOutput<typeof OutputInfoSchema>

function resultSchema<M extends v.GenericSchema>(metadata: M) {
  return v.variant('status', [
    v.object({
      version: v.literal(1),
      jobId: JobIdSchema,
      status: v.literal('completed'),
      outputs: v.pipe(
        v.array(OutputInfoSchema),
        v.check(uniqueNames, 'output names must be unique'),
        v.description('What was made, no two with the same name. A video skips the rungs above its source.')
      ),
      metadata,
      at: TimestampSchema,
    }),
    v.object({
      version: v.literal(1),
      jobId: JobIdSchema,
      status: v.literal('failed'),
      error: ErrorInfoSchema,
      at: TimestampSchema,
    }),
    v.object({ version: v.literal(1), jobId: JobIdSchema, status: v.literal('cancelled'), at: TimestampSchema }),
  ])
}
/** The final outcome of an image job: exactly one per job is applied, however often it is delivered. */
export const ImageResultSchema = resultSchema(ImageMetadataSchema)
export type ImageResult = v.InferOutput<typeof ImageResultSchema>
/** The final outcome of a video job. */
export const VideoResultSchema = resultSchema(VideoMetadataSchema)
/** The final outcome of an audio job. */
export const AudioResultSchema = resultSchema(AudioMetadataSchema)
export type AudioResult = v.InferOutput<typeof AudioResultSchema>
export type VideoResult = v.InferOutput<typeof VideoResultSchema>

/** The request and result schemas of each media type, for code that serves either. */
export const MESSAGES = {
  images: { request: ImageRequestSchema, result: ImageResultSchema },
  videos: { request: VideoRequestSchema, result: VideoResultSchema },
  audio: { request: AudioRequestSchema, result: AudioResultSchema },
} as const
export type RequestOf<T extends MediaType> = v.InferOutput<(typeof MESSAGES)[T]['request']>
export type ResultOf<T extends MediaType> = v.InferOutput<(typeof MESSAGES)[T]['result']>
export type MetadataOf<T extends MediaType> = Extract<ResultOf<T>, { status: 'completed' }>['metadata']

/** Broadcast on `<system>.media.cancel` when a backend cancels a job (see `cancelMarkerKey` for the durable half). */
export const CancelSchema = v.object({ version: v.literal(1), jobId: JobIdSchema, at: TimestampSchema })
export type Cancel = v.InferOutput<typeof CancelSchema>

/** Between backend instances on `<system>.media.events`: this media changed; read it again. */
export const MediaChangedSchema = v.object({
  version: v.literal(1),
  mediaId: MediaIdSchema,
  /** The instance that sent it (it ignores its own). */
  origin: v.optional(v.pipe(v.string(), v.maxLength(64))),
  /** The media's tenant and the change's number in the tenant's event log (absent from older instances). */
  tenant: v.optional(v.pipe(v.string(), v.maxLength(128))),
  seq: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
})
