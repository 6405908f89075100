/**
 * The tenant's event stream across API instances, on PostgreSQL: a change applied by one instance reaches the
 * streams of another over the fanout, in order; the instance a client follows is killed mid-batch, the client
 * resumes on the other with its last id, and ends with every event exactly once, in order.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import type { Server } from '../services/api/adapter/serve.ts'
import { readConfig as readApiConfig } from '../services/api/config.ts'
import { startApi } from '../services/api/start.ts'
import { readConfig as readImagesConfig, start as startImages } from '../services/images/main.ts'
import { photo } from './bench/work.ts'
import { apiKey, testEnv } from './helpers/env.ts'
import { readEvents, until, type MediaEventBody } from './helpers/event-clients.ts'
import { startInfra, useInfra } from './helpers/infra.ts'
import { newPostgresSchema } from './helpers/postgres.ts'
import { serveApi } from './helpers/stack.ts'

await useInfra()

type Instance = { api: Awaited<ReturnType<typeof startApi>>; server: Server; url: string }
let instances: Instance[] = []
let images: Awaited<ReturnType<typeof startImages>>

beforeAll(async () => {
  await startInfra()
  const env = testEnv({ DATABASE_URL: await newPostgresSchema(), IMAGE_CONCURRENCY: '2' })
  const config = readApiConfig(env)
  for (let i = 0; i < 2; i++) {
    const api = await startApi(config)
    const server = serveApi(api, config)
    instances.push({ api, server, url: `http://127.0.0.1:${server.port}` })
  }
  images = await startImages(readImagesConfig(env))
}, 60_000)
afterAll(async () => {
  await images?.stop()
  for (const { api, server } of instances) {
    await server.stop(true)
    await api.stop()
  }
  instances = []
})

const isFinal = (e: MediaEventBody) => ['completed', 'failed', 'cancelled'].includes(e.type)

test('killed under its client mid-batch, one instance hands the stream to the other: every event once, in order', async () => {
  const [a, b] = instances as [Instance, Instance]
  const image = await photo(320, 240)
  const upload = async (on: Instance) => {
    const res = await fetch(`${on.url}/v1/media`, { method: 'POST', body: image, headers: apiKey })
    expect(res.status).toBe(202)
    return ((await res.json()) as { id: string }).id
  }
  const onA = readEvents(`${a.url}/v1/events`, apiKey)
  await until(() => onA.from !== null, 'the stream on A')
  // Uploaded through B: A's client hears of them over the fanout.
  const ids: string[] = []
  for (let i = 0; i < 5; i++) ids.push(await upload(b))
  await until(() => onA.events.length >= 5, 'some events on A')

  // A dies with its client connected, mid-batch.
  await a.server.stop(true)
  await a.api.stop()
  instances = [b]
  await until(() => onA.ended, 'the stream on A to end')
  for (let i = 0; i < 5; i++) ids.push(await upload(b))
  const lastId = onA.events.at(-1)!.id
  const onB = readEvents(`${b.url}/v1/events`, { ...apiKey, 'last-event-id': String(lastId) })
  const all = () => [...onA.events, ...onB.events]
  await until(() => all().filter(isFinal).length === 10, 'every media final, across both', 60_000)
  await onB.stop()

  const numbers = all().map((e) => e.id)
  expect(numbers).toEqual([...numbers].sort((x, y) => x - y))
  expect(new Set(numbers).size).toBe(numbers.length)
  // Nothing missing: the numbers run without a gap from the first to the last (this tenant made nothing else).
  expect(numbers.at(-1)! - numbers[0]! + 1).toBe(numbers.length)
  for (const id of ids) {
    const mine = all().filter((e) => e.mediaId === id)
    expect(mine[0]!.type).toBe('created')
    expect(mine.filter(isFinal).map((e) => e.type)).toEqual(['completed'])
  }
}, 90_000)
