/**
 * Figure 7: the image processor's memory over 2,000 mixed images (JPEG, PNG with alpha, WebP, GIF; 64 px to 12 MP),
 * 8 in flight: its RSS once the first 200 are done, against its RSS after the last (and after every 200 between).
 */
import sharp from 'sharp'
import { rssOf, throughPipeline, type Stack } from '../stack.ts'
import { rate, type Bench, type Figure } from '../stats.ts'
import { photo } from '../work.ts'

export async function memoryFigure(bench: Bench, stack: Stack): Promise<Figure> {
  bench.say('figure 7: processor memory over mixed images')
  const base = await photo(1600, 1200)
  const inputs = [
    await photo(64, 64),
    await photo(4000, 3000),
    await photo(1024, 768),
    new Uint8Array(await sharp(base).ensureAlpha(0.5).png().toBuffer()),
    new Uint8Array(await sharp(base).webp({ quality: 85 }).toBuffer()),
    new Uint8Array(await sharp(base).resize(400).gif().toBuffer()),
    await photo(320, 240),
    await photo(2000, 1500),
  ]
  const total = bench.quick ? 400 : 2000
  const first = 200
  const run = (index: number) => throughPipeline(stack.url, inputs[index % inputs.length]!)
  // RSS after every 200, so that a leak (a steady climb) shows apart from the allocator settling (a plateau).
  const series: number[] = []
  const started = performance.now()
  for (let done = 0; done < total; done += first) {
    await rate(first, 8, (index) => run(done + index))
    series.push(rssOf(stack.pids.images))
  }
  const speed = total / ((performance.now() - started) / 1000)
  const afterFirst = series[0]!
  const afterLast = series.at(-1)!
  const change = afterLast / afterFirst - 1
  const mb = (bytes: number) => (bytes / 1e6).toFixed(0)
  return {
    id: 7,
    what: `image processor RSS over ${total} mixed images (8 kinds, 64 px to 12 MP), 8 in flight (MB)`,
    value: `${mb(afterLast)} after the last (${(change * 100).toFixed(1)} %)`,
    baseline: `${mb(afterFirst)} after the first ${first}`,
    ratio: afterLast / afterFirst,
    target: 'within ±15 %',
    pass: Math.abs(change) <= 0.15,
    note: `RSS after each 200 (MB): ${series.map(mb).join(', ')}`,
    data: { afterFirst, afterLast, series, imagesPerSecond: speed },
  }
}
