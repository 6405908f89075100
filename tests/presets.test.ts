/**
 * Presets and what they make, against the real API, image processor, broker and S3: tenant presets are the tenant's
 * own; a cover crop is exactly its size and `attention` keeps what stands out; a responsive set has exactly the
 * widths at or below its source and reads as a `srcset`; the ThumbHash decodes (with the library's own decoder) to
 * the picture's aspect ratio and average colour; an animated GIF stays animated; reprocessing switches outputs only
 * when it completes; a preset changed or deleted while its job waits does not change that job; bad presets are
 * refused with the field named, and nothing is stored.
 */
import { GetObjectCommand } from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import sharp from 'sharp'
import { thumbHashToApproximateAspectRatio, thumbHashToAverageRGBA } from 'thumbhash'
import { issueKey } from '../services/api/auth/keys.ts'
import { useInfra } from './helpers/infra.ts'
import { testS3 } from './helpers/s3.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'

await useInfra()

const json = { 'content-type': 'application/json' }
type Body = MediaBody & {
  presets: string[] | null
  srcsets: Record<string, string>
  reprocess: { jobId: string; status: string; presets: string[] | null } | null
  outputs: (MediaBody['outputs'][number] & { set?: string })[]
  metadata: { width: number; height: number; thumbhash?: string; dominantColor?: string } | null
}

/** A dark 1600×900 picture with one bright red patch near its right edge: what `attention` should keep. */
async function salientOffCentre(): Promise<Buffer> {
  const patch = { create: { width: 220, height: 220, channels: 3 as const, background: '#ff2020' } }
  return sharp({ create: { width: 1600, height: 900, channels: 3, background: '#202830' } })
    .composite([{ input: patch, left: 1320, top: 340 }])
    .jpeg({ quality: 90 })
    .toBuffer()
}

/** An animated GIF of `frames` frames, each a colour of its own (identical frames would be merged by WebP). */
async function colourfulGif(frames: number, width: number, height: number): Promise<Buffer> {
  const colours = ['#ff0000', '#00ff00', '#0000ff', '#ffff00', '#00ffff', '#ff00ff', '#ffffff', '#808080']
  const pictures = await Promise.all(
    Array.from({ length: frames }, (_, i) =>
      sharp({ create: { width, height, channels: 3, background: colours[i % colours.length]! } })
        .png()
        .toBuffer()
    )
  )
  return sharp(pictures, { join: { animated: true } })
    .gif({ delay: 100 })
    .toBuffer()
}

/** The share of a picture's pixels that are the disc's red. */
async function redShare(image: Uint8Array): Promise<number> {
  const { data, info } = await sharp(image).removeAlpha().raw().toBuffer({ resolveWithObject: true })
  let red = 0
  for (let i = 0; i < data.length; i += 3) if (data[i]! > 200 && data[i + 1]! < 90 && data[i + 2]! < 90) red++
  return red / (info.width * info.height)
}

describe('presets', () => {
  let stack: Stack
  let s3: ReturnType<typeof testS3>
  beforeAll(async () => {
    stack = await startStack({})
    s3 = testS3(stack.env)
  })
  afterAll(async () => {
    s3?.close()
    await stack?.stop()
  })
  const get = async (id: string) => (await (await stack.fetch(`/v1/media/${id}`)).json()) as Body
  const object = async (key: string) =>
    (await s3.client.send(new GetObjectCommand({ Bucket: stack.env.S3_BUCKET, Key: key }))).Body!.transformToByteArray()
  const output = async (media: Body, name: string) => {
    const res = await stack.fetch(`/v1/media/${media.id}/outputs/${name}`)
    expect(res.status).toBe(200)
    return new Uint8Array(await res.arrayBuffer())
  }
  const upload = async (body: Uint8Array, presets?: string) => {
    const res = await stack.upload(body, presets ? { 'x-presets': presets } : {})
    expect(res.status).toBe(202)
    return ((await res.json()) as { id: string }).id
  }
  const create = (preset: object, headers: Record<string, string> = {}) =>
    stack.fetch('/v1/presets', { method: 'POST', headers: { ...json, ...headers }, body: JSON.stringify(preset) })

  test('an avatar is exactly its size and keeps the salient region; a srcset has exactly the widths at or below the source', async () => {
    const picture = await salientOffCentre()
    const media = await stack.waitForFinal(await upload(picture, 'avatar,srcset'))
    expect(media.status).toBe('completed')
    const body = await get(media.id)
    expect(body.presets).toEqual(['avatar', 'srcset'])
    const byName = Object.fromEntries(body.outputs.map((o) => [o.name, o]))
    expect(Object.keys(byName).sort()).toEqual(['avatar', 'srcset-1280', 'srcset-320', 'srcset-640', 'srcset-960'])
    expect(byName.avatar).toMatchObject({ width: 256, height: 256, contentType: 'image/webp' })
    const avatar = await output(body, 'avatar')
    expect(await sharp(avatar).metadata()).toMatchObject({ width: 256, height: 256, format: 'webp' })
    // A centre crop of the same picture holds none of the disc; the attention crop holds a good part of it.
    const centre = await sharp(picture).resize(256, 256, { fit: 'cover', position: 'centre' }).png().toBuffer()
    expect(await redShare(centre)).toBe(0)
    // The patch is 220 px of the 900 px the square crop takes: all of it is kept.
    expect(await redShare(avatar)).toBeGreaterThan(0.9 * (220 / 900) ** 2)
    for (const width of [320, 640, 960, 1280])
      expect(byName[`srcset-${width}`]).toMatchObject({ width, height: (width * 9) / 16, set: 'srcset' })
    const url = (name: string) => `${stack.url}/v1/media/${body.id}/outputs/${name}`
    expect(body.srcsets).toEqual({ srcset: [320, 640, 960, 1280].map((w) => `${url(`srcset-${w}`)} ${w}w`).join(', ') })
  })

  test('every image gets a ThumbHash that decodes to its aspect ratio and average colour, and a dominant colour', async () => {
    for (const [width, height, tolerance] of [
      [1600, 900, 0.02],
      [1200, 800, 0.07],
    ] as const) {
      const picture = await sharp({ create: { width, height, channels: 3, background: '#3a7bd5' } })
        .composite([
          { input: { create: { width: width / 2, height, channels: 3, background: '#f0c040' } }, left: 0, top: 0 },
        ])
        .png()
        .toBuffer()
      const media = await stack.waitForFinal(await upload(picture))
      const { metadata } = await get(media.id)
      const hash = Buffer.from(metadata!.thumbhash!, 'base64')
      expect(hash.length).toBeLessThan(40)
      const ratio = thumbHashToApproximateAspectRatio(hash)
      expect(Math.abs(ratio / (width / height) - 1)).toBeLessThan(tolerance)
      const average = thumbHashToAverageRGBA(hash)
      const { channels } = await sharp(picture).stats()
      for (const [i, value] of [average.r, average.g, average.b].entries())
        expect(Math.abs(value * 255 - channels[i]!.mean)).toBeLessThan(12)
      expect(metadata!.dominantColor).toMatch(/^#[0-9a-f]{6}$/)
    }
  })

  test('a tenant preset keeps an animated GIF animated (as WebP), pads with contain and makes AVIF', async () => {
    const made = await create({
      name: 'motion',
      kind: 'image',
      outputs: [
        { name: 'loop', format: 'webp', width: 48, height: 48, animated: true },
        { name: 'boxed', format: 'png', width: 100, height: 100, fit: 'contain' },
        { name: 'small', format: 'avif', width: 64, height: 64 },
      ],
    })
    expect(made.status).toBe(201)
    const media = await stack.waitForFinal(await upload(await colourfulGif(7, 96, 48), 'motion'))
    expect(media.status).toBe('completed')
    const body = await get(media.id)
    expect(await sharp(await output(body, 'loop'), { animated: true }).metadata()).toMatchObject({
      format: 'webp',
      pages: 7,
      width: 48,
      pageHeight: 24,
    })
    expect(body.outputs.find((o) => o.name === 'loop')).toMatchObject({ width: 48, height: 24 })
    const boxed = await output(body, 'boxed')
    expect(await sharp(boxed).metadata()).toMatchObject({ width: 100, height: 100, hasAlpha: true })
    // 96×48 contained in 100×100: never enlarged, so transparent bands above and below.
    const corner = await sharp(boxed).extract({ left: 0, top: 0, width: 1, height: 1 }).raw().toBuffer()
    expect(corner[3]).toBe(0)
    expect(body.outputs.find((o) => o.name === 'small')).toMatchObject({ contentType: 'image/avif' })
    expect((await sharp(await output(body, 'small')).metadata()).format).toBe('heif')
  })

  test('reprocessing serves the old outputs until the new ones are made, then switches and deletes the old', async () => {
    const id = await upload(await salientOffCentre())
    const first = await stack.waitForFinal(id)
    expect(first.outputs.map((o) => o.name).sort()).toEqual(['preview', 'thumb'])
    const oldKeys = await s3.keys(`${stack.env.SYSTEM}/outputs/${first.jobId}/`)
    expect(oldKeys.length).toBe(2)
    await stack.stopImages()
    try {
      const reprocess = await stack.fetch(`/v1/media/${id}/reprocess`, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ presets: ['avatar'] }),
      })
      expect(reprocess.status).toBe(202)
      const { jobId } = (await reprocess.json()) as { jobId: string }
      const during = await get(id)
      expect(during).toMatchObject({
        status: 'completed',
        jobId: first.jobId,
        presets: ['thumb', 'preview'],
        reprocess: { jobId, status: 'queued', presets: ['avatar'] },
      })
      expect(during.outputs.map((o) => o.name).sort()).toEqual(['preview', 'thumb'])
      // One job of a media at a time.
      expect(
        (await stack.fetch(`/v1/media/${id}/reprocess`, { method: 'POST', headers: json, body: '{}' })).status
      ).toBe(409)
      // Its event stream follows the reprocess to its end, though the media's own status is final throughout.
      const stream = (await stack.fetch(`/v1/media/${id}/events`)).body!.getReader()
      let text = new TextDecoder().decode((await stream.read()).value) // the current state, before the job runs
      await stack.startImages()
      for (let chunk = await stream.read(); !chunk.done; chunk = await stream.read())
        text += new TextDecoder().decode(chunk.value)
      const states = text
        .split('\n')
        .filter((line) => line.startsWith('data: '))
        .map((line) => JSON.parse(line.slice(6)) as Body)
      expect(states[0]).toMatchObject({ jobId: first.jobId, reprocess: { jobId, status: 'queued' } })
      expect(states.at(-1)).toMatchObject({ jobId, reprocess: null, status: 'completed' })
      const deadline = Date.now() + 30_000
      let after = await get(id)
      while (after.jobId !== jobId && Date.now() < deadline) {
        await Bun.sleep(20)
        after = await get(id)
      }
      expect(after).toMatchObject({ status: 'completed', jobId, presets: ['avatar'], reprocess: null })
      expect(after.outputs.map((o) => o.name)).toEqual(['avatar'])
      expect(await sharp(await output(after, 'avatar')).metadata()).toMatchObject({ width: 256, height: 256 })
      // The old outputs go once the media no longer serves them.
      const gone = Date.now() + 10_000
      while ((await s3.keys(`${stack.env.SYSTEM}/outputs/${first.jobId}/`)).length && Date.now() < gone)
        await Bun.sleep(20)
      expect(await s3.keys(`${stack.env.SYSTEM}/outputs/${first.jobId}/`)).toEqual([])
      expect((await stack.api.store.media.history(jobId)).map((h) => h.reason)).toEqual([
        'reprocess',
        'update',
        'result',
      ])
    } finally {
      await stack.startImages()
    }
  })

  test('a reprocess cancelled before it ran leaves the media serving what it served', async () => {
    const id = await upload(await salientOffCentre())
    const first = await stack.waitForFinal(id)
    await stack.stopImages()
    try {
      const reprocess = await stack.fetch(`/v1/media/${id}/reprocess`, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ presets: ['srcset'] }),
      })
      const { jobId } = (await reprocess.json()) as { jobId: string }
      const cancelled = await stack.fetch(`/v1/media/${id}/cancel`, { method: 'POST' })
      expect(cancelled.status).toBe(200)
      const body = (await cancelled.json()) as Body
      expect(body).toMatchObject({ status: 'completed', jobId: first.jobId, reprocess: { jobId, status: 'cancelled' } })
      expect(body.outputs.map((o) => o.name).sort()).toEqual(['preview', 'thumb'])
      expect((await stack.fetch(`/v1/media/${id}/outputs/thumb`)).status).toBe(200)
    } finally {
      await stack.startImages()
    }
  })

  test('a preset changed, then deleted, while its job waits does not change that job', async () => {
    expect(
      (
        await create({
          name: 'square',
          kind: 'image',
          outputs: [{ format: 'webp', width: 100, height: 100, fit: 'cover' }],
        })
      ).status
    ).toBe(201)
    await stack.stopImages()
    let id: string
    try {
      id = await upload(await salientOffCentre(), 'square')
      const put = await stack.fetch('/v1/presets/square', {
        method: 'PUT',
        headers: json,
        body: JSON.stringify({ kind: 'image', outputs: [{ format: 'jpeg', width: 40, height: 40 }] }),
      })
      expect(put.status).toBe(200)
      expect((await stack.fetch('/v1/presets/square', { method: 'DELETE' })).status).toBe(204)
    } finally {
      await stack.startImages()
    }
    const media = await stack.waitForFinal(id)
    expect(media.outputs).toEqual([
      expect.objectContaining({ name: 'square', contentType: 'image/webp', width: 100, height: 100 }),
    ])
  })

  test("presets are the tenant's own; defaults choose what an upload that names none is made with", async () => {
    const other = await issueKey(stack.api.store, 'presets-other')
    const theirs = { authorization: `Bearer ${other.key}` }
    expect((await create({ name: 'mine', kind: 'image', outputs: [{ format: 'png', width: 50 }] })).status).toBe(201)
    expect((await stack.fetch('/v1/presets/mine', { headers: theirs })).status).toBe(404)
    const listed = (await (await stack.fetch('/v1/presets', { headers: theirs })).json()) as {
      presets: { name: string }[]
    }
    expect(listed.presets.map((p) => p.name)).not.toContain('mine')
    // Another tenant's name is as unknown as one never made: refused before a byte is stored.
    const refused = await stack.upload(await salientOffCentre(), { ...theirs, 'x-presets': 'mine' })
    expect(refused.status).toBe(422)
    expect(((await refused.json()) as { error: { message: string } }).error.message).toContain(
      'no preset named mine; the presets are audio, avatar, ladder'
    )
    // Defaults: this tenant's image uploads now get `mine` alone; the other tenant's still thumb and preview.
    const set = await stack.fetch('/v1/presets/defaults', {
      method: 'PUT',
      headers: json,
      body: JSON.stringify({ image: ['mine'] }),
    })
    expect(await set.json()).toEqual({ image: ['mine'], video: ['ladder'], audio: ['audio'] })
    const mine = await stack.waitForFinal(await upload(await salientOffCentre()))
    expect(mine.outputs.map((o) => o.name)).toEqual(['mine'])
    expect((await stack.fetch('/v1/presets/mine', { method: 'DELETE' })).status).toBe(409) // a default
    const res = await stack.upload(await salientOffCentre(), theirs)
    const theirId = ((await res.json()) as { id: string }).id
    const deadline = Date.now() + 30_000
    let theirMedia = (await (await stack.fetch(`/v1/media/${theirId}`, { headers: theirs })).json()) as Body
    while (theirMedia.status !== 'completed' && Date.now() < deadline) {
      await Bun.sleep(20)
      theirMedia = (await (await stack.fetch(`/v1/media/${theirId}`, { headers: theirs })).json()) as Body
    }
    expect(theirMedia.outputs.map((o) => o.name).sort()).toEqual(['preview', 'thumb'])
    await stack.fetch('/v1/presets/defaults', { method: 'PUT', headers: json, body: JSON.stringify({ image: null }) })
  })

  test('bad presets are refused with the field named, and nothing is stored', async () => {
    const before = await s3.keys(`${stack.env.SYSTEM}/originals/`)
    const cases: [object | string, number, string][] = [
      [{ name: 'zero', kind: 'image', outputs: [{ format: 'webp', width: 0 }] }, 400, 'width must be at least 1'],
      [
        { name: 'huge', kind: 'image', outputs: [{ format: 'webp', width: 100000 }] },
        400,
        'width must be at most 8192',
      ],
      [{ name: 'gif', kind: 'image', outputs: [{ format: 'gif', width: 100 }] }, 400, 'format'],
      [
        {
          name: 'many',
          kind: 'image',
          outputs: Array.from({ length: 17 }, (_, i) => ({ name: `o${i}`, format: 'webp', width: 10 })),
        },
        400,
        'at most 16',
      ],
      [
        {
          name: 'twins',
          kind: 'image',
          outputs: [
            { name: 'a', format: 'webp', width: 10 },
            { name: 'a', format: 'png', width: 10 },
          ],
        },
        422,
        'two outputs would be named a',
      ],
      [
        {
          name: 'wide',
          kind: 'image',
          outputs: [{ format: 'webp', widths: Array.from({ length: 50 }, (_, i) => 10 * (i + 1)) }],
        },
        400,
        'at most 10 widths',
      ],
      [{ name: 'a/b', kind: 'image', outputs: [{ format: 'webp', width: 10 }] }, 400, 'body field name must be 1-32'],
      [
        { name: 'x'.repeat(200), kind: 'image', outputs: [{ format: 'webp', width: 10 }] },
        400,
        'body field name must be 1-32',
      ],
      [
        {
          name: 'unnamed',
          kind: 'image',
          outputs: [
            { format: 'webp', width: 10 },
            { format: 'png', width: 10 },
          ],
        },
        422,
        'name each of them',
      ],
      [{ name: 'thumb', kind: 'image', outputs: [{ format: 'webp', width: 10 }] }, 409, 'built-in'],
      [{ name: 'v', kind: 'video', renditions: [] }, 400, 'at least one height'],
      ['{not json', 400, 'JSON'],
    ]
    for (const [preset, status, words] of cases) {
      const res = await stack.fetch('/v1/presets', {
        method: 'POST',
        headers: json,
        body: typeof preset === 'string' ? preset : JSON.stringify(preset),
      })
      const message = ((await res.json()) as { error: { message: string } }).error.message
      expect({ preset, status: res.status, message }).toEqual({
        preset,
        status,
        message: expect.stringContaining(words),
      })
    }
    // At upload: two presets making the same output name, 17 outputs together, unknown names, a malformed list.
    await create({ name: 'thumb-too', kind: 'image', outputs: [{ name: 'thumb', format: 'png', width: 10 }] })
    for (const [presets, status, words] of [
      ['thumb,thumb-too', 422, 'two outputs would be named thumb (from preset thumb and thumb-too)'],
      ['nope', 422, 'no preset named nope'],
      ['a/b', 400, 'x-presets'],
      ['ladder', 422, 'none of the presets ladder is for images'],
    ] as const) {
      const res = await stack.upload(await salientOffCentre(), { 'x-presets': presets })
      const message = ((await res.json()) as { error: { message: string } }).error.message
      expect({ presets, status: res.status, message: message.toLowerCase() }).toEqual({
        presets,
        status,
        message: expect.stringContaining(words.toLowerCase()),
      })
    }
    expect(await s3.keys(`${stack.env.SYSTEM}/originals/`)).toEqual(before)
    // The API kept serving throughout.
    expect((await stack.fetch('/v1/presets')).status).toBe(200)
  })
})
