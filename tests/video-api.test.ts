/** A video through the whole system: upload → videos queue → ffmpeg → S3 → results → HTTP. */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeVideoFixtures, probe, type VideoFixtures } from './helpers/video-fixtures.ts'
import { apiKey } from './helpers/env.ts'
import { startStack, type Stack } from './helpers/stack.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

let stack: Stack
let fixtures: VideoFixtures
beforeAll(async () => {
  ;[stack, fixtures] = await Promise.all([startStack({ images: false, videos: true }), makeVideoFixtures()])
})
afterAll(async () => {
  await stack.stop()
  rmSync(fixtures.dir, { recursive: true, force: true })
})

test('a portrait phone-style video uploaded as multipart completes with a poster and a playable rendition', async () => {
  const form = new FormData()
  form.append('file', Bun.file(fixtures.rotated.file), 'clip.bin')
  const res = await stack.fetch(`/v1/media`, { method: 'POST', body: form })
  expect(res.status).toBe(202)
  const accepted = (await res.json()) as { id: string; kind: string }
  expect(accepted.kind).toBe('video')
  const media = await stack.waitForFinal(accepted.id, 60_000)
  expect(media.status).toBe('completed')
  expect(media.progress).toBe(100)
  expect(media.metadata).toMatchObject({
    container: 'mp4',
    width: 240,
    height: 320,
    videoCodec: 'h264',
    audioCodec: 'aac',
  })
  // The built-in ladder: a poster, the MP4 and the HLS of each rung at or below the source, and a storyboard.
  expect(media.outputs.map((o) => o.name).sort()).toEqual(
    ['poster', '360p', 'hls', 'hls-360p', 'hls-360p-media', 'storyboard', 'storyboard-sprite'].sort()
  )

  const rendition = media.outputs.find((o) => o.name === '360p')!
  const body = await fetch(rendition.url, { headers: apiKey })
  expect(body.headers.get('content-type')).toBe('video/mp4')
  const file = join(fixtures.dir, 'downloaded-360p.mp4')
  writeFileSync(file, new Uint8Array(await body.arrayBuffer()))
  const probed = await probe(file)
  const video = probed.streams.find((s) => s.codec_type === 'video')!
  expect(video).toMatchObject({ codec_name: 'h264', pix_fmt: 'yuv420p', width: 240, height: 320 })
  expect(probed.streams.some((s) => s.codec_type === 'audio' && s.codec_name === 'aac')).toBe(true)
  expect(Math.abs(Number(probed.format.duration) - Number(media.metadata!.durationSeconds))).toBeLessThan(0.1)
})
