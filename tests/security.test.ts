/**
 * The hostile-input matrix: one row per input an attacker (or a broken client) sends, with its documented answer
 * (an HTTP refusal, or the job's final state), and after each row a check that every service still serves and that
 * the processor which saw the input kept its memory bounded (its peak RSS, reset before the row through
 * /proc/<pid>/clear_refs). The processors run as child processes so that their RSS is theirs alone. The matrix is
 * written at the end to tests/artifacts/security-matrix.md and to this file's log (printed when a test fails):
 * input, answer, time to answer, peak RSS.
 *
 * Also here: tenants (another tenant's key gets 404 on every route), keys (missing, wrong, revoked), the admin
 * token, and per-key limits (a burst from one key gets 429 while another key is served).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ServiceProcess } from './helpers/service-process.ts'
import { TEST_API_KEY, apiKey } from './helpers/env.ts'
import * as hostile from './helpers/hostile.ts'
import { useInfra } from './helpers/infra.ts'
import { writeReport } from './helpers/logs.ts'
import { testS3 } from './helpers/s3.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'

await useInfra()

const root = join(import.meta.dir, '..')
const MiB = 1024 * 1024
const ADMIN_TOKEN = 'security-test-admin-token-0123456789'
const newKey = (tenant: string) => `mk_${tenant}_${crypto.randomUUID().replaceAll('-', '')}`
const OTHER_KEY = newKey('other')
const otherKey = { authorization: `Bearer ${OTHER_KEY}` }
/** What a processor may use while it refuses or processes any row's input (a bomb decoded would take gigabytes). */
const RSS_BOUND = 400 * MiB

type Processor = 'images' | 'videos'
type Answer =
  | { status: number; code: string }
  | { failed: string; reason: RegExp }
  | { completed: true; check?: (media: MediaBody) => void | Promise<void> }
interface Row {
  input: string
  send: () => Promise<Response>
  answer: Answer
  /** The processor the input reaches, when it is accepted. */
  processor?: Processor
}
interface Ran {
  input: string
  answer: string
  ms: number
  rss: string
}
const ran: Ran[] = []

let stack: Stack
let work: string
let s3: ReturnType<typeof testS3>
const processors = {} as Record<Processor, ServiceProcess>
/** Every request the loopback server received: an SVG or playlist that makes anything fetch shows up here. */
const fetched: string[] = []
const loopback = Bun.serve({
  port: 0,
  fetch(request) {
    fetched.push(request.url)
    return new Response('nothing here', { status: 404 })
  },
})
const loopbackOrigin = `http://127.0.0.1:${loopback.port}`
/** Every response body, to check that none echoes a secret or an internal path. */
const answers: string[] = []

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'security-test-'))
  stack = await startStack({
    images: false,
    env: {
      MAX_UPLOAD_BYTES: '16M',
      UPLOAD_STALL_SECONDS: '2',
      ADMIN_TOKEN,
      API_KEYS: `test:${TEST_API_KEY},other:${OTHER_KEY}`,
      IMAGE_CONCURRENCY: '2',
    },
  })
  s3 = testS3(stack.env)
  for (const type of ['images', 'videos'] as const) {
    processors[type] = new ServiceProcess(
      type,
      ['bun', join(root, 'services', type, 'main.ts')],
      stack.env,
      /consuming/
    )
  }
  await Promise.all(Object.values(processors).map((p) => p.start()))
}, 60_000)

afterAll(async () => {
  await Promise.all(Object.values(processors).map((p) => p.kill('SIGTERM')))
  await stack?.stop()
  s3?.close()
  loopback.stop(true)
  rmSync(work, { recursive: true, force: true })
  const widths = [44, 70, 8, 10]
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`
  writeReport(
    'security-matrix.md',
    [
      'hostile-input matrix',
      '',
      line(['input', 'answer', 'ms', 'peak RSS']),
      line(widths.map((w) => '-'.repeat(w))),
      ...ran.map((r) => line([r.input, r.answer, String(r.ms), r.rss])),
    ].join('\n')
  )
})

// ── Sending ────────────────────────────────────────────────────────────────────────────────────────────────────

const raw =
  (body: Uint8Array | ReadableStream<Uint8Array>, headers: Record<string, string> = {}) =>
  () =>
    stack.fetch('/v1/media', {
      method: 'POST',
      body: body as BodyInit,
      headers: { 'content-type': 'application/octet-stream', ...headers },
    })

/** A multipart upload built byte by byte, so that a file name can hold what FormData would escape (NUL, CR, LF). */
const multipart =
  (body: Uint8Array, filename: string, type = 'application/octet-stream') =>
  () => {
    const boundary = `----matrix${crypto.randomUUID()}`
    const head = new TextEncoder().encode(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: ${type}\r\n\r\n`
    )
    const tail = new TextEncoder().encode(`\r\n--${boundary}--\r\n`)
    const all = new Uint8Array(head.length + body.length + tail.length)
    all.set(head)
    all.set(body, head.length)
    all.set(tail, head.length + body.length)
    return stack.fetch('/v1/media', {
      method: 'POST',
      body: all,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    })
  }

const file = (path: string) => new Uint8Array(readFileSync(path))

/** `size` bytes that start like a PNG, made as they are read; `stallAfter` bytes in, it stops sending for good. */
function pngStream(size: number, stallAfter = Infinity): ReadableStream<Uint8Array> {
  let sent = 0
  return new ReadableStream({
    async pull(controller) {
      if (sent >= stallAfter) return new Promise(() => {})
      if (sent >= size) return controller.close()
      const chunk = new Uint8Array(Math.min(MiB, size - sent))
      if (sent === 0) chunk.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
      sent += chunk.byteLength
      controller.enqueue(chunk)
    },
  })
}

// ── Measuring ──────────────────────────────────────────────────────────────────────────────────────────────────

/** Resets the peak RSS the kernel keeps for the process (VmHWM), so the next reading is this row's. */
function resetPeak(processor: ServiceProcess): void {
  writeFileSync(`/proc/${processor.pid}/clear_refs`, '5')
}
function peakRss(processor: ServiceProcess): number {
  return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${processor.pid}/status`, 'utf8'))![1]) * 1024
}

/** Every service still serves: the API's /health is 200 and both processors run, with no crash. */
async function expectServing(): Promise<void> {
  const health = await fetch(`${stack.url}/health`)
  expect(health.status).toBe(200)
  for (const processor of Object.values(processors)) {
    expect(processor.alive).toBe(true)
    expect(processor.crashes).toEqual([])
  }
}

async function runRow(row: Row): Promise<void> {
  const processor = row.processor ? processors[row.processor] : undefined
  if (processor) resetPeak(processor)
  const started = performance.now()
  const res = await row.send()
  const text = await res.text()
  answers.push(text)
  const body = text ? (JSON.parse(text) as { id?: string; error?: { code: string } }) : {}
  let answer: string
  if ('status' in row.answer) {
    expect({ status: res.status, code: body.error?.code }).toEqual({ status: row.answer.status, code: row.answer.code })
    answer = `${res.status} ${body.error!.code}`
  } else {
    expect(res.status).toBe(202)
    const media = await stack.waitForFinal(body.id!, 60_000)
    answers.push(JSON.stringify(media))
    if ('failed' in row.answer) {
      expect({ status: media.status, code: media.error?.code }).toEqual({ status: 'failed', code: row.answer.failed })
      expect(media.error!.message).toMatch(row.answer.reason)
      answer = `failed ${media.error!.code}: ${media.error!.message}`
    } else {
      expect(media.status).toBe('completed')
      await row.answer.check?.(media)
      answer = `completed: ${media.outputs.map((o) => `${o.name} ${o.width}×${o.height}`).join(', ')}`
    }
  }
  const ms = Math.round(performance.now() - started)
  const rss = processor ? peakRss(processor) : undefined
  ran.push({
    input: row.input,
    answer: answer.slice(0, 140),
    ms,
    rss: rss === undefined ? '—' : `${(rss / MiB).toFixed(0)} MiB (${row.processor})`,
  })
  if (rss !== undefined) expect(rss).toBeLessThan(RSS_BOUND)
  await expectServing()
}

// ── The matrix ─────────────────────────────────────────────────────────────────────────────────────────────────

const refused = (code: string, status = 415): Answer => ({ status, code })

describe('hostile input matrix', () => {
  const rows: Row[] = [
    { input: 'empty file', send: raw(hostile.empty()), answer: refused('empty_body', 400) },
    { input: '1-byte file', send: raw(hostile.oneByte()), answer: refused('unsupported_media_type') },
    { input: 'text file', send: raw(hostile.plainText()), answer: refused('unsupported_media_type') },
    { input: 'zip file', send: raw(hostile.zipFile()), answer: refused('unsupported_media_type') },
    { input: 'PDF file', send: raw(hostile.pdfFile()), answer: refused('unsupported_media_type') },
    {
      input: 'JPEG named .png, declared image/png',
      send: async () => multipart(await hostile.jpegAsPng(), 'photo.png', 'image/png')(),
      answer: {
        completed: true,
        check: (media) => {
          expect(media.metadata?.format).toBe('jpeg')
          expect(media.filename).toBe('photo.png')
        },
      },
      processor: 'images',
    },
    {
      input: 'PNG declared image/jpeg',
      send: async () => raw(await hostile.pngAsJpeg(), { 'content-type': 'image/jpeg' })(),
      answer: { completed: true, check: (media) => expect(media.metadata?.format).toBe('png') },
      processor: 'images',
    },
    {
      input: 'truncated JPEG',
      send: async () => raw(await hostile.truncatedJpeg())(),
      answer: { failed: 'invalid_media', reason: /corrupt or truncated/ },
      processor: 'images',
    },
    {
      input: 'PNG whose header claims 30000×30000',
      send: raw(hostile.hugeDimensionsPng()),
      answer: { failed: 'limit_exceeded', reason: /30000×30000.*MAX_IMAGE_PIXELS/ },
      processor: 'images',
    },
    {
      input: 'decompression bomb (309 KB PNG, 50000×50000)',
      send: raw(hostile.decompressionBombPng()),
      answer: { failed: 'limit_exceeded', reason: /50000×50000.*MAX_IMAGE_PIXELS/ },
      processor: 'images',
    },
    {
      input: 'animated GIF with 3000 frames',
      send: raw(hostile.manyFramesGif()),
      answer: { failed: 'limit_exceeded', reason: /3000 frames.*MAX_IMAGE_FRAMES/ },
      processor: 'images',
    },
    {
      input: '1×65535 PNG',
      send: async () => raw(await hostile.tallPng())(),
      answer: {
        completed: true,
        check: (media) => expect(media.outputs.find((o) => o.name === 'preview')?.height).toBe(1280),
      },
      processor: 'images',
    },
    {
      input: 'JPEG with 1 MB of EXIF and a 3 MB ICC profile',
      send: async () => raw(await hostile.hugeMetadataJpeg())(),
      // The outputs carry none of it: metadata is stripped and the colours converted to sRGB.
      answer: {
        completed: true,
        check: (media) => expect(Math.max(...media.outputs.map((o) => o.size))).toBeLessThan(20_000),
      },
      processor: 'images',
    },
    {
      input: 'SVG referencing a local file',
      send: raw(hostile.svgLocalFile()),
      answer: refused('unsupported_media_type'),
    },
    {
      input: 'SVG referencing a loopback URL',
      send: raw(hostile.svgLoopback(loopbackOrigin)),
      answer: refused('unsupported_media_type'),
    },
    {
      input: 'SVG with external XML entities',
      send: raw(hostile.svgExternalEntity(loopbackOrigin)),
      answer: refused('unsupported_media_type'),
    },
    {
      input: 'HLS playlist posing as MP4',
      send: raw(hostile.hlsPosingAsMp4('/etc/passwd', `${loopbackOrigin}/segment.ts`), {
        'content-type': 'video/mp4',
        'x-filename': 'clip.mp4',
      }),
      answer: refused('unsupported_media_type'),
    },
    {
      input: 'ffconcat list posing as MP4',
      send: raw(hostile.ffconcatPosingAsMp4('/etc/passwd', `${loopbackOrigin}/part.mp4`), {
        'content-type': 'video/mp4',
      }),
      answer: refused('unsupported_media_type'),
    },
    {
      // Only the header's duration fields lie: the probe takes the duration the frames really span (1 s), and
      // ffmpeg reads no further than that (-t) whatever the container claims.
      input: 'MP4 whose header claims 10 hours (frames: 1 s)',
      send: async () => raw(file(await hostile.longDurationMp4(work)))(),
      answer: { completed: true, check: (media) => expect(media.metadata?.durationSeconds).toBeLessThan(2) },
      processor: 'videos',
    },
    {
      input: 'MP4 whose last frame is at 10 hours',
      send: async () => raw(file(await hostile.longDurationMp4(work, { lastFrame: true })))(),
      answer: { failed: 'limit_exceeded', reason: /36000 s.*MAX_VIDEO_SECONDS/ },
      processor: 'videos',
    },
    {
      input: 'truncated MP4 (cut in half)',
      send: async () => {
        const whole = file(await hostile.longDurationMp4(work))
        return raw(whole.subarray(0, whole.length >> 1))()
      },
      answer: { failed: 'invalid_media', reason: /not a readable MP4 file/ },
      processor: 'videos',
    },
    {
      input: '8192×8192 video',
      send: async () => raw(file(await hostile.hugeFrameVideo(work)))(),
      answer: { failed: 'limit_exceeded', reason: /8192×8192.*MAX_VIDEO_PIXELS/ },
      processor: 'videos',
    },
    {
      input: 'video with 50 streams',
      send: async () => raw(file(await hostile.manyStreamsVideo(work)))(),
      answer: { failed: 'limit_exceeded', reason: /50 streams.*MAX_VIDEO_STREAMS/ },
      processor: 'videos',
    },
  ]
  for (const row of rows) test(row.input, () => runRow(row), 90_000)

  // ── Names: kept as sanitised metadata, never part of a key ─────────────────────────────────────────────────
  const names: [string, string, string | null][] = [
    ['file name with path traversal', hostile.traversalName, 'passwd'],
    ['file name with Windows path traversal', hostile.windowsTraversalName, 'win.ini'],
    ['file name of 10 KB of Unicode', hostile.longUnicodeName, null],
  ]
  for (const [input, name, kept] of names) {
    test(input, async () => {
      const png = await hostile.pngAsJpeg()
      await runRow({
        input,
        send: multipart(png, name),
        answer: {
          completed: true,
          async check(media) {
            if (kept !== null) expect(media.filename).toBe(kept)
            expect(media.filename ?? '').not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069/\\]/)
            expect(Array.from(media.filename ?? '').length).toBeLessThanOrEqual(255)
            // Keys derive from ids alone: the original and the outputs, nothing else.
            const keys = [
              ...(await s3.keys(`${stack.env.SYSTEM}/originals/${media.id}`)),
              ...(await s3.keys(`${stack.env.SYSTEM}/outputs/${media.jobId}/`)),
            ]
            expect(keys).toEqual([
              `${stack.env.SYSTEM}/originals/${media.id}`,
              ...['preview', 'thumb'].map((n) => `${stack.env.SYSTEM}/outputs/${media.jobId}/${n}.webp`),
            ])
          },
        },
        processor: 'images',
      })
    }, 60_000)
  }
  // A part header may not hold control bytes (RFC 7578): busboy refuses the body as malformed, which is the answer.
  test('file name with NUL and control bytes in a multipart header: 400', async () => {
    const name = hostile.controlCharName.replace(/[\r\n]/g, '')
    await runRow({
      input: 'file name with NUL and control bytes (multipart)',
      send: multipart(await hostile.pngAsJpeg(), name),
      answer: refused('bad_multipart', 400),
    })
  })
  test('file name with CR/LF (a header injection) in a multipart header: 400', async () => {
    await runRow({
      input: 'file name with CR/LF (multipart header injection)',
      send: multipart(await hostile.pngAsJpeg(), hostile.controlCharName),
      answer: refused('bad_multipart', 400),
    })
  })
  test('file name in X-Filename (percent-encoded NUL, controls and RTL override)', async () => {
    await runRow({
      input: 'X-Filename with NUL, controls and RTL override',
      send: async () =>
        raw(await hostile.pngAsJpeg(), { 'x-filename': encodeURIComponent(`a\u0000b\u001b[2J\u202Egpj.exe`) })(),
      answer: { completed: true, check: (media) => expect(media.filename).toBe('ab[2Jgpj.exe') },
      processor: 'images',
    })
  }, 60_000)

  // ── Bodies: over the limit, or too slow ────────────────────────────────────────────────────────────────────
  const leftovers = async () => [
    ...(await s3.keys(`${stack.env.SYSTEM}/originals/`)),
    ...(await s3.openUploads(`${stack.env.SYSTEM}/originals/`)),
  ]

  test('a body over the limit is cut while streaming; nothing stays in S3', async () => {
    const before = await s3.keys(`${stack.env.SYSTEM}/originals/`)
    await runRow({
      input: 'body over MAX_UPLOAD_BYTES (24 MiB streamed)',
      send: raw(pngStream(24 * MiB)),
      answer: refused('payload_too_large', 413),
    })
    expect(await leftovers()).toEqual(before)
  }, 60_000)

  test('a stalled upload is cut by the timeout; its multipart upload is aborted', async () => {
    const before = await s3.keys(`${stack.env.SYSTEM}/originals/`)
    // 6 MiB first: past lib-storage's first 5 MiB part, so an S3 multipart upload is open when the client stalls.
    await runRow({
      input: 'upload that stalls after 6 MiB (slowloris)',
      send: raw(pngStream(12 * MiB, 6 * MiB)),
      answer: refused('upload_timeout', 408),
    })
    expect(await leftovers()).toEqual(before)
  }, 60_000)

  test('nothing was fetched from the loopback server by any input', () => {
    expect(fetched).toEqual([])
  })
})

// ── Tenants and keys ───────────────────────────────────────────────────────────────────────────────────────────

describe('tenants and keys', () => {
  test('another tenant gets 404 for the media, its outputs, its events, cancel and delete; the owner still has it', async () => {
    const res = await stack.upload(await hostile.pngAsJpeg())
    const { id } = (await res.json()) as { id: string }
    const media = await stack.waitForFinal(id)
    expect(media.status).toBe('completed')
    const routes: [string, string, string][] = [
      ['cross-tenant GET', 'GET', `/v1/media/${id}`],
      ['cross-tenant output', 'GET', `/v1/media/${id}/outputs/thumb`],
      ['cross-tenant events (SSE)', 'GET', `/v1/media/${id}/events`],
      ['cross-tenant cancel', 'POST', `/v1/media/${id}/cancel`],
      ['cross-tenant delete', 'DELETE', `/v1/media/${id}`],
    ]
    for (const [input, method, path] of routes) {
      await runRow({
        input,
        send: () => stack.fetch(path, { method, headers: otherKey }),
        answer: refused('not_found', 404),
      })
    }
    const thumb = await fetch(media.outputs.find((o) => o.name === 'thumb')!.url, { headers: apiKey })
    expect(thumb.status).toBe(200)
    expect((await thumb.arrayBuffer()).byteLength).toBe(media.outputs.find((o) => o.name === 'thumb')!.size)
  }, 60_000)

  test('a missing, wrong or revoked key gets 401 with WWW-Authenticate; an admin route without its token gets 401', async () => {
    const created = await fetch(`${stack.url}/v1/admin/keys`, {
      method: 'POST',
      body: JSON.stringify({ tenant: 'short-lived' }),
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    })
    const { id, key } = (await created.json()) as { id: string; key: string }
    expect(
      (await stack.fetch(`/v1/media/${crypto.randomUUID()}`, { headers: { authorization: `Bearer ${key}` } })).status
    ).toBe(404)
    expect(
      (
        await fetch(`${stack.url}/v1/admin/keys/${id}`, {
          method: 'DELETE',
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        })
      ).status
    ).toBe(200)

    const cases: [string, Record<string, string>][] = [
      ['no key', { authorization: '' }],
      ['wrong key', { authorization: `Bearer ${TEST_API_KEY}x` }],
      ['revoked key', { authorization: `Bearer ${key}` }],
    ]
    for (const [input, headers] of cases) {
      await runRow({
        input,
        send: async () => {
          const res = await stack.fetch(`/v1/media/${crypto.randomUUID()}`, { headers })
          expect(res.headers.get('www-authenticate')).toStartWith('Bearer')
          return res
        },
        answer: refused('unauthorized', 401),
      })
    }
    await runRow({
      input: 'admin route without its token',
      send: () => fetch(`${stack.url}/v1/admin/dead-letters`, { headers: apiKey }),
      answer: refused('unauthorized', 401),
    })
  })

  test('error bodies never echo a key, a secret or an internal path', () => {
    const all = answers.join('\n')
    // The endpoint with its slash: S3 URLs would hold it so (the API's own URLs share the host, not the port).
    for (const secret of [
      TEST_API_KEY,
      OTHER_KEY,
      ADMIN_TOKEN,
      stack.env.S3_SECRET_ACCESS_KEY!,
      stack.env.DATA_DIR!,
      `${stack.env.S3_ENDPOINT}/`,
      work,
      tmpdir() + '/',
    ]) {
      expect(all).not.toContain(secret)
    }
  })
})

describe('per-key limits', () => {
  // A key per purpose, so that each count starts from nothing.
  const BURST_KEY = newKey('burst')
  const SLOW_KEY = newKey('slow')
  const slowKey = { authorization: `Bearer ${SLOW_KEY}` }
  let limited: Stack
  beforeAll(async () => {
    limited = await startStack({
      images: false,
      env: {
        RATE_LIMIT_PER_MINUTE: '20',
        MAX_CONCURRENT_UPLOADS: '1',
        UPLOAD_STALL_SECONDS: '3',
        API_KEYS: `test:${TEST_API_KEY},other:${OTHER_KEY},burst:${BURST_KEY},slow:${SLOW_KEY}`,
      },
    })
  })
  afterAll(() => limited.stop())

  test('a burst from one key gets 429 with Retry-After while another key is served', async () => {
    const burstKey = { authorization: `Bearer ${BURST_KEY}` }
    const burst = await Promise.all(
      Array.from({ length: 30 }, () => limited.fetch(`/v1/media/${crypto.randomUUID()}`, { headers: burstKey }))
    )
    const statuses = burst.map((r) => r.status)
    expect(statuses.filter((s) => s === 404)).toHaveLength(20)
    expect(statuses.filter((s) => s === 429)).toHaveLength(10)
    const throttled = burst.find((r) => r.status === 429)!
    expect(Number(throttled.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(((await throttled.json()) as { error: { code: string } }).error.code).toBe('rate_limited')
    const started = performance.now()
    const served = await limited.fetch(`/v1/media/${crypto.randomUUID()}`, { headers: otherKey })
    expect(served.status).toBe(404) // authenticated and answered, not throttled
    ran.push({
      input: 'burst of 30 from one key (limit 20/min)',
      answer: `20 × 404, 10 × 429 rate_limited; the other key: ${served.status}`,
      ms: Math.round(performance.now() - started),
      rss: '—',
    })
  })

  test('a second upload in flight from one key gets 429 while another key uploads', async () => {
    const slow = limited
      .fetch('/v1/media', { method: 'POST', body: pngStream(2 * MiB, MiB), headers: slowKey })
      .catch(() => null)
    // The first upload holds its slot once the API has read its head; the other key's slot is separate.
    let second: Response
    const deadline = Date.now() + 10_000
    do {
      second = await limited.fetch('/v1/media', { method: 'POST', body: await hostile.pngAsJpeg(), headers: slowKey })
    } while (second.status !== 429 && Date.now() < deadline)
    expect(second.status).toBe(429)
    expect(second.headers.get('retry-after')).toBe('1')
    expect(((await second.json()) as { error: { code: string } }).error.code).toBe('too_many_uploads')
    const mine = await limited.upload(await hostile.pngAsJpeg())
    expect(mine.status).toBe(202)
    ran.push({
      input: 'second upload in flight (limit 1 per key)',
      answer: '429 too_many_uploads; the other key: 202',
      ms: 0,
      rss: '—',
    })
    await slow
  }, 30_000)
})
