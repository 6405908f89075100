/**
 * The system as `bun run start` runs it (embedded S3 unless `S3_ENDPOINT` is given, the API and the image, video and
 * audio processors as separate processes), in a namespace of its own, for the benchmarks; and the one way they push media through it.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { TEST_API_KEY, apiKey } from '../helpers/env.ts'
import { trackNamespace } from '../helpers/infra.ts'
import { freePort } from '../helpers/ports.ts'

export interface Stack {
  /** Its namespace (SYSTEM). */
  system: string
  url: string
  /** Each service's process id, read from /proc (the `start` process itself runs the embedded S3 store). */
  pids: { start: number; api: number; images: number; videos: number; audio: number }
  /** Each processor's `/metrics` address. */
  metrics: { images: string; videos: string; audio: string }
  stop(): Promise<void>
}

export async function startStack(options: { dataDir: string; env?: Record<string, string> }): Promise<Stack> {
  const system = `bench${crypto.randomUUID().slice(0, 6)}`
  trackNamespace(system)
  const port = freePort()
  const ports = { images: freePort(), videos: freePort(), audio: freePort() }
  const child = Bun.spawn(['bun', join(import.meta.dir, '../../infra/start.ts')], {
    env: {
      ...process.env,
      SYSTEM: system,
      PORT: String(port),
      S3_PORT: String(freePort()),
      IMAGES_METRICS_PORT: String(ports.images),
      VIDEOS_METRICS_PORT: String(ports.videos),
      AUDIO_METRICS_PORT: String(ports.audio),
      DATA_DIR: options.dataDir,
      API_KEYS: `bench:${TEST_API_KEY}`,
      RATE_LIMIT_PER_MINUTE: '0',
      LOG_LEVEL: 'warn',
      LOG_FORMAT: 'json',
      MAX_CONCURRENT_UPLOADS: '64',
      // Figure 17 holds a thousand sockets with one key.
      MAX_STREAMS_PER_KEY: '2000',
      ...options.env,
    },
    stdout: 'ignore',
    stderr: 'inherit',
  })
  const url = `http://127.0.0.1:${port}`
  const metrics = {
    images: `http://127.0.0.1:${ports.images}`,
    videos: `http://127.0.0.1:${ports.videos}`,
    audio: `http://127.0.0.1:${ports.audio}`,
  }
  for (const address of [url, metrics.images, metrics.videos, metrics.audio]) {
    await until(
      async () => (await fetch(`${address}/readyz`).catch(() => null))?.status === 200,
      60_000,
      `${address} to be ready`
    )
  }
  const service = (name: string) => childPid(child.pid, `services/${name}/main.ts`)
  return {
    system,
    url,
    pids: {
      start: child.pid,
      api: service('api'),
      images: service('images'),
      videos: service('videos'),
      audio: service('audio'),
    },
    metrics,
    async stop() {
      child.kill('SIGTERM')
      await child.exited
    },
  }
}

/** Uploads `bytes` and resolves with the milliseconds until its media is completed (read from its event stream). */
export async function throughPipeline(url: string, bytes: Uint8Array<ArrayBuffer>): Promise<number> {
  const started = performance.now()
  await untilCompleted(url, await upload(url, bytes))
  return performance.now() - started
}

/** Resolves once media `id` is completed, read from its event stream (which ends after the final state). */
export async function untilCompleted(url: string, id: string): Promise<void> {
  const events = await fetch(`${url}/v1/media/${id}/events`, { headers: apiKey })
  const text = await events.text()
  if (!text.includes('"status":"completed"')) throw new Error(`media ${id} did not complete: ${text.slice(-500)}`)
}

/** Uploads `bytes` (POST /v1/media) and resolves with the media id once the API answered 202. */
export async function upload(url: string, bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const res = await fetch(`${url}/v1/media`, { method: 'POST', body: bytes, headers: apiKey })
  if (res.status !== 202) throw new Error(`upload answered ${res.status}: ${await res.text()}`)
  return ((await res.json()) as { id: string }).id
}

/**
 * A processor's time per stage (and per completed attempt), summed so far from its `/metrics` at `address`: seconds
 * and count, by name.
 */
export async function stageSeconds(address: string): Promise<Record<string, { sum: number; count: number }>> {
  const text = await (await fetch(`${address}/metrics`)).text()
  const stages: Record<string, { sum: number; count: number }> = {}
  for (const line of text.split('\n')) {
    const match =
      /^media_job_(?:stage_seconds_(sum|count)\{.*stage="(\w+)"|attempt_seconds_(sum|count)\{.*outcome="completed")/.exec(
        line
      )
    if (!match) continue
    const name = match[2] ?? 'attempt'
    const entry = (stages[name] ??= { sum: 0, count: 0 })
    entry[(match[1] ?? match[3]) as 'sum' | 'count'] += Number(line.split(' ').pop())
  }
  return stages
}

/** A process's resident memory in bytes, from /proc. */
export function rssOf(pid: number): number {
  const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
  return Number(kb ?? 0) * 1024
}

/** A process's CPU seconds so far (user + system), from /proc. */
export function cpuSecondsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (USER_HZ = 100)
}

/** CPU time of each of the stack's processes (and the broker's), summed over the spans between start() and stop(). */
export function cpuOf(stack: Stack) {
  const pids = {
    s3: stack.pids.start,
    api: stack.pids.api,
    images: stack.pids.images,
    videos: stack.pids.videos,
    audio: stack.pids.audio,
    rabbitmq: brokerPid(),
  }
  const total: Record<string, number> = Object.fromEntries(Object.keys(pids).map((name) => [name, 0]))
  let at: Record<string, number> = {}
  const read = () => Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, pid ? cpuSecondsOf(pid) : 0]))
  return {
    start: () => void (at = read()),
    stop() {
      const now = read()
      for (const name of Object.keys(pids)) total[name]! += now[name]! - at[name]!
    },
    /** Milliseconds of CPU per job, by process. */
    perJob: (jobs: number) =>
      Object.fromEntries(
        Object.entries(total).map(([name, seconds]) => [name, Math.round((seconds * 1000 * 10) / jobs) / 10])
      ),
    describe: (perJob: Record<string, number>) =>
      `${Object.entries(perJob)
        .map(([name, ms]) => `${name} ${ms} ms`)
        .join(', ')} (sum ${Object.values(perJob)
        .reduce((a, b) => a + b, 0)
        .toFixed(0)} ms)`,
  }
}

/**
 * The broker's Erlang VM (beam.smp booting `rabbit`), when it runs on this machine; 0 when it does not. Not any
 * beam.smp: `rabbitmqctl` runs one too, for a moment (infra/start.ts asks it a setting), and it is gone by the time
 * its CPU would be read.
 */
function brokerPid(): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (!readFileSync(`/proc/${entry}/stat`, 'utf8').includes('(beam.smp)')) continue
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').includes('-s rabbit boot'))
        return Number(entry)
    } catch {
      // gone meanwhile
    }
  }
  return 0
}

/** The child of `parent` whose command line contains `needle`. */
function childPid(parent: number, needle: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      if (Number(stat.split(') ')[1]!.split(' ')[1]) !== parent) continue
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) return Number(entry)
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no child of ${parent} runs ${needle}`)
}

/** Polls `check` until it holds; fails after `timeoutMs`, naming what it waited for. */
export async function until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}`)
    await Bun.sleep(50)
  }
}
