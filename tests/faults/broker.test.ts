/**
 * Fault tests, the broker: connections dropped, the broker restarted, publishing blocked by a memory alarm, and a
 * delivery held past consumer_timeout (docs/reliability.md §5.3 B1, B2, B4 with A2, B5). These change the broker
 * for every client on it: each restores what it changed in `finally`, and afterAll restores it all again.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import {
  brokerConnectionsOf,
  childrenNamed,
  closeAllConnections,
  closeConnection,
  hasAlarm,
  rabbitmqctl,
  setConsumerTimeout,
  setMemoryWatermark,
  signalAll,
  startBroker,
  stopBroker,
  until,
} from './chaos.ts'
import { afterFaults, imageFiles, startSystem, type Batch, type System, type Upload } from './harness.ts'
import { useInfra } from '../helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

afterAll(async () => {
  try {
    await rabbitmqctl('start_app') // a no-op when it runs
    await rabbitmqctl('await_startup')
    await setMemoryWatermark(0.4)
    await setConsumerTimeout(1_800_000)
  } finally {
    afterFaults()
  }
})

const merge = (...batches: Batch[]): Batch => ({
  sent: batches.reduce((n, b) => n + b.sent, 0),
  accepted: batches.flatMap((b) => b.accepted),
  refused: batches.flatMap((b) => b.refused),
})

describe('connections and restarts', () => {
  test('all connections closed by the broker during a batch of 50: every client reconnects and every accepted job completes', async () => {
    const started = Date.now()
    const sys = await startSystem({ images: 2 })
    try {
      const uploading = sys.uploadAll(await imageFiles(50), 2)
      await until(() => sys.imagesBusy(), 20_000, 'a processor taking a job', 5)
      await closeAllConnections()
      const batch = await uploading
      // An upload racing the close may be refused, but only as "try again".
      for (const refusal of batch.refused) expect(refusal).toMatchObject({ status: 503, code: 'queue_unavailable' })

      const notes = `${sys.logCount(/interrupted/)} job(s) interrupted and redelivered`
      const { row, problems } = await sys.reconcile('3. close_all_connections during 50 image jobs', batch, {
        started,
        notes,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ completed: row.accepted, lost: 0, duplicated: 0 })
      expect(row.accepted).toBeGreaterThan(0)
    } finally {
      await sys.stop()
    }
  }, 120_000)

  test('the broker stopped for 3 s during a batch: uploads meanwhile get a quick 503, accepted jobs all complete', async () => {
    const started = Date.now()
    const sys = await startSystem({ images: 2 })
    try {
      const [files, meanwhile] = await Promise.all([imageFiles(30), imageFiles(3)])
      const uploading = sys.uploadAll(files, 2)
      await until(() => sys.imagesBusy(), 20_000, 'a processor taking a job', 5)
      let outage: Batch
      try {
        await stopBroker()
        const down = Date.now()
        outage = await sys.uploadAll(meanwhile, 1)
        await Bun.sleep(Math.max(0, 3_000 - (Date.now() - down))) // the outage lasts 3 s
      } finally {
        await startBroker()
      }
      expect(outage.accepted).toEqual([])
      for (const refusal of outage.refused) {
        expect(refusal).toMatchObject({ status: 503, code: 'queue_unavailable' })
        expect(refusal.ms).toBeLessThan(7_000)
      }
      const batch = merge(await uploading, outage)
      for (const refusal of batch.refused) expect(refusal).toMatchObject({ status: 503, code: 'queue_unavailable' })

      const slowest = Math.max(0, ...outage.refused.map((r) => r.ms))
      const notes = `uploads during the outage: 503 within ${slowest} ms; ${sys.logCount(/interrupted/)} job(s) interrupted`
      const { row, problems } = await sys.reconcile('4. stop_app 3 s, start_app during 30 image jobs', batch, {
        started,
        notes,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ completed: row.accepted, lost: 0, duplicated: 0 })
    } finally {
      await sys.stop()
    }
  }, 120_000)
})

describe('publishing blocked', () => {
  /** The job rows with their outbox state, read from the API's database (read-only, beside the running API). */
  function outbox(databasePath: string) {
    if (!existsSync(databasePath)) return []
    const db = new DatabaseSync(databasePath, { readOnly: true })
    try {
      return db
        .prepare(
          'SELECT j.id AS jobId, j.media_id AS mediaId, o.published_at AS publishedAt FROM jobs j JOIN outbox o ON o.job_id = j.id'
        )
        .all() as { jobId: string; mediaId: string; publishedAt: number | null }[]
    } finally {
      db.close()
    }
  }

  test('a job written but not yet published when the API is killed is published by the outbox relay after a restart', async () => {
    const started = Date.now()
    const sys = await startSystem({ images: 1 })
    const databasePath = join(sys.env.DATA_DIR!, 'media.db')
    try {
      const [image] = await imageFiles(1)
      let upload: Promise<Upload> | undefined
      let written: ReturnType<typeof outbox> = []
      let answered: Upload | undefined
      try {
        await setMemoryWatermark(0.0001)
        await until(hasAlarm, 15_000, 'the memory alarm', 200)
        const sentAt = Date.now()
        upload = sys.upload(image!)
        void upload.then((u) => (answered = u))
        // The media, its job and the outbox row are written in one transaction, before the publish.
        await until(
          () => (written = outbox(databasePath)).length > 0 || answered !== undefined,
          5_000,
          'the job row',
          10
        )
        if (answered)
          throw new Error(
            `the API answered ${JSON.stringify(answered)} before its job row was seen; nothing left to kill in between`
          )
        await Bun.sleep(Math.max(0, 1_000 - (Date.now() - sentAt)))
        if (answered)
          throw new Error(`the API answered ${JSON.stringify(answered)} within a second; the kill came too late`)
        const connections = await brokerConnectionsOf(sys.api.pid!)
        await sys.api.kill('SIGKILL')
        // The blocked broker has not read the dead API's socket, which may still hold the publish: drop it, so that
        // (as when the API dies before it publishes) only the outbox has the request.
        for (const name of connections) await closeConnection(name)
      } finally {
        await setMemoryWatermark(0.4)
      }
      await until(async () => !(await hasAlarm()), 15_000, 'the memory alarm clearing', 200)
      const answer = await upload!
      expect(answer.accepted).toBe(false)
      expect(written).toHaveLength(1)
      const [job] = written
      expect(job!.publishedAt).toBeNull()
      expect(outbox(databasePath)).toEqual(written) // still there, still unpublished

      await sys.api.start()
      const restarted = Date.now()
      // The relay sends requests unconfirmed for 15 s (OUTBOX grace), checking every 5 s.
      let completedFirst = false
      await until(
        async () => {
          completedFirst ||=
            (await sys.media(job!.mediaId))?.status === 'completed' && outbox(databasePath)[0]!.publishedAt === null
          return outbox(databasePath)[0]!.publishedAt !== null
        },
        30_000,
        'the outbox relay publishing the job',
        250
      )
      const relayedAfter = Math.round((Date.now() - restarted) / 1000)
      const media = await sys.waitFor(
        job!.mediaId,
        (m) => m.status === 'completed',
        30_000,
        'the relayed job completing',
        250
      )
      expect(media.jobId).toBe(job!.jobId)
      expect(completedFirst).toBe(false) // only the relay had it
      const notes = `relay published ${relayedAfter} s after the restart`

      const batch: Batch = { sent: 1, accepted: [], refused: answer.accepted ? [] : [answer] }
      const { row, problems } = await sys.reconcile('7. API killed between job write and publish (outbox)', batch, {
        started,
        also: [job!.mediaId],
        notes,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ completed: 1, lost: 0, duplicated: 0 })
    } finally {
      await setMemoryWatermark(0.4)
      await sys.stop()
    }
  }, 120_000)
})

describe('consumer_timeout', () => {
  test('a video job held past the broker’s consumer_timeout completes once, and the processor keeps consuming', async () => {
    const started = Date.now()
    const stopped = new Set<number>()
    let sys: System | undefined
    try {
      // Applies to channels opened afterwards, so before the processor starts.
      await setConsumerTimeout(5_000)
      sys = await startSystem({ images: 0, videos: true, videosEnv: { ACK_DEADLINE_SECONDS: '2' } })
      const videos = sys.videos!
      const from = videos.mark()
      const batch = await sys.uploadVideos(1, '640x360', 2)
      expect(batch.accepted).toHaveLength(1)
      await until(
        async () => (await childrenNamed(videos.pid!, 'ffmpeg')).length > 0,
        30_000,
        'an ffmpeg run of the video processor',
        10
      )
      // The broker checks the timeout about once a minute: hold the transcode (every ffmpeg run, also ones that
      // start meanwhile) for 70 s, frozen rather than busy.
      const holdUntil = Date.now() + 70_000
      while (Date.now() < holdUntil) {
        const pids = (await childrenNamed(videos.pid!, 'ffmpeg')).filter((pid) => !stopped.has(pid))
        signalAll(pids, 'SIGSTOP')
        for (const pid of pids) stopped.add(pid)
        await Bun.sleep(500)
      }
      signalAll(stopped, 'SIGCONT')

      const notes = `${stopped.size} ffmpeg run(s) frozen 70 s; ${sys.logCount(/lease/)} lease log line(s)`
      const { row, problems } = await sys.reconcile('10. transcode held 70 s past consumer_timeout 5 s', batch, {
        started,
        timeoutMs: 60_000,
        notes,
      })
      // Neither the broker's 406 nor a second run of the job.
      expect(videos.log.slice(from)).not.toMatch(/acknowledgement[^\n]*timed out/i)
      expect(videos.log.slice(from)).not.toMatch(/interrupted|redeliver/i)
      expect(problems).toEqual([])
      expect(row).toMatchObject({ accepted: 1, completed: 1, lost: 0, duplicated: 0 })
    } finally {
      signalAll(stopped, 'SIGCONT')
      await setConsumerTimeout(1_800_000)
      await sys?.stop()
    }
  }, 150_000)
})
