/**
 * `bun run bench`: the benchmark suite (not part of `bun run test`). It starts the system as `bun run start` does
 * (embedded S3, the API and both processors as separate processes, a namespace of its own), makes its own inputs,
 * runs each figure next to its baseline in the same run (alternating, so a slow moment of the machine hits both),
 * and writes `results/latest.md` and `results/latest.json` beside this file: the machine, the versions, the date,
 * each figure's median and spread, its ratio to the baseline, and whether it meets its target.
 *
 * Figures so far: 1 (12 MP JPEG throughput against bare sharp, same concurrency) and 3 (64×64 latency). The others
 * of issue 13 (vipsthumbnail, small-job throughput, video overhead, 1 GiB uploads, processor memory, the outbox
 * rate, HEIC) are to come; `tests/bench/videos.ts` and `tests/bench/uploads.ts` measure two of them on their own.
 * Needs RabbitMQ. Run: `bun run bench [--quick]`.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { TEST_API_KEY, apiKey } from '../helpers/env.ts'
import { deleteNamespaces, trackNamespace } from '../helpers/infra.ts'
import { freePort } from '../helpers/ports.ts'
import { bareSharp, photo } from './work.ts'

const quick = process.argv.includes('--quick')
const work = mkdtempSync(join(tmpdir(), 'bench-suite-'))
const system = `bench${crypto.randomUUID().slice(0, 6)}`
trackNamespace(system)

interface Figure {
  id: number
  what: string
  value: string
  baseline: string
  ratio: number | null
  target: string
  pass: boolean | null
}
const figures: Figure[] = []

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!
const spread = (xs: number[]) => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`

// ── The system, as `bun run start` runs it ─────────────────────────────────────────────────────────────────
const port = freePort()
const stack = Bun.spawn(['bun', join(import.meta.dir, '../../infra/start.ts')], {
  env: { ...process.env, SYSTEM: system, PORT: String(port), S3_PORT: String(freePort()), DATA_DIR: join(work, 'data'), API_KEYS: `bench:${TEST_API_KEY}`, RATE_LIMIT_PER_MINUTE: '0', LOG_LEVEL: 'warn', LOG_FORMAT: 'json', MAX_CONCURRENT_UPLOADS: '64' },
  stdout: 'ignore',
  stderr: 'inherit',
})
const url = `http://127.0.0.1:${port}`
await until(async () => (await fetch(`${url}/readyz`).catch(() => null))?.status === 200, 60_000, 'the system to be ready')
await until(async () => (await fetch('http://127.0.0.1:9101/readyz').catch(() => null))?.status === 200, 60_000, 'the image processor to be ready')

/** Uploads `bytes` and resolves with the milliseconds until its media is completed (read from its event stream). */
async function throughPipeline(bytes: Uint8Array<ArrayBuffer>): Promise<number> {
  const started = performance.now()
  const res = await fetch(`${url}/v1/media`, { method: 'POST', body: bytes, headers: apiKey })
  if (res.status !== 202) throw new Error(`upload answered ${res.status}: ${await res.text()}`)
  const { id } = (await res.json()) as { id: string }
  const events = await fetch(`${url}/v1/media/${id}/events`, { headers: apiKey })
  const text = await events.text() // the stream ends after the final state
  if (!text.includes('"status":"completed"')) throw new Error(`media ${id} did not complete: ${text.slice(-500)}`)
  return performance.now() - started
}



/** Images per second: `count` jobs of `run`, at most `inFlight` at once. */
async function rate(count: number, inFlight: number, run: () => Promise<unknown>): Promise<number> {
  const started = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next++ < count) await run()
  }))
  return count / ((performance.now() - started) / 1000)
}

try {
  // ── 1. 12 MP JPEG throughput, 8 in flight, against bare sharp with 8 in flight ──────────────────────────────
  const big = await photo(4000, 3000)
  await throughPipeline(big) // warm-up
  await bareSharp(big)
  const rounds = quick ? 1 : 3
  const count = quick ? 8 : 24
  const ours: number[] = []
  const bare: number[] = []
  for (let round = 0; round < rounds; round++) {
    ours.push(await rate(count, 8, () => throughPipeline(big)))
    bare.push(await rate(count, 8, () => bareSharp(big)))
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
  })

  // ── 3. 64×64 latency, upload → completed, sequential ───────────────────────────────────────────────────────
  const small = await photo(64, 64)
  for (let i = 0; i < 5; i++) await throughPipeline(small) // warm-up
  const latencies: number[] = []
  for (let i = 0; i < (quick ? 30 : 200); i++) latencies.push(await throughPipeline(small))
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
  })
} finally {
  stack.kill('SIGTERM')
  await stack.exited
  await deleteNamespaces()
  rmSync(work, { recursive: true, force: true })
}

// ── Results ────────────────────────────────────────────────────────────────────────────────────────────────
const versions = {
  bun: Bun.version,
  sharp: sharp.versions.sharp ?? '',
  libvips: sharp.versions.vips,
  ffmpeg: /ffmpeg version (\S+)/.exec(await new Response(Bun.spawn(['ffmpeg', '-version'], { stdout: 'pipe' }).stdout).text())?.[1] ?? '',
}
const machine = { cpus: cpus().length, model: cpus()[0]?.model ?? '', memoryGiB: Math.round(Number((await Bun.file('/proc/meminfo').text()).match(/MemTotal:\s+(\d+)/)?.[1] ?? 0) / 1024 / 1024) }
const results = { date: new Date().toISOString(), quick, machine, versions, figures }
const dir = join(import.meta.dir, 'results')
mkdirSync(dir, { recursive: true })
writeFileSync(join(dir, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`)
const table = [
  '| # | what | result | baseline | ratio | target | met |',
  '| --- | --- | --- | --- | --- | --- | --- |',
  ...figures.map((f) => `| ${f.id} | ${f.what} | ${f.value} | ${f.baseline} | ${f.ratio === null ? '—' : f.ratio.toFixed(2)} | ${f.target} | ${f.pass === null ? '—' : f.pass ? 'yes' : 'no'} |`),
].join('\n')
writeFileSync(
  join(dir, 'latest.md'),
  `# Benchmark results\n\n${results.date}${quick ? ' (quick run)' : ''}: ${machine.cpus} × ${machine.model}, ${machine.memoryGiB} GiB; Bun ${versions.bun}, sharp ${versions.sharp} (libvips ${versions.libvips}), ffmpeg ${versions.ffmpeg}.\n\n${table}\n`
)
console.log(table)
process.exit(0)

/** Polls `check` until it holds; fails after `timeoutMs`, naming what it waited for. */
async function until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}`)
    await Bun.sleep(100)
  }
}
