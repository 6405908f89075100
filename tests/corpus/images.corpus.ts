/**
 * Every image of the corpus through the whole system: a valid image completes with correctly sized outputs; an
 * invalid one, or one this system deliberately refuses (over the pixel limit, BMP which libvips cannot decode),
 * fails with a code and a readable reason. Pixel bombs fail fast and leave memory low.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import sharp from 'sharp'
import { apiKey } from '../helpers/env.ts'
import { startStack, type Stack } from '../helpers/stack.ts'
import { fitInside, loadCorpus, type CorpusEntry } from './corpus.ts'
import { useInfra } from '../helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

const corpus = loadCorpus()
const images = corpus.entries.filter((e) => e.kind === 'image')

let stack: Stack
beforeAll(async () => {
  stack = await startStack()
})
afterAll(async () => {
  await stack?.stop()
})

/** What the system should do with an entry, from the manifest's `valid` flag and notes. */
function expectedOutcome(
  entry: CorpusEntry
): { status: 'completed' } | { status: 'failed'; code: string } | { status: 'refused' } {
  // Off the allow-list (docs/security.md): SVG (a document that can reference files and URLs) and BMP (no libvips
  // loader) are refused at upload, 415.
  if (entry.expected.format === 'svg' || entry.expected.format === 'bmp') return { status: 'refused' }
  if (!entry.expected.valid) return { status: 'failed', code: 'invalid_media' }
  if (entry.expected.sharp_decode?.includes('exceeds pixel limit')) return { status: 'failed', code: 'limit_exceeded' }
  return { status: 'completed' }
}
const describeOutcome = (outcome: ReturnType<typeof expectedOutcome>) =>
  outcome.status === 'completed'
    ? 'completes'
    : outcome.status === 'refused'
      ? 'is refused at upload (415)'
      : `fails with ${outcome.code}`

test('the corpus has images', () => {
  expect(images.length).toBeGreaterThan(40)
})

for (const entry of images) {
  const outcome = expectedOutcome(entry)
  test(`${entry.file}: ${describeOutcome(outcome)}`, async () => {
    const bytes = readFileSync(join(corpus.dir, entry.file))
    const res = await stack.upload(bytes)
    if (outcome.status === 'refused') {
      expect(res.status).toBe(415)
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unsupported_media_type')
      return
    }
    expect(res.status).toBe(202)
    const { id } = (await res.json()) as { id: string }
    const started = Date.now()
    const media = await stack.waitForFinal(id, 60_000)
    const elapsed = Date.now() - started

    if (outcome.status === 'failed') {
      expect(media.status).toBe('failed')
      expect(media.error?.code).toBe(outcome.code)
      expect(media.error!.message.length).toBeGreaterThan(10)
      expect(media.outputs).toEqual([])
      if (outcome.code === 'limit_exceeded') expect(elapsed).toBeLessThan(3_000) // refused from the header alone
      return
    }
    expect(media.status).toBe('completed')
    const width = entry.expected.display_width ?? entry.expected.width!
    const height = entry.expected.display_height ?? entry.expected.height!
    expect(media.metadata).toMatchObject({ width, height })
    for (const [name, box] of [
      ['thumb', 320],
      ['preview', 1280],
    ] as const) {
      const output = media.outputs.find((o) => o.name === name)!
      const [w, h] = fitInside(width, height, box)
      expect(Math.abs(output.width - w)).toBeLessThanOrEqual(1)
      expect(Math.abs(output.height - h)).toBeLessThanOrEqual(1)
      const body = new Uint8Array(await (await fetch(output.url, { headers: apiKey })).arrayBuffer())
      const meta = await sharp(body).metadata()
      expect(meta).toMatchObject({ format: 'webp', width: output.width, height: output.height, space: 'srgb' })
      expect(meta.exif).toBeUndefined()
    }
  })
}

test('the iPhone HEIC comes out upright (portrait, as the phone showed it)', async () => {
  const entry = images.find((e) => e.file.includes('heic-phone-orientation-6'))!
  const res = await stack.upload(readFileSync(join(corpus.dir, entry.file)))
  const media = await stack.waitForFinal(((await res.json()) as { id: string }).id, 60_000)
  expect(media.status).toBe('completed')
  const preview = media.outputs.find((o) => o.name === 'preview')!
  // irot turns the stored grid to portrait; applying EXIF orientation 6 on top would turn it back to landscape.
  expect([preview.width, preview.height]).toEqual([960, 1280])
})

test('pixel bombs fail fast and the processor stays small', async () => {
  const bombs = images.filter((e) => e.expected.sharp_decode?.includes('exceeds pixel limit'))
  expect(bombs.length).toBeGreaterThanOrEqual(2)
  const before = process.memoryUsage().rss
  for (const entry of bombs) {
    const res = await stack.upload(readFileSync(join(corpus.dir, entry.file)))
    const started = Date.now()
    const media = await stack.waitForFinal(((await res.json()) as { id: string }).id)
    expect(media.error?.code).toBe('limit_exceeded')
    expect(Date.now() - started).toBeLessThan(3_000)
  }
  expect(process.memoryUsage().rss - before).toBeLessThan(100 * 1024 * 1024)
})
