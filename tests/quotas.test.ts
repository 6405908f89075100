/**
 * Tenants' quotas against the real API, RabbitMQ and moto's S3 (which tus needs): operators set them; over a quota,
 * the next upload gets 403 `quota_exceeded` naming the quota and its value, on all three ways in (POST, tus, direct),
 * with nothing stored; `GET /v1/usage` tells the tenant where it stands. No processor runs: jobs stay waiting.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { issueKey } from '../services/api/auth/keys.ts'
import { paddedPng } from './helpers/image-fixtures.ts'
import { useInfra } from './helpers/infra.ts'
import { startMoto, type Moto } from './helpers/moto.ts'
import { testS3 } from './helpers/s3.ts'
import { startStack, type Stack } from './helpers/stack.ts'

await useInfra()

const ADMIN_TOKEN = 'quotas-test-admin-token-0123456789'
const TUS = { 'tus-resumable': '1.0.0' }
let moto: Moto
let stack: Stack
let s3: ReturnType<typeof testS3>
beforeAll(async () => {
  moto = await startMoto()
  stack = await startStack({ images: false, env: { ...moto.env, ADMIN_TOKEN } })
  s3 = testS3(stack.env)
}, 60_000)
afterAll(async () => {
  s3?.close()
  await stack?.stop()
  await moto?.stop()
})

type Standing = {
  tenant: string
  quota: { storedBytes: number | null; media: number | null; waitingJobs: number | null } | null
  usage: { storedBytes: number; media: number; waitingJobs: number }
}
const admin = (path: string, init: RequestInit = {}) =>
  fetch(`${stack.url}/v1/admin/tenants${path}`, {
    ...init,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
  })
const setQuota = async (tenant: string, quota: Record<string, number | null>) => {
  const res = await admin(`/${tenant}/quota`, { method: 'PUT', body: JSON.stringify(quota) })
  expect(res.status).toBe(200)
  return (await res.json()) as Standing
}

/** A tenant of its own, with helpers that upload each way with its key. */
async function tenant(name: string) {
  const { key } = await issueKey(stack.api.store, name)
  const auth = { authorization: `Bearer ${key}` }
  return {
    auth,
    post: (bytes: Uint8Array) => stack.upload(bytes, auth),
    tus: (length: number) =>
      stack.fetch('/v1/uploads', { method: 'POST', headers: { ...auth, ...TUS, 'upload-length': String(length) } }),
    direct: () => stack.fetch('/v1/direct-uploads/s3/params?filename=a.png&type=image%2Fpng', { headers: auth }),
    usage: async () => (await (await stack.fetch('/v1/usage', { headers: auth })).json()) as Standing,
  }
}

/** The original objects in the store now (an upload refused by its quota adds none). */
const originals = async () => (await s3.keys(`${stack.env.SYSTEM}/originals/`)).length

const expectRefused = async (res: Response, words: string) => {
  expect(res.status).toBe(403)
  const { error } = (await res.json()) as { error: { code: string; message: string } }
  expect(error.code).toBe('quota_exceeded')
  expect(error.message).toContain(words)
}

test('a media quota: the uploads up to it are accepted, the next is refused on every way in, nothing stored', async () => {
  const t = await tenant('quota-media')
  expect((await t.usage()).quota).toBeNull()
  const standing = await setQuota('quota-media', { media: 2 })
  expect(standing).toEqual({
    tenant: 'quota-media',
    quota: { storedBytes: null, media: 2, waitingJobs: null },
    usage: { storedBytes: 0, media: 0, waitingJobs: 0 },
  })
  const sizes = [3000, 5000]
  for (const size of sizes) expect((await t.post(await paddedPng(size))).status).toBe(202)
  expect((await t.usage()).usage).toEqual({ storedBytes: 8000, media: 2, waitingJobs: 2 })
  const before = await originals()
  expect(before).toBeGreaterThanOrEqual(2)
  await expectRefused(await t.post(await paddedPng(1000)), "the tenant's quota of 2 media is reached (it has 2)")
  await expectRefused(await t.tus(1000), 'quota of 2 media')
  await expectRefused(await t.direct(), 'quota of 2 media')
  expect(await originals()).toBe(before)
  // Another tenant is not held to it.
  expect((await (await tenant('quota-other')).post(await paddedPng(1000))).status).toBe(202)
  // Without the quota the tenant uploads again.
  expect((await admin('/quota-media/quota', { method: 'DELETE' })).status).toBe(204)
  expect((await admin('/quota-media/quota', { method: 'DELETE' })).status).toBe(404)
  expect((await t.post(await paddedPng(1000))).status).toBe(202)
})

test('a waiting-jobs quota refuses while that many jobs wait for a processor', async () => {
  const t = await tenant('quota-waiting')
  await setQuota('quota-waiting', { waitingJobs: 1 })
  expect((await t.post(await paddedPng(1000))).status).toBe(202)
  await expectRefused(await t.post(await paddedPng(1000)), "the tenant's quota of 1 jobs waiting is reached")
  await expectRefused(await t.tus(1000), 'jobs waiting')
  expect((await t.usage()).usage.waitingJobs).toBe(1)
})

test('a bytes quota refuses an upload that would cross it, by its declared size, on every way in', async () => {
  const t = await tenant('quota-bytes')
  expect((await t.post(await paddedPng(4000))).status).toBe(202)
  await setQuota('quota-bytes', { storedBytes: 6000 })
  const before = await originals()
  // POST: its Content-Length; tus: its Upload-Length.
  await expectRefused(
    await t.post(await paddedPng(3000)),
    'this upload of 3000 bytes would take the tenant past its quota of 6000 bytes stored (it stores 4000 bytes)'
  )
  await expectRefused(await t.tus(3000), 'past its quota of 6000 bytes')
  // Direct: the size is known once the bytes are staged; the completion refuses it and the staged bytes are removed.
  const params = (await (await t.direct()).json()) as { url: string; key: string }
  expect((await fetch(params.url, { method: 'PUT', body: await paddedPng(3000) })).status).toBe(200)
  const completed = await stack.fetch(`/v1/direct-uploads/complete?key=${encodeURIComponent(params.key)}`, {
    method: 'POST',
    headers: t.auth,
  })
  await expectRefused(completed, 'past its quota of 6000 bytes')
  expect(await s3.keys(`${stack.env.SYSTEM}/uploads/`)).toEqual([])
  expect(await originals()).toBe(before)
  // Within it, an upload passes; at it, even one of unknown size is refused.
  expect((await t.post(await paddedPng(2000))).status).toBe(202)
  await expectRefused(await t.direct(), "the tenant's quota of 6000 bytes stored is reached (it stores 6000 bytes)")
  expect((await t.usage()).usage.storedBytes).toBe(6000)
})

test('operators only: no token 401; a bad quota 400 naming the field; a tenant without one has none', async () => {
  const res = await fetch(`${stack.url}/v1/admin/tenants/quota-x/quota`, { method: 'PUT', body: '{"media":1}' })
  expect(res.status).toBe(401)
  const bad = await admin('/quota-x/quota', { method: 'PUT', body: JSON.stringify({ media: -1, extra: 1 }) })
  expect(bad.status).toBe(400)
  const { error } = (await bad.json()) as { error: { message: string } }
  expect(error.message).toContain('media')
  expect(((await (await admin('/quota-x/quota')).json()) as Standing).quota).toBeNull()
  // A tenant reads its own standing with its key, and nobody else's.
  expect((await fetch(`${stack.url}/v1/usage`)).status).toBe(401)
})
