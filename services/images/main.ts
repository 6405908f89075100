/**
 * images: the image processor.
 *
 * Consumes ImageRequest from `<system>.media.images.request` (see shared/PROTOCOL.md), downloads the original,
 * makes each output of the recipe with sharp (auto-oriented, metadata stripped, sRGB, fitted inside its box, never
 * upscaled), writes them to `<prefix>/<name>.<ext>`, and reports on `.updates` and `.results`. The protocol's
 * consumer half (acks after confirms, heartbeats, retries, cancel, lease, hand-back) is `@app/shared/processor`;
 * this file is the media.
 *
 * Env: SYSTEM, RABBITMQ_URL, S3_*, ALLOWED_BUCKETS, HEARTBEAT_SECONDS, SHUTDOWN_GRACE_SECONDS, ACK_DEADLINE_SECONDS
 * (see shared/processor/config.ts); IMAGE_CONCURRENCY (default: cores), IMAGE_TIMEOUT_SECONDS (wall clock per job,
 * default 120), IMAGES_TMP_DIR (default <os tmp>/media-images), and the limits: MAX_IMAGE_BYTES (the original's
 * size, default 200M), MAX_IMAGE_PIXELS (one frame, default 50000000), MAX_IMAGE_FRAMES (frames or pages, default
 * 1000), MAX_IMAGE_TOTAL_PIXELS (over all frames, default 500000000).
 *
 * Refused (a `failed` result, class `input`, never retried): a file sharp cannot decode (`unsupported_format`), a
 * corrupt or truncated one (`invalid_media`), one over a limit (`limit_exceeded`, naming the variable and what the
 * file holds), and a job past IMAGE_TIMEOUT_SECONDS (`timeout`). The limits hold before decoding: the byte limit
 * before the download (the request's `source.size`) and during it (what arrives), the others on the header, before
 * any pixel is decoded (HEIC's `heif-convert` included). A request outside ALLOWED_BUCKETS is refused by the runtime.
 */
import amqp from 'amqplib'
import { spawn } from 'node:child_process'
import { closeSync, openSync, readSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp, { type Metadata, type Sharp } from 'sharp'
import { rgbaToThumbHash } from 'thumbhash'
import * as v from 'valibot'
import {
  bytesVar,
  countVar,
  type ImageMetadata,
  type ImageOutputSpec,
  outputNamesOf,
  type ImageRequest,
  type OutputInfo,
} from '@app/shared'
import {
  JobError,
  configReader,
  fetchOriginal,
  overLimit,
  runProcessor,
  runtimeSettings,
  startProcessor,
  untilAborted,
  type JobContext,
  type JobOutput,
  type Processor,
} from '@app/shared/processor'

// ── Config ─────────────────────────────────────────────────────────────────────────────────────────────────────

/** Parses the environment once; throws one error naming every bad variable. */
export const readConfig = configReader(
  {
    IMAGE_CONCURRENCY: countVar(availableParallelism(), 256),
    // imgproxy's default: one 50 MP frame decodes to 200 MB of RGBA.
    MAX_IMAGE_PIXELS: countVar(50_000_000, 2 ** 32),
    // Frames (or pages) and their pixels together, from the header. Only the first frame is rendered today; these
    // bound what decoding every frame would cost (a GIF frame can take 23 bytes). The header read itself walks every
    // GIF frame (8 million 1×1 frames, a 184 MB GIF: 3 s and 0.75 GB), and MAX_IMAGE_BYTES is what bounds that.
    MAX_IMAGE_FRAMES: countVar(1000, 1_000_000),
    MAX_IMAGE_TOTAL_PIXELS: countVar(500_000_000, 2 ** 40),
    MAX_IMAGE_BYTES: bytesVar('200M'),
    IMAGE_TIMEOUT_SECONDS: countVar(120, 3600),
    IMAGES_TMP_DIR: v.optional(v.pipe(v.string(), v.nonEmpty()), join(tmpdir(), 'media-images')),
  },
  (env) => ({
    runtime: runtimeSettings(env, {
      type: 'images',
      concurrency: env.IMAGE_CONCURRENCY,
      timeoutSeconds: env.IMAGE_TIMEOUT_SECONDS,
      tmpDir: env.IMAGES_TMP_DIR,
    }),
    // sharp's own timeout bounds work a cancel or the job's time limit abandoned.
    limits: {
      maxBytes: env.MAX_IMAGE_BYTES,
      maxPixels: env.MAX_IMAGE_PIXELS,
      maxFrames: env.MAX_IMAGE_FRAMES,
      maxTotalPixels: env.MAX_IMAGE_TOTAL_PIXELS,
      timeoutSeconds: env.IMAGE_TIMEOUT_SECONDS,
    },
  })
)
export type Config = ReturnType<typeof readConfig>
export type Limits = Config['limits']

// ── Core: files in, encoded outputs out (no broker, no S3) ─────────────────────────────────────────────────────

/** One output as planned for a source: its name, its set (for a responsive set's outputs), and its spec. */
export interface PlannedImage {
  name: string
  set?: string
  spec: ImageOutputSpec
  /** The box (a set's output: its width alone). */
  width?: number
  height?: number
}

export interface Rendered extends PlannedImage {
  data: Buffer
  /** As encoded. */
  outWidth: number
  outHeight: number
}

/** What a picture looks like before it loads: its ThumbHash (base64) and its dominant colour. */
export interface Placeholder {
  thumbhash: string
  dominantColor: string
}

/** Encoder defaults: WebP and JPEG at quality 80; AVIF at 60, which looks alike (SSIM, see the README) at effort 2. */
export const AVIF_DEFAULTS = { quality: 60, effort: 2 }
const DEFAULT_QUALITY = 80

/**
 * The outputs a request's specs make from a source of `source` size (as displayed). A set makes one output per
 * width no wider than the source (or wider, with `enlarge`); with every width above the source, one output at the
 * source's own width, named after the smallest width, so that a set's output names are known before the job runs.
 */
export function planImages(
  specs: readonly ImageOutputSpec[],
  source: { width: number; height: number }
): PlannedImage[] {
  return specs.flatMap((spec): PlannedImage[] => {
    if (!spec.widths) return [{ name: spec.name, spec, width: spec.width, height: spec.height }]
    const fitting = spec.widths.filter((w) => spec.enlarge || w <= source.width)
    if (!fitting.length) return [{ name: `${spec.name}-${spec.widths[0]}`, set: spec.name, spec, width: source.width }]
    return fitting.map((w) => ({ name: `${spec.name}-${w}`, set: spec.name, spec, width: w }))
  })
}

/** How much an output scales the source: what its fit needs of each side, never above 1 unless it may enlarge. */
function scaleOf(image: PlannedImage, source: { width: number; height: number }): number {
  const sx = image.width === undefined ? Infinity : image.width / source.width
  const sy = image.height === undefined ? Infinity : image.height / source.height
  const scale =
    image.spec.fit === 'cover' ? Math.max(sx === Infinity ? 0 : sx, sy === Infinity ? 0 : sy) : Math.min(sx, sy)
  return image.spec.enlarge ? scale : Math.min(1, scale)
}

/** What the limits are checked on: sharp's metadata, read from the header. Width and height are one frame's. */
export interface ImageHeader {
  width: number
  height: number
  /** Frames of an animation, pages of a document; absent for a still. */
  pages?: number
  /** Set when the frames are stacked into one tall image; else `height` is one frame's. */
  pageHeight?: number
}

/** The first limit an image's header breaks, as its refusal, or null. Pure: no file, no sharp. */
export function imageLimitFailure(
  header: ImageHeader,
  limits: Pick<Limits, 'maxPixels' | 'maxFrames' | 'maxTotalPixels'>
): JobError | null {
  const { width } = header
  const height = header.pageHeight ?? header.height
  const frames = header.pages ?? 1
  const pixels = width * height
  if (pixels > limits.maxPixels) {
    return overLimit(
      `the image is ${width}×${height} (${formatPixels(pixels)})`,
      'MAX_IMAGE_PIXELS',
      formatPixels(limits.maxPixels)
    )
  }
  if (frames > limits.maxFrames)
    return overLimit(`the image has ${frames} frames`, 'MAX_IMAGE_FRAMES', limits.maxFrames)
  const total = pixels * frames
  if (total > limits.maxTotalPixels) {
    return overLimit(
      `the image's ${frames} frames of ${width}×${height} make ${formatPixels(total)}`,
      'MAX_IMAGE_TOTAL_PIXELS',
      formatPixels(limits.maxTotalPixels)
    )
  }
  return null
}

/**
 * Reads the header only (no pixels are decoded), so a pixel or frame bomb is refused here, in milliseconds.
 * HEVC-coded HEIF (iPhone photos) is decoded by `heif-convert` first: sharp's prebuilt libvips has no HEVC decoder.
 */
export async function inspectImage(file: string, limits: Limits) {
  // A GIF's header read walks every frame in memory (about 70 bytes each): count them first, in constant memory.
  const gifFrames = countGifFrames(file)
  if (gifFrames !== null && gifFrames > limits.maxFrames)
    throw overLimit(`the image has ${gifFrames} frames`, 'MAX_IMAGE_FRAMES', limits.maxFrames)
  let meta: Metadata
  try {
    meta = await sharp(file, { limitInputPixels: false }).metadata()
  } catch (error) {
    throw decodeFailure(error, limits)
  }
  if (!meta.width || !meta.height || !meta.format) throw new JobError('invalid_media', 'the image header has no size')
  const refusal = imageLimitFailure(
    { width: meta.width, height: meta.height, pages: meta.pages, pageHeight: meta.pageHeight },
    limits
  )
  if (refusal) throw refusal
  const heic = meta.format === 'heif' && meta.compression === 'hevc'
  const format = meta.format === 'heif' ? (meta.compression === 'av1' ? 'avif' : 'heic') : meta.format
  // 0 and other out-of-range EXIF values mean "no transform".
  const orientation = meta.orientation && meta.orientation >= 1 && meta.orientation <= 8 ? meta.orientation : 1
  // HEIF decoders apply the container's own rotation (irot/imir); EXIF orientation there is informative only.
  const turned = !meta.format.startsWith('heif') && orientation >= 5
  const metadata: ImageMetadata = {
    format,
    width: turned ? meta.height : meta.width,
    height: turned ? meta.width : meta.height,
    hasAlpha: meta.hasAlpha ?? false,
    pages: meta.pages ?? 1,
    orientation: meta.format === 'heif' ? 1 : orientation,
    space: meta.space,
  }
  return { metadata, heic }
}

/**
 * Makes every output from one decode: the image is oriented, converted to sRGB and shrunk once to the largest scale
 * any output needs (decoding once is ~35% faster on 12 MP photos), and each still output is cut from those pixels, as
 * is the placeholder (a ThumbHash and the dominant colour, from a 32 px copy). An animated output is read again
 * with all its frames (the still decode keeps the first). sharp's own timeout bounds work that a cancel or the job's
 * time limit abandoned (sharp cannot be interrupted).
 */
export async function renderImage(
  file: string,
  planned: readonly PlannedImage[],
  source: { width: number; height: number },
  options: Limits & { autoOrient: boolean; placeholder?: boolean }
): Promise<{ rendered: Rendered[]; placeholder: Placeholder | null }> {
  const input = { limitInputPixels: options.maxPixels, failOn: 'warning', sequentialRead: true } as const
  const timeout = { seconds: options.timeoutSeconds }
  const stills = planned.filter((p) => !p.spec.animated)
  // The placeholder needs its 32 px of the picture: the base is never smaller than that (nor than any output needs).
  const scale = Math.max(
    Math.min(1, PLACEHOLDER_SIDE / Math.max(source.width, source.height)),
    ...stills.map((p) => scaleOf(p, source))
  )
  try {
    // failOn 'warning' refuses truncated files instead of rendering their grey remainder.
    let base = sharp(file, input)
    if (options.autoOrient) base = base.autoOrient()
    if (scale !== 1)
      base = base.resize(
        Math.max(1, Math.round(source.width * scale)),
        Math.max(1, Math.round(source.height * scale)),
        { fit: 'fill' }
      )
    const { data, info } = await base
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .timeout(timeout)
      .toBuffer({ resolveWithObject: true })
    const raw = { raw: { width: info.width, height: info.height, channels: info.channels } }
    const encode = async (image: Sharp, p: PlannedImage): Promise<Rendered> => {
      const out = await encoded(resized(image, p, info.channels === 4), p.spec)
        .timeout(timeout)
        .toBuffer({ resolveWithObject: true })
      // An animated output is its frames stacked: each frame's height is the output's.
      const height = (out.info as { pageHeight?: number }).pageHeight ?? out.info.height
      return { ...p, data: out.data, outWidth: out.info.width, outHeight: height }
    }
    // The placeholder is made beside the outputs (`placeholder: false` is the benchmark's baseline: the job without it).
    const [placeholder, ...rendered] = await Promise.all([
      options.placeholder === false ? null : placeholderOf(data, raw.raw, timeout),
      ...planned.map((p) =>
        // Animated: every frame, from the file (no EXIF turn: GIF and WebP carry none), sized as a still would be.
        p.spec.animated
          ? encode(sharp(file, { ...input, sequentialRead: false, animated: true }), p)
          : encode(sharp(data, raw), p)
      ),
    ])
    return { rendered: rendered as Rendered[], placeholder: placeholder as Placeholder | null }
  } catch (error) {
    throw decodeFailure(error, options)
  }
}

const POSITIONS = { centre: 'centre', attention: sharp.strategy.attention, entropy: sharp.strategy.entropy } as const

/** The resize an output asks for; contain pads with transparency where the format keeps it, with white in JPEG. */
function resized(image: Sharp, p: PlannedImage, hasAlpha: boolean): Sharp {
  const fit = p.spec.fit ?? 'inside'
  const opaque = p.spec.format === 'jpeg'
  if (fit === 'contain' && !opaque && !hasAlpha) image = image.ensureAlpha()
  return image.resize(p.width ?? null, p.height ?? null, {
    fit,
    position: POSITIONS[p.spec.position ?? 'centre'],
    withoutEnlargement: !p.spec.enlarge,
    background: opaque ? { r: 255, g: 255, b: 255, alpha: 1 } : { r: 0, g: 0, b: 0, alpha: 0 },
  })
}

function encoded(image: Sharp, spec: ImageOutputSpec): Sharp {
  if (spec.format === 'jpeg')
    return image.flatten({ background: '#ffffff' }).jpeg({ quality: spec.quality ?? DEFAULT_QUALITY, mozjpeg: true })
  if (spec.format === 'png') return image.png()
  if (spec.format === 'avif')
    return image.avif({ quality: spec.quality ?? AVIF_DEFAULTS.quality, effort: spec.effort ?? AVIF_DEFAULTS.effort })
  return image.webp({ quality: spec.quality ?? DEFAULT_QUALITY })
}

const PLACEHOLDER_SIDE = 32

/**
 * The ThumbHash and dominant colour of the base pixels, from at most 32×32 RGBA. A ThumbHash keeps at most 7 cosine
 * terms a side, which 32 samples a side resolve: from 100×100 (the library's most) it cost 0.66 ms against 0.09 here,
 * and decoded within 0–3 levels of 255 of this one on the corpus (6 on a picture with alpha).
 */
export async function placeholderOf(
  data: Buffer,
  raw: { width: number; height: number; channels: 1 | 2 | 3 | 4 },
  timeout: { seconds: number }
): Promise<Placeholder> {
  const small = await sharp(data, { raw })
    .resize(PLACEHOLDER_SIDE, PLACEHOLDER_SIDE, { fit: 'inside' })
    .ensureAlpha()
    .raw()
    .timeout(timeout)
    .toBuffer({ resolveWithObject: true })
  const hash = rgbaToThumbHash(small.info.width, small.info.height, small.data)
  return { thumbhash: Buffer.from(hash).toString('base64'), dominantColor: dominantColour(small.data) }
}

/**
 * The dominant colour of RGBA pixels, as sharp's `stats().dominant` finds it (the fullest of 16×16×16 colour bins,
 * its centre), counted here: sharp's stats took 11-15 ms on a 100 px picture, this well under one. From the 32 px
 * placeholder copy that is 1,024 pixels' votes.
 */
export function dominantColour(rgba: Uint8Array): string {
  const bins = new Uint32Array(4096)
  let best = 0
  for (let i = 0; i < rgba.length; i += 4) {
    if (rgba[i + 3] === 0) continue // transparent: no colour of the picture's
    const bin = ((rgba[i]! >> 4) << 8) | ((rgba[i + 1]! >> 4) << 4) | (rgba[i + 2]! >> 4)
    if (++bins[bin]! > bins[best]!) best = bin
  }
  const hex = (level: number) => ((level << 4) + 8).toString(16).padStart(2, '0')
  return `#${hex(best >> 8)}${hex((best >> 4) & 15)}${hex(best & 15)}`
}

/**
 * Converts an HEVC-coded HEIF with libheif's `heif-convert`, which applies irot/imir and keeps the ICC profile; the
 * output's suffix (.jpg or .png) picks the format.
 */
export async function convertHeic(input: string, output: string, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted()
  const child = spawn('heif-convert', ['--quiet', '--quality', '95', input, output], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr.on('data', (chunk) => (stderr += String(chunk).slice(0, 2000)))
  const kill = () => child.kill('SIGKILL')
  signal.addEventListener('abort', kill, { once: true })
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', (error) =>
      reject(
        (error as NodeJS.ErrnoException).code === 'ENOENT'
          ? new Error('heif-convert is not installed (Debian package libheif-examples); HEIC photos cannot be decoded')
          : error
      )
    )
    child.once('exit', resolve)
  }).finally(() => signal.removeEventListener('abort', kill))
  signal.throwIfAborted()
  if (code !== 0)
    throw new JobError('invalid_media', `the HEIC photo could not be decoded: ${stderr.trim() || `exit ${code}`}`)
}

/**
 * The frames of a GIF, counted by walking its blocks from disk with a 64 KiB buffer (no pixel is decoded, memory
 * stays flat however many frames there are); null when the file is not a GIF. A malformed GIF counts what it has
 * up to the damage; libvips then judges the rest.
 */
export function countGifFrames(file: string): number | null {
  const fd = openSync(file, 'r')
  try {
    const buffer = Buffer.alloc(64 * 1024)
    let start = 0 // the file offset of buffer[0]
    let end = 0 // bytes in the buffer
    let at = 0 // the file offset read next
    const byte = (): number => {
      if (at >= start + end) {
        start = at
        end = readSync(fd, buffer, 0, buffer.length, at)
        if (end === 0) throw new RangeError('end of file')
      }
      return buffer[at++ - start]!
    }
    const skipBlocks = () => {
      for (let size = byte(); size > 0; size = byte()) at += size
    }
    const signature = String.fromCharCode(...Array.from({ length: 6 }, byte))
    if (signature !== 'GIF87a' && signature !== 'GIF89a') return null
    at = 10
    const screen = byte()
    at = 13 + (screen & 0x80 ? 3 * 2 ** ((screen & 7) + 1) : 0)
    let frames = 0
    try {
      for (let block = byte(); block !== 0x3b; block = byte()) {
        if (block === 0x2c) {
          at += 8
          const image = byte()
          at += (image & 0x80 ? 3 * 2 ** ((image & 7) + 1) : 0) + 1 // local colour table, LZW code size
          skipBlocks()
          frames++
        } else if (block === 0x21) {
          at += 1 // the extension's label
          skipBlocks()
        } else break
      }
    } catch (error) {
      if (!(error instanceof RangeError)) throw error // a truncated GIF: what was counted stands
    }
    return frames
  } finally {
    closeSync(fd)
  }
}

/** Turns a sharp/libvips error into an outcome that names what is wrong with the file. */
function decodeFailure(error: unknown, limits: Pick<Limits, 'maxPixels'>): Error {
  if (error instanceof JobError) return error
  const message = error instanceof Error ? error.message : String(error)
  if (/unsupported image format/i.test(message)) {
    return new JobError('unsupported_format', 'the file is not in an image format this processor can decode')
  }
  if (/exceeds pixel limit/i.test(message)) {
    // Only a header that understated the size gets here: inspectImage checked the size it gave.
    return overLimit(
      'the image decodes to more pixels than its header said',
      'MAX_IMAGE_PIXELS',
      formatPixels(limits.maxPixels)
    )
  }
  if (/timeout/i.test(message)) return new JobError('timeout', 'decoding the image took longer than the time limit')
  // libvips repeats lines; keep each once.
  const detail = [
    ...new Set(
      message
        .split('\n')
        .map((line) => line.trim())
        .filter(Boolean)
    ),
  ].join('; ')
  return new JobError('invalid_media', `the image is corrupt or truncated: ${detail}`)
}

/** `900 MP`, `12.3 MP`, or the plain count below 0.1 MP (where megapixels round to nothing). */
const formatPixels = (pixels: number) =>
  pixels >= 100_000 ? `${Math.round(pixels / 1e5) / 10} MP` : `${pixels} pixels`

// ── Job ────────────────────────────────────────────────────────────────────────────────────────────────────────

/** One request's outputs. A bad image throws a JobError (a `failed` result); S3 trouble is a fault, retried. */
export async function handleImageJob(
  request: ImageRequest,
  job: JobContext,
  limits: Limits
): Promise<JobOutput<ImageMetadata>> {
  // sharp's work cannot be interrupted: a cancel or the time limit abandons it instead.
  const step = <T>(work: Promise<T>) => untilAborted(work, job.signal)
  const original = await fetchOriginal(job, request.source, { maxBytes: limits.maxBytes, variable: 'MAX_IMAGE_BYTES' })

  job.report('processing', 20)
  const { metadata, heic } = await step(inspectImage(original, limits))
  let decodable = original
  // Only after inspectImage: heif-convert decodes every pixel, so the header must have passed the limits first.
  if (heic) {
    // JPEG at quality 95 unless there is alpha: libheif's PNG writer (zlib at its default level) took 2.5–5.3 s of a
    // 12 MP photo's 3–7 s, its JPEG writer 0.7–1.3 s; the outputs are resized and re-encoded from it either way.
    decodable = join(job.workDir, metadata.hasAlpha ? 'decoded.png' : 'decoded.jpg')
    await convertHeic(original, decodable, job.signal)
  }
  const planned = planImages(request.recipe.outputs, metadata)
  const { rendered, placeholder } = await step(
    renderImage(decodable, planned, metadata, { ...limits, autoOrient: !heic })
  )

  job.report('uploading', 80)
  const outputs = await Promise.all(
    rendered.map(async (r): Promise<OutputInfo> => {
      const stored = await job.putOutput(r.name, r.spec.format, r.data)
      return { name: r.name, ...stored, width: r.outWidth, height: r.outHeight, ...(r.set ? { set: r.set } : {}) }
    })
  )
  return { outputs, metadata: { ...metadata, ...placeholder } }
}

// ── Wiring ─────────────────────────────────────────────────────────────────────────────────────────────────────

/**
 * The formats this processor decodes (the API's allow-list): every other libvips loader is blocked, so SVG (an XML
 * document that can reference files and URLs), libvips' own `.v` format and whatever else the build carries fail as
 * `unsupported_format` before any parser of theirs runs, whatever a request says the file is.
 */
export function blockUndecodable(): void {
  const loaders = ['Jpeg', 'Png', 'Webp', 'Tiff', 'Nsgif', 'Heif'].flatMap((format) =>
    ['File', 'Buffer', 'Source'].map((from) => `VipsForeignLoad${format}${from}`)
  )
  sharp.block({ operation: ['VipsForeignLoad'] })
  sharp.unblock({ operation: loaders })
}

export function start(config: Config): Promise<Processor> {
  sharp.cache(false) // outputs are never re-read; the cache only holds memory
  blockUndecodable()
  return startProcessor({
    settings: config.runtime,
    connect: amqp.connect,
    // Every name a request may make: a set's, one per width (a width above the source is skipped, never renamed).
    outputs: (request) =>
      request.recipe.outputs.flatMap((spec) => outputNamesOf(spec).map((name) => ({ name, format: spec.format }))),
    handle: (request, job) => handleImageJob(request, job, config.limits),
  })
}

// ── Entry ──────────────────────────────────────────────────────────────────────────────────────────────────────

if (import.meta.main) await runProcessor('images', () => readConfig(process.env), start)
