/**
 * Scheduling against the real API, RabbitMQ, S3 and image processor: interactive work before a bulk backlog with
 * bulk work not starved, one tenant's flood routed to bulk while another's upload goes first, reprocessing and bulk
 * keys as bulk work (an operator's re-drive: tests/api.test.ts). (The ways of asking for bulk are tests/classes.test.ts; the processor's gate, its slots and
 * its order are tests/processor.test.ts.)
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { issueKey } from '../services/api/auth/keys.ts'
import { bulkStartedIn, measureBacklog, type BacklogProbe } from './helpers/backlog.ts'
import { apiKey } from './helpers/env.ts'
import { photo } from './bench/work.ts'
import { useInfra } from './helpers/infra.ts'
import { startStack, type Stack } from './helpers/stack.ts'

await useInfra()

let stack: Stack | undefined
afterEach(async () => {
  await stack?.stop()
  stack = undefined
})

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** When the job of a media started processing and when it ended, as the API recorded them (ms since the epoch). */
async function timesOf(s: Stack, id: string) {
  const media = await s.api.store.media.get(id)
  const history = await s.api.store.media.history(media!.jobId)
  const at = (status: string) => Date.parse(history.find((h) => h.status === status)?.at ?? 'x')
  return { started: at('processing'), completed: at('completed') }
}

describe('interactive work behind a bulk backlog', () => {
  test('with 200 bulk jobs queued and 2 slots, an upload starts within one job and takes at most twice its time alone; bulk keeps 40 % of its pace', async () => {
    stack = await startStack({ env: { IMAGE_CONCURRENCY: '2' } })
    const s = stack
    const probe: BacklogProbe = {
      async upload(bytes, priority) {
        const res = await s.upload(bytes, {}, priority && { priority })
        expect(res.status).toBe(202)
        return (await res.json()) as { id: string; priority: string }
      },
      events: (id) => s.fetch(`/v1/media/${id}/events`),
      bulkStarted: async () => bulkStartedIn(await s.imageProcessor!.registry.metrics()),
    }
    const image = await photo(1600, 1200)
    const figures = await measureBacklog(probe, image, { backlog: 200, alone: 3, behind: 8, windowMs: 2_000 })
    // The measurement is only worth something while the backlog lasts.
    expect(figures.bulkStartedAtEnd).toBeLessThan(200)

    const alone = median(figures.alone.map((t) => t.totalMs))
    // One job's duration: the time alone includes the API and the broker, so it bounds the processing.
    for (const t of figures.behind) expect(t.waitMs).toBeLessThan(alone)
    expect(median(figures.behind.map((t) => t.totalMs))).toBeLessThan(2 * alone)
    expect(figures.bulkWithInteractivePerSecond).toBeGreaterThanOrEqual(0.4 * figures.bulkAlonePerSecond)
  }, 180_000)
})

describe('fairness between tenants', () => {
  test("a tenant past its fair share of waiting jobs gets bulk jobs; another tenant's upload starts before them", async () => {
    stack = await startStack({ images: false, env: { IMAGE_CONCURRENCY: '2', FAIR_SHARE_WAITING_JOBS: '3' } })
    const s = stack
    const image = await photo(320, 240)
    const keyOf = async (tenant: string) => ({
      authorization: `Bearer ${(await issueKey(s.api.store, tenant)).key}`,
    })
    const flood = await keyOf('flood')
    const other = await keyOf('other')
    const floods: { id: string; priority: string }[] = []
    for (let i = 0; i < 8; i++) floods.push((await (await s.upload(image, flood)).json()) as (typeof floods)[number])
    // Up to the share (3 waiting), then one more: the share is "more than 3 waiting" when the next one comes.
    expect(floods.map((f) => f.priority)).toEqual([...Array(4).fill('interactive'), ...Array(4).fill('bulk')])
    const mine = (await (await s.upload(image, other)).json()) as { id: string; priority: string }
    expect(mine.priority).toBe('interactive')
    const { id: floodsMedia } = floods[6]!
    expect(
      ((await (await s.fetch(`/v1/media/${floodsMedia}`, { headers: flood })).json()) as { priority: string }).priority
    ).toBe('bulk')

    await s.startImages()
    for (const { id } of [...floods, mine])
      await waitUntil(async () => (await s.api.store.media.get(id))!.status === 'completed', 60_000)
    const started = await timesOf(s, mine.id)
    const bulkStarts = await Promise.all(floods.slice(4).map(async ({ id }) => (await timesOf(s, id)).started))
    // A processor starting up may take one bulk job before its first interactive delivery arrives; after that no bulk
    // job starts while interactive work waits.
    expect(bulkStarts.filter((at) => at < started.started).length).toBeLessThanOrEqual(1)
  }, 120_000)
})

describe('what is bulk', () => {
  test('a reprocess is bulk unless asked otherwise; a bulk key makes every upload bulk', async () => {
    stack = await startStack({ env: { IMAGE_CONCURRENCY: '2' } })
    const s = stack
    const image = await photo(320, 240)
    const accepted = (await (await s.upload(image)).json()) as { id: string; priority: string }
    expect(accepted.priority).toBe('interactive')
    await s.waitForFinal(accepted.id)
    const reprocess = async (body: object) =>
      (await (
        await s.fetch(`/v1/media/${accepted.id}/reprocess`, {
          method: 'POST',
          body: JSON.stringify(body),
          headers: { ...apiKey, 'content-type': 'application/json' },
        })
      ).json()) as { priority: string }
    expect((await reprocess({})).priority).toBe('bulk')
    await s.waitForFinal(accepted.id)
    await waitUntil(async () => (await s.api.store.media.get(accepted.id))!.reprocess === null)
    expect((await reprocess({ priority: 'interactive' })).priority).toBe('interactive')

    const { key } = await issueKey(s.api.store, 'importer', { priority: 'bulk' })
    const imported = await s.upload(image, { authorization: `Bearer ${key}` }, { priority: 'interactive' })
    expect(((await imported.json()) as { priority: string }).priority).toBe('bulk')
  })
})

/** Polls `check` until it gives a value; fails after `timeoutMs`. */
async function waitUntil<T>(check: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms in vain`)
    await Bun.sleep(20)
  }
}
