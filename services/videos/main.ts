/**
 * videos: the video processor.
 *
 * Consumes VideoRequest from `<system>.media.videos.request`, downloads the original from S3 to a per-job temp dir,
 * probes it with ffprobe held to the container the backend sniffed, makes a WebP poster and H.264/AAC MP4
 * renditions (one ffmpeg run for all renditions), uploads them to deterministic keys, and reports on `.updates`
 * (progress with an ETA) and `.results` (the outcome).
 *
 * Env: SYSTEM, RABBITMQ_URL, S3_* (see shared/env.ts), VIDEO_CONCURRENCY (default 1), MAX_VIDEO_SECONDS
 * (default 3600), MAX_VIDEO_PIXELS (default 8847360, i.e. 4096×2160), VIDEO_TIMEOUT_SECONDS (wall clock per job,
 * default 14400), VIDEOS_TMP_DIR (default <os tmp>/media-videos), HEARTBEAT_SECONDS (default 15),
 * SHUTDOWN_GRACE_SECONDS (default 25), ACK_DEADLINE_SECONDS (default 1500; must stay below the broker's
 * consumer_timeout, 30 min by default).
 *
 * Outputs: `<prefix>/<poster.name>.webp`, fitted inside its box, never upscaled, taken ~10% into the video (the most
 * representative of ~1 s of frames, so a fade-in does not give a black poster); `<prefix>/<rendition.name>.mp4` for
 * every rung whose height is at or below the source's displayed *short side* (so a 1080×1920 portrait phone video
 * gets its 1080p rung at 1080×1920), always at least the smallest rung (made at source size for a smaller source:
 * never upscaled). Rotation is applied to the pixels and not left in the outputs; dimensions are even; metadata
 * (GPS, titles, chapters) is stripped; 10-bit and HDR (PQ/HLG, tone-mapped with zscale) become 8-bit SDR yuv420p.
 * A source without audio gives outputs without audio.
 *
 * Refused (a `failed` result, not a retry): a file the forced demuxer cannot read (`invalid_media`; this is also what
 * an HLS playlist or ffconcat script disguised as MP4 gets), a file with no video stream: audio-only files, cover art
 * not counting as video (`unsupported_format`, "has no video stream"), a container the backend did not sniff as a
 * video (`unsupported_format`), one over the duration or pixel limit (`limit_exceeded`, before any transcoding),
 * a truncated file (`invalid_media`), and a job past VIDEO_TIMEOUT_SECONDS (`timeout`; ffmpeg is SIGKILLed).
 *
 * Acks: a job holds its delivery while it is safe to: the request is acked only after its result and final update
 * are confirmed by the broker, so a processor that dies mid-job has the request redelivered. RabbitMQ closes the
 * channel of a delivery held longer than its consumer_timeout (30 min by default, not settable per queue before
 * 3.12), so a job still running at ACK_DEADLINE_SECONDS trades its delivery for a lease: the delivery is acked and
 * the job carries on, kept alive for the backend by its heartbeats (the latest update, repeated every
 * HEARTBEAT_SECONDS). A leased job no longer depends on a channel: it survives a reconnect, and its result is
 * retried rather than requeued. If the processor dies while a job is leased, the backend re-drives the job once
 * its heartbeats stop. A lease keeps its slot: the processor takes at most VIDEO_CONCURRENCY jobs, leased or not.
 *
 * A malformed message is dead-lettered at once. A bad video is an outcome (`failed`, class `input`), never retried.
 * An infrastructure fault (S3, broker, disk) is retried after a backoff: a held delivery is requeued, a leased job
 * is handed back as a fresh copy of its request carrying its attempt count (`x-media-attempts`). On the last
 * allowed attempt the job is reported `failed` (`gave_up`, class `transient`) so that it still reaches a final
 * state. A request that kills the process every time is dead-lettered by the broker's delivery limit.
 * On SIGTERM/SIGINT the processor stops taking work, lets running jobs finish within the grace period, and hands
 * back what is left as fresh messages (acking held deliveries), so a shutdown never counts as an attempt.
 */
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib'
import ffmpeg from 'fluent-ffmpeg'
import { spawn } from 'node:child_process'
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import * as v from 'valibot'
import {
  BrokerEnv,
  CancelSchema,
  DELIVERY_LIMIT,
  HEARTBEAT_SECONDS,
  cancelExchange,
  cancelMarkerKey,
  JobUpdateSchema,
  S3Env,
  VideoRequestSchema,
  VideoResultSchema,
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
  type JobUpdate,
  type OutputInfo,
  type Publisher,
  type VideoMetadata,
  type VideoRequest,
  type VideoResult,
} from '@app/shared'

// ── Config ─────────────────────────────────────────────────────────────────────────────────────────────────────

const ConfigSchema = v.pipe(
  v.object({
    ...BrokerEnv,
    ...S3Env,
    VIDEO_CONCURRENCY: countVar(1, 64),
    MAX_VIDEO_SECONDS: countVar(3600, 7 * 86400),
    MAX_VIDEO_PIXELS: countVar(4096 * 2160, 2 ** 32),
    // Enough for a 2-hour transcode. Not bound by the broker's consumer_timeout: a long job is leased (see below).
    VIDEO_TIMEOUT_SECONDS: countVar(14400, 7 * 86400),
    VIDEOS_TMP_DIR: v.optional(v.pipe(v.string(), v.nonEmpty()), join(tmpdir(), 'media-videos')),
    HEARTBEAT_SECONDS: countVar(HEARTBEAT_SECONDS, 3600),
    SHUTDOWN_GRACE_SECONDS: countVar(25, 3600),
    // How long a job may hold its delivery before it is acked and the job leased. Must be below the broker's
    // consumer_timeout (30 min by default; its check runs about once a minute, so leave a margin of minutes):
    // past that, RabbitMQ closes the channel and redelivers the job while it still runs here.
    ACK_DEADLINE_SECONDS: countVar(1500, 7 * 86400),
  }),
  v.transform((env) => ({
    system: env.SYSTEM,
    rabbitmqUrl: env.RABBITMQ_URL,
    queues: queueNames(env.SYSTEM, 'videos'),
    s3: {
      endpoint: env.S3_ENDPOINT,
      region: env.S3_REGION,
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
      timeoutSeconds: env.S3_TIMEOUT_SECONDS,
    },
    concurrency: env.VIDEO_CONCURRENCY,
    limits: { maxSeconds: env.MAX_VIDEO_SECONDS, maxPixels: env.MAX_VIDEO_PIXELS, timeoutSeconds: env.VIDEO_TIMEOUT_SECONDS },
    tmpDir: env.VIDEOS_TMP_DIR,
    heartbeatMs: env.HEARTBEAT_SECONDS * 1000,
    shutdownGraceMs: env.SHUTDOWN_GRACE_SECONDS * 1000,
    ackDeadlineMs: env.ACK_DEADLINE_SECONDS * 1000,
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

/** The ffmpeg demuxer for each container the backend sniffs. ffmpeg is never allowed to pick one by probing. */
export const DEMUXERS: ReadonlyMap<string, string> = new Map([
  ['mp4', 'mov'],
  ['mov', 'mov'],
  ['3gp', 'mov'],
  ['webm', 'matroska'],
  ['mkv', 'matroska'],
  ['avi', 'avi'],
  ['mpegts', 'mpegts'],
  ['flv', 'flv'],
])

/** Input options for every ffmpeg/ffprobe run: local files only, and only the one demuxer (no hls, concat, …). */
const inputGuard = (demuxer: string) => ['-protocol_whitelist', 'file', '-format_whitelist', demuxer, '-f', demuxer]

interface FfprobeStream {
  index: number
  codec_type?: string
  codec_name?: string
  width?: number
  height?: number
  sample_aspect_ratio?: string
  avg_frame_rate?: string
  r_frame_rate?: string
  duration?: string
  duration_ts?: number
  nb_frames?: string
  channels?: number
  color_transfer?: string
  color_primaries?: string
  color_space?: string
  color_range?: string
  disposition?: { attached_pic?: number }
  tags?: Record<string, string>
  side_data_list?: { side_data_type?: string; rotation?: number }[]
}
interface FfprobeOutput {
  streams?: FfprobeStream[]
  format?: { duration?: string; bit_rate?: string; size?: string }
}

/** What the transcode needs to know of a source, beyond the metadata it reports. */
export interface Probed {
  metadata: VideoMetadata
  demuxer: string
  videoIndex: number
  audio: { index: number; channels: number } | null
  color: { transfer?: string; primaries?: string; matrix?: string; range?: string }
}

/** Runs ffprobe on a local file, held to one demuxer. */
async function ffprobe(file: string, demuxer: string, signal: AbortSignal, container = demuxer): Promise<FfprobeOutput> {
  const args = ['-v', 'error', ...inputGuard(demuxer), '-show_format', '-show_streams', '-of', 'json', file]
  const { code, stdout, stderr } = await spawnCapture('ffprobe', args, signal)
  if (code !== 0) throw new MediaError('invalid_media', `the file is not a readable ${container} file: ${tidyStderr(stderr, file)}`)
  try {
    return JSON.parse(stdout) as FfprobeOutput
  } catch {
    throw new Error(`ffprobe printed something other than JSON: ${stdout.slice(0, 200)}`)
  }
}

/**
 * Probes the original and checks it against the limits, so a refusal costs milliseconds and no transcoding.
 * Durations: container durations can lie (a fragmented MP4 may claim 143165 s for 1 s of content), so the streams'
 * own durations are preferred and the container's is only a ceiling or fallback; `-t` is the hard bound anyway.
 */
export async function probeVideo(file: string, format: string, limits: Limits, signal: AbortSignal): Promise<Probed> {
  const demuxer = DEMUXERS.get(format)
  if (!demuxer) throw new MediaError('unsupported_format', `"${format}" is not a video container this processor accepts`)
  const probe = await ffprobe(file, demuxer, signal, format.toUpperCase())
  const streams = probe.streams ?? []
  // Cover art (MP3/M4A attached pictures) is a video stream to ffmpeg but not a video.
  const video = streams.find((s) => s.codec_type === 'video' && !s.disposition?.attached_pic)
  if (!video) {
    const audioOnly = streams.some((s) => s.codec_type === 'audio')
    throw new MediaError(
      'unsupported_format',
      audioOnly ? 'the file has no video stream (it is audio only); upload audio as audio' : 'the file has no video stream'
    )
  }
  if (!video.codec_name || video.codec_name === 'none') throw new MediaError('unsupported_format', 'the video stream is in a codec ffmpeg cannot decode')
  if (!video.width || !video.height) throw new MediaError('invalid_media', 'the video stream has no picture size')
  const audioStream = streams.find((s) => s.codec_type === 'audio' && s.codec_name && (s.channels ?? 0) > 0)

  const pixels = video.width * video.height
  if (pixels > limits.maxPixels) {
    throw new MediaError('limit_exceeded', `the video is ${video.width}×${video.height} (${pixels} pixels), over the limit of ${limits.maxPixels} pixels`)
  }
  let durationSeconds = pickDuration(probe, video, audioStream)
  if (!Number.isFinite(durationSeconds)) durationSeconds = await measureDuration(file, demuxer, video.index, signal)
  if (durationSeconds > limits.maxSeconds) {
    throw new MediaError('limit_exceeded', `the video lasts ${Math.round(durationSeconds)} s, over the limit of ${limits.maxSeconds} s`)
  }

  const rotation = readRotation(video)
  // Anamorphic video: widen (or heighten) to square pixels, as players do.
  const sar = ratio(video.sample_aspect_ratio) || 1
  let width = sar > 1 ? Math.round(video.width * sar) : video.width
  let height = sar < 1 ? Math.round(video.height / sar) : video.height
  if (rotation === 90 || rotation === 270) [width, height] = [height, width]
  const frameRate = ratio(video.avg_frame_rate) || ratio(video.r_frame_rate)
  const size = Number(probe.format?.size)
  const bitrate = Number(probe.format?.bit_rate) || (durationSeconds > 0 && size > 0 ? Math.round((size * 8) / durationSeconds) : 0)

  return {
    metadata: {
      container: format,
      durationSeconds: round3(durationSeconds),
      width,
      height,
      frameRate: round3(frameRate),
      videoCodec: video.codec_name,
      audioCodec: audioStream?.codec_name ?? null,
      bitrate,
      rotation,
    },
    demuxer,
    videoIndex: video.index,
    audio: audioStream ? { index: audioStream.index, channels: audioStream.channels ?? 2 } : null,
    color: { transfer: video.color_transfer, primaries: video.color_primaries, matrix: video.color_space, range: video.color_range },
  }
}

/** Each stream's duration is the smallest credible figure it gives; the file's is its longest stream, capped by the container. */
function pickDuration(probe: FfprobeOutput, video: FfprobeStream, audio: FfprobeStream | undefined): number {
  const streamDuration = (s: FfprobeStream | undefined) => {
    if (!s) return NaN
    const fps = ratio(s.avg_frame_rate)
    // An all-ones duration_ts is a muxer's "unknown" (fragmented MP4s write it), not a length.
    const unknown = s.duration_ts === 0xffffffff || s.duration_ts === Number.MAX_SAFE_INTEGER
    const candidates = [
      unknown ? NaN : Number(s.duration),
      parseClock(s.tags?.DURATION ?? s.tags?.duration),
      s.codec_type === 'video' && fps > 0 ? Number(s.nb_frames) / fps : NaN,
    ].filter((d) => Number.isFinite(d) && d > 0)
    return candidates.length ? Math.min(...candidates) : NaN
  }
  const streams = [streamDuration(video), streamDuration(audio)].filter((d) => Number.isFinite(d))
  const container = Number(probe.format?.duration)
  const fromStreams = streams.length ? Math.max(...streams) : NaN
  if (Number.isFinite(fromStreams) && Number.isFinite(container) && container > 0) return Math.min(fromStreams, container)
  if (Number.isFinite(fromStreams)) return fromStreams
  // No stream knows its length: the container's figure came from the same unknown values, so it is not used.
  return NaN
}

/** The video's length read from its packets' timestamps: for files whose headers do not say (demuxing only, no decoding). */
async function measureDuration(file: string, demuxer: string, videoIndex: number, signal: AbortSignal): Promise<number> {
  const args = ['-v', 'error', ...inputGuard(demuxer), '-select_streams', String(videoIndex), '-show_entries', 'packet=pts_time,duration_time', '-of', 'csv=p=0', file]
  const { code, stdout } = await spawnCapture('ffprobe', args, signal)
  if (code !== 0) return 0
  let end = 0
  for (const line of stdout.split('\n')) {
    const [pts, duration] = line.split(',').map(Number)
    if (Number.isFinite(pts)) end = Math.max(end, pts! + (Number.isFinite(duration) ? duration! : 0))
  }
  return end
}

/** Degrees clockwise, 0/90/180/270. ffprobe's display matrix `rotation` is counter-clockwise (a phone's -90 is 90). */
function readRotation(stream: FfprobeStream): 0 | 90 | 180 | 270 {
  const matrix = stream.side_data_list?.find((d) => d.side_data_type === 'Display Matrix')?.rotation
  const degrees = matrix !== undefined ? -matrix : Number(stream.tags?.rotate ?? 0)
  const quarter = ((Math.round((Number.isFinite(degrees) ? degrees : 0) / 90) % 4) + 4) % 4
  return ([0, 90, 180, 270] as const)[quarter]!
}

export interface PlannedRendition {
  name: string
  width: number
  height: number
}

/**
 * The rungs to make, in recipe order. A rung's height applies to the displayed short side (portrait video is
 * measured like landscape), rungs above the source are skipped, and the smallest rung is always made, at source
 * size when the source is smaller. Sides are even (yuv420p needs it) and never larger than the source.
 */
export function planRenditions(specs: VideoRequest['recipe']['renditions'], display: { width: number; height: number }): PlannedRendition[] {
  const short = Math.min(display.width, display.height)
  const long = Math.max(display.width, display.height)
  const smallest = Math.min(...specs.map((s) => s.height))
  const chosen = specs.filter((s) => s.height <= short || s.height === smallest)
  return chosen.map((spec) => {
    const shortSide = Math.max(2, evenFloor(Math.min(spec.height, short)))
    const longSide = Math.max(2, Math.min(evenFloor(long), 2 * Math.round((long * shortSide) / short / 2)))
    const portrait = display.height > display.width
    return { name: spec.name, width: portrait ? shortSide : longSide, height: portrait ? longSide : shortSide }
  })
}

/** The poster's size: inside its box, aspect kept, never upscaled. */
export function posterSize(box: { width: number; height: number }, display: { width: number; height: number }) {
  const scale = Math.min(1, box.width / display.width, box.height / display.height)
  return { width: Math.max(1, Math.round(display.width * scale)), height: Math.max(1, Math.round(display.height * scale)) }
}

/** PQ (HDR10) and HLG are tone-mapped; everything else (8/10/12-bit SDR, any chroma) is just converted to yuv420p. */
async function toSdr8(color: Probed['color']): Promise<string> {
  const hdr = color.transfer === 'smpte2084' || color.transfer === 'arib-std-b67'
  if (!hdr || !(await hasFilter('zscale'))) return 'format=yuv420p'
  const tin = color.transfer!
  const min = color.matrix && color.matrix !== 'unknown' ? color.matrix : 'bt2020nc'
  const pin = color.primaries && color.primaries !== 'unknown' ? color.primaries : 'bt2020'
  const rin = color.range === 'pc' ? 'full' : 'limited'
  return [
    `zscale=tin=${tin}:min=${min}:pin=${pin}:rin=${rin}:t=linear:npl=100`,
    'format=gbrpf32le',
    'zscale=p=bt709',
    'tonemap=tonemap=hable:desat=0',
    'zscale=t=bt709:m=bt709:r=tv',
    'format=yuv420p',
  ].join(',')
}

/**
 * Makes the poster: seeks ~10% in (within the duration for short clips) and lets the `thumbnail` filter pick the
 * most representative of the next ~1 s of frames, scaled down first so it buffers small frames. Falls back to the
 * start when the seek lands past the decodable part.
 */
export async function makePoster(
  file: string,
  probed: Probed,
  size: { width: number; height: number },
  output: string,
  options: { maxPixels: number; signal: AbortSignal }
) {
  for (const at of new Set([probed.metadata.durationSeconds * 0.1, 0])) {
    rmSync(output, { force: true })
    await runFfmpeg(await posterCommand(file, probed, size, output, { maxPixels: options.maxPixels, at }), { signal: options.signal })
    if (existsSync(output) && statSync(output).size > 0) return
  }
  throw new MediaError('invalid_media', 'no frame of the video could be decoded')
}

/** The ffmpeg run that writes the poster from the frames after `at` seconds. */
export async function posterCommand(
  file: string,
  probed: Probed,
  size: { width: number; height: number },
  output: string,
  options: { maxPixels: number; at: number }
): Promise<FfmpegRun> {
  const window = Math.min(30, Math.max(2, Math.round(probed.metadata.frameRate || 25)))
  const chain = `scale=${size.width}:${size.height},setsar=1,${await toSdr8(probed.color)},thumbnail=${window}`
  return {
    input: file,
    inputOptions: [...commonInput(probed, options.maxPixels), '-ss', options.at.toFixed(3)],
    outputs: [{
      file: output,
      options: ['-map', `0:${probed.videoIndex}`, '-vf', chain, '-frames:v', '1', '-c:v', 'libwebp', '-quality', '80', '-map_metadata', '-1', '-f', 'webp'],
    }],
  }
}

/**
 * Makes every rendition in one ffmpeg run: the video is decoded, rotated, aspect-corrected and converted to 8-bit
 * SDR once at the largest rung's size, then `split` and scaled per rung (separate runs cost ~22% more).
 * `onProgress` gets the fraction of the source transcoded so far.
 */
export async function transcode(
  file: string,
  probed: Probed,
  plan: (PlannedRendition & { file: string })[],
  options: Pick<Limits, 'maxSeconds' | 'maxPixels'> & { signal: AbortSignal; onProgress: (fraction: number) => void }
): Promise<void> {
  const duration = Math.min(probed.metadata.durationSeconds, options.maxSeconds)
  await runFfmpeg(await transcodeCommand(file, probed, plan, options), {
    signal: options.signal,
    onTime: (seconds) => duration > 0 && options.onProgress(Math.min(1, seconds / duration)),
  })
}

/** The one ffmpeg run that writes every rendition. */
export async function transcodeCommand(
  file: string,
  probed: Probed,
  plan: (PlannedRendition & { file: string })[],
  limits: Pick<Limits, 'maxSeconds' | 'maxPixels'>
): Promise<FfmpegRun> {
  const top = plan.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a))
  const head = `[0:${probed.videoIndex}]scale=${top.width}:${top.height},setsar=1,${await toSdr8(probed.color)}`
  const graph =
    plan.length === 1
      ? `${head}[o0]`
      : `${head},split=${plan.length}${plan.map((_, i) => `[s${i}]`).join('')};` +
        plan.map((p, i) => `[s${i}]${p === top ? 'null' : `scale=${p.width}:${p.height},setsar=1`}[o${i}]`).join(';')
  const audio = probed.audio
    ? ['-map', `0:${probed.audio.index}`, '-c:a', 'aac', '-b:a', '128k', ...(probed.audio.channels > 2 ? ['-ac', '2'] : [])]
    : []
  return {
    input: file,
    // -t bounds what is read whatever the container claims.
    inputOptions: [...commonInput(probed, limits.maxPixels), '-t', String(limits.maxSeconds)],
    filterGraph: graph,
    outputs: plan.map((p, i) => ({
      file: p.file,
      options: [
        '-map', `[o${i}]`, ...audio,
        '-c:v', 'libx264', '-preset', 'veryfast', '-crf', '23', '-profile:v', 'high', '-pix_fmt', 'yuv420p',
        '-map_metadata', '-1', '-map_chapters', '-1', '-movflags', '+faststart', '-f', 'mp4',
      ],
    })),
  }
}

/** The plain argv of a run: what fluent-ffmpeg executes, for running it without the wrapper (benchmarks, a swap). */
export function ffmpegArgv(run: FfmpegRun): string[] {
  return [
    ...run.inputOptions,
    '-i', run.input,
    ...(run.filterGraph ? ['-filter_complex', run.filterGraph] : []),
    ...run.outputs.flatMap((o) => [...o.options, '-y', o.file]),
  ]
}

/** `-max_pixels` makes the decoder hold the limit too: a stream may grow after the part ffprobe read. */
function commonInput(probed: Probed, maxPixels: number): string[] {
  return ['-nostdin', '-hide_banner', '-v', 'error', '-stats', '-max_pixels', String(maxPixels), ...inputGuard(probed.demuxer)]
}

/** Duration and size of a finished MP4, read back rather than assumed. */
export async function probeOutput(file: string, signal: AbortSignal) {
  const probe = await ffprobe(file, 'mov', signal)
  const video = probe.streams?.find((s) => s.codec_type === 'video')
  if (!video?.width || !video.height) throw new Error(`ffmpeg wrote ${file} without a video stream`)
  return { width: video.width, height: video.height, durationSeconds: round3(Number(probe.format?.duration) || 0) }
}

export interface FfmpegRun {
  input: string
  /** Options before `-i` (global options are fine here too), one argv entry each. */
  inputOptions: string[]
  filterGraph?: string
  outputs: { file: string; options: string[] }[]
}

/**
 * The one place fluent-ffmpeg is used (it is archived upstream; this is the seam to swap it for Bun.spawn with
 * `[...inputOptions, '-i', input, '-filter_complex', graph, ...outputs.flatMap((o) => [...o.options, o.file])]`).
 * No `progress` listener: fluent-ffmpeg would then run its own ffprobe on the input without our whitelists.
 * Progress is read from ffmpeg's `time=` stats instead. On abort ffmpeg is SIGKILLed and the promise rejects with
 * the signal's reason.
 */
export function runFfmpeg(run: FfmpegRun, options: { signal: AbortSignal; onTime?: (seconds: number) => void }): Promise<void> {
  const { signal, onTime } = options
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const command = ffmpeg().input(run.input)
    // Spread: given several arguments fluent-ffmpeg keeps each whole (a lone "a b" argument it would split in two).
    command.inputOptions(...run.inputOptions)
    if (run.filterGraph) command.complexFilter(run.filterGraph)
    for (const output of run.outputs) command.output(output.file).outputOptions(...output.options)
    const errors: string[] = []
    let killed = false
    const kill = () => {
      killed = true
      if ((command as unknown as { ffmpegProc?: unknown }).ffmpegProc) command.kill('SIGKILL')
    }
    signal.addEventListener('abort', kill, { once: true })
    command
      .on('start', () => signal.aborted && kill())
      .on('stderr', (line: string) => {
        const time = /time=(\d+):(\d\d):(\d\d(?:\.\d+)?)/.exec(line)
        if (time) onTime?.(Number(time[1]) * 3600 + Number(time[2]) * 60 + Number(time[3]))
        else if (line.trim() && errors.push(line) > 20) errors.shift()
      })
      .on('end', () => {
        signal.removeEventListener('abort', kill)
        resolve()
      })
      .on('error', (error: Error) => {
        signal.removeEventListener('abort', kill)
        if (killed || signal.aborted) return reject(signal.reason)
        reject(ffmpegFailure(error, errors.join('\n'), run.input))
      })
      .run()
  })
}

/** Turns a failed ffmpeg run into an outcome; only our own trouble (missing binary, disk, memory) is a fault. */
function ffmpegFailure(error: Error, stderr: string, input: string): Error {
  const text = stderr || error.message
  if (/ENOENT|Cannot find ffmpeg|is not available|No space left|Cannot allocate memory|Permission denied/i.test(`${error.message}\n${text}`)) {
    return new Error(`ffmpeg failed: ${tidyStderr(text, input)}`, { cause: error })
  }
  if (/Decoder \(codec [^)]*\) not found|could not find codec parameters|Unsupported codec/i.test(text)) {
    return new MediaError('unsupported_format', `the video uses a codec this processor cannot decode: ${tidyStderr(text, input)}`)
  }
  if (/exceeds specified max pixel count|max pixel/i.test(text)) {
    return new MediaError('limit_exceeded', 'a frame of the video is over the pixel limit')
  }
  return new MediaError('invalid_media', `the video could not be decoded: ${tidyStderr(text, input)}`)
}

/** Spawns a program with an argv (no shell) and collects its output; SIGKILLs it on abort. */
function spawnCapture(program: string, args: string[], signal: AbortSignal) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => (stdout += String(chunk)))
    child.stderr.on('data', (chunk) => (stderr = (stderr + String(chunk)).slice(-4000)))
    const kill = () => child.kill('SIGKILL')
    signal.addEventListener('abort', kill, { once: true })
    child.once('error', (error) => {
      signal.removeEventListener('abort', kill)
      reject(new Error(`${program} could not be started (is ffmpeg installed?): ${error.message}`, { cause: error }))
    })
    child.once('close', (code) => {
      signal.removeEventListener('abort', kill)
      if (signal.aborted) reject(signal.reason)
      else resolve({ code, stdout, stderr })
    })
  })
}

let filters: Promise<string> | undefined
/** Whether this ffmpeg build has a filter (zscale needs --enable-libzimg); asked once per process. */
async function hasFilter(name: string): Promise<boolean> {
  filters ??= spawnCapture('ffmpeg', ['-hide_banner', '-filters'], new AbortController().signal).then((r) => r.stdout)
  return new RegExp(`^\\s*\\S+\\s+${name}\\s`, 'm').test(await filters)
}

/** The last lines of ffmpeg's complaint, without addresses or our temp paths. */
function tidyStderr(stderr: string, file: string): string {
  const lines = stderr
    .split(/\r?\n|\r/)
    .map((l) => l.replaceAll(file, 'the file').replace(/\[[^\]]+ @ 0x[0-9a-f]+\]\s*/g, '').trim())
    .filter(Boolean)
  return lines.slice(-3).join('; ').slice(0, 500) || 'no details'
}

const ratio = (text: string | undefined) => {
  const [n, d] = (text ?? '').split(/[/:]/).map(Number)
  return n && d && Number.isFinite(n / d) ? n / d : 0
}
/** `HH:MM:SS.nnnnnnnnn` (Matroska's DURATION tag) in seconds. */
const parseClock = (text: string | undefined) => {
  const m = /^(\d+):(\d\d):(\d\d(?:\.\d+)?)$/.exec(text ?? '')
  return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]) : NaN
}
const evenFloor = (n: number) => 2 * Math.floor(n / 2)
const round3 = (n: number) => Math.round(n * 1000) / 1000

// ── Storage ────────────────────────────────────────────────────────────────────────────────────────────────────

export function createStorage(config: Config['s3']) {
  const client = new S3Client(s3ClientOptions(config))
  return {
    /** Streams an object to a local file. A missing object is an outcome, not a fault. */
    async download(bucket: string, key: string, file: string, signal: AbortSignal): Promise<void> {
      try {
        const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal })
        await pipeline(object.Body as Readable, createWriteStream(file), { signal })
      } catch (error) {
        if (signal.aborted) throw signal.reason
        if ((error as { name?: string }).name === 'NoSuchKey') {
          throw new MediaError('source_missing', `the original ${bucket}/${key} does not exist`)
        }
        throw new Error(`downloading ${bucket}/${key} failed`, { cause: error })
      }
    },
    /** Streams a file up (multipart when large), so a rendition is never held in memory whole. */
    async upload(bucket: string, key: string, file: string, contentType: string, signal: AbortSignal): Promise<void> {
      const upload = new Upload({
        client,
        params: { Bucket: bucket, Key: key, Body: createReadStream(file), ContentType: contentType },
        queueSize: 2,
        partSize: 8 * 1024 * 1024,
      })
      const abort = () => void upload.abort().catch(() => {})
      signal.addEventListener('abort', abort, { once: true })
      try {
        await upload.done()
      } catch (error) {
        if (signal.aborted) throw signal.reason
        throw new Error(`uploading ${bucket}/${key} failed`, { cause: error })
      } finally {
        signal.removeEventListener('abort', abort)
      }
    },
    async exists(bucket: string, key: string, signal?: AbortSignal): Promise<boolean> {
      try {
        await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal })
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
  report: (update: Pick<JobUpdate, 'stage' | 'progress' | 'etaSeconds'>) => void
  /** Aborts (with a JobCancelled) when the backend cancels the job: ffmpeg is killed, uploads aborted. */
  signal: AbortSignal
}

/** One request in, one result out. Bad input gives a `failed` result; only infrastructure faults throw. */
export async function handleVideoJob(request: VideoRequest, deps: JobDeps): Promise<VideoResult> {
  const { jobId, recipe, output } = request
  const at = () => new Date().toISOString()
  const deadline = new AbortController()
  const { timeoutSeconds } = deps.limits
  const timer = setTimeout(
    () => deadline.abort(new MediaError('timeout', `processing took longer than the limit of ${timeoutSeconds} s`)),
    timeoutSeconds * 1000
  )
  const signal = AbortSignal.any([deadline.signal, deps.signal])
  const report = progressReporter(deps.report)
  const marker = cancelMarkerKey(output.prefix)
  const uploaded: string[] = []
  try {
    // A cancel whose broadcast this processor missed (it was away, or started later) left this marker.
    if (await deps.storage.exists(output.bucket, marker, signal)) throw new JobCancelled()
    report('downloading', 0)
    const original = join(deps.workDir, 'original')
    await deps.storage.download(request.source.bucket, request.source.key, original, signal)

    report('processing', 5)
    const probed = await probeVideo(original, request.source.format, deps.limits, signal)
    const display = { width: probed.metadata.width, height: probed.metadata.height }
    const poster = { name: recipe.poster.name, file: join(deps.workDir, 'poster.webp'), ...posterSize(recipe.poster, display) }
    const plan = planRenditions(recipe.renditions, display).map((p) => ({ ...p, file: join(deps.workDir, `rendition-${p.name}.mp4`) }))
    // The poster (a short single-threaded decode and WebP encode) runs beside the transcode, which seldom keeps every
    // core busy; if either fails, the other is stopped.
    const sibling = new AbortController()
    const both = AbortSignal.any([signal, sibling.signal])
    const stopOther = (error: unknown): never => {
      sibling.abort(error)
      throw error
    }
    const started = Date.now()
    await Promise.all([
      makePoster(original, probed, poster, poster.file, { maxPixels: deps.limits.maxPixels, signal: both }).catch(stopOther),
      transcode(original, probed, plan, {
        maxSeconds: deps.limits.maxSeconds,
        maxPixels: deps.limits.maxPixels,
        signal: both,
        onProgress: (fraction) => {
          const elapsed = (Date.now() - started) / 1000
          const eta = fraction >= 0.02 && elapsed >= 0.5 ? Math.round((elapsed * (1 - fraction)) / fraction) : null
          report('processing', 10 + 85 * fraction, eta)
        },
      }).catch(stopOther),
    ])
    const expected = Math.min(probed.metadata.durationSeconds, deps.limits.maxSeconds)
    // Read back rather than taken from ffmpeg's last `time=`, which stops a frame short of the real duration.
    const renditions = await Promise.all(plan.map(async (p) => ({ ...p, ...(await probeOutput(p.file, signal)) })))
    const shortest = Math.min(...renditions.map((r) => r.durationSeconds))
    // ffmpeg exits 0 on a file whose data stops early; a rendition much shorter than the source gives it away.
    if (expected > 0 && shortest < expected - Math.max(1, expected * 0.05)) {
      throw new MediaError('invalid_media', `the video is truncated or damaged: only ${shortest.toFixed(1)} s of its ${expected.toFixed(1)} s could be decoded`)
    }

    report('uploading', 95)
    const items = [
      { name: poster.name, file: poster.file, ext: 'webp', contentType: 'image/webp', width: poster.width, height: poster.height },
      ...renditions.map((r) => ({ ...r, ext: 'mp4', contentType: 'video/mp4' })),
    ]
    // All at once: each upload holds at most queueSize × partSize (16 MiB) and there are at most 4 outputs.
    const outputs = await Promise.all(
      items.map(async (item): Promise<OutputInfo> => {
        const key = `${output.prefix}/${item.name}.${item.ext}`
        uploaded.push(key)
        await deps.storage.upload(output.bucket, key, item.file, item.contentType, signal)
        const info: OutputInfo = { name: item.name, key, contentType: item.contentType, size: statSync(item.file).size, width: item.width, height: item.height }
        if ('durationSeconds' in item) info.durationSeconds = item.durationSeconds
        return info
      })
    )
    if (await deps.storage.exists(output.bucket, marker, signal)) throw new JobCancelled()
    return { version: 1, jobId, status: 'completed', outputs, metadata: probed.metadata, at: at() }
  } catch (error) {
    if (error instanceof JobCancelled) {
      // Unfinished multipart uploads were aborted with the signal; finished outputs are removed here.
      await Promise.all(uploaded.map((key) => deps.storage.remove(output.bucket, key)))
      return { version: 1, jobId, status: 'cancelled', at: at() }
    }
    if (error instanceof MediaError) {
      return { version: 1, jobId, status: 'failed', error: { code: error.code, message: error.message, class: 'input' }, at: at() }
    }
    throw error
  } finally {
    clearTimeout(timer)
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

/** Keeps progress monotonic and sends at most one update per stage every 500 ms; a new stage always goes out. */
function progressReporter(report: JobDeps['report'], intervalMs = 500) {
  let last = { stage: '', progress: -1, at: 0 }
  return (stage: JobUpdate['stage'], value: number, etaSeconds?: number | null) => {
    const progress = Math.max(last.progress, Math.min(99, Math.floor(value)))
    const now = Date.now()
    if (stage === last.stage && (progress <= last.progress || now - last.at < intervalMs)) return
    last = { stage, progress, at: now }
    report(etaSeconds === undefined ? { stage, progress } : { stage, progress, etaSeconds })
  }
}

// ── Wiring ─────────────────────────────────────────────────────────────────────────────────────────────────────

const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** A leased job has no delivery to fall back on: its publishes are retried this often, for this long. */
const LEASED_RETRY = { everyMs: 2_000, forMs: 120_000 }

/** A delivery being worked on, and the channel it must be settled on. */
interface Running {
  message: ConsumeMessage
  channel: Channel
  stop: AbortController
  /** Acked at the ack deadline: the job no longer depends on its channel, and only its heartbeats vouch for it. */
  leased: boolean
}

/** Connects, declares the topology and consumes until stopped. Reconnects by itself when the broker drops it. */
export async function start(config: Config) {
  const storage = createStorage(config.s3)
  const jobsDir = join(config.tmpDir, String(process.pid))
  clearDeadRuns(config.tmpDir)
  mkdirSync(jobsDir, { recursive: true })

  const inFlight = new Set<Promise<void>>()
  /** The jobs running here by job id: to cancel, to lease, to interrupt when their channel dies, to hand back on shutdown. */
  const running = new Map<string, Running>()
  /** Aborts backoff waits when the service stops. */
  const stopping = new AbortController()
  /** Aborts when the shutdown's grace period is over: leased jobs stop retrying their publishes. */
  const pastGrace = new AbortController()
  let publisher: Publisher | undefined
  /** The current connection and its channel, on which the consumer is (re)created. */
  let link: { model: ChannelModel; channel: ConfirmChannel } | undefined
  let consumer: { channel: Channel; tag: string; prefetch: number } | undefined

  async function onMessage(channel: ConfirmChannel, message: ConsumeMessage): Promise<void> {
    const decoded = decodeMessage(VideoRequestSchema, message.content)
    if (!decoded.ok) {
      console.error(`videos: dead-lettering a malformed request (${message.properties.messageId ?? 'no id'}): ${decoded.reason}`)
      return settle(() => channel.nack(message, false, false))
    }
    const request = decoded.value
    // A second copy of a job this process is running (a re-drive, a redelivery): two runs would share the job's
    // work directory. The run under way settles its own delivery, so the copy is dropped; but if that run was
    // interrupted (its delivery is back with the broker), the copy is the job: it goes back until the run is gone.
    const current = running.get(request.jobId)
    if (current) {
      if (current.stop.signal.reason instanceof Interrupted) return settle(() => channel.nack(message, false, true))
      console.warn(`videos: job ${request.jobId} is already running here; dropping a duplicate delivery`)
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
        console.warn(`videos: job ${request.jobId}: an update was not confirmed: ${error.message}`)
      )
      // One chain rather than a list: a long transcode sends thousands of updates.
      pending = Promise.all([pending, sent]).then(() => {})
    }
    // The heartbeat: the latest update again, so the backend can tell a slow job from a dead processor.
    const heartbeat = setInterval(() => send(latest), config.heartbeatMs)
    const workDir = join(jobsDir, request.jobId)
    const job: Running = { message, channel, stop: new AbortController(), leased: false }
    running.set(request.jobId, job)
    // Past the broker's consumer_timeout the channel would be closed under the job: trade the delivery for a lease first.
    const ackDeadline = setTimeout(() => void lease(request.jobId, job), config.ackDeadlineMs)
    let result: VideoResult | undefined
    try {
      mkdirSync(workDir, { recursive: true })
      result = await handleVideoJob(request, {
        storage,
        limits: config.limits,
        workDir,
        signal: job.stop.signal,
        report: (update) => send({ status: 'processing', ...update }),
      })
      // Finished just as it was interrupted: its delivery is no longer ours to settle.
      if (job.stop.signal.reason instanceof Interrupted) return
    } catch (error) {
      // Its delivery is back with the broker (or is being handed back by stop()): nothing to report.
      if (job.stop.signal.reason instanceof Interrupted) return
      const reason = describeError(error)
      if (attempt < DELIVERY_LIMIT) {
        const delay = retryDelayMs(attempt)
        console.error(`videos: job ${request.jobId} attempt ${attempt} hit a fault, retrying in ${delay / 1000} s: ${reason}`)
        await sleep(delay, AbortSignal.any([stopping.signal, job.stop.signal]))
        if (job.stop.signal.reason instanceof Interrupted) return
        if (!job.leased) return settle(() => channel.nack(message, false, true))
        // A leased job has no delivery to requeue: a fresh copy goes back below, once this run has cleaned up
        // (the copy may come straight back here, to the same work directory).
      } else {
        const error_ = { code: 'gave_up', message: `gave up after ${attempt} attempts: ${reason}`, class: 'transient' } as const
        result = { version: 1, jobId: request.jobId, status: 'failed', error: error_, at: new Date().toISOString() }
      }
    } finally {
      clearTimeout(ackDeadline)
      clearInterval(heartbeat)
      running.delete(request.jobId)
      rmSync(workDir, { recursive: true, force: true })
      void fitConsumer()
    }
    if (!result) {
      // The leased job that hit a fault: a fresh copy of its request, counting this attempt.
      const handBackCopy = () => handBack(job, publisher, config.queues.request, attempt)
      return persist(request.jobId, 'the hand-back of its request after a fault', handBackCopy)
    }
    if (result.status === 'failed') {
      console.warn(`videos: job ${request.jobId} failed: ${result.error.code}: ${result.error.message}`)
      send({ status: 'failed', stage: 'finished', progress: 100, error: result.error })
    } else if (result.status === 'cancelled') {
      console.log(`videos: job ${request.jobId} was cancelled`)
      send({ status: 'cancelled', stage: 'finished', progress: 100 })
    } else {
      send({ status: 'completed', stage: 'finished', progress: 100, etaSeconds: 0 })
    }
    const body = encodeMessage(VideoResultSchema, result)
    if (job.leased) {
      await persist(request.jobId, 'its result', () => publish(config.queues.results, body, request.jobId, 'job.result'))
      return pending
    }
    try {
      await publish(config.queues.results, body, request.jobId, 'job.result')
      await pending
    } catch (error) {
      // Unconfirmed result: put the request back so the job is done again rather than lost.
      console.error(`videos: job ${request.jobId}: the result was not confirmed, requeueing: ${describeError(error)}`)
      return settle(() => channel.nack(message, false, true))
    }
    settle(() => channel.ack(message))
  }

  function publish(queue: string, body: Uint8Array, jobId: string, type: string): Promise<void> {
    if (!publisher) return Promise.reject(new Error('not connected to the broker'))
    return publisher.publish(queue, body, { correlationId: jobId, type })
  }

  /**
   * Publishes for a leased job, which has no delivery to fall back on: retried through reconnects for a while (not
   * past the shutdown's grace period). Failing that, the backend re-drives the job once its heartbeats stop.
   */
  async function persist(jobId: string, what: string, action: () => Promise<void>): Promise<void> {
    const giveUpAt = Date.now() + LEASED_RETRY.forMs
    for (let tries = 1; ; tries++) {
      try {
        return await action()
      } catch (error) {
        if (Date.now() + LEASED_RETRY.everyMs > giveUpAt || pastGrace.signal.aborted) {
          return console.error(
            `videos: job ${jobId} (leased) LOST ${what} after ${tries} tries (${describeError(error)}); ` +
              'nothing is queued for it now: the backend re-drives the job once its heartbeats stop'
          )
        }
        console.warn(`videos: job ${jobId} (leased): ${what} failed (${describeError(error)}); trying again in ${LEASED_RETRY.everyMs / 1000} s`)
        await sleep(LEASED_RETRY.everyMs, pastGrace.signal)
      }
    }
  }

  /** Acks a job's delivery at the ack deadline and lets the job carry on under a lease (see the header). */
  function lease(jobId: string, job: Running): Promise<void> {
    // Around a consumer re-created with one slot less: the ack frees a prefetch slot that the job still occupies.
    return fitConsumer(() => {
      // It may have finished, or lost its channel, while the consumer was being cancelled.
      if (running.get(jobId) !== job || job.stop.signal.reason instanceof Interrupted) return
      try {
        job.channel.ack(job.message)
      } catch (error) {
        return console.warn(`videos: job ${jobId} could not be acked at the ack deadline: ${describeError(error)}`)
      }
      job.leased = true
      const every = config.heartbeatMs / 1000
      console.log(`videos: job ${jobId} is still running at the ack deadline; acked, continuing under a lease (heartbeats every ${every} s)`)
    })
  }

  let fitting = Promise.resolve()
  /**
   * Keeps the jobs here at VIDEO_CONCURRENCY. The broker counts only a consumer's unacked deliveries against its
   * prefetch, and a running consumer's prefetch cannot be changed; so when a lease frees a slot at the broker (or
   * a job of an earlier consumer ends), the consumer is cancelled and re-created with the slots left. Cancelling
   * leaves its unacked deliveries with the channel. `change` runs while there is no consumer.
   */
  function fitConsumer(change?: () => void): Promise<void> {
    fitting = fitting
      .then(async () => {
        if (!change && (consumer?.prefetch ?? 0) === freeSlots()) return
        if (consumer) {
          const { channel, tag } = consumer
          consumer = undefined
          await channel.cancel(tag).catch(() => {})
        }
        change?.()
        const prefetch = freeSlots()
        if (prefetch > 0 && link) await consume(link.model, link.channel, prefetch)
      })
      .catch((error) => console.error(`videos: could not consume (the channel is gone; a reconnect follows): ${describeError(error)}`))
    return fitting
  }

  /** Slots for the current consumer's deliveries: those not taken by leased jobs or by an earlier consumer's. */
  function freeSlots(): number {
    if (stopping.signal.aborted) return 0
    let taken = 0
    for (const job of running.values()) if (job.leased || job.message.fields.consumerTag !== consumer?.tag) taken++
    return Math.max(0, config.concurrency - taken)
  }

  async function consume(model: ChannelModel, channel: ConfirmChannel, prefetch: number): Promise<void> {
    // Per consumer (quorum queues refuse a global prefetch); it applies to consumers created after it.
    await channel.prefetch(prefetch)
    const { consumerTag } = await channel.consume(config.queues.request, (message) => {
      if (message === null) {
        console.error('videos: the broker cancelled the consumer (queue deleted?); reconnecting to consume again')
        return void model.close().catch(() => {})
      }
      const task = onMessage(channel, message).catch((error) => console.error('videos: unexpected error', error))
      inFlight.add(task)
      void task.finally(() => inFlight.delete(task))
    })
    consumer = { channel, tag: consumerTag, prefetch }
  }

  /** Stops the held jobs whose deliveries were on `channel`: the broker has put them back, and they will come again. */
  function interruptJobsOn(channel: Channel, why: string) {
    for (const [jobId, job] of running) {
      if (job.channel !== channel) continue
      if (job.leased) {
        console.log(`videos: job ${jobId} is leased and carries on (${why})`)
        continue
      }
      console.warn(`videos: job ${jobId} interrupted (${why}); the broker redelivers it`)
      job.stop.abort(new Interrupted(why))
    }
  }

  const connection = await amqp.connect(config.rabbitmqUrl, {
    // Names the connection in `rabbitmqctl list_connections client_properties` (and the management UI).
    clientProperties: { connection_name: `videos ${config.system} ${hostname()}:${process.pid}` },
    recovery: {
      initialMaxRetries: 2,
      maxDelay: 5_000,
      // Runs after every (re)connect: channels, topology, prefetch and consumer do not survive a reconnect.
      async setup(model: ChannelModel) {
        const channel = await model.createConfirmChannel()
        channel.on('error', (error) => console.error(`videos: channel error: ${error.message}`))
        // A channel closed under a live connection (an ack timeout, a deleted queue) is not recovered by amqplib:
        // close the whole connection, so recovery re-runs this setup.
        channel.on('close', () => {
          if (link?.channel === channel) link = undefined
          if (consumer?.channel === channel) consumer = undefined
          interruptJobsOn(channel, 'its channel closed')
          if (!stopping.signal.aborted) model.close().catch(() => {})
        })
        await declareTopology(channel, topology(config.system, 'videos'))
        publisher = createPublisher(channel, toBuffer)
        await listenForCancels(model, config.system, (jobId) => running.get(jobId)?.stop.abort(new JobCancelled()), 'videos')
        link = { model, channel }
        await fitConsumer()
      },
    },
  })
  connection.on('disconnect', (error) => console.warn(`videos: lost the broker (${error.message}); reconnecting`))
  connection.on('connect', () => console.log('videos: connected to the broker'))
  connection.on('reconnect-failed', (error) => console.error(`videos: gave up reconnecting: ${error.message}`))
  connection.on('error', (error) => console.error(`videos: broker error: ${error.message}`))
  connection.on('blocked', (reason) => console.warn(`videos: the broker blocks publishing (${reason})`))
  connection.on('unblocked', () => console.log('videos: the broker accepts publishing again'))

  return {
    /**
     * Stops taking work and lets running jobs finish for up to the grace period. Jobs still running then are
     * stopped and handed back as fresh messages (acking held deliveries), so a shutdown is not counted as a failed
     * delivery; if the hand-back of a held job fails, its delivery is released to the broker, which redelivers it.
     */
    async stop() {
      stopping.abort()
      await fitConsumer()
      const settled = Promise.allSettled(inFlight)
      const graceOver = sleep(config.shutdownGraceMs).then(() => 'grace over' as const)
      if ((await Promise.race([settled, graceOver])) === 'grace over') {
        pastGrace.abort()
        for (const [jobId, job] of running) {
          // Interrupted already (its channel closed): the broker has its delivery back.
          if (job.stop.signal.reason instanceof Interrupted) continue
          job.stop.abort(new Interrupted('shutting down'))
          // A shutdown is not the job's fault: the attempts made so far are carried over unchanged.
          await handBack(job, publisher, config.queues.request, attemptOf(job.message) - 1).then(
            () => console.log(`videos: job ${jobId} handed back to the queue at shutdown`),
            (error) => {
              if (job.leased) {
                return console.error(
                  `videos: job ${jobId} (leased) could not be handed back at shutdown (${describeError(error)}); ` +
                    'the backend re-drives it once its heartbeats stop'
                )
              }
              console.warn(`videos: job ${jobId} could not be handed back (${describeError(error)}); the broker redelivers it`)
              settle(() => job.channel.nack(job.message, false, true))
            }
          )
        }
        await settled
      }
      // The channel first: closing the connection at once can overtake the acks just written on the channel (amqplib
      // muxes channels onto the socket), and the broker then requeues deliveries that were acked or handed back.
      await link?.channel.close().catch(() => {})
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
 * Re-publishes a job's request as a new message carrying `attemptsMade`, and acks the original delivery unless the
 * job is leased (acked already). The broker's delivery count starts again.
 */
async function handBack(job: Running, publisher: Publisher | undefined, queue: string, attemptsMade: number): Promise<void> {
  if (!publisher) throw new Error('not connected to the broker')
  const { properties, content } = job.message
  await publisher.publish(queue, content, {
    correlationId: String(properties.correlationId ?? ''),
    type: String(properties.type ?? 'job.request'),
    headers: { ...carriedHeaders(properties.headers), 'x-media-attempts': attemptsMade },
  })
  if (!job.leased) job.channel.ack(job.message)
}

/** A request's own headers, without those the broker put on the old message's deliveries. */
function carriedHeaders(headers: ConsumeMessage['properties']['headers']): Record<string, string | number> {
  const kept: Record<string, string | number> = {}
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (/^x-(delivery-count|acquired-count|death$|first-death-|last-death-)/.test(name)) continue
    kept[name] = value
  }
  return kept
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
    console.warn(`videos: could not settle a delivery (channel closed; it will be redelivered): ${describeError(error)}`)
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
    console.error(`videos: ${(error as Error).message}`)
    process.exit(2)
  }
  let service: Awaited<ReturnType<typeof start>>
  try {
    service = await start(config)
  } catch (error) {
    console.error(
      `videos: cannot reach RabbitMQ at ${config.rabbitmqUrl.replace(/\/\/[^@]*@/, '//')}: ${describeError(error)}\n` +
        '  Start it with `rabbitmq-server -detached` (Debian: `apt-get install rabbitmq-server`), or set RABBITMQ_URL.'
    )
    process.exit(1)
  }
  console.log(`videos: consuming ${config.queues.request} with concurrency ${config.concurrency}`)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void service.stop().then(() => process.exit(0)))
  }
}
