/**
 * Streaming playback through the whole system (API, video processor, broker, S3): the HLS a video gets plays over
 * HTTP through its signed links alone (ffprobe and ffmpeg read the master as a player would), its playlists are as
 * the HLS authoring rules want them (parsed with m3u8-parser), every address in them is a link with the master's
 * expiry, and a changed one is refused; the storyboard covers the video; the key's own routes serve the same
 * playlists with bare names; another tenant sees nothing. A second system has the store serve segments
 * (PLAYBACK_SEGMENTS=s3, presigned URLs) and a video made to stream only.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Parser } from 'm3u8-parser'
import sharp from 'sharp'
import { issueKey } from '../services/api/auth/keys.ts'
import { readConfig as readApiConfig } from '../services/api/config.ts'
import type { Playback } from '../services/api/client.ts'
import { startApi } from '../services/api/start.ts'
import { apiKey } from './helpers/env.ts'
import { quadrants } from './helpers/image-fixtures.ts'
import { useInfra } from './helpers/infra.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'
import { makeClip } from './helpers/video-fixtures.ts'

await useInfra()

interface Variant {
  uri: string
  attributes: {
    BANDWIDTH: number
    'AVERAGE-BANDWIDTH'?: number | string
    RESOLUTION?: { width: number; height: number }
    CODECS?: string
    'FRAME-RATE'?: number | string
  }
}
interface Segment {
  uri: string
  duration: number
  byterange?: { length: number; offset: number }
  map?: { uri: string; byterange?: { length: number; offset: number } }
}
interface Manifest {
  playlists?: Variant[]
  segments: Segment[]
  targetDuration?: number
  playlistType?: string
  endList?: boolean
}

const parse = (text: string): Manifest => {
  const parser = new Parser()
  parser.push(text)
  parser.end()
  return parser.manifest as Manifest
}

async function run(program: string, args: string[]) {
  const child = Bun.spawn([program, ...args], { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  return { stdout, stderr, code }
}

/** What a player reads of a master, fetched the way a player does: the master, then each rung's playlist. */
async function readStream(master: string) {
  const res = await fetch(master)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toBe('application/vnd.apple.mpegurl')
  const text = await res.text()
  const variants = parse(text).playlists ?? []
  const rungs = await Promise.all(
    variants.map(async (variant) => {
      const url = new URL(variant.uri, master).href
      const res = await fetch(url)
      expect(res.status).toBe(200)
      return { variant, url, text: await res.text(), manifest: parse(await (await fetch(url)).text()) }
    })
  )
  return { text, variants, rungs }
}

/** Each segment's peak bit rate, as BANDWIDTH must cover it: bytes × 8 over its duration. */
const peakOf = (segments: Segment[]) => Math.max(...segments.map((s) => (s.byterange!.length * 8) / s.duration))
const startsOf = (segments: Segment[]) => {
  let t = 0
  return segments.map((s) => {
    const start = t
    t += s.duration
    return Math.round(start * 1000) / 1000
  })
}

/** The checks every stream must pass: ffprobe and ffmpeg over HTTP, then the playlists' rules. */
async function checkStream(master: string, duration: number, rungs: { width: number; height: number }[]) {
  const probed = await run('ffprobe', ['-v', 'error', '-show_programs', '-of', 'json', master])
  expect(probed.stderr).toBe('')
  expect(probed.code).toBe(0)
  const programs = (JSON.parse(probed.stdout) as { programs: { streams: { width?: number; height?: number }[] }[] })
    .programs
  expect(programs).toHaveLength(rungs.length)
  const sizes = programs.map((p) => p.streams.find((s) => s.width)!).map((s) => `${s.width}x${s.height}`)
  expect(sizes.sort()).toEqual(rungs.map((r) => `${r.width}x${r.height}`).sort())
  const decoded = await run('ffmpeg', ['-nostdin', '-v', 'error', '-i', master, '-map', '0', '-f', 'null', '-'])
  expect(decoded.stderr).toBe('')
  expect(decoded.code).toBe(0)

  const stream = await readStream(master)
  expect(stream.text).toContain('#EXT-X-INDEPENDENT-SEGMENTS')
  const starts = new Set<string>()
  for (const { variant, manifest } of stream.rungs) {
    expect(variant.attributes.CODECS).toMatch(/^avc1\.[0-9a-f]{6}/)
    expect(variant.attributes.RESOLUTION).toBeDefined()
    expect(Number(variant.attributes['AVERAGE-BANDWIDTH'])).toBeGreaterThan(0)
    expect(Number(variant.attributes['FRAME-RATE'])).toBeGreaterThan(0)
    expect(variant.attributes.BANDWIDTH).toBeGreaterThanOrEqual(peakOf(manifest.segments) - 1)
    expect(manifest.playlistType).toBe('VOD')
    expect(manifest.endList).toBe(true)
    for (const s of manifest.segments) expect(Math.round(s.duration)).toBeLessThanOrEqual(manifest.targetDuration!)
    const total = manifest.segments.reduce((sum, s) => sum + s.duration, 0)
    expect(Math.abs(total - duration)).toBeLessThanOrEqual(manifest.targetDuration!)
    starts.add(JSON.stringify(startsOf(manifest.segments)))
  }
  // Segment boundaries line up on every rung: a player switching rungs lands on the same moment.
  expect(starts.size).toBe(1)
  return stream
}

const fresh = mkdtempSync(join(tmpdir(), 'media-test-playback-'))
let stack: Stack
let video: MediaBody
let playback: Playback
beforeAll(async () => {
  const [started, clip] = await Promise.all([startStack({ videos: true }), makeClip(fresh, 'ten.mp4', '1280x720', 10)])
  stack = started
  const accepted = (await (await stack.upload(Bun.file(clip))).json()) as { id: string }
  video = await stack.waitForFinal(accepted.id, 90_000)
  expect(video.status).toBe('completed')
  playback = (await (await stack.fetch(`/v1/media/${video.id}/playback`)).json()) as Playback
}, 120_000)
afterAll(async () => {
  await stack?.stop()
  rmSync(fresh, { recursive: true, force: true })
})

const flip = (signature: string) => `${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`

describe('a 10 s 720p video with the built-in ladder', () => {
  test('playback gives signed links to the stream, the storyboard, the poster and each MP4, for an hour', async () => {
    expect(Date.parse(playback.expiresAt) - Date.now()).toBeGreaterThan(3590_000)
    expect(Date.parse(playback.expiresAt) - Date.now()).toBeLessThanOrEqual(3600_000)
    for (const url of [playback.hls, playback.storyboard, playback.poster, ...playback.downloads.map((d) => d.url)])
      expect(url).toMatch(
        new RegExp(`^${stack.url}/v1/links/${video.id}/[a-z0-9-]+\\.(m3u8|vtt|webp|mp4)\\?expires=\\d+&signature=`)
      )
    expect(playback.downloads.map((d) => [d.name, d.width, d.height])).toEqual([
      ['360p', 640, 360],
      ['720p', 1280, 720],
    ])
    const poster = await fetch(playback.poster!)
    expect(poster.headers.get('content-type')).toBe('image/webp')
    const asked = (await (await stack.fetch(`/v1/media/${video.id}/playback?expiresIn=120`)).json()) as Playback
    expect(Date.parse(asked.expiresAt) - Date.now()).toBeLessThanOrEqual(120_000)
  })

  test('the master plays over HTTP through its link alone: one program per rung, decoded without an error', async () => {
    const stream = await checkStream(playback.hls!, 10, [
      { width: 640, height: 360 },
      { width: 1280, height: 720 },
    ])
    const sizes = stream.variants.map((v) => `${v.attributes.RESOLUTION!.width}x${v.attributes.RESOLUTION!.height}`)
    expect(sizes.sort()).toEqual(['1280x720', '640x360'])
    // The source has sound: each rung carries it (muxed), and says so.
    for (const v of stream.variants) expect(v.attributes.CODECS).toContain('mp4a.40.2')
  })

  test("every address in the playlists is a relative link with the master's expiry; segments answer ranges", async () => {
    const expires = new URL(playback.hls!).searchParams.get('expires')
    const stream = await readStream(playback.hls!)
    const addresses = [
      ...stream.variants.map((v) => v.uri),
      ...stream.rungs.flatMap((r) => [...r.manifest.segments.map((s) => s.uri), r.manifest.segments[0]!.map!.uri]),
    ]
    for (const address of addresses) {
      // Relative, and ending in the file's extension (ffmpeg refuses a segment URL without one).
      expect(address).toMatch(/^hls-[a-z0-9-]+\.(m3u8|m4s)\?expires=\d+&signature=[A-Za-z0-9_-]{43}$/)
      expect(new URL(address, playback.hls!).searchParams.get('expires')).toBe(expires)
    }
    const rung = stream.rungs[0]!
    const segment = rung.manifest.segments[1]!
    const res = await fetch(new URL(segment.uri, rung.url), {
      headers: {
        range: `bytes=${segment.byterange!.offset}-${segment.byterange!.offset + segment.byterange!.length - 1}`,
      },
    })
    expect(res.status).toBe(206)
    expect(res.headers.get('content-type')).toBe('video/mp4')
    expect((await res.arrayBuffer()).byteLength).toBe(segment.byterange!.length)
    // A player on a customer's page reads the links with fetch: any origin may.
    const cross = await fetch(playback.hls!, { headers: { origin: 'https://customer.example' } })
    expect(cross.headers.get('access-control-allow-origin')).toBe('*')
  })

  test('a changed link is refused (403): the master, a rung, a segment; a later expiry too', async () => {
    const stream = await readStream(playback.hls!)
    const master = new URL(playback.hls!)
    const segment = new URL(stream.rungs[0]!.manifest.segments[0]!.uri, stream.rungs[0]!.url)
    const variant = new URL(stream.variants[0]!.uri, playback.hls!)
    for (const url of [master, segment, variant]) {
      const tampered = new URL(url)
      tampered.searchParams.set('signature', flip(url.searchParams.get('signature')!))
      expect((await fetch(tampered)).status).toBe(403)
      const later = new URL(url)
      later.searchParams.set('expires', String(Number(url.searchParams.get('expires')) + 3600))
      expect((await fetch(later)).status).toBe(403)
      // A link is for its own output: another output's name under the same signature.
      const other = new URL(url.href.replace(/\/hls[a-z0-9-]*\.(m3u8|m4s)\?/, '/poster.webp?'))
      expect((await fetch(other)).status).toBe(403)
      // Its own name with another extension is no file of it.
      const renamed = new URL(url.href.replace(/\.(m3u8|m4s)\?/, '.mp4?'))
      expect((await fetch(renamed)).status).toBe(404)
    }
  })

  test('the storyboard covers the whole video, every region inside its sprite', async () => {
    const res = await fetch(playback.storyboard!)
    expect(res.headers.get('content-type')).toBe('text/vtt')
    const text = await res.text()
    expect(text.startsWith('WEBVTT')).toBe(true)
    const clock = (t: string) => t.split(':').reduce((a, p) => a * 60 + Number(p), 0)
    const cues = [...text.matchAll(/([\d:.]+) --> ([\d:.]+)\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)/g)].map((m) => ({
      start: clock(m[1]!),
      end: clock(m[2]!),
      url: new URL(m[3]!, playback.storyboard!).href,
      box: [4, 5, 6, 7].map((i) => Number(m[i])) as [number, number, number, number],
    }))
    expect(cues.length).toBeGreaterThan(0)
    expect(cues[0]!.start).toBe(0)
    for (let i = 1; i < cues.length; i++) expect(cues[i]!.start).toBeCloseTo(cues[i - 1]!.end, 3)
    expect(Math.abs(cues.at(-1)!.end - Number(video.metadata!.durationSeconds))).toBeLessThan(0.05)
    expect(new Set(cues.map((c) => c.url)).size).toBe(1)
    const sprite = await fetch(cues[0]!.url)
    expect(sprite.headers.get('content-type')).toBe('image/jpeg')
    const { width, height } = await sharp(new Uint8Array(await sprite.arrayBuffer())).metadata()
    for (const { box } of cues) {
      const [x, y, w, h] = box
      expect(x + w).toBeLessThanOrEqual(width!)
      expect(y + h).toBeLessThanOrEqual(height!)
    }
  })

  test('with the key, the same playlists name the outputs by file, beside them under the key', async () => {
    const master = await (await stack.fetch(`/v1/media/${video.id}/outputs/hls`)).text()
    const uris = parse(master).playlists!.map((v) => v.uri)
    expect(uris.sort()).toEqual(['hls-360p.m3u8', 'hls-720p.m3u8'])
    const rung = parse(await (await stack.fetch(`/v1/media/${video.id}/outputs/hls-360p.m3u8`)).text())
    expect(rung.segments[0]!.uri).toBe('hls-360p-media.m4s')
    const segment = await stack.fetch(`/v1/media/${video.id}/outputs/hls-360p-media.m4s`, {
      headers: { ...apiKey, range: 'bytes=0-99' },
    })
    expect(segment.status).toBe(206)
  })

  test('another API instance serves the same links, and the playlists it rewrites play', async () => {
    const other = await startApi(readApiConfig(stack.env))
    const server = Bun.serve({ port: 0, fetch: other.app.fetch })
    try {
      const master = playback.hls!.replace(stack.url, `http://127.0.0.1:${server.port}`)
      const stream = await readStream(master)
      expect(stream.rungs).toHaveLength(2)
      const rung = stream.rungs[0]!
      const res = await fetch(new URL(rung.manifest.segments[0]!.uri, rung.url), { headers: { range: 'bytes=0-99' } })
      expect(res.status).toBe(206)
    } finally {
      await server.stop(true)
      await other.stop()
    }
  })

  test("another tenant's key sees no playback (404); an image has none (409)", async () => {
    const other = await issueKey(stack.api.store, 'playback-other')
    const res = await fetch(`${stack.url}/v1/media/${video.id}/playback`, {
      headers: { authorization: `Bearer ${other.key}` },
    })
    expect(res.status).toBe(404)
    const image = (await (
      await stack.upload(
        await sharp(await quadrants(64, 48))
          .jpeg()
          .toBuffer()
      )
    ).json()) as { id: string }
    await stack.waitForFinal(image.id)
    const refused = await stack.fetch(`/v1/media/${image.id}/playback`)
    expect(refused.status).toBe(409)
    expect(((await refused.json()) as { error: { message: string } }).error.message).toContain('is an image')
  })
})

describe('the store serving segments, and a 60 s video made to stream only', () => {
  let s3Stack: Stack
  let media: MediaBody
  let stream: Playback
  beforeAll(async () => {
    const [started, clip] = await Promise.all([
      startStack({ images: false, videos: true, env: { PLAYBACK_SEGMENTS: 's3' } }),
      makeClip(fresh, 'sixty.mp4', '426x240', 60),
    ])
    s3Stack = started
    const preset = await s3Stack.fetch('/v1/presets/stream', {
      method: 'PUT',
      headers: { ...apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'video', renditions: [144, 240], delivery: 'hls' }),
    })
    expect(preset.status).toBeLessThan(300)
    const accepted = (await (await s3Stack.upload(Bun.file(clip), { 'x-presets': 'stream' })).json()) as { id: string }
    media = await s3Stack.waitForFinal(accepted.id, 120_000)
    expect(media.status).toBe('completed')
    stream = (await (await s3Stack.fetch(`/v1/media/${media.id}/playback`)).json()) as Playback
  }, 150_000)
  afterAll(() => s3Stack?.stop())

  test('no MP4 is made or offered; the stream plays, its segments straight from the store', async () => {
    expect(media.outputs.some((o) => o.name === '144p' || o.name === '240p')).toBe(false)
    expect(stream.downloads).toEqual([])
    const read = await checkStream(stream.hls!, 60, [
      { width: 256, height: 144 },
      { width: 426, height: 240 },
    ])
    for (const rung of read.rungs) {
      for (const segment of rung.manifest.segments) {
        expect(segment.uri).toStartWith(`${process.env.TEST_S3_ENDPOINT}/`)
        expect(segment.uri).toContain('X-Amz-Signature=')
      }
    }
    // Rung playlists still come from the API: they are rewritten as they are served.
    expect(read.rungs[0]!.url).toStartWith(`${s3Stack.url}/v1/links/`)
  })
})
