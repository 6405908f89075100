/**
 * Outputs fetched in ranges and through signed links, against the real API, S3 and image processor: a link opens
 * one output without the key (on any origin) until it expires; a changed one, another output's, an expired one are
 * refused (403); a deleted media's is gone (404). Ranges answer 206 with the bytes asked for, or 416 past the end.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import sharp from 'sharp'
import { issueKey } from '../services/api/auth/keys.ts'
import { createLinks } from '../services/api/auth/links.ts'
import { quadrants } from './helpers/image-fixtures.ts'
import { useInfra } from './helpers/infra.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'

await useInfra()

let stack: Stack
let media: MediaBody
let preview: Uint8Array<ArrayBuffer>
beforeAll(async () => {
  stack = await startStack()
  const accepted = (await (
    await stack.upload(
      await sharp(await quadrants(1600, 1200))
        .jpeg()
        .toBuffer()
    )
  ).json()) as { id: string }
  media = await stack.waitForFinal(accepted.id)
  expect(media.status).toBe('completed')
  preview = new Uint8Array(await (await stack.fetch(`/v1/media/${media.id}/outputs/preview`)).arrayBuffer())
}, 60_000)
afterAll(() => stack?.stop())

const link = async (name: string, query = '') => {
  const res = await stack.fetch(`/v1/media/${media.id}/outputs/${name}/link${query}`)
  return {
    status: res.status,
    body: (await res.json()) as { url: string; expiresAt: string; error?: { code: string; message: string } },
  }
}

test('a link opens its output without the key, on any origin, cached no longer than it works', async () => {
  const before = Date.now()
  const { status, body } = await link('preview', '?expiresIn=600')
  expect(status).toBe(200)
  expect(body.url).toStartWith(`${stack.url}/v1/links/${media.id}/preview?expires=`)
  const expiresAt = Date.parse(body.expiresAt)
  expect(expiresAt).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 600_000)
  expect(expiresAt).toBeLessThanOrEqual(Date.now() + 600_000)
  const res = await fetch(body.url)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toBe('image/webp')
  expect(res.headers.get('cross-origin-resource-policy')).toBe('cross-origin')
  expect(Number(/max-age=(\d+)/.exec(res.headers.get('cache-control')!)![1])).toBeLessThanOrEqual(600)
  expect(new Uint8Array(await res.arrayBuffer())).toEqual(preview)
  // Made on one instance, checked on another: the key is the database's, not the process's.
  const [, query] = body.url.split('?')
  const params = new URLSearchParams(query)
  expect(
    await createLinks(stack.api.store.coordination).verify(
      media.id,
      'preview',
      Number(params.get('expires')),
      params.get('signature')!
    )
  ).toBe(true)
})

test("a changed link, another output's, or an expired one is refused with 403; bad input with 400", async () => {
  const { body } = await link('preview')
  const url = new URL(body.url)
  const signature = url.searchParams.get('signature')!
  const refused = async (target: string, words: string) => {
    const res = await fetch(target)
    expect(res.status).toBe(403)
    const error = ((await res.json()) as { error: { code: string; message: string } }).error
    expect(error.code).toBe('forbidden')
    expect(error.message).toContain(words)
  }
  const flipped = `${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`
  await refused(body.url.replace(signature, flipped), 'does not match')
  await refused(body.url.replace('/preview?', '/thumb?'), 'does not match')
  await refused(
    body.url.replace(/expires=\d+/, `expires=${Number(url.searchParams.get('expires')) + 1}`),
    'does not match'
  )
  const past = Math.floor(Date.now() / 1000) - 5
  await refused(
    `${stack.url}/v1/links/${media.id}/preview?${await createLinks(stack.api.store.coordination).sign(media.id, 'preview', past)}`,
    'expired'
  )
  expect((await fetch(`${stack.url}/v1/links/${media.id}/preview`)).status).toBe(400)
  expect((await link('preview', '?expiresIn=59')).body.error?.message).toContain(
    'query parameter expiresIn must be a whole number of seconds from 60 to 604800'
  )
  expect((await link('nothing')).status).toBe(404)
})

test('another tenant cannot make a link to this media', async () => {
  const other = await issueKey(stack.api.store, 'links-other')
  const res = await fetch(`${stack.url}/v1/media/${media.id}/outputs/preview/link`, {
    headers: { authorization: `Bearer ${other.key}` },
  })
  expect(res.status).toBe(404)
})

test('ranges: one is answered 206 with exactly its bytes, with the key or a link; past the end is 416', async () => {
  const size = preview.length
  const ranged = await stack.fetch(`/v1/media/${media.id}/outputs/preview`, { headers: { range: 'bytes=10-109' } })
  expect(ranged.status).toBe(206)
  expect(ranged.headers.get('content-range')).toBe(`bytes 10-109/${size}`)
  expect(ranged.headers.get('content-length')).toBe('100')
  expect(new Uint8Array(await ranged.arrayBuffer())).toEqual(preview.slice(10, 110))
  const { body } = await link('preview')
  const tail = await fetch(body.url, { headers: { range: 'bytes=-16' } })
  expect(tail.status).toBe(206)
  expect(new Uint8Array(await tail.arrayBuffer())).toEqual(preview.slice(size - 16))
  const whole = await stack.fetch(`/v1/media/${media.id}/outputs/preview`)
  expect(whole.headers.get('accept-ranges')).toBe('bytes')
  await whole.arrayBuffer()
  const past = await stack.fetch(`/v1/media/${media.id}/outputs/preview`, { headers: { range: `bytes=${size}-` } })
  expect(past.status).toBe(416)
  expect(past.headers.get('content-range')).toBe(`bytes */${size}`)
})

test("a deleted media's links are gone", async () => {
  const { body } = await link('thumb')
  expect((await fetch(body.url)).status).toBe(200)
  expect((await stack.fetch(`/v1/media/${media.id}`, { method: 'DELETE' })).status).toBe(204)
  expect((await fetch(body.url)).status).toBe(404)
})
