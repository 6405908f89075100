/**
 * Video fixtures made with the system ffmpeg into a temp dir (small testsrc clips, mostly ~2 s), and ffprobe for
 * reading outputs back. Each fixture carries the `format` the backend would have sniffed.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { Parser, type Manifest } from 'm3u8-parser'
import sharp from 'sharp'

export interface Fixture {
  file: string
  format: string
}

async function run(program: string, args: string[]): Promise<string> {
  const child = Bun.spawn([program, ...args], { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  if (code !== 0) throw new Error(`${program} ${args.join(' ')} exited with ${code}: ${stderr.trim()}`)
  return stdout
}

const ffmpeg = (args: string[]) => run('ffmpeg', ['-nostdin', '-hide_banner', '-v', 'error', '-y', ...args])
const testsrc = (size: string, seconds = 2, pattern = 'testsrc') => [
  '-f',
  'lavfi',
  '-i',
  `${pattern}=size=${size}:rate=30:duration=${seconds}`,
]
const sine = (seconds = 2) => ['-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000:duration=${seconds}`]
const x264 = ['-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p']

export interface VideoFixtures {
  dir: string
  /** 320×240 H.264 + AAC MP4 (moov at the end), tagged with a GPS location. */
  withAudio: Fixture
  /** 426×240 H.264 MP4 without audio. */
  silent: Fixture
  /** `withAudio` with a display matrix that turns it portrait (displayed 240×320). */
  rotated: Fixture
  /** `silent` as an MPEG-TS segment: what an HLS playlist would play if ffmpeg let it. */
  segment: Fixture
  /** 161×121 MPEG-4 part 2 in AVI (odd sides). */
  odd: Fixture
  /** 320×180 HEVC Main 10 tagged HLG/BT.2020 (HDR). */
  hdr: Fixture
  /** 320×180 VP9 profile 2 (10-bit) + Opus in WebM. */
  vp9: Fixture
  /** 320×240 H.264 fading in from black over its first second. */
  fadeIn: Fixture
  /** 1280×720 10 s MPEG-4: takes seconds to transcode, for progress and the wall-clock limit. */
  long: Fixture
  /** 480×270 10 s H.264 + AAC: several HLS segments, cheaply. */
  tenSeconds: Fixture
  /** 320×240 0.5 s H.264 + AAC: shorter than one HLS segment and one storyboard interval. */
  halfSecond: Fixture
  /** 320×240 H.264, ~6 s of a 60 fps source with frames dropped unevenly (variable frame rate, 0.7 s gaps). */
  vfr: Fixture
  /** `withAudio` with moov at the front, cut in half: probes fine, data stops early. */
  truncatedData: Fixture
  /** `withAudio` cut in half: the moov atom (at the end) is missing. */
  truncatedHeader: Fixture
  /** A text file claimed to be an MP4. */
  text: Fixture
  /** AAC audio with a PNG cover picture, in MP4 (M4A): no real video stream. */
  audioWithCover: Fixture
  remove(): void
}

/** Makes every fixture in a fresh temp dir (about a second on two cores). */
export async function makeVideoFixtures(): Promise<VideoFixtures> {
  const dir = mkdtempSync(join(tmpdir(), 'media-test-videos-'))
  const path = (name: string) => join(dir, name)
  const fixture = (name: string, format: string): Fixture => ({ file: path(name), format })

  await Promise.all([
    ffmpeg([
      ...testsrc('320x240'),
      ...sine(),
      ...x264,
      '-c:a',
      'aac',
      '-shortest',
      '-metadata',
      'location=+48.8584+002.2945/',
      path('with-audio.mp4'),
    ]),
    ffmpeg([...testsrc('426x240', 2, 'testsrc2'), ...x264, path('silent.mp4')]),
    ffmpeg([...testsrc('320x240', 2, 'testsrc2'), '-vf', 'fade=t=in:st=0:d=1', ...x264, path('fade-in.mp4')]),
    ffmpeg([...testsrc('161x121'), '-c:v', 'mpeg4', '-q:v', '5', path('odd.avi')]),
    ffmpeg([
      ...testsrc('320x180', 2, 'testsrc2'),
      ...[
        '-c:v',
        'libx265',
        '-preset',
        'ultrafast',
        '-x265-params',
        'log-level=error',
        '-pix_fmt',
        'yuv420p10le',
        '-tag:v',
        'hvc1',
      ],
      ...['-color_primaries', 'bt2020', '-color_trc', 'arib-std-b67', '-colorspace', 'bt2020nc'],
      path('hdr.mp4'),
    ]),
    ffmpeg([
      ...testsrc('320x180', 2, 'testsrc2'),
      ...sine(),
      ...[
        '-c:v',
        'libvpx-vp9',
        '-deadline',
        'realtime',
        '-cpu-used',
        '8',
        '-profile:v',
        '2',
        '-pix_fmt',
        'yuv420p10le',
        '-c:a',
        'libopus',
        '-shortest',
      ],
      path('vp9.webm'),
    ]),
    ffmpeg([...testsrc('1280x720', 10, 'testsrc2'), '-c:v', 'mpeg4', '-q:v', '20', path('long.mp4')]),
    ffmpeg([...testsrc('480x270', 10, 'testsrc2'), ...sine(10), ...x264, '-c:a', 'aac', '-shortest', path('ten.mp4')]),
    ffmpeg([
      ...testsrc('320x240', 0.5, 'testsrc2'),
      ...sine(0.5),
      ...x264,
      '-c:a',
      'aac',
      '-shortest',
      path('half.mp4'),
    ]),
    ffmpeg([
      '-f',
      'lavfi',
      '-i',
      'testsrc2=size=320x240:rate=60:duration=6',
      '-vf',
      "select='not(eq(mod(n,3),0)+eq(mod(n,7),0)+between(mod(n,200),50,90))'",
      '-fps_mode',
      'vfr',
      ...x264,
      path('vfr.mp4'),
    ]),
    ffmpeg(['-f', 'lavfi', '-i', 'color=c=red:size=64x64', '-frames:v', '1', path('cover.png')]),
  ])
  await Promise.all([
    ffmpeg([
      ...sine(),
      '-i',
      path('cover.png'),
      '-map',
      '0',
      '-map',
      '1',
      '-c:a',
      'aac',
      '-c:v',
      'png',
      '-disposition:v:0',
      'attached_pic',
      path('cover.m4a'),
    ]),
    ffmpeg(['-i', path('with-audio.mp4'), '-c', 'copy', '-metadata:s:v', 'rotate=90', path('rotated.mp4')]),
    ffmpeg(['-i', path('with-audio.mp4'), '-c', 'copy', '-movflags', '+faststart', path('faststart.mp4')]),
    ffmpeg(['-i', path('silent.mp4'), '-c', 'copy', '-f', 'mpegts', path('segment.ts')]),
  ])
  const whole = readFileSync(path('faststart.mp4'))
  writeFileSync(path('truncated-data.mp4'), whole.subarray(0, whole.byteLength / 2))
  const plain = readFileSync(path('with-audio.mp4'))
  writeFileSync(path('truncated-header.mp4'), plain.subarray(0, plain.byteLength / 2))
  writeFileSync(path('text.mp4'), 'This is not a video, just some text pretending to be one.\n'.repeat(20))

  return {
    dir,
    withAudio: fixture('with-audio.mp4', 'mp4'),
    silent: fixture('silent.mp4', 'mp4'),
    rotated: fixture('rotated.mp4', 'mp4'),
    segment: fixture('segment.ts', 'mpegts'),
    odd: fixture('odd.avi', 'avi'),
    hdr: fixture('hdr.mp4', 'mp4'),
    vp9: fixture('vp9.webm', 'webm'),
    fadeIn: fixture('fade-in.mp4', 'mp4'),
    long: fixture('long.mp4', 'mp4'),
    tenSeconds: fixture('ten.mp4', 'mp4'),
    halfSecond: fixture('half.mp4', 'mp4'),
    vfr: fixture('vfr.mp4', 'mp4'),
    truncatedData: fixture('truncated-data.mp4', 'mp4'),
    truncatedHeader: fixture('truncated-header.mp4', 'mp4'),
    text: fixture('text.mp4', 'mp4'),
    audioWithCover: fixture('cover.m4a', 'mp4'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  }
}

/** An HLS playlist whose one segment is `url`: ffmpeg would fetch it if it let the file be probed as HLS. */
export function hlsPlaylist(url: string): string {
  return ['#EXTM3U', '#EXT-X-VERSION:3', '#EXT-X-TARGETDURATION:2', '#EXTINF:2.0,', url, '#EXT-X-ENDLIST', ''].join(
    '\n'
  )
}

/** An ffconcat script that would make ffmpeg open `target` (a URL or a path). */
export function ffconcatScript(target: string): string {
  return `ffconcat version 1.0\nfile '${target}'\nduration 2\n`
}

export interface ProbedFile {
  format: { duration?: string; tags?: Record<string, string> }
  streams: {
    codec_type: string
    codec_name: string
    width?: number
    height?: number
    pix_fmt?: string
    color_transfer?: string
    duration?: string
    side_data_list?: { side_data_type?: string; rotation?: number }[]
    tags?: Record<string, string>
  }[]
}

/** ffprobe of a local file (fixtures and downloaded outputs are ours, so no whitelists needed). */
export async function probe(file: string): Promise<ProbedFile> {
  return JSON.parse(
    await run('ffprobe', ['-v', 'error', '-show_format', '-show_streams', '-of', 'json', file])
  ) as ProbedFile
}

/** Mean luma (0-255) of a picture's first frame, from ffmpeg's signalstats; black is ~16. */
export async function meanLuma(file: string): Promise<number> {
  const out = await run('ffprobe', [
    '-v',
    'error',
    '-f',
    'lavfi',
    `movie=${file},signalstats`,
    '-show_entries',
    'frame_tags=lavfi.signalstats.YAVG',
    '-of',
    'csv=p=0',
  ])
  return Number(out.trim().split('\n')[0])
}

/** The times (seconds) of the keyframes of a file's first video stream, decoding keyframes only. */
export async function keyframeTimes(file: string): Promise<number[]> {
  const out = await run('ffprobe', [
    '-v',
    'error',
    '-skip_frame',
    'nokey',
    '-select_streams',
    'v:0',
    '-show_entries',
    'frame=pts_time',
    '-of',
    'csv=p=0',
    file,
  ])
  return out
    .split('\n')
    .map((line) => line.split(',')[0]!.trim())
    .filter(Boolean)
    .map(Number)
}

/** An HLS playlist read with m3u8-parser (the parser hls players of the video.js family use). */
export function parseM3u8(file: string): Manifest {
  const parser = new Parser()
  parser.push(readFileSync(file, 'utf8'))
  parser.end()
  return parser.manifest
}

export interface HlsVariantRead {
  uri: string
  bandwidth: number
  averageBandwidth: number
  resolution?: { width: number; height: number }
  codecs: string
  frameRate?: number
  media: Manifest
  /** When each segment starts, in seconds from the first. */
  starts: number[]
  /** The sum of the EXTINFs. */
  seconds: number
  /** The highest bit rate of a segment lasting at least half the target duration (RFC 8216 counts such runs). */
  peak: number
}

/**
 * Reads an HLS master playlist and its media playlists from a local directory holding the outputs (named as their
 * keys end), and lists what is wrong with them: a player could not play it (ffmpeg reads every segment of every
 * variant and must exit 0), a media playlist that is not a finished VOD, a segment longer than the target duration,
 * a total more than one segment away from `durationSeconds`, a URI that is not a bare file name beside the
 * playlist, a BANDWIDTH under the measured peak, or segments that start at different times on different rungs.
 */
export async function checkHls(
  master: string,
  durationSeconds: number
): Promise<{ problems: string[]; master: Manifest; variants: HlsVariantRead[] }> {
  const problems: string[] = []
  const dir = dirname(master)
  const parsed = parseM3u8(master)
  if (!parsed.independentSegments) problems.push('the master lacks EXT-X-INDEPENDENT-SEGMENTS')
  const variants: HlsVariantRead[] = []
  for (const playlist of parsed.playlists ?? []) {
    const { uri, attributes } = playlist
    if (uri.includes('/')) problems.push(`the master names ${uri}, not a file beside it`)
    const media = parseM3u8(join(dir, basename(uri)))
    const where = `${uri}:`
    if (media.playlistType !== 'VOD') problems.push(`${where} not EXT-X-PLAYLIST-TYPE:VOD`)
    if (!media.endList) problems.push(`${where} no EXT-X-ENDLIST`)
    const target = media.targetDuration ?? 0
    if (target < 1) problems.push(`${where} EXT-X-TARGETDURATION ${target}`)
    const segments = media.segments
    if (segments.length === 0) problems.push(`${where} no segments`)
    const file = segments[0]?.map?.uri
    let seconds = 0
    let peak = 0
    const starts: number[] = []
    for (const segment of segments) {
      starts.push(Math.round(seconds * 1000) / 1000)
      seconds += segment.duration
      if (segment.duration > target) problems.push(`${where} a segment of ${segment.duration} s, over ${target} s`)
      if (!file || file.includes('/') || segment.uri !== file || segment.map?.uri !== file)
        problems.push(`${where} segment ${segment.uri} is not in the one media file ${file} beside it`)
      if (!segment.byterange) problems.push(`${where} segment without EXT-X-BYTERANGE`)
      else if (segment.duration >= target / 2) peak = Math.max(peak, (segment.byterange.length * 8) / segment.duration)
    }
    if (Math.abs(seconds - durationSeconds) > target)
      problems.push(`${where} its segments last ${seconds} s, the video ${durationSeconds} s`)
    const bandwidth = Number(attributes.BANDWIDTH)
    if (!(bandwidth >= peak)) problems.push(`${where} BANDWIDTH ${bandwidth} is under the peak ${peak}`)
    variants.push({
      uri,
      bandwidth,
      averageBandwidth: Number(attributes['AVERAGE-BANDWIDTH']),
      resolution: attributes.RESOLUTION,
      codecs: String(attributes.CODECS),
      frameRate: attributes['FRAME-RATE'],
      media,
      starts,
      seconds,
      peak,
    })
  }
  const starts = new Set(variants.map((v) => v.starts.join(',')))
  if (starts.size > 1) problems.push(`segments start at different times on different rungs: ${[...starts].join(' / ')}`)
  const child = Bun.spawn(
    ['ffmpeg', '-nostdin', '-v', 'error', '-protocol_whitelist', 'file', '-i', master, '-map', '0', '-f', 'null', '-'],
    { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' }
  )
  const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
  if (code !== 0 || stderr.trim()) problems.push(`ffmpeg could not play it (${code}): ${stderr.trim().slice(0, 500)}`)
  return { problems, master: parsed, variants }
}

/**
 * Reads a storyboard (its WebVTT and the sprite beside it) and lists what is wrong: not WebVTT, cues that do not
 * run from 0 to `durationSeconds` without gaps, a region outside the sprite (its size read with sharp).
 */
export async function checkStoryboard(
  vtt: string,
  durationSeconds: number
): Promise<{ problems: string[]; cues: { start: number; end: number; sprite: string; xywh: number[] }[] }> {
  const problems: string[] = []
  const text = readFileSync(vtt, 'utf8')
  if (!text.startsWith('WEBVTT\n\n')) problems.push('it does not start with WEBVTT and a blank line')
  const seconds = (t: string) => {
    const m = /^(\d\d):(\d\d):(\d\d\.\d{3})$/.exec(t)
    if (!m) problems.push(`a time ${t} is not HH:MM:SS.mmm`)
    return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]) : Number.NaN
  }
  const cues = text
    .replace(/^WEBVTT\n\n/, '')
    .trim()
    .split('\n\n')
    .map((block) => {
      const [times = '', target = ''] = block.split('\n')
      const [start = '', end = ''] = times.split(' --> ')
      const [sprite = '', xywh = ''] = target.split('#xywh=')
      return { start: seconds(start), end: seconds(end), sprite, xywh: xywh.split(',').map(Number) }
    })
  const sprites = new Set(cues.map((c) => c.sprite))
  if (sprites.size !== 1 || [...sprites][0]!.includes('/')) problems.push(`cues point at ${[...sprites].join(', ')}`)
  const { width = 0, height = 0 } = await sharp(join(dirname(vtt), [...sprites][0]!)).metadata()
  if (cues[0]?.start !== 0) problems.push(`the first cue starts at ${cues[0]?.start}`)
  if (Math.abs((cues.at(-1)?.end ?? 0) - durationSeconds) > 0.0015)
    problems.push(`the last cue ends at ${cues.at(-1)?.end}, the video at ${durationSeconds}`)
  for (const [i, cue] of cues.entries()) {
    if (i > 0 && cue.start !== cues[i - 1]!.end)
      problems.push(`cue ${i} starts at ${cue.start}, not where the last ended`)
    if (!(cue.end > cue.start)) problems.push(`cue ${i} ends at ${cue.end}, not after its start ${cue.start}`)
    const [x = -1, y = -1, w = 0, h = 0] = cue.xywh
    if (x < 0 || y < 0 || w < 1 || h < 1 || x + w > width || y + h > height)
      problems.push(`cue ${i}'s region ${cue.xywh.join(',')} is not inside the ${width}×${height} sprite`)
  }
  return { problems, cues }
}

/** A `seconds`-long `size` H.264/AAC MP4 (ultrafast), for jobs that must run long enough to watch or cancel. */
export async function makeClip(dir: string, name: string, size: string, seconds: number): Promise<string> {
  const file = join(dir, name)
  await ffmpeg([...testsrc(size, seconds, 'testsrc2'), ...sine(seconds), ...x264, '-c:a', 'aac', '-shortest', file])
  return file
}

export interface LimitFixtures {
  /** A 1 s 64×48 H.264 MP4 with its video stream mapped 20 times: 20 streams. */
  manyStreams: Fixture
  /** 0.5 s of 64×48 H.264 at 1000 fps (500 frames). */
  highFrameRate: Fixture
  /** Two 64×48 frames 10 hours apart: the MP4's tables (and every duration ffprobe reads) say 36000 s. */
  tenHours: Fixture
}

/** Small files over the video processor's stream, frame-rate and duration limits, made in `dir` (~0.3 s). */
export async function makeLimitFixtures(dir: string): Promise<LimitFixtures> {
  const path = (name: string) => join(dir, name)
  await Promise.all([
    ffmpeg([...testsrc('64x48', 1, 'testsrc2'), ...x264, path('limits-base.mp4')]),
    ffmpeg(['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=1000:duration=0.5', ...x264, path('limits-1000fps.mp4')]),
    ffmpeg([
      '-f',
      'lavfi',
      '-i',
      'testsrc2=size=64x48:rate=30',
      '-frames:v',
      '2',
      '-vf',
      'setpts=N*36000/TB',
      '-fps_mode',
      'passthrough',
      ...x264,
      path('limits-10h.mp4'),
    ]),
  ])
  await ffmpeg([
    '-i',
    path('limits-base.mp4'),
    ...Array.from({ length: 20 }, () => ['-map', '0:v']).flat(),
    '-c',
    'copy',
    path('limits-20-streams.mp4'),
  ])
  return {
    manyStreams: { file: path('limits-20-streams.mp4'), format: 'mp4' },
    highFrameRate: { file: path('limits-1000fps.mp4'), format: 'mp4' },
    tenHours: { file: path('limits-10h.mp4'), format: 'mp4' },
  }
}
