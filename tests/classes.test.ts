/**
 * Asking for bulk work on every way in (POST `?priority=`, tus `Upload-Metadata priority`, a direct upload's
 * completion) and with a bulk key, against the real API, RabbitMQ and moto's S3 (which tus needs): each job's request
 * lands in its class's queue, with its AMQP priority. A bad value is a 400 naming it. No processor runs.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { queueNames, type JobClass } from '@app/shared'
import { paddedPng } from './helpers/image-fixtures.ts'
import { useInfra } from './helpers/infra.ts'
import { startMoto, type Moto } from './helpers/moto.ts'
import { connectRabbit } from './helpers/rabbit.ts'
import { startStack, type Stack } from './helpers/stack.ts'

await useInfra()

const ADMIN_TOKEN = 'classes-test-admin-token-0123456789'
const TUS = { 'tus-resumable': '1.0.0' }
let moto: Moto
let stack: Stack
let rabbit: Awaited<ReturnType<typeof connectRabbit>>
beforeAll(async () => {
  moto = await startMoto()
  stack = await startStack({ images: false, env: { ...moto.env, ADMIN_TOKEN } })
  rabbit = await connectRabbit()
}, 60_000)
afterAll(async () => {
  await rabbit?.close()
  await stack?.stop()
  await moto?.stop()
})

/** The request the job of media `id` was sent with: taken off its class's queue, which must hold it. */
async function requestOf(id: string, cls: JobClass) {
  const media = await stack.api.store.media.get(id)
  expect(media!.cls).toBe(cls)
  const names = queueNames(stack.env.SYSTEM!, 'images')
  const message = await rabbit.nextMessage(cls === 'bulk' ? names.bulk : names.request)
  expect(message.properties.correlationId).toBe(media!.jobId)
  return message
}

const b64 = (text: string) => Buffer.from(text).toString('base64')

/** A tus upload of `bytes` in one request (creation with upload), with `metadata`; the answer. */
const tusUpload = (bytes: Uint8Array, metadata: Record<string, string>, headers: Record<string, string> = {}) =>
  stack.fetch('/v1/uploads', {
    method: 'POST',
    body: bytes as Uint8Array<ArrayBuffer>,
    headers: {
      ...headers,
      ...TUS,
      'upload-length': String(bytes.byteLength),
      'upload-metadata': Object.entries(metadata)
        .map(([k, v]) => `${k} ${b64(v)}`)
        .join(','),
      'content-type': 'application/offset+octet-stream',
    },
  })

test('POST: interactive by default, bulk when asked; the request goes to that queue with its priority', async () => {
  const image = await paddedPng(1000)
  const plain = (await (await stack.upload(image)).json()) as { id: string; priority: string }
  expect(plain.priority).toBe('interactive')
  expect((await requestOf(plain.id, 'interactive')).properties.priority).toBe(5)
  const bulk = (await (await stack.upload(image, {}, { priority: 'bulk' })).json()) as { id: string; priority: string }
  expect(bulk.priority).toBe('bulk')
  expect((await requestOf(bulk.id, 'bulk')).properties.priority).toBe(0)
  const media = (await (await stack.fetch(`/v1/media/${bulk.id}`)).json()) as { priority: string }
  expect(media.priority).toBe('bulk')
})

test('tus: Upload-Metadata priority bulk makes a bulk job', async () => {
  const res = await tusUpload(await paddedPng(1200), { filename: 'a.png', priority: 'bulk' })
  expect(res.status).toBe(201)
  await requestOf(res.headers.get('x-media-id')!, 'bulk')
})

test("direct: the completion's priority makes the job's class", async () => {
  for (const priority of ['bulk', 'interactive'] as const) {
    const params = (await (
      await stack.fetch('/v1/direct-uploads/s3/params?filename=a.png&type=image%2Fpng')
    ).json()) as { url: string; key: string }
    expect((await fetch(params.url, { method: 'PUT', body: await paddedPng(1100) })).status).toBe(200)
    const completed = await stack.fetch(`/v1/direct-uploads/complete?key=${encodeURIComponent(params.key)}`, {
      method: 'POST',
      body: JSON.stringify({ priority }),
      headers: { 'content-type': 'application/json' },
    })
    expect(completed.status).toBe(202)
    const { id } = (await completed.json()) as { id: string }
    await requestOf(id, priority)
  }
})

test('a bulk key (made by an operator) makes every upload of it bulk, whatever it asks', async () => {
  const made = await fetch(`${stack.url}/v1/admin/keys`, {
    method: 'POST',
    body: JSON.stringify({ tenant: 'importer', name: 'the nightly import', priority: 'bulk' }),
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
  })
  expect(made.status).toBe(201)
  const { key, priority } = (await made.json()) as { key: string; priority: string }
  expect(priority).toBe('bulk')
  const auth = { authorization: `Bearer ${key}` }
  const posted = (await (await stack.upload(await paddedPng(900), auth, { priority: 'interactive' })).json()) as {
    id: string
  }
  await requestOf(posted.id, 'bulk')
  const viaTus = await tusUpload(await paddedPng(1300), { priority: 'interactive' }, auth)
  await requestOf(viaTus.headers.get('x-media-id')!, 'bulk')
})

test('a priority that is neither interactive nor bulk is a 400 naming it, on every way in; nothing is stored', async () => {
  const image = await paddedPng(1000)
  const posted = await stack.upload(image, {}, { priority: 'urgent' })
  expect(posted.status).toBe(400)
  expect(((await posted.json()) as { error: { message: string } }).error.message).toMatch(/priority.*interactive/)
  const viaTus = await tusUpload(image, { priority: 'urgent' })
  expect(viaTus.status).toBe(400)
  expect(((await viaTus.json()) as { error: { message: string } }).error.message).toBe(
    'Upload-Metadata priority must be "interactive" or "bulk"'
  )
  const completed = await stack.fetch('/v1/direct-uploads/complete?key=nothing', {
    method: 'POST',
    body: JSON.stringify({ priority: 'urgent' }),
    headers: { 'content-type': 'application/json' },
  })
  expect(completed.status).toBe(400)
  const names = queueNames(stack.env.SYSTEM!, 'images')
  expect(await rabbit.messageCount(names.request)).toBe(0)
  expect(await rabbit.messageCount(names.bulk)).toBe(0)
})
