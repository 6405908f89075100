/**
 * Every video of the corpus through the whole system (its audio files: audio.corpus.ts). A valid video completes with a poster,
 * H.264/AAC renditions whose size and duration match the manifest, HLS that plays (ffmpeg reads every segment of the
 * master's variants from the outputs as stored, in a local directory) with segments aligned across rungs, and a
 * storyboard covering the video; an invalid file is refused with a reason (415 at upload when its bytes are not an
 * accepted container, else a `failed` job).
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { outputKey, videoOutputsOf } from '@app/shared'
import { builtInRecipe } from '../../services/api/uploads/presets.ts'
import { outputPrefix } from '../../services/api/uploads/object-keys.ts'
import { checkHls, checkStoryboard, keyframeTimes, probe } from '../helpers/video-fixtures.ts'
import { apiKey } from '../helpers/env.ts'
import { startStack, type Stack } from '../helpers/stack.ts'
import { loadCorpus, type CorpusEntry } from './corpus.ts'
import { useInfra } from '../helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

const corpus = loadCorpus()
const entries = corpus.entries.filter((e) => e.file.startsWith('videos/') && e.kind === 'video')
/** What an upload without a preset gets: 360p, 720p and 1080p as MP4 and HLS, a poster and a storyboard. */
const RECIPE = builtInRecipe('video')
const RUNGS = RECIPE.renditions.map((r) => r.height)

let stack: Stack
let s3: S3Client
const scratch = mkdtempSync(join(tmpdir(), 'corpus-videos-'))
beforeAll(async () => {
  stack = await startStack({ images: false, videos: true })
  s3 = new S3Client({
    endpoint: stack.env.S3_ENDPOINT,
    region: stack.env.S3_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: stack.env.S3_ACCESS_KEY_ID!, secretAccessKey: stack.env.S3_SECRET_ACCESS_KEY! },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
})
afterAll(async () => {
  await stack?.stop()
  s3?.destroy()
  rmSync(scratch, { recursive: true, force: true })
})

/**
 * Every output of a recipe for the rungs made, each as stored (not as the API serves playlists, with its own
 * addresses), in a directory of their own, named as their keys end.
 */
async function storedOutputs(jobId: string, recipe: typeof RECIPE): Promise<string> {
  const dir = join(scratch, jobId)
  mkdirSync(dir, { recursive: true })
  const prefix = outputPrefix(stack.env.SYSTEM!, jobId)
  for (const { name, format } of videoOutputsOf(recipe)) {
    const key = outputKey(prefix, name, format)
    const object = await s3.send(new GetObjectCommand({ Bucket: stack.env.S3_BUCKET, Key: key }))
    writeFileSync(join(dir, key.slice(prefix.length + 1)), await object.Body!.transformToByteArray())
  }
  return dir
}

type Outcome = { status: 'completed' } | { status: 'refused'; codes: string[] }
function expectedOutcome(entry: CorpusEntry): Outcome {
  if (!entry.expected.video_codec) return { status: 'refused', codes: ['unsupported_format', 'invalid_media'] }
  if (!entry.expected.valid) return { status: 'refused', codes: ['invalid_media'] }
  return { status: 'completed' }
}

test('the corpus has videos', () => {
  expect(entries.length).toBeGreaterThan(20)
})

for (const entry of entries) {
  const outcome = expectedOutcome(entry)
  test(`${entry.file}: ${outcome.status === 'completed' ? 'completes' : 'is refused with a reason'}`, async () => {
    const res = await stack.upload(readFileSync(join(corpus.dir, entry.file)))
    if (outcome.status === 'refused' && res.status === 415) {
      const { error } = (await res.json()) as { error: { code: string; message: string } }
      expect(error.code).toBe('unsupported_media_type')
      return
    }
    expect(res.status).toBe(202)
    const media = await stack.waitForFinal(((await res.json()) as { id: string }).id, 90_000)
    if (outcome.status === 'refused') {
      expect(media.status).toBe('failed')
      expect(outcome.codes).toContain(media.error!.code)
      expect(media.error!.message.length).toBeGreaterThan(10)
      expect(media.outputs).toEqual([])
      return
    }

    expect(media.status).toBe('completed')
    const width = entry.expected.display_width!
    const height = entry.expected.display_height!
    const metadata = media.metadata as {
      width: number
      height: number
      durationSeconds: number
      videoCodec: string
      audioCodec: string | null
    }
    expect([metadata.videoCodec, metadata.audioCodec]).toEqual([
      entry.expected.video_codec!,
      entry.expected.audio_codec ?? null,
    ])
    expect(metadata.height).toBe(height)
    // Anamorphic sources (non-square pixels, e.g. the 3GP's 12:11) are reported at their square-pixel display width.
    expect(Math.abs(metadata.width / width - 1)).toBeLessThan(0.1)
    const short = Math.min(width, height)
    const wanted = RUNGS.filter((r) => r <= short)
    const made = {
      ...RECIPE,
      renditions: RECIPE.renditions.filter((r) => (wanted.length ? wanted : [360]).includes(r.height)),
    }
    expect(media.outputs.map((o) => o.name)).toEqual(videoOutputsOf(made).map((o) => o.name))
    const poster = media.outputs.find((o) => o.name === 'poster')!
    expect(poster.contentType).toBe('image/webp')
    expect(poster.width >= poster.height).toBe(width >= height)

    // The manifest's duration is the container's (a subtitle track or a bogus header can stretch it); ours is the
    // picture and sound, so it may only be shorter, and the renditions must match ours.
    const content = (entry.expected as { content_duration_s?: number }).content_duration_s ?? entry.expected.duration_s!
    expect(metadata.durationSeconds).toBeLessThanOrEqual(content + 0.05)
    expect(metadata.durationSeconds).toBeGreaterThan(content * 0.75)
    const rungs = media.outputs.filter((o) => made.renditions.some((r) => r.name === o.name))
    for (const output of rungs) {
      expect((output.width % 2) + (output.height % 2)).toBe(0)
      expect(output.width >= output.height).toBe(width >= height) // portrait stays portrait
      const file = join(scratch, `${media.id}-${output.name}.mp4`)
      writeFileSync(file, new Uint8Array(await (await fetch(output.url, { headers: apiKey })).arrayBuffer()))
      const probed = await probe(file)
      const video = probed.streams.find((s) => s.codec_type === 'video')!
      expect(video).toMatchObject({
        codec_name: 'h264',
        pix_fmt: 'yuv420p',
        width: output.width,
        height: output.height,
      })
      expect(probed.streams.some((s) => s.codec_type === 'audio')).toBe(Boolean(entry.expected.audio_codec))
      expect(Math.abs(Number(probed.format.duration) - metadata.durationSeconds)).toBeLessThan(
        Math.max(0.1, metadata.durationSeconds * 0.03)
      )
    }

    // The HLS and the storyboard, as stored: playable, aligned across rungs, covering the video.
    const dir = await storedOutputs(media.jobId, made)
    const hls = await checkHls(join(dir, 'hls.m3u8'), metadata.durationSeconds)
    expect(hls.problems).toEqual([])
    expect(hls.variants.map((v) => v.resolution)).toEqual(
      expect.arrayContaining(rungs.map((r) => ({ width: r.width, height: r.height })))
    )
    expect(hls.variants).toHaveLength(rungs.length)
    for (const variant of hls.variants)
      expect(variant.codecs.includes('mp4a.40.2')).toBe(Boolean(entry.expected.audio_codec))
    const keyframes = await Promise.all(rungs.map((r) => keyframeTimes(join(dir, `hls-${r.name}-media.m4s`))))
    for (const times of keyframes) expect(times).toEqual(keyframes[0]!)
    // The API gives each output's durationSeconds (the protocol's), which MediaBody does not spell out.
    const vtt = media.outputs.find((o) => o.name === 'storyboard') as { durationSeconds?: number }
    expect((await checkStoryboard(join(dir, 'storyboard.vtt'), vtt.durationSeconds!)).problems).toEqual([])
    expect(Math.abs(vtt.durationSeconds! - metadata.durationSeconds)).toBeLessThan(
      Math.max(0.1, metadata.durationSeconds * 0.03)
    )
  })
}
