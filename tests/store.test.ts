/**
 * The store's contract, run against each database it supports: SQLite (a file in a temp directory) and PostgreSQL
 * (a schema of its own). Where several instances matter, two stores are opened on the same database, as two API
 * instances would: they must never take the same outbox row in a round, apply the same result twice, or re-drive or
 * fail the same stalled job twice.
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { queueNames, type ImageResult, type JobUpdate } from '@app/shared'
import { openStore, type Database } from '../services/api/store/open.ts'
import { POSTGRES, SCHEMA_VERSION, SQLITE, stepsFrom } from '../services/api/store/migrations.ts'
import type { NewMedia } from '../services/api/store/media.ts'
import type { Store } from '../services/api/store/open.ts'
import type { Webhook } from '../services/api/store/webhooks.ts'
import { newPostgresSchema, withPostgres } from './helpers/postgres.ts'

interface Backend {
  name: string
  /** A new, empty database. */
  fresh(): Promise<Database>
  /** Runs one statement on the database directly: the test's stand-in for time passing. */
  exec(database: Database, statement: string): Promise<void>
}

const backends: Backend[] = [
  {
    name: 'sqlite',
    fresh: async () => ({ kind: 'sqlite', path: join(mkdtempSync(join(tmpdir(), 'media-store-')), 'media.db') }),
    async exec(database, statement) {
      const db = new DatabaseSync((database as { path: string }).path)
      db.exec('PRAGMA busy_timeout = 5000')
      db.exec(statement)
      db.close()
    },
  },
  {
    name: 'postgresql',
    fresh: async () => ({ kind: 'postgres', url: await newPostgresSchema() }),
    exec: (database, statement) =>
      withPostgres((database as { url: string }).url, async (sql) => void (await sql.unsafe(statement))),
  },
]

const system = 'contract'
function newMedia(overrides: Partial<NewMedia> = {}): NewMedia {
  const id = crypto.randomUUID()
  const jobId = crypto.randomUUID()
  return {
    id,
    tenant: 'acme',
    filename: 'cat.jpg',
    kind: 'image',
    format: 'jpeg',
    size: 5_000_000_000, // over 32 bits: sizes are BIGINT
    bucket: 'media',
    sourceKey: `${system}/originals/${id}`,
    jobId,
    type: 'images',
    request: {
      messageId: crypto.randomUUID(),
      jobId,
      queue: queueNames(system, 'images').request,
      type: 'job.request',
      body: new Uint8Array([0, 1, 2, 255]),
    },
    ...overrides,
  }
}
const update = (jobId: string, progress: number, stage: JobUpdate['stage'] = 'processing'): JobUpdate => ({
  version: 1,
  jobId,
  status: 'processing',
  stage,
  progress,
  at: new Date().toISOString(),
})
const completed = (jobId: string, name = 'thumb'): ImageResult => ({
  version: 1,
  jobId,
  status: 'completed',
  at: new Date().toISOString(),
  outputs: [
    {
      name,
      key: `${system}/outputs/${jobId}/${name}.webp`,
      contentType: 'image/webp',
      size: 1234,
      width: 320,
      height: 240,
    },
  ],
  metadata: { width: 640, height: 480, format: 'jpeg', hasAlpha: false, orientation: 1, pages: 1 },
})
/** Resolves once the clock has moved past now, so that "silent for 0 ms" holds for what was just written. */
const tick = async () => {
  const start = Date.now()
  while (Date.now() <= start) await new Promise((resolve) => setTimeout(resolve, 1))
}

describe.each(backends)('store on $name', (backend) => {
  async function twoStores(): Promise<[Store, Store, () => Promise<void>, Database]> {
    const database = await backend.fresh()
    const a = await openStore(database, { origin: 'api-a' })
    const b = await openStore(database, { origin: 'api-b' })
    return [a, b, async () => void (await Promise.all([a.close(), b.close()])), database]
  }

  test('instances starting together migrate the database once', async () => {
    const database = await backend.fresh()
    const stores = await Promise.all(Array.from({ length: 4 }, (_, i) => openStore(database, { origin: `api-${i}` })))
    const media = newMedia()
    await stores[0]!.media.create(media)
    for (const store of stores) expect((await store.media.get(media.id))?.jobId).toBe(media.jobId)
    await Promise.all(stores.map((s) => s.close()))
    // Opening again on the migrated database changes nothing and keeps the data.
    const again = await openStore(database)
    expect((await again.media.get(media.id))?.size).toBe(5_000_000_000)
    await again.close()
  })

  test('a database from before request bodies moved out of the outbox keeps each unsent request whole', async () => {
    const database = await backend.fresh()
    const sqlite = backend.name === 'sqlite'
    const [mediaId, jobId, messageId] = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()]
    const now = new Date().toISOString()
    // The schema as version 16 made it, with an unsent request in it, written as that version wrote it.
    await backend.exec(
      database,
      [
        ...stepsFrom(0, sqlite ? SQLITE : POSTGRES)
          .filter((step) => step.version <= 16)
          .map((step) => step.sql),
        sqlite
          ? 'PRAGMA user_version = 16'
          : 'CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (16)',
        `INSERT INTO media (id, tenant, kind, format, size, bucket, source_key, created_at, updated_at)
         VALUES ('${mediaId}', 'acme', 'image', 'jpeg', 10, 'media', 'k', '${now}', '${now}')`,
        `INSERT INTO jobs (id, media_id, type, status, stage, created_at, updated_at)
         VALUES ('${jobId}', '${mediaId}', 'images', 'queued', 'queued', '${now}', '${now}')`,
        `INSERT INTO outbox (message_id, job_id, queue, type, body, created_at)
         VALUES ('${messageId}', '${jobId}', 'q', 'job.request', ${sqlite ? "X'0001ff'" : "'\\x0001ff'::bytea"}, 1)`,
      ].join(';\n')
    )
    const store = await openStore(database)
    const claimed = await store.outbox.claimUnpublished(0, 60_000)
    expect(claimed.map((m) => [m.messageId, m.jobId, m.queue, m.type, [...m.body]])).toEqual([
      [messageId, jobId, 'q', 'job.request', [0, 1, 255]],
    ])
    await store.close()
  })

  test('every change is announced once it commits, by the store that made it: no caller announces anything', async () => {
    const [a, b, close] = await twoStores()
    const heard = { a: [] as string[], b: [] as string[] }
    a.onMediaChanged(({ mediaId }) => heard.a.push(mediaId))
    b.onMediaChanged(({ mediaId }) => heard.b.push(mediaId))
    const [one, two, three] = [newMedia(), newMedia(), newMedia()]
    for (const media of [one, two, three]) await a.media.create(media)
    expect(heard.a).toEqual([one.id, two.id, three.id]) // a creation is a change of the tenant's media too
    await a.media.applyUpdate(update(one.jobId, 10))
    await a.media.applyUpdate(update(one.jobId, 10)) // the same again: nothing changed, nothing announced
    await a.media.applyResult(completed(one.jobId))
    await a.media.cancel(two.id)
    await a.media.cancel(two.id) // final already
    await a.deadLetters.record(
      {
        id: crypto.randomUUID(),
        type: 'images',
        queue: 'q.request',
        reason: 'delivery_limit',
        deliveries: 5,
        jobId: three.jobId,
        problem: null,
        messageId: crypto.randomUUID(),
        headers: {},
        body: new Uint8Array([1]),
        deadAt: new Date().toISOString(),
      },
      { code: 'crashed', class: 'crash', message: 'gave up' }
    )
    await a.media.remove(one.id, { event: true })
    expect(heard.a).toEqual([one.id, two.id, three.id, one.id, one.id, two.id, three.id, one.id])
    expect(heard.b).toEqual([]) // another instance's store hears of it over the broker, not from the database
    // A re-drive that finds no job (its media deleted) changes nothing, and announces nothing.
    const letter = (await a.deadLetters.list(1))[0]!
    await a.media.remove(three.id)
    const before = heard.a.length
    expect(await a.deadLetters.redrive(letter.id, crypto.randomUUID())).toBeUndefined() // its job is gone
    expect(heard.a.length).toBe(before)
    await close()
  })

  test('a reprocess: the media serves its current job until the new one completes, then switches (one event); a failed one changes nothing', async () => {
    const [store, , close] = await twoStores()
    const hook: Webhook = {
      id: crypto.randomUUID(),
      tenant: 'acme',
      url: 'https://hooks.example.com/x',
      events: ['media.completed', 'media.failed'],
      secrets: [{ secret: 'whsec_x', expiresAt: null }],
      createdAt: new Date().toISOString(),
      disabledAt: null,
      disabledReason: null,
    }
    await store.webhooks.create(hook)
    const media = newMedia({ presets: ['thumb'] })
    await store.media.create(media)
    await store.media.applyResult(completed(media.jobId, 'thumb'))
    const job = (jobId: string, presets: string[]) => ({
      mediaId: media.id,
      jobId,
      type: 'images' as const,
      presets,
      request: { messageId: crypto.randomUUID(), jobId, queue: 'q', type: 'job.request', body: new Uint8Array([1]) },
    })
    const second = crypto.randomUUID()
    expect(await store.media.addJob(job(second, ['avatar']))).toEqual({ outcome: 'added' })
    expect(await store.media.addJob(job(crypto.randomUUID(), ['srcset']))).toEqual({
      outcome: 'busy',
      jobId: second,
      status: 'queued',
    })
    expect(await store.media.get(media.id)).toMatchObject({
      jobId: media.jobId,
      status: 'completed',
      presets: ['thumb'],
      reprocess: { jobId: second, status: 'queued', presets: ['avatar'] },
    })
    const applied = await store.media.applyResult(completed(second, 'avatar'))
    expect(applied?.replaced).toEqual({ jobId: media.jobId, outputs: [expect.objectContaining({ name: 'thumb' })] })
    expect(await store.media.get(media.id)).toMatchObject({
      jobId: second,
      presets: ['avatar'],
      reprocess: null,
      outputs: [expect.objectContaining({ name: 'avatar' })],
    })
    // A third, that fails: no event, and the media still serves the second's outputs.
    const third = crypto.randomUUID()
    await store.media.addJob(job(third, ['srcset']))
    await store.media.applyResult({
      version: 1,
      jobId: third,
      status: 'failed',
      error: { code: 'invalid_media', message: 'no' },
      at: new Date().toISOString(),
    })
    expect(await store.media.get(media.id)).toMatchObject({
      jobId: second,
      status: 'completed',
      reprocess: { jobId: third, status: 'failed' },
    })
    const events = (await store.webhooks.deliveries(hook.id, 10)).map((d) => d.event)
    expect(events).toEqual(['media.completed', 'media.completed'])
    // A job whose request could not be sent is removed, never the one the media serves.
    const fourth = crypto.randomUUID()
    await store.media.addJob(job(fourth, ['thumb']))
    await store.media.removeJob(fourth)
    await store.media.removeJob(second)
    expect(await store.media.get(media.id)).toMatchObject({ jobId: second, reprocess: { jobId: third } })
    await close()
  })

  test('a media round-trips, with its job, its request and its history', async () => {
    const [store, , close] = await twoStores()
    const media = newMedia()
    await store.media.create(media)
    const record = (await store.media.get(media.id))!
    expect(record).toMatchObject({
      id: media.id,
      tenant: 'acme',
      filename: 'cat.jpg',
      kind: 'image',
      format: 'jpeg',
      size: 5_000_000_000,
      bucket: 'media',
      sourceKey: media.sourceKey,
      jobId: media.jobId,
      type: 'images',
      status: 'queued',
      stage: 'queued',
      progress: 0,
      etaSeconds: null,
      error: null,
      outputs: [],
      metadata: null,
    })
    const [request] = await store.outbox.claimUnpublished(0, 60_000)
    expect(request?.messageId).toBe(media.request.messageId)
    expect([...request!.body]).toEqual([0, 1, 2, 255])
    expect((await store.media.history(media.jobId)).map((h) => [h.status, h.reason, h.origin])).toEqual([
      ['queued', 'created', 'api-a'],
    ])
    await store.media.remove(media.id)
    expect(await store.media.get(media.id)).toBeUndefined()
    expect(await store.media.history(media.jobId)).toEqual([])
    await close()
  })

  test("a tenant's media list: newest first, filtered by kind and status, paged without skipping or repeating", async () => {
    const [store, , close] = await twoStores()
    const made: NewMedia[] = []
    // Several in the same millisecond: the id orders those.
    for (let i = 0; i < 7; i++) {
      const media = newMedia(i % 3 === 2 ? { kind: 'video', type: 'videos' } : {})
      await store.media.create(media)
      made.push(media)
    }
    await store.media.create(newMedia({ tenant: 'other' }))
    await store.media.applyResult(completed(made[0]!.jobId))
    await store.media.applyUpdate(update(made[1]!.jobId, 40))

    const all = await store.media.list('acme', { limit: 100 })
    expect(all.map((m) => m.id).sort()).toEqual(made.map((m) => m.id).sort())
    const order = all.map((m) => [m.createdAt, m.id].join(' '))
    expect(order).toEqual([...order].sort().reverse())
    expect(all.every((m) => m.tenant === 'acme')).toBe(true)

    const pages: string[] = []
    let after: { createdAt: string; id: string } | undefined
    for (;;) {
      const page = await store.media.list('acme', { limit: 3, after })
      pages.push(...page.map((m) => m.id))
      if (page.length < 3) break
      after = page.at(-1)!
    }
    expect(pages).toEqual(all.map((m) => m.id))

    const videos = await store.media.list('acme', { limit: 100, kinds: ['video'] })
    expect(videos.map((m) => m.id).sort()).toEqual(
      made
        .filter((m) => m.kind === 'video')
        .map((m) => m.id)
        .sort()
    )
    const done = await store.media.list('acme', { limit: 100, statuses: ['completed', 'processing'] })
    expect(done.map((m) => [m.id, m.status]).sort()).toEqual(
      [
        [made[0]!.id, 'completed'],
        [made[1]!.id, 'processing'],
      ].sort()
    )
    expect(done.find((m) => m.status === 'completed')?.outputs.map((o) => o.name)).toEqual(['thumb'])
    expect(await store.media.list('nobody', { limit: 100 })).toEqual([])
    await close()
  })

  test("a shared secret: the first instance's is everyone's, however many ask at once", async () => {
    const [a, b, close] = await twoStores()
    const answers = await Promise.all([
      a.coordination.sharedSecret('links', 'from-a'),
      b.coordination.sharedSecret('links', 'from-b'),
      a.coordination.sharedSecret('links', 'from-a2'),
    ])
    expect(new Set(answers).size).toBe(1)
    expect(['from-a', 'from-b', 'from-a2']).toContain(answers[0]!)
    expect(await b.coordination.sharedSecret('links', 'later')).toBe(answers[0]!)
    expect(await a.coordination.sharedSecret('other', 'its-own')).toBe('its-own')
    await close()
  })

  test('updates only move forward; the first result wins; each is recorded once', async () => {
    const [a, b, close] = await twoStores()
    const media = newMedia()
    await a.media.create(media)
    expect((await a.media.applyUpdate(update(media.jobId, 40)))?.changed).toBe(true)
    expect((await b.media.applyUpdate(update(media.jobId, 20, 'downloading')))?.changed).toBe(false)
    expect(await a.media.get(media.id)).toMatchObject({ status: 'processing', stage: 'processing', progress: 40 })

    // The same result reaching both instances at once (a redelivery after a crash): applied by exactly one.
    const results = await Promise.all([
      a.media.applyResult(completed(media.jobId)),
      b.media.applyResult(completed(media.jobId, 'other')),
    ])
    expect(results.filter((r) => r?.changed)).toHaveLength(1)
    const final = (await b.media.get(media.id))!
    expect(final.status).toBe('completed')
    expect(final.outputs).toHaveLength(1)
    expect(final.metadata).toMatchObject({ width: 640, height: 480 })
    expect((await a.media.applyUpdate(update(media.jobId, 99)))?.changed).toBe(false)
    expect((await a.media.history(media.jobId)).map((h) => `${h.status}/${h.reason}`)).toEqual([
      'queued/created',
      'processing/update',
      'completed/result',
    ])
    expect(await a.media.applyResult(completed(crypto.randomUUID()))).toBeUndefined()
    await close()
  })

  test('many results for many jobs from two instances at once: each job completes exactly once', async () => {
    const [a, b, close] = await twoStores()
    const jobs = Array.from({ length: 20 }, () => newMedia())
    for (const media of jobs) await a.media.create(media)
    const applied = await Promise.all(
      jobs.flatMap((m) => [
        a.media.applyResult(completed(m.jobId)),
        b.media.applyResult(completed(m.jobId)),
        a.media.applyResult(completed(m.jobId)),
      ])
    )
    expect(applied.filter((r) => r?.changed)).toHaveLength(jobs.length)
    for (const media of jobs)
      expect((await b.media.history(media.jobId)).filter((h) => h.status === 'completed')).toHaveLength(1)
    expect((await a.media.countJobs()).completed).toBe(jobs.length)
    await close()
  })

  test('the outbox relay: each unsent request is claimed by one instance a round, and given back when it cannot be sent', async () => {
    const [a, b, close] = await twoStores()
    const jobs = Array.from({ length: 30 }, () => newMedia())
    for (const media of jobs) await a.media.create(media)
    expect(await a.outbox.claimUnpublished(60_000, 60_000)).toEqual([]) // younger than the grace period
    const [mine, theirs] = await Promise.all([
      a.outbox.claimUnpublished(0, 60_000),
      b.outbox.claimUnpublished(0, 60_000),
    ])
    const ids = [...mine, ...theirs].map((m) => m.messageId)
    expect(new Set(ids).size).toBe(ids.length)
    expect(ids.sort()).toEqual(jobs.map((m) => m.request.messageId).sort())
    expect(await a.outbox.claimUnpublished(0, 60_000)).toEqual([]) // all claimed

    await a.outbox.markPublished([jobs[0]!.request.messageId])
    await a.outbox.unclaim(jobs.slice(0, 2).map((m) => m.request.messageId))
    // The published one stays sent; the other given back is free for any instance.
    expect((await b.outbox.claimUnpublished(0, 60_000)).map((m) => m.messageId)).toEqual([jobs[1]!.request.messageId])
    // An expired claim (an instance that died while sending) is taken over.
    const database = await backend.fresh()
    const c = await openStore(database)
    const d = await openStore(database)
    const media = newMedia()
    await c.media.create(media)
    expect(await c.outbox.claimUnpublished(0, 0)).toHaveLength(1)
    await tick()
    expect(await d.outbox.claimUnpublished(0, 60_000)).toHaveLength(1)
    await Promise.all([c.close(), d.close(), close()])
  })

  test('a round of timer work goes to one instance, and again only when it is due', async () => {
    const [a, b, close] = await twoStores()
    const first = await Promise.all([
      a.coordination.claimRound('sweep', 60_000),
      b.coordination.claimRound('sweep', 60_000),
      a.coordination.claimRound('sweep', 60_000),
    ])
    expect(first.filter(Boolean)).toHaveLength(1)
    expect(await b.coordination.claimRound('other', 60_000)).toBe(true) // rounds are named apart
    expect(await a.coordination.claimRound('sweep', 60_000)).toBe(false)
    expect(await a.coordination.claimRound('soon', 0)).toBe(true)
    await tick()
    expect(await b.coordination.claimRound('soon', 0)).toBe(true)
    await close()
  })

  test('a lease has one holder at a time: renewed by its holder, free once released or expired', async () => {
    const [a, b, close] = await twoStores()
    const first = await Promise.all([
      a.coordination.claimLease('upload-1', 'A', 60_000),
      b.coordination.claimLease('upload-1', 'B', 60_000),
    ])
    expect(first.filter(Boolean)).toHaveLength(1)
    const [holder, other] = first[0] ? (['A', 'B'] as const) : (['B', 'A'] as const)
    expect(await a.coordination.claimLease('upload-1', holder, 60_000)).toBe(true) // renewed
    expect(await b.coordination.claimLease('upload-1', other, 60_000)).toBe(false)
    await a.coordination.releaseLease('upload-1', other) // not its to give up: nothing happens
    expect(await b.coordination.claimLease('upload-1', other, 60_000)).toBe(false)
    await b.coordination.releaseLease('upload-1', holder)
    expect(await b.coordination.claimLease('upload-1', other, 0)).toBe(true)
    await tick()
    expect(await a.coordination.claimLease('upload-1', holder, 60_000)).toBe(true) // the 0 ms lease ran out
    await close()
  })

  test('an Idempotency-Key: claimed by one request, answered once, then its answer; expired or abandoned keys are free', async () => {
    const [a, b, close] = await twoStores()
    const keep = { keepMs: 60_000, staleMs: 60_000 }
    const claims = await Promise.all([a.idempotency.claim('t1', 'k', keep), b.idempotency.claim('t1', 'k', keep)])
    expect(claims.map((c) => c.state).sort()).toEqual(['claimed', 'pending'])
    expect(await a.idempotency.claim('t2', 'k', keep)).toEqual({ state: 'claimed' }) // per tenant
    const answer = { status: 202, body: '{"id":"x"}', location: '/v1/media/x' }
    await a.idempotency.answer('t1', 'k', 'sha-1', answer)
    expect(await b.idempotency.claim('t1', 'k', keep)).toEqual({ state: 'answered', fingerprint: 'sha-1', answer })
    await b.idempotency.release('t1', 'k') // an answered key is not released
    expect((await b.idempotency.claim('t1', 'k', keep)).state).toBe('answered')
    // Past its day, or left pending past the stale time, a key is free again.
    await tick()
    expect(await a.idempotency.claim('t1', 'k', { keepMs: 0, staleMs: 60_000 })).toEqual({ state: 'claimed' })
    await tick()
    expect(await b.idempotency.claim('t1', 'k', { keepMs: 60_000, staleMs: 0 })).toEqual({ state: 'claimed' })
    await tick()
    expect(await a.idempotency.sweep(0)).toBe(2)
    await close()
  })

  test('stalled jobs: two instances sweeping at once re-drive each job once, then fail it once', async () => {
    const [a, b, close, database] = await twoStores()
    const jobs = Array.from({ length: 12 }, () => newMedia())
    for (const media of jobs) {
      await a.media.create(media)
      await a.media.applyUpdate(update(media.jobId, 10))
    }
    await a.outbox.claimUnpublished(0, 60_000).then((sent) => a.outbox.markPublished(sent.map((m) => m.messageId)))
    const silentMs = 60_000
    expect(await a.media.countSilent(silentMs)).toBe(0)
    /** Two minutes pass with no word from any processor. */
    const silence = () => backend.exec(database, 'UPDATE jobs SET seen_at = seen_at - 120000')
    await silence()
    expect(await b.media.countSilent(silentMs)).toBe(jobs.length)

    const sweep = async () =>
      (
        await Promise.all([
          a.media.sweepStalled(silentMs, 1, ['images']),
          b.media.sweepStalled(silentMs, 1, ['images']),
        ])
      ).flat()
    const first = await sweep()
    expect(first.map((s) => s.jobId).sort()).toEqual(jobs.map((m) => m.jobId).sort())
    expect(first.every((s) => s.action === 'redriven')).toBe(true)
    // Each re-drive wrote one fresh copy of the request for the relay.
    const copies = await a.outbox.claimUnpublished(0, 60_000)
    expect(copies.map((m) => m.jobId).sort()).toEqual(jobs.map((m) => m.jobId).sort())

    expect(await sweep()).toEqual([]) // re-driven just now: a full period before they count as silent again
    await silence()
    const second = await sweep()
    expect(second.map((s) => s.jobId).sort()).toEqual(jobs.map((m) => m.jobId).sort())
    expect(second.every((s) => s.action === 'failed')).toBe(true)
    await silence()
    expect(await sweep()).toEqual([])
    for (const media of jobs) {
      expect(await a.media.get(media.id)).toMatchObject({
        status: 'failed',
        error: { code: 'stalled', class: 'crash' },
      })
      expect((await a.media.history(media.jobId)).map((h) => h.reason)).toEqual([
        'created',
        'update',
        'stall_redrive',
        'stalled',
      ])
    }
    // A type with no live processor and no job heard from lately is left alone: its jobs wait in their queue.
    const waiting = newMedia({ type: 'videos', kind: 'video' })
    await a.media.create(waiting)
    await a.media.applyUpdate(update(waiting.jobId, 5))
    await silence()
    expect(await a.media.sweepStalled(silentMs, 1, ['images'])).toEqual([])
    expect(await a.media.sweepStalled(silentMs, 1, ['videos'])).toEqual([
      { jobId: waiting.jobId, mediaId: waiting.id, action: 'redriven' },
    ])
    await close()
  })

  test('cancel: once, and never over a final state', async () => {
    const [a, b, close] = await twoStores()
    const media = newMedia()
    await a.media.create(media)
    const outcomes = await Promise.all([a.media.cancel(media.id), b.media.cancel(media.id)])
    expect(outcomes.filter((o) => o?.outcome === 'cancelled')).toHaveLength(1)
    expect(outcomes.filter((o) => o?.outcome === 'final')).toEqual([{ outcome: 'final', status: 'cancelled' }])
    expect((await a.media.applyResult(completed(media.jobId)))?.changed).toBe(false)
    expect(await a.media.cancel(crypto.randomUUID())).toBeUndefined()
    await close()
  })

  test('webhook events: written with the change for the endpoints that want them, each claimed by one instance, recorded', async () => {
    const [a, b, close] = await twoStores()
    const hook = (events: Webhook['events'], tenant = 'acme'): Webhook => ({
      id: crypto.randomUUID(),
      tenant,
      url: 'https://hooks.example/x',
      events,
      secrets: [{ secret: 'whsec_x', expiresAt: null }],
      createdAt: new Date().toISOString(),
      disabledAt: null,
      disabledReason: null,
    })
    const wants = hook(['media.completed', 'media.cancelled'])
    await a.webhooks.create(wants)
    await a.webhooks.create(hook(['media.failed'])) // not this event
    await a.webhooks.create(hook(['media.completed'], 'other')) // another tenant's
    const media = newMedia()
    await a.media.create(media)
    await a.media.applyUpdate(update(media.jobId, 10))
    expect(await a.webhooks.claimDue(10, 60_000)).toEqual([]) // no final state yet
    await b.media.applyResult(completed(media.jobId))
    await b.media.applyResult(completed(media.jobId)) // applied once: one event
    const claims = await Promise.all([a.webhooks.claimDue(10, 60_000), b.webhooks.claimDue(10, 60_000)])
    const due = claims.flat()
    expect(due).toHaveLength(1)
    expect(due[0]).toMatchObject({ event: 'media.completed', body: null, attempts: 0, webhook: { id: wants.id } })
    // The media as the event saw it: completed, with its outputs and metadata.
    expect(due[0]!.media).toMatchObject({
      id: media.id,
      status: 'completed',
      metadata: { width: 640 },
      outputs: [{ name: 'thumb' }],
    })
    const firstAt = Date.now()
    await a.webhooks.recordAttempt(
      due[0]!.id,
      '{"body":1}',
      { kind: 'retry', nextAt: Date.now() - 1, status: 500, error: 'the endpoint answered 500' },
      { at: firstAt, durationMs: 12.4 }
    )
    const [again] = await b.webhooks.claimDue(10, 60_000)
    expect(again).toMatchObject({ id: due[0]!.id, body: '{"body":1}', attempts: 1 })
    await b.webhooks.recordAttempt(
      again!.id,
      again!.body!,
      { kind: 'failed', status: 410, error: 'gone', disable: 'answered 410 Gone' },
      { at: firstAt + 1000, durationMs: 3 }
    )
    expect((await a.webhooks.get(wants.id))?.disabledReason).toBe('answered 410 Gone')
    expect(await a.webhooks.deliveries(wants.id, 10)).toEqual([
      expect.objectContaining({
        status: 'failed',
        attempts: 2,
        lastStatus: 410,
        // Every attempt, from either instance, in order.
        history: [
          {
            number: 1,
            at: new Date(firstAt).toISOString(),
            durationMs: 12,
            status: 500,
            error: 'the endpoint answered 500',
            outcome: 'retry',
          },
          {
            number: 2,
            at: new Date(firstAt + 1000).toISOString(),
            durationMs: 3,
            status: 410,
            error: 'gone',
            outcome: 'failed',
          },
        ],
      }),
    ])
    // Disabled: a later event for it is not written.
    const second = newMedia()
    await a.media.create(second)
    await a.media.cancel(second.id)
    expect(await a.webhooks.claimDue(10, 60_000)).toEqual([])
    await close()
  })

  test('dead letters: kept once, with their tenant; a re-drive queues the job again', async () => {
    const [store, , close] = await twoStores()
    const media = newMedia()
    await store.media.create(media)
    const letter = {
      id: crypto.randomUUID(),
      type: 'images' as const,
      queue: queueNames(system, 'images').request,
      reason: 'delivery_limit',
      deliveries: 4,
      jobId: media.jobId,
      problem: null,
      messageId: media.request.messageId,
      headers: { 'x-death': [{ count: 4 }] },
      body: media.request.body,
      deadAt: new Date().toISOString(),
    }
    const failure = { code: 'gave_up', class: 'crash' as const, message: 'the broker gave up' }
    expect((await store.deadLetters.record(letter, failure))?.status).toBe('failed')
    expect(await store.deadLetters.record({ ...letter, id: crypto.randomUUID() }, failure)).toMatchObject({
      changed: false,
    })
    expect(await store.deadLetters.count()).toBe(1)
    const [listed] = await store.deadLetters.list(10, 'acme')
    expect(listed).toMatchObject({ id: letter.id, tenant: 'acme', jobId: media.jobId, deliveries: 4 })
    expect(await store.deadLetters.list(10, 'someone-else')).toEqual([])
    expect((await store.deadLetters.get(letter.id))?.headers).toEqual({ 'x-death': [{ count: 4 }] })

    await store.outbox
      .claimUnpublished(0, 60_000)
      .then((sent) => store.outbox.markPublished(sent.map((m) => m.messageId)))
    const messageId = crypto.randomUUID()
    expect(await store.deadLetters.redrive(letter.id, messageId)).toEqual({ mediaId: media.id })
    expect(await store.media.get(media.id)).toMatchObject({ status: 'queued', error: null })
    expect((await store.outbox.claimUnpublished(0, 60_000)).map((m) => m.messageId)).toEqual([messageId])
    expect(await store.deadLetters.get(letter.id)).toBeUndefined()
    expect(await store.deadLetters.remove(letter.id)).toBe(false)
    await close()
  })

  test('keys: stored by hash once, listed, revoked once', async () => {
    const [a, b, close] = await twoStores()
    const key = {
      id: crypto.randomUUID(),
      tenant: 'acme',
      name: 'ci',
      prefix: 'mk_abcde',
      priority: 'bulk' as const,
      createdAt: new Date().toISOString(),
      revokedAt: null,
    }
    expect(await a.keys.create(key, 'hash-1')).toBe(true)
    expect(await b.keys.create({ ...key, id: crypto.randomUUID() }, 'hash-1')).toBe(false)
    expect((await b.keys.find('hash-1'))?.record).toEqual(key)
    expect(await a.keys.countActive()).toBe(1)
    expect((await a.keys.list('acme')).map((k) => k.id)).toEqual([key.id])
    expect(await a.keys.list('other')).toEqual([])
    const revoked = (await a.keys.revoke(key.id))!
    expect(revoked.revokedAt).not.toBeNull()
    expect((await b.keys.revoke(key.id))?.revokedAt).toBe(revoked.revokedAt)
    expect(await a.keys.countActive()).toBe(0)
    expect(await a.keys.revoke(crypto.randomUUID())).toBeUndefined()
    await close()
  })
})

test('a PostgreSQL database newer than the API is refused, naming both versions', async () => {
  const url = await newPostgresSchema()
  const store = await openStore({ kind: 'postgres', url })
  await store.close()
  await withPostgres(url, (sql) => sql`UPDATE schema_version SET version = 99`)
  await expect(openStore({ kind: 'postgres', url })).rejects.toThrow(
    new RegExp(`schema 99, newer than this API \\(${SCHEMA_VERSION}\\)`)
  )
})
