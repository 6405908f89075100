/**
 * The web console in a real browser: Debian's Chromium, driven by playwright-core, against the whole system (the API,
 * both processors, RabbitMQ, and the embedded store `bun run start` runs). One person's afternoon, in order: sign in;
 * upload an image and a video and watch them complete; see the thumbnail at its real size and the video play; upload
 * a long video over a connection that breaks (it resumes) and cancel it; see a corrupt file fail with its reason;
 * operate (health, queues, a dead letter re-driven); and, signed in as another tenant, see none of it. The page must
 * make no request to anywhere else and break no rule of its Content-Security-Policy. Then, on a second system with
 * the audio processor: an upload over tus, one that resumes after a broken connection, many at once followed over one
 * event stream, presets, a song, and a dropped file.
 *
 * Screenshots of each view are written to tests/artifacts/console/ (ARTIFACTS_DIR to change it).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Browser, type BrowserContext, type Page, type Request } from 'playwright-core'
import sharp from 'sharp'
import { MEDIA_TYPES, queueNames } from '@app/shared'
import { issueKey } from '../services/api/auth/keys.ts'
import { TEST_API_KEY } from './helpers/env.ts'
import { paddedPng, quadrants } from './helpers/image-fixtures.ts'
import { useInfra } from './helpers/infra.ts'
import { makeSong } from './helpers/audio-fixtures.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'
import { makeClip } from './helpers/video-fixtures.ts'

await useInfra()

const CHROMIUM = '/usr/bin/chromium'
const ADMIN_TOKEN = 'console-test-admin-token-0123456789'
const ARTIFACTS = process.env.ARTIFACTS_DIR ?? join(import.meta.dir, 'artifacts', 'console')
const MiB = 1024 * 1024
const dir = mkdtempSync(join(tmpdir(), 'media-console-'))
mkdirSync(ARTIFACTS, { recursive: true })
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** The files the browser uploads, made here: a photo, an 8 s video, a long one over 16 MiB (two tus chunks), a corrupt JPEG. */
async function makeFiles() {
  const photo = join(dir, 'harbour.jpg')
  writeFileSync(
    photo,
    await sharp(await quadrants(1600, 1200))
      .jpeg()
      .toBuffer()
  )
  const clip = await makeClip(dir, 'waves.mp4', '640x360', 8)
  const long = join(dir, 'long-take.mp4')
  // Noise at a fixed bitrate: ~24 MB whatever the encoder makes of the picture.
  const ffmpeg = Bun.spawn([
    'ffmpeg',
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=1280x720:rate=30:duration=32',
    '-vf',
    'noise=alls=20:allf=t',
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-b:v',
    '6M',
    '-maxrate',
    '6M',
    '-bufsize',
    '12M',
    '-pix_fmt',
    'yuv420p',
    long,
  ])
  if ((await ffmpeg.exited) !== 0) throw new Error('ffmpeg could not make the long video')
  const corrupt = join(dir, 'broken.jpg')
  writeFileSync(corrupt, new Uint8Array([0xff, 0xd8, 0xff, 0xe0, ...crypto.getRandomValues(new Uint8Array(4096))]))
  return { photo, clip, long, corrupt }
}

/** A browser context that may reach the API only: any other request is refused and remembered. */
async function openContext(browser: Browser, origin: string, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport })
  const elsewhere: string[] = []
  await context.route(
    (url) => url.origin !== origin && !['blob:', 'data:'].includes(url.protocol),
    (route) => {
      elsewhere.push(route.request().url())
      return route.abort('blockedbyclient')
    }
  )
  context.setDefaultTimeout(10_000)
  const page = await context.newPage()
  const problems: string[] = []
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content[- ]Security[- ]Policy|Refused to/i.test(message.text()))
      problems.push(message.text())
  })
  page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`))
  page.on('dialog', (dialog) => void dialog.accept())
  return { context, page, elsewhere, problems }
}

/** Runs `check` until it passes, or fails with its last error after `timeoutMs`. */
async function eventually(check: () => Promise<unknown>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return void (await check())
    } catch (error) {
      if (Date.now() > deadline) throw error
      await Bun.sleep(100)
    }
  }
}

const shot = (page: Page, name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })

async function signIn(page: Page, key: string) {
  await page.getByLabel('API key').fill(key)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('heading', { name: 'Media', level: 1 }).waitFor()
}

/** The upload item of a file, in the upload list. */
const uploadItem = (page: Page, name: string) =>
  page.locator('.uploads li', { has: page.locator('.name', { hasText: name }) })

/** The natural size of the image `selector` once loaded. */
async function naturalSize(page: Page, selector: string) {
  const image = page.locator(selector)
  await eventually(
    async () =>
      expect(await image.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 0)).toBe(true),
    15_000
  )
  return image.evaluate((img: HTMLImageElement) => [img.naturalWidth, img.naturalHeight])
}

/** Cuts off the page's second tus PATCH (after the first 16 MiB); resolves with the tus requests as they go. */
async function breakSecondPatch(page: Page) {
  const sent: { method: string; offset: string | null }[] = []
  let patches = 0
  await page.route('**/v1/uploads/*', (route) => {
    const request = route.request()
    sent.push({ method: request.method(), offset: request.headers()['upload-offset'] ?? null })
    if (request.method() === 'PATCH' && ++patches === 2) return route.abort('connectionreset')
    return route.continue()
  })
  return sent
}

/** After the broken PATCH, tus asked where the server stopped (HEAD) and went on from 16 MiB. */
function expectResumedAt16MiB(sent: { method: string; offset: string | null }[]) {
  const broken = sent.findIndex(
    (s, i) => s.method === 'PATCH' && sent.slice(0, i + 1).filter((x) => x.method === 'PATCH').length === 2
  )
  const after = sent.slice(broken + 1)
  expect(after[0]?.method).toBe('HEAD')
  expect(after.find((s) => s.method === 'PATCH')?.offset).toBe(String(16 * MiB))
}

describe('the console, on the default system (the embedded store)', () => {
  let stack: Stack
  let browser: Browser
  let context: BrowserContext
  let page: Page
  let elsewhere: string[]
  let problems: string[]
  let files: Awaited<ReturnType<typeof makeFiles>>
  const media: Record<string, MediaBody> = {}
  const byName = async (name: string) => {
    const res = await stack.fetch('/v1/media?limit=100')
    const list = (await res.json()) as { media: MediaBody[] }
    return list.media.find((m) => m.filename === name)!
  }

  beforeAll(async () => {
    ;[files, browser] = await Promise.all([
      makeFiles(),
      chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }),
    ])
    stack = await startStack({
      videos: true,
      env: { ADMIN_TOKEN, MAX_UPLOAD_BYTES: '64M', VIDEO_CONCURRENCY: '1' },
    })
    // Videos get two small rungs here: enough to switch between, quick to make.
    const preset = { kind: 'video', renditions: [180, 360], poster: { width: 640, height: 640 } }
    for (const [path, body] of [
      ['/v1/presets/two-rungs', preset],
      ['/v1/presets/defaults', { video: ['two-rungs'] }],
    ] as const) {
      const res = await stack.fetch(path, {
        method: 'PUT',
        headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
      if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`)
    }
    ;({ context, page, elsewhere, problems } = await openContext(browser, stack.url))
  }, 90_000)
  afterAll(async () => {
    await context?.close()
    await browser?.close()
    await stack?.stop()
  })

  test('the page is served with a strict Content-Security-Policy, and asks for a key', async () => {
    const res = await page.goto(`${stack.url}/`)
    const csp = res!.headers()['content-security-policy']!
    expect(csp).toContain("default-src 'none'")
    expect(csp).toContain("script-src 'self'")
    expect(csp).toContain("frame-ancestors 'none'")
    expect(csp).not.toContain('unsafe-inline')
    expect(csp).not.toContain('unsafe-eval')
    await page.getByRole('heading', { name: 'Sign in' }).waitFor()
    await page.getByLabel('API key').fill('mk_not_a_key')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await eventually(async () => expect(await page.getByRole('alert').first().textContent()).toContain('not accepted'))
    await shot(page, '1-sign-in')
    await signIn(page, TEST_API_KEY)
    expect(await page.evaluate(() => sessionStorage.length)).toBe(1)
  })

  test('an image and a video, picked together, upload and complete with their progress moving', async () => {
    // Every line each upload shows, in order, as the page draws it.
    await page.evaluate(() => {
      const seen: Record<string, string[]> = {}
      ;(window as unknown as { seen: typeof seen }).seen = seen
      new MutationObserver(() => {
        for (const item of Array.from(document.querySelectorAll('.uploads li'))) {
          const name = item.querySelector('.name')!.textContent!
          const line = item.querySelector('.line')!.textContent!
          const lines = (seen[name] ??= [])
          if (lines.at(-1) !== line) lines.push(line)
        }
      }).observe(document.querySelector('.uploads')!, { subtree: true, childList: true, characterData: true })
    })
    await page.locator('#files').setInputFiles([files.photo, files.clip])
    for (const name of ['harbour.jpg', 'waves.mp4']) {
      await eventually(
        async () => expect(await uploadItem(page, name).locator('.badge').textContent()).toBe('completed'),
        60_000
      )
    }
    const seen = await page.evaluate(() => (window as unknown as { seen: Record<string, string[]> }).seen)
    for (const name of ['harbour.jpg', 'waves.mp4']) {
      const lines = seen[name]!
      expect(lines.some((l) => /^Uploading \(resumable\)/.test(l))).toBe(true)
      expect(lines.at(-1)).toBe('Completed')
    }
    // The video's job reports its progress as it goes: several percentages between 0 and 100, growing.
    const percents = seen['waves.mp4']!.map((l) => /^Processing(?: \(\w+\))? · (\d+) %/.exec(l)?.[1])
      .filter(Boolean)
      .map(Number)
    expect(percents.length).toBeGreaterThanOrEqual(2)
    expect(percents.some((p) => p > 0 && p < 100)).toBe(true)
    expect(percents).toEqual([...percents].sort((a, b) => a - b))
    media.photo = await byName('harbour.jpg')
    media.clip = await byName('waves.mp4')
    expect([media.photo.status, media.clip.status]).toEqual(['completed', 'completed'])
    await shot(page, '2-uploads')
  }, 90_000)

  test('the library shows both with their thumbnails at their real size, filters by kind', async () => {
    const card = (id: string) => `.grid li[data-id="${id}"]`
    // The photo is 1600×1200: its thumb fits 320×320.
    expect(await naturalSize(page, `${card(media.photo!.id)} img`)).toEqual([320, 240])
    const poster = media.clip!.outputs.find((o) => o.name === 'poster')!
    expect(await naturalSize(page, `${card(media.clip!.id)} img`)).toEqual([poster.width, poster.height])
    await shot(page, '3-library')
    await page.getByLabel('Kind').selectOption('video')
    await eventually(async () => expect(await page.locator('.grid li[data-id]').count()).toBe(1))
    expect(await page.locator(card(media.clip!.id)).count()).toBe(1)
    await page.getByLabel('Kind').selectOption('')
    await eventually(async () => expect(await page.locator('.grid li[data-id]').count()).toBe(2))
  })

  test('a photo opens on its preview, with its metadata', async () => {
    await page.locator(`.grid li[data-id="${media.photo!.id}"] a`).click()
    await page.getByRole('heading', { name: 'harbour.jpg', level: 1 }).waitFor()
    expect(await naturalSize(page, '.stage img')).toEqual([1280, 960])
    const metadata = page.locator('section', { has: page.getByRole('heading', { name: 'Metadata' }) })
    expect(await metadata.textContent()).toContain('1600')
    expect(await page.locator('table tbody tr').count()).toBe(media.photo!.outputs.length)
    await shot(page, '4-image')
    // Download saves the output under the original's name.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download thumb' }).click(),
    ])
    expect(download.suggestedFilename()).toBe('harbour-thumb.webp')
    const thumb = media.photo!.outputs.find((o) => o.name === 'thumb')!
    expect(Bun.file((await download.path())!).size).toBe(thumb.size)
  })

  test('a video streams through hls.js from signed links: plays to its end, switches rungs, previews the seek bar', async () => {
    const links: { url: string; status: number }[] = []
    const onResponse = (res: { url(): string; status(): number }) => {
      if (res.url().includes('/v1/links/')) links.push({ url: res.url(), status: res.status() })
    }
    page.on('response', onResponse)
    await page.goto(`${stack.url}/#/media/${media.clip!.id}`)
    await page.getByRole('heading', { name: 'waves.mp4', level: 1 }).waitFor()
    const player = page.locator('figure.player')
    const video = player.locator('video')
    await eventually(async () => expect(await player.getAttribute('data-engine')).toBe('hls.js'), 15_000)
    await eventually(
      async () => expect(await video.evaluate((v: HTMLVideoElement) => v.readyState)).toBeGreaterThanOrEqual(2),
      15_000
    )
    // hls.js plays through a MediaSource; everything it fetched came through the links, segments by range.
    expect(await video.evaluate((v: HTMLVideoElement) => v.currentSrc)).toStartWith('blob:')
    const quality = page.getByLabel('Quality')
    expect(await quality.locator('option').allTextContents()).toEqual([
      'Auto',
      expect.stringMatching(/^180p · /),
      expect.stringMatching(/^360p · /),
    ])
    await video.evaluate((v: HTMLVideoElement) => {
      ;(window as unknown as { errors: number }).errors = 0
      v.addEventListener('error', () => (window as unknown as { errors: number }).errors++)
      v.muted = true
      return v.play()
    })
    // A rung chosen by hand: the picture changes to it.
    await quality.selectOption({ label: (await quality.locator('option').nth(1).textContent())! })
    await eventually(async () => expect(await player.getAttribute('data-level')).toBe('180'), 15_000)
    await eventually(async () => expect(await video.evaluate((v: HTMLVideoElement) => v.videoHeight)).toBe(180), 15_000)
    await quality.selectOption('auto')
    // Near the end, then to the end, with no error on the way.
    await video.evaluate((v: HTMLVideoElement) => (v.currentTime = 5))
    await eventually(async () => expect(await video.evaluate((v: HTMLVideoElement) => v.ended)).toBe(true), 20_000)
    expect(await page.evaluate(() => (window as unknown as { errors: number }).errors)).toBe(0)
    expect(links.some((l) => l.url.includes('-media.m4s?') && l.status === 206)).toBe(true)
    expect(links.filter((l) => l.status >= 400)).toEqual([])

    // The seek bar shows the storyboard's frame for the time under the pointer.
    const seek = page.getByLabel('Seek')
    const box = (await seek.boundingBox())!
    await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2)
    const preview = page.locator('.scrub-preview')
    await eventually(async () => expect(await preview.isVisible()).toBe(true))
    expect(await preview.locator('.scrub-frame').evaluate((e) => (e as HTMLElement).style.backgroundImage)).toContain(
      `/v1/links/${media.clip!.id}/storyboard-sprite.jpg?`
    )
    expect(await preview.textContent()).toBe('0:04')
    await eventually(async () =>
      expect(links.some((l) => l.url.includes('/storyboard-sprite.jpg?') && l.status === 200)).toBe(true)
    )
    await shot(page, '5-video')

    // A changed token is refused, from the page as from anywhere.
    const master = links.find((l) => /\/hls\.m3u8\?/.test(l.url))!.url
    const tampered = master.replace(/signature=(.)/, (_, c: string) => `signature=${c === 'A' ? 'B' : 'A'}`)
    expect(await page.evaluate(async (url) => (await fetch(url)).status, tampered)).toBe(403)
    page.off('response', onResponse)
  }, 60_000)

  test('without Media Source Extensions the browser plays the stream itself, to its end', async () => {
    const native = await openContext(browser, stack.url)
    // As on an iPhone: no MediaSource, so no hls.js; the browser's own HLS player instead.
    await native.context.addInitScript(() => {
      const w = window as unknown as Record<string, unknown>
      delete w.MediaSource
      delete w.ManagedMediaSource
      delete w.WebKitMediaSource
    })
    await native.page.goto(`${stack.url}/`)
    await signIn(native.page, TEST_API_KEY)
    await native.page.goto(`${stack.url}/#/media/${media.clip!.id}`)
    const player = native.page.locator('figure.player')
    await eventually(async () => expect(await player.getAttribute('data-engine')).toBe('native'), 15_000)
    const video = player.locator('video')
    expect(await video.evaluate((v: HTMLVideoElement) => v.currentSrc)).toMatch(
      new RegExp(`^${stack.url}/v1/links/${media.clip!.id}/hls\\.m3u8\\?expires=`)
    )
    const ended = await video.evaluate(
      (v: HTMLVideoElement) =>
        new Promise<string>((resolve) => {
          v.addEventListener('error', () => resolve(`error ${v.error?.code}: ${v.error?.message}`))
          v.addEventListener('ended', () => resolve('ended'))
          v.muted = true
          v.currentTime = 4
          void v.play().catch((error: Error) => resolve(`play: ${error.message}`))
        })
    )
    expect(ended).toBe('ended')
    expect(native.elsewhere).toEqual([])
    expect(native.problems).toEqual([])
    await native.context.close()
  }, 60_000)

  test('a long video resumes after its connection breaks mid-upload, and is cancelled while processing', async () => {
    await page.goto(`${stack.url}/#/media`)
    await page.getByRole('heading', { name: 'Media', level: 1 }).waitFor()
    // The second PATCH (after the first 16 MiB) is cut off; tus asks the server where it stopped and goes on from there.
    const sent = await breakSecondPatch(page)
    await page.locator('#files').setInputFiles(files.long)
    const item = uploadItem(page, 'long-take.mp4')
    await eventually(async () => expect(await item.locator('.badge').textContent()).toBe('processing'), 60_000)
    await page.unroute('**/v1/uploads/*')
    expectResumedAt16MiB(sent)
    const long = await byName('long-take.mp4')
    expect(long.size).toBe(Bun.file(files.long).size)

    await item.locator('.name').click()
    await page.getByRole('heading', { name: 'long-take.mp4', level: 1 }).waitFor()
    // Cancelled while ffmpeg is at work on it: its progress has moved.
    await eventually(
      async () =>
        expect(await page.locator('.live progress').evaluate((bar: HTMLProgressElement) => bar.value)).toBeGreaterThan(
          0
        ),
      30_000
    )
    await shot(page, '6-processing')
    await page.getByRole('button', { name: 'Cancel processing' }).click()
    await eventually(
      async () => expect(await page.locator('.status-line .badge').textContent()).toBe('cancelled'),
      15_000
    )
    expect((await stack.waitForFinal(long.id)).status).toBe('cancelled')
  }, 120_000)

  test('an upload cut off by a closed tab resumes when the same file is picked again in a new one', async () => {
    const again = join(dir, 'second-take.mp4')
    writeFileSync(again, await Bun.file(files.long).bytes())
    const first = await context.newPage()
    // A new tab has no key (sessionStorage is the tab's): sign in again.
    await first.goto(`${stack.url}/#/media`)
    await signIn(first, TEST_API_KEY)
    // The tab closes as its second PATCH leaves: the server has the first 16 MiB.
    let patches = 0
    await first.route('**/v1/uploads/*', (route) => {
      if (route.request().method() === 'PATCH' && ++patches === 2) return void first.close()
      return route.continue()
    })
    await first.locator('#files').setInputFiles(again)
    await eventually(async () => expect(first.isClosed()).toBe(true), 30_000)

    const second = await context.newPage()
    const sent: string[] = []
    second.on('request', (request: Request) => {
      if (request.url().includes('/v1/uploads'))
        sent.push(`${request.method()} ${request.headers()['upload-offset'] ?? ''}`.trim())
    })
    await second.goto(`${stack.url}/#/media`)
    await signIn(second, TEST_API_KEY)
    await second.locator('#files').setInputFiles(again)
    await eventually(
      async () =>
        expect(await uploadItem(second, 'second-take.mp4').locator('.badge').textContent()).toMatch(
          /queued|processing/
        ),
      30_000
    )
    // No new upload: the one begun in the closed tab, asked where it stopped and finished from there.
    expect(sent.filter((s) => s.startsWith('POST'))).toEqual([])
    expect(sent.filter((s) => s !== 'OPTIONS').slice(0, 2)).toEqual(['HEAD', `PATCH ${16 * MiB}`])
    const resumed = await byName('second-take.mp4')
    expect(resumed.size).toBe(Bun.file(again).size)
    expect((await stack.fetch(`/v1/media/${resumed.id}`, { method: 'DELETE' })).status).toBe(204)
    await second.close()
  }, 60_000)

  test('an upload cancelled midway stops, and the server is told to drop what it has', async () => {
    const third = join(dir, 'third-take.mp4')
    writeFileSync(third, await Bun.file(files.long).bytes())
    await page.goto(`${stack.url}/#/media`)
    // The second PATCH is held until the upload is cancelled.
    let held: (() => void) | undefined
    let patches = 0
    const terminated: number[] = []
    page.on('response', (res) => {
      if (res.request().method() === 'DELETE' && res.url().includes('/v1/uploads/')) terminated.push(res.status())
    })
    await page.route('**/v1/uploads/*', (route) => {
      if (route.request().method() !== 'PATCH' || ++patches !== 2) return route.continue()
      held = () => void route.abort('aborted').catch(() => {})
    })
    await page.locator('#files').setInputFiles(third)
    const item = uploadItem(page, 'third-take.mp4')
    await eventually(async () => expect(held).toBeDefined(), 30_000)
    await item.getByRole('button', { name: 'Cancel third-take.mp4' }).click()
    held!()
    await page.unroute('**/v1/uploads/*')
    await eventually(async () => expect(await item.locator('.line').textContent()).toBe('Upload stopped'))
    await eventually(async () => expect(terminated).toEqual([204]))
    expect(await byName('third-take.mp4')).toBeUndefined()
  })

  test('a corrupt file fails, and its page says why and what to do', async () => {
    await page.goto(`${stack.url}/#/media`)
    await page.locator('#files').setInputFiles(files.corrupt)
    const item = uploadItem(page, 'broken.jpg')
    await eventually(async () => expect(await item.locator('.badge').textContent()).toBe('failed'), 30_000)
    expect(await item.locator('.line').textContent()).toMatch(/^Failed: .+/)
    await item.locator('.name').click()
    const failure = page.getByRole('alert').filter({ hasText: 'Why it failed' })
    await failure.waitFor()
    const text = (await failure.textContent())!
    const failed = await byName('broken.jpg')
    expect(failed.error?.code).toBe('invalid_media')
    expect(text).toContain(failed.error!.message)
    expect(text).toContain('input')
    expect(text).toContain('upload a different file')
    media.broken = failed
    await shot(page, '7-failed')
  })

  test('operators see the health, the queues, and re-drive a dead letter', async () => {
    // A dead letter of the failed job, as the broker would leave it after the processor crashed on every delivery.
    const letterId = crypto.randomUUID()
    await stack.api.store.deadLetters.record(
      {
        id: letterId,
        type: 'images',
        queue: queueNames(stack.env.SYSTEM!, 'images').request,
        reason: 'delivery_limit',
        deliveries: 5,
        jobId: media.broken!.jobId,
        problem: null,
        messageId: crypto.randomUUID(),
        headers: {},
        body: new Uint8Array([123, 125]),
        deadAt: new Date().toISOString(),
      },
      null
    )
    await page.getByRole('link', { name: 'Operations' }).click()
    await page.getByRole('heading', { name: 'Operations', level: 1 }).waitFor()
    await eventually(async () => expect(await page.locator('.checks').textContent()).toContain('database: up'))
    expect(await page.locator('.checks').textContent()).toMatch(/rabbitmq: up.*s3: up/)
    await page.getByLabel('Admin token').fill(ADMIN_TOKEN)
    await page.getByRole('button', { name: 'Open' }).click()
    await page.getByRole('heading', { name: 'Queues', level: 2 }).waitFor()
    // Each type's five queues (interactive and bulk requests, updates, results, dead letters), and the processors
    // consuming the request queues.
    expect(await page.locator('section[aria-labelledby="queues-title"] tbody tr').count()).toBe(5 * MEDIA_TYPES.length)
    const requestRow = page.locator('section[aria-labelledby="queues-title"] tbody tr', { hasText: 'request' }).first()
    expect(Number(await requestRow.locator('td').nth(2).textContent())).toBeGreaterThanOrEqual(1)
    const letter = page.locator('section[aria-labelledby="letters-title"] tbody tr', { hasText: media.broken!.jobId })
    await letter.waitFor()
    await shot(page, '8-operations')
    await letter.getByRole('button', { name: /Re-drive/ }).click()
    await eventually(async () => expect(await page.getByRole('status').first().textContent()).toContain('Re-driven'))
    await eventually(async () => expect(await letter.count()).toBe(0))
    expect((await stack.api.store.media.history(media.broken!.jobId)).map((h) => h.reason)).toContain('redrive')
  })

  test('on a phone-sized screen the library fits the width', async () => {
    await page.setViewportSize({ width: 390, height: 844 })
    await page.goto(`${stack.url}/#/media`)
    await page.locator('.grid li[data-id]').first().waitFor()
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true)
    await shot(page, '9-phone')
    await page.goto(`${stack.url}/#/media/${media.photo!.id}`)
    await page.locator('.stage img').waitFor()
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true)
    await page.setViewportSize({ width: 1280, height: 900 })
  })

  test('every control has a name: labelled inputs, images with text, named buttons', async () => {
    for (const path of ['#/media', `#/media/${media.clip!.id}`, '#/operations']) {
      await page.goto(`${stack.url}/${path}`)
      await page.locator('h1').waitFor()
      const unnamed = await page.evaluate(() => {
        const missing: string[] = []
        for (const el of Array.from(document.querySelectorAll('input, select'))) {
          const input = el as HTMLInputElement
          if (!input.labels?.length && !input.getAttribute('aria-label')) missing.push(`${el.tagName} ${input.id}`)
        }
        for (const img of Array.from(document.querySelectorAll('img')))
          if (img.getAttribute('alt') === null) missing.push(`img ${img.src}`)
        for (const button of Array.from(document.querySelectorAll('button')))
          if (!button.textContent?.trim() && !button.getAttribute('aria-label')) missing.push('button')
        return missing
      })
      expect(unnamed).toEqual([])
    }
  })

  test('another tenant signed in sees none of it, not even by its address', async () => {
    const other = await issueKey(stack.api.store, 'console-other')
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.getByRole('heading', { name: 'Sign in' }).waitFor()
    await signIn(page, other.key)
    await page.locator('.grid li.empty').waitFor()
    expect(await page.locator('.grid li[data-id]').count()).toBe(0)
    await shot(page, '10-other-tenant')
    await page.goto(`${stack.url}/#/media/${media.photo!.id}`)
    await page.getByRole('heading', { name: 'Not found' }).waitFor()
  })

  test('the page asked nothing of any other origin and broke no rule of its policy', () => {
    expect(elsewhere).toEqual([])
    expect(problems).toEqual([])
  })
})

describe('the console with audio, on the embedded store', () => {
  let stack: Stack
  let browser: Browser
  beforeAll(async () => {
    ;[stack, browser] = await Promise.all([
      startStack({ audio: true }),
      chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }),
    ])
  }, 60_000)
  afterAll(async () => {
    await browser?.close()
    await stack?.stop()
  })

  test('an upload goes over tus (resumable on the embedded store too), with its progress, and completes', async () => {
    const { context, page, elsewhere, problems } = await openContext(browser, stack.url)
    const methods: string[] = []
    page.on('request', (request: Request) => methods.push(`${request.method()} ${new URL(request.url()).pathname}`))
    await page.goto(`${stack.url}/`)
    await signIn(page, TEST_API_KEY)
    await eventually(async () => expect(await page.locator('.hint').first().textContent()).toContain('resumable'))
    const photo = join(dir, 'embedded.jpg')
    writeFileSync(
      photo,
      await sharp(await quadrants(800, 600))
        .jpeg()
        .toBuffer()
    )
    await page.locator('#files').setInputFiles(photo)
    await eventually(
      async () => expect(await uploadItem(page, 'embedded.jpg').locator('.badge').textContent()).toBe('completed'),
      30_000
    )
    expect(methods).toContain('POST /v1/uploads')
    expect(methods.some((m) => m.startsWith('PATCH /v1/uploads/'))).toBe(true)
    expect(methods).not.toContain('POST /v1/media')
    expect(await naturalSize(page, '.grid li[data-id] img')).toEqual([320, 240])
    expect(elsewhere).toEqual([])
    expect(problems).toEqual([])
    await context.close()
  })

  test('an upload whose connection breaks mid-upload resumes where the server stopped, on the embedded store too', async () => {
    const { context, page, elsewhere, problems } = await openContext(browser, stack.url)
    await page.goto(`${stack.url}/`)
    await signIn(page, TEST_API_KEY)
    const big = join(dir, 'big-embedded.png')
    writeFileSync(big, await paddedPng(20 * MiB + 321))
    const sent = await breakSecondPatch(page)
    await page.locator('#files').setInputFiles(big)
    await eventually(
      async () =>
        expect(await uploadItem(page, 'big-embedded.png').locator('.badge').textContent()).toMatch(
          /queued|processing|completed/
        ),
      30_000
    )
    expectResumedAt16MiB(sent)
    const { media } = (await (await stack.fetch('/v1/media?limit=100')).json()) as { media: MediaBody[] }
    expect(media.find((m) => m.filename === 'big-embedded.png')?.size).toBe(20 * MiB + 321)
    expect(elsewhere).toEqual([])
    expect(problems).toEqual([])
    await context.close()
  }, 60_000)

  test('eight uploads at once are followed, in the uploads and the library, over one event stream for the page', async () => {
    const { context, page, elsewhere, problems } = await openContext(browser, stack.url)
    const streams: string[] = []
    page.on('request', (request: Request) => {
      const path = new URL(request.url()).pathname
      if (path.endsWith('/events')) streams.push(path)
    })
    await page.goto(`${stack.url}/`)
    await signIn(page, TEST_API_KEY)
    const photos = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const path = join(dir, `many-${i}.jpg`)
        writeFileSync(
          path,
          await sharp(await quadrants(400 + i * 8, 300))
            .jpeg()
            .toBuffer()
        )
        return path
      })
    )
    await page.locator('#files').setInputFiles(photos)
    for (let i = 0; i < 8; i++)
      await eventually(
        async () => expect(await uploadItem(page, `many-${i}.jpg`).locator('.badge').textContent()).toBe('completed'),
        30_000
      )
    // The library saw them complete too, told by the same stream (it reads its page again on a change).
    await eventually(async () =>
      expect(await page.locator('.grid li[data-id] .badge', { hasText: 'completed' }).count()).toBeGreaterThanOrEqual(8)
    )
    // One stream for the whole page, none per media (and no polling).
    expect(streams).toEqual(['/v1/events'])
    expect(elsewhere).toEqual([])
    expect(problems).toEqual([])
    await context.close()
  })

  test('presets picked on the page make the outputs, and a picture shows its ThumbHash while it loads', async () => {
    const { context, page, elsewhere, problems } = await openContext(browser, stack.url)
    await page.goto(`${stack.url}/`)
    await signIn(page, TEST_API_KEY)
    // The tenant's defaults come checked; this upload makes avatar instead of preview.
    await eventually(async () => expect(await page.locator('#preset-thumb').isChecked()).toBe(true))
    expect(await page.locator('#preset-preview').isChecked()).toBe(true)
    expect(await page.locator('#preset-ladder').isChecked()).toBe(true)
    await page.locator('#preset-preview').uncheck()
    await page.locator('#preset-avatar').check()
    const photo = join(dir, 'presets.jpg')
    writeFileSync(
      photo,
      await sharp(await quadrants(900, 600))
        .jpeg()
        .toBuffer()
    )
    await page.locator('#files').setInputFiles(photo)
    await eventually(
      async () => expect(await uploadItem(page, 'presets.jpg').locator('.badge').textContent()).toBe('completed'),
      30_000
    )
    // Found by its name: the library may not have drawn it yet when its upload says completed.
    const listed = (await (await stack.fetch('/v1/media?limit=100')).json()) as {
      media: { id: string; filename: string; outputs: { name: string }[]; presets: string[] }[]
    }
    const media = listed.media.find((m) => m.filename === 'presets.jpg')!
    const id = media.id
    expect(media.presets).toEqual(['thumb', 'avatar'])
    expect(media.outputs.map((o) => o.name).sort()).toEqual(['avatar', 'thumb'])
    // The card draws the ThumbHash behind the thumbnail: a PNG made in the page.
    const card = page.locator(`.grid li[data-id="${id}"] .thumb`)
    await card.waitFor()
    expect(await card.evaluate((el) => getComputedStyle(el).backgroundImage)).toStartWith('url("data:image/png;base64,')
    expect(elsewhere).toEqual([])
    expect(problems).toEqual([])
    await context.close()
  })

  test('a song plays from its signed links, its cover and waveform drawn; a click on the waveform seeks', async () => {
    const { context, page, elsewhere, problems } = await openContext(browser, stack.url)
    await page.goto(`${stack.url}/`)
    await signIn(page, TEST_API_KEY)
    const song = join(dir, 'song.mp3')
    await makeSong(song, 'Harbour at dawn', 4)
    await page.locator('#files').setInputFiles(song)
    await eventually(
      async () => expect(await uploadItem(page, 'song.mp3').locator('.badge').textContent()).toBe('completed'),
      30_000
    )
    const listed = (await (await stack.fetch('/v1/media?kind=audio')).json()) as { media: MediaBody[] }
    const media = listed.media.find((m) => m.filename === 'song.mp3')!
    const cover = media.outputs.find((o) => o.name === 'cover')!
    // The library shows the cover art as the card's picture.
    expect(await naturalSize(page, `.grid li[data-id="${media.id}"] img`)).toEqual([cover.width, cover.height])
    await page.locator(`.grid li[data-id="${media.id}"] a`).click()
    await page.getByRole('heading', { name: 'song.mp3', level: 1 }).waitFor()
    const peaks = (await (await stack.fetch(`/v1/media/${media.id}/outputs/peaks`)).json()) as { length: number }
    await eventually(async () =>
      expect(await page.locator('figure.sound').getAttribute('data-peaks')).toBe(String(peaks.length))
    )
    expect(await naturalSize(page, 'figure.sound img.cover')).toEqual([cover.width, cover.height])
    expect(
      await page.locator('figure.sound audio source').evaluateAll((s) => s.map((e) => e.getAttribute('type')))
    ).toEqual(['audio/mp4', 'audio/webm'])
    // The waveform is drawn: dark pixels in the canvas's middle row, none in its top row (a tone never reaches full scale).
    const drawn = await page.locator('canvas.waveform').evaluate((canvas: HTMLCanvasElement) => {
      const context = canvas.getContext('2d')!
      const row = (y: number) =>
        Array.from(context.getImageData(0, y, canvas.width, 1).data).filter((_, i) => i % 4 === 3 && _ > 0).length
      return { middle: row(canvas.height / 2), top: row(0) }
    })
    await shot(page, '9-sound')
    expect(drawn.middle).toBeGreaterThan(900)
    expect(drawn.top).toBe(0)
    expect(await page.getByText('Harbour at dawn').count()).toBeGreaterThan(0)
    // Sound has no dimensions: the outputs table says so rather than printing undefined.
    expect(await page.locator('table').first().textContent()).not.toContain('undefined')
    // It plays from the signed links (no key) to its end, muted; then a click at three quarters seeks there.
    const audio = page.locator('figure.sound audio')
    const played = await audio.evaluate(
      (element: HTMLAudioElement) =>
        new Promise<{ source: string; duration: number }>((resolve, reject) => {
          element.muted = true
          element.playbackRate = 4
          element.addEventListener('ended', () => resolve({ source: element.currentSrc, duration: element.duration }))
          element.addEventListener('error', () => reject(new Error(`media error ${element.error?.code}`)))
          void element.play()
        })
    )
    expect(new URL(played.source).pathname).toStartWith(`/v1/links/${media.id}/audio.m4a`)
    expect(Math.abs(played.duration - (media.metadata as { durationSeconds: number }).durationSeconds)).toBeLessThan(
      0.1
    )
    const box = (await page.locator('canvas.waveform').boundingBox())!
    await page.mouse.click(box.x + box.width * 0.75, box.y + box.height / 2)
    await eventually(async () =>
      expect(
        Math.abs((await audio.evaluate((e: HTMLAudioElement) => e.currentTime)) - played.duration * 0.75)
      ).toBeLessThan(0.2)
    )
    expect(elsewhere).toEqual([])
    expect(problems).toEqual([])
    await context.close()
  }, 60_000)

  test('a file dropped on the page uploads; the keyboard reaches the file picker from the heading', async () => {
    const { context, page, problems } = await openContext(browser, stack.url)
    await page.goto(`${stack.url}/`)
    await signIn(page, TEST_API_KEY)
    // From the focused heading, Tab lands on the file picker first (its drop zone shows the focus).
    await page.keyboard.press('Tab')
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('files')
    expect(await page.locator('.drop').evaluate((zone) => zone.matches(':focus-within'))).toBe(true)
    const png = await sharp(await quadrants(640, 480))
      .png()
      .toBuffer()
    const transfer = await page.evaluateHandle((base64) => {
      const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))
      const data = new DataTransfer()
      data.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }))
      return data
    }, png.toString('base64'))
    await page.locator('.drop').dispatchEvent('dragover', { dataTransfer: transfer })
    expect(await page.locator('.drop').evaluate((zone) => zone.classList.contains('over'))).toBe(true)
    await page.locator('.drop').dispatchEvent('drop', { dataTransfer: transfer })
    await eventually(
      async () => expect(await uploadItem(page, 'dropped.png').locator('.badge').textContent()).toBe('completed'),
      30_000
    )
    expect(problems).toEqual([])
    await context.close()
  })
})
