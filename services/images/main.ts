/**
 * images: the image processor.
 *
 * Consumes ImageRequest from `<system>.media.images.request` (see shared/PROTOCOL.md), downloads the original,
 * makes each output of the recipe with sharp (auto-oriented, metadata stripped, sRGB, fitted inside its box, never
 * upscaled), writes them to `<prefix>/<name>.<ext>`, and reports on `.updates` and `.results`. The protocol's
 * consumer half (acks after confirms, heartbeats, retries, cancel, lease, hand-back) is `@app/shared/processor`;
 * this file is the media.
 *
 * Env: SYSTEM, RABBITMQ_URL, S3_*, HEARTBEAT_SECONDS, SHUTDOWN_GRACE_SECONDS, ACK_DEADLINE_SECONDS (see
 * shared/processor/config.ts); IMAGE_CONCURRENCY (default: cores), MAX_IMAGE_PIXELS (default 100000000),
 * IMAGE_TIMEOUT_SECONDS (wall clock per job, default 120), IMAGES_TMP_DIR (default <os tmp>/media-images).
 *
 * Refused (a `failed` result, class `input`, never retried): a file sharp cannot decode (`unsupported_format`), a
 * corrupt or truncated one (`invalid_media`), one over the pixel limit (`limit_exceeded`, from its header, before
 * any pixel is decoded), and a job past IMAGE_TIMEOUT_SECONDS (`timeout`).
 */
import amqp from 'amqplib'
import { spawn } from 'node:child_process'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp, { type Metadata } from 'sharp'
import * as v from 'valibot'
import { countVar, type ImageMetadata, type ImageOutputSpec, type ImageRequest, type OutputInfo } from '@app/shared'
import {
  JobError,
  configReader,
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
    MAX_IMAGE_PIXELS: countVar(100_000_000, 2 ** 32),
    IMAGE_TIMEOUT_SECONDS: countVar(120, 3600),
    IMAGES_TMP_DIR: v.optional(v.pipe(v.string(), v.nonEmpty()), join(tmpdir(), 'media-images')),
  },
  (env) => ({
    runtime: runtimeSettings(env, { type: 'images', concurrency: env.IMAGE_CONCURRENCY, timeoutSeconds: env.IMAGE_TIMEOUT_SECONDS, tmpDir: env.IMAGES_TMP_DIR }),
    // sharp's own timeout bounds work a cancel or the job's time limit abandoned.
    limits: { maxPixels: env.MAX_IMAGE_PIXELS, timeoutSeconds: env.IMAGE_TIMEOUT_SECONDS },
  })
)
export type Config = ReturnType<typeof readConfig>
export type Limits = Config['limits']

// ── Core: files in, encoded outputs out (no broker, no S3) ─────────────────────────────────────────────────────

export interface Rendered {
  spec: ImageOutputSpec
  data: Buffer
  width: number
  height: number
}

/**
 * Reads the header only (no pixels are decoded), so a pixel bomb is refused here, in milliseconds.
 * HEVC-coded HEIF (iPhone photos) is decoded by `heif-convert` first: sharp's prebuilt libvips has no HEVC decoder.
 */
export async function inspectImage(file: string, limits: Limits) {
  let meta: Metadata
  try {
    meta = await sharp(file, { limitInputPixels: false }).metadata()
  } catch (error) {
    throw decodeFailure(error)
  }
  if (!meta.width || !meta.height || !meta.format) throw new JobError('invalid_media', 'the image header has no size')
  const pixels = meta.width * meta.height
  if (pixels > limits.maxPixels) {
    throw new JobError(
      'limit_exceeded',
      `the image is ${meta.width}×${meta.height} (${megapixels(pixels)} MP), over the limit of ${megapixels(limits.maxPixels)} MP`
    )
  }
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
 * Makes every output from one decode: the image is oriented, converted to sRGB and shrunk once to the largest box
 * of the recipe, and each output is encoded from those pixels (decoding once is ~35% faster on 12 MP photos).
 * sharp's own timeout bounds work that a cancel or the job's time limit abandoned (sharp cannot be interrupted).
 */
export async function renderImage(file: string, specs: ImageOutputSpec[], options: Limits & { autoOrient: boolean }) {
  const box = { width: Math.max(...specs.map((s) => s.width)), height: Math.max(...specs.map((s) => s.height)) }
  const fit = { fit: 'inside', withoutEnlargement: true } as const
  try {
    // failOn 'warning' refuses truncated files instead of rendering their grey remainder.
    let base = sharp(file, { limitInputPixels: options.maxPixels, failOn: 'warning', sequentialRead: true })
    if (options.autoOrient) base = base.autoOrient()
    const { data, info } = await base
      .resize(box.width, box.height, fit)
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .timeout({ seconds: options.timeoutSeconds })
      .toBuffer({ resolveWithObject: true })
    const raw = { raw: { width: info.width, height: info.height, channels: info.channels } }
    return await Promise.all(
      specs.map(async (spec): Promise<Rendered> => {
        let image = sharp(data, raw).resize(spec.width, spec.height, fit)
        if (spec.format === 'jpeg') image = image.flatten({ background: '#ffffff' }).jpeg({ quality: spec.quality, mozjpeg: true })
        else if (spec.format === 'png') image = image.png()
        else if (spec.format === 'avif') image = image.avif({ quality: spec.quality })
        else image = image.webp({ quality: spec.quality })
        const out = await image.timeout({ seconds: options.timeoutSeconds }).toBuffer({ resolveWithObject: true })
        return { spec, data: out.data, width: out.info.width, height: out.info.height }
      })
    )
  } catch (error) {
    throw decodeFailure(error)
  }
}

/** Converts an HEVC-coded HEIF to PNG with libheif's `heif-convert`, which applies irot/imir and keeps the ICC profile. */
export async function convertHeic(input: string, output: string, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted()
  const child = spawn('heif-convert', ['--quiet', input, output], { stdio: ['ignore', 'ignore', 'pipe'] })
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
  if (code !== 0) throw new JobError('invalid_media', `the HEIC photo could not be decoded: ${stderr.trim() || `exit ${code}`}`)
}

/** Turns a sharp/libvips error into an outcome that names what is wrong with the file. */
function decodeFailure(error: unknown): Error {
  if (error instanceof JobError) return error
  const message = error instanceof Error ? error.message : String(error)
  if (/unsupported image format/i.test(message)) {
    return new JobError('unsupported_format', 'the file is not in an image format this processor can decode')
  }
  if (/exceeds pixel limit/i.test(message)) return new JobError('limit_exceeded', `the image is over the pixel limit`)
  if (/timeout/i.test(message)) return new JobError('timeout', 'decoding the image took longer than the time limit')
  // libvips repeats lines; keep each once.
  const detail = [...new Set(message.split('\n').map((line) => line.trim()).filter(Boolean))].join('; ')
  return new JobError('invalid_media', `the image is corrupt or truncated: ${detail}`)
}

const megapixels = (pixels: number) => Math.round(pixels / 1e5) / 10

// ── Job ────────────────────────────────────────────────────────────────────────────────────────────────────────

/** One request's outputs. A bad image throws a JobError (a `failed` result); S3 trouble is a fault, retried. */
export async function handleImageJob(request: ImageRequest, job: JobContext, limits: Limits): Promise<JobOutput<ImageMetadata>> {
  // sharp's work cannot be interrupted: a cancel or the time limit abandons it instead.
  const step = <T>(work: Promise<T>) => untilAborted(work, job.signal)
  job.report('downloading', 0)
  const original = join(job.workDir, 'original')
  await job.storage.download(request.source.bucket, request.source.key, original)

  job.report('processing', 20)
  const { metadata, heic } = await step(inspectImage(original, limits))
  let decodable = original
  if (heic) {
    decodable = join(job.workDir, 'decoded.png')
    await convertHeic(original, decodable, job.signal)
  }
  const rendered = await step(renderImage(decodable, request.recipe.outputs, { ...limits, autoOrient: !heic }))

  job.report('uploading', 80)
  const outputs = await Promise.all(
    rendered.map(async (r): Promise<OutputInfo> => {
      const stored = await job.putOutput(r.spec.name, r.spec.format, r.data)
      return { name: r.spec.name, ...stored, width: r.width, height: r.height }
    })
  )
  return { outputs, metadata }
}

// ── Wiring ─────────────────────────────────────────────────────────────────────────────────────────────────────

export function start(config: Config): Promise<Processor> {
  sharp.cache(false) // outputs are never re-read; the cache only holds memory
  return startProcessor({
    settings: config.runtime,
    connect: amqp.connect,
    outputs: (request) => request.recipe.outputs.map(({ name, format }) => ({ name, format })),
    handle: (request, job) => handleImageJob(request, job, config.limits),
  })
}

// ── Entry ──────────────────────────────────────────────────────────────────────────────────────────────────────

if (import.meta.main) await runProcessor('images', () => readConfig(process.env), start)
