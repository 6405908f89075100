/** The processor runtime's update rule, apart from the broker: at most one per interval, progress only up, final at once. */
import { expect, test } from 'bun:test'
import { createUpdates, type UpdateFields } from '../../shared/processor/updates.ts'

function recorder(intervalMs: number, heartbeatMs = 60_000) {
  const sent: (UpdateFields & { t: number })[] = []
  const started = Date.now()
  const updates = createUpdates({
    send: async (update) => void sent.push({ ...update, t: Date.now() - started }),
    heartbeatMs,
    intervalMs,
    onError: (error) => {
      throw error
    },
  })
  return { sent, updates }
}

test('the first update goes at once; a burst within the interval sends only its newest, one interval later', async () => {
  const { sent, updates } = recorder(100)
  updates.progress('downloading', 0)
  updates.progress('processing', 10)
  updates.progress('processing', 20)
  updates.progress('uploading', 90)
  expect(sent.map((u) => u.stage)).toEqual(['downloading'])
  await Bun.sleep(150)
  expect(sent.map((u) => [u.stage, u.progress])).toEqual([
    ['downloading', 0],
    ['uploading', 90],
  ])
  expect(sent[1]!.t).toBeGreaterThanOrEqual(95)
  updates.final({ status: 'completed', stage: 'finished', progress: 100 })
  await updates.settled()
})

test('progress never goes back, stays below 100 until the end, and the final update drops one still waiting', async () => {
  const { sent, updates } = recorder(100)
  updates.progress('processing', 50)
  updates.progress('processing', 30) // waits its turn, as 50
  updates.progress('processing', 120)
  updates.final({ status: 'failed', stage: 'finished', progress: 100, error: { code: 'timeout', message: 'slow' } })
  await Bun.sleep(150)
  expect(sent.map((u) => [u.status, u.progress])).toEqual([
    ['processing', 50],
    ['failed', 100],
  ])
  updates.progress('processing', 60) // after the final one: never sent
  await Bun.sleep(120)
  expect(sent).toHaveLength(2)
})

test('the heartbeat repeats the latest update until the job ends', async () => {
  const { sent, updates } = recorder(10, 40)
  updates.progress('processing', 42, 7)
  await Bun.sleep(150)
  updates.close()
  const beats = sent.length
  expect(beats).toBeGreaterThanOrEqual(3)
  expect(new Set(sent.map((u) => `${u.stage}:${u.progress}:${u.etaSeconds}`))).toEqual(new Set(['processing:42:7']))
  await Bun.sleep(100)
  expect(sent).toHaveLength(beats)
})
