/**
 * The processors' limits before decoding, apart from the broker and S3: the pure checks on an image header and a
 * video probe, the byte limit before and during a download (against a stand-in S3 that never stops sending), and
 * the variables' defaults.
 */
import { describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { JobError, byteLimitFailure, downloadOriginal, formatBytes, type JobStorage } from '@app/shared/processor'
import { createStorage } from '../../shared/processor/storage.ts'
import { countGifFrames, imageLimitFailure, readConfig as readImagesConfig } from '../../services/images/main.ts'
import { manyFramesGif } from '../helpers/hostile.ts'
import { readConfig as readVideosConfig, videoLimitFailure } from '../../services/videos/main.ts'

const CREDENTIALS = { S3_ACCESS_KEY_ID: 'id', S3_SECRET_ACCESS_KEY: 'secret' }
const refusal = (error: JobError | null) => (error ? { code: error.code, class: error.class, message: error.message } : null)

describe('defaults', () => {
  test('images: 200 MiB, 50 MP a frame, 1000 frames, 500 MP over all frames', () => {
    expect(readImagesConfig(CREDENTIALS).limits).toMatchObject({
      maxBytes: 200 * 1024 ** 2,
      maxPixels: 50_000_000,
      maxFrames: 1000,
      maxTotalPixels: 500_000_000,
    })
  })

  test('videos: 4 GiB, 16 streams, 4096×2160, 240 fps, an hour', () => {
    expect(readVideosConfig(CREDENTIALS).limits).toEqual({
      maxBytes: 4 * 1024 ** 3,
      maxStreams: 16,
      maxPixels: 4096 * 2160,
      maxFrameRate: 240,
      maxSeconds: 3600,
    })
  })

  test('a wrong value names its variable', () => {
    expect(() => readImagesConfig({ ...CREDENTIALS, MAX_IMAGE_BYTES: 'lots', MAX_IMAGE_FRAMES: '0' })).toThrow(/MAX_IMAGE_FRAMES[^\n]*\n[^\n]*MAX_IMAGE_BYTES|MAX_IMAGE_BYTES[^\n]*\n[^\n]*MAX_IMAGE_FRAMES/)
    expect(() => readVideosConfig({ ...CREDENTIALS, MAX_VIDEO_FRAME_RATE: '24.5' })).toThrow(/MAX_VIDEO_FRAME_RATE: must be a whole number/)
  })
})

describe('imageLimitFailure', () => {
  const limits = { maxPixels: 50_000_000, maxFrames: 1000, maxTotalPixels: 500_000_000 }

  test('a still within the limits passes', () => {
    expect(imageLimitFailure({ width: 8000, height: 6000 }, limits)).toBeNull()
    expect(imageLimitFailure({ width: 8000, height: 6000, pages: 1 }, limits)).toBeNull()
  })

  test('one frame over MAX_IMAGE_PIXELS', () => {
    expect(refusal(imageLimitFailure({ width: 30000, height: 30000 }, limits))).toEqual({
      code: 'limit_exceeded',
      class: 'input',
      message: 'the image is 30000×30000 (900 MP), over MAX_IMAGE_PIXELS (50 MP)',
    })
    // Below 0.1 MP the count is given as is, not as "0 MP".
    expect(imageLimitFailure({ width: 64, height: 48 }, { ...limits, maxPixels: 1000 })?.message).toBe('the image is 64×48 (3072 pixels), over MAX_IMAGE_PIXELS (1000 pixels)')
  })

  test('too many frames, however small: MAX_IMAGE_FRAMES', () => {
    expect(imageLimitFailure({ width: 1, height: 1, pages: 1500 }, limits)?.message).toBe('the image has 1500 frames, over MAX_IMAGE_FRAMES (1000)')
    expect(imageLimitFailure({ width: 1, height: 1, pages: 1000 }, limits)).toBeNull()
  })

  test('frames within both limits that add up to too many pixels: MAX_IMAGE_TOTAL_PIXELS', () => {
    // 900 frames of 1000×1000: 1 MP each, 900 MP in all.
    expect(imageLimitFailure({ width: 1000, height: 1000, pages: 900 }, limits)?.message).toBe(
      "the image's 900 frames of 1000×1000 make 900 MP, over MAX_IMAGE_TOTAL_PIXELS (500 MP)"
    )
  })

  test('frames stacked into one tall image are counted by their page height', () => {
    const stacked = { width: 1000, height: 1000 * 900, pageHeight: 1000, pages: 900 }
    expect(imageLimitFailure(stacked, limits)?.message).toMatch(/900 frames of 1000×1000 make 900 MP, over MAX_IMAGE_TOTAL_PIXELS/)
  })
})

describe('countGifFrames', () => {
  test('counts a GIF\'s frames from disk, stops at a truncation, and says null for anything else', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gif-frames-'))
    try {
      const write = (name: string, bytes: Uint8Array) => (writeFileSync(join(dir, name), bytes), join(dir, name))
      expect(countGifFrames(write('many.gif', manyFramesGif(3000)))).toBe(3000)
      expect(countGifFrames(write('five.gif', manyFramesGif(5, 40)))).toBe(5)
      const whole = manyFramesGif(10)
      expect(countGifFrames(write('cut.gif', whole.subarray(0, Math.floor(whole.length / 2))))).toBeLessThan(10)
      expect(countGifFrames(write('not.gif', new TextEncoder().encode('GIF? no, a text file')))).toBeNull()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('decodable formats', () => {
  test('the image processor decodes only its allow-list: an SVG fails unsupported_format, a PNG passes', async () => {
    // In a process of its own: blocking libvips loaders is process-wide.
    const dir = mkdtempSync(join(tmpdir(), 'decodable-'))
    try {
      writeFileSync(join(dir, 'logo.svg'), '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><image href="file:///etc/passwd"/></svg>')
      const script = `
        import sharp from 'sharp'
        import { blockUndecodable, inspectImage, readConfig } from './services/images/main.ts'
        await sharp({ create: { width: 8, height: 8, channels: 3, background: '#fff' } }).png().toFile(${JSON.stringify(join(dir, 'dot.png'))})
        blockUndecodable()
        const { limits } = readConfig({ S3_ACCESS_KEY_ID: 'a', S3_SECRET_ACCESS_KEY: 'b' })
        for (const name of ['logo.svg', 'dot.png']) {
          const outcome = await inspectImage(${JSON.stringify(dir)} + '/' + name, limits).then((r) => r.metadata.format, (e) => e.code)
          console.log(name, outcome)
        }`
      const child = Bun.spawn(['bun', '-e', script], { cwd: join(import.meta.dir, '../..'), stdout: 'pipe', stderr: 'inherit' })
      expect(await new Response(child.stdout).text()).toBe('logo.svg unsupported_format\ndot.png png\n')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('videoLimitFailure', () => {
  const limits = { maxStreams: 16, maxPixels: 4096 * 2160, maxFrameRate: 240, maxSeconds: 3600 }
  const clip = { streams: 2, width: 1920, height: 1080, frameRate: 29.97, durationSeconds: 60 }

  test('an ordinary clip passes, and a duration not yet known is not checked', () => {
    expect(videoLimitFailure(clip, limits)).toBeNull()
    expect(videoLimitFailure({ ...clip, durationSeconds: undefined }, limits)).toBeNull()
  })

  test('each limit, named with the value found', () => {
    const cases: [Partial<typeof clip>, string][] = [
      [{ streams: 20 }, 'the file has 20 streams, over MAX_VIDEO_STREAMS (16)'],
      [{ width: 7680, height: 4320 }, 'the video is 7680×4320 (33177600 pixels), over MAX_VIDEO_PIXELS (8847360 pixels)'],
      [{ frameRate: 1000 }, 'the video runs at 1000 fps, over MAX_VIDEO_FRAME_RATE (240 fps)'],
      [{ frameRate: 2000 / 3 }, 'the video runs at 666.667 fps, over MAX_VIDEO_FRAME_RATE (240 fps)'],
      [{ durationSeconds: 36000.033 }, 'the video lasts 36000 s, over MAX_VIDEO_SECONDS (3600 s)'],
    ]
    for (const [change, message] of cases) expect(refusal(videoLimitFailure({ ...clip, ...change }, limits))).toEqual({ code: 'limit_exceeded', class: 'input', message })
  })

  test('an unknown frame rate (0) is not refused', () => {
    expect(videoLimitFailure({ ...clip, frameRate: 0 }, limits)).toBeNull()
  })
})

describe('the byte limit', () => {
  const limit = { maxBytes: 200 * 1024 ** 2, variable: 'MAX_IMAGE_BYTES' }

  test('sizes are shown in the units the variables take', () => {
    expect([formatBytes(900), formatBytes(64 * 1024), formatBytes(1.5 * 1024 ** 3), formatBytes(200 * 1024 ** 2)]).toEqual(['900 bytes', '64 KiB', '1.5 GiB', '200 MiB'])
    expect(byteLimitFailure(314572800, limit).message).toBe('the original is 300 MiB (314572800 bytes), over MAX_IMAGE_BYTES (200 MiB)')
  })

  test('an original declared larger than the limit is refused before anything is downloaded', async () => {
    const calls: string[] = []
    const storage: Pick<JobStorage, 'download'> = { download: async (bucket, key) => void calls.push(`${bucket}/${key}`) }
    const source = { bucket: 'media', key: 'big', size: limit.maxBytes + 1 }
    const error = await downloadOriginal(storage, source, '/nonexistent', limit).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(JobError)
    expect((error as JobError).message).toBe('the original is 200 MiB (209715201 bytes), over MAX_IMAGE_BYTES (200 MiB)')
    expect(calls).toEqual([])
    await downloadOriginal(storage, { ...source, size: limit.maxBytes }, '/nonexistent', limit)
    expect(calls).toEqual(['media/big'])
  })

  /**
   * An S3 stand-in whose every GET streams zeros, 64 KiB a write, until the client goes away: endlessly (chunked), or
   * up to the `length` it states. node:http, because Bun.serve drops a stated length from a streamed body.
   */
  async function fakeS3(options: { length?: number } = {}) {
    const state = { sent: 0, closed: false }
    const server = createServer((_request, response) => {
      response.once('close', () => (state.closed = true))
      response.writeHead(200, { 'content-type': 'application/octet-stream', ...(options.length ? { 'content-length': String(options.length) } : {}) })
      const chunk = Buffer.alloc(64 * 1024)
      const pump = () => {
        while (!response.destroyed && state.sent < (options.length ?? Infinity)) {
          state.sent += chunk.byteLength
          if (!response.write(chunk)) return void response.once('drain', pump)
        }
      }
      pump()
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    const storage = createStorage({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', accessKeyId: 'id', secretAccessKey: 'secret', timeoutSeconds: 10 })
    return {
      state,
      storage,
      stop: () => {
        storage.destroy()
        server.closeAllConnections()
        server.close()
      },
    }
  }

  test('a download is stopped once more bytes than the limit arrived, whatever the request or S3 said', async () => {
    const s3 = await fakeS3()
    const dir = mkdtempSync(join(tmpdir(), 'media-test-limits-'))
    try {
      const file = join(dir, 'original')
      const small = { maxBytes: 1024 * 1024, variable: 'MAX_VIDEO_BYTES' }
      const started = Date.now()
      // The request claims 10 bytes; the object never ends.
      const error = await downloadOriginal(s3.storage.bind(), { bucket: 'media', key: 'endless', size: 10 }, file, small).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(JobError)
      expect((error as JobError).code).toBe('limit_exceeded')
      expect((error as JobError).message).toMatch(/^the original's download was stopped after \d+ bytes, over MAX_VIDEO_BYTES \(1 MiB\)$/)
      expect(Date.now() - started).toBeLessThan(5_000)
      // Nothing past the limit reached the disk, and the connection was closed, not merely left unread.
      expect(existsSync(file) ? statSync(file).size : 0).toBeLessThanOrEqual(small.maxBytes)
      for (let waited = 0; !s3.state.closed && waited < 2_000; waited += 20) await Bun.sleep(20)
      expect(s3.state.closed).toBe(true)
    } finally {
      s3.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('an object whose length S3 states over the limit is refused before its body is read', async () => {
    const s3 = await fakeS3({ length: 50 * 1024 * 1024 })
    try {
      const error = await s3.storage.bind().download('media', 'big', '/nonexistent/original', { maxBytes: 1024, variable: 'MAX_IMAGE_BYTES' }).catch((e: unknown) => e)
      expect((error as JobError).message).toBe('the original is 50 MiB (52428800 bytes), over MAX_IMAGE_BYTES (1 KiB)')
      for (let waited = 0; !s3.state.closed && waited < 2_000; waited += 20) await Bun.sleep(20)
      expect(s3.state.closed).toBe(true)
      expect(s3.state.sent).toBeLessThan(50 * 1024 * 1024)
    } finally {
      s3.stop()
    }
  })
})
