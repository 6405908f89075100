/**
 * Presets: named output recipes, chosen by name when uploading (or reprocessing). Built-in ones serve every tenant
 * (`thumb` and `preview`, today's image outputs; `avatar`; `srcset`; the video `ladder` and `mobile`; the sound
 * `audio` and `voice`); a tenant adds
 * its own (store/presets.ts) and chooses which it uploads with by default. A choice is resolved, at the moment the job
 * is made, into the full output specs its request carries, so that editing or deleting a preset never changes a
 * queued job, and processors never learn preset names.
 */
import * as v from 'valibot'
import {
  CROP_POSITIONS,
  IMAGE_FITS,
  ImageFormatSchema,
  MAX_IMAGE_OUTPUTS,
  MAX_SET_WIDTHS,
  OutputNameSchema,
  imageOutputRules,
  outputNamesOf,
  AUDIO_LOUDNESS_DEFAULTS,
  type AudioRequest,
  type ImageOutputSpec,
  type ImageRequest,
  type VideoRequest,
} from '@app/shared'
import { ApiError } from '../http/errors.ts'
import type { PresetKind, PresetRepo } from '../store/presets.ts'
import { AUDIO_OUTPUTS, VIDEO_OUTPUTS } from './output-names.ts'

const NAME_RULE = 'must be 1-32 of a-z, 0-9, "_" and "-", starting with a letter or digit'
/** A preset's name: what an output may be named too (a one-output preset names its output). `defaults` is taken. */
export const PresetNameSchema = v.pipe(
  v.string(NAME_RULE),
  v.regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, NAME_RULE),
  v.check((name) => name !== 'defaults', '"defaults" is reserved'),
  v.description(`A preset's name: ${NAME_RULE}.`)
)

const int = (min: number, max: number, what: string) =>
  v.pipe(
    v.number(`${what} must be a number`),
    v.integer(`${what} must be a whole number`),
    v.minValue(min, `${what} must be at least ${min}`),
    v.maxValue(max, `${what} must be at most ${max}`)
  )

/** One output of an image preset: the protocol's output spec (shared/messages.ts), its name optional. */
const ImagePresetOutputSchema = v.pipe(
  v.object({
    name: v.optional(OutputNameSchema),
    format: ImageFormatSchema,
    width: v.optional(int(1, 8192, 'width')),
    height: v.optional(int(1, 8192, 'height')),
    widths: v.optional(
      v.pipe(
        v.array(int(1, 8192, 'each width')),
        v.minLength(1, 'widths must list at least one width'),
        v.maxLength(MAX_SET_WIDTHS, `widths may list at most ${MAX_SET_WIDTHS} widths`),
        v.check((ws) => ws.every((w, i) => i === 0 || w > ws[i - 1]!), 'widths must be increasing')
      )
    ),
    fit: v.optional(v.picklist(IMAGE_FITS, `fit must be one of ${IMAGE_FITS.join(', ')}`)),
    position: v.optional(v.picklist(CROP_POSITIONS, `position must be one of ${CROP_POSITIONS.join(', ')}`)),
    quality: v.optional(int(1, 100, 'quality')),
    effort: v.optional(int(0, 9, 'effort')),
    enlarge: v.optional(v.boolean('enlarge must be true or false')),
    animated: v.optional(v.boolean('animated must be true or false')),
  }),
  // The protocol's own rules (shared/messages.ts).
  imageOutputRules()
)

export const ImagePresetSchema = v.object({
  kind: v.literal('image'),
  outputs: v.pipe(
    v.array(ImagePresetOutputSchema),
    v.minLength(1, 'outputs must list at least one output'),
    v.maxLength(MAX_IMAGE_OUTPUTS, `outputs may list at most ${MAX_IMAGE_OUTPUTS}`)
  ),
})

/** How a video preset's rungs are delivered: as a stream, as files to download, or both. */
export const VIDEO_DELIVERIES = ['hls', 'mp4', 'both'] as const

export const VideoPresetSchema = v.object({
  kind: v.literal('video'),
  renditions: v.pipe(
    v.array(int(16, 4320, 'each rendition height')),
    v.minLength(1, 'renditions must list at least one height'),
    v.maxLength(8, 'renditions may list at most 8 heights'),
    v.check((hs) => new Set(hs).size === hs.length, 'rendition heights must differ'),
    v.description("The renditions' displayed short sides (e.g. 360, 720); each is named <height>p.")
  ),
  poster: v.optional(
    v.pipe(
      v.object({ width: int(16, 8192, 'poster width'), height: int(16, 8192, 'poster height') }),
      v.description('The box the WebP poster fits inside (default 1280×1280).')
    )
  ),
  delivery: v.optional(
    v.pipe(
      v.picklist(VIDEO_DELIVERIES, `delivery must be one of ${VIDEO_DELIVERIES.join(', ')}`),
      v.description(
        'hls: a stream (an HLS master playlist over every rung); mp4: a progressive MP4 per rung (downloads); both (the default).'
      )
    )
  ),
  storyboard: v.optional(
    v.pipe(
      v.boolean('storyboard must be true or false'),
      v.description('Whether to make a storyboard (a sprite and WebVTT for previews on the seek bar); default true.')
    )
  ),
})

/** The encodings a sound preset may ask for. */
export const AUDIO_FORMATS = ['m4a', 'opus'] as const

export const AudioPresetSchema = v.object({
  kind: v.literal('audio'),
  formats: v.optional(
    v.pipe(
      v.array(v.picklist(AUDIO_FORMATS, `each format must be one of ${AUDIO_FORMATS.join(', ')}`)),
      v.minLength(1, 'formats must list at least one format'),
      v.check((fs) => new Set(fs).size === fs.length, 'formats must differ'),
      v.description('m4a (AAC-LC, plays everywhere) and opus (Opus in WebM, smaller, for browsers); both when absent.')
    )
  ),
  bitrate: v.optional(v.pipe(int(32, 320, 'bitrate'), v.description('AAC kbit/s (default 128).'))),
  opusBitrate: v.optional(v.pipe(int(16, 256, 'opusBitrate'), v.description('Opus kbit/s (default 96).'))),
  normalize: v.optional(
    v.pipe(
      v.boolean('normalize must be true or false'),
      v.description(
        `Whether to bring the loudness to targetLufs (default true), within a true-peak ceiling of ${AUDIO_LOUDNESS_DEFAULTS.truePeakDb} dBTP and at most +${AUDIO_LOUDNESS_DEFAULTS.maxGainDb} dB of gain.`
      )
    )
  ),
  targetLufs: v.optional(
    v.pipe(
      v.number('targetLufs must be a number'),
      v.minValue(-40, 'targetLufs must be at least -40'),
      v.maxValue(-5, 'targetLufs must be at most -5'),
      v.description(`The loudness to normalise to, LUFS (default ${AUDIO_LOUDNESS_DEFAULTS.targetLufs}).`)
    )
  ),
  peaks: v.optional(
    v.pipe(v.boolean('peaks must be true or false'), v.description('Whether to make waveform peaks (default true).'))
  ),
})

/** What a preset is: an image recipe of outputs, a video's renditions and poster, or a sound's encodings. */
export const PresetDefinitionSchema = v.variant(
  'kind',
  [ImagePresetSchema, VideoPresetSchema, AudioPresetSchema],
  'kind must be image, video or audio'
)
export type PresetDefinition = v.InferOutput<typeof PresetDefinitionSchema>
type ImagePreset = v.InferOutput<typeof ImagePresetSchema>
type VideoPreset = v.InferOutput<typeof VideoPresetSchema>
type AudioPreset = v.InferOutput<typeof AudioPresetSchema>
/** The recipe a kind's presets resolve into: what its processors' requests carry. */
export type RecipeOf<K extends PresetKind> = K extends 'image'
  ? ImageRequest['recipe']
  : K extends 'video'
    ? VideoRequest['recipe']
    : AudioRequest['recipe']

const POSTER = { width: 1280, height: 1280 }

/** The built-in presets, for every tenant. */
export const BUILT_IN_PRESETS: Readonly<Record<string, PresetDefinition>> = {
  // thumb and preview are the outputs every upload got before presets existed.
  thumb: { kind: 'image', outputs: [{ format: 'webp', width: 320, height: 320, quality: 80 }] },
  preview: { kind: 'image', outputs: [{ format: 'webp', width: 1280, height: 1280, quality: 80 }] },
  avatar: {
    kind: 'image',
    outputs: [{ format: 'webp', width: 256, height: 256, fit: 'cover', position: 'attention', quality: 80 }],
  },
  srcset: { kind: 'image', outputs: [{ format: 'webp', widths: [320, 640, 960, 1280, 1920], quality: 80 }] },
  ladder: { kind: 'video', renditions: [360, 720, 1080], poster: POSTER },
  mobile: { kind: 'video', renditions: [360], poster: { width: 640, height: 640 } },
  audio: { kind: 'audio' },
  voice: { kind: 'audio', bitrate: 64, opusBitrate: 32 },
}
/** What uploads get when they name no preset and their tenant chose no defaults: what they got before presets. */
export const BUILT_IN_DEFAULTS: Readonly<Record<PresetKind, readonly string[]>> = {
  image: ['thumb', 'preview'],
  video: ['ladder'],
  audio: ['audio'],
}

/** The outputs a preset makes (an unnamed output of a one-output preset takes the preset's name). */
function imageOutputs(name: string, preset: ImagePreset): ImageOutputSpec[] {
  if (preset.outputs.length > 1 && preset.outputs.some((o) => !o.name))
    throw problem(`preset ${name} has several outputs: name each of them`)
  return preset.outputs.map((o) => ({ ...o, name: o.name ?? name }))
}

const problem = (message: string) => new ApiError(422, 'invalid_preset', message)

/**
 * Checks a definition beyond its schema: that what it makes could go in one request (no more than 16 outputs, a
 * set counting its widths; no two with the same name). The same rules hold when presets are combined at upload.
 */
export function checkDefinition(name: string, definition: PresetDefinition): void {
  if (definition.kind === 'image') checkImageOutputs(imageOutputs(name, definition), () => `preset ${name}`)
}

function checkImageOutputs(outputs: ImageOutputSpec[], where: (outputName: string) => string): void {
  const names = outputs.flatMap(outputNamesOf)
  if (names.length > MAX_IMAGE_OUTPUTS)
    throw problem(
      `${names.length} outputs, more than the ${MAX_IMAGE_OUTPUTS} one upload may have (a set counts its widths)`
    )
  const long = names.find((n) => n.length > 32)
  if (long)
    throw problem(`the output name ${long} is longer than 32 characters (a set names its outputs <name>-<width>)`)
  const seen = new Set<string>()
  for (const n of names) {
    if (seen.has(n)) throw problem(`two outputs would be named ${n} (${where(n)}): give them names of their own`)
    seen.add(n)
  }
}

/** A list of preset names as a query parameter, header or tus metadata carries it: comma-separated. */
export const PresetListSchema = v.pipe(
  v.string(),
  v.transform((s) =>
    s
      .split(',')
      .map((n) => n.trim())
      .filter(Boolean)
  ),
  v.array(PresetNameSchema),
  v.minLength(1, 'name at least one preset'),
  v.maxLength(MAX_IMAGE_OUTPUTS, `at most ${MAX_IMAGE_OUTPUTS} presets`)
)
/** The same in a JSON body: an array of names. */
export const PresetArraySchema = v.pipe(
  v.array(PresetNameSchema),
  v.minLength(1, 'name at least one preset'),
  v.maxLength(MAX_IMAGE_OUTPUTS, `at most ${MAX_IMAGE_OUTPUTS} presets`)
)

/** A choice of presets made for one upload, resolved once the upload's kind is known. */
export interface Chosen {
  /** The names chosen (null: the tenant's defaults). */
  names: string[] | null
  /** The recipe for a media of `kind`, and the presets it came from; 422 when none of the chosen is for that kind. */
  recipeFor<K extends PresetKind>(kind: K): { names: string[]; recipe: RecipeOf<K> }
}

export type Presets = ReturnType<typeof createPresets>

export function createPresets(repo: PresetRepo) {
  /** The definitions a tenant may name: its own and the built-ins. */
  const available = async (tenant: string): Promise<Map<string, PresetDefinition>> => {
    const own = await repo.list(tenant)
    return new Map([
      ...Object.entries(BUILT_IN_PRESETS),
      ...own.map((p) => [p.name, p.definition as PresetDefinition] as const),
    ])
  }

  return {
    available,
    /**
     * A tenant's choice for one upload: `names` must all exist (422 listing those that do), or null for its
     * defaults. Resolved now, so a preset edited while the upload runs does not change what it gets.
     */
    async choose(tenant: string, names: string[] | null): Promise<Chosen> {
      const presets = await available(tenant)
      const defaults = names === null ? await repo.defaults(tenant) : {}
      if (names) {
        const unknown = names.filter((n) => !presets.has(n))
        if (unknown.length) {
          throw new ApiError(
            422,
            'unknown_preset',
            `no preset named ${unknown.join(', ')}; the presets are ${[...presets.keys()].sort().join(', ')}`
          )
        }
      }
      return {
        names,
        recipeFor(kind) {
          const wanted = [...new Set(names ?? defaults[kind] ?? BUILT_IN_DEFAULTS[kind])]
          const ofKind = wanted.filter((n) => presets.get(n)?.kind === kind)
          if (!ofKind.length) {
            throw problem(
              `this upload is ${A_KIND[kind]}, and none of the presets ${wanted.join(', ')} is for ${PLURAL[kind]}`
            )
          }
          return { names: ofKind, recipe: RECIPES[kind](ofKind, presets) as RecipeOf<typeof kind> }
        },
      }
    },
  }
}

function imageRecipe(names: string[], presets: Map<string, PresetDefinition>): ImageRequest['recipe'] {
  const from = new Map<string, string>()
  const outputs = names.flatMap((name) => {
    const made = imageOutputs(name, presets.get(name) as ImagePreset)
    for (const o of made)
      for (const n of outputNamesOf(o)) from.set(n, from.has(n) ? `${from.get(n)} and ${name}` : `preset ${name}`)
    return made
  })
  checkImageOutputs(outputs, (n) => `from ${from.get(n)}`)
  return { outputs }
}

function videoRecipe(names: string[], presets: Map<string, PresetDefinition>): VideoRequest['recipe'] {
  if (names.length > 1)
    throw problem(`a video takes one preset (its renditions and poster); ${names.join(' and ')} are both video presets`)
  const preset = presets.get(names[0]!) as VideoPreset
  const delivery = preset.delivery ?? 'both'
  return {
    poster: { name: VIDEO_OUTPUTS.poster, ...(preset.poster ?? POSTER) },
    renditions: preset.renditions.map((height) => ({ name: `${height}p`, height })),
    mp4: delivery !== 'hls',
    ...(delivery !== 'mp4' ? { hls: { name: VIDEO_OUTPUTS.hls } } : {}),
    ...(preset.storyboard !== false ? { storyboard: { name: VIDEO_OUTPUTS.storyboard } } : {}),
  }
}

function audioRecipe(names: string[], presets: Map<string, PresetDefinition>): AudioRequest['recipe'] {
  if (names.length > 1)
    throw problem(`a sound takes one preset (its encodings); ${names.join(' and ')} are both audio presets`)
  const preset = presets.get(names[0]!) as AudioPreset
  const formats = preset.formats ?? AUDIO_FORMATS
  return {
    ...(formats.includes('m4a') ? { aac: { name: AUDIO_OUTPUTS.aac, bitrate: preset.bitrate ?? 128 } } : {}),
    ...(formats.includes('opus') ? { opus: { name: AUDIO_OUTPUTS.opus, bitrate: preset.opusBitrate ?? 96 } } : {}),
    ...(preset.peaks !== false ? { peaks: { name: AUDIO_OUTPUTS.peaks } } : {}),
    // Made only when the file embeds a picture.
    cover: { name: AUDIO_OUTPUTS.cover, width: POSTER.width, height: POSTER.height },
    ...(preset.normalize !== false
      ? { loudness: { targetLufs: preset.targetLufs ?? AUDIO_LOUDNESS_DEFAULTS.targetLufs } }
      : {}),
  }
}

/** How each kind's chosen presets become its recipe. */
const RECIPES: { [K in PresetKind]: (names: string[], presets: Map<string, PresetDefinition>) => RecipeOf<K> } = {
  image: imageRecipe,
  video: videoRecipe,
  audio: audioRecipe,
}
const A_KIND: Record<PresetKind, string> = { image: 'an image', video: 'a video', audio: 'audio' }
const PLURAL: Record<PresetKind, string> = { image: 'images', video: 'videos', audio: 'audio' }

/** The recipe of the built-in defaults of a kind: what an upload got before presets existed. */
export function builtInRecipe<K extends PresetKind>(kind: K): RecipeOf<K> {
  return RECIPES[kind]([...BUILT_IN_DEFAULTS[kind]], new Map(Object.entries(BUILT_IN_PRESETS))) as RecipeOf<K>
}
