/** Live progress over Server-Sent Events, on one API instance and across two sharing a database and broker. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { readConfig as readImagesConfig, start as startImages } from '../services/images/main.ts'
import { testEnv } from './helpers/env.ts'
import { quadrants } from './helpers/image-fixtures.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'
import { makeClip } from './helpers/video-fixtures.ts'

const work = mkdtempSync(join(tmpdir(), 'media-test-events-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

/** Reads an SSE stream to its end (or fails after `timeoutMs`), returning the `state` events' bodies in order. */
async function readStates(url: string, timeoutMs: number): Promise<MediaBody[]> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toContain('text/event-stream')
  const text = await res.text() // resolves when the server closes the stream, after the final state
  return text
    .split('\n\n')
    .filter((block) => block.includes('event: state'))
    .map((block) => JSON.parse(block.split('\n').find((line) => line.startsWith('data: '))!.slice(6)) as MediaBody)
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
    const clip = await makeClip(work, 'watch.mp4', '640x360', 12)
    const { id } = (await (await stack.upload(readFileSync(clip))).json()) as { id: string }
    const states = await readStates(`${stack.url}/v1/media/${id}/events`, 60_000)
    expect(states.length).toBeGreaterThan(2)
    expect(['queued', 'processing']).toContain(states[0]!.status)
    const progress = states.map((s) => s.progress)
    expect(progress).toEqual([...progress].sort((a, b) => a - b))
    expect(states.some((s) => s.stage === 'processing' && s.progress > 10 && s.progress < 100)).toBe(true)
    const last = states.at(-1)!
    expect(last).toMatchObject({ status: 'completed', progress: 100 })
    expect(last.outputs.map((o) => o.name)).toEqual(['poster', '360p'])
    // A stream opened on a finished media sends its final state and ends at once.
    expect(await readStates(`${stack.url}/v1/media/${id}/events`, 5_000)).toEqual([last])
  }, 90_000)
})

describe('two instances', () => {
  const env = testEnv({ IMAGE_CONCURRENCY: '1' })
  const children: ReturnType<typeof Bun.spawn>[] = []
  const ports = [0, 1].map(() => 20000 + Math.floor(Math.random() * 20000))
  let images: Awaited<ReturnType<typeof startImages>>

  beforeAll(async () => {
    for (const port of ports) {
      const child = Bun.spawn(['bun', join(import.meta.dir, '../services/api/main.ts')], {
        env: { PATH: process.env.PATH!, ...env, PORT: String(port) },
        stdout: 'pipe',
        stderr: 'inherit',
      })
      children.push(child)
      const { value } = await (child.stdout as ReadableStream<Uint8Array>).getReader().read()
      expect(new TextDecoder().decode(value)).toContain('listening')
    }
    images = await startImages(readImagesConfig(env))
  })
  afterAll(async () => {
    await images.stop()
    for (const child of children) child.kill()
    await Promise.all(children.map((c) => c.exited))
  })

  test('an upload to instance A is watched to the end on instance B', async () => {
    const [a, b] = ports.map((p) => `http://127.0.0.1:${p}`)
    const photo = await sharp(await quadrants(3000, 2000)).jpeg().toBuffer()
    // Hold the processor's one slot with a first job, so the watched one is still queued when B subscribes.
    await fetch(`${a}/v1/media`, { method: 'POST', body: new Uint8Array(photo) })
    const { id } = (await (await fetch(`${a}/v1/media`, { method: 'POST', body: new Uint8Array(photo) })).json()) as { id: string }
    const states = await readStates(`${b}/v1/media/${id}/events`, 30_000)
    expect(states.length).toBeGreaterThan(1)
    expect(states[0]!.status).not.toBe('completed')
    expect(states.at(-1)).toMatchObject({ status: 'completed', progress: 100 })
    expect(states.at(-1)!.outputs.map((o) => o.name)).toEqual(['thumb', 'preview'])
  })
})
