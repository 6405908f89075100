/**
 * RATE_LIMIT_PER_MINUTE and MAX_CONCURRENT_UPLOADS for the whole deployment: two API instances on one PostgreSQL
 * database (two apps, each with a store of its own on the same schema) allow a key the configured numbers between
 * them, not twice them. The counters are the database's (store/limits.ts); no broker or S3 is needed to reach them.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { openStore, type Store } from '../services/api/store/open.ts'
import { newPostgresSchema, withPostgres } from './helpers/postgres.ts'
import { unitApp } from './helpers/unit-app.ts'

const RATE = 10
const UPLOADS = 2
const limits = { requestsPerMinute: RATE, concurrentUploads: UPLOADS, pace: { windowMs: 30_000, minBytesPerSecond: 1 } }

let url: string
let stores: Store[] = []
let apps: Awaited<ReturnType<typeof unitApp>>[] = []
beforeAll(async () => {
  url = await newPostgresSchema()
  stores = [await openStore({ kind: 'postgres', url }), await openStore({ kind: 'postgres', url })]
  apps = [await unitApp({ limits }, stores[0]), await unitApp({ limits }, stores[1])]
})
afterAll(async () => {
  for (const store of stores) await store.close()
})

test('two instances allow a key RATE_LIMIT_PER_MINUTE requests a minute between them, not twice that', async () => {
  // Each app's own key (the same tenant): the budget is per key, counted wherever its requests land.
  const [a, b] = apps
  // The windows are fixed minutes: start early in one, so that the run (about 50 ms) stays within it.
  if (Date.now() % 60_000 > 50_000) await Bun.sleep(60_000 - (Date.now() % 60_000) + 10)
  const statuses: number[] = []
  for (let i = 0; i < 3 * RATE; i++) {
    const app = i % 2 ? b! : a!
    statuses.push((await app.request('/v1/media?limit=1', { headers: { authorization: `Bearer ${a!.key}` } })).status)
  }
  // Counted per instance, each would have allowed RATE (2 × RATE in all).
  expect(statuses.filter((s) => s === 200).length).toBe(RATE)
  expect(statuses.filter((s) => s !== 200 && s !== 429)).toEqual([])
  const refused = await b!.request('/v1/media', { headers: { authorization: `Bearer ${a!.key}` } })
  expect(refused.status).toBe(429)
  expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
  expect(((await refused.json()) as { error: { message: string } }).error.message).toContain(`${RATE} requests`)
  // Another key has a budget of its own.
  expect((await b!.request('/v1/media?limit=1')).status).toBe(200)
})

test('two instances allow a key MAX_CONCURRENT_UPLOADS uploads in flight between them; a slot comes back when one ends', async () => {
  const [a, b] = apps
  const key = b!.key // a key with its whole rate budget
  const held: { finish(): void; response: Promise<Response> }[] = []
  /** An upload whose body stays open until `finish`. */
  const open = (app: (typeof apps)[number]) => {
    let finish = () => {}
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array([0xff, 0xd8, 0xff]))
        finish = () => controller.close()
      },
    })
    const response = Promise.resolve(
      app.request('/v1/media', {
        method: 'POST',
        body,
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
        duplex: 'half',
      } as RequestInit)
    )
    return { finish: () => finish(), response }
  }
  held.push(open(a!), open(b!))
  // Both are in flight: their slots are taken, on one instance each.
  await waitFor(async () => (await countSlots()) === UPLOADS)
  for (const app of [a!, b!]) {
    const third = await app.request('/v1/media', {
      method: 'POST',
      body: new Uint8Array([1]),
      headers: { authorization: `Bearer ${key}` },
    })
    expect(third.status).toBe(429)
    expect(((await third.json()) as { error: { code: string } }).error.code).toBe('too_many_uploads')
  }
  // One ends (refused: three bytes are no media): its slot is given back, and the next upload is let through.
  held[0]!.finish()
  expect((await held[0]!.response).status).not.toBe(429)
  await waitFor(async () => (await countSlots()) === UPLOADS - 1)
  const next = await b!.request('/v1/media', {
    method: 'POST',
    body: new Uint8Array([1]),
    headers: { authorization: `Bearer ${key}` },
  })
  expect(next.status).not.toBe(429)
  held[1]!.finish()
  await held[1]!.response
  await waitFor(async () => (await countSlots()) === 0)
})

/** Upload slots held now, as the database has them. */
function countSlots(): Promise<number> {
  return withPostgres(url, async (sql) => {
    const [row] = await sql`SELECT count(*)::int AS n FROM upload_slots WHERE until > ${Date.now()}`
    return row!.n as number
  })
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`not true within ${timeoutMs} ms`)
    await Bun.sleep(20)
  }
}
