/**
 * Many instances of every service: 2 APIs, 2 image processors and 2 video processors on one PostgreSQL, one
 * RabbitMQ and one S3, run once on the embedded store and once on moto's S3 server. 100 mixed uploads are spread over both APIs
 * (an upload an instance cannot take is sent to the other, as a load balancer would); mid-batch one image processor
 * and one API are SIGKILLed and restarted. Every job must complete exactly once (the job history holds one result
 * applied per job), SSE on either instance must see every job's final state, and nothing may be lost, including a
 * job whose 202 never reached the client because its API died while answering.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { apiKey } from '../helpers/env.ts'
import { useInfra } from '../helpers/infra.ts'
import { startMoto, type Moto } from '../helpers/moto.ts'
import { newPostgresSchema, withPostgres } from '../helpers/postgres.ts'
import type { MediaBody } from '../helpers/stack.ts'
import { makeClip } from '../helpers/video-fixtures.ts'
import { until } from './chaos.ts'
import { afterFaults, imageFiles, mapLimit, startSystem, type Batch, type Upload } from './harness.ts'

await useInfra()
afterAll(afterFaults)

const IMAGES = 80
const VIDEOS = 20
const FINAL = ['completed', 'failed', 'cancelled']

const work = mkdtempSync(join(tmpdir(), 'media-test-instances-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

/** The 100 files, a video every fifth, made once for both runs. */
let files: { kind: 'image' | 'video'; bytes: Uint8Array<ArrayBuffer> }[] = []
beforeAll(async () => {
  const images = await imageFiles(IMAGES)
  const clips = await mapLimit(
    Array.from({ length: VIDEOS }, (_, i) => i),
    2,
    async (i) => new Uint8Array(readFileSync(await makeClip(work, `clip-${i}.mp4`, i % 2 ? '320x240' : '240x320', 1)))
  )
  files = Array.from({ length: IMAGES + VIDEOS }, (_, i) =>
    i % 5 === 4
      ? { kind: 'video' as const, bytes: clips[(i - 4) / 5]! }
      : { kind: 'image' as const, bytes: images[i - Math.floor(i / 5)]! }
  )
}, 120_000)

/**
 * Follows a media's events on one API instance until its final state, reconnecting (as EventSource does) while the
 * instance is down; resolves the states seen, or what it saw by `deadline`.
 */
async function follow(base: string, id: string, deadline: number): Promise<MediaBody[]> {
  const seen: MediaBody[] = []
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${base}/v1/media/${id}/events`, {
        headers: apiKey,
        signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())),
      })
      if (res.status !== 200) throw new Error(`status ${res.status}`)
      const text = await res.text() // the server ends the stream after the final state
      for (const block of text.split('\n\n')) {
        const data = block.split('\n').find((line) => line.startsWith('data: '))
        if (block.includes('event: state') && data) seen.push(JSON.parse(data.slice(6)) as MediaBody)
      }
      if (seen.length && FINAL.includes(seen.at(-1)!.status)) return seen
    } catch {
      // The instance was killed, or not back yet: try again shortly.
    }
    await Bun.sleep(200)
  }
  return seen
}

interface S3Backend {
  name: string
  env(): Record<string, string>
}
let moto: Moto | undefined
const backends: S3Backend[] = [
  { name: 'the embedded store', env: () => ({}) },
  { name: 'moto', env: () => moto!.env },
]
beforeAll(async () => {
  moto = await startMoto()
})
afterAll(() => moto?.stop())

describe.each(backends)('2 APIs, 2 image and 2 video processors on PostgreSQL and $name', (backend) => {
  test('100 mixed jobs with an image processor and an API SIGKILLed mid-batch: each completes once, nothing lost', async () => {
    const started = Date.now()
    const database = await newPostgresSchema()
    const sys = await startSystem({ apis: 2, images: 2, videos: 2, env: { DATABASE_URL: database, ...backend.env() } })
    try {
      const [imagesVictim] = sys.images
      const apiVictim = sys.apis[1]!
      const deadline = Date.now() + 240_000
      const followers: Promise<[MediaBody[], MediaBody[]]>[] = []
      const answers: Upload[] = []
      let accepted = 0

      // Uploads alternate between the instances; one that gets no 202 goes to the other (up to 10 tries in all).
      const send = async (i: number): Promise<Upload> => {
        let answer: Upload = { accepted: false, status: 0, code: 'untried', ms: 0 }
        for (let attempt = 0; attempt < 10 && !answer.accepted; attempt++) {
          if (attempt) await Bun.sleep(200)
          answer = await sys.upload(files[i]!.bytes, 30_000, (i + attempt) % 2)
          answers.push(answer)
        }
        if (answer.accepted) {
          accepted++
          const id = answer.id
          followers.push(Promise.all([follow(sys.urls[0]!, id, deadline), follow(sys.urls[1]!, id, deadline)]))
        }
        return answer
      }
      const uploading = mapLimit(
        files.map((_, i) => i),
        4,
        send
      )

      // Mid-batch: an image processor while it holds a job, and an API, killed together, then restarted.
      await until(() => accepted >= 30, 120_000, '30 uploads accepted', 20)
      // A processor's work directory for a job (IMAGES_TMP_DIR/<pid>/<jobId>) exists exactly while it holds the job.
      const victimJobs = join(sys.env.IMAGES_TMP_DIR!, String(imagesVictim!.pid))
      await until(
        () => existsSync(victimJobs) && readdirSync(victimJobs).length > 0,
        60_000,
        `${imagesVictim!.name} holding a job`,
        2
      )
      await Promise.all([imagesVictim!.kill('SIGKILL'), apiVictim.kill('SIGKILL')])
      const killedAt = accepted
      await until(() => accepted >= killedAt + 10, 120_000, '10 more uploads accepted by the surviving API', 20)
      await Promise.all([imagesVictim!.start(), apiVictim.start()])

      const outcomes = await uploading
      const batch: Batch = {
        sent: files.length,
        accepted: outcomes.flatMap((o) => (o.accepted ? [o.id] : [])),
        refused: answers.filter((a): a is Extract<Upload, { accepted: false }> => !a.accepted),
      }
      expect(batch.accepted).toHaveLength(files.length)

      // Media the database holds that no client heard of: an upload whose API was killed after the commit but
      // before its answer. The outbox still sends their requests, so they too must reach a final state.
      const stored = await withPostgres(database, (sql) => sql<{ id: string }[]>`SELECT id FROM media`)
      const orphans = stored.map((r) => r.id).filter((id) => !batch.accepted.includes(id))

      const notes: string[] = []
      const { row, problems } = await sys.reconcile(`many instances on ${backend.name}`, batch, {
        started,
        also: orphans,
        timeoutMs: 180_000,
      })

      // Applied once: per job, one result recorded in the history, and which instance applied it.
      const history = await withPostgres(
        database,
        (sql) =>
          sql<{ job_id: string; results: string; origins: string[] }[]>`
          SELECT job_id, COUNT(*) FILTER (WHERE reason = 'result') AS results, ARRAY_AGG(DISTINCT origin) FILTER (WHERE reason = 'result') AS origins
          FROM job_history GROUP BY job_id`
      )
      const appliedTwice = history.filter((h) => Number(h.results) > 1)
      const notApplied = history.filter((h) => Number(h.results) === 0)
      const byInstance = new Map<string, number>()
      for (const h of history)
        for (const origin of h.origins ?? []) byInstance.set(origin, (byInstance.get(origin) ?? 0) + 1)
      problems.push(...appliedTwice.map((h) => `job ${h.job_id}: ${h.results} results applied`))
      problems.push(...notApplied.map((h) => `job ${h.job_id}: no result applied`))

      // SSE on both instances saw each accepted job's final state, the same one GET answers, and never a change
      // going backwards (across reconnections too: a stream resumes from the current state).
      const streams = await Promise.all(followers)
      const rank = (m: MediaBody) => (m.status === 'queued' ? 0 : m.status === 'processing' ? 1 : 2)
      let sawFinal = 0
      for (const [onA, onB] of streams) {
        for (const states of [onA, onB]) {
          const last = states.at(-1)
          const media = last && (await sys.media(last.id))
          if (last && media && FINAL.includes(last.status) && last.status === media.status) sawFinal++
          else problems.push(`an SSE stream ended at ${last ? `${last.id} ${last.status}` : 'nothing'}`)
          const back = states.findIndex(
            (m, i) => i > 0 && (rank(m) < rank(states[i - 1]!) || m.progress < states[i - 1]!.progress)
          )
          if (back > 0)
            problems.push(
              `media ${last!.id}: an SSE stream went back from ${states[back - 1]!.status} ${states[back - 1]!.progress}% to ${states[back]!.status} ${states[back]!.progress}%`
            )
        }
      }

      notes.push(
        `${orphans.length} unanswered upload(s) completed too`,
        `applied twice ${appliedTwice.length}`,
        `results applied by instance: ${[...byInstance.values()].join('/')}`,
        `SSE final seen ${sawFinal}/${streams.length * 2}`
      )
      row.notes = notes.join('; ')
      expect(problems).toEqual([])
      expect(row).toMatchObject({
        accepted: files.length,
        completed: files.length + orphans.length,
        failed: 0,
        lost: 0,
        duplicated: 0,
      })
      expect(history).toHaveLength(files.length + orphans.length)
      // Both API instances applied results: the work was shared, not done by one while the other idled.
      expect(byInstance.size).toBeGreaterThanOrEqual(2)
    } finally {
      await sys.stop()
    }
  }, 420_000)
})
