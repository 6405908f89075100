/**
 * A backend in another language against the real processors: tests/interop/backend.py (Python, pika, jsonschema,
 * boto3), written from shared/PROTOCOL.md and shared/schemas/ alone, drives the image, video and audio processors started
 * here on the real RabbitMQ and S3. It declares the topology itself (after the processors did, so any difference in
 * the arguments would make RabbitMQ refuse it), and checks every message against the schemas.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { readConfig as readAudioConfig, start as startAudio } from '../../services/audio/main.ts'
import { readConfig as readImagesConfig, start as startImages } from '../../services/images/main.ts'
import { readConfig as readVideosConfig, start as startVideos } from '../../services/videos/main.ts'
import { testEnv } from '../helpers/env.ts'
import { appendLog } from '../helpers/logs.ts'
import { makeSong } from '../helpers/audio-fixtures.ts'
import { quadrants } from '../helpers/image-fixtures.ts'
import { makeClip } from '../helpers/video-fixtures.ts'
import { useInfra } from '../helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

/** Debian's interpreter, where python3-pika, python3-jsonschema and python3-boto3 install (setup.sh does). */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
const work = mkdtempSync(join(tmpdir(), 'media-test-interop-'))
let env: Record<string, string>
let processors: { stop(): Promise<void> }[] = []

beforeAll(async () => {
  env = testEnv({
    IMAGES_TMP_DIR: join(work, 'images'),
    VIDEOS_TMP_DIR: join(work, 'videos'),
    AUDIO_TMP_DIR: join(work, 'audio'),
  })
  processors = await Promise.all([
    startImages(readImagesConfig(env)),
    startVideos(readVideosConfig(env)),
    startAudio(readAudioConfig(env)),
  ])
})
afterAll(async () => {
  await Promise.all(processors.map((p) => p.stop()))
  rmSync(work, { recursive: true, force: true })
})

test('a Python backend that knows only PROTOCOL.md and the JSON Schemas drives the three processors', async () => {
  const image = join(work, 'photo.jpg')
  writeFileSync(
    image,
    await sharp(await quadrants(400, 300))
      .jpeg()
      .toBuffer()
  )
  const song = join(work, 'song.mp3')
  const [video, long] = await Promise.all([
    makeClip(work, 'clip.mp4', '320x240', 2),
    makeClip(work, 'long.mp4', '640x360', 30),
    // 3 s of a tone with a title and a 200×200 JPEG cover.
    makeSong(song, 'Interop', 3),
  ])
  const child = Bun.spawn([PYTHON, join(import.meta.dir, 'backend.py')], {
    env: {
      PATH: process.env.PATH!,
      RABBITMQ_URL: env.RABBITMQ_URL!,
      SYSTEM: env.SYSTEM!,
      S3_ENDPOINT: env.S3_ENDPOINT!,
      S3_BUCKET: env.S3_BUCKET!,
      S3_ACCESS_KEY_ID: env.S3_ACCESS_KEY_ID!,
      S3_SECRET_ACCESS_KEY: env.S3_SECRET_ACCESS_KEY!,
      SCHEMAS_DIR: join(import.meta.dir, '../../shared/schemas'),
      IMAGE_FILE: image,
      VIDEO_FILE: video,
      LONG_VIDEO_FILE: long,
      AUDIO_FILE: song,
    },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), 170_000)
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  clearTimeout(timer)
  if (code !== 0 && !stdout.trim()) throw new Error(`backend.py exited with ${code}:\n${stderr}`)
  const report = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
    jobs: Record<string, string>
    updates: number
    cancelSeconds: number
    problems: string[]
  }
  appendLog(`interop: ${JSON.stringify(report)}`)
  expect(report.problems).toEqual([])
  expect(report.jobs).toEqual({
    'cancelled while it runs': 'cancelled',
    'a photo': 'completed',
    'a crop, a set and AVIF': 'completed',
    'a clip; the 2160p rung is above it': 'completed',
    'a stream and a storyboard': 'completed',
    'a song with its cover': 'completed',
    'a missing original': 'failed',
    'format jpg': 'failed',
  })
  expect(code).toBe(0)
}, 180_000)
