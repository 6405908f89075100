/**
 * Fault tests, processes: a processor (image, video or audio) or the API SIGKILLed mid-work and restarted
 * (docs/reliability.md §5.3 P1, P2, A1), and a job that kills its processor on every delivery (P4).
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import sharp from 'sharp'
import { DELIVERY_LIMIT } from '@app/shared'
import { childrenNamed, exists, freezeS3, signalAll, thawS3, until } from './chaos.ts'
import { afterFaults, imageFiles, startSystem } from './harness.ts'
import { useInfra } from '../helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

afterAll(afterFaults)

const entries = (dir: string) => (existsSync(dir) ? readdirSync(dir) : [])
/** A process's argv joined by spaces ('' once it is gone). */
const commandLine = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
  } catch {
    return ''
  }
}

describe('processors killed mid-job', () => {
  test('an image processor SIGKILLed mid-job is restarted, and every job of the batch completes once', async () => {
    const started = Date.now()
    const sys = await startSystem({ images: 2 })
    try {
      const victim = sys.images[0]!
      // A processor's work directory for a job (IMAGES_TMP_DIR/<pid>/<jobId>) exists exactly while it holds the job.
      const jobsDir = join(sys.env.IMAGES_TMP_DIR!, String(victim.pid))
      const uploading = sys.uploadAll(await imageFiles(20))
      // Freeze it while it holds a job (so the job cannot finish before the kill), then kill it.
      for (;;) {
        await until(() => entries(jobsDir).length > 0, 20_000, `${victim.name} taking a job`, 2)
        victim.pause()
        if (entries(jobsDir).length > 0) break
        victim.resume()
      }
      const held = entries(jobsDir).length
      await victim.kill('SIGKILL')
      await victim.start()
      // The restarted processor clears the work directories of dead runs.
      expect(existsSync(jobsDir)).toBe(false)

      const notes = `killed holding ${held} job(s)`
      const { row, problems } = await sys.reconcile('1. SIGKILL image processor mid-job, restart', await uploading, {
        started,
        notes,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ accepted: 20, completed: 20, lost: 0, duplicated: 0 })
    } finally {
      await sys.stop()
    }
  }, 90_000)

  test('the video processor SIGKILLed mid-transcode is restarted, and the job completes', async () => {
    const started = Date.now()
    const sys = await startSystem({ images: 0, videos: true })
    const orphans = new Set<number>()
    try {
      const videos = sys.videos!
      const batch = await sys.uploadVideos(1, '1280x720', 2)
      expect(batch.accepted).toHaveLength(1)
      let ffmpeg: number[] = []
      await until(
        async () => (ffmpeg = await childrenNamed(videos.pid!, 'ffmpeg')).length > 0,
        30_000,
        'an ffmpeg run of the video processor',
        10
      )
      for (const pid of ffmpeg) orphans.add(pid)
      expect((await sys.media(batch.accepted[0]!))?.status).not.toBe('completed')
      await videos.kill('SIGKILL')
      await videos.start()

      const { row, problems } = await sys.reconcile('2a. SIGKILL video processor mid-transcode, restart', batch, {
        started,
        timeoutMs: 60_000,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ accepted: 1, completed: 1, lost: 0, duplicated: 0 })
      // An ffmpeg whose processor was killed must not run on (and write into a dead job's directory) for long.
      await until(
        () => [...orphans].every((pid) => !exists(pid)),
        30_000,
        'the killed processor’s ffmpeg runs ending'
      ).catch((error) => {
        throw new Error(`${(error as Error).message}: still running ${[...orphans].filter(exists).join(', ')}`)
      })
    } finally {
      signalAll(orphans, 'SIGKILL')
      await sys.stop()
    }
  }, 120_000)

  test('the video processor SIGKILLed while uploading its outputs is restarted, and the job completes', async () => {
    const started = Date.now()
    const sys = await startSystem({ images: 0, videos: true })
    const orphans = new Set<number>()
    try {
      const videos = sys.videos!
      const batch = await sys.uploadVideos(1, '640x360', 2)
      const id = batch.accepted[0]!
      // ffmpeg runs only after the download, so S3 can be frozen then: the transcode goes on, the uploads hang.
      await until(
        async () => (await childrenNamed(videos.pid!, 'ffmpeg')).length > 0,
        30_000,
        'an ffmpeg run of the video processor',
        10
      )
      for (const pid of await childrenNamed(videos.pid!, 'ffmpeg')) orphans.add(pid)
      freezeS3()
      try {
        await sys.waitFor(id, (m) => m.stage === 'uploading', 30_000, 'the uploading stage', 20)
        await videos.kill('SIGKILL')
      } finally {
        thawS3()
      }
      await videos.start()

      const { row, problems } = await sys.reconcile('2b. SIGKILL video processor while uploading, restart', batch, {
        started,
        timeoutMs: 60_000,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ accepted: 1, completed: 1, lost: 0, duplicated: 0 })
    } finally {
      thawS3()
      signalAll(orphans, 'SIGKILL')
      await sys.stop()
    }
  }, 120_000)

  test('the audio processor SIGKILLed while its ffmpeg runs is restarted, and the job completes', async () => {
    const started = Date.now()
    const sys = await startSystem({ images: 0, audio: true })
    const orphans = new Set<number>()
    try {
      const audio = sys.audio!
      // Two minutes of stereo MP3: each of the job's two ffmpeg runs (analysis, encoding) takes a second or more.
      const batch = await sys.uploadAudio(1, 120)
      expect(batch.accepted).toHaveLength(1)
      let ffmpeg: number[] = []
      await until(
        async () => (ffmpeg = await childrenNamed(audio.pid!, 'ffmpeg')).length > 0,
        30_000,
        'an ffmpeg run of the audio processor',
        10
      )
      for (const pid of ffmpeg) orphans.add(pid)
      // The analysis run is the one measuring loudness; the encoding run writes the M4A and the WebM.
      const run = ffmpeg.some((pid) => commandLine(pid).includes('ebur128')) ? 'analysis' : 'encoding'
      expect((await sys.media(batch.accepted[0]!))?.status).not.toBe('completed')
      await audio.kill('SIGKILL')
      await audio.start()

      const { row, problems } = await sys.reconcile('2c. SIGKILL audio processor mid-ffmpeg, restart', batch, {
        started,
        timeoutMs: 60_000,
        notes: `killed during its ${run} run`,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ accepted: 1, completed: 1, lost: 0, duplicated: 0 })
      await until(
        () => [...orphans].every((pid) => !exists(pid)),
        30_000,
        'the killed processor’s ffmpeg runs ending'
      ).catch((error) => {
        throw new Error(`${(error as Error).message}: still running ${[...orphans].filter(exists).join(', ')}`)
      })
    } finally {
      signalAll(orphans, 'SIGKILL')
      await sys.stop()
    }
  }, 120_000)
})

describe('a processor that freezes', () => {
  test('a processor frozen mid-job: the API re-drives the silent job to another, and the late result changes nothing', async () => {
    const started = Date.now()
    // Heartbeats every second, stall after 3 s: the freeze (SIGSTOP) outlasts that, not the broker's own heartbeat.
    const sys = await startSystem({ images: 2, apiEnv: { STALL_SECONDS: '3' }, imagesEnv: { HEARTBEAT_SECONDS: '1' } })
    const [victim, other] = [sys.images[0]!, sys.images[1]!]
    let frozen = false
    try {
      await other.kill('SIGTERM') // the only processor at first, so the victim takes the job
      const tile = await sharp({
        create: {
          width: 600,
          height: 400,
          channels: 3,
          background: '#808080',
          noise: { type: 'gaussian', mean: 128, sigma: 40 },
        },
      })
        .png()
        .toBuffer()
      const photo = new Uint8Array(
        await sharp(tile).resize(6000, 4000, { kernel: 'cubic' }).jpeg({ quality: 90 }).toBuffer()
      )
      const batch = await sys.uploadAll([photo])
      const id = batch.accepted[0]!
      const { jobId } = (await sys.media(id))!
      // Frozen once it has reported the job started (a processing job, which the stall rule watches).
      await sys.waitFor(id, (m) => m.status === 'processing', 20_000, 'the victim starting the job', 10)
      victim.pause()
      frozen = true
      expect(existsSync(join(sys.env.IMAGES_TMP_DIR!, String(victim.pid), jobId))).toBe(true) // still on it
      await other.start()

      // Silent for 3 s: the sweep sends the job again, and the other processor completes it.
      const done = await sys.waitFor(id, (m) => m.status === 'completed', 30_000, 'the frozen job completing elsewhere')
      victim.resume()
      frozen = false
      // The victim wakes, finishes the same job and reports it: the job stays as it was.
      await until(
        () => entries(join(sys.env.IMAGES_TMP_DIR!, String(victim.pid))).length === 0,
        30_000,
        `${victim.name} finishing its stale job`
      )
      await until(
        async () => (await sys.queueDepth(sys.queues('images').results)) === 0,
        10_000,
        'the late result being consumed'
      )
      const after = await sys.media(id)
      expect(after).toMatchObject({ status: 'completed', outputs: done.outputs })
      const redriven = sys.logCount(new RegExp(`"jobId":"${jobId}".*"msg":"job stalled [^"]*: redriven"`))
      expect(redriven).toBeGreaterThanOrEqual(1)
      const dropped = sys.logCount(new RegExp(`"jobId":"${jobId}".*"msg":"job already running here`))
      const notes = `re-driven ${redriven} time(s) while frozen; ${dropped} duplicate(s) dropped by the frozen one; its late result ignored`
      const { row, problems } = await sys.reconcile('P3. image processor frozen mid-job, then resumed', batch, {
        started,
        notes,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ accepted: 1, completed: 1, lost: 0, duplicated: 0 })
    } finally {
      if (frozen) victim.resume()
      await sys.stop()
    }
  }, 120_000)
})

describe('the API killed', () => {
  test('an API SIGKILLed while the processors finish a batch applies their results once restarted', async () => {
    const started = Date.now()
    const sys = await startSystem({ images: 2 })
    try {
      const batch = await sys.uploadImages(20)
      expect(batch.accepted).toHaveLength(20)
      await sys.api.kill('SIGKILL')
      // Results pile up in their durable queue while no API runs.
      const results = sys.queues('images').results
      await until(async () => (await sys.messageCount(results)) > 0, 30_000, 'a result waiting for the API', 100)
      const waiting = await sys.messageCount(results)
      await sys.api.start()

      const notes = `${waiting} result(s) waiting when the API came back`
      const { row, problems } = await sys.reconcile('6. SIGKILL API while processors finish, restart', batch, {
        started,
        notes,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ accepted: 20, completed: 20, lost: 0, duplicated: 0 })
    } finally {
      await sys.stop()
    }
  }, 90_000)
})

describe('a job that crashes its processor every time', () => {
  interface DeadLetter {
    id: string
    type: string
    queue: string
    reason: string
    jobId: string | null
    problem: string | null
    deadAt: string
  }

  test('is dead-lettered at the delivery limit, failed as crashed, listed for an operator and re-driven to completion', async () => {
    const started = Date.now()
    const sys = await startSystem({ images: 1, imagesEnv: { IMAGE_CONCURRENCY: '1' } })
    try {
      const processor = sys.images[0]!
      // 6000×4000 (a phone photo's size): long enough at every step that each delivery is killed mid-job.
      const tile = await sharp({
        create: {
          width: 600,
          height: 400,
          channels: 3,
          background: '#808080',
          noise: { type: 'gaussian', mean: 128, sigma: 40 },
        },
      })
        .png()
        .toBuffer()
      const photo = new Uint8Array(
        await sharp(tile).resize(6000, 4000, { kernel: 'cubic' }).jpeg({ quality: 90 }).toBuffer()
      )
      const batch = await sys.uploadAll([photo])
      const id = batch.accepted[0]!
      const { jobId } = (await sys.media(id))!

      // Kill the processor each time it starts the job, until the broker stops delivering it.
      let kills = 0
      for (;;) {
        const workDir = join(sys.env.IMAGES_TMP_DIR!, String(processor.pid), jobId)
        let delivered = false
        await until(
          async () => (delivered = existsSync(workDir)) || (await sys.media(id))?.status === 'failed',
          30_000,
          `delivery ${kills + 1} of the job (or its failure)`,
          10
        )
        if (!delivered) break
        await processor.kill('SIGKILL')
        kills++
        if (kills > DELIVERY_LIMIT + 2)
          throw new Error(`the job was delivered ${kills} times; the delivery limit is ${DELIVERY_LIMIT}`)
        await processor.start()
      }
      expect(kills).toBe(DELIVERY_LIMIT + 1)
      const failed = (await sys.media(id))!
      expect(failed.status).toBe('failed')
      expect(failed.error).toMatchObject({ code: 'crashed', class: 'crash' })

      const auth = { authorization: `Bearer ${sys.adminToken}` }
      expect([401, 403]).toContain((await fetch(`${sys.url}/v1/admin/dead-letters`)).status)
      const listed = await fetch(`${sys.url}/v1/admin/dead-letters`, { headers: auth })
      expect(listed.status).toBe(200)
      const { deadLetters } = (await listed.json()) as { deadLetters: DeadLetter[] }
      const letter = deadLetters.find((d) => d.jobId === jobId)
      expect(letter).toMatchObject({ queue: sys.queues('images').request, jobId, reason: 'delivery_limit' })

      const redrive = await fetch(`${sys.url}/v1/admin/dead-letters/${letter!.id}/redrive`, {
        method: 'POST',
        headers: auth,
      })
      expect(redrive.status).toBe(202)
      sys.forgetFinal(id) // leaving `failed` is the point of a re-drive
      expect(['queued', 'processing', 'completed']).toContain((await sys.media(id))!.status)

      const notes = `killed ${kills} deliveries; dead letter ${letter!.reason}, then re-driven`
      const { row, problems } = await sys.reconcile('8. crash on every delivery → dead letter → re-drive', batch, {
        started,
        notes,
      })
      expect(problems).toEqual([])
      expect(row).toMatchObject({ accepted: 1, completed: 1, lost: 0, duplicated: 0 })
    } finally {
      await sys.stop()
    }
  }, 120_000)
})
