/**
 * Benchmark (not a test): one large upload three ways through the API, against moto's S3 server, next to a direct
 * S3 upload of the same bytes to the same server (lib-storage's Upload, 8 MiB parts, 4 at a time): a tus upload
 * with tus-js-client (50 MiB chunks), a direct multipart upload through presigned part URLs, and a POST body.
 * moto is warmed up by one upload first, and the baseline runs before and after the others (its mean is what the
 * ratios divide by); each object is deleted after its run, as moto keeps them in memory.
 * Needs RabbitMQ and moto_server. Run: `bun tests/bench/uploads.ts [MiB]` (default 1024).
 */
import { DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tus from 'tus-js-client'
import { s3ClientOptions } from '@app/shared'
import { readConfig as readApiConfig, serverBodyCap } from '../../services/api/config.ts'
import { startApi } from '../../services/api/service.ts'
import { TEST_API_KEY, apiKey } from '../helpers/env.ts'
import { deleteNamespaces, trackNamespace } from '../helpers/infra.ts'
import { startMoto } from '../helpers/moto.ts'

const MiB = 1024 * 1024
const size = Number(process.argv[2] ?? 1024) * MiB
const moto = await startMoto('bench')
const system = `bench${crypto.randomUUID().slice(0, 6)}`
trackNamespace(system)
const env = {
  ...moto.env,
  SYSTEM: system,
  DATA_DIR: mkdtempSync(join(tmpdir(), 'bench-data-')),
  API_KEYS: `bench:${TEST_API_KEY}`,
  RATE_LIMIT_PER_MINUTE: '0',
  MAX_UPLOAD_BYTES: `${Math.ceil(size / MiB) + 16}M`,
  LOG_LEVEL: 'warn',
}
const config = readApiConfig(env)
const api = await startApi(config)
const server = Bun.serve({ port: 0, fetch: api.app.fetch, maxRequestBodySize: serverBodyCap(config.maxUploadBytes), idleTimeout: 255 })
const url = `http://127.0.0.1:${server.port}`

// One buffer for every run: a PNG signature (so it sniffs as an image), then random bytes (incompressible).
const file = Buffer.alloc(size)
for (let at = 0; at < size; at += 65536) crypto.getRandomValues(file.subarray(at, Math.min(size, at + 65536)))
file.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52], 0)

/** Runs `run`, which resolves with the key it stored (deleted afterwards), and prints its time and rate. */
async function timed(name: string, run: () => Promise<string>): Promise<number> {
  const started = performance.now()
  const key = await run()
  const seconds = (performance.now() - started) / 1000
  await s3.send(new DeleteObjectCommand({ Bucket: config.s3.bucket, Key: key }))
  console.log(`${name.padEnd(44)} ${seconds.toFixed(1).padStart(6)} s  ${(size / MiB / seconds).toFixed(0).padStart(5)} MiB/s`)
  return seconds
}

const s3 = new S3Client(s3ClientOptions({ ...config.s3 }))
const originalOf = (mediaId: string) => `${system}/originals/${mediaId}`
const directly = async () => {
  const key = `bench/${crypto.randomUUID()}`
  await new Upload({ client: s3, params: { Bucket: config.s3.bucket, Key: key, Body: file }, partSize: 8 * MiB, queueSize: 4 }).done()
  return key
}
await timed('(warm-up: S3 directly)', directly)
const before = await timed('S3 directly (lib-storage, 8 MiB × 4)', directly)
const tusSeconds = await timed('tus (tus-js-client, 50 MiB chunks)', () =>
  new Promise<string>((resolve, reject) => {
    const upload = new tus.Upload(file, {
      endpoint: `${url}/v1/uploads`,
      headers: { authorization: `Bearer ${TEST_API_KEY}` },
      chunkSize: 50 * MiB,
      retryDelays: [],
      onSuccess: (payload) => resolve(originalOf(payload.lastResponse.getHeader('X-Media-Id')!)),
      onError: reject,
    })
    upload.start()
  })
)
const direct = await timed('direct multipart (presigned 8 MiB parts × 4)', async () => {
  const json = { ...apiKey, 'content-type': 'application/json' }
  const { key, uploadId } = (await (await fetch(`${url}/v1/direct-uploads/s3/multipart`, { method: 'POST', headers: json, body: '{}' })).json()) as { key: string; uploadId: string }
  const partSize = 8 * MiB
  const count = Math.ceil(size / partSize)
  const base = `${url}/v1/direct-uploads/s3/multipart/${encodeURIComponent(uploadId)}`
  const parts: { PartNumber: number; ETag: string }[] = []
  for (let first = 1; first <= count; first += 4) {
    const numbers = Array.from({ length: Math.min(4, count - first + 1) }, (_, i) => first + i)
    const { presignedUrls } = (await (await fetch(`${base}/batch?key=${encodeURIComponent(key)}&partNumbers=${numbers.join(',')}`, { headers: apiKey })).json()) as {
      presignedUrls: Record<string, string>
    }
    await Promise.all(
      numbers.map(async (n) => {
        const put = await fetch(presignedUrls[n]!, { method: 'PUT', body: file.subarray((n - 1) * partSize, n * partSize) })
        parts.push({ PartNumber: n, ETag: put.headers.get('etag')! })
      })
    )
  }
  const done = await fetch(`${base}/complete?key=${encodeURIComponent(key)}`, { method: 'POST', headers: json, body: JSON.stringify({ parts }) })
  if (!done.ok) throw new Error(`complete: ${done.status} ${await done.text()}`)
  return key
})
const post = await timed('POST /v1/media (one streamed body)', async () => {
  const res = await fetch(`${url}/v1/media`, { method: 'POST', body: file, headers: apiKey })
  if (res.status !== 202) throw new Error(`POST: ${res.status} ${await res.text()}`)
  return originalOf(((await res.json()) as { id: string }).id)
})
const after = await timed('S3 directly, again', directly)
const baseline = (before + after) / 2
console.log(`\nvs S3 directly (mean of both runs): tus ${(tusSeconds / baseline).toFixed(2)}×, direct multipart ${(direct / baseline).toFixed(2)}×, POST ${(post / baseline).toFixed(2)}× the time`)

await server.stop(true)
await api.stop()
await deleteNamespaces()
await moto.stop()
process.exit(0)
