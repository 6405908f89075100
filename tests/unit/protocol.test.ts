/** The shared protocol: names, topology, the rules requests are held to, and the codec's answers to bad messages. */
import { describe, expect, test } from 'bun:test'
import {
  ATTEMPTS_HEADER,
  ERROR_CODES,
  ImageRequestSchema,
  ImageResultSchema,
  JobUpdateSchema,
  MAX_ATTEMPTS,
  MEDIA_TYPES,
  VideoRequestSchema,
  decodeMessage,
  encodeMessage,
  failureClassOf,
  outputKey,
  queueNames,
  retryDelayMs,
  topology,
} from '@app/shared'
import { attemptOf } from '@app/shared/processor'

const request = {
  version: 1 as const,
  jobId: crypto.randomUUID(),
  mediaId: crypto.randomUUID(),
  source: { bucket: 'media', key: 'media/originals/x', format: 'jpeg', size: 10 },
  output: { bucket: 'media', prefix: 'media/outputs/y' },
  recipe: { outputs: [{ name: 'thumb', format: 'webp' as const, width: 320, height: 320 }] },
}
const bytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value))

describe('protocol', () => {
  test('queue names derive from the namespace', () => {
    expect(queueNames('acme', 'images')).toEqual({
      request: 'acme.media.images.request',
      bulk: 'acme.media.images.bulk',
      updates: 'acme.media.images.updates',
      results: 'acme.media.images.results',
      dead: 'acme.media.images.dead',
    })
    const spec = topology('acme', 'images')
    expect(spec.queues.every((q) => q.options.arguments['x-queue-type'] === 'quorum')).toBe(true)
    expect(spec.queues.find((q) => q.name === 'acme.media.images.request')!.options.arguments).toMatchObject({
      'x-dead-letter-exchange': 'acme.media.dead-letter',
      'x-dead-letter-strategy': 'at-least-once',
    })
    // Both classes' request queues are alike; RabbitMQ 3.10 refuses x-max-priority on a quorum queue.
    const request = spec.queues.find((q) => q.name === 'acme.media.images.request')!.options.arguments
    expect(spec.queues.find((q) => q.name === 'acme.media.images.bulk')!.options.arguments).toEqual(request)
    for (const type of MEDIA_TYPES)
      for (const queue of topology('acme', type).queues)
        expect(queue.options.arguments).not.toHaveProperty('x-max-priority')
  })

  test("a request round-trips unchanged (an absent quality stays absent: the processor picks the format's default)", () => {
    const decoded = decodeMessage(ImageRequestSchema, encodeMessage(ImageRequestSchema, request))
    expect(decoded).toEqual({ ok: true, value: request })
  })

  test('an image output is a box or a responsive set, with the options its fit and format allow', () => {
    const withOutputs = (outputs: unknown[]) => bytes({ ...request, recipe: { outputs } })
    const ok = [
      { name: 'a', format: 'webp', width: 320 },
      {
        name: 'b',
        format: 'avif',
        width: 256,
        height: 256,
        fit: 'cover',
        position: 'attention',
        effort: 2,
        quality: 50,
      },
      { name: 'c', format: 'png', width: 300, height: 200, fit: 'contain', enlarge: true },
      { name: 's', format: 'webp', widths: [320, 640, 1280] },
      { name: 'g', format: 'webp', width: 480, height: 480, animated: true },
    ]
    expect(decodeMessage(ImageRequestSchema, withOutputs(ok))).toMatchObject({ ok: true })
    const refused: [unknown, string][] = [
      [{ name: 'x', format: 'webp' }, 'a box'],
      [{ name: 'x', format: 'webp', width: 10, widths: [10] }, 'not both'],
      [{ name: 'x', format: 'webp', widths: [640, 320] }, 'increasing'],
      [{ name: 'x', format: 'webp', width: 100, fit: 'cover' }, 'both width and height'],
      [{ name: 'x', format: 'webp', width: 100, height: 100, position: 'attention' }, 'cover only'],
      [{ name: 'x', format: 'webp', width: 100, effort: 3 }, 'avif only'],
      [{ name: 'x', format: 'png', width: 100, animated: true }, 'webp'],
      [{ name: 'x', format: 'webp', widths: Array.from({ length: 11 }, (_, i) => 100 * (i + 1)) }, '10'],
    ]
    for (const [output, reason] of refused) {
      expect({ output, decoded: decodeMessage(ImageRequestSchema, withOutputs([output])) }).toMatchObject({
        output,
        decoded: { ok: false, reason: expect.stringContaining(reason) },
      })
    }
    // A set's outputs count against the 16, and their names (<name>-<width>) must not meet another's.
    const sets = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        name: `s${i}`,
        format: 'webp',
        widths: [100, 200, 300, 400, 500, 600, 700, 800],
      }))
    expect(decodeMessage(ImageRequestSchema, withOutputs(sets(2)))).toMatchObject({ ok: true })
    expect(decodeMessage(ImageRequestSchema, withOutputs(sets(3)))).toMatchObject({
      ok: false,
      reason: expect.stringContaining('at most 16'),
    })
    const clash = [
      { name: 's', format: 'webp', widths: [320] },
      { name: 's-320', format: 'webp', width: 320 },
    ]
    expect(decodeMessage(ImageRequestSchema, withOutputs(clash))).toMatchObject({
      ok: false,
      reason: expect.stringContaining('unique'),
    })
  })

  test('bad messages are refused with a reason, never thrown', () => {
    expect(decodeMessage(ImageRequestSchema, new TextEncoder().encode('{nope'))).toMatchObject({
      ok: false,
      reason: expect.stringContaining('JSON'),
    })
    expect(decodeMessage(ImageRequestSchema, bytes({ ...request, version: 2 }))).toMatchObject({
      ok: false,
      reason: expect.stringContaining('version 2'),
    })
    expect(
      decodeMessage(ImageRequestSchema, bytes({ ...request, source: { ...request.source, key: '../etc/passwd' } }))
    ).toMatchObject({ ok: false })
    expect(
      decodeMessage(
        JobUpdateSchema,
        bytes({
          version: 1,
          jobId: request.jobId,
          status: 'processing',
          stage: 'processing',
          progress: 140,
          at: new Date().toISOString(),
        })
      )
    ).toMatchObject({ ok: false })
  })

  test('an invalid outgoing message fails in the producer', () => {
    expect(() => encodeMessage(ImageRequestSchema, { ...request, jobId: 'x' })).toThrow(/refusing to send/)
  })

  test('failures carry a class: known codes map to one, and an unknown class is refused', () => {
    expect(
      ['invalid_media', 'unsupported_format', 'limit_exceeded', 'source_missing', 'timeout'].map(failureClassOf)
    ).toEqual(Array(5).fill('input'))
    expect(
      ['gave_up', 'crashed', 'stalled', 'processing_error', 'invalid_request', 'storage_refused'].map(failureClassOf)
    ).toEqual(['transient', 'crash', 'crash', 'internal', 'internal', 'internal'])
    expect(failureClassOf('something_new')).toBe('internal')
    expect(failureClassOf('toString')).toBe('internal') // not a code, though every object has it
    expect(Object.keys(ERROR_CODES)).toHaveLength(11)
    const failed = { version: 1, jobId: crypto.randomUUID(), status: 'failed', at: new Date().toISOString() }
    expect(
      decodeMessage(
        ImageResultSchema,
        bytes({ ...failed, error: { code: 'gave_up', message: 'm', class: 'transient' } })
      ).ok
    ).toBe(true)
    expect(decodeMessage(ImageResultSchema, bytes({ ...failed, error: { code: 'gave_up', message: 'm' } })).ok).toBe(
      true
    )
    const bad = decodeMessage(
      ImageResultSchema,
      bytes({ ...failed, error: { code: 'gave_up', message: 'm', class: 'flaky' } })
    )
    expect(bad.ok).toBe(false)
  })

  test('transient retries back off 1, 2, 4, 8, 16 s, capped at 30 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(retryDelayMs)).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000])
    expect(MAX_ATTEMPTS).toBe(6)
  })

  test("the attempt of a delivery counts the attempts carried by a copy and the broker's redeliveries", () => {
    expect(attemptOf(undefined)).toBe(1)
    expect(attemptOf({ 'x-delivery-count': 2 })).toBe(3)
    expect(attemptOf({ [ATTEMPTS_HEADER]: 3, 'x-delivery-count': 1 })).toBe(5)
    // Nonsense counts nothing rather than everything.
    expect(attemptOf({ [ATTEMPTS_HEADER]: 'many', 'x-delivery-count': -4 })).toBe(1)
  })

  test('outputs are stored at <prefix>/<name>.<extension>', () => {
    expect(outputKey('media/outputs/j', 'thumb', 'jpeg')).toBe('media/outputs/j/thumb.jpg')
    expect(outputKey('media/outputs/j', '720p', 'mp4')).toBe('media/outputs/j/720p.mp4')
  })
})

describe('the rules a request is held to', () => {
  const refusal = (value: unknown) => {
    const decoded = decodeMessage(ImageRequestSchema, bytes(value))
    return decoded.ok ? null : decoded.reason
  }
  const output = request.recipe.outputs[0]!

  test('an output format is webp, jpeg, png or avif: "jpg" is an extension, not a format', () => {
    expect(refusal({ ...request, recipe: { outputs: [{ ...output, format: 'jpg' }] } })).toContain(
      'recipe.outputs.0.format'
    )
    expect(refusal({ ...request, recipe: { outputs: [{ ...output, format: 'jpeg' }] } })).toBeNull()
  })

  test('output names follow their grammar and are unique; boxes, quality and counts stay in range', () => {
    const outputs = (list: unknown[]) => refusal({ ...request, recipe: { outputs: list } })
    expect(outputs([{ ...output, name: 'Thumb' }])).toContain('name')
    expect(outputs([{ ...output, name: 'x'.repeat(33) }])).toContain('name')
    expect(outputs([output, output])).toContain('output names must be unique')
    expect(outputs([{ ...output, width: 8193 }])).toContain('width')
    expect(outputs([{ ...output, quality: 0 }])).toContain('quality')
    expect(outputs([])).toContain('outputs')
    expect(outputs(Array.from({ length: 17 }, (_, i) => ({ ...output, name: `o${i}` })))).toContain('outputs')
  })

  test('keys have no empty, "." or ".." segments, and ids are UUIDs', () => {
    for (const key of ['a//b', '/a', 'a/', 'a/./b', '../a', 'a/..', '.', 'a b']) {
      expect({ key, refused: refusal({ ...request, source: { ...request.source, key } }) !== null }).toEqual({
        key,
        refused: true,
      })
    }
    for (const key of ['a/.b', 'a/..b/c', '.hidden', 'x.y/z'])
      expect(refusal({ ...request, source: { ...request.source, key } })).toBeNull()
    expect(refusal({ ...request, mediaId: 'not-a-uuid' })).toContain('mediaId')
    expect(refusal({ ...request, jobId: request.jobId.toUpperCase() })).toBeNull()
  })

  test('a video recipe names its poster and renditions apart', () => {
    const video = { ...request, source: { ...request.source, format: 'mp4' } }
    const recipe = (poster: string, renditions: string[]) => ({
      ...video,
      recipe: {
        poster: { name: poster, width: 160, height: 160 },
        renditions: renditions.map((name) => ({ name, height: 360 })),
      },
    })
    const refused = (value: unknown) => {
      const decoded = decodeMessage(VideoRequestSchema, bytes(value))
      return decoded.ok ? null : decoded.reason
    }
    expect(refused(recipe('poster', ['360p']))).toBeNull()
    expect(refused(recipe('poster', ['360p', '360p']))).toContain('rendition names must be unique')
    expect(refused(recipe('360p', ['360p']))).toContain('two outputs would be named 360p')
    // The stream's own outputs are named after its rungs: those names are taken too, and must fit 32 characters.
    const streamed = (extra: object, renditions = ['360p']) => {
      const value = recipe('poster', renditions)
      return { ...value, recipe: { ...value.recipe, ...extra } }
    }
    expect(refused(streamed({ hls: { name: 'hls' }, storyboard: { name: 'storyboard' } }))).toBeNull()
    expect(refused(streamed({ hls: { name: 'hls' } }, ['360p', 'hls-360p']))).toContain(
      'two outputs would be named hls-360p:'
    )
    expect(refused(streamed({ hls: { name: 'h'.repeat(30) } }))).toContain('longer than 32 characters')
    expect(refused(streamed({ storyboard: { name: 'poster' } }))).toContain('two outputs would be named poster')
    expect(refused(streamed({ mp4: false }))).toContain('must ask for hls')
    expect(refused(streamed({ mp4: false, hls: { name: 'hls', segmentSeconds: 5 } }))).toContain('segmentSeconds')
  })
})
