/** Fault tests, storage: the S3 server frozen mid-batch (docs/reliability.md §5.3 S2, briefly). */
import { afterAll, expect, test } from 'bun:test'
import { freezeS3, thawS3, until } from './chaos.ts'
import { afterFaults, imageFiles, startSystem, type Batch } from './harness.ts'
import { useInfra } from '../helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

afterAll(() => {
  thawS3() // never leave the run's S3 server frozen
  afterFaults()
})

test('S3 frozen for 5 s during a batch: uploads wait it out and every job completes (none gives up)', async () => {
  const started = Date.now()
  const sys = await startSystem({ images: 2 })
  try {
    const [files, meanwhile] = await Promise.all([imageFiles(20), imageFiles(3)])
    const uploading = sys.uploadAll(files, 2)
    await until(() => sys.imagesBusy(), 20_000, 'a processor taking a job', 5)
    let during: Promise<Batch>
    try {
      freezeS3()
      during = sys.uploadAll(meanwhile, 1) // these wait on S3 inside the API
      await Bun.sleep(5_000) // the outage lasts 5 s
    } finally {
      thawS3()
    }
    const [a, b] = await Promise.all([uploading, during])
    const batch: Batch = {
      sent: a.sent + b.sent,
      accepted: [...a.accepted, ...b.accepted],
      refused: [...a.refused, ...b.refused],
    }
    expect(batch.refused).toEqual([])

    const notes = `${sys.logCount(/retrying/)} retried attempt(s)`
    const { row, problems } = await sys.reconcile('5. S3 frozen (SIGSTOP) 5 s during 23 image jobs', batch, {
      started,
      notes,
    })
    expect(problems).toEqual([])
    expect(row.errors).toBe('') // a `gave_up` here means retries did not outlast a 5 s outage
    expect(row).toMatchObject({ accepted: 23, completed: 23, lost: 0, duplicated: 0 })
  } finally {
    thawS3()
    await sys.stop()
  }
}, 90_000)

test('S3 frozen for 5 s with a 1 s S3 timeout: requests fail fast, jobs retry with backoff, and every job completes', async () => {
  const started = Date.now()
  // The processors' S3 requests time out after 1 s (3 attempts each), so the outage reaches them as faults.
  const sys = await startSystem({ images: 2, imagesEnv: { S3_TIMEOUT_SECONDS: '1' } })
  try {
    const uploading = sys.uploadAll(await imageFiles(12), 2)
    await until(() => sys.imagesBusy(), 20_000, 'a processor taking a job', 5)
    try {
      freezeS3()
      await until(() => sys.logCount(/hit a fault, retrying in/) > 0, 15_000, 'a job hitting the outage', 50)
      await Bun.sleep(5_000) // the outage lasts 5 s more
    } finally {
      thawS3()
    }
    const batch = await uploading
    const retried = sys.logCount(/hit a fault, retrying in/)
    const { row, problems } = await sys.reconcile('5b. S3 frozen 5 s, processors with a 1 s S3 timeout', batch, {
      started,
      notes: `${retried} attempt(s) retried after a backoff`,
    })
    expect(problems).toEqual([])
    expect(retried).toBeGreaterThan(0)
    expect(row.errors).toBe('') // no `gave_up`: the backoff (1, 2, 4, 8 s) outlasts the outage
    expect(row).toMatchObject({ completed: row.accepted, lost: 0, duplicated: 0 })
  } finally {
    thawS3()
    await sys.stop()
  }
}, 90_000)
