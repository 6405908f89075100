/**
 * Idempotency-Key on POST /v1/media, against the real API, broker and S3: a retried upload gets the first answer and
 * makes nothing new; the same key with another file gets 422; a key in use gets 409; a failed upload frees its key;
 * keys are per tenant.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import sharp from 'sharp'
import { issueKey } from '../services/api/auth/keys.ts'
import { useInfra } from './helpers/infra.ts'
import { startStack, type Stack } from './helpers/stack.ts'

await useInfra()

let stack: Stack
const png = (colour: string) =>
  sharp({ create: { width: 32, height: 24, channels: 3, background: colour } })
    .png()
    .toBuffer()
let jobsBefore = 0
const totalJobs = async () => Object.values(await stack.api.store.media.countJobs()).reduce((a, b) => a + b, 0)

beforeAll(async () => {
  // No processor: the jobs stay queued, which is all these tests need.
  stack = await startStack({ images: false })
  jobsBefore = await totalJobs()
})
afterAll(async () => {
  await stack?.stop()
})

const upload = (body: Uint8Array | ReadableStream<Uint8Array>, key?: string, auth?: string) =>
  stack.upload(body as BodyInit, {
    ...(key ? { 'idempotency-key': key } : {}),
    ...(auth ? { authorization: `Bearer ${auth}` } : {}),
  })

describe('Idempotency-Key', () => {
  test('a retry of an accepted upload gets the first answer, marked as replayed, and makes no second media', async () => {
    const key = crypto.randomUUID()
    const photo = await png('#204080')
    const first = await upload(photo, key)
    expect(first.status).toBe(202)
    const accepted = await first.json()
    const before = await totalJobs()
    for (let i = 0; i < 2; i++) {
      const again = await upload(photo, key)
      expect(again.status).toBe(202)
      expect(again.headers.get('idempotent-replayed')).toBe('true')
      expect(again.headers.get('location')).toBe(first.headers.get('location'))
      expect(await again.json()).toEqual(accepted)
    }
    expect(await totalJobs()).toBe(before)
    expect(first.headers.get('idempotent-replayed')).toBeNull()
  })

  test('the same key with a different file is refused with 422, and makes nothing', async () => {
    const key = crypto.randomUUID()
    expect((await upload(await png('#102030'), key)).status).toBe(202)
    const before = await totalJobs()
    const other = await upload(await png('#302010'), key)
    expect(other.status).toBe(422)
    expect(((await other.json()) as { error: { code: string } }).error.code).toBe('idempotency_key_reused')
    expect(await totalJobs()).toBe(before)
  })

  test('while the first request is still being answered, a second with its key gets 409', async () => {
    const key = crypto.randomUUID()
    const photo = await png('#405060')
    let release = () => {}
    const held = new Promise<void>((resolve) => (release = resolve))
    // The first upload sends its head, then waits: it holds the key meanwhile.
    const slow = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(photo.subarray(0, 100))
        await held
        controller.enqueue(photo.subarray(100))
        controller.close()
      },
    })
    const first = upload(slow, key)
    // Until the first request has claimed the key, a probe could claim it instead: so the probe is an empty upload,
    // which fails (400) and frees the key. Once the first holds it, the probe gets 409.
    const deadline = Date.now() + 10_000
    let probe: Response
    for (;;) {
      probe = await upload(new Uint8Array(0), key)
      if (probe.status !== 400 || Date.now() > deadline) break
    }
    expect(probe.status).toBe(409)
    release()
    expect((await first).status).toBe(202)
    expect((await upload(photo, key)).headers.get('idempotent-replayed')).toBe('true')
  })

  test('an upload that failed frees its key: the retry runs afresh', async () => {
    const key = crypto.randomUUID()
    const refused = await upload(new TextEncoder().encode('just some text, not an image at all'.repeat(10)), key)
    expect(refused.status).toBe(415)
    const retry = await upload(await png('#506070'), key)
    expect(retry.status).toBe(202)
    expect(retry.headers.get('idempotent-replayed')).toBeNull()
  })

  test('keys are per tenant: another tenant with the same key makes its own media', async () => {
    const key = crypto.randomUUID()
    const photo = await png('#607080')
    const ours = (await (await upload(photo, key)).json()) as { id: string }
    const other = await issueKey(stack.api.store, 'other-tenant')
    const theirs = await upload(photo, key, other.key)
    expect(theirs.status).toBe(202)
    expect(theirs.headers.get('idempotent-replayed')).toBeNull()
    expect(((await theirs.json()) as { id: string }).id).not.toBe(ours.id)
  })

  test('a malformed key is refused with 400, naming the header', async () => {
    const res = await upload(await png('#708090'), 'has spaces in it')
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain('Idempotency-Key')
  })

  test('the run made exactly the media it accepted', async () => {
    // 1 + 1 + 1 + 1 + 2 accepted above, whatever the retries.
    expect((await totalJobs()) - jobsBefore).toBe(6)
  })
})
