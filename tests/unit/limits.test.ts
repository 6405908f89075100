/**
 * The processors' limits before decoding, apart from the broker and S3: the pure checks on an image header and a
 * video probe, GIF frames counted from disk, and the variables' defaults. (The cap on a download's stream is tested
 * against S3 in images.test.ts.)
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { JobError, byteLimitFailure, formatBytes } from '@app/shared/processor'
import { countGifFrames, imageLimitFailure, readConfig as readImagesConfig } from '../../services/images/main.ts'
import { createFastS3 } from '../../shared/processor/fast-s3.ts'
import { manyFramesGif } from '../helpers/hostile.ts'
import { readConfig as readVideosConfig, videoLimitFailure } from '../../services/videos/main.ts'

const CREDENTIALS = { S3_ACCESS_KEY_ID: 'id', S3_SECRET_ACCESS_KEY: 'secret' }
const refusal = (error: JobError | null) =>
  error ? { code: error.code, class: error.class, message: error.message } : null

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
    expect(() => readImagesConfig({ ...CREDENTIALS, MAX_IMAGE_BYTES: 'lots', MAX_IMAGE_FRAMES: '0' })).toThrow(
      /MAX_IMAGE_FRAMES[^\n]*\n[^\n]*MAX_IMAGE_BYTES|MAX_IMAGE_BYTES[^\n]*\n[^\n]*MAX_IMAGE_FRAMES/
    )
    expect(() => readVideosConfig({ ...CREDENTIALS, MAX_VIDEO_FRAME_RATE: '24.5' })).toThrow(
      /MAX_VIDEO_FRAME_RATE: must be a whole number/
    )
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
    expect(imageLimitFailure({ width: 64, height: 48 }, { ...limits, maxPixels: 1000 })?.message).toBe(
      'the image is 64×48 (3072 pixels), over MAX_IMAGE_PIXELS (1000 pixels)'
    )
  })

  test('too many frames, however small: MAX_IMAGE_FRAMES', () => {
    expect(imageLimitFailure({ width: 1, height: 1, pages: 1500 }, limits)?.message).toBe(
      'the image has 1500 frames, over MAX_IMAGE_FRAMES (1000)'
    )
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
    expect(imageLimitFailure(stacked, limits)?.message).toMatch(
      /900 frames of 1000×1000 make 900 MP, over MAX_IMAGE_TOTAL_PIXELS/
    )
  })
})

describe('countGifFrames', () => {
  test("counts a GIF's frames from disk, stops at a truncation, and says null for anything else", () => {
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
      writeFileSync(
        join(dir, 'logo.svg'),
        '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><image href="file:///etc/passwd"/></svg>'
      )
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
      const child = Bun.spawn(['bun', '-e', script], {
        cwd: join(import.meta.dir, '../..'),
        stdout: 'pipe',
        stderr: 'inherit',
      })
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
      [
        { width: 7680, height: 4320 },
        'the video is 7680×4320 (33177600 pixels), over MAX_VIDEO_PIXELS (8847360 pixels)',
      ],
      [{ frameRate: 1000 }, 'the video runs at 1000 fps, over MAX_VIDEO_FRAME_RATE (240 fps)'],
      [{ frameRate: 2000 / 3 }, 'the video runs at 666.667 fps, over MAX_VIDEO_FRAME_RATE (240 fps)'],
      [{ durationSeconds: 36000.033 }, 'the video lasts 36000 s, over MAX_VIDEO_SECONDS (3600 s)'],
    ]
    for (const [change, message] of cases)
      expect(refusal(videoLimitFailure({ ...clip, ...change }, limits))).toEqual({
        code: 'limit_exceeded',
        class: 'input',
        message,
      })
  })

  test('an unknown frame rate (0) is not refused', () => {
    expect(videoLimitFailure({ ...clip, frameRate: 0 }, limits)).toBeNull()
  })
})

describe('the byte limit', () => {
  const limit = { maxBytes: 200 * 1024 ** 2, variable: 'MAX_IMAGE_BYTES' }

  test('sizes are shown in the units the variables take', () => {
    expect([
      formatBytes(900),
      formatBytes(64 * 1024),
      formatBytes(1.5 * 1024 ** 3),
      formatBytes(200 * 1024 ** 2),
    ]).toEqual(['900 bytes', '64 KiB', '1.5 GiB', '200 MiB'])
    expect(byteLimitFailure(314572800, limit).message).toBe(
      'the original is 300 MiB (314572800 bytes), over MAX_IMAGE_BYTES (200 MiB)'
    )
  })

  // The rest of the byte limit (refused by the declared size before any download, or by the length S3 states) is
  // tested against the real S3 server in tests/images.test.ts and tests/videos.test.ts. What no honest store can
  // show is a body longer than it said: the cap on the stream itself, tested here against a store whose every
  // object is an endless stream that states no length.
  test('the stream cap fails a download one chunk past the limit and stops reading its source', async () => {
    let sent = 0
    const store = Bun.serve({
      port: 0,
      fetch: (request) =>
        request.method === 'HEAD'
          ? new Response(null, { status: 200 })
          : new Response(
              new ReadableStream({
                pull: (controller) => ((sent += 64 * 1024), controller.enqueue(new Uint8Array(64 * 1024))),
              })
            ),
    })
    const dir = mkdtempSync(join(tmpdir(), 'cap-'))
    try {
      const reads = createFastS3(
        {
          endpoint: `http://127.0.0.1:${store.port}`,
          region: 'us-east-1',
          accessKeyId: 'id',
          secretAccessKey: 'secret',
        },
        10_000
      )
      const small = { maxBytes: 1024 * 1024, variable: 'MAX_VIDEO_BYTES' }
      const error = await reads
        .download('bucket', 'endless', join(dir, 'original'), { limit: small })
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(JobError)
      expect((error as JobError).message).toMatch(
        /^the original's download was stopped after \d+ bytes, over MAX_VIDEO_BYTES \(1 MiB\)$/
      )
      expect(statSync(join(dir, 'original')).size).toBeLessThanOrEqual(small.maxBytes)
      expect(sent).toBeLessThan(64 * 1024 ** 2) // some read-ahead past the limit, never the whole stream
    } finally {
      store.stop(true)
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
