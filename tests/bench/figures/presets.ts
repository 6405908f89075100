/**
 * Figures 10–12: what presets cost in the image processor's own render (services/images renderImage, in this process:
 * the broker and S3 are the other figures' business), each beside its baseline in the same run, alternating.
 * - 10: the ThumbHash and dominant colour on a 12 MP job (thumb and preview), against the same job without them.
 * - 11: AVIF at 1280 px and effort 2: the encode's time, and its bytes against WebP at quality 80 over the corpus's
 *   photos (CORPUS_DIR, by default ../shared/corpus; a generated photo without it).
 * - 12: a five-width srcset (320–1920) from a 4K JPEG, decode included, against bare sharp making the same widths.
 */
import { existsSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import sharp, { type Sharp } from 'sharp'
import { inspectImage, placeholderOf, planImages, readConfig, renderImage } from '../../../services/images/main.ts'
import { alternate, median, spread, type Bench, type Figure } from '../stats.ts'
import { photo } from '../work.ts'

const limits = readConfig({ S3_ACCESS_KEY_ID: 'bench', S3_SECRET_ACCESS_KEY: 'bench' }).limits
/** Photos of the corpus, decoded as a photo would be: landscape, portrait, a 4K frame, a WebP. */
const CORPUS_PHOTOS = [
  'exif-orientation-1-landscape.jpg',
  'exif-orientation-1-portrait.jpg',
  'jpeg-ultrahdr-gainmap-3840x2160.jpg',
  'webp-lossy.webp',
]

export async function presetFigures(bench: Bench): Promise<Figure[]> {
  return [await placeholderCost(bench), await avif(bench), await srcset(bench)]
}

/** Milliseconds `renderImage` takes for `specs` on `file`. */
async function render(file: string, specs: Parameters<typeof planImages>[0], placeholder = true): Promise<number> {
  const { metadata } = await inspectImage(file, limits)
  const started = performance.now()
  await renderImage(file, planImages(specs, metadata), metadata, { ...limits, autoOrient: true, placeholder })
  return performance.now() - started
}

async function placeholderCost(bench: Bench): Promise<Figure> {
  bench.say('figure 10: ThumbHash and dominant colour on a 12 MP job')
  const file = join(bench.work, 'presets-12mp.jpg')
  writeFileSync(file, await photo(4000, 3000))
  const specs = [
    { name: 'thumb', format: 'webp' as const, width: 320, height: 320 },
    { name: 'preview', format: 'webp' as const, width: 1280, height: 1280 },
  ]
  // What the placeholder adds is its own work on the pixels the job decodes once (1280 px for this recipe): timed
  // alone, many times, since a few milliseconds are lost in a whole job's spread. The whole job with and without
  // it, alternating, is the context.
  const { data, info } = await sharp(file)
    .resize(1280, 1280, { fit: 'inside' })
    .raw()
    .toBuffer({ resolveWithObject: true })
  const raw = { width: info.width, height: info.height, channels: info.channels }
  const own: number[] = []
  for (let i = 0; i < (bench.quick ? 11 : 41); i++) {
    const started = performance.now()
    await placeholderOf(data, raw, { seconds: 60 })
    own.push(performance.now() - started)
  }
  await render(file, specs) // warm-up
  const jobs = await alternate(
    bench.quick ? 5 : 11,
    () => render(file, specs, false),
    () => render(file, specs)
  )
  const added = median(own.slice(1))
  return {
    id: 10,
    what: '12 MP JPEG, thumb and preview: what its ThumbHash and dominant colour add (ms, p50), from the one decode',
    value: `+${added.toFixed(1)} (${spread(own.slice(1), 1)})`,
    baseline: `the job without them: ${median(jobs.bare).toFixed(0)} ms; with: ${median(jobs.ours).toFixed(0)} ms`,
    ratio: median(jobs.ours) / median(jobs.bare),
    target: '≤ 5 ms added (p50)',
    pass: added <= 5,
    note: "the placeholder is made from the pixels the job decodes once (no second decode of the original), beside the outputs' encodes",
    data: { own, jobs },
  }
}

async function avif(bench: Bench): Promise<Figure> {
  bench.say('figure 11: AVIF at 1280 px, effort 2, against WebP q80')
  const corpus = resolve(process.env.CORPUS_DIR ?? '../shared/corpus', 'images')
  const files = CORPUS_PHOTOS.map((name) => join(corpus, name)).filter(existsSync)
  if (!files.length) {
    const generated = join(bench.work, 'presets-photo.jpg')
    writeFileSync(generated, await photo(3000, 2000))
    files.push(generated)
  }
  const rounds = bench.quick ? 2 : 5
  const avifMs: number[] = []
  const webpMs: number[] = []
  let avifBytes = 0
  let webpBytes = 0
  for (const file of files) {
    const pixels = await pixels1280(file)
    for (let round = 0; round < rounds; round++) {
      let started = performance.now()
      const w = await pixels().webp({ quality: 80 }).toBuffer()
      webpMs.push(performance.now() - started)
      started = performance.now()
      const a = await pixels().avif({ quality: 60, effort: 2 }).toBuffer()
      avifMs.push(performance.now() - started)
      if (round === 0) {
        webpBytes += w.length
        avifBytes += a.length
      }
    }
  }
  const bytes = avifBytes / webpBytes
  // Effort 1 beside it: what the next step down costs and saves (the default stays 2; see docs/presets.md).
  const effortOne: number[] = []
  for (const file of files) {
    const pixels = await pixels1280(file)
    const started = performance.now()
    await pixels().avif({ quality: 60, effort: 1 }).toBuffer()
    effortOne.push(performance.now() - started)
  }
  return {
    id: 11,
    what: `AVIF 1280 px (quality 60, effort 2) over ${files.length} corpus photo(s): encode time (ms); bytes against WebP q80`,
    value: `${median(avifMs).toFixed(0)} ms (${spread(avifMs, 0)}); ${(avifBytes / 1024).toFixed(0)} KiB`,
    baseline: `WebP q80: ${median(webpMs).toFixed(0)} ms; ${(webpBytes / 1024).toFixed(0)} KiB`,
    ratio: bytes,
    target: '≤ 400 ms p50; ≤ 0.8× the bytes',
    pass: median(avifMs) <= 400 && bytes <= 0.8,
    note: `effort 1 took ${median(effortOne).toFixed(0)} ms (p50 over the same photos)`,
    data: { avifMs, webpMs, avifBytes, webpBytes, files: files.length, effortOne },
  }
}

async function srcset(bench: Bench): Promise<Figure> {
  bench.say('figure 12: a five-width srcset from a 4K JPEG')
  const file = join(bench.work, 'presets-4k.jpg')
  writeFileSync(file, await photo(3840, 2160))
  const widths = [320, 640, 960, 1280, 1920]
  const specs = [{ name: 'srcset', format: 'webp' as const, widths, quality: 80 }]
  // Bare sharp: one decode at the widest, then each width from those pixels, as the processor does.
  const bare = async () => {
    const started = performance.now()
    const { data, info } = await sharp(file).autoOrient().resize(1920).raw().toBuffer({ resolveWithObject: true })
    const raw = { raw: { width: info.width, height: info.height, channels: info.channels } }
    await Promise.all(widths.map((w) => sharp(data, raw).resize(w).webp({ quality: 80 }).toBuffer()))
    return performance.now() - started
  }
  await render(file, specs) // warm-up
  await bare()
  const times = await alternate(bench.quick ? 5 : 11, bare, () => render(file, specs))
  return {
    id: 12,
    what: 'A five-width srcset (320–1920) from a 4K JPEG, decode included (ms)',
    value: `${median(times.ours).toFixed(0)} (${spread(times.ours, 0)})`,
    baseline: `bare sharp, one decode: ${median(times.bare).toFixed(0)} (${spread(times.bare, 0)})`,
    ratio: median(times.ours) / median(times.bare),
    target: '≤ 700 ms p50',
    pass: median(times.ours) <= 700,
    data: times,
  }
}

/** A photo's pixels at 1280 px, decoded once, as the processor encodes each output from its one decode. */
async function pixels1280(file: string): Promise<() => Sharp> {
  const { data, info } = await sharp(file)
    .autoOrient()
    .resize(1280, 1280, { fit: 'inside' })
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true })
  return () => sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels } })
}
