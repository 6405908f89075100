/** The shared protocol: names, topology and the codec's answers to bad messages. */
import { describe, expect, test } from 'bun:test'
import {
  ImageRequestSchema,
  ImageResultSchema,
  JobUpdateSchema,
  decodeMessage,
  encodeMessage,
  failureClassOf,
  queueNames,
  retryDelayMs,
  topology,
} from '@app/shared'

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
  })

  test('a request round-trips, with defaults filled in', () => {
    const decoded = decodeMessage(ImageRequestSchema, encodeMessage(ImageRequestSchema, request))
    expect(decoded).toEqual({ ok: true, value: { ...request, recipe: { outputs: [{ ...request.recipe.outputs[0]!, quality: 80 }] } } })
  })

  test('bad messages are refused with a reason, never thrown', () => {
    expect(decodeMessage(ImageRequestSchema, new TextEncoder().encode('{nope'))).toMatchObject({ ok: false, reason: expect.stringContaining('JSON') })
    expect(decodeMessage(ImageRequestSchema, bytes({ ...request, version: 2 }))).toMatchObject({ ok: false, reason: expect.stringContaining('version 2') })
    expect(decodeMessage(ImageRequestSchema, bytes({ ...request, source: { ...request.source, key: '../etc/passwd' } }))).toMatchObject({ ok: false })
    expect(decodeMessage(JobUpdateSchema, bytes({ version: 1, jobId: request.jobId, status: 'processing', stage: 'processing', progress: 140, at: new Date().toISOString() }))).toMatchObject({ ok: false })
  })

  test('an invalid outgoing message fails in the producer', () => {
    expect(() => encodeMessage(ImageRequestSchema, { ...request, jobId: 'x' })).toThrow(/refusing to send/)
  })

  test('failures carry a class: known codes map to one, and an unknown class is refused', () => {
    expect(['invalid_media', 'unsupported_format', 'limit_exceeded', 'source_missing', 'timeout'].map(failureClassOf)).toEqual(Array(5).fill('input'))
    expect([failureClassOf('gave_up'), failureClassOf('crashed'), failureClassOf('stalled'), failureClassOf('processing_error')]).toEqual([
      'transient',
      'crash',
      'crash',
      'internal',
    ])
    expect(failureClassOf('something_new')).toBe('internal')
    const failed = { version: 1, jobId: crypto.randomUUID(), status: 'failed', at: new Date().toISOString() }
    expect(decodeMessage(ImageResultSchema, bytes({ ...failed, error: { code: 'gave_up', message: 'm', class: 'transient' } })).ok).toBe(true)
    expect(decodeMessage(ImageResultSchema, bytes({ ...failed, error: { code: 'gave_up', message: 'm' } })).ok).toBe(true)
    const bad = decodeMessage(ImageResultSchema, bytes({ ...failed, error: { code: 'gave_up', message: 'm', class: 'flaky' } }))
    expect(bad.ok).toBe(false)
  })

  test('transient retries back off 1, 2, 4, 8 s, capped at 30 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(retryDelayMs)).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000])
  })
})
