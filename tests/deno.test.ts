/**
 * The API and `shared/` on Deno (installed by `bash infra/setup.sh`; a missing deno fails these tests, it does not
 * skip them). `shared/` is imported by a Deno script with no permissions; the API runs under Deno as a child
 * process, with the permissions docs/scale.md documents, next to the Bun image processor (in this process) on the real
 * broker and S3, once per database.
 */
import { openSocket, readEvents, until, type MediaEventBody } from './helpers/event-clients.ts'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import sharp from 'sharp'
import { readConfig as readImagesConfig, start as startImages } from '../services/images/main.ts'
import { spawnApi } from './helpers/api-process.ts'
import { apiKey, testEnv } from './helpers/env.ts'
import { quadrants } from './helpers/image-fixtures.ts'
import { useInfra } from './helpers/infra.ts'
import { freePort } from './helpers/ports.ts'
import { newPostgresSchema } from './helpers/postgres.ts'
import { runtimePath, type ServiceProcess } from './helpers/service-process.ts'
import type { MediaBody } from './helpers/stack.ts'

await useInfra()

/**
 * The databases the API is tried on, each given as environment. PostgreSQL is one more entry:
 * `{ name: 'PostgreSQL', env: async () => ({ DATABASE_URL: await newPostgresSchema() }) }` (tests/helpers/postgres.ts).
 */
const DATABASES: { name: string; env: () => Record<string, string> | Promise<Record<string, string>> }[] = [
  { name: 'SQLite', env: () => ({}) },
  { name: 'PostgreSQL', env: async () => ({ DATABASE_URL: await newPostgresSchema() }) },
]

const MiB = 1024 * 1024

test('shared/ on Deno, with no permissions: a message round-trips through the codec, and node:sqlite returns BLOBs as Uint8Array', async () => {
  const child = Bun.spawn([runtimePath('deno'), 'run', join(import.meta.dir, 'deno/shared-check.ts')], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/root', NO_COLOR: '1' },
    stdout: 'pipe',
    stderr: 'pipe',
    timeout: 30_000,
  })
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  if (code !== 0) throw new Error(`deno run tests/deno/shared-check.ts exited with ${code}:\n${stderr}`)
  const seen = JSON.parse(stdout)
  expect(seen.runtime).toBe('deno')
  expect(seen.decoded).toEqual({ ok: true, value: seen.sent })
  expect(seen.refused.ok).toBe(false)
  expect(seen.refused.reason).toContain('progress')
  expect(seen.blob).toEqual({ isUint8Array: true, sameBytes: true, decoded: { ok: true, value: seen.sent } })
})

for (const database of DATABASES) {
  describe(`the API on Deno, on ${database.name}`, () => {
    let env: Record<string, string>
    let api: ServiceProcess
    let url: string
    let images: Awaited<ReturnType<typeof startImages>> | undefined

    beforeAll(async () => {
      env = testEnv({ ...(await database.env()), PORT: String(freePort()), MAX_UPLOAD_BYTES: '4M' })
      url = `http://127.0.0.1:${env.PORT}`
      api = await spawnApi(env, { runtime: 'deno' })
    }, 60_000)
    afterAll(async () => {
      await images?.stop()
      await api?.kill('SIGTERM')
    })

    test('an upload is stored, watched over SSE from queued (before any processor runs) to completed by the Bun processor, and its outputs are served', async () => {
      const photo = await quadrants(1200, 800)
      const upload = await fetch(`${url}/v1/media`, { method: 'POST', body: new Uint8Array(photo), headers: apiKey })
      expect(upload.status).toBe(202)
      const { id } = (await upload.json()) as { id: string }

      // No processor runs yet: the job waits in its queue, and status and the stream's first event say so.
      const queued = (await (await fetch(`${url}/v1/media/${id}`, { headers: apiKey })).json()) as MediaBody
      expect(queued).toMatchObject({ id, kind: 'image', status: 'queued', outputs: [] })
      const events = await fetch(`${url}/v1/media/${id}/events`, {
        headers: apiKey,
        signal: AbortSignal.timeout(30_000),
      })
      expect(events.status).toBe(200)
      expect(events.headers.get('content-type')).toContain('text/event-stream')
      const stream = sseEvents(events.body!)
      const first = (await stream.next()).value!
      expect(first.event).toBe('state')
      expect(JSON.parse(first.data)).toMatchObject({ id, status: 'queued' })

      // Deno streams what follows as it happens; the stream ends after the final state.
      images = await startImages(readImagesConfig(env))
      const states: MediaBody[] = []
      for await (const { event, data } of stream) {
        expect(event).toBe('state')
        states.push(JSON.parse(data) as MediaBody)
      }
      const progress = states.map((s) => s.progress)
      expect(progress).toEqual([...progress].sort((a, b) => a - b))
      const last = states.at(-1)!
      expect(last).toMatchObject({
        id,
        status: 'completed',
        progress: 100,
        metadata: { format: 'png', width: 1200, height: 800 },
      })
      expect(last.outputs.map((o) => o.name)).toEqual(['thumb', 'preview'])
      expect(await (await fetch(`${url}/v1/media/${id}`, { headers: apiKey })).json()).toEqual(last)

      for (const output of last.outputs) {
        const res = await fetch(output.url, { headers: apiKey })
        expect(res.status).toBe(200)
        expect(res.headers.get('content-type')).toBe(output.contentType)
        const bytes = new Uint8Array(await res.arrayBuffer())
        expect(bytes.byteLength).toBe(output.size)
        expect(await sharp(bytes).metadata()).toMatchObject({
          format: 'webp',
          width: output.width,
          height: output.height,
        })
      }
    }, 60_000)

    test("one socket (opened with a token) and one tenant stream carry every change of the tenant's media, as on Bun", async () => {
      images ??= await startImages(readImagesConfig(env))
      const { token } = (await (
        await fetch(`${url}/v1/events/tokens`, { method: 'POST', headers: apiKey })
      ).json()) as {
        token: string
      }
      const socket = openSocket(`ws://127.0.0.1:${env.PORT}/v1/ws?token=${token}`)
      await socket.opened
      socket.send({ type: 'subscribe', all: true })
      await until(() => socket.of('subscribed').length === 1, 'subscribed')
      const stream = readEvents(`${url}/v1/events`, apiKey)
      await until(() => stream.from !== null, 'the stream to be ready')
      const photo = new Uint8Array(await quadrants(400, 300))
      const ids: string[] = []
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${url}/v1/media`, { method: 'POST', body: photo, headers: apiKey })
        ids.push(((await res.json()) as { id: string }).id)
      }
      const finals = (events: MediaEventBody[]) => events.filter((e) => e.type === 'completed').map((e) => e.mediaId)
      await until(() => finals(socket.events()).length === 3 && finals(stream.events).length === 3, 'every completion')
      await stream.stop()
      socket.close()
      expect(new Set(finals(socket.events()))).toEqual(new Set(ids))
      // The same events, numbered alike, on both.
      const summary = (events: MediaEventBody[]) => events.map((e) => `${e.id} ${e.mediaId} ${e.type}`)
      expect(summary(socket.events())).toEqual(summary(stream.events))
    }, 60_000)

    test("an upload over MAX_UPLOAD_BYTES gets the API's own 413, as on Bun", async () => {
      const body = new Uint8Array(6 * MiB)
      body.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]) // a PNG signature, so only the size is wrong
      const res = await fetch(`${url}/v1/media`, { method: 'POST', body, headers: apiKey })
      expect(res.status).toBe(413)
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('payload_too_large')
    })

    test('serves /metrics (prom-client runs on Deno), /livez and /readyz', async () => {
      const metrics = await fetch(`${url}/metrics`)
      expect(metrics.status).toBe(200)
      const text = await metrics.text()
      // The uploads of the tests above: one watched over SSE, three followed over the socket.
      expect(text).toContain('media_uploads_total{kind="image",outcome="accepted",service="api"} 4')
      expect(text).toContain('media_jobs_finished_total{kind="image",status="completed",service="api"} 4')
      expect(text).toMatch(/process_resident_memory_bytes\{service="api"\} \d+/)
      expect((await fetch(`${url}/livez`)).status).toBe(200)
      expect(await (await fetch(`${url}/readyz`)).json()).toMatchObject({ status: 'ready', down: [] })
    })

    test('stops on SIGTERM with exit code 0, having never crashed', async () => {
      await images?.stop()
      images = undefined
      await api.kill('SIGTERM')
      expect(api.exits).toEqual([{ code: 0, signal: null, expected: true }])
    })
  })
}

/** The events of an SSE body as they arrive; ends when the server closes the stream. */
async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<{ event: string; data: string }> {
  const decoder = new TextDecoder()
  let buffer = ''
  const reader = body.getReader()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += decoder.decode(value, { stream: true })
    let end: number
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const lines = buffer.slice(0, end).split('\n')
      buffer = buffer.slice(end + 2)
      const field = (name: string) =>
        lines
          .find((l) => l.startsWith(`${name}:`))
          ?.slice(name.length + 1)
          .trimStart()
      const data = field('data')
      if (data !== undefined) yield { event: field('event') ?? 'message', data }
    }
  }
}
