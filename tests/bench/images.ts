/**
 * Benchmark (not a test): time from upload to `completed` through the whole system, for a 12-megapixel photo and a
 * 64×64 one, median of N, next to bare sharp doing the same work (thumb + preview WebP) in the same process.
 * Needs RabbitMQ; starts its own S3 server. Run: `bun tests/bench/images.ts [N]`.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startS3Server, LOCAL_S3_CREDENTIALS } from '../../infra/s3-server.ts'
import { readConfig as readApiConfig } from '../../services/api/config.ts'
import { startApi } from '../../services/api/service.ts'
import { readConfig as readImagesConfig, start as startImages } from '../../services/images/main.ts'
import { TEST_API_KEY, apiKey } from '../helpers/env.ts'
import { deleteNamespaces, trackNamespace } from '../helpers/infra.ts'
import { bareSharp, photo } from './work.ts'

const runs = Number(process.argv[2] ?? 20)
const s3 = await startS3Server({ port: 0, directory: mkdtempSync(join(tmpdir(), 'bench-s3-')), bucket: 'bench' })
const system = `bench${crypto.randomUUID().slice(0, 6)}`
trackNamespace(system)
const env = {
  SYSTEM: system,
  S3_ENDPOINT: s3.endpoint,
  S3_BUCKET: 'bench',
  S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
  S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
  DATA_DIR: mkdtempSync(join(tmpdir(), 'bench-data-')),
  API_KEYS: `bench:${TEST_API_KEY}`,
  // The benchmark is one client sending as fast as it can; the per-key limits are not what it measures.
  RATE_LIMIT_PER_MINUTE: '0',
}
const api = await startApi(readApiConfig(env))
const server = Bun.serve({ port: 0, fetch: api.app.fetch, maxRequestBodySize: 1 << 30 })
const images = await startImages(readImagesConfig(env))
const url = `http://127.0.0.1:${server.port}`


async function pipeline(bytes: Uint8Array<ArrayBuffer>): Promise<number> {
  const started = performance.now()
  const res = await fetch(`${url}/v1/media`, { method: 'POST', body: bytes, headers: apiKey })
  const { id } = (await res.json()) as { id: string }
  for (;;) {
    const media = (await (await fetch(`${url}/v1/media/${id}`, { headers: apiKey })).json()) as { status: string }
    if (media.status === 'completed') return performance.now() - started
    if (media.status === 'failed') throw new Error(`benchmark job failed: ${JSON.stringify(media)}`)
    await Bun.sleep(1)
  }
}


const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
for (const [label, width, height] of [['12 MP (4000×3000)', 4000, 3000], ['64×64', 64, 64]] as const) {
  const bytes = await photo(width, height)
  await pipeline(bytes) // warm-up
  await bareSharp(bytes)
  const p: number[] = []
  const b: number[] = []
  for (let i = 0; i < runs; i++) {
    p.push(await pipeline(bytes))
    b.push(await bareSharp(bytes))
  }
  const mp = median(p)
  const mb = median(b)
  console.log(`${label}: upload→completed median ${mp.toFixed(1)} ms; bare sharp ${mb.toFixed(1)} ms; ratio ${(mp / mb).toFixed(2)} (n=${runs}, ${(bytes.byteLength / 1024).toFixed(0)} KiB)`)
}

await images.stop()
await server.stop(true)
await api.stop()
await s3.close()
await deleteNamespaces()
