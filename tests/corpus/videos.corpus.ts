/**
 * Every video and audio file of the corpus through the whole system. A valid video completes with a poster and
 * H.264/AAC renditions whose size and duration match the manifest; an invalid file is refused with a reason (415 at
 * upload when its bytes are not an accepted container, else a `failed` job). Audio-only files get the documented
 * answer: 415 for audio containers, `unsupported_format` ("no video stream") for audio inside MP4.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { probe } from '../helpers/video-fixtures.ts'
import { apiKey } from '../helpers/env.ts'
import { startStack, type Stack } from '../helpers/stack.ts'
import { loadCorpus, type CorpusEntry } from './corpus.ts'
import { useInfra } from '../helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

const corpus = loadCorpus()
const entries = corpus.entries.filter((e) => e.file.startsWith('videos/'))
const RUNGS = [360, 720, 1080]

let stack: Stack
const scratch = mkdtempSync(join(tmpdir(), 'corpus-videos-'))
beforeAll(async () => {
  stack = await startStack({ images: false, videos: true })
})
afterAll(async () => {
  await stack?.stop()
  rmSync(scratch, { recursive: true, force: true })
})

type Outcome = { status: 'completed' } | { status: 'refused'; codes: string[] }
function expectedOutcome(entry: CorpusEntry): Outcome {
  if (entry.kind === 'audio' || !entry.expected.video_codec)
    return { status: 'refused', codes: ['unsupported_format', 'invalid_media'] }
  if (!entry.expected.valid) return { status: 'refused', codes: ['invalid_media'] }
  return { status: 'completed' }
}

test('the corpus has videos and audio', () => {
  expect(entries.filter((e) => e.kind === 'video').length).toBeGreaterThan(20)
  expect(entries.filter((e) => e.kind === 'audio').length).toBeGreaterThan(5)
})

for (const entry of entries) {
  const outcome = expectedOutcome(entry)
  test(`${entry.file}: ${outcome.status === 'completed' ? 'completes' : 'is refused with a reason'}`, async () => {
    const res = await stack.upload(readFileSync(join(corpus.dir, entry.file)))
    if (outcome.status === 'refused' && res.status === 415) {
      const { error } = (await res.json()) as { error: { code: string; message: string } }
      expect(error.code).toBe('unsupported_media_type')
      if (entry.kind === 'audio' && entry.expected.valid) expect(error.message).toContain('audio')
      return
    }
    expect(res.status).toBe(202)
    const media = await stack.waitForFinal(((await res.json()) as { id: string }).id, 90_000)
    if (outcome.status === 'refused') {
      expect(media.status).toBe('failed')
      expect(outcome.codes).toContain(media.error!.code)
      expect(media.error!.message.length).toBeGreaterThan(10)
      if (entry.kind === 'audio') expect(media.error!.message).toContain('no video stream')
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
    expect(media.outputs.map((o) => o.name)).toEqual([
      'poster',
      ...(wanted.length ? wanted : [360]).map((r) => `${r}p`),
    ])
    const poster = media.outputs.find((o) => o.name === 'poster')!
    expect(poster.contentType).toBe('image/webp')
    expect(poster.width >= poster.height).toBe(width >= height)

    // The manifest's duration is the container's (a subtitle track or a bogus header can stretch it); ours is the
    // picture and sound, so it may only be shorter, and the renditions must match ours.
    const content = (entry.expected as { content_duration_s?: number }).content_duration_s ?? entry.expected.duration_s!
    expect(metadata.durationSeconds).toBeLessThanOrEqual(content + 0.05)
    expect(metadata.durationSeconds).toBeGreaterThan(content * 0.75)
    for (const output of media.outputs.filter((o) => o.name !== 'poster')) {
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
  })
}
