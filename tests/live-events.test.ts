/**
 * The tenant's live events against the real API, RabbitMQ, S3 and image processor: one SSE stream (`/v1/events`)
 * and one WebSocket (`/v1/ws`) carry every change of the tenant's media, numbered, resumable, filtered, and nothing
 * of another tenant's; every hostile input on the socket is answered without harming it. (Two instances, one killed
 * under its clients: tests/live-events-instances.test.ts; on Deno: tests/deno.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { issueKey } from '../services/api/auth/keys.ts'
import { photo } from './bench/work.ts'
import { apiKey } from './helpers/env.ts'
import { openSocket, readEvents, until, type MediaEventBody } from './helpers/event-clients.ts'
import { useInfra } from './helpers/infra.ts'
import { startStack, type Stack } from './helpers/stack.ts'

await useInfra()

let stack: Stack
let image: Uint8Array<ArrayBuffer>
let other: { authorization: string }
beforeAll(async () => {
  stack = await startStack({ env: { IMAGE_CONCURRENCY: '2', MAX_STREAMS_PER_KEY: '6' } })
  image = await photo(320, 240)
  other = { authorization: `Bearer ${(await issueKey(stack.api.store, 'other-tenant')).key}` }
})
afterAll(async () => {
  await stack?.stop()
})

const wsUrl = (query = '') => `${stack.url.replace('http', 'ws')}/v1/ws${query}`
const upload = async (headers: Record<string, string> = {}) => {
  const res = await stack.upload(image, headers)
  expect(res.status).toBe(202)
  return ((await res.json()) as { id: string }).id
}
/** `n` uploads, four at a time (a key may have 8 in flight). */
async function uploads(n: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i += 4)
    ids.push(...(await Promise.all(Array.from({ length: Math.min(4, n - i) }, () => upload()))))
  return ids
}
const isFinal = (e: MediaEventBody) => ['completed', 'failed', 'cancelled'].includes(e.type)
/** Each media's events in the order they came: created, then on to its final state. */
function expectWhole(events: MediaEventBody[], ids: string[]) {
  const ofMedia = new Map<string, MediaEventBody[]>()
  for (const e of events) ofMedia.set(e.mediaId, [...(ofMedia.get(e.mediaId) ?? []), e])
  expect(new Set(ofMedia.keys())).toEqual(new Set(ids))
  for (const id of ids) {
    const mine = ofMedia.get(id)!
    expect(mine[0]!.type).toBe('created')
    expect(isFinal(mine.at(-1)!)).toBe(true)
    expect(mine.filter(isFinal).length).toBe(1)
  }
  const numbers = events.map((e) => e.id)
  expect(numbers).toEqual([...numbers].sort((a, b) => a - b))
  expect(new Set(numbers).size).toBe(numbers.length)
}

describe('GET /v1/events (SSE)', () => {
  test("one stream carries every change of the tenant's media, numbered in order, and none of another tenant's", async () => {
    const stream = readEvents(`${stack.url}/v1/events`, apiKey)
    await until(() => stream.from !== null, 'the stream to be ready')
    const ids = await uploads(8)
    await upload(other) // another tenant's upload never shows
    await until(() => stream.events.filter(isFinal).length === 8, 'eight final events')
    await stream.stop()
    expectWhole(stream.events, ids)
    expect(stream.events[0]!.id).toBeGreaterThan(stream.from!)
    // The media in an event is the media as GET answers it.
    const completed = stream.events.find((e) => e.mediaId === ids[0] && e.type === 'completed')!
    expect(completed.media).toMatchObject({ status: 'completed', progress: 100 })
  })

  test('Last-Event-ID resumes exactly after that event: the rest once each, in order; filters narrow it', async () => {
    const first = readEvents(`${stack.url}/v1/events`, apiKey)
    await until(() => first.from !== null, 'the stream to be ready')
    const ids = await uploads(6)
    await until(() => first.events.length >= 4, 'a few events')
    await first.stop() // cut mid-batch
    const seen = first.events
    const lastId = seen.at(-1)!.id
    const rest = readEvents(`${stack.url}/v1/events`, { ...apiKey, 'last-event-id': String(lastId) })
    const finals = () => [...seen, ...rest.events].filter(isFinal).length
    await until(() => finals() === 6, 'every final event, across both streams')
    await rest.stop()
    expect(rest.events[0]!.id).toBe(lastId + 1)
    // Its `ready` says it starts after the id given, not after what it replays: a break right after it loses nothing.
    expect(rest.from).toBe(lastId)
    expectWhole([...seen, ...rest.events], ids)

    // The same from ?after=, filtered to one media and to completed ones.
    const one = readEvents(`${stack.url}/v1/events?after=${first.from}&media=${ids[2]}&status=completed`, apiKey)
    await until(() => one.events.length === 1, "that media's completed event")
    await Bun.sleep(50) // anything else that would (wrongly) come after it
    await one.stop()
    expect(one.events.map((e) => [e.mediaId, e.type])).toEqual([[ids[2]!, 'completed']])
  })

  test('an id past the log window answers 409 naming the latest; bad ids and filters 400; a stream per key is limited', async () => {
    const { latest } = await stack.api.store.events.bounds('test')
    // Everything kept is older than "now + 1 s" ago: pruned, so id 1 is past the window.
    await stack.api.store.events.prune(-1_000)
    const expired = await stack.fetch('/v1/events?after=1')
    expect(expired.status).toBe(409)
    expect(((await expired.json()) as { error: { code: string } }).error.code).toBe('events_expired')
    expect(expired.headers.get('x-latest-event-id')).toBe(String(latest))
    // Resuming from the latest still works: nothing after it was lost.
    const fromLatest = readEvents(`${stack.url}/v1/events?after=${latest}`, apiKey)
    await until(() => fromLatest.from !== null, 'the stream from the latest')
    await fromLatest.stop()
    for (const bad of ['?after=-1', '?after=abc', '?kind=sculpture', '?status=done', '?media=not-an-id'])
      expect((await stack.fetch(`/v1/events${bad}`)).status).toBe(400)
    expect((await stack.fetch(`/v1/events?after=${latest + 1000}`)).status).toBe(400)
    expect((await stack.fetch('/v1/events', { headers: { 'last-event-id': 'x' } })).status).toBe(400)
    expect((await fetch(`${stack.url}/v1/events`)).status).toBe(401)

    // MAX_STREAMS_PER_KEY is 6: streams and sockets together; a closed one frees its slot.
    const streams = Array.from({ length: 6 }, () => readEvents(`${stack.url}/v1/events`, apiKey))
    await until(() => streams.every((s) => s.from !== null), 'six streams')
    const seventh = await stack.fetch('/v1/events')
    expect(seventh.status).toBe(429)
    expect(((await seventh.json()) as { error: { code: string } }).error.code).toBe('too_many_streams')
    const socket = openSocket(wsUrl(), { headers: apiKey })
    await until(() => socket.closed !== null, 'the seventh (a socket) to be closed')
    expect(socket.closed!.code).toBe(4429)
    // A closed stream gives its slot back.
    await streams[0]!.stop()
    const again = readEvents(`${stack.url}/v1/events`, apiKey)
    await until(() => again.from !== null || again.ended, 'a seventh stream, now that one closed')
    expect(again.status).toBe(200)
    for (const s of [again, ...streams.slice(1)]) await s.stop()
  })
})

describe('GET /v1/ws', () => {
  test('a socket subscribed to 100 media gets their states first, then every change of them, and nothing else', async () => {
    await stack.stopImages()
    const ids = await uploads(100)
    const others = await uploads(5) // the same tenant, not subscribed
    const foreign = await upload(other)
    const { token } = (await (await stack.fetch('/v1/events/tokens', { method: 'POST' })).json()) as { token: string }
    const socket = openSocket(wsUrl(`?token=${token}`))
    await socket.opened
    socket.send({ type: 'subscribe', media: [...ids, foreign] })
    await until(() => socket.of('subscribed').length === 1, 'subscribed')
    // Another tenant's media is answered as unknown, and never followed.
    expect(socket.of('error')).toEqual([
      { type: 'error', code: 'not_found', message: `no media ${foreign} of this tenant`, media: [foreign] },
    ])
    expect((socket.of('subscribed')[0]!.media as string[]).length).toBe(100)
    await until(() => socket.events().length === 100, 'the current state of each')
    expect(socket.events().every((e) => e.type === 'state' && e.media?.status === 'queued')).toBe(true)

    await stack.startImages()
    const finals = () => socket.events().filter(isFinal)
    await until(() => finals().length === 100, 'every final event', 60_000)
    const changes = socket.events().slice(100)
    expect(new Set(changes.map((e) => e.mediaId))).toEqual(new Set(ids))
    for (const id of ids)
      expect(
        changes
          .filter((e) => e.mediaId === id)
          .map((e) => e.type)
          .at(-1)
      ).toBe('completed')
    const numbers = changes.map((e) => e.id)
    expect(numbers).toEqual([...numbers].sort((a, b) => a - b))
    expect(changes.some((e) => others.includes(e.mediaId))).toBe(false)
    socket.send({ type: 'ping', id: 'p1' })
    await until(() => socket.of('pong').length === 1, 'pong')
    expect(socket.of('pong')[0]).toEqual({ type: 'pong', id: 'p1' })
    socket.close()
  }, 90_000)

  test('all: true follows the whole tenant; resume replays from an id through the subscription', async () => {
    const socket = openSocket(wsUrl(), { headers: apiKey })
    await socket.opened
    socket.send({ type: 'subscribe', all: true })
    await until(() => socket.of('subscribed').length === 1, 'subscribed')
    const { latest } = await stack.api.store.events.bounds('test')
    const id = await upload()
    await until(() => socket.events().some((e) => e.mediaId === id && e.type === 'completed'), 'it to complete')
    const live = socket.events().filter((e) => e.mediaId === id)
    socket.send({ type: 'resume', after: latest })
    await until(() => socket.events().filter((e) => e.mediaId === id).length === 2 * live.length, 'the replay')
    expect(
      socket
        .events()
        .filter((e) => e.mediaId === id)
        .slice(live.length)
    ).toEqual(live)
    socket.close()
  })

  test('hostile input: no auth in time, a bad token, garbage, a huge message, another tenant; the socket survives what it can', async () => {
    // A token that is not one: refused before the upgrade; a changed one too.
    expect((await fetch(`${stack.url}/v1/ws?token=nonsense`, { headers: { upgrade: 'websocket' } })).status).toBe(401)
    const { token } = (await (await stack.fetch('/v1/events/tokens', { method: 'POST' })).json()) as { token: string }
    const changed = `${token.slice(0, -2)}${token.endsWith('A') ? 'B' : 'A'}A`
    expect((await fetch(`${stack.url}/v1/ws?token=${changed}`, { headers: { upgrade: 'websocket' } })).status).toBe(401)
    expect((await fetch(`${stack.url}/v1/ws`, { headers: apiKey })).status).toBe(426)

    // Unauthenticated: only auth and ping are answered; silent past 5 s, closed with 4401.
    const silent = openSocket(wsUrl())
    await silent.opened
    silent.send({ type: 'subscribe', all: true })
    await until(() => silent.of('error').length === 1, 'an error')
    expect(silent.of('error')[0]!.code).toBe('unauthorized')
    await until(() => silent.closed !== null, 'the close', 8_000)
    expect(silent.closed!.code).toBe(4401)

    // Authenticated by its first message; garbage gets errors and the socket stays.
    const socket = openSocket(wsUrl())
    await socket.opened
    socket.send({ type: 'auth', token })
    for (const garbage of [
      'not json',
      '[]',
      '{"type":"launch"}',
      '{"type":"subscribe","media":["x"]}',
      '{"type":"resume","after":-1}',
    ])
      socket.send(garbage)
    await until(() => socket.of('error').length === 5, 'five errors')
    expect(socket.of('error').every((e) => e.code === 'bad_request')).toBe(true)
    socket.send({ type: 'ping' })
    await until(() => socket.of('pong').length === 1, 'pong')
    // A message over the limit closes it (1009).
    socket.send(JSON.stringify({ type: 'ping', id: 'x'.repeat(20_000) }))
    await until(() => socket.closed !== null, 'the close')
    expect(socket.closed!.code).toBe(1009)

    // Another tenant's key sees nothing of this tenant's media, and is told so.
    const mine = await upload()
    const theirs = openSocket(wsUrl(), { headers: other })
    await theirs.opened
    theirs.send({ type: 'subscribe', media: [mine] })
    await until(() => theirs.of('subscribed').length === 1, 'subscribed')
    expect(theirs.of('error')[0]).toMatchObject({ code: 'not_found', media: [mine] })
    expect(theirs.of('subscribed')[0]).toMatchObject({ media: [] })
    theirs.send({ type: 'subscribe', all: true })
    await stack.fetch(`/v1/media/${mine}`, { method: 'DELETE' })
    await Bun.sleep(300) // the deletion's event, had it leaked, would be here by now
    expect(theirs.events()).toEqual([])
    theirs.close()
  })
})
