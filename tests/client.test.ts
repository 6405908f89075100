/**
 * The typed client (`hc<AppType>`, services/api/client.ts) through the functions of examples/typed-client.ts,
 * against the whole system: the API on a real port, the image processor, the real broker and S3.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import sharp from 'sharp'
import {
  ApiFailure,
  connect,
  fetchOutput,
  follow,
  getMedia,
  readEvents,
  upload,
  waitForFinal,
} from '../examples/typed-client.ts'
import type { Client, Media } from '../services/api/client.ts'
import { TEST_API_KEY } from './helpers/env.ts'
import { quadrants } from './helpers/image-fixtures.ts'
import { useInfra } from './helpers/infra.ts'
import { startStack, type Stack } from './helpers/stack.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

describe('the example client', () => {
  let stack: Stack
  let api: Client
  beforeAll(async () => {
    stack = await startStack()
    api = connect(stack.url, TEST_API_KEY)
  })
  afterAll(async () => {
    await stack.stop()
  })

  test('uploads an image, follows its events to completion, and fetches an output that is an image', async () => {
    const png = new Blob([new Uint8Array(await quadrants(640, 480))], { type: 'image/png' })
    const accepted = await upload(api, png, 'quadrants, 640×480.png')
    expect(accepted).toMatchObject({ kind: 'image', status: 'queued' })

    const states: Media[] = []
    for await (const media of follow(api, accepted.id, AbortSignal.timeout(30_000))) states.push(media)
    const last = states.at(-1)!
    expect(last).toMatchObject({
      id: accepted.id,
      jobId: accepted.jobId,
      status: 'completed',
      progress: 100,
      filename: 'quadrants, 640×480.png',
    })
    const progress = states.map((s) => s.progress)
    expect(progress).toEqual([...progress].sort((a, b) => a - b))
    expect(last.outputs.map((o) => o.name)).toEqual(['thumb', 'preview'])

    const thumb = last.outputs.find((o) => o.name === 'thumb')!
    const { contentType, bytes } = await fetchOutput(api, last.id, thumb.name)
    expect(contentType).toBe(thumb.contentType)
    expect(bytes.byteLength).toBe(thumb.size)
    const meta = await sharp(bytes).metadata()
    expect(meta).toMatchObject({ format: 'webp', width: 320, height: 240 })
    expect({ width: thumb.width, height: thumb.height }).toEqual({ width: 320, height: 240 })

    // A stream opened on a finished media gives its final state and ends; GET says the same.
    expect(await waitForFinal(api, last.id, AbortSignal.timeout(5_000))).toEqual(last)
    expect(await getMedia(api, last.id)).toEqual(last)
  })

  test('an error answer becomes an ApiFailure with the status and code of our error body', async () => {
    const unknown = crypto.randomUUID()
    for (const attempt of [
      () => getMedia(api, unknown),
      () => fetchOutput(api, unknown, 'thumb'),
      () => follow(api, unknown).next(),
    ]) {
      const error = await attempt().then(
        () => null,
        (e: unknown) => e
      )
      expect(error).toBeInstanceOf(ApiFailure)
      expect(error).toMatchObject({ status: 404, code: 'not_found' })
    }
    const refused = await upload(api, new Blob(['just words, not a picture']), 'notes.txt').catch((e: unknown) => e)
    expect(refused).toMatchObject({ status: 415, code: 'unsupported_media_type' })
    const stranger = await upload(
      connect(stack.url, 'mk_not-a-key-anyone-was-given-0123'),
      new Blob([new Uint8Array(8)])
    ).catch((e: unknown) => e)
    expect(stranger).toMatchObject({ status: 401, code: 'unauthorized' })
  })
})

describe('the event stream reader', () => {
  const stream = (...chunks: string[]) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk))
        controller.close()
      },
    })
  const read = async (body: ReadableStream<Uint8Array>) => Array.fromAsync(readEvents(body))

  test('reads events split anywhere across chunks, skips comments, joins data lines', async () => {
    const events = await read(
      stream(
        'event: st',
        'ate\ndata: {"a":',
        '1}\nid: 1\n\n: keep-alive\n\n',
        'data: one\r\ndata: two\r\n\r\n',
        'event: deleted\ndata:x\n\n'
      )
    )
    expect(events).toEqual([
      { event: 'state', data: '{"a":1}', id: '1' },
      { event: 'message', data: 'one\ntwo', id: '1' },
      { event: 'deleted', data: 'x', id: '1' },
    ])
  })

  test('an event cut off before its blank line is not delivered', async () => {
    expect(await read(stream('event: state\ndata: {"partial"'))).toEqual([])
  })
})
