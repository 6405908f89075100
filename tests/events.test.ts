/** Live progress over Server-Sent Events, on one API instance and across two sharing a database and broker. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { silentLogger } from '@app/shared/ops'
import { connectBroker, type Broker, type Handlers } from '../services/api/jobs/broker.ts'
import { createChanges } from '../services/api/jobs/changes.ts'
import { openSqliteStore } from '../services/api/store/open.ts'
import { readConfig as readImagesConfig, start as startImages } from '../services/images/main.ts'
import { spawnApi } from './helpers/api-process.ts'
import type { ServiceProcess } from './helpers/service-process.ts'
import { RABBITMQ_URL, apiKey, testEnv } from './helpers/env.ts'
import { quadrants } from './helpers/image-fixtures.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'
import { makeClip } from './helpers/video-fixtures.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

const work = mkdtempSync(join(tmpdir(), 'media-test-events-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

/** Reads an SSE stream to its end (or fails after `timeoutMs`), returning the `state` events' bodies in order. */
async function readStates(url: string, timeoutMs: number): Promise<MediaBody[]> {
  const res = await fetch(url, { headers: apiKey, signal: AbortSignal.timeout(timeoutMs) })
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toContain('text/event-stream')
  const text = await res.text() // resolves when the server closes the stream, after the final state
  return text
    .split('\n\n')
    .filter((block) => block.includes('event: state'))
    .map(
      (block) =>
        JSON.parse(
          block
            .split('\n')
            .find((line) => line.startsWith('data: '))!
            .slice(6)
        ) as MediaBody
    )
}

describe('one instance', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ images: false, videos: true })
  })
  afterAll(async () => {
    await stack.stop()
  })

  test('an SSE client gets the current state, monotonic progress with stages, and the final event, then the end', async () => {
    // Two rungs of 20 s at 720p: seconds of transcoding on a fast machine, so several update intervals (500 ms)
    // fall inside it (a 12 s 360p clip was done in 1.3 s, between two updates).
    const clip = await makeClip(work, 'watch.mp4', '1280x720', 20)
    const { id } = (await (await stack.upload(readFileSync(clip))).json()) as { id: string }
    const states = await readStates(`${stack.url}/v1/media/${id}/events`, 60_000)
    expect(states.length).toBeGreaterThan(2)
    expect(['queued', 'processing']).toContain(states[0]!.status)
    const progress = states.map((s) => s.progress)
    expect(progress).toEqual([...progress].sort((a, b) => a - b))
    expect(states.some((s) => s.stage === 'processing' && s.progress > 10 && s.progress < 100)).toBe(true)
    const last = states.at(-1)!
    expect(last).toMatchObject({ status: 'completed', progress: 100 })
    expect(last.outputs.map((o) => o.name).sort()).toEqual(
      ['poster', '360p', '720p', 'hls', 'hls-360p', 'hls-360p-media', 'hls-720p', 'hls-720p-media']
        .concat(['storyboard', 'storyboard-sprite'])
        .sort()
    )
    // A stream opened on a finished media sends its final state and ends at once.
    expect(await readStates(`${stack.url}/v1/media/${id}/events`, 5_000)).toEqual([last])
  }, 90_000)
})

describe('two instances', () => {
  const env = testEnv({ IMAGE_CONCURRENCY: '1' })
  const children: ServiceProcess[] = []
  const ports = [0, 1].map(() => 20000 + Math.floor(Math.random() * 20000))
  let images: Awaited<ReturnType<typeof startImages>>

  beforeAll(async () => {
    for (const port of ports) {
      children.push(await spawnApi({ ...env, PORT: String(port) }))
    }
    images = await startImages(readImagesConfig(env))
  })
  afterAll(async () => {
    await images.stop()
    await Promise.all(children.map((c) => c.kill('SIGTERM')))
  })

  test('an upload to instance A is watched to the end on instance B', async () => {
    const [a, b] = ports.map((p) => `http://127.0.0.1:${p}`)
    const photo = await sharp(await quadrants(3000, 2000))
      .jpeg()
      .toBuffer()
    // Hold the processor's one slot with a first job, so the watched one is still queued when B subscribes.
    await fetch(`${a}/v1/media`, { method: 'POST', body: new Uint8Array(photo), headers: apiKey })
    const { id } = (await (
      await fetch(`${a}/v1/media`, { method: 'POST', body: new Uint8Array(photo), headers: apiKey })
    ).json()) as { id: string }
    const states = await readStates(`${b}/v1/media/${id}/events`, 30_000)
    expect(states.length).toBeGreaterThan(1)
    expect(states[0]!.status).not.toBe('completed')
    expect(states.at(-1)).toMatchObject({ status: 'completed', progress: 100 })
    expect(states.at(-1)!.outputs.map((o) => o.name)).toEqual(['thumb', 'preview'])

    // Each state's id is the number of the change in the tenant's log: a client resuming with the last one it got
    // is not sent it again (the media is final: the stream ends at once); with an earlier one, it gets the state.
    const text = async (lastId: string) =>
      (await fetch(`${a}/v1/media/${id}/events`, { headers: { ...apiKey, 'last-event-id': lastId } })).text()
    const ids = (stream: string) => [...stream.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]))
    const full = await text('0')
    const [latest] = ids(full)
    expect(full).toContain('"status":"completed"')
    expect(await text(String(latest))).toBe('')
    expect(ids(await text(String(latest! - 1)))).toEqual([latest!])
  })
})

describe('announcements', () => {
  const { SYSTEM: system } = testEnv()
  const heard: Record<'a' | 'b', string[]> = { a: [], b: [] }
  const brokers: Broker[] = []
  /** Handlers that only record the changes other instances announce. */
  const recording = (into: string[]): Handlers => ({
    onUpdate: async () => {},
    onResult: async () => {},
    onDeadLetter: async () => {},
    onMediaChanged: ({ mediaId, tenant, seq }) => void into.push(`${mediaId} ${tenant} ${seq}`),
  })
  beforeAll(async () => {
    for (const name of ['a', 'b'] as const) {
      const broker = await connectBroker({
        url: RABBITMQ_URL,
        system: system!,
        publishTimeoutMs: 5_000,
        instanceId: `instance-${name}`,
        log: silentLogger(),
      })
      brokers.push(broker)
      await broker.consume(recording(heard[name]))
    }
  })
  afterAll(async () => {
    await Promise.all(brokers.map((b) => b.close()))
  })
  const until = async (check: () => boolean, what: string) => {
    const deadline = Date.now() + 5_000
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`${what} did not happen within 5 s`)
      await Bun.sleep(10)
    }
  }

  test('a change the store commits reaches the watchers of its instance at once and the other instances over the fanout, never its sender', async () => {
    const [a, b] = brokers as [Broker, Broker]
    const store = openSqliteStore(':memory:')
    const first = crypto.randomUUID()
    const jobId = crypto.randomUUID()
    const request = {
      messageId: crypto.randomUUID(),
      jobId,
      queue: 'q',
      type: 'job.request',
      body: new Uint8Array([123, 125]),
    }
    await store.media.create({
      id: first,
      tenant: 't',
      filename: null,
      kind: 'image',
      format: 'png',
      size: 1,
      bucket: 'b',
      sourceKey: `k/${first}`,
      jobId,
      type: 'images',
      request,
    })
    const watched: string[] = []
    const changes = createChanges(store, (change) => a.broadcastChange(change))
    const unwatch = changes.watch(first, () => void watched.push(first))
    await store.media.cancel(first) // a change, committed: no one announces it but the store
    expect(watched).toEqual([first]) // dispatched here before the broker had a chance to carry it anywhere
    unwatch()
    changes.close()
    await store.close()
    // Its tenant and its number in the tenant's log go with it: 1 was the creation, 2 the cancel.
    await until(() => heard.b.includes(`${first} t 2`), 'instance b hearing the change')
    // The fanout put `first` on a's queue too, before `second`: had a not ignored its own, it would hear it first.
    const second = crypto.randomUUID()
    b.broadcastChange({ mediaId: second, tenant: 't', seq: 3 })
    await until(() => heard.a.includes(`${second} t 3`), 'instance a hearing the change')
    expect(heard).toEqual({ a: [`${second} t 3`], b: [`${first} t 2`] })
  })
})
