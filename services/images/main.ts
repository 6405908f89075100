/**
 * images: the image processor.
 *
 * Consumes ImageRequest from `<system>.media.images.request`, downloads the original from S3, makes each output of
 * the recipe with sharp (auto-oriented, metadata stripped, sRGB, fitted inside its box, never upscaled), uploads the
 * outputs to deterministic keys, and reports on `.updates` (progress) and `.results` (the outcome).
 *
 * Env: SYSTEM, RABBITMQ_URL, S3_* (see shared/env.ts), IMAGE_CONCURRENCY (default: cores), MAX_IMAGE_PIXELS
 * (default 100000000), IMAGE_TIMEOUT_SECONDS (default 120), IMAGES_TMP_DIR (default <os tmp>/media-images),
 * HEARTBEAT_SECONDS (default 15), SHUTDOWN_GRACE_SECONDS (default 25).
 *
 * Acks: a request is acked only after its result and final update are confirmed by the broker, so a processor
 * that dies mid-job has the request redelivered (image jobs are bounded far below the broker's ack timeout).
 * A malformed message is dead-lettered at once. A bad image is an outcome (`failed`, class `input`), never retried.
 * An infrastructure fault (S3, broker) is retried after a backoff through redelivery; on the last allowed delivery
 * the job is reported `failed` (`gave_up`, class `transient`) so that it still reaches a final state. A request
 * that kills the process every time is dead-lettered by the broker's delivery limit, and the backend fails it.
 * On SIGTERM/SIGINT the processor stops taking work, lets running jobs finish within the grace period, and hands
 * back what is left as fresh messages, so a shutdown never counts against a job's delivery limit.
 */
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib'
import { spawn } from 'node:child_process'
import { createWriteStream, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import sharp, { type Metadata } from 'sharp'
import * as v from 'valibot'
import {
  BrokerEnv,
  CancelSchema,
  DELIVERY_LIMIT,
  HEARTBEAT_SECONDS,
  cancelExchange,
  cancelMarkerKey,
  ImageRequestSchema,
  ImageResultSchema,
  JobUpdateSchema,
  S3Env,
  countVar,
  createPublisher,
  decodeMessage,
  declareTopology,
  encodeMessage,
  queueNames,
  readEnv,
  retryDelayMs,
  s3ClientOptions,
  topology,
  type ErrorInfo,
  type ImageMetadata,
  type ImageOutputSpec,
  type ImageRequest,
  type ImageResult,
  type JobUpdate,
  type OutputInfo,
  type Publisher,
} from '@app/shared'

// ── Config ─────────────────────────────────────────────────────────────────────────────────────────────────────

const ConfigSchema = v.pipe(
  v.object({
    ...BrokerEnv,
    ...S3Env,
    IMAGE_CONCURRENCY: countVar(availableParallelism(), 256),
    MAX_IMAGE_PIXELS: countVar(100_000_000, 2 ** 32),
    IMAGE_TIMEOUT_SECONDS: countVar(120, 3600),
    IMAGES_TMP_DIR: v.optional(v.pipe(v.string(), v.nonEmpty()), join(tmpdir(), 'media-images')),
    HEARTBEAT_SECONDS: countVar(HEARTBEAT_SECONDS, 3600),
    SHUTDOWN_GRACE_SECONDS: countVar(25, 3600),
  }),
  v.transform((env) => ({
    system: env.SYSTEM,
    rabbitmqUrl: env.RABBITMQ_URL,
    queues: queueNames(env.SYSTEM, 'images'),
    s3: {
      endpoint: env.S3_ENDPOINT,
      region: env.S3_REGION,
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
      timeoutSeconds: env.S3_TIMEOUT_SECONDS,
    },
    concurrency: env.IMAGE_CONCURRENCY,
    limits: { maxPixels: env.MAX_IMAGE_PIXELS, timeoutSeconds: env.IMAGE_TIMEOUT_SECONDS },
    tmpDir: env.IMAGES_TMP_DIR,
    heartbeatMs: env.HEARTBEAT_SECONDS * 1000,
    shutdownGraceMs: env.SHUTDOWN_GRACE_SECONDS * 1000,
  }))
)
export type Config = v.InferOutput<typeof ConfigSchema>
export type Limits = Config['limits']

/** Parses the environment once; throws one error naming every bad variable. */
export function readConfig(env: Record<string, string | undefined>): Config {
  return readEnv(ConfigSchema, env)
}

// ── Core: files in, encoded outputs out (no broker, no S3) ─────────────────────────────────────────────────────

/** An expected failure of a job: bad input, not a fault of ours. It becomes a `failed` result, never a retry. */
export class MediaError extends Error {
  constructor(
    readonly code: 'invalid_media' | 'unsupported_format' | 'limit_exceeded' | 'source_missing' | 'timeout',
    message: string
  ) {
    super(message)
  }
}

const CONTENT_TYPES = { webp: 'image/webp', jpeg: 'image/jpeg', png: 'image/png', avif: 'image/avif' } as const
const EXTENSIONS = { webp: 'webp', jpeg: 'jpg', png: 'png', avif: 'avif' } as const

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
  if (!meta.width || !meta.height || !meta.format) throw new MediaError('invalid_media', 'the image header has no size')
  const pixels = meta.width * meta.height
  if (pixels > limits.maxPixels) {
    throw new MediaError(
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
export async function convertHeic(input: string, output: string, timeoutSeconds: number): Promise<void> {
  const child = spawn('heif-convert', ['--quiet', input, output], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk) => (stderr += String(chunk).slice(0, 2000)))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutSeconds * 1000)
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', (error) =>
      reject(
        (error as NodeJS.ErrnoException).code === 'ENOENT'
          ? new Error('heif-convert is not installed (Debian package libheif-examples); HEIC photos cannot be decoded')
          : error
      )
    )
    child.once('exit', resolve)
  }).finally(() => clearTimeout(timer))
  if (code === null) throw new MediaError('timeout', `decoding the HEIC photo took longer than ${timeoutSeconds} s`)
  if (code !== 0) throw new MediaError('invalid_media', `the HEIC photo could not be decoded: ${stderr.trim() || `exit ${code}`}`)
}

/** Turns a sharp/libvips error into an outcome that names what is wrong with the file. */
function decodeFailure(error: unknown): Error {
  if (error instanceof MediaError) return error
  const message = error instanceof Error ? error.message : String(error)
  if (/unsupported image format/i.test(message)) {
    return new MediaError('unsupported_format', 'the file is not in an image format this processor can decode')
  }
  if (/exceeds pixel limit/i.test(message)) return new MediaError('limit_exceeded', `the image is over the pixel limit`)
  if (/timeout/i.test(message)) return new MediaError('timeout', 'decoding the image took longer than the time limit')
  // libvips repeats lines; keep each once.
  const detail = [...new Set(message.split('\n').map((line) => line.trim()).filter(Boolean))].join('; ')
  return new MediaError('invalid_media', `the image is corrupt or truncated: ${detail}`)
}

const megapixels = (pixels: number) => Math.round(pixels / 1e5) / 10

// ── Storage ────────────────────────────────────────────────────────────────────────────────────────────────────

export function createStorage(config: Config['s3']) {
  const client = new S3Client(s3ClientOptions(config))
  return {
    /** Streams an object to a local file. A missing object is an outcome, not a fault. */
    async download(bucket: string, key: string, file: string): Promise<void> {
      try {
        const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
        await pipeline(object.Body as Readable, createWriteStream(file))
      } catch (error) {
        if ((error as { name?: string }).name === 'NoSuchKey') {
          throw new MediaError('source_missing', `the original ${bucket}/${key} does not exist`)
        }
        throw new Error(`downloading ${bucket}/${key} failed`, { cause: error })
      }
    },
    async upload(bucket: string, key: string, body: Buffer, contentType: string): Promise<void> {
      try {
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType }))
      } catch (error) {
        throw new Error(`uploading ${bucket}/${key} failed`, { cause: error })
      }
    },
    async exists(bucket: string, key: string): Promise<boolean> {
      try {
        await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))
        return true
      } catch (error) {
        if ((error as { name?: string }).name === 'NotFound' || (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false
        throw new Error(`checking ${bucket}/${key} failed`, { cause: error })
      }
    },
    async remove(bucket: string, key: string): Promise<void> {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }))
    },
    destroy: () => client.destroy(),
  }
}
export type Storage = ReturnType<typeof createStorage>

// ── Job ────────────────────────────────────────────────────────────────────────────────────────────────────────

export interface JobDeps {
  storage: Storage
  limits: Limits
  /** A directory of this job's own, removed afterwards by the caller. */
  workDir: string
  report: (update: Pick<JobUpdate, 'stage' | 'progress'>) => void
  /** Aborts (with a JobCancelled) when the backend cancels the job. */
  signal: AbortSignal
}

/** One request in, one result out. Bad input gives a `failed` result; only infrastructure faults throw. */
export async function handleImageJob(request: ImageRequest, deps: JobDeps): Promise<ImageResult> {
  const { jobId } = request
  const at = () => new Date().toISOString()
  const marker = cancelMarkerKey(request.output.prefix)
  const uploaded: string[] = []
  /** Throws the cancel at a step boundary; sharp's work cannot be interrupted, so it is abandoned instead. */
  const step = <T>(work: Promise<T>): Promise<T> => {
    // Work abandoned by a cancel or an interruption may still fail later (its directory removed): not an error.
    work.catch(() => {})
    deps.signal.throwIfAborted()
    return abandonOnAbort(work, deps.signal)
  }
  try {
    if (await step(deps.storage.exists(request.output.bucket, marker))) throw new JobCancelled()
    deps.report({ stage: 'downloading', progress: 0 })
    const original = join(deps.workDir, 'original')
    await step(deps.storage.download(request.source.bucket, request.source.key, original))

    deps.report({ stage: 'processing', progress: 20 })
    const { metadata, heic } = await step(inspectImage(original, deps.limits))
    let decodable = original
    if (heic) {
      decodable = join(deps.workDir, 'decoded.png')
      await step(convertHeic(original, decodable, deps.limits.timeoutSeconds))
    }
    const rendered = await step(renderImage(decodable, request.recipe.outputs, { ...deps.limits, autoOrient: !heic }))

    deps.report({ stage: 'uploading', progress: 80 })
    const outputs = await step(
      Promise.all(
        rendered.map(async (r): Promise<OutputInfo> => {
          const key = `${request.output.prefix}/${r.spec.name}.${EXTENSIONS[r.spec.format]}`
          const contentType = CONTENT_TYPES[r.spec.format]
          uploaded.push(key)
          await deps.storage.upload(request.output.bucket, key, r.data, contentType)
          return { name: r.spec.name, key, contentType, size: r.data.byteLength, width: r.width, height: r.height }
        })
      )
    )
    // A cancel whose broadcast this processor missed: the marker says so, and nothing of the job may remain.
    if (await step(deps.storage.exists(request.output.bucket, marker))) throw new JobCancelled()
    return { version: 1, jobId, status: 'completed', outputs, metadata, at: at() }
  } catch (error) {
    const cancelled = error instanceof JobCancelled || (deps.signal.aborted && deps.signal.reason instanceof JobCancelled)
    if (cancelled) {
      await Promise.all(uploaded.map((key) => deps.storage.remove(request.output.bucket, key)))
      return { version: 1, jobId, status: 'cancelled', at: at() }
    }
    if (error instanceof MediaError) {
      return { version: 1, jobId, status: 'failed', error: { code: error.code, message: error.message, class: 'input' }, at: at() }
    }
    throw error
  }
}

/** Why a job stopped early: its backend cancelled it. */
export class JobCancelled extends Error {
  constructor() {
    super('the job was cancelled')
  }
}

/** Why a job stopped early without an outcome: its delivery went back to the broker (channel lost, shutdown). */
class Interrupted extends Error {}

/** Rejects with the signal's reason as soon as it aborts; the work itself runs on and its outcome is dropped. */
function abandonOnAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}

// ── Wiring ─────────────────────────────────────────────────────────────────────────────────────────────────────

const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** A delivery being worked on, and the channel it must be settled on. */
interface Running {
  message: ConsumeMessage
  channel: Channel
  stop: AbortController
}

/** Connects, declares the topology and consumes until stopped. Reconnects by itself when the broker drops it. */
export async function start(config: Config) {
  sharp.cache(false) // outputs are never re-read; the cache only holds memory
  const storage = createStorage(config.s3)
  const jobsDir = join(config.tmpDir, String(process.pid))
  clearDeadRuns(config.tmpDir)
  mkdirSync(jobsDir, { recursive: true })

  const inFlight = new Set<Promise<void>>()
  /** The jobs running here by job id: to cancel, to interrupt when their channel dies, to hand back on shutdown. */
  const running = new Map<string, Running>()
  /** Aborts backoff waits when the service stops. */
  const stopping = new AbortController()
  let publisher: Publisher | undefined
  let consumer: { channel: Channel; tag: string } | undefined

  async function onMessage(channel: ConfirmChannel, message: ConsumeMessage): Promise<void> {
    const decoded = decodeMessage(ImageRequestSchema, message.content)
    if (!decoded.ok) {
      console.error(`images: dead-lettering a malformed request (${message.properties.messageId ?? 'no id'}): ${decoded.reason}`)
      return settle(() => channel.nack(message, false, false))
    }
    const request = decoded.value
    // A second copy of a job this process is running (a re-drive, a redelivery): two runs would share the job's
    // work directory. The run under way settles its own delivery, so the copy is dropped; but if that run was
    // interrupted (its delivery is back with the broker), the copy is the job: it goes back until the run is gone.
    const current = running.get(request.jobId)
    if (current) {
      if (current.stop.signal.reason instanceof Interrupted) return settle(() => channel.nack(message, false, true))
      console.warn(`images: job ${request.jobId} is already running here; dropping a duplicate delivery`)
      return settle(() => channel.ack(message))
    }
    const attempt = attemptOf(message)
    let pending = Promise.resolve()
    let latest: Omit<JobUpdate, 'version' | 'jobId' | 'at'> = { status: 'processing', stage: 'queued', progress: 0 }
    const send = (update: typeof latest) => {
      latest = update
      const body = encodeMessage(JobUpdateSchema, { version: 1, jobId: request.jobId, at: new Date().toISOString(), ...update })
      // Updates are advisory: a lost one is replaced by the next, and the result decides the final state.
      const sent = publish(config.queues.updates, body, request.jobId, 'job.update').catch((error) =>
        console.warn(`images: job ${request.jobId}: an update was not confirmed: ${error.message}`)
      )
      pending = Promise.all([pending, sent]).then(() => {})
    }
    // The heartbeat: the latest update again, so the backend can tell a slow job from a dead processor.
    const heartbeat = setInterval(() => send(latest), config.heartbeatMs)
    const workDir = join(jobsDir, request.jobId)
    const job: Running = { message, channel, stop: new AbortController() }
    running.set(request.jobId, job)
    let result: ImageResult
    try {
      mkdirSync(workDir, { recursive: true })
      result = await handleImageJob(request, {
        storage,
        limits: config.limits,
        workDir,
        signal: job.stop.signal,
        report: ({ stage, progress }) => send({ status: 'processing', stage, progress }),
      })
      // Finished just as it was interrupted: its delivery is no longer ours to settle.
      if (job.stop.signal.reason instanceof Interrupted) return
    } catch (error) {
      // Its delivery is back with the broker (or is being handed back by stop()): nothing to report.
      if (job.stop.signal.reason instanceof Interrupted) return
      const reason = describeError(error)
      if (attempt < DELIVERY_LIMIT) {
        const delay = retryDelayMs(attempt)
        console.error(`images: job ${request.jobId} attempt ${attempt} hit a fault, retrying in ${delay / 1000} s: ${reason}`)
        await sleep(delay, AbortSignal.any([stopping.signal, job.stop.signal]))
        if (job.stop.signal.reason instanceof Interrupted) return
        return settle(() => channel.nack(message, false, true))
      }
      const error_ = { code: 'gave_up', message: `gave up after ${attempt} attempts: ${reason}`, class: 'transient' } as const
      result = { version: 1, jobId: request.jobId, status: 'failed', error: error_, at: new Date().toISOString() }
    } finally {
      clearInterval(heartbeat)
      running.delete(request.jobId)
      rmSync(workDir, { recursive: true, force: true })
    }
    if (result.status === 'failed') {
      console.warn(`images: job ${request.jobId} failed: ${result.error.code}: ${result.error.message}`)
      send({ status: 'failed', stage: 'finished', progress: 100, error: result.error })
    } else if (result.status === 'cancelled') {
      console.log(`images: job ${request.jobId} was cancelled`)
      send({ status: 'cancelled', stage: 'finished', progress: 100 })
    } else {
      send({ status: 'completed', stage: 'finished', progress: 100 })
    }
    try {
      await publish(config.queues.results, encodeMessage(ImageResultSchema, result), request.jobId, 'job.result')
      await pending
    } catch (error) {
      // Unconfirmed result: put the request back so the job is done again rather than lost.
      console.error(`images: job ${request.jobId}: the result was not confirmed, requeueing: ${describeError(error)}`)
      return settle(() => channel.nack(message, false, true))
    }
    settle(() => channel.ack(message))
  }

  function publish(queue: string, body: Uint8Array, jobId: string, type: string): Promise<void> {
    if (!publisher) return Promise.reject(new Error('not connected to the broker'))
    return publisher.publish(queue, body, { correlationId: jobId, type })
  }

  /** Stops the jobs whose deliveries were on `channel`: the broker has put them back, and they will come again. */
  function interruptJobsOn(channel: Channel, why: string) {
    for (const [jobId, job] of running) {
      if (job.channel !== channel) continue
      console.warn(`images: job ${jobId} interrupted (${why}); the broker redelivers it`)
      job.stop.abort(new Interrupted(why))
    }
  }

  const connection = await amqp.connect(config.rabbitmqUrl, {
    recovery: {
      initialMaxRetries: 2,
      maxDelay: 5_000,
      // Runs after every (re)connect: channels, topology, prefetch and consumer do not survive a reconnect.
      async setup(model: ChannelModel) {
        const channel = await model.createConfirmChannel()
        channel.on('error', (error) => console.error(`images: channel error: ${error.message}`))
        // A channel closed under a live connection (an ack timeout, a deleted queue) is not recovered by amqplib:
        // close the whole connection, so recovery re-runs this setup.
        channel.on('close', () => {
          interruptJobsOn(channel, 'its channel closed')
          if (!stopping.signal.aborted) model.close().catch(() => {})
        })
        await declareTopology(channel, topology(config.system, 'images'))
        await channel.prefetch(config.concurrency)
        publisher = createPublisher(channel, toBuffer)
        await listenForCancels(model, config.system, (jobId) => running.get(jobId)?.stop.abort(new JobCancelled()), 'images')
        if (stopping.signal.aborted) return
        const { consumerTag } = await channel.consume(config.queues.request, (message) => {
          if (message === null) {
            console.error('images: the broker cancelled the consumer (queue deleted?); reconnecting to consume again')
            return void model.close().catch(() => {})
          }
          const task = onMessage(channel, message).catch((error) => console.error('images: unexpected error', error))
          inFlight.add(task)
          void task.finally(() => inFlight.delete(task))
        })
        consumer = { channel, tag: consumerTag }
      },
    },
  })
  connection.on('disconnect', (error) => console.warn(`images: lost the broker (${error.message}); reconnecting`))
  connection.on('connect', () => console.log('images: connected to the broker'))
  connection.on('reconnect-failed', (error) => console.error(`images: gave up reconnecting: ${error.message}`))
  connection.on('error', (error) => console.error(`images: broker error: ${error.message}`))
  connection.on('blocked', (reason) => console.warn(`images: the broker blocks publishing (${reason})`))
  connection.on('unblocked', () => console.log('images: the broker accepts publishing again'))

  return {
    /**
     * Stops taking work and lets running jobs finish for up to the grace period. Jobs still running then are
     * stopped and handed back as fresh messages (acking the originals), so a shutdown is not counted as a failed
     * delivery; if the hand-back fails, the delivery is released to the broker, which redelivers it.
     */
    async stop() {
      stopping.abort()
      if (consumer) await consumer.channel.cancel(consumer.tag).catch(() => {})
      const settled = Promise.allSettled(inFlight)
      const graceOver = sleep(config.shutdownGraceMs).then(() => 'grace over' as const)
      if ((await Promise.race([settled, graceOver])) === 'grace over') {
        for (const [jobId, job] of running) {
          // Interrupted already (its channel closed): the broker has its delivery back.
          if (job.stop.signal.reason instanceof Interrupted) continue
          job.stop.abort(new Interrupted('shutting down'))
          await handBack(job, publisher, config.queues.request).then(
            () => console.log(`images: job ${jobId} handed back to the queue at shutdown`),
            (error) => {
              console.warn(`images: job ${jobId} could not be handed back (${describeError(error)}); the broker redelivers it`)
              settle(() => job.channel.nack(job.message, false, true))
            }
          )
        }
        await settled
      }
      // The channel first: closing the connection at once can overtake the acks just written on the channel (amqplib
      // muxes channels onto the socket), and the broker then requeues deliveries that were acked or handed back.
      await consumer?.channel.close().catch(() => {})
      await connection.close().catch(() => {})
      storage.destroy()
      rmSync(jobsDir, { recursive: true, force: true })
    },
  }
}

/**
 * Which attempt a delivery is: the broker's count of earlier deliveries, plus the attempts carried by a message
 * that was handed back (`x-media-attempts`, whose broker count started again).
 */
function attemptOf(message: ConsumeMessage): number {
  const headers = message.properties.headers ?? {}
  return Number(headers['x-media-attempts'] ?? 0) + Number(headers['x-delivery-count'] ?? 0) + 1
}

/**
 * Re-publishes a delivery as a new message and acks the original. The broker's delivery count starts again; a
 * shutdown is not the job's fault, so the attempts made so far are carried over unchanged.
 */
async function handBack(job: Running, publisher: Publisher | undefined, queue: string): Promise<void> {
  if (!publisher) throw new Error('not connected to the broker')
  const { properties, content } = job.message
  await publisher.publish(queue, content, {
    correlationId: String(properties.correlationId ?? ''),
    type: String(properties.type ?? 'job.request'),
    headers: { 'x-media-attempts': attemptOf(job.message) - 1 },
  })
  job.channel.ack(job.message)
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
  })
}

/** Binds a queue of this instance's own to the cancel fanout and aborts the named job when it runs here. */
async function listenForCancels(model: ChannelModel, system: string, cancel: (jobId: string) => void, name: string) {
  const channel = await model.createChannel()
  channel.on('error', (error) => console.error(`${name}: cancel channel error: ${error.message}`))
  const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true })
  await channel.bindQueue(queue, cancelExchange(system), '')
  await channel.consume(
    queue,
    (message) => {
      if (!message) return
      const decoded = decodeMessage(CancelSchema, message.content)
      if (!decoded.ok) return console.error(`${name}: ignoring a malformed cancel: ${decoded.reason}`)
      cancel(decoded.value.jobId)
    },
    { noAck: true }
  )
}

/** Ack/nack on a channel that died meanwhile throws; the broker has already requeued that delivery. */
function settle(action: () => void): void {
  try {
    action()
  } catch (error) {
    console.warn(`images: could not settle a delivery (channel closed; it will be redelivered): ${describeError(error)}`)
  }
}

/** Removes the work directories of processes on this machine that are gone (a crash leaves them behind). */
function clearDeadRuns(tmpDir: string): void {
  if (!existsSync(tmpDir)) return
  for (const entry of readdirSync(tmpDir)) {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || pid === process.pid || isAlive(pid)) continue
    rmSync(join(tmpDir, entry), { recursive: true, force: true })
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  return error.cause instanceof Error ? `${error.message}: ${error.cause.message}` : error.message
}

// ── Entry ──────────────────────────────────────────────────────────────────────────────────────────────────────

if (import.meta.main) {
  let config: Config
  try {
    config = readConfig(process.env)
  } catch (error) {
    console.error(`images: ${(error as Error).message}`)
    process.exit(2)
  }
  let service: Awaited<ReturnType<typeof start>>
  try {
    service = await start(config)
  } catch (error) {
    console.error(
      `images: cannot reach RabbitMQ at ${config.rabbitmqUrl.replace(/\/\/[^@]*@/, '//')}: ${describeError(error)}\n` +
        '  Start it with `rabbitmq-server -detached` (Debian: `apt-get install rabbitmq-server`), or set RABBITMQ_URL.'
    )
    process.exit(1)
  }
  console.log(`images: consuming ${config.queues.request} with concurrency ${config.concurrency}`)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void service.stop().then(() => process.exit(0)))
  }
}
