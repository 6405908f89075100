/**
 * Every audio file of the corpus through the whole system (API, audio processor, broker, S3). A valid file completes
 * as audio with an AAC M4A, an Opus WebM, waveform peaks and (when it embeds a picture) a WebP cover; no output but
 * the cover holds a video stream; the duration reported is what decodes, not what the headers claim; and each
 * encoding is loudness-normalised: at the target, or held under the true-peak ceiling, or given the maximum gain,
 * never made quieter when the target is louder. An invalid file is refused with a reason: 415 at upload when nothing
 * in it is audio, else a `failed` job (`invalid_media`). The loudness figures of every file are written to
 * tests/artifacts/corpus/audio-loudness.md.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AUDIO_LOUDNESS_DEFAULTS, audioOutputsOf, type AudioMetadata } from '@app/shared'
import { CODEC_HEADROOM_DB, OUTPUT_SAMPLE_RATE } from '../../services/audio/main.ts'
import { builtInRecipe } from '../../services/api/uploads/presets.ts'
import { ebur128, peaksProblems, type Measured } from '../helpers/audio-fixtures.ts'
import { apiKey } from '../helpers/env.ts'
import { useInfra } from '../helpers/infra.ts'
import { writeReport } from '../helpers/logs.ts'
import { startStack, type MediaBody, type Stack } from '../helpers/stack.ts'
import { probe } from '../helpers/video-fixtures.ts'
import { fitInside, loadCorpus, type CorpusEntry } from './corpus.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

const corpus = loadCorpus()
const entries = corpus.entries.filter((e) => e.kind === 'audio')
/** What an upload without a preset gets: AAC and Opus, peaks, the cover, normalised to the default target. */
const RECIPE = builtInRecipe('audio')
const { targetLufs: TARGET, truePeakDb: CEILING, maxGainDb: MAX_GAIN } = AUDIO_LOUDNESS_DEFAULTS
const ENCODINGS = [
  { name: RECIPE.aac!.name, codec: 'aac', contentType: 'audio/mp4' },
  { name: RECIPE.opus!.name, codec: 'opus', contentType: 'audio/webm' },
] as const

let stack: Stack
const scratch = mkdtempSync(join(tmpdir(), 'corpus-audio-'))
beforeAll(async () => {
  stack = await startStack({ images: false, audio: true })
})
afterAll(async () => {
  await stack?.stop()
  rmSync(scratch, { recursive: true, force: true })
  writeReport('corpus/audio-loudness.md', loudnessTable())
})

type Outcome = { status: 'completed' } | { status: 'refused' } | { status: 'failed'; code: string }
/** A file no demuxer reads (the manifest has no format for it) holds nothing the API takes for audio: 415. */
function expectedOutcome(entry: CorpusEntry): Outcome {
  if (entry.expected.valid) return { status: 'completed' }
  return entry.expected.format === null ? { status: 'refused' } : { status: 'failed', code: 'invalid_media' }
}
const describeOutcome = (outcome: Outcome) =>
  outcome.status === 'completed'
    ? 'completes, normalised'
    : outcome.status === 'refused'
      ? 'is refused at upload (415)'
      : `fails with ${outcome.code}`

type Verdict = 'at target' | 'peak-limited' | 'gain-capped' | 'silent'
type Audio = Omit<MediaBody, 'metadata' | 'outputs'> & {
  format: string
  metadata: AudioMetadata
  outputs: (MediaBody['outputs'][number] & { durationSeconds?: number })[]
}
/** One line of the loudness table, filled in as a file is judged (so a failing file still shows its figures). */
interface Row {
  file: string
  codec?: string
  channels?: number
  decoded?: number
  header?: number | null
  metadata?: AudioMetadata
  outputs: Partial<Record<'aac' | 'opus', Measured>>
  verdict?: Verdict
  error?: string
}
const rows = new Map<string, Row>()

/** What decodes of the first audio stream, in seconds, counted in samples at the outputs' rate (errors and all). */
async function decodedSeconds(file: string): Promise<number> {
  const pcm = ['-map', '0:a:0', '-ac', '1', '-ar', String(OUTPUT_SAMPLE_RATE), '-f', 's16le', '-']
  const child = Bun.spawn(['ffmpeg', '-nostdin', '-v', 'quiet', '-i', file, ...pcm], {
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'ignore',
  })
  const bytes = (await new Response(child.stdout).arrayBuffer()).byteLength
  await child.exited
  return bytes / 2 / OUTPUT_SAMPLE_RATE
}

/** An output as served, in the scratch directory. */
async function download(media: Audio, name: string, extension: string): Promise<string> {
  const output = media.outputs.find((o) => o.name === name)!
  const res = await fetch(output.url, { headers: apiKey })
  expect(res.status).toBe(200)
  const file = join(scratch, `${media.id}-${name}.${extension}`)
  writeFileSync(file, new Uint8Array(await res.arrayBuffer()))
  return file
}

test('the corpus has audio files, valid and not', () => {
  expect(entries.filter((e) => e.expected.valid).length).toBeGreaterThan(5)
  expect(entries.filter((e) => !e.expected.valid).length).toBeGreaterThan(0)
})

for (const entry of entries) {
  const outcome = expectedOutcome(entry)
  test(`${entry.file}: ${describeOutcome(outcome)}`, async () => {
    const row: Row = { file: entry.file.replace(/^videos\//, ''), outputs: {} }
    rows.set(entry.file, row)
    const res = await stack.upload(readFileSync(join(corpus.dir, entry.file)))
    if (res.status === 415) row.error = 'refused at upload (415)'
    if (outcome.status === 'refused') {
      expect(res.status).toBe(415)
      const { error } = (await res.json()) as { error: { code: string; message: string } }
      expect(error.code).toBe('unsupported_media_type')
      expect(error.message).toContain('not an image, video or audio format')
      return
    }
    expect(res.status).toBe(202)
    const accepted = (await res.json()) as { id: string; kind: string }
    expect(accepted.kind).toBe('audio')
    // A deadline well inside the test's own (tests/setup.ts sets 60 s, over the CLI's --timeout), so a file that
    // hangs the processor fails here, saying which media is stuck in which state; each file takes about a second.
    const media = (await stack.waitForFinal(accepted.id, 30_000)) as Audio
    if (media.status === 'failed') row.error = `failed (${media.error!.code})`

    if (outcome.status === 'failed') {
      expect(media.status).toBe('failed')
      expect(media.error!.code).toBe(outcome.code)
      expect(media.error!.message).toMatch(/truncated or damaged/)
      expect(media.outputs).toEqual([])
      return
    }

    expect(media.status).toBe('completed')
    const { metadata } = media
    const decoded = await decodedSeconds(join(corpus.dir, entry.file))
    Object.assign(row, {
      codec: metadata.codec,
      channels: metadata.channels,
      decoded: metadata.durationSeconds,
      header: entry.expected.duration_s,
      metadata,
    })
    const source = entry.expected as {
      audio_sample_rate?: number
      audio_channels?: number
      attached_pic_codec?: string
    }
    expect(media.kind).toBe('audio')
    expect(metadata).toMatchObject({
      container: media.format,
      codec: entry.expected.audio_codec!,
      sampleRate: source.audio_sample_rate!,
      channels: source.audio_channels!,
      hasCover: Boolean(source.attached_pic_codec),
    })
    // What decodes, not what a header says (an MP3's ID3-skewed estimate, an MP4's edit list): measured here by
    // decoding the file ourselves.
    expect(Math.abs(metadata.durationSeconds - decoded)).toBeLessThanOrEqual(0.02)

    // Every output the recipe names, the cover only when the file embeds a picture; none but the cover a video.
    const names = audioOutputsOf(RECIPE)
      .map((o) => o.name)
      .filter((name) => name !== RECIPE.cover!.name || metadata.hasCover)
    expect(media.outputs.map((o) => o.name).sort()).toEqual(names.sort())
    const wantChannels = Math.min(2, metadata.channels)
    const { loudness } = metadata
    for (const { name, codec, contentType } of ENCODINGS) {
      const output = media.outputs.find((o) => o.name === name)!
      expect(output.contentType).toBe(contentType)
      const file = await download(media, name, codec === 'aac' ? 'm4a' : 'webm')
      const probed = await probe(file)
      expect({ name, streams: probed.streams.map((s) => [s.codec_type, s.codec_name]) }).toEqual({
        name,
        streams: [['audio', codec]],
      })
      const stream = probed.streams[0] as unknown as { sample_rate: string; channels: number }
      expect({ name, rate: stream.sample_rate, channels: stream.channels }).toEqual({
        name,
        rate: String(OUTPUT_SAMPLE_RATE),
        channels: wantChannels,
      })
      expect(Math.abs(output.durationSeconds! - metadata.durationSeconds)).toBeLessThanOrEqual(0.05)
      expect(Math.abs(Number(probed.format.duration) - metadata.durationSeconds)).toBeLessThanOrEqual(0.05)
      row.outputs[codec] = await ebur128(file)
    }
    const peaksFile = await download(media, RECIPE.peaks!.name, 'json')
    const peaks = JSON.parse(readFileSync(peaksFile, 'utf8')) as { data: number[] }
    expect(peaksProblems(peaks, metadata.durationSeconds, 2000)).toEqual([])
    expect(peaks.data.some((x) => x !== 0)).toBe(!loudness.silent)
    if (metadata.hasCover) {
      const cover = media.outputs.find((o) => o.name === RECIPE.cover!.name)!
      const picture = (await probe(join(corpus.dir, entry.file))).streams.find((s) => s.codec_type === 'video')!
      const [width, height] = fitInside(picture.width!, picture.height!, RECIPE.cover!.width)
      expect(cover).toMatchObject({ contentType: 'image/webp', width, height })
      const probed = await probe(await download(media, cover.name, 'webp'))
      expect(probed.streams.map((s) => [s.codec_type, s.codec_name, s.width, s.height])).toEqual([
        ['video', 'webp', width, height],
      ])
    }

    // Loudness: each encoding sounds as the source plus the gain reported, under the ceiling, and is at the target,
    // or limited by its true peak, or given the maximum gain; never quieter when the target is louder.
    const measured = Object.values(row.outputs)
    if (loudness.silent) {
      expect(loudness.gainDb).toBe(0)
      for (const out of measured) expect(out.integratedLufs).toBeNull()
      row.verdict = 'silent'
      return
    }
    const input = loudness.integratedLufs!
    for (const out of measured) {
      expect(Math.abs(out.integratedLufs! - (input + loudness.gainDb))).toBeLessThanOrEqual(1)
      expect(out.truePeakDb!).toBeLessThanOrEqual(CEILING)
      // (A source whose true peak is already over the ceiling is the one case the gain may be negative.)
      if (input < TARGET && loudness.truePeakDb! <= CEILING) {
        expect(loudness.gainDb).toBeGreaterThanOrEqual(0)
        expect(out.integratedLufs!).toBeGreaterThanOrEqual(input - 0.5)
      }
    }
    const atTarget = measured.every((out) => Math.abs(out.integratedLufs! - TARGET) <= 1)
    const gainCapped = loudness.gainDb === MAX_GAIN
    // Short of the target and the cap, the gain went to the peak: the loudest encoding sits just under the ceiling.
    const peakLimited =
      loudness.gainDb < Math.min(TARGET - input, MAX_GAIN) &&
      Math.max(...measured.map((out) => out.truePeakDb!)) >= CEILING - CODEC_HEADROOM_DB - 1
    row.verdict = atTarget ? 'at target' : gainCapped ? 'gain-capped' : peakLimited ? 'peak-limited' : undefined
    expect({ file: entry.file, verdict: row.verdict }).toEqual({ file: entry.file, verdict: expect.any(String) })
  })
}

/** The loudness table: one row a file, in manifest order, with the outputs' figures as measured here. */
function loudnessTable(): string {
  const n = (x: number | null | undefined, digits = 1) =>
    x === undefined ? '—' : x === null ? 'n/a' : x.toFixed(digits)
  const manifest = (x: string | number | null | undefined) => (x == null ? '—' : `${x}*`)
  const lines = [
    `Target ${TARGET} LUFS, true-peak ceiling ${CEILING} dBTP, maximum gain +${MAX_GAIN} dB (the built-in audio recipe).`,
    '',
    '| file | codec | ch | decoded s (header) | in LUFS | in dBTP | LRA LU | gain dB | m4a LUFS | m4a dBTP | opus LUFS | opus dBTP | result |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for (const entry of entries) {
    const row = rows.get(entry.file)
    if (!row) continue
    const l = row.metadata?.loudness
    const header =
      row.header != null && row.decoded !== undefined && Math.abs(row.header - row.decoded) > 0.02
        ? ` (${row.header.toFixed(3)})`
        : ''
    lines.push(
      `| ${[
        row.file,
        row.codec ?? manifest(entry.expected.audio_codec),
        row.channels ?? manifest((entry.expected as { audio_channels?: number }).audio_channels),
        row.decoded === undefined ? '—' : `${row.decoded.toFixed(3)}${header}`,
        n(l?.integratedLufs),
        n(l?.truePeakDb),
        n(l?.rangeLu),
        l ? `${l.gainDb > 0 ? '+' : ''}${l.gainDb.toFixed(1)}` : '—',
        n(row.outputs.aac?.integratedLufs),
        n(row.outputs.aac?.truePeakDb),
        n(row.outputs.opus?.integratedLufs),
        n(row.outputs.opus?.truePeakDb),
        row.error ?? row.verdict ?? 'none of the three (test failed)',
      ].join(' | ')} |`
    )
  }
  lines.push(
    '',
    "decoded: the duration reported (what decodes), with the header's in brackets where they differ by over 20 ms.",
    '* from the manifest: a failed or refused job has no metadata.'
  )
  return lines.join('\n')
}
