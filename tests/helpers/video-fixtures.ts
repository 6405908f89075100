/**
 * Video fixtures made with the system ffmpeg into a temp dir (small testsrc clips, ~2 s), and ffprobe for reading
 * outputs back. Each fixture carries the `format` the backend would have sniffed.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

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
