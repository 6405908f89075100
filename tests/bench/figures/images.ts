/**
 * Figures 1–4 and 9: images through the running system against bare sharp, `vipsthumbnail` and `heif-convert`
 * doing the same work (thumb and preview as WebP), in the same run; throughput runs alternate with their baseline.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { throughPipeline, upload, type Stack } from '../stack.ts'
import { exec, median, percentile, rate, spread, type Bench, type Figure } from '../stats.ts'
import { bareSharp, photo } from '../work.ts'
import { apiKey } from '../../helpers/env.ts'

export async function imageFigures(bench: Bench, stack: Stack, wanted: (...ids: number[]) => boolean): Promise<Figure[]> {
  const dir = join(bench.work, 'images')
  mkdirSync(dir, { recursive: true })
  const figures: Figure[] = []

  // ── 1 and 2: 12 MP JPEG throughput, 8 in flight ─────────────────────────────────────────────────────────────
  if (wanted(1, 2)) {
    bench.say('figures 1 and 2: 12 MP JPEG throughput')
    const big = await photo(4000, 3000)
    const bigFile = join(dir, 'big.jpg')
    writeFileSync(bigFile, big)
    const vipsOut = (i: number, size: number) => join(dir, `vips-${i % 8}-${size}.webp[Q=80]`)
    const vips = (i: number) =>
      Promise.all([320, 1280].map((size) => exec('vipsthumbnail', [bigFile, '--size', `${size}x${size}`, '-o', vipsOut(i, size)])))
    await throughPipeline(stack.url, big) // warm-ups
    await bareSharp(big)
    await vips(0)
    const rounds = bench.quick ? 1 : 3
    const count = bench.quick ? 8 : 24
    const ours: number[] = []
    const bare: number[] = []
    const floor: number[] = []
    for (let round = 0; round < rounds; round++) {
      ours.push(await rate(count, 8, () => throughPipeline(stack.url, big)))
      bare.push(await rate(count, 8, () => bareSharp(big)))
      floor.push(await rate(count, 8, vips))
  }
  const ratio1 = median(ours) / median(bare)
  figures.push({
    id: 1,
    what: `12 MP JPEG, ${count} uploads with 8 in flight, upload → completed (img/s)`,
    value: `${median(ours).toFixed(2)} (${spread(ours)})`,
    baseline: `bare sharp, 8 in flight: ${median(bare).toFixed(2)} (${spread(bare)})`,
    ratio: ratio1,
    target: '≥ 0.85 of bare sharp',
    pass: ratio1 >= 0.85,
    data: { pipeline: ours, bareSharp: bare },
  })
  figures.push({
    id: 2,
    what: `the same against vipsthumbnail (two calls per photo, 8 in flight) (img/s)`,
    value: `${median(ours).toFixed(2)}`,
    baseline: `vipsthumbnail: ${median(floor).toFixed(2)} (${spread(floor)})`,
    ratio: median(ours) / median(floor),
    target: 'reported',
    pass: null,
    data: { vipsthumbnail: floor },
  })
  }

  // ── 3: 64×64 latency, sequential ─────────────────────────────────────────────────────────────────────────────
  const small = await photo(64, 64)
  if (wanted(3)) {
    bench.say('figure 3: 64×64 latency')
    for (let i = 0; i < 10; i++) await throughPipeline(stack.url, small) // warm-up
    const latencies: number[] = []
    for (let i = 0; i < (bench.quick ? 30 : 200); i++) latencies.push(await throughPipeline(stack.url, small))
    const bareSmall: number[] = []
    for (let i = 0; i < 50; i++) bareSmall.push(await bareSharp(small))
    const p50 = percentile(latencies, 50)
    const p99 = percentile(latencies, 99)
    figures.push({
      id: 3,
      what: `64×64 JPEG, ${latencies.length} sequential uploads, upload → completed (ms)`,
      value: `p50 ${p50.toFixed(1)}, p99 ${p99.toFixed(1)}`,
      baseline: `bare sharp p50 ${percentile(bareSmall, 50).toFixed(1)}`,
      ratio: null,
      target: 'p50 ≤ 25, p99 ≤ 60',
      pass: p50 <= 25 && p99 <= 60,
      data: { latencies },
    })
  }

  // ── 4: small-job throughput ──────────────────────────────────────────────────────────────────────────────────
  if (wanted(4)) {
    bench.say('figure 4: small-job throughput')
    const jobs = bench.quick ? 200 : 1000
    const completedBefore = await completedImages(stack.url)
    const started = performance.now()
    const accepted = await rate(jobs, 32, () => upload(stack.url, small))
    await waitForCompleted(stack.url, completedBefore + jobs, 300_000)
    const completed = jobs / ((performance.now() - started) / 1000)
    const bareRate = await rate(jobs, 8, () => bareSharp(small))
    const ratio4 = completed / bareRate
    figures.push({
      id: 4,
      what: `64×64 JPEG, ${jobs} uploads with 32 in flight: accepted/s; completed/s (first upload → last completed)`,
      value: `accepted ${accepted.toFixed(0)}/s; completed ${completed.toFixed(0)}/s`,
      baseline: `bare sharp, 8 in flight: ${bareRate.toFixed(0)}/s`,
      ratio: ratio4,
      target: 'accepted ≥ 500/s; completed ≥ 0.5 of bare sharp',
      pass: accepted >= 500 && ratio4 >= 0.5,
      data: { accepted, completed, bareSharp: bareRate },
    })
  }

  // ── 9: 12 MP HEIC, upload → completed, against the fastest heif-convert decode plus the same sharp work ─────
  if (!wanted(9)) return figures
  bench.say('figure 9: 12 MP HEIC')
  const heicFile = join(dir, 'photo.heic')
  writeFileSync(join(dir, 'photo.jpg'), await photo(4032, 3024))
  await exec('heif-enc', ['--quality', '80', '--output', heicFile, join(dir, 'photo.jpg')])
  const heic = new Uint8Array(readFileSync(heicFile))
  // heif-convert writes JPEG, PNG or Y4M; the fastest of them (timed here) is the baseline's decode.
  const decodes: Record<string, number> = {}
  for (const format of ['jpg', 'png', 'y4m']) {
    const at = performance.now()
    await exec('heif-convert', ['--quiet', heicFile, join(dir, `decoded.${format}`)])
    decodes[format] = performance.now() - at
  }
  const direct = async () => {
    const at = performance.now()
    await exec('heif-convert', ['--quiet', heicFile, join(dir, 'decoded.jpg')])
    await bareSharp(readFileSync(join(dir, 'decoded.jpg')))
    return performance.now() - at
  }
  await throughPipeline(stack.url, heic) // warm-up
  const heicOurs: number[] = []
  const heicDirect: number[] = []
  for (let i = 0; i < (bench.quick ? 2 : 5); i++) {
    heicDirect.push(await direct())
    heicOurs.push(await throughPipeline(stack.url, heic))
  }
  const ratio9 = median(heicOurs) / median(heicDirect)
  figures.push({
    id: 9,
    what: `12 MP HEIC (4032×3024), sequential, upload → completed (ms)`,
    value: `${median(heicOurs).toFixed(0)} (${spread(heicOurs, 0)})`,
    baseline: `heif-convert to JPEG (fastest: ${Object.entries(decodes).map(([f, ms]) => `${f} ${ms.toFixed(0)}`).join(', ')} ms) + bare sharp: ${median(heicDirect).toFixed(0)} (${spread(heicDirect, 0)})`,
    ratio: ratio9,
    target: '≤ 1.5× the time',
    pass: ratio9 <= 1.5,
    data: { pipeline: heicOurs, direct: heicDirect, decodes },
  })
  return figures
}

/** Image jobs the API has seen complete (its `media_jobs_finished_total`). */
async function completedImages(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers: apiKey })).text()
  const line = text.split('\n').find((l) => l.startsWith('media_jobs_finished_total{') && l.includes('kind="image"') && l.includes('status="completed"'))
  return line ? Number(line.split(' ').pop()) : 0
}

async function waitForCompleted(url: string, count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while ((await completedImages(url)) < count) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${count} completed image jobs`)
    await Bun.sleep(20)
  }
}
