/**
 * The multipart sweep: an API killed in the middle of storing a large upload leaves a multipart upload behind;
 * the sweep (hourly, or `POST /v1/admin/sweep`) aborts it, and no record of the unfinished upload exists.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { spawnApi } from './helpers/api-process.ts'
import type { ServiceProcess } from './helpers/service-process.ts'
import { apiKey, testEnv } from './helpers/env.ts'
import { testS3 } from './helpers/s3.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

const ADMIN_TOKEN = 'sweeper-test-token-0123456789'

describe('abandoned multipart uploads', () => {
  let env: Record<string, string>
  let s3: ReturnType<typeof testS3>
  const children: ServiceProcess[] = []
  beforeAll(() => {
    env = testEnv({ PORT: String(20000 + Math.floor(Math.random() * 20000)), ADMIN_TOKEN })
    s3 = testS3(env)
  })
  afterAll(async () => {
    await Promise.all(children.map((c) => c.kill('SIGKILL')))
    s3?.close()
  })
  const pending = () => s3.openUploads(`${env.SYSTEM}/`)

  test('left by an API killed mid-upload are aborted by the sweep', async () => {
    children.push(await spawnApi(env))
    // A body that sends 12 MiB (two S3 parts) and then holds the connection open: the upload stays unfinished.
    let sent = 0
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent >= 12 * 1024 * 1024) return new Promise(() => {}) // never ends
        const chunk = new Uint8Array(1024 * 1024)
        if (sent === 0) chunk.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
        sent += chunk.byteLength
        controller.enqueue(chunk)
      },
    })
    const upload = fetch(`http://127.0.0.1:${env.PORT}/v1/media`, { method: 'POST', body, headers: apiKey }).catch(
      (error: Error) => error
    )
    const deadline = Date.now() + 15_000
    while ((await pending()).length === 0) {
      if (Date.now() > deadline) throw new Error('no multipart upload started within 15 s')
      await Bun.sleep(50)
    }
    await children[0]!.kill('SIGKILL')
    expect(await upload).toBeInstanceOf(Error) // the client never got an answer
    const [left] = await pending()
    expect(left).toStartWith(`${env.SYSTEM}/originals/`)

    children.push(await spawnApi(env))
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` }
    // Younger than the age limit: kept (it may be an upload in progress on another instance).
    const young = await fetch(`http://127.0.0.1:${env.PORT}/v1/admin/sweep?olderThanSeconds=3600`, {
      method: 'POST',
      headers: auth,
    })
    expect(await young.json()).toEqual({ abortedUploads: [] })
    const res = await fetch(`http://127.0.0.1:${env.PORT}/v1/admin/sweep?olderThanSeconds=0`, {
      method: 'POST',
      headers: auth,
    })
    expect(await res.json()).toEqual({ abortedUploads: [left] })
    expect(await pending()).toEqual([])
    // Nothing of the unfinished upload was recorded.
    const health = (await (await fetch(`http://127.0.0.1:${env.PORT}/health`)).json()) as {
      jobs: Record<string, number>
    }
    expect(Object.values(health.jobs).reduce((a, b) => a + b, 0)).toBe(0)
  }, 60_000)
})
