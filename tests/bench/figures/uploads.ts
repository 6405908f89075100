/**
 * Figure 6: a 1 GiB upload streamed to S3 through the API (a raw POST body, a multipart/form-data POST, tus with
 * tus-js-client), against a direct upload of the same bytes to the same store (lib-storage, 8 MiB parts, 4 at a
 * time), with the API's peak RSS during each. The store is moto's S3 server, as a store other than the embedded one;
 * the direct upload runs first and last, and its mean is the baseline. Each object is deleted after its run (moto
 * keeps them in memory).
 */
import { join } from 'node:path'
import { DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import * as tus from 'tus-js-client'
import { s3ClientOptions } from '@app/shared'
import { originalKey } from '../../../services/api/uploads/object-keys.ts'
import { TEST_API_KEY, apiKey } from '../../helpers/env.ts'
import { startMoto } from '../../helpers/moto.ts'
import { cpuSecondsOf, rssOf, startStack } from '../stack.ts'
import { MiB, type Bench, type Figure } from '../stats.ts'

export async function uploadFigure(bench: Bench): Promise<Figure> {
  bench.say('figure 6: 1 GiB uploads')
  const size = (bench.quick ? 256 : 1024) * MiB
  const moto = await startMoto('bench')
  const stack = await startStack({
    dataDir: join(bench.work, 'uploads-data'),
    env: { ...moto.env, MAX_UPLOAD_BYTES: `${size / MiB + 16}M` },
  })
  try {
    const s3 = new S3Client(
      s3ClientOptions({
        endpoint: moto.env.S3_ENDPOINT,
        region: 'us-east-1',
        accessKeyId: moto.env.S3_ACCESS_KEY_ID!,
        secretAccessKey: moto.env.S3_SECRET_ACCESS_KEY!,
        timeoutSeconds: 300,
      })
    )
    const bucket = moto.env.S3_BUCKET!
    // One buffer for every run: a PNG signature (so it sniffs as an image), then random bytes (incompressible).
    const file = Buffer.alloc(size)
    for (let at = 0; at < size; at += 65536) crypto.getRandomValues(file.subarray(at, Math.min(size, at + 65536)))
    file.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52], 0)
    /** Seconds a run took, and the API's peak RSS meanwhile (sampled every 20 ms); the object it stored is deleted. */
    const timed = async (run: () => Promise<{ bucket: string; key: string }>) => {
      let peak = rssOf(stack.pids.api)
      const sampler = setInterval(() => (peak = Math.max(peak, rssOf(stack.pids.api))), 20)
      const cpuBefore = { moto: cpuSecondsOf(moto.pid), api: cpuSecondsOf(stack.pids.api), client: process.cpuUsage() }
      const started = performance.now()
      const stored = await run().finally(() => clearInterval(sampler))
      const seconds = (performance.now() - started) / 1000
      const client = process.cpuUsage(cpuBefore.client)
      // CPU seconds per GiB moved, by process: with two cores, what the store leaves is what the rest can use.
      const perGiB = (cpuSeconds: number) => Math.round(((cpuSeconds * 1024 * MiB) / size) * 10) / 10
      const cpu = {
        moto: perGiB(cpuSecondsOf(moto.pid) - cpuBefore.moto),
        api: perGiB(cpuSecondsOf(stack.pids.api) - cpuBefore.api),
        client: perGiB((client.user + client.system) / 1e6),
      }
      await s3.send(new DeleteObjectCommand({ Bucket: stored.bucket, Key: stored.key }))
      return { seconds, peakRss: peak, mibPerSecond: size / MiB / seconds, cpu }
    }
    const directly = async () => {
      const key = `bench/${crypto.randomUUID()}`
      await new Upload({
        client: s3,
        params: { Bucket: bucket, Key: key, Body: file },
        partSize: 8 * MiB,
        queueSize: 4,
      }).done()
      return { bucket, key }
    }
    /** Where the API put a media's original (the system's key layout: `<system>/originals/<id>`). */
    const stored = async (res: Response) => {
      if (res.status !== 202 && res.status !== 204 && res.status !== 200)
        throw new Error(`upload answered ${res.status}: ${await res.text()}`)
      return { bucket, key: originalKey(stack.system, ((await res.json()) as { id: string }).id) }
    }
    const idleRss = rssOf(stack.pids.api)
    await timed(directly) // warm-up: moto's first large upload is slow
    const before = await timed(directly)
    const raw = await timed(async () =>
      stored(await fetch(`${stack.url}/v1/media`, { method: 'POST', body: file, headers: apiKey }))
    )
    const form = await timed(async () => {
      const body = new FormData()
      body.append('file', new Blob([file], { type: 'image/png' }), 'big.png')
      return stored(await fetch(`${stack.url}/v1/media`, { method: 'POST', body, headers: apiKey }))
    })
    const resumable = await timed(
      () =>
        new Promise((resolve, reject) => {
          const upload = new tus.Upload(file, {
            endpoint: `${stack.url}/v1/uploads`,
            headers: { authorization: `Bearer ${TEST_API_KEY}` },
            chunkSize: 50 * MiB,
            retryDelays: [],
            onSuccess: (payload) =>
              resolve({ bucket, key: originalKey(stack.system, payload.lastResponse.getHeader('X-Media-Id')!) }),
            onError: reject,
          })
          upload.start()
        })
    )
    const after = await timed(directly)
    const baseline = (before.mibPerSecond + after.mibPerSecond) / 2
    const runs = { raw, form, tus: resumable }
    const worst = Math.min(...Object.values(runs).map((r) => r.mibPerSecond)) / baseline
    const peak = Math.max(...Object.values(runs).map((r) => r.peakRss))
    const mb = (bytes: number) => (bytes / 1e6).toFixed(0)
    return {
      id: 6,
      what: `${size / MiB} MiB upload through the API to S3 (moto): throughput (MiB/s) and the API's peak RSS (MB)`,
      value: Object.entries(runs)
        .map(([name, r]) => `${name} ${r.mibPerSecond.toFixed(0)} MiB/s, ${mb(r.peakRss)} MB`)
        .join('; '),
      baseline: `direct lib-storage (8 MiB × 4): ${before.mibPerSecond.toFixed(0)} and ${after.mibPerSecond.toFixed(0)} MiB/s`,
      ratio: worst,
      target: 'RSS ≤ 150 MB; ≥ 0.8 of direct',
      pass: peak <= 150e6 && worst >= 0.8,
      note: `CPU seconds per GiB (moto, API, client): ${Object.entries({ direct: before, ...runs })
        .map(([name, r]) => `${name} ${r.cpu.moto}, ${r.cpu.api}, ${r.cpu.client}`)
        .join('; ')}; the API idled at ${mb(idleRss)} MB`,
      data: { sizeBytes: size, runs, direct: [before, after] },
    }
  } finally {
    await stack.stop()
    await moto.stop()
  }
}
