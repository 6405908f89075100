/**
 * The audio processor's media behaviour against real ffmpeg, RabbitMQ and S3 (the embedded store): started in-process, fed
 * through its request queue, and judged by what lands on `.results`, `.updates` and in S3. Outputs are read back with
 * ffprobe (no video stream but the cover), ebur128 (loudness and true peak), and `waveform-data` (the peaks load).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WaveformData from 'waveform-data'
import {
  AUDIO_LOUDNESS_DEFAULTS,
  AudioResultSchema,
  CancelSchema,
  JobUpdateSchema,
  cancelExchange,
  decodeMessage,
  encodeMessage,
  queueNames,
  type AudioRequest,
  type AudioResult,
  type JobUpdate,
  type QueueNames,
} from '@app/shared'
import { readConfig, start } from '../services/audio/main.ts'
import {
  ebur128,
  makeAudioFixtures,
  peaksProblems,
  type AudioFixtures,
  type Fixture,
} from './helpers/audio-fixtures.ts'
import { testEnv } from './helpers/env.ts'
import { testS3 } from './helpers/s3.ts'
import { useInfra } from './helpers/infra.ts'
import { connectRabbit } from './helpers/rabbit.ts'
import { hlsPlaylist, probe } from './helpers/video-fixtures.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

type Recipe = AudioRequest['recipe']
/** Everything, normalised with the defaults: what the API sends when no preset says otherwise. */
const FULL: Recipe = {
  aac: { name: 'audio' },
  opus: { name: 'audio-opus' },
  peaks: { name: 'peaks' },
  cover: { name: 'cover', width: 300, height: 300 },
  loudness: {},
}
const { targetLufs: TARGET, truePeakDb: CEILING, maxGainDb: MAX_GAIN } = AUDIO_LOUDNESS_DEFAULTS

interface Processor {
  queues: QueueNames
  system: string
  tmpDir: string
  stop(): Promise<void>
}

let fixtures: AudioFixtures
let rabbit: Awaited<ReturnType<typeof connectRabbit>>
let s3: S3Client
let bucket: string
let scratch: string
const processors: Processor[] = []

async function startProcessor(overrides: Record<string, string> = {}): Promise<Processor> {
  const tmpDir = mkdtempSync(join(tmpdir(), 'media-test-audio-tmp-'))
  const env = testEnv({ AUDIO_TMP_DIR: tmpDir, ...overrides })
  const service = await start(readConfig(env))
  let stopped: Promise<void> | undefined
  const processor = {
    system: env.SYSTEM!,
    queues: queueNames(env.SYSTEM!, 'audio'),
    tmpDir,
    stop: () => (stopped ??= service.stop().then(() => rmSync(tmpDir, { recursive: true, force: true }))),
  }
  processors.push(processor)
  return processor
}

beforeAll(async () => {
  const env = testEnv()
  bucket = env.S3_BUCKET!
  s3 = testS3(env).client
  ;[fixtures, rabbit] = await Promise.all([makeAudioFixtures(), connectRabbit()])
  scratch = mkdtempSync(join(tmpdir(), 'media-test-audio-out-'))
})

afterAll(async () => {
  await Promise.all(processors.map((p) => p.stop()))
  await rabbit?.close()
  s3?.destroy()
  fixtures?.remove()
  if (scratch) rmSync(scratch, { recursive: true, force: true })
})

interface JobRun {
  request: AudioRequest
  result: AudioResult
  updates: JobUpdate[]
  elapsedMs: number
}

async function submit(
  processor: Processor,
  source: Fixture | { body: string | Uint8Array; format: string },
  options: { recipe?: Recipe; skipUpload?: boolean; size?: number } = {}
) {
  const jobId = crypto.randomUUID()
  const mediaId = crypto.randomUUID()
  const key = `sources/${mediaId}`
  const body = 'file' in source ? readFileSync(source.file) : source.body
  const size = typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength
  if (!options.skipUpload) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }))
  const request: AudioRequest = {
    version: 1,
    jobId,
    mediaId,
    source: { bucket, key, format: source.format, size: options.size ?? size },
    output: { bucket, prefix: `audio/${mediaId}` },
    recipe: options.recipe ?? FULL,
  }
  const started = Date.now()
  await rabbit.publishRaw(processor.queues.request, JSON.stringify(request), {
    messageId: crypto.randomUUID(),
    correlationId: jobId,
    type: 'job.request',
  })
  return { request, started }
}

async function collect(
  processor: Processor,
  { request, started }: Awaited<ReturnType<typeof submit>>,
  timeoutMs = 30_000
): Promise<JobRun> {
  const decoded = decodeMessage(
    AudioResultSchema,
    (await rabbit.nextMessage(processor.queues.results, timeoutMs)).content
  )
  const elapsedMs = Date.now() - started
  if (!decoded.ok) throw new Error(decoded.reason)
  expect(decoded.value.jobId).toBe(request.jobId)
  const updates: JobUpdate[] = []
  for (;;) {
    const update = decodeMessage(JobUpdateSchema, (await rabbit.nextMessage(processor.queues.updates, 5_000)).content)
    if (!update.ok) throw new Error(update.reason)
    updates.push(update.value)
    if (update.value.status !== 'processing') break
  }
  return { request, result: decoded.value, updates, elapsedMs }
}

const runJob = async (processor: Processor, source: Parameters<typeof submit>[1], options = {}) =>
  collect(processor, await submit(processor, source, options))

function completed(run: JobRun) {
  if (run.result.status !== 'completed') throw new Error(`job ${run.result.status}: ${JSON.stringify(run.result)}`)
  return run.result
}

function failed(run: JobRun) {
  if (run.result.status !== 'failed') throw new Error(`expected a failure, got ${JSON.stringify(run.result)}`)
  expect(run.updates.at(-1)).toMatchObject({ status: 'failed', stage: 'finished', progress: 100 })
  return run.result.error
}

async function fetchOutput(key: string) {
  const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
  const bytes = await object.Body!.transformToByteArray()
  const file = join(scratch, key.replaceAll('/', '_'))
  writeFileSync(file, bytes)
  return { file, bytes, contentType: object.ContentType }
}

async function keysUnder(prefix: string): Promise<string[]> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/` }))
  return (listed.Contents ?? []).map((o) => o.Key!)
}

const leftovers = (processor: Processor) => readdirSync(join(processor.tmpDir, String(process.pid)))

type Done = AudioResult & { status: 'completed' }

/**
 * Checks both encodings of a result: one audio stream and nothing else (no video, no tags), its codec, 48 kHz, mono or
 * stereo, its duration within 50 ms of what decoded, and its loudness: the source's plus the gain within 1 LU (which
 * is the target unless the gain was capped or peak-limited), a true peak under the ceiling, never quieter than the
 * source unless the ceiling asked it.
 */
async function expectEncodings(result: Done, want: { channels: number; normalised: boolean }) {
  const { loudness, durationSeconds } = result.metadata
  for (const [name, codec, contentType] of [
    ['audio', 'aac', 'audio/mp4'],
    ['audio-opus', 'opus', 'audio/webm'],
  ] as const) {
    const info = result.outputs.find((o) => o.name === name)!
    expect(info).toMatchObject({ contentType })
    expect(info.width).toBeUndefined()
    const { file, bytes, contentType: stored } = await fetchOutput(info.key)
    expect({ stored, size: bytes.byteLength }).toEqual({ stored: contentType, size: info.size })
    const probed = await probe(file)
    expect(probed.streams.map((s) => [s.codec_type, s.codec_name])).toEqual([['audio', codec]])
    const stream = probed.streams[0] as unknown as { sample_rate: string; channels: number }
    expect({ name, rate: stream.sample_rate, channels: stream.channels }).toEqual({
      name,
      rate: '48000',
      channels: want.channels,
    })
    for (const tag of ['title', 'artist', 'TITLE', 'ARTIST']) expect(probed.format.tags?.[tag]).toBeUndefined()
    expect(Math.abs(info.durationSeconds! - durationSeconds)).toBeLessThanOrEqual(0.05)
    expect(Math.abs(Number(probed.format.duration) - durationSeconds)).toBeLessThanOrEqual(0.05)
    const out = await ebur128(file)
    if (loudness.integratedLufs === null) {
      expect(out.integratedLufs).toBeNull()
      continue
    }
    const expected = loudness.integratedLufs + loudness.gainDb
    expect({ name, off: Math.abs(out.integratedLufs! - expected) <= 1 }).toEqual({ name, off: true })
    if (want.normalised) {
      expect({ name, truePeak: out.truePeakDb! <= CEILING }).toEqual({ name, truePeak: true })
      if (loudness.integratedLufs < TARGET && (loudness.truePeakDb ?? -99) < CEILING - 0.5)
        expect(out.integratedLufs!).toBeGreaterThanOrEqual(loudness.integratedLufs - 0.5)
    }
  }
}

/** Checks the peaks: the audiowaveform v2 shape, the duration rule, and that waveform-data reads them. */
async function expectPeaks(result: Done, maxPairs = 2000) {
  const info = result.outputs.find((o) => o.name === 'peaks')!
  expect(info).toMatchObject({ contentType: 'application/json' })
  const { bytes } = await fetchOutput(info.key)
  const json = JSON.parse(new TextDecoder().decode(bytes))
  expect(peaksProblems(json, result.metadata.durationSeconds, maxPairs)).toEqual([])
  expect(Math.abs(info.durationSeconds! - result.metadata.durationSeconds)).toBeLessThanOrEqual(
    json.samples_per_pixel / json.sample_rate
  )
  const waveform = WaveformData.create(json)
  expect(waveform.length).toBe(json.length)
  expect(waveform.channels).toBe(1)
  expect(Math.abs(waveform.duration - result.metadata.durationSeconds)).toBeLessThanOrEqual(
    json.samples_per_pixel / json.sample_rate
  )
  return json as { data: number[]; samples_per_pixel: number; sample_rate: number; length: number }
}

describe('with default limits', () => {
  let processor: Processor

  beforeAll(async () => {
    processor = await startProcessor()
  })

  test('an MP3 with ID3 tags and a cover: both encodings normalised, peaks, the cover, tags and progress', async () => {
    const run = await runJob(processor, fixtures.mp3)
    const result = completed(run)
    const prefix = run.request.output.prefix
    expect(result.outputs.map((o) => [o.key, o.contentType])).toEqual([
      [`${prefix}/audio.m4a`, 'audio/mp4'],
      [`${prefix}/audio-opus.webm`, 'audio/webm'],
      [`${prefix}/peaks.json`, 'application/json'],
      [`${prefix}/cover.webp`, 'image/webp'],
    ])
    expect((await keysUnder(prefix)).sort()).toEqual(result.outputs.map((o) => o.key).sort())
    expect(result.metadata).toMatchObject({
      container: 'mp3',
      codec: 'mp3',
      sampleRate: 44100,
      channels: 2,
      hasCover: true,
      tags: {
        title: 'A Tone',
        artist: 'The Oscillators',
        album: 'Test Signals',
        track: '3/12',
        date: '2024',
        genre: 'Electronic',
      },
    })
    expect(result.metadata.bitrate).toBeGreaterThan(100_000)
    // LAME's priming is trimmed by the decoder: what plays is the 3 s that were encoded.
    expect(Math.abs(result.metadata.durationSeconds - 3)).toBeLessThanOrEqual(0.05)
    const { loudness } = result.metadata
    expect(loudness.silent).toBe(false)
    expect(loudness.integratedLufs!).toBeLessThan(TARGET)
    expect(loudness.gainDb).toBeCloseTo(Math.min(TARGET - loudness.integratedLufs!, MAX_GAIN), 0)
    await expectEncodings(result, { channels: 2, normalised: true })
    const peaks = await expectPeaks(result)
    // The waveform is of what plays: near the outputs' level, not the source's.
    const loudest = Math.max(...peaks.data.map(Math.abs))
    expect(loudest).toBeGreaterThan(127 * 10 ** ((loudness.truePeakDb! + loudness.gainDb - 3) / 20))
    // A 600×400 cover fitted inside 300×300.
    const cover = result.outputs.find((o) => o.name === 'cover')!
    expect(cover).toMatchObject({ width: 300, height: 200 })
    const probed = await probe((await fetchOutput(cover.key)).file)
    expect(probed.streams[0]).toMatchObject({ codec_name: 'webp', width: 300, height: 200 })

    const progress = run.updates.map((u) => u.progress)
    expect(progress).toEqual([...progress].sort((a, b) => a - b))
    const stages: string[] = [...new Set(run.updates.map((u) => u.stage))]
    expect([stages[0], stages.at(-1)]).toEqual(['downloading', 'finished'])
    expect(leftovers(processor)).toEqual([])
  })

  test('WAV, FLAC, Ogg Vorbis, Ogg Opus and M4A: each decodes, with its tags and its cover where it has one', async () => {
    const cases: [string, Fixture, Partial<Done['metadata']>, number][] = [
      ['wav', fixtures.wav, { codec: 'pcm_s16le', channels: 1, hasCover: false, tags: {} }, 1],
      ['flac', fixtures.flac, { codec: 'flac', channels: 2, hasCover: false }, 2],
      ['vorbis', fixtures.vorbis, { codec: 'vorbis', channels: 2, hasCover: false }, 2],
      ['opus', fixtures.opus, { codec: 'opus', sampleRate: 48000, channels: 2, tags: {} }, 2],
      ['m4a', fixtures.m4a, { codec: 'aac', channels: 2, hasCover: true }, 2],
    ]
    for (const [label, fixture, metadata, channels] of cases) {
      const result = completed(await runJob(processor, fixture))
      expect({ label, ...result.metadata }).toMatchObject({ label, container: fixture.format, ...metadata })
      if (label !== 'wav' && label !== 'opus')
        expect({ label, ...result.metadata.tags }).toMatchObject({
          label,
          title: 'A Tone',
          artist: 'The Oscillators',
          track: '3/12',
        })
      expect({ label, d: Math.abs(result.metadata.durationSeconds - 2) <= 0.05 }).toEqual({ label, d: true })
      expect(result.outputs.some((o) => o.name === 'cover')).toBe(metadata.hasCover === true)
      await expectEncodings(result, { channels, normalised: true })
      await expectPeaks(result)
    }
  })

  test('the quiet WAV gets the +20 dB maximum, not the target: never more gain than the recipe allows', async () => {
    const result = completed(await runJob(processor, fixtures.wav))
    expect(result.metadata.loudness.integratedLufs!).toBeLessThan(TARGET - MAX_GAIN)
    expect(result.metadata.loudness.gainDb).toBe(MAX_GAIN)
  })

  test('a percussive file near full scale is held under the true-peak ceiling, however the encoders overshoot', async () => {
    const result = completed(await runJob(processor, fixtures.peaky))
    const { loudness } = result.metadata
    expect(loudness.truePeakDb!).toBeGreaterThan(CEILING)
    expect(loudness.gainDb).toBeLessThan(0)
    await expectEncodings(result, { channels: 2, normalised: true })
  })

  test('a 0.5 s clip, six channels (downmixed to stereo) and silence throughout', async () => {
    const half = completed(await runJob(processor, fixtures.halfSecond))
    expect(Math.abs(half.metadata.durationSeconds - 0.5)).toBeLessThanOrEqual(0.05)
    await expectEncodings(half, { channels: 2, normalised: true })
    const peaks = await expectPeaks(half)
    expect(peaks.samples_per_pixel).toBe(256)

    const surround = completed(await runJob(processor, fixtures.surround))
    expect(surround.metadata).toMatchObject({ channels: 6, codec: 'flac' })
    await expectEncodings(surround, { channels: 2, normalised: true })

    const silence = completed(await runJob(processor, fixtures.silence))
    expect(silence.metadata.loudness).toEqual({
      integratedLufs: null,
      truePeakDb: null,
      rangeLu: 0,
      silent: true,
      gainDb: 0,
    })
    await expectEncodings(silence, { channels: 2, normalised: true })
    const flat = await expectPeaks(silence)
    expect(new Set(flat.data)).toEqual(new Set([0]))
  })

  test('without loudness in the recipe the loudness is measured and no gain applied; peaks obey maxPairs', async () => {
    const recipe: Recipe = {
      aac: { name: 'audio', bitrate: 64 },
      opus: { name: 'audio-opus' },
      peaks: { name: 'peaks', maxPairs: 100 },
    }
    const result = completed(await runJob(processor, fixtures.long, { recipe }))
    expect(result.outputs.map((o) => o.name)).toEqual(['audio', 'audio-opus', 'peaks'])
    expect(result.metadata.loudness.gainDb).toBe(0)
    expect(result.metadata.loudness.integratedLufs).not.toBeNull()
    expect(result.metadata.hasCover).toBe(false)
    await expectEncodings(result, { channels: 2, normalised: false })
    const peaks = await expectPeaks(result, 100)
    expect(peaks.length).toBeLessThanOrEqual(100)
    expect(peaks.length).toBeGreaterThan(50)
  })

  test('progress during processing carries an ETA, and a cancel mid-job stops ffmpeg and removes every output', async () => {
    const submitted = await submit(processor, fixtures.long)
    const { jobId } = submitted.request
    const updates: JobUpdate[] = []
    for (;;) {
      const update = decodeMessage(
        JobUpdateSchema,
        (await rabbit.nextMessage(processor.queues.updates, 10_000)).content
      )
      if (!update.ok) throw new Error(update.reason)
      updates.push(update.value)
      if (update.value.stage === 'processing' && update.value.progress > 5) break
    }
    await rabbit.publishToExchange(
      cancelExchange(processor.system),
      encodeMessage(CancelSchema, { version: 1, jobId, at: new Date().toISOString() })
    )
    const result = decodeMessage(
      AudioResultSchema,
      (await rabbit.nextMessage(processor.queues.results, 10_000)).content
    )
    expect(result.ok && result.value).toMatchObject({ jobId, status: 'cancelled' })
    expect(await keysUnder(submitted.request.output.prefix)).toEqual([])
    // Drain this job's remaining updates so the next test starts clean.
    for (;;) {
      const update = decodeMessage(JobUpdateSchema, (await rabbit.nextMessage(processor.queues.updates, 5_000)).content)
      if (!update.ok || update.value.status !== 'processing') break
    }
    expect(leftovers(processor)).toEqual([])
    expect(ffmpegsOn(processor)).toEqual([])
  })

  test('refuses what is not playable audio, writes nothing, and keeps serving', async () => {
    const video = join(fixtures.dir, 'video-only.mp4')
    Bun.spawnSync([
      'ffmpeg',
      '-v',
      'error',
      '-y',
      '-f',
      'lavfi',
      '-i',
      'testsrc=size=64x64:duration=1',
      '-c:v',
      'libx264',
      video,
    ])
    const cases: [string, Fixture | { body: string; format: string }, string, RegExp][] = [
      ['truncated mid-frame', fixtures.truncated, 'invalid_media', /truncated or damaged/],
      ['not a WAV', fixtures.corrupt, 'invalid_media', /not a readable WAV file/],
      ['text', { body: 'hello, this is not audio', format: 'mp3' }, 'invalid_media', /MP3|audio/],
      ['no audio stream', { file: video, format: 'mp4' }, 'unsupported_format', /no audio stream/],
      ['unknown container', { ...fixtures.mp3, format: 'gif' }, 'unsupported_format', /gif/],
      ['nine channels', fixtures.nineChannels, 'limit_exceeded', /9 channels, over MAX_AUDIO_CHANNELS \(8\)/],
    ]
    for (const [label, source, code, message] of cases) {
      const run = await runJob(processor, source)
      const error = failed(run)
      expect({ label, code: error.code, class: error.class }).toEqual({ label, code, class: 'input' })
      expect(error.message).toMatch(message)
      expect(error.message).not.toContain(processor.tmpDir)
      expect(await keysUnder(run.request.output.prefix)).toEqual([])
    }
    expect(leftovers(processor)).toEqual([])
    completed(await runJob(processor, fixtures.halfSecond))
  })

  test('a header claiming 10 hours over 1 s of audio is refused before decoding', async () => {
    const run = await runJob(processor, fixtures.tenHours)
    expect(failed(run)).toEqual({
      code: 'limit_exceeded',
      class: 'input',
      message: expect.stringMatching(/^the audio lasts \d+ s, over MAX_AUDIO_SECONDS \(14400 s\)$/),
    })
    expect(run.updates.filter((u) => u.progress > 5 && u.progress < 100)).toEqual([])
  })

  test('an HLS playlist posing as MP3 or M4A is refused and opens nothing', async () => {
    let requests = 0
    const server = Bun.serve({
      port: 0,
      hostname: '127.0.0.1',
      fetch() {
        requests++
        return new Response(readFileSync(fixtures.mp3.file))
      },
    })
    try {
      for (const format of ['mp3', 'm4a', 'aac']) {
        for (const target of [`http://127.0.0.1:${server.port}/a.mp3`, fixtures.mp3.file]) {
          const run = await runJob(processor, { body: hlsPlaylist(target), format })
          expect(failed(run).code).toBe('invalid_media')
        }
      }
      expect(requests).toBe(0)
    } finally {
      await server.stop(true)
    }
  })
})

/** ffmpeg processes still working in a processor's directory. */
function ffmpegsOn(processor: Processor): string[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      } catch {
        return ''
      }
    })
    .filter((cmdline) => cmdline.includes(processor.tmpDir))
}

describe('with tight limits', () => {
  test('over MAX_AUDIO_SECONDS, MAX_AUDIO_BYTES or AUDIO_TIMEOUT_SECONDS', async () => {
    const [short, small, timed] = await Promise.all([
      startProcessor({ MAX_AUDIO_SECONDS: '1' }),
      startProcessor({ MAX_AUDIO_BYTES: '16k' }),
      startProcessor({ AUDIO_TIMEOUT_SECONDS: '1' }),
    ])
    const long = await runJob(short, fixtures.mp3)
    expect(failed(long)).toEqual({
      code: 'limit_exceeded',
      class: 'input',
      message: 'the audio lasts 3 s, over MAX_AUDIO_SECONDS (1 s)',
    })
    expect(long.elapsedMs).toBeLessThan(2_000)
    const bytes = readFileSync(fixtures.mp3.file).byteLength
    for (const size of [undefined, 1000]) {
      const run = await runJob(small, fixtures.mp3, { size })
      expect(failed(run)).toMatchObject({
        code: 'limit_exceeded',
        message: expect.stringContaining(`(${bytes} bytes), over MAX_AUDIO_BYTES (16 KiB)`),
      })
    }
    const slow = await runJob(timed, fixtures.long)
    expect(failed(slow).code).toBe('timeout')
    expect(slow.elapsedMs).toBeLessThan(4_000)
    expect(leftovers(timed)).toEqual([])
    expect(ffmpegsOn(timed)).toEqual([])
  })
})
