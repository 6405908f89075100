/**
 * audio: the audio processor.
 *
 * Consumes AudioRequest from `<system>.media.audio.request` (see shared/PROTOCOL.md), downloads the original, probes
 * it with ffprobe held to the container the backend sniffed, measures its loudness and decodes its waveform in one
 * ffmpeg run, encodes AAC (M4A) and Opus (WebM) in a second run with the gain that measure gives, writes the outputs
 * to `<prefix>/<name>.<ext>`, and reports on `.updates` (progress with an ETA) and `.results`. The protocol's
 * consumer half (acks after confirms, heartbeats, retries, cancel, lease, hand-back) is `@app/shared/processor`, and
 * the guarded ffmpeg runs are its `ffmpeg.ts`, shared with the video processor; this file is the media.
 *
 * Env: SYSTEM, RABBITMQ_URL, S3_*, ALLOWED_BUCKETS, HEARTBEAT_SECONDS, SHUTDOWN_GRACE_SECONDS, ACK_DEADLINE_SECONDS
 * (see shared/processor/config.ts); AUDIO_CONCURRENCY (default 2), AUDIO_TIMEOUT_SECONDS (wall clock per job, default
 * 3600), AUDIO_TMP_DIR (default <os tmp>/media-audio), and the limits: MAX_AUDIO_BYTES (the original's size, default
 * 1G), MAX_AUDIO_STREAMS (streams in the container, default 16), MAX_AUDIO_CHANNELS (default 8), MAX_AUDIO_SECONDS
 * (default 14400, 4 hours).
 *
 * Outputs (`audioOutputsOf` in shared/messages.ts names them all; none is a video, none carries the source's tags):
 * - `<aac.name>.m4a`: AAC-LC, 48 kHz, 128 kb/s unless the recipe says, moov first (faststart), mono or stereo (more
 *   channels are downmixed).
 * - `<opus.name>.webm`: Opus in WebM, 48 kHz, 96 kb/s unless the recipe says, mono or stereo.
 * - `<peaks.name>.json`: the waveform in the BBC audiowaveform JSON format (version 2, one channel, 8 bits), min/max
 *   pairs of the audio as it plays (the outputs' gain applied, channels averaged, at 48 kHz).
 * - `<cover.name>.webp`: the embedded picture (ID3 APIC, FLAC PICTURE, MP4 covr), fitted inside its box, never
 *   upscaled; left out when there is none.
 *
 * Loudness (EBU R 128, the `ebur128` filter, on the mono or stereo mix the outputs carry): with `loudness` in the
 * recipe, the outputs get one linear gain, min(target − integrated, ceiling − headroom − true peak, max gain):
 * two-pass `loudnorm` made short clips quieter (next-wave-3.md, section 3), a capped linear gain never does. The one
 * case where the gain is negative with the target above the file is a true peak already over the ceiling: the
 * ceiling wins, since a lossy decoder would clip there. Silence (no 400 ms block above ebur128's -70 LUFS gate, which
 * includes clips too short for one) gets no gain.
 *
 * Bad input (a `failed` result, class `input`, never retried): no audio stream, or a container the backend did not
 * sniff as audio (`unsupported_format`); a file the forced demuxer cannot read, or whose audio fails to decode
 * (`invalid_media`, see `decodeDamage`); one over a limit (`limit_exceeded`); a job past AUDIO_TIMEOUT_SECONDS
 * (`timeout`). The limits hold before any decoding: bytes before and during the download, the others on the probe.
 * A header claiming more than MAX_AUDIO_SECONDS is refused unread, like the video processor's; decoding is cut one
 * second past the limit, so a header that understates is caught by what decodes. The duration reported is what
 * decodes (headers disagree: an MP3's estimate, an MP4's edit list).
 */
import amqp from 'amqplib'
import { closeSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import * as v from 'valibot'
import {
  AUDIO_LOUDNESS_DEFAULTS,
  AUDIO_PEAKS_DEFAULT_PAIRS,
  audioOutputsOf,
  bytesVar,
  countVar,
  outputFileName,
  type AudioMetadata,
  type AudioRequest,
  type OutputFormat,
  type OutputInfo,
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
  untilAborted,
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
    // A job is two decodes at ~100× real time: two at once keep a core each busy without starving the uploads.
    AUDIO_CONCURRENCY: countVar(2, 64),
    MAX_AUDIO_SECONDS: countVar(4 * 3600, 7 * 86400),
    // Surround is downmixed to stereo; more than 7.1 is no listening format.
    MAX_AUDIO_CHANNELS: countVar(8, 255),
    // Audio, a cover or two, a data track: a real file has a few, a hostile one thousands (each is demuxed).
    MAX_AUDIO_STREAMS: countVar(16, 100_000),
    MAX_AUDIO_BYTES: bytesVar('1G'),
    // A 4-hour file takes a few minutes (two decodes and two encodes); an hour is a hung job.
    AUDIO_TIMEOUT_SECONDS: countVar(3600, 7 * 86400),
    AUDIO_TMP_DIR: v.optional(v.pipe(v.string(), v.nonEmpty()), join(tmpdir(), 'media-audio')),
  },
  (env) => ({
    runtime: runtimeSettings(env, {
      type: 'audio',
      concurrency: env.AUDIO_CONCURRENCY,
      timeoutSeconds: env.AUDIO_TIMEOUT_SECONDS,
      tmpDir: env.AUDIO_TMP_DIR,
    }),
    limits: {
      maxBytes: env.MAX_AUDIO_BYTES,
      maxStreams: env.MAX_AUDIO_STREAMS,
      maxChannels: env.MAX_AUDIO_CHANNELS,
      maxSeconds: env.MAX_AUDIO_SECONDS,
      timeoutSeconds: env.AUDIO_TIMEOUT_SECONDS,
    },
  })
)
export type Config = ReturnType<typeof readConfig>
export type Limits = Config['limits']

// ── Core: probe and limits ─────────────────────────────────────────────────────────────────────────────────────

/** The containers the backend may sniff as audio (an MP4 or Matroska file with only sound among them). */
export const AUDIO_DEMUXERS = demuxersOf([
  'mp3',
  'aac',
  'm4a',
  'mp4',
  'mov',
  'flac',
  'wav',
  'ogg',
  'opus',
  'webm',
  'mkv',
])

/** Every output is 48 kHz: what Opus runs at, and what the waveform is counted in. */
export const OUTPUT_SAMPLE_RATE = 48_000
/**
 * dB kept below the true-peak ceiling for the encoders, which reconstruct peaks above their input: AAC at 128 kb/s
 * by up to 0.9 dB on a percussive clip and 1.3 dB on the corpus' MP3 with a cover (its abrupt first frame), Opus by
 * less. With this headroom most outputs stay under the ceiling at once; the rest are measured and encoded again
 * with the gain lowered by their overshoot (CODEC_OVERSHOOT_DB bounds which are measured). No limiter: the
 * overshoot is the encoder's, after any filter, and a limiter would change the sound to save a decibel.
 */
export const CODEC_HEADROOM_DB = 0.5
/** Outputs whose source peak plus gain come within this of the ceiling have their true peak measured. */
export const CODEC_OVERSHOOT_DB = 2
/** Pictures this large are not cover art; the limit holds before any pixel is decoded (as MAX_IMAGE_PIXELS does). */
const COVER_MAX_PIXELS = 50_000_000
/** Codecs of embedded pictures that are fitted; anything else is left out (sharp reads these four). */
const COVER_CODECS = new Set(['mjpeg', 'png', 'webp', 'gif'])

/** What the limits are checked on, from the probe. */
export interface AudioFacts {
  streams: number
  channels: number
  /** Absent when no header says. */
  durationSeconds?: number
}

/** The first limit a probed file breaks, as its refusal, or null. Pure. */
export function audioLimitFailure(
  found: AudioFacts,
  limits: Pick<Limits, 'maxStreams' | 'maxChannels' | 'maxSeconds'>
): JobError | null {
  if (found.streams > limits.maxStreams)
    return overLimit(`the file has ${found.streams} streams`, 'MAX_AUDIO_STREAMS', limits.maxStreams)
  if (found.channels > limits.maxChannels)
    return overLimit(`the audio has ${found.channels} channels`, 'MAX_AUDIO_CHANNELS', limits.maxChannels)
  if (found.durationSeconds !== undefined && found.durationSeconds > limits.maxSeconds)
    return overLimit(
      `the audio lasts ${Math.round(found.durationSeconds)} s`,
      'MAX_AUDIO_SECONDS',
      `${limits.maxSeconds} s`
    )
  return null
}

/** What the processing needs of a probed source. */
export interface ProbedAudio {
  demuxer: string
  /** The audio stream's index in the file (the first audio stream). */
  index: number
  codec: string
  sampleRate: number
  channels: number
  bitrate: number
  /** What the headers say, NaN when none does: a ceiling for the limits, never reported. */
  headerSeconds: number
  tags: AudioMetadata['tags']
  /** The first attached picture in a codec the cover is made from. */
  cover: { index: number; width: number; height: number } | null
}

/** Probes the original and checks the limits, so a refusal costs milliseconds and no decoding. */
export async function probeAudio(file: string, format: string, limits: Limits, signal: AbortSignal) {
  const demuxer = AUDIO_DEMUXERS.get(format)
  if (!demuxer) throw new JobError('unsupported_format', `"${format}" is not an audio container this processor accepts`)
  const probe = await ffprobe(file, demuxer, signal, format.toUpperCase())
  return readProbe(probe, demuxer, limits)
}

/** The audio stream, cover, tags and limits of a probe. Pure. */
export function readProbe(probe: FfprobeOutput, demuxer: string, limits: Limits): ProbedAudio {
  const streams = probe.streams ?? []
  const audio = streams.find((s) => s.codec_type === 'audio')
  if (!audio) throw new JobError('unsupported_format', 'the file has no audio stream')
  if (!audio.codec_name || audio.codec_name === 'none')
    throw new JobError('unsupported_format', 'the audio stream is in a codec ffmpeg cannot decode')
  const sampleRate = Number(audio.sample_rate)
  const channels = audio.channels ?? 0
  if (!(sampleRate > 0 && sampleRate <= 1_000_000) || !(channels > 0))
    throw new JobError('invalid_media', 'the audio stream has no sample rate or no channels')
  const headerSeconds = headerDuration(probe, audio)
  const refusal = audioLimitFailure(
    {
      streams: streams.length,
      channels,
      ...(Number.isFinite(headerSeconds) ? { durationSeconds: headerSeconds } : {}),
    },
    limits
  )
  if (refusal) throw refusal
  const picture = streams.find(
    (s) => s.codec_type === 'video' && s.disposition?.attached_pic && COVER_CODECS.has(s.codec_name ?? '')
  )
  const size = Number(probe.format?.size)
  return {
    demuxer,
    index: audio.index,
    codec: audio.codec_name,
    sampleRate,
    channels,
    bitrate:
      Number(probe.format?.bit_rate) || (headerSeconds > 0 && size > 0 ? Math.round((size * 8) / headerSeconds) : 0),
    headerSeconds,
    tags: readTags(probe.format?.tags, audio.tags),
    cover:
      picture?.width && picture.height ? { index: picture.index, width: picture.width, height: picture.height } : null,
  }
}

/**
 * The duration the headers give: the audio stream's own figures (its duration, Matroska's DURATION tag), the smallest
 * credible one, capped by the container's; the container's alone when the stream says nothing. NaN when none does.
 */
export function headerDuration(probe: FfprobeOutput, audio: FfprobeStream): number {
  const positive = (d: number) => Number.isFinite(d) && d > 0
  const own = [Number(audio.duration), parseClock(audio.tags?.DURATION ?? audio.tags?.duration)].filter(positive)
  const container = Number(probe.format?.duration)
  if (own.length) return positive(container) ? Math.min(...own, container) : Math.min(...own)
  return positive(container) ? container : NaN
}

/** The tags a player shows, from the container's and the audio stream's (Ogg keeps Vorbis comments on the stream). */
const TAG_KEYS: Record<keyof AudioMetadata['tags'], string[]> = {
  title: ['title'],
  artist: ['artist', 'album_artist'],
  album: ['album'],
  track: ['track', 'tracknumber'],
  date: ['date', 'year'],
  genre: ['genre'],
}

/** Tags by name, whatever their case (ID3 and MP4 give `title`, Vorbis comments `TITLE`); control characters dropped. */
export function readTags(...sources: (Record<string, string> | undefined)[]): AudioMetadata['tags'] {
  const all = new Map<string, string>()
  for (const source of sources)
    for (const [key, value] of Object.entries(source ?? {}))
      if (!all.has(key.toLowerCase())) all.set(key.toLowerCase(), value)
  const tags: AudioMetadata['tags'] = {}
  for (const [name, keys] of Object.entries(TAG_KEYS) as [keyof AudioMetadata['tags'], string[]][]) {
    for (const key of keys) {
      // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
      const value = all
        .get(key)
        ?.replace(/[\u0000-\u001f\u007f]/g, ' ')
        .trim()
      if (value) {
        tags[name] = value.slice(0, 1000)
        break
      }
    }
  }
  return tags
}

// ── Core: loudness ─────────────────────────────────────────────────────────────────────────────────────────────

export interface Loudness {
  /** LUFS; null when no block passed the gate (silence, or under 400 ms). */
  integratedLufs: number | null
  /** dBTP; null when every sample is zero. */
  truePeakDb: number | null
  rangeLu: number
}

/** The summary the `ebur128` filter logs when it ends, from ffmpeg's stderr lines. Pure. */
export function parseEbur128(lines: readonly string[]): Loudness | null {
  const summary = lines.findLastIndex((l) => /\bSummary:\s*$/.test(l))
  if (summary < 0) return null
  const value = (pattern: RegExp) => {
    for (const line of lines.slice(summary)) {
      const m = pattern.exec(line)
      if (m) return m[1] === '-inf' ? -Infinity : m[1] === 'inf' ? Infinity : Number(m[1])
    }
    return NaN
  }
  const integrated = value(/^\s*I:\s+(-?inf|-?[\d.]+) LUFS/)
  const peak = value(/^\s*Peak:\s+(-?inf|-?[\d.]+) dBFS/)
  const range = value(/^\s*LRA:\s+(-?inf|-?[\d.]+) LU/)
  if (Number.isNaN(integrated) || Number.isNaN(peak)) return null
  return {
    // ebur128 reports its absolute gate (-70) when nothing passed it.
    integratedLufs: integrated > -70 ? integrated : null,
    truePeakDb: Number.isFinite(peak) ? peak : null,
    rangeLu: Number.isFinite(range) && range > 0 ? range : 0,
  }
}

export type LoudnessTarget = Required<NonNullable<AudioRequest['recipe']['loudness']>>

/** The recipe's normalisation with its defaults filled in, or null when it asks for none. */
export function loudnessTarget(recipe: AudioRequest['recipe']): LoudnessTarget | null {
  return recipe.loudness ? { ...AUDIO_LOUDNESS_DEFAULTS, ...recipe.loudness } : null
}

/**
 * The gain the outputs get, dB (one decimal, as ebur128 measures): to the target, but never past the ceiling (less
 * the codecs' headroom) nor above the maximum; 0 for silence or without a target. Pure.
 */
export function loudnessGain(measured: Loudness, target: LoudnessTarget | null): number {
  if (!target || measured.integratedLufs === null) return 0
  const toTarget = target.targetLufs - measured.integratedLufs
  const toCeiling =
    measured.truePeakDb === null ? Infinity : target.truePeakDb - CODEC_HEADROOM_DB - measured.truePeakDb
  return Math.round(Math.min(toTarget, toCeiling, target.maxGainDb) * 10) / 10 || 0
}

// ── Core: peaks ────────────────────────────────────────────────────────────────────────────────────────────────

/** The BBC audiowaveform JSON format, version 2 (its doc/DataFormat.md), as the peaks output carries it. */
export interface WaveformJson {
  version: 2
  channels: 1
  sample_rate: number
  samples_per_pixel: number
  bits: 8
  length: number
  data: number[]
}

/** Samples a pixel covers at the least: audiowaveform's own default zoom, fine enough for a 0.5 s clip. */
export const PEAKS_BASE_SAMPLES = 256

/** Samples per pixel for `samples`: a multiple of PEAKS_BASE_SAMPLES, the smallest giving at most `maxPairs`. Pure. */
export function samplesPerPixel(samples: number, maxPairs: number): number {
  return PEAKS_BASE_SAMPLES * Math.max(1, Math.ceil(samples / PEAKS_BASE_SAMPLES / maxPairs))
}

/**
 * Min/max of signed 16-bit little-endian mono PCM per PEAKS_BASE_SAMPLES samples, fed as it arrives: a 4-hour file
 * is 1.4 GB of PCM but 2.7 million pairs here (11 MB), merged into the final pixels at the end.
 */
export class PeakCollector {
  samples = 0
  private mins = new Int16Array(1024)
  private maxs = new Int16Array(1024)
  private odd: number | null = null

  push(chunk: Uint8Array): void {
    let bytes = chunk
    if (this.odd !== null && bytes.length) {
      this.take(new Int16Array([(((bytes[0]! << 8) | this.odd) << 16) >> 16]))
      bytes = bytes.subarray(1)
      this.odd = null
    }
    const whole = bytes.length & ~1
    if (whole < bytes.length) this.odd = bytes[whole]!
    // s16le read as the platform's Int16Array: every platform Bun runs on is little-endian. A chunk at an odd offset
    // is copied to be aligned.
    const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice(0, whole)
    this.take(new Int16Array(aligned.buffer, aligned.byteOffset, whole / 2))
  }

  /** Folds samples into their buckets: one pass, the bucket's min and max kept in locals. */
  private take(values: Int16Array): void {
    let at = 0
    while (at < values.length) {
      const bucket = Math.floor(this.samples / PEAKS_BASE_SAMPLES)
      if (bucket >= this.mins.length) this.grow()
      const offset = this.samples % PEAKS_BASE_SAMPLES
      const end = Math.min(values.length, at + PEAKS_BASE_SAMPLES - offset)
      let min = offset === 0 ? values[at]! : this.mins[bucket]!
      let max = offset === 0 ? values[at]! : this.maxs[bucket]!
      for (let i = at; i < end; i++) {
        const value = values[i]!
        if (value < min) min = value
        else if (value > max) max = value
      }
      this.mins[bucket] = min
      this.maxs[bucket] = max
      this.samples += end - at
      at = end
    }
  }

  private grow(): void {
    const double = (a: Int16Array) => {
      const b = new Int16Array(a.length * 2)
      b.set(a)
      return b
    }
    this.mins = double(this.mins)
    this.maxs = double(this.maxs)
  }

  /** The waveform at most `maxPairs` wide, its values scaled by `gainDb` (what the outputs got) into 8 bits. */
  waveform(maxPairs: number, gainDb: number, sampleRate = OUTPUT_SAMPLE_RATE): WaveformJson {
    const spp = samplesPerPixel(this.samples, maxPairs)
    const per = spp / PEAKS_BASE_SAMPLES
    const buckets = Math.ceil(this.samples / PEAKS_BASE_SAMPLES)
    const length = Math.ceil(this.samples / spp)
    const scale = 10 ** (gainDb / 20) / 256
    const eight = (v: number) => Math.max(-128, Math.min(127, Math.round(v * scale)))
    const data: number[] = []
    for (let pixel = 0; pixel < length; pixel++) {
      let min = 0
      let max = 0
      for (let b = pixel * per; b < Math.min(buckets, (pixel + 1) * per); b++) {
        min = Math.min(min, this.mins[b]!)
        max = Math.max(max, this.maxs[b]!)
      }
      data.push(eight(min), eight(max))
    }
    return { version: 2, channels: 1, sample_rate: sampleRate, samples_per_pixel: spp, bits: 8, length, data }
  }
}

// ── Core: decoding ─────────────────────────────────────────────────────────────────────────────────────────────

/** Options before `-i` for every run on the source: its one demuxer, and `-t` one second past the limit. */
function sourceInput(probed: ProbedAudio, limits: Pick<Limits, 'maxSeconds'>, level = 'error'): string[] {
  return [
    '-nostdin',
    '-hide_banner',
    '-v',
    level,
    '-stats',
    ...inputGuard(probed.demuxer),
    '-t',
    String(limits.maxSeconds + 1),
  ]
}

/** The source's audio as the outputs carry it: mono stays mono, everything else becomes stereo (LFE dropped). */
const layoutOf = (probed: ProbedAudio) => (probed.channels === 1 ? 'mono' : 'stereo')

/**
 * The analysis run: the audio stream alone (`0:<index>`: a cover is never decoded) mixed as the outputs will be,
 * measured by `ebur128` (integrated, range, true peak) and, at 48 kHz with its channels averaged, written as 16-bit
 * PCM to stdout for the waveform and the decoded length.
 */
export function analysisCommand(file: string, probed: ProbedAudio, limits: Pick<Limits, 'maxSeconds'>): FfmpegRun {
  const mono = probed.channels === 1 ? 'anull' : 'pan=mono|c0=0.5*c0+0.5*c1'
  return {
    input: file,
    // info: the ebur128 summary is logged at that level (its per-frame lines are moved to verbose).
    inputOptions: sourceInput(probed, limits, 'info'),
    filterGraph:
      `[0:${probed.index}]aformat=channel_layouts=${layoutOf(probed)},asplit=2[m][p];` +
      '[m]ebur128=peak=true:framelog=verbose[e];' +
      `[p]aresample=${OUTPUT_SAMPLE_RATE},${mono},aformat=sample_fmts=s16:channel_layouts=mono[pcm]`,
    outputs: [
      { file: '-', options: ['-map', '[e]', '-f', 'null'] },
      { file: 'pipe:1', options: ['-map', '[pcm]', '-f', 's16le'] },
    ],
  }
}

export interface Analysis {
  loudness: Loudness
  peaks: PeakCollector
  /** What decoded, in seconds (from the PCM's length). */
  durationSeconds: number
  /** "Error while decoding" lines for the audio stream. */
  decodeErrors: number
}

/** Runs the analysis; `onFraction` gets the share of the header's duration done. */
export async function analyse(
  file: string,
  probed: ProbedAudio,
  limits: Pick<Limits, 'maxSeconds'>,
  options: { signal: AbortSignal; onFraction?: (fraction: number) => void }
): Promise<Analysis> {
  const peaks = new PeakCollector()
  const lines: string[] = []
  let decodeErrors = 0
  const errorLine = new RegExp(`^Error while decoding stream #0:${probed.index}\\b`)
  await runFfmpeg(analysisCommand(file, probed, limits), {
    signal: options.signal,
    what: 'audio',
    onTime: (seconds) => probed.headerSeconds > 0 && options.onFraction?.(Math.min(1, seconds / probed.headerSeconds)),
    onStdout: (chunk) => peaks.push(chunk),
    onLine: (line) => {
      if (errorLine.test(line)) decodeErrors++
      // The summary comes last: keep a tail long enough for it.
      if (lines.push(line) > 40) lines.shift()
    },
  })
  const loudness = parseEbur128(lines)
  if (!loudness) throw new Error(`ffmpeg's ebur128 filter printed no summary: ${lines.slice(-3).join('; ')}`)
  return { loudness, peaks, durationSeconds: peaks.samples / OUTPUT_SAMPLE_RATE, decodeErrors }
}

/**
 * Whether the audio stream's own decoding shows damage; null when it does not. The audio is decoded alone, so a
 * cover picture's trouble never counts. Two signs:
 * - A decode error anywhere, except on a last packet of under 4 bytes: less than any MPEG audio or ADTS frame
 *   header, so stray bytes after the last frame that the demuxer handed on, not audio (the corpus' valid MP3 with a
 *   cover ends with one such byte: ffmpeg logs an error and exits 0). A truncated last frame (the corpus' ADTS file:
 *   171 of its bytes, also exit 0) is damage.
 * - Less audio than an indexed container says it holds (MP4, FLAC, WAV, Ogg, Matroska know their length), by more
 *   than 1 s or 5%: data that stops early decodes without an error (an MP3 cut mid-frame does). An MP3 knows its
 *   length when its first frame is a Xing, Info or VBRI header (LAME writes one); without, and for ADTS, the length
 *   is an estimate from the bit rate, which a VBR file misses by far: not judged so.
 */
export async function decodeDamage(
  file: string,
  probed: ProbedAudio,
  analysis: Pick<Analysis, 'decodeErrors' | 'durationSeconds'>,
  signal: AbortSignal
): Promise<string | null> {
  if (analysis.decodeErrors > 0) {
    const strayTail = analysis.decodeErrors === 1 && (await lastPacketBytes(file, probed, signal)) < 4
    if (!strayTail) return `${analysis.decodeErrors} of its frames could not be decoded`
  }
  const expected = probed.headerSeconds
  const estimated = probed.demuxer === 'aac' || (probed.demuxer === 'mp3' && !mp3KnowsLength(file))
  if (!estimated && expected > 0 && analysis.durationSeconds < expected - Math.max(1, expected * 0.05)) {
    return `only ${analysis.durationSeconds.toFixed(1)} s of its ${expected.toFixed(1)} s could be decoded`
  }
  return null
}

/** Whether an MP3's first frame, after any ID3v2 tag, is a Xing, Info or VBRI header: a frame count, so a length. */
export function mp3KnowsLength(file: string): boolean {
  const fd = openSync(file, 'r')
  try {
    const head = Buffer.alloc(10)
    readSync(fd, head, 0, 10, 0)
    // ID3v2: a syncsafe size (7 bits a byte) after "ID3", version and flags; a footer adds 10 bytes.
    const tag =
      head.toString('latin1', 0, 3) === 'ID3'
        ? 10 + ((head[6]! << 21) | (head[7]! << 14) | (head[8]! << 7) | head[9]!) + (head[5]! & 0x10 ? 10 : 0)
        : 0
    const frame = Buffer.alloc(200)
    const read = readSync(fd, frame, 0, frame.length, tag)
    return /Xing|Info|VBRI/.test(frame.toString('latin1', 0, read))
  } finally {
    closeSync(fd)
  }
}

/** The size of the audio stream's last packet, read by demuxing alone (no decoding). */
async function lastPacketBytes(file: string, probed: ProbedAudio, signal: AbortSignal): Promise<number> {
  const args = ['-v', 'error', ...inputGuard(probed.demuxer), '-select_streams', String(probed.index)]
  args.push('-show_entries', 'packet=size', '-of', 'csv=p=0', file)
  const { code, stdout } = await spawnCapture('ffprobe', args, signal)
  const last = stdout.trimEnd().split('\n').at(-1)
  return code === 0 && last ? Number(last) : Infinity
}

/** An encoding the recipe asks for, with its file. */
export interface Encoding {
  name: string
  format: 'm4a' | 'webm'
  bitrate: number
  file: string
}

/**
 * The encoding run: one decode of the audio stream, the gain as a linear `volume`, split to each encoding. Every
 * output is 48 kHz, mono or stereo, without the source's tags or chapters; the M4A has its moov first.
 */
export function encodeCommand(
  file: string,
  probed: ProbedAudio,
  encodings: Encoding[],
  gainDb: number,
  limits: Pick<Limits, 'maxSeconds'>
): FfmpegRun {
  const gain = gainDb !== 0 ? `,volume=${gainDb}dB` : ''
  const labels = encodings.map((_, i) => `[o${i}]`)
  const head = `[0:${probed.index}]aformat=channel_layouts=${layoutOf(probed)}${gain}`
  const graph = encodings.length === 1 ? `${head}${labels[0]}` : `${head},asplit=${encodings.length}${labels.join('')}`
  const common = ['-ar', String(OUTPUT_SAMPLE_RATE), '-map_metadata', '-1', '-map_chapters', '-1']
  return {
    input: file,
    inputOptions: sourceInput(probed, limits),
    filterGraph: graph,
    outputs: encodings.map((e, i) => ({
      file: e.file,
      options:
        e.format === 'm4a'
          ? [
              '-map',
              labels[i]!,
              '-c:a',
              'aac',
              '-b:a',
              `${e.bitrate}k`,
              ...common,
              '-movflags',
              '+faststart',
              '-f',
              'ipod',
            ]
          : ['-map', labels[i]!, '-c:a', 'libopus', '-b:a', `${e.bitrate}k`, ...common, '-f', 'webm'],
    })),
  }
}

/** An output's true peak, dBTP (-Infinity when silent), measured as the source was. */
async function outputTruePeak(encoding: Encoding, signal: AbortSignal): Promise<number> {
  const lines: string[] = []
  await runFfmpeg(
    {
      input: encoding.file,
      inputOptions: [
        '-nostdin',
        '-hide_banner',
        '-v',
        'info',
        ...inputGuard(encoding.format === 'm4a' ? 'mov' : 'matroska'),
      ],
      filterGraph: '[0:a:0]ebur128=peak=true:framelog=verbose[e]',
      outputs: [{ file: '-', options: ['-map', '[e]', '-f', 'null'] }],
    },
    { signal, onLine: (line) => lines.push(line) > 40 && lines.shift() }
  )
  const measured = parseEbur128(lines)
  if (!measured) throw new Error(`ffmpeg's ebur128 filter printed no summary for ${encoding.name}`)
  return measured.truePeakDb ?? -Infinity
}

/** The duration of a finished output, read back rather than assumed. */
async function outputSeconds(file: string, demuxer: string, signal: AbortSignal): Promise<number> {
  const probe = await ffprobe(file, demuxer, signal)
  const audio = probe.streams?.find((s) => s.codec_type === 'audio')
  if (!audio || probe.streams!.length !== 1) throw new Error(`ffmpeg wrote ${file} with other than one audio stream`)
  return round3(Number(probe.format?.duration) || 0)
}

// ── Core: cover ────────────────────────────────────────────────────────────────────────────────────────────────

/** The magic bytes of the pictures the cover is made from: what sharp is given is checked, not the codec's name. */
const isPicture = (b: Uint8Array) =>
  (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) ||
  (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) ||
  (String.fromCharCode(...b.subarray(0, 4)) === 'RIFF' && String.fromCharCode(...b.subarray(8, 12)) === 'WEBP') ||
  String.fromCharCode(...b.subarray(0, 4)) === 'GIF8'

/**
 * The embedded picture as WebP inside `box`, never upscaled, or null when it cannot be read (a broken picture does
 * not fail a good recording). Copied out of the container as it is stored (`-c copy`), then read by sharp with the
 * image processor's guards: a pixel limit before decoding, and `failOn: 'warning'` for truncated pictures.
 */
export async function makeCover(
  file: string,
  probed: ProbedAudio,
  box: { width: number; height: number },
  workDir: string,
  options: { signal: AbortSignal; timeoutSeconds: number }
): Promise<{ data: Buffer; width: number; height: number } | null> {
  const cover = probed.cover
  if (!cover || cover.width * cover.height > COVER_MAX_PIXELS) return null
  const raw = join(workDir, '.cover')
  await runFfmpeg(
    {
      input: file,
      inputOptions: ['-nostdin', '-hide_banner', '-v', 'error', ...inputGuard(probed.demuxer)],
      outputs: [
        {
          file: raw,
          options: ['-map', `0:${cover.index}`, '-c', 'copy', '-frames:v', '1', '-f', 'image2', '-update', '1'],
        },
      ],
    },
    { signal: options.signal, what: 'cover' }
  ).catch((error) => {
    if (!(error instanceof JobError)) throw error
  })
  let bytes: Buffer
  try {
    bytes = readFileSync(raw)
  } catch {
    return null
  }
  rmSync(raw, { force: true })
  if (!isPicture(bytes)) return null
  try {
    const { data, info } = await untilAborted(
      sharp(bytes, { limitInputPixels: COVER_MAX_PIXELS, failOn: 'warning', sequentialRead: true })
        .rotate()
        .resize(box.width, box.height, { fit: 'inside', withoutEnlargement: true })
        .webp({ quality: 80 })
        .timeout({ seconds: options.timeoutSeconds })
        .toBuffer({ resolveWithObject: true }),
      options.signal
    )
    return { data, width: info.width, height: info.height }
  } catch (error) {
    if (options.signal.aborted) throw error
    return null
  }
}

const round3 = (n: number) => Math.round(n * 1000) / 1000

// ── Job ────────────────────────────────────────────────────────────────────────────────────────────────────────

/** One request's outputs. Bad audio throws a JobError (a `failed` result); S3 or disk trouble is a fault, retried. */
export async function handleAudioJob(
  request: AudioRequest,
  job: JobContext,
  limits: Limits
): Promise<JobOutput<AudioMetadata>> {
  const { recipe } = request
  const { signal } = job
  const fileOf = (name: string, format: OutputFormat) => join(job.workDir, outputFileName(name, format))
  const original = await fetchOriginal(job, request.source, { maxBytes: limits.maxBytes, variable: 'MAX_AUDIO_BYTES' })

  job.report('processing', 5)
  const probed = await probeAudio(original, request.source.format, limits, signal)
  const started = Date.now()
  // Two runs over the audio: the analysis is about 40% of the work, the encoding the rest.
  const progress = (from: number, share: number) => (fraction: number) => {
    const done = from + share * fraction
    job.report('processing', 5 + 85 * done, etaSeconds(done, (Date.now() - started) / 1000))
  }
  const coverBox = recipe.cover
  // The cover (a copy and a resize) runs beside the analysis.
  const [analysis, cover] = await Promise.all([
    analyse(original, probed, limits, { signal, onFraction: progress(0, 0.4) }),
    coverBox ? makeCover(original, probed, coverBox, job.workDir, { signal, ...limits }) : null,
  ])
  const damage = await decodeDamage(original, probed, analysis, signal)
  if (damage) throw new JobError('invalid_media', `the audio is truncated or damaged: ${damage}`)
  if (analysis.durationSeconds > limits.maxSeconds)
    throw overLimit('the audio decodes to more than its header said', 'MAX_AUDIO_SECONDS', `${limits.maxSeconds} s`)
  if (analysis.peaks.samples === 0) throw new JobError('invalid_media', 'no audio could be decoded')

  const encodings: Encoding[] = [
    ...(recipe.aac
      ? [
          {
            name: recipe.aac.name,
            format: 'm4a' as const,
            bitrate: recipe.aac.bitrate ?? 128,
            file: fileOf(recipe.aac.name, 'm4a'),
          },
        ]
      : []),
    ...(recipe.opus
      ? [
          {
            name: recipe.opus.name,
            format: 'webm' as const,
            bitrate: recipe.opus.bitrate ?? 96,
            file: fileOf(recipe.opus.name, 'webm'),
          },
        ]
      : []),
  ]
  const target = loudnessTarget(recipe)
  let gainDb = loudnessGain(analysis.loudness, target)
  const encode = (gain: number, from: number) =>
    runFfmpeg(encodeCommand(original, probed, encodings, gain, limits), {
      signal,
      what: 'audio',
      onTime: (seconds) => progress(from, 0.9 - from)(Math.min(1, seconds / analysis.durationSeconds)),
    })
  if (encodings.length) {
    await encode(gainDb, 0.4)
    // The encoders' overshoot is checked where it could cross the ceiling, and the gain lowered by it once.
    const peak = analysis.loudness.truePeakDb
    if (target && peak !== null && peak + gainDb > target.truePeakDb - CODEC_OVERSHOOT_DB) {
      const peaks = await Promise.all(encodings.map((e) => outputTruePeak(e, signal)))
      const over = Math.max(...peaks) - target.truePeakDb
      // ebur128 prints one decimal: a reading at the ceiling may be up to 0.05 dB over it, so it is lowered too.
      if (over >= 0) {
        gainDb = Math.round((gainDb - over - 0.1) * 10) / 10
        await encode(gainDb, 0.7)
      }
    }
  }

  const items: {
    name: string
    format: OutputFormat
    body: { file: string } | Uint8Array
    info: Partial<OutputInfo>
  }[] = []
  const durations = await Promise.all(
    encodings.map((e) => outputSeconds(e.file, e.format === 'm4a' ? 'mov' : 'matroska', signal))
  )
  encodings.forEach((e, i) =>
    items.push({ name: e.name, format: e.format, body: { file: e.file }, info: { durationSeconds: durations[i] } })
  )
  if (recipe.peaks) {
    const waveform = analysis.peaks.waveform(recipe.peaks.maxPairs ?? AUDIO_PEAKS_DEFAULT_PAIRS, gainDb)
    const file = fileOf(recipe.peaks.name, 'json')
    writeFileSync(file, JSON.stringify(waveform))
    const durationSeconds = round3((waveform.length * waveform.samples_per_pixel) / waveform.sample_rate)
    items.push({ name: recipe.peaks.name, format: 'json', body: { file }, info: { durationSeconds } })
  }
  if (recipe.cover && cover)
    items.push({
      name: recipe.cover.name,
      format: 'webp',
      body: cover.data,
      info: { width: cover.width, height: cover.height },
    })

  job.report('uploading', 90)
  let uploaded = 0
  const outputs = await Promise.all(
    items.map(async (item): Promise<OutputInfo> => {
      const stored = await job.putOutput(item.name, item.format, item.body)
      job.report('uploading', 90 + (10 * ++uploaded) / items.length)
      return { name: item.name, ...stored, ...item.info }
    })
  )
  const { loudness } = analysis
  return {
    outputs,
    metadata: {
      container: request.source.format,
      durationSeconds: round3(analysis.durationSeconds),
      sampleRate: probed.sampleRate,
      channels: probed.channels,
      codec: probed.codec,
      bitrate: probed.bitrate,
      tags: probed.tags,
      loudness: { ...loudness, silent: loudness.integratedLufs === null, gainDb },
      hasCover: coverBox ? cover !== null : probed.cover !== null,
    },
  }
}

// ── Wiring ─────────────────────────────────────────────────────────────────────────────────────────────────────

export function start(config: Config): Promise<Processor> {
  sharp.cache(false) // one cover per job, never re-read
  return startProcessor({
    settings: config.runtime,
    connect: amqp.connect,
    // The cover is made only when the file has one, but a cancel removes every output the recipe names.
    outputs: ({ recipe }) => audioOutputsOf(recipe),
    handle: (request, job) => handleAudioJob(request, job, config.limits),
  })
}

// ── Entry ──────────────────────────────────────────────────────────────────────────────────────────────────────

if (import.meta.main) await runProcessor('audio', () => readConfig(process.env), start)
