/**
 * Figures 1–4 and 9: images through the running system against bare sharp, `vipsthumbnail` and `heif-convert`
 * doing the same work (thumb and preview as WebP), in the same run; throughput runs alternate with their baseline.
 * The throughput figures also say where the CPU went: each process's CPU time per image, against bare sharp's.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { cpuOf, stageSeconds, throughPipeline, untilCompleted, upload, type Stack } from '../stack.ts'
import { alternate, exec, median, percentile, rate, spread, type Bench, type Figure } from '../stats.ts'
import { bareSharp, photo } from '../work.ts'
import { apiKey } from '../../helpers/env.ts'

export async function imageFigures(
  bench: Bench,
  stack: Stack,
  wanted: (...ids: number[]) => boolean
): Promise<Figure[]> {
  const dir = join(bench.work, 'images')
  mkdirSync(dir, { recursive: true })
  const small = await photo(64, 64)
  const figures = [
    ...(wanted(1, 2, 18) ? await bigThroughput(bench, stack, dir) : []),
    ...(wanted(3) ? [await smallLatency(bench, stack, small)] : []),
    ...(wanted(4, 18) ? [await smallThroughput(bench, stack, small)] : []),
    ...(wanted(9) ? [await heicLatency(bench, stack, dir)] : []),
  ]
  return wanted(18) ? [...figures, storeCost(figures)] : figures
}

/**
 * 18: the embedded store's CPU, per 12 MP photo (figure 1's runs) and per small job (figure 4's), read from the
 * process that runs it (`bun run start`'s own). Its baseline is the whole pipeline's CPU in the same runs.
 */
function storeCost(figures: Figure[]): Figure {
  const perJob = (id: number) =>
    figures.find((f) => f.id === id)?.data as {
      cpuMsPerImage?: Record<string, number>
      cpuMsPerJob?: Record<string, number>
    }
  const photo = perJob(1).cpuMsPerImage!
  const small = perJob(4).cpuMsPerJob!
  const sum = (cpu: Record<string, number>) => Object.values(cpu).reduce((a, b) => a + b, 0)
  return {
    id: 18,
    what: 'the embedded S3 store: CPU per 12 MP photo (figure 1); per small job (figure 4) (ms)',
    value: `${photo.s3} ms; ${small.s3} ms`,
    baseline: `the whole pipeline: ${sum(photo).toFixed(0)} ms; ${sum(small).toFixed(1)} ms`,
    ratio: null,
    target: '≤ 20 ms; ≤ 4 ms',
    pass: photo.s3! <= 20 && small.s3! <= 4,
    data: { photo, small },
  }
}

/** Milliseconds of CPU in a process.cpuUsage() difference (libvips' threads included: they are this process's). */
const cpuMs = (usage: NodeJS.CpuUsage) => (usage.user + usage.system) / 1000

/** 1 and 2: 12 MP JPEG throughput, 8 in flight. */
async function bigThroughput(bench: Bench, stack: Stack, dir: string): Promise<Figure[]> {
  bench.say('figures 1 and 2: 12 MP JPEG throughput')
  const big = await photo(4000, 3000)
  const bigFile = join(dir, 'big.jpg')
  writeFileSync(bigFile, big)
  const vipsOut = (i: number, size: number) => join(dir, `vips-${i % 8}-${size}.webp[Q=80]`)
  const vips = (i: number) =>
    Promise.all(
      [320, 1280].map((size) => exec('vipsthumbnail', [bigFile, '--size', `${size}x${size}`, '-o', vipsOut(i, size)]))
    )
  await throughPipeline(stack.url, big) // warm-ups
  await bareSharp(big)
  await vips(0)
  const rounds = bench.quick ? 1 : 3
  const count = bench.quick ? 8 : 24
  const ours: number[] = []
  const bare: number[] = []
  const floor: number[] = []
  const cpu = cpuOf(stack)
  let bareCpu = 0
  for (let round = 0; round < rounds; round++) {
    cpu.start()
    ours.push(await rate(count, 8, () => throughPipeline(stack.url, big)))
    cpu.stop()
    const bareStarted = process.cpuUsage()
    bare.push(await rate(count, 8, () => bareSharp(big)))
    bareCpu += cpuMs(process.cpuUsage(bareStarted))
    floor.push(await rate(count, 8, vips))
  }
  const ratio = median(ours) / median(bare)
  const perImage = cpu.perJob(rounds * count)
  return [
    {
      id: 1,
      what: `12 MP JPEG, ${count} uploads with 8 in flight, upload → completed (img/s)`,
      value: `${median(ours).toFixed(2)} (${spread(ours)})`,
      baseline: `bare sharp, 8 in flight: ${median(bare).toFixed(2)} (${spread(bare)})`,
      ratio,
      target: '≥ 0.85 of bare sharp',
      pass: ratio >= 0.85,
      note: `CPU per image: ${cpu.describe(perImage)}; bare sharp ${(bareCpu / (rounds * count)).toFixed(0)} ms`,
      data: {
        pipeline: ours,
        bareSharp: bare,
        cpuMsPerImage: perImage,
        bareSharpCpuMsPerImage: bareCpu / (rounds * count),
      },
    },
    {
      id: 2,
      what: `the same against vipsthumbnail (two calls per photo, 8 in flight) (img/s)`,
      value: `${median(ours).toFixed(2)}`,
      baseline: `vipsthumbnail: ${median(floor).toFixed(2)} (${spread(floor)})`,
      ratio: median(ours) / median(floor),
      target: 'reported',
      pass: null,
      data: { vipsthumbnail: floor },
    },
  ]
}

/** 3: 64×64 latency, sequential. */
async function smallLatency(bench: Bench, stack: Stack, small: Uint8Array<ArrayBuffer>): Promise<Figure> {
  bench.say('figure 3: 64×64 latency')
  for (let i = 0; i < 10; i++) await throughPipeline(stack.url, small) // warm-up
  const stagesBefore = await stageSeconds(stack.metrics.images)
  const latencies: number[] = []
  const accepted: number[] = []
  for (let i = 0; i < (bench.quick ? 30 : 200); i++) {
    const started = performance.now()
    const id = await upload(stack.url, small)
    accepted.push(performance.now() - started)
    await untilCompleted(stack.url, id)
    latencies.push(performance.now() - started)
  }
  const stages = await stageSeconds(stack.metrics.images)
  const stageMs = (name: string) =>
    (((stages[name]?.sum ?? 0) - (stagesBefore[name]?.sum ?? 0)) * 1000) /
    ((stages[name]?.count ?? 0) - (stagesBefore[name]?.count ?? 0))
  const bareSmall: number[] = []
  for (let i = 0; i < 50; i++) bareSmall.push(await bareSharp(small))
  const p50 = percentile(latencies, 50)
  const p99 = percentile(latencies, 99)
  const hops = {
    accepted: median(accepted),
    attempt: stageMs('attempt'),
    download: stageMs('download'),
    process: stageMs('process'),
    upload: stageMs('upload'),
  }
  return {
    id: 3,
    what: `64×64 JPEG, ${latencies.length} sequential uploads, upload → completed (ms)`,
    value: `p50 ${p50.toFixed(1)}, p99 ${p99.toFixed(1)}`,
    baseline: `bare sharp p50 ${percentile(bareSmall, 50).toFixed(1)}`,
    ratio: null,
    target: 'p50 ≤ 25, p99 ≤ 50',
    pass: p50 <= 25 && p99 <= 50,
    note: `where the time goes (means, ms): the 202 after ${hops.accepted.toFixed(1)} (p50); the processor's attempt ${hops.attempt.toFixed(1)} (download ${hops.download.toFixed(1)}, process ${hops.process.toFixed(1)}, upload ${hops.upload.toFixed(1)}); the rest (queue hops, the result applied, the event stream) ${(p50 - hops.accepted - hops.attempt).toFixed(1)}`,
    data: { latencies, accepted, stagesMs: hops },
  }
}

/** 4: small-job throughput: how fast uploads are taken, and how fast their jobs complete. */
async function smallThroughput(bench: Bench, stack: Stack, small: Uint8Array<ArrayBuffer>): Promise<Figure> {
  bench.say('figure 4: small-job throughput')
  const jobs = bench.quick ? 200 : 1000
  const completedBefore = await completedImages(stack.url)
  const cpu = cpuOf(stack)
  cpu.start()
  const started = performance.now()
  const accepted = await rate(jobs, 32, () => upload(stack.url, small))
  await waitForCompleted(stack.url, completedBefore + jobs, 300_000)
  const completed = jobs / ((performance.now() - started) / 1000)
  cpu.stop()
  const bareStarted = process.cpuUsage()
  const bareRate = await rate(jobs, 8, () => bareSharp(small))
  const bareCpu = cpuMs(process.cpuUsage(bareStarted)) / jobs
  const ratio = completed / bareRate
  const perJob = cpu.perJob(jobs)
  return {
    id: 4,
    what: `64×64 JPEG, ${jobs} uploads with 32 in flight: accepted/s; completed/s (first upload → last completed)`,
    value: `accepted ${accepted.toFixed(0)}/s; completed ${completed.toFixed(0)}/s`,
    baseline: `bare sharp, 8 in flight: ${bareRate.toFixed(0)}/s`,
    ratio,
    target: 'accepted ≥ 500/s; completed ≥ 0.3 of bare sharp',
    pass: accepted >= 500 && ratio >= 0.3,
    note: `CPU per job: ${cpu.describe(perJob)}; bare sharp ${bareCpu.toFixed(1)} ms`,
    data: { accepted, completed, bareSharp: bareRate, cpuMsPerJob: perJob, bareSharpCpuMsPerJob: bareCpu },
  }
}

/** 9: 12 MP HEIC, upload → completed, against the fastest heif-convert decode plus the same sharp work. */
async function heicLatency(bench: Bench, stack: Stack, dir: string): Promise<Figure> {
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
  const { bare, ours } = await alternate(bench.quick ? 2 : 5, direct, () => throughPipeline(stack.url, heic))
  const ratio = median(ours) / median(bare)
  return {
    id: 9,
    what: `12 MP HEIC (4032×3024), sequential, upload → completed (ms)`,
    value: `${median(ours).toFixed(0)} (${spread(ours, 0)})`,
    baseline: `heif-convert to JPEG (fastest: ${Object.entries(decodes)
      .map(([f, ms]) => `${f} ${ms.toFixed(0)}`)
      .join(', ')} ms) + bare sharp: ${median(bare).toFixed(0)} (${spread(bare, 0)})`,
    ratio,
    target: '≤ 1.5× the time',
    pass: ratio <= 1.5,
    data: { pipeline: ours, direct: bare, decodes },
  }
}

/** Image jobs the API has seen complete (its `media_jobs_finished_total`). */
async function completedImages(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers: apiKey })).text()
  const line = text
    .split('\n')
    .find(
      (l) =>
        l.startsWith('media_jobs_finished_total{') && l.includes('kind="image"') && l.includes('status="completed"')
    )
  return line ? Number(line.split(' ').pop()) : 0
}

async function waitForCompleted(url: string, count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while ((await completedImages(url)) < count) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${count} completed image jobs`)
    await Bun.sleep(100) // a scrape costs the API a little CPU: not too often
  }
}
