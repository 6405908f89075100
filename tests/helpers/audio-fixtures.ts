/**
 * Audio fixtures made with the system ffmpeg into a temp dir (tones and noise of a few seconds), and the readings
 * the tests judge outputs by: ebur128 loudness and true peak, and the audiowaveform JSON's shape. Each fixture
 * carries the `format` the backend would have sniffed.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import type { Fixture } from './video-fixtures.ts'

export type { Fixture }

async function run(program: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  const child = Bun.spawn([program, ...args], { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  if (code !== 0) throw new Error(`${program} ${args.join(' ')} exited with ${code}: ${stderr.trim()}`)
  return { stdout, stderr }
}

const ffmpeg = (args: string[]) => run('ffmpeg', ['-nostdin', '-hide_banner', '-v', 'error', '-y', ...args])
const lavfi = (graph: string) => ['-f', 'lavfi', '-i', graph]
/** A chord that moves (so its loudness is steady and its waveform is not flat), `level` dB below full scale. */
const tone = (seconds: number, level = 20, rate = 44100) =>
  lavfi(
    `aevalsrc='(sin(2*PI*220*t)+sin(2*PI*330*t))/2*(0.6+0.4*sin(2*PI*0.5*t))|(sin(2*PI*277*t)+sin(2*PI*440*t))/2':s=${rate}:d=${seconds},volume=-${level}dB`
  )

export interface AudioFixtures {
  dir: string
  /** 3 s stereo MP3 (LAME) with ID3 tags (title, artist, album, track, date, genre) and a 600×400 JPEG cover. */
  mp3: Fixture
  /** 2 s mono 16-bit WAV, quiet (about -40 LUFS): the gain is capped at +20 dB. */
  wav: Fixture
  /** 2 s stereo FLAC with Vorbis comments. */
  flac: Fixture
  /** 2 s stereo Ogg Vorbis with Vorbis comments on the stream. */
  vorbis: Fixture
  /** 2 s stereo Ogg Opus. */
  opus: Fixture
  /** 2 s stereo AAC in M4A with MP4 tags and a PNG cover. */
  m4a: Fixture
  /** 0.5 s stereo MP3. */
  halfSecond: Fixture
  /** 2 s 5.1 FLAC (six channels), loud. */
  surround: Fixture
  /** 2 s of digital silence in a WAV. */
  silence: Fixture
  /** 20 s percussive MP3 near full scale: its gain is limited by the true-peak ceiling. */
  peaky: Fixture
  /** 5 minutes of stereo FLAC (seconds of work): for progress with an ETA, a cancel mid-job and the time limit. */
  long: Fixture
  /** 1 s MP3 whose Xing header claims over 10 hours. */
  tenHours: Fixture
  /** `mp3` cut in the middle of a frame. */
  truncated: Fixture
  /** 9 channels: over MAX_AUDIO_CHANNELS. */
  nineChannels: Fixture
  /** Bytes that no demuxer reads. */
  corrupt: Fixture
  remove(): void
}

export async function makeAudioFixtures(): Promise<AudioFixtures> {
  const dir = mkdtempSync(join(tmpdir(), 'media-test-audio-'))
  const at = (name: string) => join(dir, name)
  const fixture = (name: string, format: string): Fixture => ({ file: at(name), format })
  const tags = [
    ['title', 'A Tone'],
    ['artist', 'The Oscillators'],
    ['album', 'Test Signals'],
    ['track', '3/12'],
    ['date', '2024'],
    ['genre', 'Electronic'],
  ].flatMap(([k, v]) => ['-metadata', `${k}=${v}`])
  await Promise.all([
    sharp({ create: { width: 600, height: 400, channels: 3, background: '#c04020' } })
      .jpeg()
      .toFile(at('cover.jpg')),
    sharp({ create: { width: 300, height: 300, channels: 3, background: '#2040c0' } })
      .png()
      .toFile(at('cover.png')),
  ])
  const nine = [...Array(9).keys()]
  const mp3 = (name: string, seconds: number, extra: string[] = []) =>
    ffmpeg([...tone(seconds), ...extra, '-c:a', 'libmp3lame', '-b:a', '128k', at(name)])
  await Promise.all([
    ffmpeg([
      ...tone(3),
      '-i',
      at('cover.jpg'),
      '-map',
      '0:a',
      '-map',
      '1:v',
      '-c:a',
      'libmp3lame',
      '-b:a',
      '128k',
      '-c:v',
      'copy',
      '-id3v2_version',
      '3',
      '-metadata:s:v',
      'comment=Cover (front)',
      ...tags,
      at('tagged.mp3'),
    ]),
    ffmpeg([...tone(2, 38), '-ac', '1', '-c:a', 'pcm_s16le', at('quiet.wav')]),
    ffmpeg([...tone(2), ...tags, '-c:a', 'flac', at('tone.flac')]),
    ffmpeg([...tone(2), ...tags, '-c:a', 'libvorbis', at('tone.ogg')]),
    ffmpeg([...tone(2), '-c:a', 'libopus', '-ar', '48000', at('tone.opus')]),
    ffmpeg([
      ...tone(2),
      '-i',
      at('cover.png'),
      '-map',
      '0:a',
      '-map',
      '1:v',
      '-c:a',
      'aac',
      '-c:v',
      'copy',
      '-disposition:v',
      'attached_pic',
      ...tags,
      '-f',
      'ipod',
      at('tone.m4a'),
    ]),
    mp3('half.mp3', 0.5),
    ffmpeg([
      ...lavfi('sine=frequency=330:sample_rate=48000:duration=2'),
      '-af',
      'pan=5.1|FL=c0|FR=c0|FC=c0|LFE=c0|BL=c0|BR=c0,volume=-6dB',
      '-c:a',
      'flac',
      at('surround.flac'),
    ]),
    ffmpeg([...lavfi('anullsrc=r=48000:cl=stereo'), '-t', '2', '-c:a', 'pcm_s16le', at('silence.wav')]),
    ffmpeg([
      ...lavfi(
        "aevalsrc='0.95*sin(2*PI*220*t)*exp(-30*mod(t,0.5))|0.95*sin(2*PI*330*t)*exp(-30*mod(t,0.5))':s=44100:d=20"
      ),
      '-c:a',
      'libmp3lame',
      '-b:a',
      '192k',
      at('peaky.mp3'),
    ]),
    ffmpeg([
      ...lavfi('sine=frequency=440:sample_rate=48000:duration=300'),
      '-af',
      'volume=-12dB',
      '-ac',
      '2',
      '-c:a',
      'flac',
      at('long.flac'),
    ]),
    mp3('one-second.mp3', 1),
    ffmpeg([
      ...lavfi('sine=frequency=440:sample_rate=48000:duration=1'),
      '-filter_complex',
      `asplit=9${nine.map((i) => `[a${i}]`).join('')};${nine.map((i) => `[a${i}]`).join('')}amerge=inputs=9`,
      '-c:a',
      'pcm_s16le',
      at('nine.wav'),
    ]),
  ])
  // The LAME Info header's frame count, rewritten to claim 10 hours and more (ffprobe believes it).
  const oneSecond = readFileSync(at('one-second.mp3'))
  const info = oneSecond.indexOf('Info')
  if (info < 0) throw new Error('LAME wrote no Info header')
  oneSecond.writeUInt32BE(Math.ceil((36_000 * 44_100) / 1152), info + 8)
  writeFileSync(at('ten-hours.mp3'), oneSecond)
  const tagged = readFileSync(at('tagged.mp3'))
  writeFileSync(at('truncated.mp3'), tagged.subarray(0, Math.floor(tagged.byteLength * 0.6) + 7))
  writeFileSync(at('corrupt.wav'), 'RIFF\x10\x00\x00\x00WAVEjunkjunk')
  return {
    dir,
    mp3: fixture('tagged.mp3', 'mp3'),
    wav: fixture('quiet.wav', 'wav'),
    flac: fixture('tone.flac', 'flac'),
    vorbis: fixture('tone.ogg', 'ogg'),
    opus: fixture('tone.opus', 'ogg'),
    m4a: fixture('tone.m4a', 'm4a'),
    halfSecond: fixture('half.mp3', 'mp3'),
    surround: fixture('surround.flac', 'flac'),
    silence: fixture('silence.wav', 'wav'),
    peaky: fixture('peaky.mp3', 'mp3'),
    long: fixture('long.flac', 'flac'),
    tenHours: fixture('ten-hours.mp3', 'mp3'),
    truncated: fixture('truncated.mp3', 'mp3'),
    nineChannels: fixture('nine.wav', 'wav'),
    corrupt: fixture('corrupt.wav', 'wav'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  }
}

export interface Measured {
  integratedLufs: number | null
  truePeakDb: number | null
}

/** Loudness and true peak of a file as ffmpeg's ebur128 measures them (what the processor measures with). */
export async function ebur128(file: string): Promise<Measured> {
  const { stderr } = await run('ffmpeg', [
    '-nostdin',
    '-hide_banner',
    '-nostats',
    '-i',
    file,
    '-map',
    '0:a:0',
    '-af',
    'ebur128=peak=true:framelog=verbose',
    '-f',
    'null',
    '-',
  ])
  const summary = stderr.slice(stderr.lastIndexOf('Summary:'))
  const integrated = Number(/I:\s+(-?[\d.]+) LUFS/.exec(summary)?.[1])
  const peak = /Peak:\s+(-?inf|-?[\d.]+) dBFS/.exec(summary)?.[1]
  return {
    integratedLufs: integrated > -70 ? integrated : null,
    truePeakDb: !peak || peak.endsWith('inf') ? null : Number(peak),
  }
}

/** What is wrong with a peaks document, measured against the BBC audiowaveform JSON format (version 2). */
export function peaksProblems(json: unknown, durationSeconds: number, maxPairs: number): string[] {
  const w = json as Record<string, unknown>
  const problems: string[] = []
  const int = (key: string) => Number.isInteger(w[key]) && (w[key] as number) > 0
  if (w.version !== 2) problems.push('version is not 2')
  if (w.channels !== 1) problems.push('channels is not 1')
  if (w.bits !== 8) problems.push('bits is not 8')
  for (const key of ['sample_rate', 'samples_per_pixel', 'length']) if (!int(key)) problems.push(`${key} is not >0`)
  const data = w.data as number[]
  if (!Array.isArray(data) || data.length !== 2 * (w.length as number)) problems.push('data is not 2 × length')
  else if (data.some((x) => !Number.isInteger(x) || x < -128 || x > 127)) problems.push('data is not 8-bit')
  else if (data.some((x, i) => i % 2 === 0 && x > data[i + 1]!)) problems.push('a min is above its max')
  if ((w.length as number) > maxPairs) problems.push(`length ${w.length} is over ${maxPairs}`)
  const pixel = (w.samples_per_pixel as number) / (w.sample_rate as number)
  const covered = (w.length as number) * pixel
  // The last pixel may be partly empty: the covered time is the duration rounded up to a pixel.
  if (!(covered >= durationSeconds - 0.001 && covered < durationSeconds + pixel + 0.001))
    problems.push(`length × samples_per_pixel / sample_rate is ${covered} s, not ${durationSeconds} s within a pixel`)
  return problems
}

/** `seconds` of a tone as an MP3 titled `title`, with a 200×200 JPEG cover (ID3 APIC): a song as a player gets it. */
export async function makeSong(file: string, title: string, seconds: number): Promise<void> {
  await ffmpeg([
    ...tone(seconds),
    ...lavfi('testsrc2=s=200x200:d=1'),
    ...['-map', '0:a', '-map', '1:v', '-frames:v', '1', '-c:a', 'libmp3lame', '-c:v', 'mjpeg'],
    ...['-disposition:v', 'attached_pic', '-id3v2_version', '3', '-metadata', `title=${title}`, file],
  ])
}
