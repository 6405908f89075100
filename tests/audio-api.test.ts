/**
 * Sound through the whole system (API, audio processor, broker, S3): an MP3 with tags and cover art becomes audio
 * with its encodings, waveform peaks and cover, listed and filtered as audio and played through signed links; an MP4
 * holding only sound is audio on every way in (a POST, a direct upload, tus on moto), never a failed video; audio
 * presets choose the encodings and whether to normalise; a preset of another kind is refused and nothing is kept.
 */
import { HeadObjectCommand } from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tus from 'tus-js-client'
import type { Playback } from '../services/api/client.ts'
import { TEST_API_KEY, apiKey } from './helpers/env.ts'
import { useInfra } from './helpers/infra.ts'
import { startMoto, type Moto } from './helpers/moto.ts'
import { testS3 } from './helpers/s3.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'

await useInfra()

const dir = mkdtempSync(join(tmpdir(), 'media-test-audio-api-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

async function ffmpeg(name: string, args: string[]): Promise<Uint8Array<ArrayBuffer>> {
  const file = join(dir, name)
  const child = Bun.spawn(['ffmpeg', '-nostdin', '-v', 'error', '-y', ...args, file], { stderr: 'pipe' })
  if ((await child.exited) !== 0) throw new Error(await new Response(child.stderr).text())
  return new Uint8Array(readFileSync(file))
}
const tone = (seconds: number, volume = '0.1') => [
  '-f',
  'lavfi',
  '-i',
  `sine=frequency=440:sample_rate=44100:duration=${seconds},volume=${volume}`,
]
/** An MP3 with ID3 tags and a front cover (a 200×200 PNG as the attached picture). */
const taggedMp3 = () =>
  ffmpeg('tagged.mp3', [
    ...tone(3),
    '-f',
    'lavfi',
    '-i',
    'testsrc=size=200x200:duration=1',
    '-map',
    '0:a',
    '-map',
    '1:v',
    '-frames:v',
    '1',
    '-c:a',
    'libmp3lame',
    '-c:v',
    'png',
    '-disposition:v',
    'attached_pic',
    '-id3v2_version',
    '3',
    '-metadata',
    'title=Harbour at dawn',
    '-metadata',
    'artist=The Gulls',
    '-metadata',
    'album=Tides',
    '-metadata',
    'track=3',
  ])
/** AAC in an MP4 whose brand says nothing of sound (`isom`): what a phone's voice memo app may write. */
const soundOnlyMp4 = () => ffmpeg('memo.mp4', [...tone(2), '-c:a', 'aac', '-brand', 'isom'])

type Body = MediaBody & { outputs: (MediaBody['outputs'][number] & { durationSeconds?: number })[] }

describe('on the embedded store', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ images: false, audio: true })
  }, 60_000)
  afterAll(() => stack?.stop())

  const upload = async (bytes: Uint8Array, headers: Record<string, string> = {}) => {
    const res = await stack.upload(bytes, headers)
    expect(res.status).toBe(202)
    return (await res.json()) as { id: string; kind: string }
  }

  test('an MP3 with tags and a cover: audio, its encodings, peaks and cover, listed and played without the key', async () => {
    const accepted = await upload(await taggedMp3(), { 'x-filename': 'harbour.mp3' })
    expect(accepted.kind).toBe('audio')
    const media = (await stack.waitForFinal(accepted.id, 60_000)) as Body
    expect(media.status).toBe('completed')
    expect(media.outputs.map((o) => [o.name, o.contentType]).sort()).toEqual([
      ['audio', 'audio/mp4'],
      ['audio-opus', 'audio/webm'],
      ['cover', 'image/webp'],
      ['peaks', 'application/json'],
    ])
    expect(media.metadata).toMatchObject({
      codec: 'mp3',
      channels: 1,
      tags: { title: 'Harbour at dawn', artist: 'The Gulls', album: 'Tides', track: '3' },
      hasCover: true,
    })
    const listed = (await (await stack.fetch('/v1/media?kind=audio')).json()) as { media: { id: string }[] }
    expect(listed.media.map((m) => m.id)).toContain(media.id)
    const videos = (await (await stack.fetch('/v1/media?kind=video')).json()) as { media: { id: string }[] }
    expect(videos.media.map((m) => m.id)).not.toContain(media.id)

    const playback = (await (await stack.fetch(`/v1/media/${media.id}/playback`)).json()) as Playback
    expect(playback).toMatchObject({ hls: null, storyboard: null, downloads: [] })
    expect(playback.audio.map((a) => a.contentType).sort()).toEqual(['audio/mp4', 'audio/webm'])
    const sound = await fetch(playback.audio.find((a) => a.contentType === 'audio/mp4')!.url, {
      headers: { range: 'bytes=0-99' },
    })
    expect(sound.status).toBe(206)
    const peaks = (await (await fetch(playback.peaks!)).json()) as { version: number; bits: number; length: number }
    expect(peaks).toMatchObject({ version: 2, bits: 8 })
    expect(peaks.length).toBeGreaterThan(0)
    const cover = await fetch(playback.poster!)
    expect(cover.headers.get('content-type')).toBe('image/webp')
  })

  test('an MP4 holding only sound is audio (m4a), not a video that fails', async () => {
    const accepted = await upload(await soundOnlyMp4())
    expect(accepted.kind).toBe('audio')
    const media = await stack.waitForFinal(accepted.id, 60_000)
    expect(media).toMatchObject({ status: 'completed', kind: 'audio', format: 'm4a' })
  })

  test('a WebM holding only sound (what a browser records for a voice note) is audio, not a video that fails', async () => {
    const note = await ffmpeg('note.webm', [...tone(2), '-c:a', 'libopus'])
    const accepted = await upload(note, { 'x-filename': 'note.webm' })
    expect(accepted.kind).toBe('audio')
    const media = (await stack.waitForFinal(accepted.id, 60_000)) as Body
    expect(media).toMatchObject({ status: 'completed', kind: 'audio', format: 'webm', metadata: { codec: 'opus' } })
    expect(media.outputs.map((o) => o.name).sort()).toEqual(['audio', 'audio-opus', 'peaks'])
  })

  test('an MP4 holding only sound, uploaded straight to S3, is audio too', async () => {
    const bytes = await soundOnlyMp4()
    const target = (await (await stack.fetch('/v1/direct-uploads/s3/params?filename=memo.mp4')).json()) as {
      url: string
      key: string
      headers: Record<string, string>
    }
    expect((await fetch(target.url, { method: 'PUT', body: bytes, headers: target.headers })).status).toBe(200)
    const done = await stack.fetch(`/v1/direct-uploads/complete?key=${encodeURIComponent(target.key)}`, {
      method: 'POST',
    })
    expect(done.status).toBe(202)
    expect(((await done.json()) as { kind: string }).kind).toBe('audio')
  })

  test('audio presets choose the encodings and the loudness; a preset of another kind is refused, nothing kept', async () => {
    const put = await stack.fetch('/v1/presets/quiet-aac', {
      method: 'PUT',
      headers: { ...apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'audio', formats: ['m4a'], bitrate: 64, normalize: false, peaks: false }),
    })
    expect(put.status).toBe(201)
    const accepted = await upload(await taggedMp3(), { 'x-presets': 'quiet-aac' })
    const media = (await stack.waitForFinal(accepted.id, 60_000)) as Body & {
      metadata: { loudness: { gainDb: number } }
    }
    expect(media.outputs.map((o) => o.name).sort()).toEqual(['audio', 'cover'])
    expect(media.metadata.loudness.gainDb).toBe(0)

    const bad = await stack.fetch('/v1/presets/bad', {
      method: 'PUT',
      headers: { ...apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'audio', formats: ['flac'] }),
    })
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain('m4a, opus')

    const before = (await (await stack.fetch('/v1/media?limit=100')).json()) as { media: unknown[] }
    // A video preset for a sound: 422, before anything is stored; for a sound only an MP4's tracks reveal, after.
    for (const bytes of [await taggedMp3(), await soundOnlyMp4()]) {
      const refused = await stack.upload(bytes, { 'x-presets': 'ladder' })
      expect(refused.status).toBe(422)
      expect(((await refused.json()) as { error: { message: string } }).error.message).toContain('audio')
    }
    const after = (await (await stack.fetch('/v1/media?limit=100')).json()) as { media: unknown[] }
    expect(after.media.length).toBe(before.media.length)
    const s3 = testS3(stack.env)
    try {
      const originals = await s3.keys(`${stack.env.SYSTEM}/originals/`)
      expect(originals.length).toBe(before.media.length)
    } finally {
      s3.close()
    }
  })
})

describe('tus on moto', () => {
  let moto: Moto
  let stack: Stack
  beforeAll(async () => {
    moto = await startMoto()
    stack = await startStack({ images: false, env: { ...moto.env } })
  }, 60_000)
  afterAll(async () => {
    await stack?.stop()
    await moto?.stop()
  })

  test('an MP4 holding only sound, uploaded with tus, is audio', async () => {
    const bytes = Buffer.from(await soundOnlyMp4())
    const mediaId = await new Promise<string | null>((resolve, reject) => {
      const upload = new tus.Upload(bytes, {
        endpoint: `${stack.url}/v1/uploads`,
        headers: { authorization: `Bearer ${TEST_API_KEY}` },
        metadata: { filename: 'memo.mp4' },
        retryDelays: [],
        onSuccess: (payload) => resolve(payload.lastResponse.getHeader('X-Media-Id') ?? null),
        onError: reject,
      })
      upload.start()
    })
    const media = (await (await stack.fetch(`/v1/media/${mediaId}`)).json()) as { kind: string; format: string }
    expect(media).toMatchObject({ kind: 'audio', format: 'm4a' })
    const s3 = testS3(stack.env)
    try {
      const head = await s3.client.send(
        new HeadObjectCommand({ Bucket: stack.env.S3_BUCKET, Key: `${stack.env.SYSTEM}/originals/${mediaId}` })
      )
      expect(head.ContentLength).toBe(bytes.length)
    } finally {
      s3.close()
    }
  })
})
