/**
 * The fault harness: the whole system as child processes (APIs, image processors, optionally video and audio
 * processors) in a namespace of its own, batches of uploads, and the reconciliation that follows every fault
 * (docs/reliability.md §5.1): every accepted job reaches one final state and keeps it, completed jobs have exactly
 * their outputs in S3 and fetchable, failed and cancelled ones have none, no process died, every consumer is back.
 * Each reconciliation adds a row to the matrix that `afterFaults` writes as a markdown table to
 * tests/artifacts/fault-matrix.md. The processes' output goes to the test file's log (tests/helpers/logs.ts).
 */
import { ListObjectsV2Command } from '@aws-sdk/client-s3'
import amqp from 'amqplib'
import { existsSync, mkdirSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import sharp from 'sharp'
import { MEDIA_TYPES, parseBrokerUrls, queueNames, type MediaType } from '@app/shared'
import { apiKey, testEnv } from '../helpers/env.ts'
import { startInfra } from '../helpers/infra.ts'
import { quadrants } from '../helpers/image-fixtures.ts'
import { testS3 } from '../helpers/s3.ts'
import { makeClip } from '../helpers/video-fixtures.ts'
import { freePort } from '../helpers/ports.ts'
import { ServiceProcess, killAllChildren } from '../helpers/service-process.ts'
import { writeReport } from '../helpers/logs.ts'
import type { MediaBody } from '../helpers/stack.ts'
import { run as exec } from './chaos.ts'

const ROOT = join(import.meta.dir, '../..')
const FINAL = ['completed', 'failed', 'cancelled']

export type Media = MediaBody

/** What one upload got: a 202 with ids, or anything else (status 0: no answer at all). */
export type Upload =
  | { accepted: true; id: string; jobId: string; ms: number }
  | { accepted: false; status: number; code: string; ms: number }

export interface Batch {
  sent: number
  /** Media ids of the uploads answered 202. */
  accepted: string[]
  /** Every other answer (503 while the broker is down, a reset connection when the API is killed, …). */
  refused: Extract<Upload, { accepted: false }>[]
}

export interface Row {
  scenario: string
  sent: number
  accepted: number
  completed: number
  failed: number
  cancelled: number
  duplicated: number
  lost: number
  /** The non-202 answers, e.g. `503×3`. */
  refused: string
  /** Error codes of failed jobs, e.g. `gave_up×2`. */
  errors: string
  seconds: number
  /** What the scenario saw that the numbers do not say. */
  notes: string
}

/** Every reconciliation of the run, in order. */
export const matrix: Row[] = []

/**
 * For each fault file's afterAll: kills any child a failed test left behind, then writes the matrix of the run so
 * far as a markdown table to tests/artifacts/fault-matrix.md (so the last one written covers every fault file that
 * ran), and into the file's log (printed when one of its tests fails).
 */
export function afterFaults(): void {
  killAllChildren()
  if (matrix.length) writeReport('fault-matrix.md', `Fault matrix (the run so far)\n\n${table(matrix)}`)
}

function table(rows: Row[]): string {
  const columns = [
    'scenario',
    'sent',
    'accepted',
    'refused',
    'completed',
    'failed',
    'cancelled',
    'duplicated',
    'lost',
    'errors',
    'seconds',
    'notes',
  ] as const
  return [
    `| ${columns.join(' | ')} |`,
    `|${columns.map((c) => (typeof rows[0]![c] === 'number' ? '--:' : '---')).join('|')}|`,
    ...rows.map(
      (r) =>
        `| ${columns.map((c) => String(r[c] || (typeof r[c] === 'number' ? 0 : '')).replaceAll('|', '/')).join(' | ')} |`
    ),
  ].join('\n')
}

const tally = (items: string[]) =>
  [...items.reduce((m, s) => m.set(s, (m.get(s) ?? 0) + 1), new Map<string, number>())]
    .map(([k, n]) => `${k}×${n}`)
    .join(', ')

export interface SystemOptions {
  /** How many image processors (default 1). */
  images?: number
  /** How many video processors (`true`: one; default none). */
  videos?: boolean | number
  /** How many audio processors (`true`: one; default none). */
  audio?: boolean | number
  /** How many API instances (default 1), each on a port of its own, sharing the database given in `env`. */
  apis?: number
  /** Extra environment for every process. */
  env?: Record<string, string>
  apiEnv?: Record<string, string>
  imagesEnv?: Record<string, string>
  videosEnv?: Record<string, string>
  audioEnv?: Record<string, string>
}

export type System = Awaited<ReturnType<typeof startSystem>>

/** Starts the API and the processors as children, sharing one namespace and one data directory. */
export async function startSystem(options: SystemOptions = {}) {
  await startInfra()
  // The checks poll every media of a batch several times a second with one key: past the default 6,000 a minute on a
  // slow run, and a 429 read as "no answer" failed a check that had nothing to do with limits (tests/security.test.ts
  // tests those).
  const env = testEnv({ RATE_LIMIT_PER_MINUTE: '0', ...options.env })
  env.IMAGES_TMP_DIR = join(env.DATA_DIR!, 'images-tmp')
  env.VIDEOS_TMP_DIR = join(env.DATA_DIR!, 'videos-tmp')
  env.AUDIO_TMP_DIR = join(env.DATA_DIR!, 'audio-tmp')
  const system = env.SYSTEM!
  const adminToken = crypto.randomUUID()
  const entry = (service: string) => ['bun', join(ROOT, 'services', service, 'main.ts')]
  const apiCount = options.apis ?? 1
  const apis = Array.from({ length: apiCount }, (_, i) => {
    const port = freePort()
    const name = apiCount === 1 ? 'api' : `api-${i + 1}`
    return new ServiceProcess(
      name,
      entry('api'),
      { ...env, PORT: String(port), ADMIN_TOKEN: adminToken, ...options.apiEnv },
      /listening/
    )
  })
  const api = apis[0]!
  const urls = apis.map((a) => `http://127.0.0.1:${a.env.PORT}`)
  const url = urls[0]!
  const images = Array.from(
    { length: options.images ?? 1 },
    (_, i) => new ServiceProcess(`images-${i + 1}`, entry('images'), { ...env, ...options.imagesEnv }, /consuming/)
  )
  const videoCount = options.videos === true ? 1 : options.videos || 0
  const videoProcessors = Array.from(
    { length: videoCount },
    (_, i) =>
      new ServiceProcess(
        videoCount === 1 ? 'videos' : `videos-${i + 1}`,
        entry('videos'),
        { ...env, ...options.videosEnv },
        /consuming/
      )
  )
  const videos = videoProcessors[0]
  const audioCount = options.audio === true ? 1 : options.audio || 0
  const audioProcessors = Array.from(
    { length: audioCount },
    (_, i) =>
      new ServiceProcess(
        audioCount === 1 ? 'audio' : `audio-${i + 1}`,
        entry('audio'),
        { ...env, ...options.audioEnv },
        /consuming/
      )
  )
  const audio = audioProcessors[0]
  /** The processors of each type. */
  const processors: Record<MediaType, ServiceProcess[]> = { images, videos: videoProcessors, audio: audioProcessors }
  const s3 = testS3(env)
  const clipDir = join(env.DATA_DIR!, 'clips')
  mkdirSync(clipDir, { recursive: true })

  /** The first final state each job was seen in (status and outputs), and the jobs later seen otherwise. */
  const firstFinal = new Map<string, string>()
  const changed = new Map<string, string>()
  const observe = (media: Media) => {
    if (!FINAL.includes(media.status)) {
      if (firstFinal.has(media.id)) changed.set(media.id, `${firstFinal.get(media.id)} → ${media.status}`)
      return
    }
    const outputs = media.outputs.map((o) => `${o.name}:${o.contentType}:${o.size}:${o.width}x${o.height}`).sort()
    const signature = `${media.status}${media.error ? `(${media.error.code})` : ''} [${outputs.join(' ')}]`
    const first = firstFinal.get(media.id)
    if (first === undefined) firstFinal.set(media.id, signature)
    else if (first !== signature) changed.set(media.id, `${first} → ${signature}`)
  }

  const all = () => [...apis, ...images, ...videoProcessors, ...audioProcessors]

  /**
   * A connection of the harness's own to the system's broker, for looking at queues: the first node of RABBITMQ_URL
   * that answers (on a cluster, a fault may have stopped one).
   */
  async function inspector(): Promise<amqp.ChannelModel> {
    const parsed = parseBrokerUrls(env.RABBITMQ_URL!)
    if (!parsed.ok) throw new Error(`RABBITMQ_URL: ${parsed.reason}`)
    let failure: unknown
    for (const url of parsed.urls) {
      try {
        return await amqp.connect(url)
      } catch (error) {
        failure = error
      }
    }
    throw failure
  }

  const sys = {
    env,
    system,
    url,
    adminToken,
    api,
    /** Every API instance; `api` and `url` are the first. */
    apis,
    urls,
    images,
    videos,
    videoProcessors,
    audio,
    audioProcessors,
    s3,
    queues: (type: MediaType) => queueNames(system, type),
    processes: all,

    /**
     * GET /v1/media/:id from the first API instance that answers (undefined when none does); every read is checked
     * for changed final states.
     */
    async media(id: string): Promise<Media | undefined> {
      for (const base of urls) {
        try {
          const res = await fetch(`${base}/v1/media/${id}`, { headers: apiKey, signal: AbortSignal.timeout(5_000) })
          if (res.status !== 200) continue
          const media = (await res.json()) as Media
          observe(media)
          return media
        } catch {
          continue
        }
      }
      return undefined
    },

    /** Polls a media until `predicate` holds; throws naming `what` (and the last state seen) after `timeoutMs`. */
    async waitFor(
      id: string,
      predicate: (media: Media) => boolean,
      timeoutMs: number,
      what: string,
      everyMs = 50
    ): Promise<Media> {
      const deadline = Date.now() + timeoutMs
      let last: Media | undefined
      for (;;) {
        last = (await sys.media(id)) ?? last
        if (last && predicate(last)) return last
        if (Date.now() > deadline) {
          throw new Error(
            `media ${id}: ${what} did not happen within ${timeoutMs} ms (last seen ${last ? `${last.status}/${last.stage}/${last.progress}` : 'nothing'})`
          )
        }
        await Bun.sleep(everyMs)
      }
    },

    /** Whether an image processor holds a job right now: its work directory for a job exists exactly while it does. */
    imagesBusy(): boolean {
      return images.some((p) => {
        const dir = join(env.IMAGES_TMP_DIR!, String(p.pid))
        return existsSync(dir) && readdirSync(dir).length > 0
      })
    },

    /** How many log lines of all the system's processes (every run of each) match `pattern`. */
    logCount(pattern: RegExp): number {
      return all().reduce((n, p) => n + p.log.split('\n').filter((line) => pattern.test(line)).length, 0)
    },

    /** Forgets a job's first final state (after a re-drive, where leaving `failed` is the point). */
    forgetFinal(id: string) {
      firstFinal.delete(id)
      changed.delete(id)
    },

    /** POSTs bytes as an upload to one API instance (the first by default); never throws (a dead API gives status 0). */
    async upload(bytes: Uint8Array<ArrayBuffer>, timeoutMs = 30_000, via = 0): Promise<Upload> {
      const started = performance.now()
      const ms = () => Math.round(performance.now() - started)
      try {
        const res = await fetch(`${urls[via]}/v1/media`, {
          method: 'POST',
          body: bytes,
          headers: { ...apiKey, 'content-type': 'application/octet-stream' },
          signal: AbortSignal.timeout(timeoutMs),
        })
        const body = (await res.json().catch(() => ({}))) as { id?: string; jobId?: string; error?: { code?: string } }
        if (res.status === 202 && body.id && body.jobId)
          return { accepted: true, id: body.id, jobId: body.jobId, ms: ms() }
        return { accepted: false, status: res.status, code: body.error?.code ?? 'no_body', ms: ms() }
      } catch (error) {
        return {
          accepted: false,
          status: 0,
          code: (error as Error).name === 'TimeoutError' ? 'timeout' : 'no_answer',
          ms: ms(),
        }
      }
    },

    /** Uploads `files`, `concurrency` at a time, and sorts the answers into a batch. */
    async uploadAll(files: Uint8Array<ArrayBuffer>[], concurrency = 4): Promise<Batch> {
      const outcomes: Upload[] = new Array(files.length)
      let next = 0
      await Promise.all(
        Array.from({ length: Math.min(concurrency, files.length) }, async () => {
          while (next < files.length) {
            const i = next++
            outcomes[i] = await sys.upload(files[i]!)
          }
        })
      )
      return toBatch(outcomes)
    },

    /** `n` generated images (see `imageFiles`), uploaded. */
    async uploadImages(n: number, concurrency = 4): Promise<Batch> {
      return sys.uploadAll(await imageFiles(n), concurrency)
    },

    /** `n` generated clips (`size`, `seconds` long), uploaded one at a time. */
    async uploadVideos(n: number, size = '320x240', seconds = 1): Promise<Batch> {
      const files = await Promise.all(
        Array.from(
          { length: n },
          async (_, i) =>
            new Uint8Array(
              await Bun.file(
                await makeClip(clipDir, `clip-${crypto.randomUUID()}-${i}.mp4`, size, seconds)
              ).arrayBuffer()
            )
        )
      )
      return sys.uploadAll(files, 1)
    },

    /** `n` generated stereo MP3s (a moving chord, `seconds` long, 44.1 kHz, 192 kb/s), uploaded one at a time. */
    async uploadAudio(n: number, seconds = 2): Promise<Batch> {
      const files = await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const file = join(clipDir, `song-${crypto.randomUUID()}-${i}.mp3`)
          const { code, stderr } = await exec([
            'ffmpeg',
            '-nostdin',
            '-v',
            'error',
            '-y',
            '-f',
            'lavfi',
            '-i',
            `aevalsrc='(sin(2*PI*220*t)+sin(2*PI*330*t))/2*(0.6+0.4*sin(2*PI*0.5*t))|(sin(2*PI*277*t)+sin(2*PI*440*t))/2':s=44100:d=${seconds},volume=-20dB`,
            '-c:a',
            'libmp3lame',
            '-b:a',
            '192k',
            file,
          ])
          if (code !== 0) throw new Error(`ffmpeg could not make ${file}: ${stderr.trim()}`)
          return new Uint8Array(await Bun.file(file).arrayBuffer())
        })
      )
      return sys.uploadAll(files, 1)
    },

    /** Polls every id until all are final or `timeoutMs` passes; resolves whether all are final. */
    async waitForQuiet(ids: string[], timeoutMs: number): Promise<boolean> {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const states = await mapLimit(ids, 8, (id) => sys.media(id))
        if (states.every((m) => m && FINAL.includes(m.status))) return true
        if (Date.now() > deadline) return false
        await Bun.sleep(100)
      }
    },

    /** Messages ready in a queue, from a connection of its own. */
    async queueDepth(queue: string): Promise<number> {
      const connection = await inspector()
      try {
        return (await (await connection.createChannel()).checkQueue(queue)).messageCount
      } finally {
        await connection.close().catch(() => {})
      }
    },

    /** Consumers per queue, from a connection of its own (faults close the broker's connections). */
    async consumerCounts(): Promise<Record<string, number>> {
      const connection = await inspector()
      try {
        const counts: Record<string, number> = {}
        for (const type of MEDIA_TYPES) {
          for (const [kind, queue] of Object.entries(queueNames(system, type))) {
            if (kind === 'dead') continue
            const channel = await connection.createChannel()
            channel.on('error', () => {})
            counts[queue] = await channel.checkQueue(queue).then(
              (q) => q.consumerCount,
              () => -1
            )
            await channel.close().catch(() => {})
          }
        }
        return counts
      } finally {
        await connection.close().catch(() => {})
      }
    },

    /** Ready messages on a queue (quorum queue counts lag by seconds: poll them). */
    async messageCount(queue: string): Promise<number> {
      const connection = await inspector()
      try {
        const channel = await connection.createChannel()
        return (await channel.checkQueue(queue)).messageCount
      } finally {
        await connection.close().catch(() => {})
      }
    },

    /** Consumers each working queue should have: one per processor of the type, one per API on updates and results. */
    expectedConsumers(): Record<string, number> {
      const expected: Record<string, number> = {}
      for (const type of MEDIA_TYPES) {
        const names = queueNames(system, type)
        expected[names.request] = processors[type].length
        expected[names.updates] = apis.length
        expected[names.results] = apis.length
      }
      return expected
    },

    /**
     * Drains (waits until every job is final or `timeoutMs` passes), then checks everything §5.1 asks and records
     * a matrix row. `also`: ids to hold to the same rules that were not answered 202 (a job recovered by the outbox).
     */
    async reconcile(
      scenario: string,
      batch: Batch,
      options: { timeoutMs?: number; also?: string[]; started?: number; notes?: string } = {}
    ) {
      const ids = [...batch.accepted, ...(options.also ?? [])]
      await sys.waitForQuiet(ids, options.timeoutMs ?? 60_000)
      const problems: string[] = []
      const states = await mapLimit(ids, 8, (id) => sys.media(id))
      const row: Row = {
        scenario,
        sent: batch.sent,
        accepted: batch.accepted.length,
        completed: 0,
        failed: 0,
        cancelled: 0,
        duplicated: 0,
        lost: 0,
        refused: tally(batch.refused.map((r) => String(r.status || r.code))),
        errors: '',
        seconds: options.started ? Math.round((Date.now() - options.started) / 100) / 10 : 0,
        notes: options.notes ?? '',
      }
      const errors: string[] = []
      await mapLimit(states, 4, async (media, i) => {
        const id = ids[i]!
        if (!media || !FINAL.includes(media.status)) {
          row.lost++
          problems.push(
            `job of media ${id} is not final: ${media ? `${media.status}/${media.stage}/${media.progress}` : 'unreadable'}`
          )
          return
        }
        if (media.status === 'completed') row.completed++
        if (media.status === 'failed') {
          row.failed++
          errors.push(media.error?.code ?? 'no_error')
        }
        if (media.status === 'cancelled') row.cancelled++
        problems.push(...(await checkOutputs(media)))
      })
      row.errors = tally(errors)
      for (const id of ids) {
        if (changed.has(id)) {
          row.duplicated++
          problems.push(`media ${id} left its first final state: ${changed.get(id)}`)
        }
      }
      for (const service of all()) {
        if (!service.alive) problems.push(`${service.name} is not running`)
        for (const exit of service.crashes)
          problems.push(`${service.name} exited unexpectedly (code ${exit.code}, signal ${exit.signal})`)
      }
      problems.push(...(await consumersBack()))
      matrix.push(row)
      return { row, problems, states }
    },

    /** Starts every process; an API first (it declares the topology the processors consume from). */
    async start() {
      await api.start()
      await Promise.all([...apis.slice(1), ...images, ...videoProcessors, ...audioProcessors].map((p) => p.start()))
    },

    /** Stops everything: SIGCONT first (a paused process cannot exit), then SIGKILL. */
    async stop() {
      for (const p of all()) p.resume()
      await Promise.all(all().map((p) => p.kill('SIGKILL')))
      s3.close()
    },
  }

  /** The outputs of a final job against S3: a completed job has exactly them, a failed or cancelled one none. */
  async function checkOutputs(media: Media): Promise<string[]> {
    const problems: string[] = []
    const prefix = `${system}/outputs/${media.jobId}/`
    const listed = await s3.client.send(new ListObjectsV2Command({ Bucket: env.S3_BUCKET, Prefix: prefix }))
    const objects = (listed.Contents ?? []).filter((o) => !o.Key!.endsWith('/.cancelled'))
    if (media.status !== 'completed') {
      if (objects.length)
        problems.push(`${media.status} media ${media.id} has outputs in S3: ${objects.map((o) => o.Key).join(', ')}`)
      return problems
    }
    if (media.outputs.length === 0) problems.push(`completed media ${media.id} has no outputs`)
    const stem = (key: string) => key.slice(prefix.length).replace(/\.[^.]+$/, '')
    const names = media.outputs.map((o) => o.name).sort()
    const stored = objects.map((o) => stem(o.Key!)).sort()
    if (JSON.stringify(names) !== JSON.stringify(stored)) {
      problems.push(
        `media ${media.id}: outputs ${names.join(',')} but S3 holds ${objects.map((o) => o.Key).join(', ') || 'nothing'}`
      )
    }
    for (const output of media.outputs) {
      const object = objects.find((o) => stem(o.Key!) === output.name)
      if (object && object.Size !== output.size)
        problems.push(`media ${media.id}: ${output.name} is ${output.size} bytes but S3 holds ${object.Size}`)
      const res = await fetch(output.url, { headers: apiKey, signal: AbortSignal.timeout(10_000) }).catch(
        (error: Error) => error
      )
      if (res instanceof Error) {
        problems.push(`media ${media.id}: GET ${output.name} failed: ${res.message}`)
        continue
      }
      const bytes = (await res.arrayBuffer()).byteLength
      if (res.status !== 200 || bytes === 0 || bytes !== output.size) {
        problems.push(
          `media ${media.id}: GET ${output.name} gave ${res.status} with ${bytes} bytes (expected ${output.size})`
        )
      }
    }
    return problems
  }

  /** Polls consumer counts until every working queue has its consumers again (quorum queue counts lag). */
  async function consumersBack(timeoutMs = 20_000): Promise<string[]> {
    const expected = sys.expectedConsumers()
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const counts = await sys.consumerCounts().catch(() => ({}) as Record<string, number>)
      const wrong = Object.entries(expected).filter(([queue, n]) => counts[queue] !== n)
      if (!wrong.length) return []
      if (Date.now() > deadline)
        return wrong.map(([queue, n]) => `${queue} has ${counts[queue] ?? '?'} consumers, expected ${n}`)
      await Bun.sleep(250)
    }
  }

  try {
    await sys.start()
  } catch (error) {
    await sys.stop()
    throw error
  }
  return sys
}

function toBatch(outcomes: Upload[]): Batch {
  return {
    sent: outcomes.length,
    accepted: outcomes.flatMap((o) => (o.accepted ? [o.id] : [])),
    refused: outcomes.flatMap((o) => (o.accepted ? [] : [o])),
  }
}

/**
 * `n` different images: sizes from 64 to 800 px, hues turned per image, as JPEG, PNG and WebP in turn.
 * Small enough that a batch of 50 takes seconds on two cores.
 */
export async function imageFiles(n: number): Promise<Uint8Array<ArrayBuffer>[]> {
  return mapLimit(
    Array.from({ length: n }, (_, i) => i),
    4,
    async (i) => {
      const width = 64 + ((i * 97) % 737)
      const height = 64 + ((i * 53 + 200) % 737)
      const image = sharp(await quadrants(width, height)).modulate({ hue: (i * 37) % 360 })
      const encoded = i % 3 === 0 ? image.jpeg() : i % 3 === 1 ? image.png() : image.webp()
      return new Uint8Array(await encoded.toBuffer())
    }
  )
}

/** `Promise.all(items.map(fn))` with at most `limit` running at once. */
export async function mapLimit<T, R>(
  items: T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>
): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++
        out[i] = await fn(items[i]!, i)
      }
    })
  )
  return out
}
