/** The rules that make applying updates and results idempotent (services/api/store/rules.ts), apart from any database. */
import { describe, expect, test } from 'bun:test'
import type { ImageResult, JobUpdate } from '@app/shared'
import { afterResult, afterUpdate, withClass, type JobState } from '../../services/api/store/rules.ts'

const queued: JobState = { status: 'queued', stage: 'queued', progress: 0, etaSeconds: null, error: null, outputs: [] }
const jobId = crypto.randomUUID()
const at = new Date().toISOString()
const update = (stage: JobUpdate['stage'], progress: number, etaSeconds?: number | null): JobUpdate => ({
  version: 1,
  jobId,
  status: 'processing',
  stage,
  progress,
  at,
  ...(etaSeconds !== undefined ? { etaSeconds } : {}),
})
const completed: ImageResult = {
  version: 1,
  jobId,
  status: 'completed',
  at,
  outputs: [{ name: 'thumb', key: 'k/thumb.webp', contentType: 'image/webp', size: 10, width: 32, height: 24 }],
  metadata: { format: 'jpeg', width: 64, height: 48, hasAlpha: false, pages: 1, orientation: 1 },
}
const failed: ImageResult = {
  version: 1,
  jobId,
  status: 'failed',
  at,
  error: { code: 'invalid_media', message: 'corrupt' },
}

/** Folds messages over a job as the store applies them, skipping those that change nothing. */
const apply = (start: JobState, messages: (JobUpdate | ImageResult)[]) =>
  messages.reduce((job, m) => ('stage' in m ? afterUpdate(job, m) : afterResult(job, m)) ?? job, start)

describe('updates', () => {
  test('move a job forward only: status to processing, stage and progress never back', () => {
    const job = apply(queued, [
      update('processing', 40),
      update('downloading', 10),
      update('uploading', 80),
      update('processing', 50),
    ])
    expect(job).toMatchObject({ status: 'processing', stage: 'uploading', progress: 80 })
  })

  test('a duplicate changes nothing, so the store can say nothing changed', () => {
    const job = apply(queued, [update('processing', 40, 12)])
    expect(afterUpdate(job, update('processing', 40, 12))).toBeNull()
  })

  test('keep the ETA of the newest progress and ignore a stale one', () => {
    const job = apply(queued, [update('processing', 40, 12), update('processing', 30, 99)])
    expect(job.etaSeconds).toBe(12)
  })

  test('never touch a final job', () => {
    const done = apply(queued, [completed])
    expect(afterUpdate(done, update('processing', 10))).toBeNull()
  })
})

describe('results', () => {
  test('the first final result wins; a later or contradicting one changes nothing', () => {
    const done = apply(queued, [update('processing', 50), completed])
    expect(done).toMatchObject({ status: 'completed', stage: 'finished', progress: 100, outputs: completed.outputs })
    expect(afterResult(done, failed)).toBeNull()
    expect(afterResult(done, completed)).toBeNull()
  })

  test('any order of the same messages, with duplicates, ends in the same state', () => {
    const messages = [update('downloading', 0), update('processing', 40), update('uploading', 80), completed, failed]
    const tidy = apply(queued, messages)
    const shuffled = apply(queued, [
      messages[2]!,
      completed,
      messages[0]!,
      messages[2]!,
      failed,
      messages[1]!,
      completed,
    ])
    expect(shuffled).toEqual(tidy)
  })

  test('a failure gets the class of its code when the processor did not say', () => {
    expect(apply(queued, [failed]).error).toEqual({ code: 'invalid_media', message: 'corrupt', class: 'input' })
    expect(withClass({ code: 'storage_refused', message: 'm' }).class).toBe('internal')
    expect(withClass({ code: 'gave_up', message: 'm', class: 'transient' }).class).toBe('transient')
  })
})
