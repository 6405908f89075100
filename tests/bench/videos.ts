/**
 * Benchmark (not a test): one 10-second 720p clip through the whole system (upload to `completed`) against the same
 * ffprobe and ffmpeg commands run directly, alternating, in the same run. The system runs as `bun run start` runs it
 * (embedded S3, API and processors as separate processes). Needs RabbitMQ and ffmpeg.
 * Run: `bun tests/bench/videos.ts [N]` (default 5; the median is reported).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { VIDEO_RECIPE } from '../../services/api/recipes.ts'
import {
  ffmpegArgv,
  planRenditions,
  posterCommand,
  posterSize,
  probeVideo,
  readConfig as readVideosConfig,
  transcodeCommand,
} from '../../services/videos/main.ts'
import { TEST_API_KEY, apiKey } from '../helpers/env.ts'
import { deleteNamespaces, trackNamespace } from '../helpers/infra.ts'

const runs = Number(process.argv[2] ?? 5)
const work = mkdtempSync(join(tmpdir(), 'bench-videos-'))
const clip = join(work, 'in.mp4')
await exec('ffmpeg', ['-nostdin', '-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30:duration=10', '-f', 'lavfi', '-i',
  'sine=frequency=440:sample_rate=48000:duration=10', '-c:v', 'libx264', '-preset', 'medium', '-crf', '20', '-pix_fmt', 'yuv420p', '-g', '60',
  '-c:a', 'aac', '-b:a', '128k', '-shortest', '-movflags', '+faststart', clip])

const system = `bench${crypto.randomUUID().slice(0, 6)}`
trackNamespace(system)
const port = 20000 + Math.floor(Math.random() * 20000)
const stack = Bun.spawn(['bun', join(import.meta.dir, '../../infra/start.ts')], {
  env: { ...process.env, SYSTEM: system, PORT: String(port), S3_PORT: String(port + 1), DATA_DIR: join(work, 'data'), API_KEYS: `bench:${TEST_API_KEY}`, VIDEOS_TMP_DIR: join(work, 'tmp') },
  stdout: 'pipe',
  stderr: 'inherit',
})
// Its children log JSON lines (their stdout is a pipe): the video processor's start line says it consumes.
await waitForLine(stack.stdout, /"service":"videos".*"msg":"consuming /)
const config = readVideosConfig({ S3_ACCESS_KEY_ID: 'unused', S3_SECRET_ACCESS_KEY: 'unused' })
const url = `http://127.0.0.1:${port}`
const bytes = readFileSync(clip)

// The commands the processor runs for this clip, as plain argv.
const signal = new AbortController().signal
const probed = await probeVideo(clip, 'mp4', config.limits, signal)
const display = { width: probed.metadata.width, height: probed.metadata.height }
const plan = planRenditions(VIDEO_RECIPE.renditions, display).map((p) => ({ ...p, file: join(work, `direct-${p.name}.mp4`) }))
const size = posterSize(VIDEO_RECIPE.poster, display)
const commands = [
  ['ffprobe', '-v', 'error', '-protocol_whitelist', 'file', '-format_whitelist', 'mov', '-f', 'mov', '-show_format', '-show_streams', '-of', 'json', clip],
  ['ffmpeg', ...ffmpegArgv(await posterCommand(clip, probed, size, join(work, 'direct-poster.webp'), { maxPixels: config.limits.maxPixels, at: probed.metadata.durationSeconds * 0.1 }))],
  ['ffmpeg', ...ffmpegArgv(await transcodeCommand(clip, probed, plan, config.limits))],
]

async function direct(): Promise<number> {
  const started = performance.now()
  for (const [program, ...args] of commands) await exec(program!, args)
  return performance.now() - started
}

async function pipeline(): Promise<number> {
  const started = performance.now()
  const res = await fetch(`${url}/v1/media`, { method: 'POST', body: bytes, headers: apiKey })
  const { id } = (await res.json()) as { id: string }
  for (;;) {
    const media = (await (await fetch(`${url}/v1/media/${id}`, { headers: apiKey })).json()) as { status: string }
    if (media.status === 'completed') return performance.now() - started
    if (media.status === 'failed') throw new Error(`benchmark job failed: ${JSON.stringify(media)}`)
    await Bun.sleep(5)
  }
}

async function waitForLine(stream: ReadableStream<Uint8Array>, pattern: RegExp): Promise<void> {
  const reader = stream.getReader()
  let seen = ''
  const deadline = Date.now() + 30_000
  while (!pattern.test(seen)) {
    if (Date.now() > deadline) throw new Error(`the system did not start: ${seen}`)
    const { value, done } = await reader.read()
    if (done) throw new Error(`the system exited: ${seen}`)
    seen += new TextDecoder().decode(value)
  }
  reader.releaseLock()
  void stream.pipeTo(new WritableStream()) // keep draining its logs
}

async function exec(program: string, args: string[]): Promise<void> {
  const child = Bun.spawn([program, ...args], { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' })
  const code = await child.exited
  if (code !== 0) throw new Error(`${program} failed: ${await new Response(child.stderr).text()}`)
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const p: number[] = []
const d: number[] = []
for (let i = 0; i < runs; i++) {
  d.push(await direct())
  p.push(await pipeline())
}
const mp = median(p)
const md = median(d)
console.log(`renditions: ${plan.map((r) => `${r.name} ${r.width}×${r.height}`).join(', ')}`)
console.log(`direct ffprobe + poster + transcode: median ${md.toFixed(0)} ms (runs: ${d.map((x) => x.toFixed(0)).join(', ')})`)
console.log(`pipeline upload→completed:         median ${mp.toFixed(0)} ms (runs: ${p.map((x) => x.toFixed(0)).join(', ')})`)
console.log(`overhead: ${(((mp / md) - 1) * 100).toFixed(1)}% (${(mp - md).toFixed(0)} ms), n=${runs}`)

stack.kill('SIGTERM')
await stack.exited
await deleteNamespaces()
rmSync(work, { recursive: true, force: true })
