/**
 * Resumable uploads (tus) against the real API and moto's S3, and on the embedded store: the
 * reference client (`tus-js-client`) uploads, is cut off in the middle of a part and resumes, and the original is
 * the file byte for byte; a refused kind is answered on its first bytes; uploads are their tenant's; an upload
 * begun on one API instance finishes on another. On the embedded store the same: resumed mid-chunk, byte for byte,
 * and nothing left of a refused upload.
 */
import { GetObjectCommand } from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import * as tus from 'tus-js-client'
import { readConfig as readApiConfig, serverBodyCap } from '../services/api/config.ts'
import { issueKey } from '../services/api/auth/keys.ts'
import { startApi } from '../services/api/start.ts'
import { apiKey, TEST_API_KEY } from './helpers/env.ts'
import { useInfra } from './helpers/infra.ts'
import { startMoto, type Moto } from './helpers/moto.ts'
import { testS3 } from './helpers/s3.ts'
import { paddedPng } from './helpers/image-fixtures.ts'
import { startStack, type Stack } from './helpers/stack.ts'

await useInfra()

const MiB = 1024 * 1024
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')
const TUS = { 'tus-resumable': '1.0.0' }

/** Runs a tus-js-client upload to its end (or until `stopAt` bytes are sent, then aborts); resolves with its URL. */
function clientUpload(
  file: Buffer,
  options: { endpoint?: string; uploadUrl?: string; stopAt?: number }
): Promise<{ url: string; mediaId: string | null; aborted: boolean }> {
  return new Promise((resolve, reject) => {
    const upload: tus.Upload = new tus.Upload(file, {
      endpoint: options.endpoint,
      uploadUrl: options.uploadUrl,
      headers: { authorization: `Bearer ${TEST_API_KEY}` },
      chunkSize: 5 * MiB,
      metadata: { filename: 'train.png', filetype: 'image/png' },
      retryDelays: [],
      onProgress(sent) {
        if (options.stopAt !== undefined && sent >= options.stopAt) {
          void upload.abort().then(() => resolve({ url: upload.url!, mediaId: null, aborted: true }))
        }
      },
      onSuccess(payload) {
        resolve({ url: upload.url!, mediaId: payload.lastResponse.getHeader('X-Media-Id') ?? null, aborted: false })
      },
      onError: reject,
    })
    upload.start()
  })
}

/** Creates an upload (no bytes yet) for a text that is no image; resolves with the text and the upload's URL. */
async function createForText(stack: Stack) {
  const text = new TextEncoder().encode('not an image, just words '.repeat(400))
  const created = await stack.fetch('/v1/uploads', {
    method: 'POST',
    headers: { ...TUS, 'upload-length': String(text.length) },
  })
  expect(created.status).toBe(201)
  return { text, url: new URL(created.headers.get('location')!, stack.url).toString() }
}

describe('tus on moto', () => {
  let moto: Moto
  let stack: Stack
  let s3: ReturnType<typeof testS3>
  beforeAll(async () => {
    moto = await startMoto()
    // CORS on, as any browser deployment has it: tus must still answer its own discovery.
    stack = await startStack({
      images: false,
      env: { ...moto.env, MAX_UPLOAD_BYTES: '64M', CORS_ORIGINS: 'https://app.example' },
    })
    s3 = testS3(stack.env)
  }, 60_000)
  afterAll(async () => {
    s3?.close()
    await stack?.stop()
    await moto?.stop()
  })
  const stored = async (mediaId: string) =>
    (
      await s3.client.send(
        new GetObjectCommand({ Bucket: stack.env.S3_BUCKET, Key: `${stack.env.SYSTEM}/originals/${mediaId}` })
      )
    ).Body!.transformToByteArray()

  test('discovery (OPTIONS) says which tus this is, with CORS on: as a preflight from a page, and as a bare OPTIONS', async () => {
    const bare = await fetch(`${stack.url}/v1/uploads`, { method: 'OPTIONS', headers: TUS })
    const preflight = await fetch(`${stack.url}/v1/uploads`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'tus-resumable,upload-length,upload-metadata',
      },
    })
    for (const res of [bare, preflight]) {
      expect(res.status).toBe(204)
      expect(res.headers.get('tus-version')).toBe('1.0.0')
      expect(res.headers.get('tus-extension')).toContain('creation')
      expect(Number(res.headers.get('tus-max-size'))).toBe(64 * MiB)
    }
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://app.example')
    expect(preflight.headers.get('access-control-allow-methods')).toContain('PATCH')
    // The creation from that page: allowed, and its Location readable there.
    const created = await stack.fetch('/v1/uploads', {
      method: 'POST',
      headers: { ...TUS, origin: 'https://app.example', 'upload-length': '10' },
    })
    expect(created.status).toBe(201)
    expect(created.headers.get('access-control-allow-origin')).toBe('https://app.example')
    expect(created.headers.get('access-control-expose-headers')).toContain('Location')
  })

  test('tus-js-client cut off in the middle of a part resumes, and the original is the file, byte for byte', async () => {
    const file = await paddedPng(24 * MiB + 4321)
    // Cut in the middle of the second 5 MiB chunk (and of the store's first 8 MiB part).
    const first = await clientUpload(file, { endpoint: `${stack.url}/v1/uploads`, stopAt: 7 * MiB })
    expect(first.aborted).toBe(true)
    expect(first.url).toMatch(new RegExp(`^${stack.url}/v1/uploads/[0-9a-f-]{36}$`))
    const head = await fetch(first.url, { method: 'HEAD', headers: { ...apiKey, ...TUS } })
    expect(head.status).toBe(200)
    const offset = Number(head.headers.get('upload-offset'))
    expect(offset).toBeGreaterThan(0)
    expect(offset).toBeLessThan(file.length)

    const done = await clientUpload(file, { uploadUrl: first.url })
    expect(done.aborted).toBe(false)
    const mediaId = first.url.slice(first.url.lastIndexOf('/') + 1)
    expect(done.mediaId).toBe(mediaId)
    expect(sha256(await stored(mediaId))).toBe(sha256(file))
    const media = await stack.fetch(`/v1/media/${mediaId}`)
    expect(media.status).toBe(200)
    expect(await media.json()).toMatchObject({
      id: mediaId,
      kind: 'image',
      format: 'png',
      size: file.length,
      filename: 'train.png',
      status: 'queued',
    })
    // A finished upload is its media's original: terminating it (a client's late abort) is refused, and it stays.
    const terminate = await fetch(first.url, { method: 'DELETE', headers: { ...apiKey, ...TUS } })
    expect(terminate.status).toBe(400)
    expect(sha256(await stored(mediaId))).toBe(sha256(file))
  }, 60_000)

  test('a refused kind is answered 415 on its first bytes, and the upload is gone', async () => {
    const { text, url } = await createForText(stack)
    const patch = await fetch(url, {
      method: 'PATCH',
      headers: { ...apiKey, ...TUS, 'content-type': 'application/offset+octet-stream', 'upload-offset': '0' },
      body: text,
    })
    expect(patch.status).toBe(415)
    expect(((await patch.json()) as { error: { code: string } }).error.code).toBe('unsupported_media_type')
    expect((await fetch(url, { method: 'HEAD', headers: { ...apiKey, ...TUS } })).status).toBe(404)
    // With creation-with-upload, the creation itself is refused.
    const withBody = await stack.fetch('/v1/uploads', {
      method: 'POST',
      headers: { ...TUS, 'upload-length': String(text.length), 'content-type': 'application/offset+octet-stream' },
      body: text,
    })
    expect(withBody.status).toBe(415)
  })

  test('a PATCH at the wrong offset is a 409 that changes nothing, whatever its body; the upload then finishes', async () => {
    const file = await paddedPng(6 * MiB + 99)
    const created = await stack.fetch('/v1/uploads', {
      method: 'POST',
      headers: { ...TUS, 'upload-length': String(file.length) },
    })
    const url = new URL(created.headers.get('location')!, stack.url).toString()
    const patch = (offset: number, body: Uint8Array<ArrayBuffer>) =>
      fetch(url, {
        method: 'PATCH',
        headers: {
          ...apiKey,
          ...TUS,
          'content-type': 'application/offset+octet-stream',
          'upload-offset': String(offset),
        },
        body,
      })
    const first = await patch(0, new Uint8Array(file.subarray(0, 5 * MiB)))
    expect(first.status).toBe(204)
    const offset = Number(first.headers.get('upload-offset'))
    // Plain text claiming offset 0 (what the first bytes would refuse), then valid bytes at another wrong offset.
    const words = new TextEncoder().encode('plain text, not an image '.repeat(200))
    for (const [claimed, body] of [
      [0, words],
      [0, new Uint8Array(file.subarray(0, 1000))],
      [offset + 1, new Uint8Array(file.subarray(offset + 1, offset + 100))],
    ] as const) {
      const wrong = await patch(claimed, body)
      expect({ claimed, status: wrong.status }).toEqual({ claimed, status: 409 })
      const head = await fetch(url, { method: 'HEAD', headers: { ...apiKey, ...TUS } })
      expect({ claimed, status: head.status, offset: head.headers.get('upload-offset') }).toEqual({
        claimed,
        status: 200,
        offset: String(offset),
      })
    }
    const rest = await patch(offset, new Uint8Array(file.subarray(offset)))
    expect(rest.status).toBe(204)
    const mediaId = rest.headers.get('x-media-id')!
    expect(sha256(await stored(mediaId))).toBe(sha256(file))
    // Finished, it is its media's original: no PATCH changes it, at its end or at its start.
    for (const [claimed, body] of [
      [file.length, words],
      [0, words],
      [0, new Uint8Array(file.subarray(0, 1000))],
    ] as const) {
      const late = await patch(claimed, body)
      expect({ claimed, ok: late.ok }).toEqual({ claimed, ok: false })
    }
    expect(sha256(await stored(mediaId))).toBe(sha256(file))
  }, 60_000)

  test('presets named in Upload-Metadata: unknown ones refused at creation, ones of another kind on the first bytes, the rest made', async () => {
    const meta = (presets: string) => `filename ${btoa('p.png')},presets ${btoa(presets)}`
    const file = await paddedPng(100_000)
    const unknown = await stack.fetch('/v1/uploads', {
      method: 'POST',
      headers: { ...TUS, 'upload-length': String(file.length), 'upload-metadata': meta('nope') },
    })
    expect(unknown.status).toBe(422)
    expect(((await unknown.json()) as { error: { message: string } }).error.message).toContain('no preset named nope')
    const malformed = await stack.fetch('/v1/uploads', {
      method: 'POST',
      headers: { ...TUS, 'upload-length': '10', 'upload-metadata': meta('a/b') },
    })
    expect(malformed.status).toBe(400)
    const withBody = (presets: string) =>
      stack.fetch('/v1/uploads', {
        method: 'POST',
        headers: {
          ...TUS,
          'upload-length': String(file.length),
          'upload-metadata': meta(presets),
          'content-type': 'application/offset+octet-stream',
        },
        body: new Uint8Array(file),
      })
    const video = await withBody('ladder')
    expect(video.status).toBe(422)
    expect(((await video.json()) as { error: { message: string } }).error.message).toContain(
      'none of the presets ladder is for images'
    )
    const made = await withBody('avatar,ladder')
    expect(made.status).toBe(201)
    const mediaId = made.headers.get('x-media-id')!
    const media = (await (await stack.fetch(`/v1/media/${mediaId}`)).json()) as { presets: string[] }
    expect(media.presets).toEqual(['avatar'])
  })

  test('limits, keys and tenants: over MAX_UPLOAD_BYTES is 413; another tenant sees 404; no key is 401; OPTIONS needs none', async () => {
    expect(
      (await stack.fetch('/v1/uploads', { method: 'POST', headers: { ...TUS, 'upload-length': String(65 * MiB) } }))
        .status
    ).toBe(413)
    const created = await stack.fetch('/v1/uploads', { method: 'POST', headers: { ...TUS, 'upload-length': '100' } })
    const url = new URL(created.headers.get('location')!, stack.url).toString()
    const other = await issueKey(stack.api.store, 'tus-other')
    expect(
      (await fetch(url, { method: 'HEAD', headers: { authorization: `Bearer ${other.key}`, ...TUS } })).status
    ).toBe(404)
    expect((await fetch(url, { method: 'HEAD', headers: TUS })).status).toBe(401)
    const options = await fetch(`${stack.url}/v1/uploads`, { method: 'OPTIONS' })
    expect(options.status).toBe(204)
    expect(options.headers.get('tus-version')).toContain('1.0.0')
    expect(options.headers.get('tus-extension')).toContain('creation')
    expect((await fetch(url, { method: 'DELETE', headers: { ...apiKey, ...TUS } })).status).toBe(204)
  })

  test('an upload begun on one API instance is finished on another (they share the database and the store)', async () => {
    const config = readApiConfig(stack.env)
    const other = await startApi(config)
    const server = Bun.serve({
      port: 0,
      fetch: other.app.fetch,
      maxRequestBodySize: serverBodyCap(config.maxUploadBytes),
    })
    try {
      const file = await paddedPng(9 * MiB + 17)
      const created = await stack.fetch('/v1/uploads', {
        method: 'POST',
        headers: { ...TUS, 'upload-length': String(file.length) },
      })
      const path = created.headers.get('location')!
      const patch = (base: string, from: number, to: number) =>
        fetch(new URL(path, base), {
          method: 'PATCH',
          headers: {
            ...apiKey,
            ...TUS,
            'content-type': 'application/offset+octet-stream',
            'upload-offset': String(from),
          },
          body: new Uint8Array(file.subarray(from, to)),
        })
      const firstHalf = await patch(stack.url, 0, 6 * MiB)
      expect(firstHalf.status).toBe(204)
      const offset = Number(firstHalf.headers.get('upload-offset'))
      const rest = await patch(`http://127.0.0.1:${server.port}`, offset, file.length)
      expect(rest.status).toBe(204)
      const mediaId = rest.headers.get('x-media-id')!
      expect(sha256(await stored(mediaId))).toBe(sha256(file))
      expect((await stack.fetch(`/v1/media/${mediaId}`)).status).toBe(200)
    } finally {
      await server.stop(true)
      await other.stop()
    }
  }, 60_000)
})

describe('tus on the embedded store (the default of bun run start)', () => {
  let stack: Stack
  let s3: ReturnType<typeof testS3>
  beforeAll(async () => {
    stack = await startStack({ images: false, env: { MAX_UPLOAD_BYTES: '64M' } })
    s3 = testS3(stack.env)
  }, 60_000)
  afterAll(async () => {
    s3?.close()
    await stack?.stop()
  })
  const stored = async (mediaId: string) =>
    (
      await s3.client.send(
        new GetObjectCommand({ Bucket: stack.env.S3_BUCKET, Key: `${stack.env.SYSTEM}/originals/${mediaId}` })
      )
    ).Body!.transformToByteArray()

  test('tus-js-client cut off mid-chunk at an odd offset resumes, and the original in the store is the file, byte for byte', async () => {
    const file = await paddedPng(12 * MiB + 777)
    const first = await clientUpload(file, { endpoint: `${stack.url}/v1/uploads`, stopAt: 7 * MiB + 13 })
    expect(first.aborted).toBe(true)
    const head = await fetch(first.url, { method: 'HEAD', headers: { ...apiKey, ...TUS } })
    expect(head.status).toBe(200)
    const offset = Number(head.headers.get('upload-offset'))
    expect(offset).toBeGreaterThan(0)
    expect(offset).toBeLessThan(file.length)
    const mediaId = first.url.slice(first.url.lastIndexOf('/') + 1)
    expect(await s3.openUploads(`${stack.env.SYSTEM}/originals/${mediaId}`)).toHaveLength(1)

    const done = await clientUpload(file, { uploadUrl: first.url })
    expect(done).toMatchObject({ aborted: false, mediaId })
    expect(sha256(await stored(mediaId))).toBe(sha256(file))
    expect(await (await stack.fetch(`/v1/media/${mediaId}`)).json()).toMatchObject({
      id: mediaId,
      kind: 'image',
      size: file.length,
      status: 'queued',
    })
    // Completed: no multipart upload of it is left open; the original stays, with tus's record of it (a HEAD on the
    // finished upload still answers its offset).
    const original = `${stack.env.SYSTEM}/originals/${mediaId}`
    expect(await s3.openUploads(original)).toEqual([])
    expect(await s3.keys(original)).toEqual([original, `${original}.info`])
  }, 60_000)

  test('a refused kind is answered 415 on its first bytes, and nothing of it stays in the store', async () => {
    const { text, url } = await createForText(stack)
    const mediaId = url.slice(url.lastIndexOf('/') + 1)
    const patch = await fetch(url, {
      method: 'PATCH',
      headers: { ...apiKey, ...TUS, 'content-type': 'application/offset+octet-stream', 'upload-offset': '0' },
      body: text,
    })
    expect(patch.status).toBe(415)
    expect((await fetch(url, { method: 'HEAD', headers: { ...apiKey, ...TUS } })).status).toBe(404)
    expect(await s3.openUploads(`${stack.env.SYSTEM}/originals/${mediaId}`)).toEqual([])
    expect(await s3.keys(`${stack.env.SYSTEM}/originals/${mediaId}`)).toEqual([])
  })
})
