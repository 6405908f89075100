/**
 * ffmpeg and ffprobe as every processor that decodes media runs them: an argv (no shell), local files only, held to
 * the one demuxer of the container the backend sniffed, SIGKILLed when the job's signal aborts, and a failure sorted
 * into the file's fault (a JobError) or ours (an Error, retried). Here rather than in each processor because the video
 * and the audio processor need the same guard: a playlist or concat script posing as media must open nothing in
 * either (reliability.md, section 3.1).
 */
import { spawn } from 'node:child_process'
import { JobError } from './errors.ts'

/**
 * The ffmpeg demuxer for each container a backend may sniff (PROTOCOL.md's `source.format`): ffmpeg is never allowed
 * to pick one by probing. Each processor accepts its own formats (`demuxersOf`); an MP4 or Matroska file holding only
 * sound comes to the audio processor as `mp4`/`webm`/`mkv`, read by the same demuxer as a video.
 */
const DEMUXERS: Readonly<Record<string, string>> = {
  mp4: 'mov',
  mov: 'mov',
  m4a: 'mov',
  '3gp': 'mov',
  webm: 'matroska',
  mkv: 'matroska',
  avi: 'avi',
  mpegts: 'mpegts',
  flv: 'flv',
  mp3: 'mp3',
  aac: 'aac',
  flac: 'flac',
  wav: 'wav',
  ogg: 'ogg',
  opus: 'ogg',
}

/** The demuxer of each of `formats`, a processor's accepted containers. */
export function demuxersOf(formats: readonly string[]): ReadonlyMap<string, string> {
  return new Map(
    formats.map((format) => {
      const demuxer = DEMUXERS[format]
      if (!demuxer) throw new Error(`no demuxer is known for "${format}"`)
      return [format, demuxer]
    })
  )
}

/** Input options for every ffmpeg/ffprobe run: local files only, and only the one demuxer (no hls, concat, …). */
export const inputGuard = (demuxer: string) => [
  '-protocol_whitelist',
  'file',
  '-format_whitelist',
  demuxer,
  '-f',
  demuxer,
]

/** The part of ffprobe's `-show_format -show_streams` JSON the processors read. */
export interface FfprobeStream {
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
  sample_rate?: string
  color_transfer?: string
  color_primaries?: string
  color_space?: string
  color_range?: string
  disposition?: { attached_pic?: number }
  tags?: Record<string, string>
  side_data_list?: { side_data_type?: string; rotation?: number }[]
}
export interface FfprobeOutput {
  streams?: FfprobeStream[]
  format?: { duration?: string; bit_rate?: string; size?: string; tags?: Record<string, string> }
}

/** Runs ffprobe on a local file, held to one demuxer; a file it cannot read is `invalid_media`. */
export async function ffprobe(
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

/** Spawns a program with an argv (no shell) and collects its output; SIGKILLs it on abort. */
export function spawnCapture(program: string, args: string[], signal: AbortSignal) {
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

/** One ffmpeg run: one input, its options, an optional filter graph, and each output with its options. */
export interface FfmpegRun {
  input: string
  /** Options before `-i` (global options are fine here too), one argv entry each. */
  inputOptions: string[]
  filterGraph?: string
  /** `file` is a path, or `pipe:1` for what `onStdout` reads. */
  outputs: { file: string; options: string[] }[]
}

/** The argv of a run (what `runFfmpeg` executes), for running it bare: benchmarks compare the two. */
export function ffmpegArgv(run: FfmpegRun): string[] {
  return [
    ...run.inputOptions,
    '-i',
    run.input,
    ...(run.filterGraph ? ['-filter_complex', run.filterGraph] : []),
    ...run.outputs.flatMap((o) => [...o.options, '-y', o.file]),
  ]
}

export interface FfmpegOptions {
  signal: AbortSignal
  /** Seconds of the input done, from ffmpeg's `-stats` (`time=`). */
  onTime?: (seconds: number) => void
  /** Every other line ffmpeg writes to stderr (what its `-v` lets through). */
  onLine?: (line: string) => void
  /** What an output to `pipe:1` writes, as it comes: read it as a stream, never whole. */
  onStdout?: (chunk: Uint8Array) => void
  /** The media's kind in a refusal's words ("the audio could not be decoded"); default "video". */
  what?: string
}

/**
 * Runs ffmpeg with the argv of `run`. No shell and no wrapper (fluent-ffmpeg, archived upstream, built this same
 * argv): progress is read from the `time=` of `-stats`, never from a probe of the input run by someone else without
 * our whitelists. On abort ffmpeg is SIGKILLed and the promise rejects with the signal's reason.
 */
export function runFfmpeg(run: FfmpegRun, options: FfmpegOptions): Promise<void> {
  const { signal, onTime, onLine, onStdout } = options
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const child = spawn('ffmpeg', ffmpegArgv(run), { stdio: ['ignore', onStdout ? 'pipe' : 'ignore', 'pipe'] })
    const errors: string[] = []
    let pending = ''
    const line = (text: string) => {
      const time = /time=(\d+):(\d\d):(\d\d(?:\.\d+)?)/.exec(text)
      if (time) onTime?.(Number(time[1]) * 3600 + Number(time[2]) * 60 + Number(time[3]))
      else if (text.trim()) {
        onLine?.(text)
        if (errors.push(text) > 20) errors.shift()
      }
    }
    // Stats lines end in \r, log lines in \n.
    child.stderr!.on('data', (chunk) => {
      const parts = (pending + String(chunk)).split(/\r\n|\r|\n/)
      pending = parts.pop() ?? ''
      for (const part of parts) line(part)
    })
    if (onStdout) child.stdout!.on('data', (chunk: Uint8Array) => onStdout(chunk))
    const kill = () => child.kill('SIGKILL')
    signal.addEventListener('abort', kill, { once: true })
    child.once('error', (error) => {
      signal.removeEventListener('abort', kill)
      if (signal.aborted) return reject(signal.reason)
      reject(new Error(`ffmpeg could not be started (is ffmpeg installed?): ${error.message}`, { cause: error }))
    })
    child.once('close', (code, killedBy) => {
      signal.removeEventListener('abort', kill)
      if (pending) line(pending)
      if (signal.aborted) return reject(signal.reason)
      if (code === 0) return resolve()
      reject(
        ffmpegFailure(`ffmpeg exited with ${killedBy ?? `code ${code}`}`, errors.join('\n'), run.input, options.what)
      )
    })
  })
}

/** Turns a failed ffmpeg run into an outcome; only our own trouble (missing binary, disk, memory) is a fault. */
export function ffmpegFailure(exit: string, stderr: string, input: string, what = 'video'): Error {
  const text = stderr || exit
  if (/ENOENT|Cannot find ffmpeg|is not available|No space left|Cannot allocate memory|Permission denied/i.test(text))
    return new Error(`ffmpeg failed: ${tidyStderr(text, input)}`)
  if (/Decoder \(codec [^)]*\) not found|could not find codec parameters|Unsupported codec/i.test(text)) {
    return new JobError(
      'unsupported_format',
      `the ${what} uses a codec this processor cannot decode: ${tidyStderr(text, input)}`
    )
  }
  if (/exceeds specified max pixel count|max pixel/i.test(text)) {
    // `-max_pixels` caught a frame larger than the probe saw (a stream that grows mid-file).
    return new JobError('limit_exceeded', 'a frame of the video is larger than its header said, over MAX_VIDEO_PIXELS')
  }
  return new JobError('invalid_media', `the ${what} could not be decoded: ${tidyStderr(text, input)}`)
}

/** The last lines of ffmpeg's complaint, without addresses or our temp paths. */
export function tidyStderr(stderr: string, file: string): string {
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

/** `HH:MM:SS.nnnnnnnnn` (Matroska's DURATION tag) in seconds; NaN when it is not one. */
export const parseClock = (text: string | undefined) => {
  const m = /^(\d+):(\d\d):(\d\d(?:\.\d+)?)$/.exec(text ?? '')
  return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]) : NaN
}
