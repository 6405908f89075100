/**
 * The video processor's media behaviour against real ffmpeg, RabbitMQ and S3 (the embedded store): started in-process, fed
 * through its request queue, and judged by what lands on `.results`, `.updates` and in S3 (outputs are read back
 * with ffprobe). The runtime under it (acks, retries, the lease, hand-back) is tested in processor.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import sharp from 'sharp'
import {
  JobUpdateSchema,
  VideoResultSchema,
  decodeMessage,
  queueNames,
  type JobUpdate,
  type QueueNames,
  type VideoRequest,
  type VideoResult,
} from '@app/shared'
import { builtInRecipe } from '../services/api/uploads/presets.ts'
import { readConfig, start } from '../services/videos/main.ts'
import { testEnv } from './helpers/env.ts'
import { connectRabbit } from './helpers/rabbit.ts'
import {
  checkHls,
  checkStoryboard,
  ffconcatScript,
  hlsPlaylist,
  keyframeTimes,
  makeLimitFixtures,
  makeVideoFixtures,
  meanLuma,
  probe,
  type Fixture,
  type LimitFixtures,
  type VideoFixtures,
} from './helpers/video-fixtures.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

type Recipe = VideoRequest['recipe']
/** Small rungs so that the ~2 s test clips exercise several of them cheaply. */
const SMALL: Recipe = {
  poster: { name: 'poster', width: 160, height: 160 },
  renditions: [
    { name: 'low', height: 120 },
    { name: 'mid', height: 240 },
    { name: 'high', height: 720 },
  ],
}
/** What the API sends when no preset is chosen: 360p, 720p and 1080p as MP4 and HLS, a poster and a storyboard. */
const API: Recipe = builtInRecipe('video')
/** SMALL, streamed too. */
const STREAMED: Recipe = { ...SMALL, hls: { name: 'hls' }, storyboard: { name: 'storyboard' } }

interface Processor {
  system: string
  queues: QueueNames
  tmpDir: string
  stop(): Promise<void>
}

let fixtures: VideoFixtures
let overLimits: LimitFixtures
let rabbit: Awaited<ReturnType<typeof connectRabbit>>
let s3: S3Client
let bucket: string
let scratch: string
const processors: Processor[] = []

async function startProcessor(overrides: Record<string, string> = {}): Promise<Processor> {
  const tmpDir = mkdtempSync(join(tmpdir(), 'media-test-videos-tmp-'))
  const env = testEnv({ VIDEOS_TMP_DIR: tmpDir, ...overrides })
  const service = await start(readConfig(env))
  let stopped: Promise<void> | undefined
  const processor = {
    system: env.SYSTEM!,
    queues: queueNames(env.SYSTEM!, 'videos'),
    tmpDir,
    stop: () => (stopped ??= service.stop().then(() => rmSync(tmpDir, { recursive: true, force: true }))),
  }
  processors.push(processor)
  return processor
}

beforeAll(async () => {
  const env = testEnv()
  bucket = env.S3_BUCKET!
  s3 = new S3Client({
    endpoint: env.S3_ENDPOINT,
    region: env.S3_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: env.S3_ACCESS_KEY_ID!, secretAccessKey: env.S3_SECRET_ACCESS_KEY! },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
  ;[fixtures, rabbit] = await Promise.all([makeVideoFixtures(), connectRabbit()])
  overLimits = await makeLimitFixtures(fixtures.dir)
  scratch = mkdtempSync(join(tmpdir(), 'media-test-videos-out-'))
})

afterAll(async () => {
  await Promise.all(processors.map((p) => p.stop()))
  await rabbit?.close()
  s3?.destroy()
  fixtures?.remove()
  if (scratch) rmSync(scratch, { recursive: true, force: true })
})

interface JobRun {
  request: VideoRequest
  result: VideoResult
  updates: JobUpdate[]
  elapsedMs: number
}

interface Submitted {
  request: VideoRequest
  started: number
}

/** Puts the source in S3 and publishes a request for it. */
async function submit(
  processor: Processor,
  source: Fixture | { body: string | Uint8Array; format: string },
  options: {
    recipe?: Recipe
    sourceBucket?: string
    outputBucket?: string
    skipUpload?: boolean
    headers?: Record<string, number>
    size?: number
  } = {}
): Promise<Submitted> {
  const jobId = crypto.randomUUID()
  const mediaId = crypto.randomUUID()
  const key = `sources/${mediaId}`
  const body = 'file' in source ? readFileSync(source.file) : source.body
  const size = typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength
  if (!options.sourceBucket && !options.skipUpload)
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }))
  const request: VideoRequest = {
    version: 1,
    jobId,
    mediaId,
    source: { bucket: options.sourceBucket ?? bucket, key, format: source.format, size: options.size ?? size },
    output: { bucket: options.outputBucket ?? bucket, prefix: `videos/${mediaId}` },
    recipe: options.recipe ?? SMALL,
  }
  const started = Date.now()
  const properties = {
    messageId: crypto.randomUUID(),
    correlationId: jobId,
    type: 'job.request',
    headers: options.headers,
  }
  await rabbit.publishRaw(processor.queues.request, JSON.stringify(request), properties)
  return { request, started }
}

/** Waits for a submitted job's result and all its updates (up to the final one). */
async function collect(processor: Processor, { request, started }: Submitted, timeoutMs = 30_000): Promise<JobRun> {
  const decoded = decodeMessage(
    VideoResultSchema,
    (await rabbit.nextMessage(processor.queues.results, timeoutMs)).content
  )
  const elapsedMs = Date.now() - started
  if (!decoded.ok) throw new Error(decoded.reason)
  expect(decoded.value.jobId).toBe(request.jobId)
  const updates: JobUpdate[] = []
  for (;;) {
    const update = decodeMessage(JobUpdateSchema, (await rabbit.nextMessage(processor.queues.updates, 5_000)).content)
    if (!update.ok) throw new Error(update.reason)
    expect(update.value.jobId).toBe(request.jobId)
    updates.push(update.value)
    if (update.value.status !== 'processing') break
  }
  return { request, result: decoded.value, updates, elapsedMs }
}

async function runJob(
  processor: Processor,
  source: Parameters<typeof submit>[1],
  options: Parameters<typeof submit>[2] = {}
): Promise<JobRun> {
  return collect(processor, await submit(processor, source, options))
}

function completed(run: JobRun) {
  if (run.result.status !== 'completed') throw new Error(`job ${run.result.status}: ${JSON.stringify(run.result)}`)
  return run.result
}

function failed(run: JobRun) {
  if (run.result.status !== 'failed') throw new Error(`expected a failure, got ${run.result.status}`)
  expect(run.updates.at(-1)).toMatchObject({
    status: 'failed',
    stage: 'finished',
    progress: 100,
    error: run.result.error,
  })
  return run.result.error
}

/** Downloads an output and probes it. */
async function fetchOutput(key: string) {
  const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
  const bytes = await object.Body!.transformToByteArray()
  const file = join(scratch, key.replaceAll('/', '_'))
  writeFileSync(file, bytes)
  return { file, bytes: bytes.byteLength, contentType: object.ContentType, probed: await probe(file) }
}

async function keysUnder(prefix: string): Promise<string[]> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/` }))
  return (listed.Contents ?? []).map((o) => o.Key!)
}

/** Job dirs left in this process's work dir (every job removes its own). */
const leftovers = (processor: Processor) => readdirSync(join(processor.tmpDir, String(process.pid)))

function expectMonotonicProgress(updates: JobUpdate[]) {
  const progress = updates.map((u) => u.progress)
  expect(progress).toEqual([...progress].sort((a, b) => a - b))
}

/** Checks a rendition: H.264 yuv420p, AAC or no audio, its size, its duration, no rotation, no location. */
async function expectRendition(
  output: VideoResult & { status: 'completed' },
  name: string,
  want: { width: number; height: number; seconds: number; audio: boolean }
) {
  const info = output.outputs.find((o) => o.name === name)!
  expect(info.key.endsWith(`/${name}.mp4`)).toBe(true)
  expect(info).toMatchObject({ contentType: 'video/mp4', width: want.width, height: want.height })
  const { bytes, contentType, probed } = await fetchOutput(info.key)
  expect(contentType).toBe('video/mp4')
  expect(info.size).toBe(bytes)
  const video = probed.streams.filter((s) => s.codec_type === 'video')
  const audio = probed.streams.filter((s) => s.codec_type === 'audio')
  expect(video).toHaveLength(1)
  expect(video[0]).toMatchObject({ codec_name: 'h264', pix_fmt: 'yuv420p', width: want.width, height: want.height })
  // A leftover display matrix would make players rotate an already upright picture again.
  expect(video[0]!.side_data_list?.find((d) => d.side_data_type === 'Display Matrix')).toBeUndefined()
  expect(video[0]!.tags?.rotate).toBeUndefined()
  if (want.audio) expect(audio.map((a) => a.codec_name)).toEqual(['aac'])
  else expect(audio).toHaveLength(0)
  expect(Math.abs(Number(probed.format.duration) - want.seconds)).toBeLessThanOrEqual(0.1)
  expect(Math.abs(info.durationSeconds! - want.seconds)).toBeLessThanOrEqual(0.1)
  expect(probed.format.tags?.location).toBeUndefined()
  return probed
}

async function expectPoster(output: VideoResult & { status: 'completed' }, want: { width: number; height: number }) {
  const info = output.outputs.find((o) => o.name === 'poster')!
  expect(info.key).toMatch(/\/poster\.webp$/)
  expect(info).toMatchObject({ contentType: 'image/webp', ...want })
  const { probed, bytes, file } = await fetchOutput(info.key)
  expect(info.size).toBe(bytes)
  expect(probed.streams[0]).toMatchObject({ codec_name: 'webp', ...want })
  return file
}

/** Downloads every output of a result into a directory of its own, named as its key ends (as the playlists expect). */
async function downloadAll(result: VideoResult & { status: 'completed' }): Promise<string> {
  const dir = join(scratch, result.jobId)
  mkdirSync(dir, { recursive: true })
  for (const output of result.outputs) {
    const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: output.key }))
    const bytes = await object.Body!.transformToByteArray()
    expect({ name: output.name, contentType: object.ContentType, size: bytes.byteLength }).toEqual({
      name: output.name,
      contentType: output.contentType,
      size: output.size,
    })
    writeFileSync(join(dir, basename(output.key)), bytes)
  }
  return dir
}

/**
 * Checks the HLS and storyboard a job made against what the recipe asked for and the rungs made: valid, playable,
 * aligned (checkHls, checkStoryboard), one variant per rung with its size and codecs, and keyframes at the same
 * times on every rung. Returns what it read.
 */
async function expectStreamed(
  result: VideoResult & { status: 'completed' },
  rungs: { name: string; width: number; height: number }[],
  audio: boolean
) {
  const dir = await downloadAll(result)
  const byName = (name: string) => result.outputs.find((o) => o.name === name)!
  const master = byName('hls')
  const largest = rungs.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a))
  expect(master).toMatchObject({
    contentType: 'application/vnd.apple.mpegurl',
    width: largest.width,
    height: largest.height,
  })
  const hls = await checkHls(join(dir, 'hls.m3u8'), master.durationSeconds!)
  expect(hls.problems).toEqual([])
  expect(hls.variants.map((v) => v.uri).sort()).toEqual(rungs.map((r) => `hls-${r.name}.m3u8`).sort())
  for (const rung of rungs) {
    const variant = hls.variants.find((v) => v.uri === `hls-${rung.name}.m3u8`)!
    expect(variant.resolution).toEqual({ width: rung.width, height: rung.height })
    expect(variant.codecs).toMatch(audio ? /^avc1\.64[0-9a-f]{4},mp4a\.40\.2$/ : /^avc1\.64[0-9a-f]{4}$/)
    expect(variant.averageBandwidth).toBeGreaterThan(0)
    expect(variant.averageBandwidth).toBeLessThanOrEqual(variant.bandwidth)
    for (const [name, format] of [
      [`hls-${rung.name}`, 'application/vnd.apple.mpegurl'],
      [`hls-${rung.name}-media`, 'video/mp4'],
    ] as const) {
      expect(byName(name)).toMatchObject({ contentType: format, width: rung.width, height: rung.height })
      expect(Math.abs(byName(name).durationSeconds! - variant.seconds)).toBeLessThanOrEqual(0.001)
    }
  }
  // The rungs' keyframes, read from the fMP4 media files: the same times everywhere, 2 s apart. (Fragments carry no
  // edit list, so the first one is at the B-frame delay, ~0.067 s, rather than 0: on every rung alike.)
  const keyframes = await Promise.all(rungs.map((r) => keyframeTimes(join(dir, `hls-${r.name}-media.m4s`))))
  for (const times of keyframes) expect(times).toEqual(keyframes[0]!)
  const [first = 0] = keyframes[0]!
  expect(first).toBeLessThan(0.2)
  for (const t of keyframes[0]!) expect(Math.abs((t - first) / 2 - Math.round((t - first) / 2))).toBeLessThan(0.001)

  const vtt = byName('storyboard')
  const sprite = byName('storyboard-sprite')
  expect(vtt).toMatchObject({ contentType: 'text/vtt' })
  expect(sprite).toMatchObject({ contentType: 'image/jpeg' })
  expect(await sharp(join(dir, 'storyboard-sprite.jpg')).metadata()).toMatchObject({
    format: 'jpeg',
    width: sprite.width,
    height: sprite.height,
  })
  const storyboard = await checkStoryboard(join(dir, 'storyboard.vtt'), vtt.durationSeconds!)
  expect(storyboard.problems).toEqual([])
  for (const cue of storyboard.cues) expect(cue.xywh.slice(2)).toEqual([vtt.width!, vtt.height!])
  expect(Math.abs(vtt.durationSeconds! - result.metadata.durationSeconds)).toBeLessThanOrEqual(0.1)
  return { dir, hls, storyboard }
}

describe('with default limits', () => {
  let processor: Processor

  beforeAll(async () => {
    processor = await startProcessor()
  })

  test('makes a poster and the renditions at or below the source, with audio, metadata and progress', async () => {
    // The source carries a GPS location, which the outputs must not.
    expect((await probe(fixtures.withAudio.file)).format.tags?.location).toBeDefined()
    const run = await runJob(processor, fixtures.withAudio)
    const result = completed(run)
    const prefix = run.request.output.prefix
    expect(result.outputs.map((o) => o.key)).toEqual([
      `${prefix}/poster.webp`,
      `${prefix}/low.mp4`,
      `${prefix}/mid.mp4`,
    ])
    expect(result.metadata).toMatchObject({
      container: 'mp4',
      width: 320,
      height: 240,
      frameRate: 30,
      videoCodec: 'h264',
      audioCodec: 'aac',
      rotation: 0,
    })
    expect(Math.abs(result.metadata.durationSeconds - 2)).toBeLessThanOrEqual(0.1)
    expect(result.metadata.bitrate).toBeGreaterThan(0)
    await expectPoster(result, { width: 160, height: 120 })
    await expectRendition(result, 'low', { width: 160, height: 120, seconds: 2, audio: true })
    await expectRendition(result, 'mid', { width: 320, height: 240, seconds: 2, audio: true })

    expectMonotonicProgress(run.updates)
    // In order, from the first to the last; a stage shorter than the update interval may be replaced by the next
    // (the protocol's rate rule, tested in processor.test.ts).
    const stages: string[] = [...new Set(run.updates.map((u) => u.stage))]
    expect(stages).toEqual(['downloading', 'processing', 'uploading', 'finished'].filter((s) => stages.includes(s)))
    expect([stages[0], stages.at(-1)]).toEqual(['downloading', 'finished'])
    expect(run.updates.at(-1)).toMatchObject({ status: 'completed', stage: 'finished', progress: 100 })
    expect(leftovers(processor)).toEqual([])
  })

  test('the API recipe on a small silent clip gives only the smallest rung, at source size, without audio', async () => {
    const result = completed(await runJob(processor, fixtures.silent, { recipe: API }))
    expect(result.outputs.map((o) => o.name)).toEqual([
      'poster',
      '360p',
      'hls',
      'hls-360p',
      'hls-360p-media',
      'storyboard',
      'storyboard-sprite',
    ])
    expect(result.metadata).toMatchObject({ width: 426, height: 240, audioCodec: null })
    await expectPoster(result, { width: 426, height: 240 })
    await expectRendition(result, '360p', { width: 426, height: 240, seconds: 2, audio: false })
  })

  test('the poster of a video that fades in from black is not black', async () => {
    const result = completed(await runJob(processor, fixtures.fadeIn))
    const poster = await expectPoster(result, { width: 160, height: 120 })
    const luma = await meanLuma(poster)
    // The first frame is ~16; the fully faded-in picture is ~120.
    expect(luma).toBeGreaterThan(60)
  })

  test('a rotated (portrait) video stays portrait, with the rotation applied once', async () => {
    const result = completed(await runJob(processor, fixtures.rotated))
    expect(result.metadata).toMatchObject({ width: 240, height: 320 })
    // ffprobe reports this fixture's matrix as +90 (counter-clockwise), i.e. 270 clockwise.
    expect(result.metadata.rotation).toBe(270)
    expect(result.outputs.map((o) => o.name)).toEqual(['poster', 'low', 'mid'])
    await expectPoster(result, { width: 120, height: 160 })
    await expectRendition(result, 'low', { width: 120, height: 160, seconds: 2, audio: true })
    await expectRendition(result, 'mid', { width: 240, height: 320, seconds: 2, audio: true })
  })

  test('odd source sides (161×121 AVI) give even output sides, never upscaled', async () => {
    const result = completed(await runJob(processor, fixtures.odd, { recipe: API }))
    expect(result.metadata).toMatchObject({
      container: 'avi',
      width: 161,
      height: 121,
      videoCodec: 'mpeg4',
      audioCodec: null,
    })
    await expectPoster(result, { width: 161, height: 121 })
    await expectRendition(result, '360p', { width: 160, height: 120, seconds: 2, audio: false })
  })

  test('10-bit HDR (HEVC HLG) and 10-bit VP9 WebM become 8-bit SDR H.264', async () => {
    const hdr = completed(await runJob(processor, fixtures.hdr))
    expect(hdr.metadata).toMatchObject({ videoCodec: 'hevc', width: 320, height: 180 })
    const probed = await expectRendition(hdr, 'low', { width: 214, height: 120, seconds: 2, audio: false })
    expect(probed.streams[0]!.color_transfer).toBe('bt709')

    const vp9 = completed(await runJob(processor, fixtures.vp9))
    expect(vp9.metadata).toMatchObject({
      container: 'webm',
      videoCodec: 'vp9',
      audioCodec: 'opus',
      width: 320,
      height: 180,
    })
    expect(Math.abs(vp9.metadata.durationSeconds - 2)).toBeLessThanOrEqual(0.1)
    await expectRendition(vp9, 'low', { width: 214, height: 120, seconds: 2, audio: true })
  })

  test('reports transcoding progress with an ETA, monotonic, at most ~2 per second, ending at 100', async () => {
    // Two rungs of the 10 s 720p clip: a few seconds of transcoding, several update intervals long on any machine.
    const renditions = [
      { name: '360p', height: 360 },
      { name: '720p', height: 720 },
    ]
    const run = await runJob(processor, fixtures.long, { recipe: { ...SMALL, renditions } })
    const result = completed(run)
    await expectRendition(result, '360p', { width: 640, height: 360, seconds: 10, audio: false })
    expectMonotonicProgress(run.updates)
    const ticks = run.updates.filter((u) => u.stage === 'processing' && u.progress > 10 && u.progress < 95)
    expect(ticks.length).toBeGreaterThan(0)
    expect(ticks.some((u) => typeof u.etaSeconds === 'number')).toBe(true)
    const times = run.updates.filter((u) => u.stage === 'processing').map((u) => Date.parse(u.at))
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(450)
    expect(run.updates.at(-1)).toMatchObject({ status: 'completed', progress: 100 })
  })

  test('streams as HLS with a storyboard: the master over each rung made, their playlists and media, aligned', async () => {
    const run = await runJob(processor, fixtures.tenSeconds, { recipe: STREAMED })
    const result = completed(run)
    const prefix = run.request.output.prefix
    expect(result.outputs.map((o) => [o.key, o.contentType])).toEqual([
      [`${prefix}/poster.webp`, 'image/webp'],
      [`${prefix}/low.mp4`, 'video/mp4'],
      [`${prefix}/mid.mp4`, 'video/mp4'],
      [`${prefix}/hls.m3u8`, 'application/vnd.apple.mpegurl'],
      [`${prefix}/hls-low.m3u8`, 'application/vnd.apple.mpegurl'],
      [`${prefix}/hls-low-media.m4s`, 'video/mp4'],
      [`${prefix}/hls-mid.m3u8`, 'application/vnd.apple.mpegurl'],
      [`${prefix}/hls-mid-media.m4s`, 'video/mp4'],
      [`${prefix}/storyboard.vtt`, 'text/vtt'],
      [`${prefix}/storyboard-sprite.jpg`, 'image/jpeg'],
    ])
    expect((await keysUnder(prefix)).sort()).toEqual(result.outputs.map((o) => o.key).sort())
    const rungs = [
      { name: 'low', width: 214, height: 120 },
      { name: 'mid', width: 426, height: 240 },
    ]
    const { hls, storyboard } = await expectStreamed(result, rungs, true)
    // The 240p rung is nearest 720p: players start with the first listed.
    expect(hls.variants.map((v) => v.uri)).toEqual(['hls-mid.m3u8', 'hls-low.m3u8'])
    expect(hls.master.version).toBe(7)
    for (const variant of hls.variants) {
      expect(variant.frameRate).toBe(30)
      expect(variant.media.targetDuration).toBe(4)
      expect(variant.media.segments.map((s) => s.duration)).toEqual([4, 4, 2])
      expect(variant.starts).toEqual([0, 4, 8])
    }
    // The MP4s have the same keyframes as the HLS: every 2 s.
    for (const name of ['low', 'mid']) {
      const { file } = await fetchOutput(result.outputs.find((o) => o.name === name)!.key)
      expect(await keyframeTimes(file)).toEqual([0, 2, 4, 6, 8])
    }
    // One frame a second, 160 px wide (240 × 160 / 426, even), ten to a row.
    expect(result.outputs.find((o) => o.name === 'storyboard')).toMatchObject({ width: 160, height: 90 })
    expect(result.outputs.find((o) => o.name === 'storyboard-sprite')).toMatchObject({ width: 1600, height: 90 })
    expect(storyboard.cues.map((c) => c.start)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    expectMonotonicProgress(run.updates)
    expect(leftovers(processor)).toEqual([])
  })

  test('mp4: false streams without uploading an MP4; segments of 2 s when asked', async () => {
    const recipe = { ...STREAMED, mp4: false, hls: { name: 'hls', segmentSeconds: 2 as const } }
    const run = await runJob(processor, fixtures.tenSeconds, { recipe })
    const result = completed(run)
    expect(result.outputs.map((o) => o.name)).toEqual([
      'poster',
      'hls',
      'hls-low',
      'hls-low-media',
      'hls-mid',
      'hls-mid-media',
      'storyboard',
      'storyboard-sprite',
    ])
    expect((await keysUnder(run.request.output.prefix)).filter((k) => k.endsWith('.mp4'))).toEqual([])
    const { hls } = await expectStreamed(
      result,
      [
        { name: 'low', width: 214, height: 120 },
        { name: 'mid', width: 426, height: 240 },
      ],
      true
    )
    for (const variant of hls.variants) expect(variant.starts).toEqual([0, 2, 4, 6, 8])
  })

  test('awkward sources stream too: 0.5 s, variable frame rate, odd sides, rotated, 10-bit HDR, no audio', async () => {
    const sizes = (...rungs: [string, number, number][]) =>
      rungs.map(([name, width, height]) => ({ name, width, height }))
    const cases: [string, Fixture, ReturnType<typeof sizes>, boolean][] = [
      ['0.5 s', fixtures.halfSecond, sizes(['low', 160, 120], ['mid', 320, 240]), true],
      ['variable frame rate', fixtures.vfr, sizes(['low', 160, 120], ['mid', 320, 240]), false],
      ['161×121', fixtures.odd, sizes(['low', 160, 120]), false],
      ['rotated', fixtures.rotated, sizes(['low', 120, 160], ['mid', 240, 320]), true],
      ['HDR', fixtures.hdr, sizes(['low', 214, 120]), false],
      ['silent', fixtures.silent, sizes(['low', 214, 120], ['mid', 426, 240]), false],
    ]
    for (const [label, fixture, rungs, audio] of cases) {
      const result = completed(await runJob(processor, fixture, { recipe: STREAMED }))
      const { hls, storyboard } = await expectStreamed(result, rungs, audio)
      expect({ label, audio: hls.variants.every((v) => v.codecs.includes('mp4a')) }).toEqual({ label, audio })
      if (fixture === fixtures.halfSecond) {
        // Shorter than a segment and than the storyboard's interval: one of each.
        for (const variant of hls.variants) {
          expect(variant.media.targetDuration).toBe(1)
          expect(variant.media.segments).toHaveLength(1)
        }
        expect(storyboard.cues).toHaveLength(1)
      }
      if (fixture === fixtures.vfr) {
        // Keyframes by time, not by frame count: the 0.7 s gaps do not move them.
        const keys = await Promise.all(
          rungs.map(async (r) =>
            keyframeTimes((await fetchOutput(result.outputs.find((o) => o.name === r.name)!.key)).file)
          )
        )
        expect(keys).toEqual([
          [0, 2, 4],
          [0, 2, 4],
        ])
      }
    }
  })

  test('refuses what is not a playable video, writes nothing, and keeps serving', async () => {
    const cases: [string, Fixture | { body: string; format: string }, string, RegExp][] = [
      ['text', fixtures.text, 'invalid_media', /not a readable MP4 file/],
      ['truncated header', fixtures.truncatedHeader, 'invalid_media', /moov atom not found/],
      ['truncated data', fixtures.truncatedData, 'invalid_media', /truncated/],
      ['audio only, with cover art', fixtures.audioWithCover, 'unsupported_format', /no video stream/],
      ['unknown container', { ...fixtures.withAudio, format: 'gif' }, 'unsupported_format', /gif/],
    ]
    for (const [label, source, code, message] of cases) {
      const run = await runJob(processor, source)
      const error = failed(run)
      expect({ label, code: error.code }).toEqual({ label, code })
      expect(error.message).toMatch(message)
      expect(error.message).not.toContain(processor.tmpDir)
      expect(await keysUnder(run.request.output.prefix)).toEqual([])
    }
    expect(leftovers(processor)).toEqual([])
    completed(await runJob(processor, fixtures.silent))
  })

  test('over the stream, frame-rate or duration limit, judged from the probe alone: refused at once, nothing made', async () => {
    const cases: [string, Fixture, string][] = [
      ['20 streams', overLimits.manyStreams, 'the file has 20 streams, over MAX_VIDEO_STREAMS (16)'],
      ['1000 fps', overLimits.highFrameRate, 'the video runs at 1000 fps, over MAX_VIDEO_FRAME_RATE (240 fps)'],
      // Two frames 10 hours apart: every duration the MP4's tables give is 36000 s, so it is refused unread.
      ['10 hours claimed', overLimits.tenHours, 'the video lasts 36000 s, over MAX_VIDEO_SECONDS (3600 s)'],
    ]
    for (const [label, fixture, message] of cases) {
      const run = await runJob(processor, fixture)
      expect({ label, error: failed(run) }).toEqual({
        label,
        error: { code: 'limit_exceeded', class: 'input', message },
      })
      expect(run.updates.filter((u) => u.progress > 5 && u.progress < 100)).toEqual([])
      expect(await keysUnder(run.request.output.prefix)).toEqual([])
    }
  })

  test('a missing source is source_missing', async () => {
    const run = await runJob(processor, fixtures.silent, { skipUpload: true })
    expect(failed(run)).toMatchObject({ code: 'source_missing', class: 'input' })
  })

  test('an HLS playlist or ffconcat script posing as MP4 is refused and opens nothing', async () => {
    let requests = 0
    const video = readFileSync(fixtures.segment.file)
    const server = Bun.serve({
      port: 0,
      hostname: '127.0.0.1',
      fetch() {
        requests++
        return new Response(video, { headers: { 'content-type': 'video/mp2t' } })
      },
    })
    try {
      const url = `http://127.0.0.1:${server.port}/segment.ts`
      // Probed as HLS, the playlists naming a local segment give a complete job (the local-file-read hazard); the
      // others are refused by ffmpeg's defaults too (nested http from a file, unsafe concat paths), kept as a net.
      const disguised = [
        hlsPlaylist(fixtures.segment.file),
        hlsPlaylist(`file://${fixtures.segment.file}`),
        hlsPlaylist(url),
        ffconcatScript(url),
        ffconcatScript(fixtures.segment.file),
      ]
      for (const body of disguised) {
        const run = await runJob(processor, { body, format: 'mp4' })
        expect(failed(run).code).toBe('invalid_media')
      }
      expect(requests).toBe(0)
    } finally {
      await server.stop(true)
    }
  })
})

describe('with tight limits', () => {
  let limited: Processor
  let timed: Processor
  let small: Processor

  beforeAll(async () => {
    ;[limited, timed, small] = await Promise.all([
      startProcessor({ MAX_VIDEO_SECONDS: '1', MAX_VIDEO_PIXELS: '50000' }),
      startProcessor({ VIDEO_TIMEOUT_SECONDS: '1' }),
      startProcessor({ MAX_VIDEO_BYTES: '16k' }),
    ])
  })

  test('over the duration or pixel limit fails fast, before transcoding', async () => {
    // 161×121 is under the pixel limit; its 2 s are over the 1 s limit.
    const long = await runJob(limited, fixtures.odd)
    expect(failed(long).code).toBe('limit_exceeded')
    expect(failed(long).message).toBe('the video lasts 2 s, over MAX_VIDEO_SECONDS (1 s)')
    // 320×240 is over 50000 pixels.
    const large = await runJob(limited, fixtures.withAudio)
    expect(failed(large).code).toBe('limit_exceeded')
    expect(failed(large).message).toBe('the video is 320×240 (76800 pixels), over MAX_VIDEO_PIXELS (50000 pixels)')
    for (const run of [long, large]) {
      expect(run.elapsedMs).toBeLessThan(2_000)
      expect(run.updates.filter((u) => u.progress > 5 && u.progress < 100)).toEqual([])
      expect(await keysUnder(run.request.output.prefix)).toEqual([])
    }
  })

  test('over MAX_VIDEO_BYTES by its declared size, or by its real one when the request understates it', async () => {
    const bytes = readFileSync(fixtures.withAudio.file).byteLength
    const declared = await runJob(small, fixtures.withAudio)
    const understated = await runJob(small, fixtures.withAudio, { size: 1000 })
    const message = `the original is ${Math.round((bytes / 1024) * 10) / 10} KiB (${bytes} bytes), over MAX_VIDEO_BYTES (16 KiB)`
    for (const run of [declared, understated]) {
      expect(failed(run)).toEqual({ code: 'limit_exceeded', class: 'input', message })
      expect(await keysUnder(run.request.output.prefix)).toEqual([])
    }
    // Refused before the download: a source that is not there is not even looked for.
    expect(failed(await runJob(small, fixtures.withAudio, { skipUpload: true })).code).toBe('limit_exceeded')
    expect(leftovers(small)).toEqual([])
  })

  test('a job past the wall-clock limit is killed and reported as timeout', async () => {
    const run = await runJob(timed, fixtures.long, { recipe: API })
    expect(failed(run).code).toBe('timeout')
    expect(run.elapsedMs).toBeLessThan(4_000)
    expect(leftovers(timed)).toEqual([])
    // No ffmpeg is left running on this processor's files.
    const running = readdirSync('/proc')
      .filter((entry) => /^\d+$/.test(entry))
      .map((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
        } catch {
          return ''
        }
      })
      .filter((cmdline) => cmdline.includes(timed.tmpDir))
    expect(running).toEqual([])
  })
})
