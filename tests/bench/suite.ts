/**
 * `bun run bench`: the benchmark suite (not part of `bun run test`). It starts the system as `bun run start` does
 * (embedded S3, the API and the three processors as separate processes, a namespace of its own), makes its own inputs,
 * runs each figure next to its baseline in the same run (alternating where it matters), and writes
 * `results/latest.md` and `results/latest.json` beside this file: the machine, the versions, the date, each
 * figure's median and spread, its ratio to the baseline, and whether it meets its target.
 *
 * Needs RabbitMQ and moto_server (the machine has them), and ffmpeg, libheif-examples and libvips-tools (`bash infra/setup.sh` installs them).
 * Run: `bun run bench [--quick] [--only 1,3,8]` (figures 1–4 and 9 run together, as do 5, 13 and 14, and 10–12; --only does not write results; 15 is the audio figure, 16 the scheduling one, 17 the event fan-out, 18 the embedded store's CPU from the runs of 1 and 4).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { deleteNamespaces } from '../helpers/infra.ts'
import { audioFigure } from './figures/audio.ts'
import { eventsFigure } from './figures/events.ts'
import { imageFigures } from './figures/images.ts'
import { memoryFigure } from './figures/memory.ts'
import { outboxFigure } from './figures/outbox.ts'
import { presetFigures } from './figures/presets.ts'
import { schedulingFigure } from './figures/scheduling.ts'
import { uploadFigure } from './figures/uploads.ts'
import { videoFigures } from './figures/video.ts'
import { startStack } from './stack.ts'
import type { Bench, Figure } from './stats.ts'

const onlyArg = process.argv[process.argv.indexOf('--only') + 1]
const only = process.argv.includes('--only') ? new Set(onlyArg!.split(',').map(Number)) : null
const wanted = (...ids: number[]) => !only || ids.some((id) => only.has(id))
const work = mkdtempSync(join(tmpdir(), 'bench-suite-'))
const startedAt = Date.now()
const bench: Bench = {
  quick: process.argv.includes('--quick'),
  work,
  say: (line) => console.error(`bench: ${line} (${((Date.now() - startedAt) / 1000).toFixed(0)} s)`),
}

const figures: Figure[] = []
try {
  if (wanted(1, 2, 3, 4, 5, 7, 9, 13, 14, 15, 16, 17, 18)) {
    const stack = await startStack({ dataDir: join(work, 'data') })
    try {
      if (wanted(1, 2, 3, 4, 9, 18)) figures.push(...(await imageFigures(bench, stack, wanted)))
      if (wanted(5, 13, 14)) figures.push(...(await videoFigures(bench, stack)))
      if (wanted(15)) figures.push(await audioFigure(bench, stack))
      if (wanted(7)) figures.push(await memoryFigure(bench, stack))
      if (wanted(17)) figures.push(await eventsFigure(bench, stack))
      // Last on this stack: it leaves a bulk backlog behind.
      if (wanted(16)) figures.push(await schedulingFigure(bench, stack))
    } finally {
      await stack.stop()
    }
  }
  if (wanted(10, 11, 12)) figures.push(...(await presetFigures(bench)))
  if (wanted(8)) figures.push(await outboxFigure(bench))
  if (wanted(6)) figures.push(await uploadFigure(bench))
} finally {
  await deleteNamespaces()
  rmSync(work, { recursive: true, force: true })
}
figures.sort((a, b) => a.id - b.id)

// ── Results ────────────────────────────────────────────────────────────────────────────────────────────────
const versions = {
  bun: Bun.version,
  sharp: sharp.versions.sharp ?? '',
  libvips: sharp.versions.vips,
  vipsthumbnail: (
    await new Response(Bun.spawn(['vipsthumbnail', '--vips-version'], { stdout: 'pipe' }).stdout).text()
  ).trim(),
  ffmpeg:
    /ffmpeg version (\S+)/.exec(
      await new Response(Bun.spawn(['ffmpeg', '-version'], { stdout: 'pipe' }).stdout).text()
    )?.[1] ?? '',
}
const machine = {
  cpus: cpus().length,
  model: cpus()[0]?.model ?? '',
  memoryGiB: Math.round(
    Number((await Bun.file('/proc/meminfo').text()).match(/MemTotal:\s+(\d+)/)?.[1] ?? 0) / 1024 / 1024
  ),
}
const seconds = Math.round((Date.now() - startedAt) / 1000)
const results = { date: new Date().toISOString(), quick: bench.quick, seconds, machine, versions, figures }
const table = [
  '| # | what | result | baseline | ratio | target | met |',
  '| --- | --- | --- | --- | --- | --- | --- |',
  ...figures.map(
    (f) =>
      `| ${f.id} | ${f.what} | ${f.value} | ${f.baseline} | ${f.ratio === null ? '—' : f.ratio.toFixed(2)} | ${f.target} | ${f.pass === null ? '—' : f.pass ? 'yes' : 'no'} |`
  ),
].join('\n')
const notes = figures
  .filter((f) => f.note)
  .map((f) => `- ${f.id}: ${f.note}`)
  .join('\n')
if (!only) {
  const dir = join(import.meta.dir, 'results')
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`)
  writeFileSync(
    join(dir, 'latest.md'),
    `# Benchmark results\n\n${results.date}${bench.quick ? ' (quick run)' : ''}, ${seconds} s: ${machine.cpus} × ${machine.model}, ${machine.memoryGiB} GiB; Bun ${versions.bun}, sharp ${versions.sharp} (libvips ${versions.libvips}), ${versions.vipsthumbnail} (vipsthumbnail), ffmpeg ${versions.ffmpeg}.\n\n${table}\n${notes ? `\n${notes}\n` : ''}`
  )
}
console.log(notes ? `${table}\n${notes}` : table)
