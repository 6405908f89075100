/**
 * `GET /v1/media`: a tenant's media, newest first, paged by cursor, filtered by status and kind; bad input answered
 * with what is wrong; nothing of another tenant. No broker, no S3: the unit app over a real SQLite store.
 */
import { afterAll, expect, test } from 'bun:test'
import { queueNames } from '@app/shared'
import type { MediaList } from '../services/api/http/bodies.ts'
import { issueKey } from '../services/api/auth/keys.ts'
import type { NewMedia } from '../services/api/store/media.ts'
import { unitApp } from './helpers/unit-app.ts'

const { app, store, request } = await unitApp()
afterAll(() => store.close())

function newMedia(tenant: string, kind: 'image' | 'video'): NewMedia {
  const id = crypto.randomUUID()
  const jobId = crypto.randomUUID()
  const type = kind === 'image' ? 'images' : 'videos'
  return {
    id,
    tenant,
    filename: `${kind}.bin`,
    kind,
    format: kind === 'image' ? 'jpeg' : 'mp4',
    size: 10,
    bucket: 'unit',
    sourceKey: `unit/originals/${id}`,
    jobId,
    type,
    request: {
      messageId: crypto.randomUUID(),
      jobId,
      queue: queueNames('unit', type).request,
      type: 'job.request',
      body: new Uint8Array([1]),
    },
  }
}
const mine: NewMedia[] = []
for (let i = 0; i < 5; i++) {
  const media = newMedia('unit', i < 2 ? 'video' : 'image')
  await store.media.create(media)
  mine.push(media)
}
await store.media.create(newMedia('someone-else', 'image'))
await store.media.cancel(mine[4]!.id)

const list = async (query = '', headers?: Record<string, string>) => {
  const res = await request(`/v1/media${query}`, { headers })
  return { status: res.status, body: (await res.json()) as MediaList & { error?: { code: string; message: string } } }
}

test('pages follow `next` to the end, newest first, each media once, none of another tenant', async () => {
  const seen: string[] = []
  let next: string | null = null
  let pages = 0
  do {
    const { status, body } = await list(`?limit=2${next ? `&cursor=${next}` : ''}`)
    expect(status).toBe(200)
    expect(body.media.length).toBeLessThanOrEqual(2)
    seen.push(...body.media.map((m) => m.id))
    next = body.next
    pages++
  } while (next)
  expect(pages).toBe(3)
  expect(seen.sort()).toEqual(mine.map((m) => m.id).sort())
  const first = (await list()).body
  expect(first.next).toBeNull()
  // Newest first; media made in the same millisecond by id, descending.
  const order = first.media.map((m) => `${m.createdAt} ${m.id}`)
  expect(order).toEqual([...order].sort().reverse())
  expect(first.media.find((m) => m.id === mine[4]!.id)?.status).toBe('cancelled')
})

test('filters by kind and by status (comma-separated)', async () => {
  const videos = (await list('?kind=video')).body.media
  expect(videos.map((m) => m.id).sort()).toEqual(
    mine
      .slice(0, 2)
      .map((m) => m.id)
      .sort()
  )
  const open = (await list('?status=queued,processing&kind=image')).body.media
  expect(open.map((m) => m.id).sort()).toEqual(
    mine
      .slice(2, 4)
      .map((m) => m.id)
      .sort()
  )
  expect((await list('?status=cancelled')).body.media.map((m) => m.id)).toEqual([mine[4]!.id])
})

test("another tenant's key lists only its own", async () => {
  const { key } = await issueKey(store, 'someone-else')
  const { body } = await list('', { authorization: `Bearer ${key}` })
  expect(body.media).toHaveLength(1)
  expect(mine.map((m) => m.id)).not.toContain(body.media[0]!.id)
})

test('bad input answers 400 naming the parameter; no key answers 401', async () => {
  for (const [query, words] of [
    ['?status=done', 'query parameter status must be a comma-separated list of queued, processing'],
    ['?kind=sound', 'query parameter kind must be a comma-separated list of image, video, audio'],
    ['?limit=0', 'query parameter limit must be a whole number from 1 to 100'],
    ['?limit=101', 'query parameter limit must be a whole number from 1 to 100'],
    ['?cursor=bm90LWEtY3Vyc29y', 'query parameter cursor must be the `next` of the previous page'],
  ] as const) {
    const { status, body } = await list(query)
    expect(status).toBe(400)
    expect(body.error?.code).toBe('bad_request')
    expect(body.error?.message).toContain(words)
  }
  expect((await app.request('/v1/media')).status).toBe(401)
})
