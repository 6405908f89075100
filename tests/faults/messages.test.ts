/**
 * Fault tests, messages: updates and results duplicated, reordered and contradicting a final state (docs/
 * reliability.md §5.3 A3, A4), and malformed messages on every queue (M1, M2).
 */
import { afterAll, expect, test } from 'bun:test'
import {
  ImageResultSchema,
  JobUpdateSchema,
  MEDIA_TYPES,
  encodeMessage,
  queueNames,
  type ImageMetadata,
  type ImageResult,
  type JobUpdate,
} from '@app/shared'
import { connectRabbit } from '../helpers/rabbit.ts'
import { afterFaults, imageFiles, startSystem, type Batch, type Media } from './harness.ts'
import { useInfra } from '../helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

afterAll(afterFaults)

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never

/** The parts of a media a late message must not change. */
const finalState = ({ status, stage, progress, error, metadata, outputs }: Media) => ({
  status,
  stage,
  progress,
  error,
  metadata,
  outputs,
})

test('duplicated, out-of-order and contradicting updates and results leave every completed job as it was', async () => {
  const started = Date.now()
  const sys = await startSystem({ images: 2 })
  const rabbit = await connectRabbit()
  try {
    const batch = await sys.uploadImages(10)
    expect(batch.accepted).toHaveLength(10)
    expect(await sys.waitForQuiet(batch.accepted, 60_000)).toBe(true)
    const before = new Map<string, Media>()
    for (const id of batch.accepted) before.set(id, (await sys.media(id))!)

    // Each job's messages as the processor sent them (keys from S3, the rest from the API), and contradicting ones.
    const names = queueNames(sys.system, 'images')
    const at = () => new Date().toISOString()
    const updates: Uint8Array[] = []
    const results: Uint8Array[] = []
    for (const media of before.values()) {
      expect(media.status).toBe('completed')
      const { jobId } = media
      const prefix = `${sys.system}/outputs/${jobId}/`
      const keys = await sys.s3.keys(prefix)
      const outputs = media.outputs.map(({ url, ...o }) => ({
        ...o,
        key: keys.find((k) => k.startsWith(`${prefix}${o.name}.`))!,
      }))
      const update = (u: Omit<JobUpdate, 'version' | 'jobId' | 'at'>) =>
        encodeMessage(JobUpdateSchema, { version: 1, jobId, at: at(), ...u })
      const result = (r: DistributiveOmit<ImageResult, 'version' | 'jobId' | 'at'>) =>
        encodeMessage(ImageResultSchema, { version: 1, jobId, at: at(), ...r })
      const metadata = media.metadata as ImageMetadata
      updates.push(
        update({ status: 'completed', stage: 'finished', progress: 100 }),
        update({ status: 'processing', stage: 'uploading', progress: 80 }),
        update({ status: 'processing', stage: 'downloading', progress: 0 }),
        update({
          status: 'failed',
          stage: 'finished',
          progress: 100,
          error: { code: 'gave_up', message: 'a stale attempt gave up' },
        }),
        update({ status: 'processing', stage: 'processing', progress: 20 })
      )
      results.push(
        result({ status: 'completed', outputs, metadata }),
        result({
          status: 'failed',
          error: { code: 'invalid_media', message: 'a late result that contradicts the first' },
        }),
        result({
          status: 'completed',
          outputs: outputs.map((o) => ({ ...o, size: o.size + 1, width: 1, height: 1 })),
          metadata,
        }),
        result({ status: 'cancelled' })
      )
    }

    // A sentinel job, kept queued (processors frozen), shows when everything published before it was applied.
    for (const p of sys.images) p.pause()
    const sentinel = await sys.upload((await imageFiles(1))[0]!)
    if (!sentinel.accepted) throw new Error(`the sentinel upload was refused: ${JSON.stringify(sentinel)}`)
    const shuffled = <T>(items: T[]) =>
      items
        .map((item) => ({ item, key: Math.random() }))
        .sort((a, b) => a.key - b.key)
        .map((x) => x.item)
    for (const body of shuffled([...updates, ...updates])) await rabbit.publishRaw(names.updates, body)
    await rabbit.publishRaw(
      names.updates,
      encodeMessage(JobUpdateSchema, {
        version: 1,
        jobId: sentinel.jobId,
        at: at(),
        status: 'processing',
        stage: 'processing',
        progress: 7,
      })
    )
    await sys.waitFor(sentinel.id, (m) => m.progress === 7, 20_000, 'the sentinel update')
    for (const body of shuffled([...results, ...results])) await rabbit.publishRaw(names.results, body)
    await rabbit.publishRaw(
      names.results,
      encodeMessage(ImageResultSchema, { version: 1, jobId: sentinel.jobId, at: at(), status: 'cancelled' })
    )
    await sys.waitFor(sentinel.id, (m) => m.status === 'cancelled', 20_000, 'the sentinel result')
    for (const p of sys.images) p.resume()

    for (const [id, media] of before) expect(finalState((await sys.media(id))!)).toEqual(finalState(media))
    const { row, problems } = await sys.reconcile(
      '11. duplicate/out-of-order/contradicting updates and results ×2',
      batch,
      { started }
    )
    expect(problems).toEqual([])
    expect(row).toMatchObject({ accepted: 10, completed: 10, lost: 0, duplicated: 0 })
  } finally {
    await rabbit.close()
    await sys.stop()
  }
}, 90_000)

test('malformed messages on every queue are dead-lettered naming the problem, and every consumer keeps serving', async () => {
  const started = Date.now()
  const sys = await startSystem({ images: 1, videos: true, audio: true })
  const rabbit = await connectRabbit()
  try {
    const kinds = [
      { kind: 'bad JSON', body: '{"version": 1, "jobId": ', problem: /json/i },
      {
        kind: 'wrong schema',
        body: JSON.stringify({ version: 1, jobId: 'not-a-uuid', status: 'sideways' }),
        problem: /schema/i,
      },
      {
        kind: 'unknown version',
        body: JSON.stringify({ version: 2, jobId: crypto.randomUUID() }),
        problem: /version/i,
      },
      {
        kind: 'over 256 KiB',
        body: JSON.stringify({ version: 1, jobId: crypto.randomUUID(), pad: 'x'.repeat(300 * 1024) }),
        problem: /bytes|size|large|262144|256/i,
      },
    ]
    const sent: { queue: string; kind: string; problem: RegExp }[] = []
    for (const type of MEDIA_TYPES) {
      const names = queueNames(sys.system, type)
      for (const queue of [names.request, names.updates, names.results]) {
        for (const { kind, body, problem } of kinds) {
          await rabbit.publishRaw(queue, body, { messageId: crypto.randomUUID() })
          sent.push({ queue, kind, problem })
        }
      }
    }
    // Every processor and the API still serve.
    const images = await sys.uploadImages(1)
    const videos = await sys.uploadVideos(1)
    const sounds = await sys.uploadAudio(1, 2)
    const batch: Batch = {
      sent: 3,
      accepted: [...images.accepted, ...videos.accepted, ...sounds.accepted],
      refused: [...images.refused, ...videos.refused, ...sounds.refused],
    }
    const { row, problems } = await sys.reconcile(
      `9. malformed messages ×${sent.length} on all ${3 * MEDIA_TYPES.length} queues, then one upload of each kind`,
      batch,
      { started }
    )
    expect(problems).toEqual([])
    expect(row).toMatchObject({ accepted: 3, completed: 3, lost: 0, duplicated: 0 })

    // Each one is listed for an operator, with what is wrong with it.
    type DeadLetter = { id: string; queue: string; reason: string; problem: string | null }
    let letters: DeadLetter[] = []
    const missing = () =>
      sent.filter((s) => !letters.some((d) => d.queue === s.queue && s.problem.test(d.problem ?? '')))
    const deadline = Date.now() + 20_000
    for (;;) {
      const res = await fetch(`${sys.url}/v1/admin/dead-letters`, {
        headers: { authorization: `Bearer ${sys.adminToken}` },
      })
      expect(res.status).toBe(200)
      letters = ((await res.json()) as { deadLetters: DeadLetter[] }).deadLetters
      if (missing().length === 0 || Date.now() > deadline) break
      await Bun.sleep(250)
    }
    expect(missing().map((s) => `${s.kind} on ${s.queue}`)).toEqual([])
  } finally {
    await rabbit.close()
    await sys.stop()
  }
}, 90_000)
