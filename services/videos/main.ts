/**
 * videos: the video processor.
 *
 * Consumes VideoRequest from `<system>.media.videos.request` (see shared/PROTOCOL.md), downloads the original to
 * the job's work directory, probes it with ffprobe held to the container the backend sniffed, makes a WebP poster
 * and H.264/AAC renditions (one ffmpeg run for all renditions, and the storyboard's frames), packages each rendition
 * as HLS, writes the outputs to `<prefix>/<name>.<ext>`, and reports on `.updates` (progress with an ETA) and
 * `.results`. The protocol's consumer half (acks after confirms, heartbeats, retries, cancel, the lease for jobs
 * longer than the broker's consumer_timeout, hand-back) is `@app/shared/processor`; this file is the media.
 *
 * Env: SYSTEM, RABBITMQ_URL, S3_*, ALLOWED_BUCKETS, HEARTBEAT_SECONDS, SHUTDOWN_GRACE_SECONDS, ACK_DEADLINE_SECONDS
 * (see shared/processor/config.ts); VIDEO_CONCURRENCY (default 1), VIDEO_TIMEOUT_SECONDS (wall clock per job, default
 * 14400), VIDEOS_TMP_DIR (default <os tmp>/media-videos), and the limits: MAX_VIDEO_BYTES (the original's size,
 * default 4G), MAX_VIDEO_STREAMS (streams in the container, default 16), MAX_VIDEO_PIXELS (default 8847360, i.e.
 * 4096×2160), MAX_VIDEO_FRAME_RATE (default 240 fps), MAX_VIDEO_SECONDS (default 3600).
 *
 * Outputs (`videoOutputsOf` in shared/messages.ts names them all):
 * - `<poster.name>.webp`, fitted inside its box, never upscaled, taken ~10% into the video (the most representative
 *   of ~1 s of frames, so a fade-in does not give a black poster).
 * - The rungs: every rendition whose height is at or below the source's displayed *short side* (so a 1080×1920
 *   portrait phone video gets its 1080p rung at 1080×1920), always at least the smallest rung (made at source size
 *   for a smaller source: never upscaled). Each is H.264/AAC with a keyframe every 2 s of time
 *   (VIDEO_KEYFRAME_SECONDS) and no others, the same on every rung, so HLS segments start at the same times on all.
 *   Rotation is applied to the pixels and not left in the outputs; dimensions are even; metadata (GPS, titles,
 *   chapters) is stripped; 10-bit and HDR (PQ/HLG, tone-mapped with zscale) become 8-bit SDR yuv420p. A source
 *   without audio gives outputs without audio. `<rendition.name>.mp4` is uploaded unless the recipe says `mp4: false`.
 * - With `hls`: per rung `<hls>-<rung>.m3u8` (a VOD media playlist) over `<hls>-<rung>-media.m4s` (its init segment
 *   and every fMP4 segment in one file, read by byte range), and the master `<hls>.m3u8` over the rungs made.
 * - With `storyboard`: `<storyboard>-sprite.jpg` (at most 100 small frames, 10 a row, one every
 *   max(1, ceil(duration/100)) s) and `<storyboard>.vtt` (WebVTT cues pointing into it with `#xywh=`).
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
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import * as v from 'valibot'
import {
  VIDEO_KEYFRAME_SECONDS,
  bytesVar,
  countVar,
  hlsRungNames,
  outputFileName,
  storyboardSpriteName,
  videoOutputsOf,
  type OutputFormat,
  type OutputInfo,
  type VideoMetadata,
  type VideoRequest,
} from '@app/shared'
import {
  JobError,
  configReader,
  demuxersOf,
  etaSeconds,
  fetchOriginal,
  ffprobe,
  inputGuard,
  overLimit,
  parseClock,
  runFfmpeg,
  runProcessor,
  runtimeSettings,
  spawnCapture,
  startProcessor,
  type FfmpegRun,
  type FfprobeOutput,
  type FfprobeStream,
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

/** The containers the backend may sniff as video, each read only by its demuxer. */
export const VIDEO_DEMUXERS = demuxersOf(['mp4', 'mov', '3gp', 'webm', 'mkv', 'avi', 'mpegts', 'flv'])

/** What the transcode needs to know of a source, beyond the metadata it reports. */
export interface Probed {
  metadata: VideoMetadata
  demuxer: string
  videoIndex: number
  /** Frames per second the renditions are encoded at (`encodeRateOf`); 0 when unknown. */
  encodeFrameRate: number
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

/**
 * Probes the original and checks it against the limits, so a refusal costs milliseconds and no transcoding.
 * Durations: container durations can lie (a fragmented MP4 may claim 143165 s for 1 s of content), so the streams'
 * own durations are preferred and the container's is only a ceiling or fallback; `-t` is the hard bound anyway.
 */
export async function probeVideo(file: string, format: string, limits: Limits, signal: AbortSignal): Promise<Probed> {
  const demuxer = VIDEO_DEMUXERS.get(format)
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
    encodeFrameRate: encodeRateOf(video),
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

/**
 * The rate the renditions come out at. An MP4 output is constant-rate: ffmpeg repeats or drops frames to the rate
 * it guesses for the stream (av_guess_frame_rate): the base rate, or the average when the base is a container's tick
 * rate. Not `frameRateOf`: a variable-rate phone video averaging 27 fps over a 60 fps base is encoded at 60.
 */
function encodeRateOf(stream: FfprobeStream): number {
  const base = ratio(stream.r_frame_rate)
  const average = ratio(stream.avg_frame_rate)
  if (average > 0 && average < 70 && base > 210) return average
  return base || average
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

/** Where the storyboard's frames go in the transcode: its plan, the sprite, and the file that counts its tiles. */
export interface StoryboardTarget {
  plan: StoryboardPlan
  sprite: string
  /** One line per frame the tile filter received (`frame:<n> …`, from the metadata filter): the honest count. */
  tiles: string
}

/**
 * Makes every rendition in one ffmpeg run: the video is decoded, rotated, aspect-corrected and converted to 8-bit
 * SDR once at the largest rung's size, then `split` and scaled per rung (separate runs cost ~22% more). The
 * storyboard's frames are one more branch of the split, so the video is decoded once for both: on a 60 s 720p clip
 * the branch costs under 0.1 s of CPU (within the noise of a ~40 s CPU transcode; decoding alone, 5.65 s with it and
 * 5.61 s without), where a separate run over the smallest rung afterwards took 0.75 s of wall time (1.1 s CPU).
 * `onProgress` gets the fraction of the source transcoded so far.
 */
export async function transcode(
  file: string,
  probed: Probed,
  plan: (PlannedRendition & { file: string })[],
  options: Pick<Limits, 'maxSeconds' | 'maxPixels'> & {
    storyboard?: StoryboardTarget
    signal: AbortSignal
    onProgress: (fraction: number) => void
  }
): Promise<void> {
  const duration = Math.min(probed.metadata.durationSeconds, options.maxSeconds)
  await runFfmpeg(await transcodeCommand(file, probed, plan, options, options.storyboard), {
    signal: options.signal,
    onTime: (seconds) => duration > 0 && options.onProgress(Math.min(1, seconds / duration)),
  })
}

/**
 * Frames between keyframes: VIDEO_KEYFRAME_SECONDS at the rate the renditions are encoded at, rounded up, which is
 * exactly the index of the first frame at or past the interval, so x264's own limit falls where the forced keyframe
 * does. Unknown rates get 60 fps' worth: a faster video then gets extra keyframes, still the same on every rung.
 */
export function keyframeFrames(encodeFrameRate: number): number {
  const rate = encodeFrameRate > 0 ? encodeFrameRate : 60
  return Math.max(1, Math.ceil(VIDEO_KEYFRAME_SECONDS * rate - 1e-6))
}

/**
 * The one ffmpeg run that writes every rendition (and the storyboard's sprite when asked). Keyframes: one at every
 * VIDEO_KEYFRAME_SECONDS of time (`-force_key_frames`, so a variable or odd frame rate cannot shift them), none at
 * scene cuts (`-sc_threshold 0`) and none between (`-g`); every rung gets the same frames and the same options, so
 * their keyframes fall at the same times and HLS segments line up across rungs.
 */
export async function transcodeCommand(
  file: string,
  probed: Probed,
  plan: (PlannedRendition & { file: string })[],
  limits: Pick<Limits, 'maxSeconds' | 'maxPixels'>,
  storyboard?: StoryboardTarget
): Promise<FfmpegRun> {
  const top = plan.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a))
  const head = `[0:${probed.videoIndex}]scale=${top.width}:${top.height},setsar=1,${await toSdr8(probed.color)}`
  const branches = plan.map((_, i) => `[o${i}]`)
  const chains = plan.map((p) => (p === top ? 'null' : `scale=${p.width}:${p.height},setsar=1`))
  if (storyboard) {
    const board = storyboard.plan
    // fps round=up: frame k is the last at or before k × interval, and a clip shorter than the interval still gets
    // one (round=near gives none under half of it). trim: never more than planned, so the tile filter makes exactly
    // one sheet (ffmpeg 5.1 flushes a partial sheet at the end). The metadata filters print a line per frame that
    // reaches the sheet: how many it holds, counted rather than predicted.
    chains.push(
      [
        `fps=1/${board.interval}:round=up`,
        `scale=${board.tileWidth}:${board.tileHeight},setsar=1,format=yuvj420p`,
        `trim=end_frame=${board.tiles}`,
        'metadata=mode=add:key=tile:value=1',
        `metadata=mode=print:file=${filterValue(storyboard.tiles)}`,
        `tile=${board.columns}x${board.rows}`,
      ].join(',')
    )
    branches.push('[sb]')
  }
  const graph =
    chains.length === 1
      ? `${head}${branches[0]}`
      : `${head},split=${chains.length}${chains.map((_, i) => `[s${i}]`).join('')};` +
        chains.map((chain, i) => `[s${i}]${chain}${branches[i]}`).join(';')
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
  const gop = String(keyframeFrames(probed.encodeFrameRate))
  const outputs: FfmpegRun['outputs'] = plan.map((p, i) => ({
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
      '-force_key_frames',
      `expr:gte(t,n_forced*${VIDEO_KEYFRAME_SECONDS})`,
      '-sc_threshold',
      '0',
      '-g',
      gop,
      '-keyint_min',
      gop,
      '-map_metadata',
      '-1',
      '-map_chapters',
      '-1',
      '-movflags',
      '+faststart',
      '-f',
      'mp4',
    ],
  }))
  if (storyboard) {
    outputs.push({
      file: storyboard.sprite,
      options: [
        '-map',
        '[sb]',
        '-frames:v',
        '1',
        '-c:v',
        'mjpeg',
        '-q:v',
        '5',
        '-map_metadata',
        '-1',
        '-f',
        'image2',
        '-update',
        '1',
      ],
    })
  }
  return {
    input: file,
    // -t bounds what is read whatever the container claims.
    inputOptions: [...commonInput(probed, limits.maxPixels), '-t', String(limits.maxSeconds)],
    filterGraph: graph,
    outputs,
  }
}

/** A file name as a filter option's value inside a filter graph: escaped for the option, then for the graph. */
function filterValue(text: string): string {
  return text.replace(/[\\':]/g, '\\$&').replace(/[\\'[\],;]/g, '\\$&')
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

/** Duration, size and frame rate of a finished MP4, read back rather than assumed. */
export async function probeOutput(file: string, signal: AbortSignal) {
  const probe = await ffprobe(file, 'mov', signal)
  const video = probe.streams?.find((s) => s.codec_type === 'video')
  if (!video?.width || !video.height) throw new Error(`ffmpeg wrote ${file} without a video stream`)
  return {
    width: video.width,
    height: video.height,
    durationSeconds: round3(Number(probe.format?.duration) || 0),
    frameRate: ratio(video.avg_frame_rate) || ratio(video.r_frame_rate),
  }
}

// ── Core: HLS ──────────────────────────────────────────────────────────────────────────────────────────────────
//
// Each rung's MP4 is repackaged (no re-encoding) as fMP4 HLS: one media playlist over one file holding the init
// segment and every segment, addressed by byte range. Audio stays muxed in each rung, as in the MP4s: one fMP4 file
// per rung with its AAC beside the video plays in hls.js and in native players alike, and keeps a rung to two
// objects (playlist and media), where separate audio renditions would add a group, a playlist and a file.

/** Segment length when the recipe does not say: two keyframe intervals. */
export const HLS_DEFAULT_SEGMENT_SECONDS = 4

/** A packaged rung's files: `<hls>-<rung>.m3u8` over `<hls>-<rung>-media.m4s`, side by side (relative URIs). */
export interface HlsFiles {
  playlist: string
  segments: string
}

/** The ffmpeg run that packages one rung's MP4 as a VOD fMP4 media playlist over a single segment file. */
export function hlsPackageCommand(mp4: string, files: HlsFiles, segmentSeconds: number): FfmpegRun {
  return {
    input: mp4,
    // Our own MP4, but read the way every input is: local file, one demuxer.
    inputOptions: ['-nostdin', '-hide_banner', '-v', 'error', ...inputGuard('mov')],
    outputs: [
      {
        file: files.playlist,
        options: [
          '-map',
          '0:v',
          '-map',
          '0:a?',
          '-c',
          'copy',
          '-f',
          'hls',
          '-hls_time',
          String(segmentSeconds),
          '-hls_playlist_type',
          'vod',
          '-hls_segment_type',
          'fmp4',
          '-hls_flags',
          'single_file+independent_segments',
          '-hls_segment_filename',
          files.segments,
        ],
      },
    ],
  }
}

/** A media playlist as far as the master needs it, and as far as it is checked. */
export interface MediaPlaylist {
  version: number
  targetDuration: number
  vod: boolean
  ended: boolean
  map: { uri: string; offset: number; length: number } | null
  segments: { uri: string; duration: number; offset: number; length: number }[]
}

/** Parses a media playlist whose segments are byte ranges (what the packaging writes). Pure. */
export function parseMediaPlaylist(text: string): MediaPlaylist {
  const playlist: MediaPlaylist = { version: 1, targetDuration: 0, vod: false, ended: false, map: null, segments: [] }
  const range = (value: string, follows: number) => {
    const [length, offset] = value.split('@').map(Number)
    return { length: length!, offset: offset ?? follows }
  }
  let duration: number | null = null
  let bytes: { length: number; offset: number } | null = null
  let end = 0
  for (const line of text.split(/\r?\n/).map((l) => l.trim())) {
    const colon = line.startsWith('#') ? line.indexOf(':') : -1
    const tag = colon > 0 ? line.slice(0, colon) : line
    const value = colon > 0 ? line.slice(colon + 1) : ''
    if (tag === '#EXT-X-VERSION') playlist.version = Number(value)
    else if (tag === '#EXT-X-TARGETDURATION') playlist.targetDuration = Number(value)
    else if (tag === '#EXT-X-PLAYLIST-TYPE') playlist.vod = value === 'VOD'
    else if (tag === '#EXT-X-ENDLIST') playlist.ended = true
    else if (tag === '#EXT-X-MAP') {
      const uri = /URI="([^"]*)"/.exec(value)?.[1]
      const map = /BYTERANGE="([^"]*)"/.exec(value)?.[1]
      if (uri === undefined || map === undefined) throw new Error(`an EXT-X-MAP without URI or BYTERANGE: ${line}`)
      playlist.map = { uri, ...range(map, 0) }
    } else if (tag === '#EXTINF') duration = Number.parseFloat(value)
    else if (tag === '#EXT-X-BYTERANGE') bytes = range(value, end)
    else if (line && !line.startsWith('#')) {
      if (duration === null || bytes === null) throw new Error(`the segment ${line} has no EXTINF or EXT-X-BYTERANGE`)
      playlist.segments.push({ uri: line, duration, ...bytes })
      end = bytes.offset + bytes.length
      duration = null
      bytes = null
    }
  }
  return playlist
}

/**
 * Bits per second of a media playlist's segments: `average` over all of them, and `peak` as RFC 8216 section
 * 4.3.4.2 defines it: the highest rate of any run of consecutive segments lasting 0.5 to 1.5 target durations (so a
 * short last segment is judged with its neighbour). A playlist shorter than half its target duration has no such run:
 * its peak is its average. Both rounded up. Pure.
 */
export function segmentBitrates(playlist: MediaPlaylist): { peak: number; average: number; duration: number } {
  const { segments, targetDuration } = playlist
  const duration = segments.reduce((sum, s) => sum + s.duration, 0)
  const bytes = segments.reduce((sum, s) => sum + s.length, 0)
  const average = duration > 0 ? (bytes * 8) / duration : 0
  let peak = 0
  for (let first = 0; first < segments.length; first++) {
    let seconds = 0
    let bits = 0
    for (let last = first; last < segments.length; last++) {
      seconds += segments[last]!.duration
      bits += segments[last]!.length * 8
      if (seconds > 1.5 * targetDuration) break
      if (seconds >= 0.5 * targetDuration && seconds > 0) peak = Math.max(peak, bits / seconds)
    }
  }
  return { peak: Math.ceil(peak || average), average: Math.ceil(average), duration: round3(duration) }
}

/**
 * The playlist with its EXT-X-TARGETDURATION raised to its longest segment rounded up, at least 1. ffmpeg 5.1 rounds
 * to the nearest integer, so a 0.5 s clip gets 0 and a 4.5 s segment a target of 4. Pure.
 */
export function withTargetDuration(text: string, playlist: MediaPlaylist): { text: string; targetDuration: number } {
  const longest = Math.max(0, ...playlist.segments.map((s) => s.duration))
  const targetDuration = Math.max(1, playlist.targetDuration, Math.ceil(longest - 1e-9))
  return {
    text: text.replace(/^#EXT-X-TARGETDURATION:.*$/m, `#EXT-X-TARGETDURATION:${targetDuration}`),
    targetDuration,
  }
}

/** The boxes inside `bytes[start, end)` of an ISO BMFF file: each one's type and where its payload lies. */
function* boxesIn(bytes: Uint8Array, start: number, end: number) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  for (let at = start; at + 8 <= end; ) {
    let size = view.getUint32(at)
    let header = 8
    if (size === 1 && at + 16 <= end) {
      size = Number(view.getBigUint64(at + 8))
      header = 16
    } else if (size === 0) size = end - at
    if (size < header || at + size > end) return
    yield { type: String.fromCharCode(...bytes.subarray(at + 4, at + 8)), start: at + header, end: at + size }
    at += size
  }
}

/**
 * The RFC 6381 codecs of an fMP4 init segment, video first: `avc1.PPCCLL` from each H.264 track's avcC (profile,
 * constraint flags and level, in hex) and `mp4a.40.2` for an AAC track (the renditions' audio is ffmpeg's AAC
 * encoder, always AAC-LC). Walks moov/trak/mdia/minf/stbl/stsd. Pure.
 */
export function initSegmentCodecs(init: Uint8Array): string[] {
  const child = (box: { start: number; end: number }, type: string, skip = 0) =>
    [...boxesIn(init, box.start + skip, box.end)].filter((b) => b.type === type)
  const video: string[] = []
  const audio: string[] = []
  for (const moov of child({ start: 0, end: init.byteLength }, 'moov')) {
    for (const trak of child(moov, 'trak')) {
      const [stsd] = [trak]
        .flatMap((b) => child(b, 'mdia'))
        .flatMap((b) => child(b, 'minf'))
        .flatMap((b) => child(b, 'stbl'))
        .flatMap((b) => child(b, 'stsd'))
      if (!stsd) continue
      // stsd: version and flags, then an entry count, then the sample entries.
      for (const entry of boxesIn(init, stsd.start + 8, stsd.end)) {
        if (entry.type === 'avc1' || entry.type === 'avc3') {
          // A visual sample entry has 78 bytes of fields before its child boxes.
          const [avcC] = child(entry, 'avcC', 78)
          if (!avcC || avcC.end - avcC.start < 4) throw new Error('an H.264 track without an avcC box')
          const hex = [...init.subarray(avcC.start + 1, avcC.start + 4)].map((b) => b.toString(16).padStart(2, '0'))
          video.push(`${entry.type}.${hex.join('')}`)
        } else if (entry.type === 'mp4a') audio.push('mp4a.40.2')
      }
    }
  }
  return [...video, ...audio]
}

/** One variant of the master playlist: a packaged rung. */
export interface HlsVariant {
  uri: string
  width: number
  height: number
  codecs: string[]
  /** Peak and average bits per second (`segmentBitrates`). */
  bandwidth: number
  averageBandwidth: number
  /** Frames per second; 0 when unknown (then no FRAME-RATE). */
  frameRate: number
}

/**
 * The master playlist over the rungs made. The first variant listed is where players start (Apple's HLS authoring
 * specification; hls.js also starts at the first listed): the rung nearest 720p on its short side, a picture worth
 * seeing on most connections that adaptation can leave either way; the rest follow by bandwidth, low to high.
 * `version` is the media playlists' (ffmpeg writes 7 for fMP4). Pure.
 */
export function masterPlaylist(variants: HlsVariant[], version = 7): string {
  const short = (v: HlsVariant) => Math.min(v.width, v.height)
  const [first, ...rest] = [...variants].sort(
    (a, b) => Math.abs(short(a) - 720) - Math.abs(short(b) - 720) || short(a) - short(b)
  )
  const ordered = first ? [first, ...rest.sort((a, b) => a.bandwidth - b.bandwidth)] : []
  const lines = ['#EXTM3U', `#EXT-X-VERSION:${Math.max(7, version)}`, '#EXT-X-INDEPENDENT-SEGMENTS']
  for (const v of ordered) {
    const attributes = [
      `BANDWIDTH=${v.bandwidth}`,
      `AVERAGE-BANDWIDTH=${v.averageBandwidth}`,
      `RESOLUTION=${v.width}x${v.height}`,
      `CODECS="${v.codecs.join(',')}"`,
      ...(v.frameRate > 0 ? [`FRAME-RATE=${v.frameRate.toFixed(3)}`] : []),
    ]
    lines.push(`#EXT-X-STREAM-INF:${attributes.join(',')}`, v.uri)
  }
  return `${lines.join('\n')}\n`
}

/**
 * Reads back what the packaging wrote for one rung and checks it is what a player needs: VOD, ended, its init
 * segment and every segment in the one media file beside the playlist (URIs are bare file names, so they resolve
 * next to the playlist in S3). Rewrites the target duration (`withTargetDuration`). No ffmpeg: the benchmark runs it
 * after running `hlsPackageCommand` bare.
 */
export async function readPackagedRung(files: HlsFiles, rung: { width: number; height: number; frameRate: number }) {
  const text = readFileSync(files.playlist, 'utf8')
  const parsed = ours(() => parseMediaPlaylist(text))
  const media = basename(files.segments)
  const wrong = [
    !parsed.vod && 'it is not VOD',
    !parsed.ended && 'it has no EXT-X-ENDLIST',
    parsed.map?.uri !== media && `its EXT-X-MAP is not ${media}`,
    parsed.segments.length === 0 && 'it has no segments',
    parsed.segments.some((s) => s.uri !== media) && `a segment is not in ${media}`,
  ].filter(Boolean)
  if (wrong.length)
    throw new JobError(
      'processing_error',
      `the HLS packaging of ${basename(files.playlist)} is wrong: ${wrong.join(', ')}`
    )
  const tidy = withTargetDuration(text, parsed)
  writeFileSync(files.playlist, tidy.text)
  const map = parsed.map!
  const init = new Uint8Array(map.length)
  const handle = await open(files.segments, 'r')
  try {
    await handle.read(init, 0, map.length, map.offset)
  } finally {
    await handle.close()
  }
  const playlist = { ...parsed, targetDuration: tidy.targetDuration }
  const rates = segmentBitrates(playlist)
  const codecs = ours(() => initSegmentCodecs(init))
  if (!codecs[0]?.startsWith('avc'))
    throw new JobError('processing_error', `the init segment of ${media} has no H.264 track`)
  const variant: HlsVariant = {
    uri: basename(files.playlist),
    width: rung.width,
    height: rung.height,
    codecs,
    bandwidth: rates.peak,
    averageBandwidth: rates.average,
    frameRate: rung.frameRate,
  }
  return { playlist, variant, durationSeconds: rates.duration }
}

/** Runs a reading of our own output: what it finds wrong is a bug (`processing_error`), not a fault to retry. */
function ours<T>(read: () => T): T {
  try {
    return read()
  } catch (error) {
    throw new JobError('processing_error', `the HLS packaging wrote something unexpected: ${(error as Error).message}`)
  }
}

/** Packages one rung and reads it back. A failure here is ours, not the file's: the MP4 was just written by us. */
export async function packageRung(
  mp4: string,
  files: HlsFiles,
  rung: { width: number; height: number; frameRate: number },
  options: { segmentSeconds: number; signal: AbortSignal }
) {
  try {
    await runFfmpeg(hlsPackageCommand(mp4, files, options.segmentSeconds), { signal: options.signal })
  } catch (error) {
    if (!(error instanceof JobError)) throw error
    throw new JobError('processing_error', `packaging ${basename(mp4)} as HLS failed: ${error.message}`)
  }
  return readPackagedRung(files, rung)
}

// ── Core: storyboard ───────────────────────────────────────────────────────────────────────────────────────────

/** The most frames a storyboard holds, and how many to a row of its sprite. */
export const STORYBOARD_MAX_TILES = 100
export const STORYBOARD_COLUMNS = 10
export const STORYBOARD_DEFAULT_WIDTH = 160

/** How a storyboard is laid out. */
export interface StoryboardPlan {
  /** Seconds between frames: at least 1, and long enough that the video fits in STORYBOARD_MAX_TILES frames. */
  interval: number
  /** The most frames it may hold (the sprite's grid); the frames made are counted after the run. */
  tiles: number
  columns: number
  rows: number
  tileWidth: number
  tileHeight: number
}

/**
 * The storyboard of a video lasting `durationSeconds` whose picture is `picture` (the largest rung): one frame every
 * `interval` s, so a 2-hour film is still one sprite of 100 frames; each `width` wide (never wider than the picture),
 * its height by the picture's aspect, even. Pure.
 */
export function planStoryboard(
  durationSeconds: number,
  picture: { width: number; height: number },
  width = STORYBOARD_DEFAULT_WIDTH
): StoryboardPlan {
  const interval = Math.max(1, Math.ceil(durationSeconds / STORYBOARD_MAX_TILES - 1e-9))
  const tiles = Math.min(STORYBOARD_MAX_TILES, Math.max(1, Math.ceil(durationSeconds / interval - 1e-9)))
  const columns = Math.min(STORYBOARD_COLUMNS, tiles)
  const tileWidth = Math.max(2, Math.min(width, picture.width))
  const tileHeight = Math.max(2, 2 * Math.round((tileWidth * picture.height) / picture.width / 2))
  return { interval, tiles, columns, rows: Math.ceil(tiles / columns), tileWidth, tileHeight }
}

/** `HH:MM:SS.mmm` of a time in milliseconds. */
const vttTime = (ms: number) => {
  const pad = (n: number, width = 2) => String(n).padStart(width, '0')
  const hours = Math.floor(ms / 3_600_000)
  return `${pad(hours)}:${pad(Math.floor(ms / 60_000) % 60)}:${pad(Math.floor(ms / 1000) % 60)}.${pad(ms % 1000, 3)}`
}

/**
 * The storyboard's WebVTT: one cue per frame of the sprite, `interval` s long from 0, the last one ending at the
 * duration, each pointing at its region with `#xywh=`. `frames` is how many frames the sprite really holds; cues
 * past the duration are left out and the last frame's cue runs to the end. Pure.
 */
export function storyboardVtt(
  plan: Pick<StoryboardPlan, 'interval' | 'columns' | 'tileWidth' | 'tileHeight'>,
  sprite: string,
  frames: number,
  durationSeconds: number
): string {
  const end = Math.max(1, Math.round(durationSeconds * 1000))
  const step = plan.interval * 1000
  const count = Math.max(1, Math.min(frames, Math.ceil(end / step)))
  const cues = Array.from({ length: count }, (_, k) => {
    const x = (k % plan.columns) * plan.tileWidth
    const y = Math.floor(k / plan.columns) * plan.tileHeight
    const until = k === count - 1 ? end : (k + 1) * step
    return `${vttTime(k * step)} --> ${vttTime(until)}\n${sprite}#xywh=${x},${y},${plan.tileWidth},${plan.tileHeight}`
  })
  return `WEBVTT\n\n${cues.join('\n\n')}\n`
}

/** How many frames the tile filter received: the lines the metadata filter printed for them. */
export function countTiles(file: string): number {
  if (!existsSync(file)) return 0
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('frame:')).length
}

let filters: Promise<string> | undefined
/** Whether this ffmpeg build has a filter (zscale needs --enable-libzimg); asked once per process. */
async function hasFilter(name: string): Promise<boolean> {
  filters ??= spawnCapture('ffmpeg', ['-hide_banner', '-filters'], new AbortController().signal).then((r) => r.stdout)
  return new RegExp(`^\\s*\\S+\\s+${name}\\s`, 'm').test(await filters)
}

const ratio = (text: string | undefined) => {
  const [n, d] = (text ?? '').split(/[/:]/).map(Number)
  return n && d && Number.isFinite(n / d) ? n / d : 0
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
  // Every file is named as its output's key ends (<name>.<extension>), so the playlists' relative URIs, written by
  // ffmpeg here, resolve beside them in S3 too.
  const fileOf = (name: string, format: OutputFormat) => join(job.workDir, outputFileName(name, format))
  const original = await fetchOriginal(job, request.source, { maxBytes: limits.maxBytes, variable: 'MAX_VIDEO_BYTES' })

  job.report('processing', 5)
  const probed = await probeVideo(original, request.source.format, limits, signal)
  const display = { width: probed.metadata.width, height: probed.metadata.height }
  const expected = Math.min(probed.metadata.durationSeconds, limits.maxSeconds)
  const poster = { file: fileOf(recipe.poster.name, 'webp'), ...posterSize(recipe.poster, display) }
  const plan = planRenditions(recipe.renditions, display).map((p) => ({ ...p, file: fileOf(p.name, 'mp4') }))
  const top = plan.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a))
  const storyboard = recipe.storyboard && {
    name: recipe.storyboard.name,
    plan: planStoryboard(expected, top, recipe.storyboard.width),
    sprite: fileOf(storyboardSpriteName(recipe.storyboard.name), 'jpeg'),
    // Output names start with a letter or digit: a dot file is never one of them.
    tiles: join(job.workDir, '.storyboard-tiles'),
  }
  // The poster (a short single-threaded decode and WebP encode) runs beside the transcode, which seldom keeps every
  // core busy.
  const started = Date.now()
  await together(signal, [
    (both) => makePoster(original, probed, poster, poster.file, { maxPixels: limits.maxPixels, signal: both }),
    (both) =>
      transcode(original, probed, plan, {
        ...limits,
        storyboard,
        signal: both,
        onProgress: (fraction) => {
          job.report('processing', 10 + 85 * fraction, etaSeconds(fraction, (Date.now() - started) / 1000))
        },
      }),
  ])
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

  // The tail, tenths of a second against the transcode's seconds: packaging (no re-encoding), the master, the WebVTT.
  const items: OutputFile[] = [{ name: recipe.poster.name, format: 'webp', ...poster }]
  if (recipe.mp4 !== false) items.push(...renditions.map((r) => ({ ...r, format: 'mp4' as const })))
  if (recipe.hls) items.push(...(await streamed(recipe.hls, renditions, top, fileOf, signal)))
  if (storyboard)
    items.push(...storyboardFiles(storyboard, Math.max(...renditions.map((r) => r.durationSeconds)), fileOf))

  job.report('uploading', 95)
  // A few at a time: up to 28 outputs, and each upload holds up to 16 MiB of buffers.
  let uploaded = 0
  const outputs = await eachLimited(items, 4, async (item): Promise<OutputInfo> => {
    const stored = await job.putOutput(item.name, item.format, { file: item.file })
    job.report('uploading', 95 + (4 * ++uploaded) / items.length)
    const info: OutputInfo = { name: item.name, ...stored, width: item.width, height: item.height }
    if (item.durationSeconds !== undefined) info.durationSeconds = item.durationSeconds
    return info
  })
  return { outputs, metadata: probed.metadata }
}

/** A file of the job's to upload as an output, with what the result says of it. */
interface OutputFile {
  name: string
  file: string
  format: OutputFormat
  width: number
  height: number
  durationSeconds?: number
}

/**
 * Packages every rung made (side by side: each takes a few tenths of a second) and writes the master over them: the
 * HLS outputs, master first, then each rung's playlist and media.
 */
async function streamed(
  hls: NonNullable<VideoRequest['recipe']['hls']>,
  rungs: (PlannedRendition & { file: string; frameRate: number })[],
  top: PlannedRendition,
  fileOf: (name: string, format: OutputFormat) => string,
  signal: AbortSignal
): Promise<OutputFile[]> {
  const segmentSeconds = hls.segmentSeconds ?? HLS_DEFAULT_SEGMENT_SECONDS
  const packaged = await together(
    signal,
    rungs.map((rung) => async (both) => {
      const names = hlsRungNames(hls.name, rung.name)
      const files = { playlist: fileOf(names.playlist, 'm3u8'), segments: fileOf(names.segments, 'm4s') }
      return { rung, names, files, ...(await packageRung(rung.file, files, rung, { segmentSeconds, signal: both })) }
    })
  )
  const master = fileOf(hls.name, 'm3u8')
  const version = Math.max(...packaged.map((p) => p.playlist.version))
  const variants = packaged.map((p) => p.variant)
  writeFileSync(master, masterPlaylist(variants, version))
  const seconds = Math.max(...packaged.map((p) => p.durationSeconds))
  const items: OutputFile[] = [
    { name: hls.name, file: master, format: 'm3u8', width: top.width, height: top.height, durationSeconds: seconds },
  ]
  for (const { rung, names, files, durationSeconds } of packaged) {
    const size = { width: rung.width, height: rung.height, durationSeconds }
    items.push(
      { name: names.playlist, file: files.playlist, format: 'm3u8', ...size },
      { name: names.segments, file: files.segments, format: 'm4s', ...size }
    )
  }
  return items
}

/** Writes the storyboard's WebVTT over the frames its sprite holds (made in the transcode): its two outputs. */
function storyboardFiles(
  storyboard: StoryboardTarget & { name: string },
  durationSeconds: number,
  fileOf: (name: string, format: OutputFormat) => string
): OutputFile[] {
  const { plan, sprite } = storyboard
  const frames = countTiles(storyboard.tiles)
  if (frames === 0 || !existsSync(sprite))
    throw new JobError('processing_error', 'the transcode made no storyboard frames from a video it could decode')
  const vtt = fileOf(storyboard.name, 'vtt')
  writeFileSync(vtt, storyboardVtt(plan, basename(sprite), frames, durationSeconds))
  const tile = { width: plan.tileWidth, height: plan.tileHeight }
  return [
    { name: storyboard.name, file: vtt, format: 'vtt', ...tile, durationSeconds },
    {
      name: storyboardSpriteName(storyboard.name),
      file: sprite,
      format: 'jpeg',
      width: plan.columns * plan.tileWidth,
      height: plan.rows * plan.tileHeight,
    },
  ]
}

/** Runs tasks side by side, each with its own signal; the first to fail stops the others. */
function together<T>(signal: AbortSignal, tasks: ((signal: AbortSignal) => Promise<T>)[]): Promise<T[]> {
  const sibling = new AbortController()
  const both = AbortSignal.any([signal, sibling.signal])
  return Promise.all(
    tasks.map((task) =>
      task(both).catch((error: unknown): never => {
        sibling.abort(error)
        throw error
      })
    )
  )
}

/** Runs `work` on each item, at most `limit` at a time; results in the items' order. Takes no new item once one fails. */
async function eachLimited<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = []
  let next = 0
  let failed = false
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (!failed && next < items.length) {
        const index = next++
        try {
          results[index] = await work(items[index]!)
        } catch (error) {
          failed = true
          throw error
        }
      }
    })
  )
  return results
}

// ── Wiring ─────────────────────────────────────────────────────────────────────────────────────────────────────

export function start(config: Config): Promise<Processor> {
  return startProcessor({
    settings: config.runtime,
    connect: amqp.connect,
    // Rungs above the source are skipped, but a cancel removes every output the recipe names.
    outputs: ({ recipe }) => videoOutputsOf(recipe),
    handle: (request, job) => handleVideoJob(request, job, config.limits),
  })
}

// ── Entry ──────────────────────────────────────────────────────────────────────────────────────────────────────

if (import.meta.main) await runProcessor('videos', () => readConfig(process.env), start)
