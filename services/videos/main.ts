/**
 * videos: the video processor.
 *
 * Consumes VideoRequest from `<system>.media.videos.request` (see shared/PROTOCOL.md), downloads the original to
 * the job's work directory, probes it with ffprobe held to the container the backend sniffed, makes a WebP poster
 * and H.264/AAC MP4 renditions (one ffmpeg run for all renditions), writes them to `<prefix>/<name>.<ext>`, and
 * reports on `.updates` (progress with an ETA) and `.results`. The protocol's consumer half (acks after confirms,
 * heartbeats, retries, cancel, the lease for jobs longer than the broker's consumer_timeout, hand-back) is
 * `@app/shared/processor`; this file is the media.
 *
 * Env: SYSTEM, RABBITMQ_URL, S3_*, ALLOWED_BUCKETS, HEARTBEAT_SECONDS, SHUTDOWN_GRACE_SECONDS, ACK_DEADLINE_SECONDS
 * (see shared/processor/config.ts); VIDEO_CONCURRENCY (default 1), VIDEO_TIMEOUT_SECONDS (wall clock per job, default
 * 14400), VIDEOS_TMP_DIR (default <os tmp>/media-videos), and the limits: MAX_VIDEO_BYTES (the original's size,
 * default 4G), MAX_VIDEO_STREAMS (streams in the container, default 16), MAX_VIDEO_PIXELS (default 8847360, i.e.
 * 4096×2160), MAX_VIDEO_FRAME_RATE (default 240 fps), MAX_VIDEO_SECONDS (default 3600).
 *
 * Outputs: `<prefix>/<poster.name>.webp`, fitted inside its box, never upscaled, taken ~10% into the video (the most
 * representative of ~1 s of frames, so a fade-in does not give a black poster); `<prefix>/<rendition.name>.mp4` for
 * every rung whose height is at or below the source's displayed *short side* (so a 1080×1920 portrait phone video
 * gets its 1080p rung at 1080×1920), always at least the smallest rung (made at source size for a smaller source:
 * never upscaled). Rotation is applied to the pixels and not left in the outputs; dimensions are even; metadata
 * (GPS, titles, chapters) is stripped; 10-bit and HDR (PQ/HLG, tone-mapped with zscale) become 8-bit SDR yuv420p.
 * A source without audio gives outputs without audio.
 *
 * Refused (a `failed` result, class `input`, never retried): a file the forced demuxer cannot read
 * (`invalid_media`; this is also what an HLS playlist or ffconcat script disguised as MP4 gets), a file with no
 * video stream: audio-only files, cover art not counting as video (`unsupported_format`, "has no video stream"), a
 * container the backend did not sniff as a video (`unsupported_format`), one over a limit (`limit_exceeded`, naming
 * the variable and what the file holds), a truncated file (`invalid_media`), and a job past VIDEO_TIMEOUT_SECONDS
 * (`timeout`; ffmpeg is SIGKILLed). The limits hold before any transcoding: the byte limit before the download (the
 * request's `source.size`) and during it (what arrives), the others on the probe, so a file whose streams claim
 * 10 hours is refused unread. A request outside ALLOWED_BUCKETS is refused by the runtime.
 */
import amqp from 'amqplib'
import ffmpeg from 'fluent-ffmpeg'
import { spawn } from 'node:child_process'
import { existsSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as v from 'valibot'
import { bytesVar, countVar, type OutputInfo, type VideoMetadata, type VideoRequest } from '@app/shared'
import {
  JobError,
  configReader,
  downloadOriginal,
  overLimit,
  runProcessor,
  runtimeSettings,
  startProcessor,
  type JobContext,
  type JobOutput,
  type Processor,
} from '@app/shared/processor'

// ── Config ─────────────────────────────────────────────────────────────────────────────────────────────────────

/** Parses the environment once; throws one error naming every bad variable. */
export const readConfig = configReader(
  {
    VIDEO_CONCURRENCY: countVar(1, 64),
    MAX_VIDEO_SECONDS: countVar(3600, 7 * 86400),
    MAX_VIDEO_PIXELS: countVar(4096 * 2160, 2 ** 32),
    // Transcoding costs frames, not seconds: an hour at 10000 fps is 36 million frames of a few pixels each.
    MAX_VIDEO_FRAME_RATE: countVar(240, 1_000_000),
    // Every stream is demuxed; a real video has a few (video, audio, subtitles, a cover), a hostile one thousands.
    MAX_VIDEO_STREAMS: countVar(16, 100_000),
    MAX_VIDEO_BYTES: bytesVar('4G'),
    // Enough for a 2-hour transcode. Not bound by the broker's consumer_timeout: a long job is leased.
    VIDEO_TIMEOUT_SECONDS: countVar(14400, 7 * 86400),
    VIDEOS_TMP_DIR: v.optional(v.pipe(v.string(), v.nonEmpty()), join(tmpdir(), 'media-videos')),
  },
  (env) => ({
    runtime: runtimeSettings(env, {
      type: 'videos',
      concurrency: env.VIDEO_CONCURRENCY,
      timeoutSeconds: env.VIDEO_TIMEOUT_SECONDS,
      tmpDir: env.VIDEOS_TMP_DIR,
    }),
    limits: {
      maxBytes: env.MAX_VIDEO_BYTES,
      maxStreams: env.MAX_VIDEO_STREAMS,
      maxPixels: env.MAX_VIDEO_PIXELS,
      maxFrameRate: env.MAX_VIDEO_FRAME_RATE,
      maxSeconds: env.MAX_VIDEO_SECONDS,
    },
  })
)
export type Config = ReturnType<typeof readConfig>
export type Limits = Config['limits']

// ── Core: files in, encoded outputs out (no broker, no S3) ─────────────────────────────────────────────────────

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

/** What the limits are checked on, from the probe. */
export interface VideoFacts {
  /** Every stream in the container (audio, subtitles, data, cover art included). */
  streams: number
  /** The video stream's coded size. */
  width: number
  height: number
  /** Frames per second (`frameRateOf`); 0 when unknown. */
  frameRate: number
  /** Absent until known: it may take reading every packet. */
  durationSeconds?: number
}

/** The first limit a probed video breaks, as its refusal, or null. Pure: no file, no ffprobe. */
export function videoLimitFailure(
  found: VideoFacts,
  limits: Pick<Limits, 'maxStreams' | 'maxPixels' | 'maxFrameRate' | 'maxSeconds'>
): JobError | null {
  const { width, height, frameRate, durationSeconds } = found
  if (found.streams > limits.maxStreams)
    return overLimit(`the file has ${found.streams} streams`, 'MAX_VIDEO_STREAMS', limits.maxStreams)
  const pixels = width * height
  if (pixels > limits.maxPixels) {
    return overLimit(
      `the video is ${width}×${height} (${pixels} pixels)`,
      'MAX_VIDEO_PIXELS',
      `${limits.maxPixels} pixels`
    )
  }
  if (frameRate > limits.maxFrameRate)
    return overLimit(`the video runs at ${round3(frameRate)} fps`, 'MAX_VIDEO_FRAME_RATE', `${limits.maxFrameRate} fps`)
  if (durationSeconds !== undefined && durationSeconds > limits.maxSeconds) {
    return overLimit(`the video lasts ${Math.round(durationSeconds)} s`, 'MAX_VIDEO_SECONDS', `${limits.maxSeconds} s`)
  }
  return null
}

/** Runs ffprobe on a local file, held to one demuxer. */
async function ffprobe(
  file: string,
  demuxer: string,
  signal: AbortSignal,
  container = demuxer
): Promise<FfprobeOutput> {
  const args = ['-v', 'error', ...inputGuard(demuxer), '-show_format', '-show_streams', '-of', 'json', file]
  const { code, stdout, stderr } = await spawnCapture('ffprobe', args, signal)
  if (code !== 0)
    throw new JobError('invalid_media', `the file is not a readable ${container} file: ${tidyStderr(stderr, file)}`)
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
  if (!demuxer) throw new JobError('unsupported_format', `"${format}" is not a video container this processor accepts`)
  const probe = await ffprobe(file, demuxer, signal, format.toUpperCase())
  const streams = probe.streams ?? []
  // Cover art (MP3/M4A attached pictures) is a video stream to ffmpeg but not a video.
  const video = streams.find((s) => s.codec_type === 'video' && !s.disposition?.attached_pic)
  if (!video) {
    const audioOnly = streams.some((s) => s.codec_type === 'audio')
    throw new JobError(
      'unsupported_format',
      audioOnly
        ? 'the file has no video stream (it is audio only); upload audio as audio'
        : 'the file has no video stream'
    )
  }
  if (!video.codec_name || video.codec_name === 'none')
    throw new JobError('unsupported_format', 'the video stream is in a codec ffmpeg cannot decode')
  if (!video.width || !video.height) throw new JobError('invalid_media', 'the video stream has no picture size')
  const audioStream = streams.find((s) => s.codec_type === 'audio' && s.codec_name && (s.channels ?? 0) > 0)

  const frameRate = frameRateOf(video)
  const found: VideoFacts = { streams: streams.length, width: video.width, height: video.height, frameRate }
  // Before the duration, which may take reading every packet.
  const refusal = videoLimitFailure(found, limits)
  if (refusal) throw refusal
  let durationSeconds = pickDuration(probe, video, audioStream)
  if (!Number.isFinite(durationSeconds)) durationSeconds = await measureDuration(file, demuxer, video.index, signal)
  const tooLong = videoLimitFailure({ ...found, durationSeconds }, limits)
  if (tooLong) throw tooLong

  const rotation = readRotation(video)
  // Anamorphic video: widen (or heighten) to square pixels, as players do.
  const sar = ratio(video.sample_aspect_ratio) || 1
  let width = sar > 1 ? Math.round(video.width * sar) : video.width
  let height = sar < 1 ? Math.round(video.height / sar) : video.height
  if (rotation === 90 || rotation === 270) [width, height] = [height, width]
  const size = Number(probe.format?.size)
  const bitrate =
    Number(probe.format?.bit_rate) || (durationSeconds > 0 && size > 0 ? Math.round((size * 8) / durationSeconds) : 0)

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
    color: {
      transfer: video.color_transfer,
      primaries: video.color_primaries,
      matrix: video.color_space,
      range: video.color_range,
    },
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
  if (Number.isFinite(fromStreams) && Number.isFinite(container) && container > 0)
    return Math.min(fromStreams, container)
  if (Number.isFinite(fromStreams)) return fromStreams
  // No stream knows its length: the container's figure came from the same unknown values, so it is not used.
  return NaN
}

/** The video's length read from its packets' timestamps: for files whose headers do not say (demuxing only, no decoding). */
async function measureDuration(
  file: string,
  demuxer: string,
  videoIndex: number,
  signal: AbortSignal
): Promise<number> {
  const args = [
    '-v',
    'error',
    ...inputGuard(demuxer),
    '-select_streams',
    String(videoIndex),
    '-show_entries',
    'packet=pts_time,duration_time',
    '-of',
    'csv=p=0',
    file,
  ]
  const { code, stdout } = await spawnCapture('ffprobe', args, signal)
  if (code !== 0) return 0
  let end = 0
  for (const line of stdout.split('\n')) {
    const [pts, duration] = line.split(',').map(Number)
    if (Number.isFinite(pts)) end = Math.max(end, pts! + (Number.isFinite(duration) ? duration! : 0))
  }
  return end
}

/**
 * Frames per second: the lower of the stream's average rate (frames over duration) and base rate (the finest rate
 * its timestamps need) that is known. Either may be a container's tick rate instead: Matroska and FLV files of 30 fps
 * report an average of 1000/1, and variable-rate videos a base rate above their average.
 */
function frameRateOf(stream: FfprobeStream): number {
  const known = [ratio(stream.avg_frame_rate), ratio(stream.r_frame_rate)].filter((rate) => rate > 0)
  return known.length ? Math.min(...known) : 0
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
export function planRenditions(
  specs: VideoRequest['recipe']['renditions'],
  display: { width: number; height: number }
): PlannedRendition[] {
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
  return {
    width: Math.max(1, Math.round(display.width * scale)),
    height: Math.max(1, Math.round(display.height * scale)),
  }
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
    await runFfmpeg(await posterCommand(file, probed, size, output, { maxPixels: options.maxPixels, at }), {
      signal: options.signal,
    })
    if (existsSync(output) && statSync(output).size > 0) return
  }
  throw new JobError('invalid_media', 'no frame of the video could be decoded')
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
    outputs: [
      {
        file: output,
        options: [
          '-map',
          `0:${probed.videoIndex}`,
          '-vf',
          chain,
          '-frames:v',
          '1',
          '-c:v',
          'libwebp',
          '-quality',
          '80',
          '-map_metadata',
          '-1',
          '-f',
          'webp',
        ],
      },
    ],
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
    ? [
        '-map',
        `0:${probed.audio.index}`,
        '-c:a',
        'aac',
        '-b:a',
        '128k',
        ...(probed.audio.channels > 2 ? ['-ac', '2'] : []),
      ]
    : []
  return {
    input: file,
    // -t bounds what is read whatever the container claims.
    inputOptions: [...commonInput(probed, limits.maxPixels), '-t', String(limits.maxSeconds)],
    filterGraph: graph,
    outputs: plan.map((p, i) => ({
      file: p.file,
      options: [
        '-map',
        `[o${i}]`,
        ...audio,
        '-c:v',
        'libx264',
        '-preset',
        'veryfast',
        '-crf',
        '23',
        '-profile:v',
        'high',
        '-pix_fmt',
        'yuv420p',
        '-map_metadata',
        '-1',
        '-map_chapters',
        '-1',
        '-movflags',
        '+faststart',
        '-f',
        'mp4',
      ],
    })),
  }
}

/** The plain argv of a run: what fluent-ffmpeg executes, for running it without the wrapper (benchmarks, a swap). */
export function ffmpegArgv(run: FfmpegRun): string[] {
  return [
    ...run.inputOptions,
    '-i',
    run.input,
    ...(run.filterGraph ? ['-filter_complex', run.filterGraph] : []),
    ...run.outputs.flatMap((o) => [...o.options, '-y', o.file]),
  ]
}

/** `-max_pixels` makes the decoder hold the limit too: a stream may grow after the part ffprobe read. */
function commonInput(probed: Probed, maxPixels: number): string[] {
  return [
    '-nostdin',
    '-hide_banner',
    '-v',
    'error',
    '-stats',
    '-max_pixels',
    String(maxPixels),
    ...inputGuard(probed.demuxer),
  ]
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
export function runFfmpeg(
  run: FfmpegRun,
  options: { signal: AbortSignal; onTime?: (seconds: number) => void }
): Promise<void> {
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
  if (
    /ENOENT|Cannot find ffmpeg|is not available|No space left|Cannot allocate memory|Permission denied/i.test(
      `${error.message}\n${text}`
    )
  ) {
    return new Error(`ffmpeg failed: ${tidyStderr(text, input)}`, { cause: error })
  }
  if (/Decoder \(codec [^)]*\) not found|could not find codec parameters|Unsupported codec/i.test(text)) {
    return new JobError(
      'unsupported_format',
      `the video uses a codec this processor cannot decode: ${tidyStderr(text, input)}`
    )
  }
  if (/exceeds specified max pixel count|max pixel/i.test(text)) {
    // `-max_pixels` caught a frame larger than the probe saw (a stream that grows mid-file).
    return new JobError('limit_exceeded', 'a frame of the video is larger than its header said, over MAX_VIDEO_PIXELS')
  }
  return new JobError('invalid_media', `the video could not be decoded: ${tidyStderr(text, input)}`)
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
    .map((l) =>
      l
        .replaceAll(file, 'the file')
        .replace(/\[[^\]]+ @ 0x[0-9a-f]+\]\s*/g, '')
        .trim()
    )
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

// ── Job ────────────────────────────────────────────────────────────────────────────────────────────────────────

/** One request's outputs. A bad video throws a JobError (a `failed` result); S3 or disk trouble is a fault, retried. */
export async function handleVideoJob(
  request: VideoRequest,
  job: JobContext,
  limits: Limits
): Promise<JobOutput<VideoMetadata>> {
  const { recipe } = request
  const { signal } = job
  job.report('downloading', 0)
  const original = join(job.workDir, 'original')
  await downloadOriginal(job.storage, request.source, original, {
    maxBytes: limits.maxBytes,
    variable: 'MAX_VIDEO_BYTES',
  })

  job.report('processing', 5)
  const probed = await probeVideo(original, request.source.format, limits, signal)
  const display = { width: probed.metadata.width, height: probed.metadata.height }
  const poster = {
    name: recipe.poster.name,
    file: join(job.workDir, 'poster.webp'),
    ...posterSize(recipe.poster, display),
  }
  const plan = planRenditions(recipe.renditions, display).map((p) => ({
    ...p,
    file: join(job.workDir, `rendition-${p.name}.mp4`),
  }))
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
    makePoster(original, probed, poster, poster.file, { maxPixels: limits.maxPixels, signal: both }).catch(stopOther),
    transcode(original, probed, plan, {
      ...limits,
      signal: both,
      onProgress: (fraction) => {
        const elapsed = (Date.now() - started) / 1000
        const eta = fraction >= 0.02 && elapsed >= 0.5 ? Math.round((elapsed * (1 - fraction)) / fraction) : null
        job.report('processing', 10 + 85 * fraction, eta)
      },
    }).catch(stopOther),
  ])
  const expected = Math.min(probed.metadata.durationSeconds, limits.maxSeconds)
  // Read back rather than taken from ffmpeg's last `time=`, which stops a frame short of the real duration.
  const renditions = await Promise.all(plan.map(async (p) => ({ ...p, ...(await probeOutput(p.file, signal)) })))
  const shortest = Math.min(...renditions.map((r) => r.durationSeconds))
  // ffmpeg exits 0 on a file whose data stops early; a rendition much shorter than the source gives it away.
  if (expected > 0 && shortest < expected - Math.max(1, expected * 0.05)) {
    throw new JobError(
      'invalid_media',
      `the video is truncated or damaged: only ${shortest.toFixed(1)} s of its ${expected.toFixed(1)} s could be decoded`
    )
  }

  job.report('uploading', 95)
  const items = [
    { name: poster.name, file: poster.file, format: 'webp' as const, width: poster.width, height: poster.height },
    ...renditions.map((r) => ({ ...r, format: 'mp4' as const })),
  ]
  // All at once: each upload holds at most 16 MiB, and there are at most 9 outputs.
  const outputs = await Promise.all(
    items.map(async (item): Promise<OutputInfo> => {
      const stored = await job.putOutput(item.name, item.format, { file: item.file })
      const info: OutputInfo = { name: item.name, ...stored, width: item.width, height: item.height }
      if ('durationSeconds' in item) info.durationSeconds = item.durationSeconds
      return info
    })
  )
  return { outputs, metadata: probed.metadata }
}

// ── Wiring ─────────────────────────────────────────────────────────────────────────────────────────────────────

export function start(config: Config): Promise<Processor> {
  return startProcessor({
    settings: config.runtime,
    connect: amqp.connect,
    // Rungs above the source are skipped, but a cancel removes every rung the recipe names.
    outputs: ({ recipe }) => [
      { name: recipe.poster.name, format: 'webp' },
      ...recipe.renditions.map(({ name }) => ({ name, format: 'mp4' as const })),
    ],
    handle: (request, job) => handleVideoJob(request, job, config.limits),
  })
}

// ── Entry ──────────────────────────────────────────────────────────────────────────────────────────────────────

if (import.meta.main) await runProcessor('videos', () => readConfig(process.env), start)
