/**
 * Operating the system: one upload followed by its trace id through the JSON logs of the API and the image processor
 * (real child processes, the real broker and S3); `/metrics` of both checked by `promtool check metrics` and for the
 * series the upload must have moved; `/livez` and `/readyz`, and readiness failing for what is down.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import sharp from 'sharp'
import { formatTraceparent, childSpan, parseTraceparent } from '@app/shared'
import { freePort } from './helpers/ports.ts'
import { apiKey, testEnv } from './helpers/env.ts'
import { useInfra } from './helpers/infra.ts'
import { spawnApi } from './helpers/api-process.ts'
import { ServiceProcess } from './helpers/service-process.ts'
import type { MediaBody } from './helpers/stack.ts'

await useInfra()
const root = join(import.meta.dir, '..')

interface LogLine {
  level: string
  time: string
  service: string
  msg: string
  traceId?: string
  jobId?: string
  mediaId?: string
  tenant?: string
  [field: string]: unknown
}

/** Every line of a service's stdout, each of which must be one JSON object. */
function jsonLines(service: ServiceProcess): LogLine[] {
  return service.log
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => {
      try {
        return JSON.parse(line) as LogLine
      } catch {
        throw new Error(`${service.name} wrote a line that is not JSON: ${line}`)
      }
    })
}

/**
 * prom-client's own default metrics that promtool's linter flags: gauges named `_total` (upstream names, kept so
 * that dashboards written for prom-client work). Nothing else may be flagged.
 */
const PROM_CLIENT_LINT = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
]

/**
 * `promtool check metrics` on a scrape: the text must parse (exit 1 otherwise), and every lint problem (exit 3) must
 * be one of prom-client's known ones.
 */
async function promtoolCheck(text: string): Promise<void> {
  if (!Bun.which('promtool'))
    throw new Error('promtool is not installed: run `bash infra/setup.sh` (Debian package prometheus)')
  const child = Bun.spawn(['promtool', 'check', 'metrics'], {
    stdin: new TextEncoder().encode(text),
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  const problems = (out + err).split('\n').filter((line) => line.trim())
  const ours = problems.filter((line) => !PROM_CLIENT_LINT.some((name) => line.startsWith(`${name} `)))
  if ((code !== 0 && code !== 3) || ours.length)
    throw new Error(`promtool check metrics failed (${code}):\n${ours.join('\n') || problems.join('\n')}`)
}

/** The value of one series in a scrape, or undefined. `labels` must all match (other labels may be present). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)/.exec(line)
    if (!match || match[1] !== name) continue
    const have = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]])
    )
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(match[3])
  }
  return undefined
}

describe('one upload, followed across services', () => {
  let api: ServiceProcess
  let images: ServiceProcess
  let apiUrl: string
  let imagesMetrics: string
  const clientTrace = childSpan(null)
  let media: MediaBody
  let accepted: Response

  beforeAll(async () => {
    const port = await freePort()
    const metricsPort = await freePort()
    const env = testEnv({ PORT: String(port), LOG_LEVEL: 'debug', LOG_FORMAT: 'json' })
    apiUrl = `http://127.0.0.1:${port}`
    imagesMetrics = `http://127.0.0.1:${metricsPort}`
    api = await spawnApi(env)
    images = new ServiceProcess(
      'images',
      ['bun', join(root, 'services/images/main.ts')],
      { ...env, METRICS_PORT: String(metricsPort) },
      /consuming/
    )
    await images.start()

    const png = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#3366cc' } })
      .png()
      .toBuffer()
    accepted = await fetch(`${apiUrl}/v1/media`, {
      method: 'POST',
      body: png,
      headers: { ...apiKey, 'content-type': 'application/octet-stream', traceparent: formatTraceparent(clientTrace) },
    })
    expect(accepted.status).toBe(202)
    const { id } = (await accepted.json()) as { id: string }
    const deadline = Date.now() + 30_000
    for (;;) {
      media = (await (await fetch(`${apiUrl}/v1/media/${id}`, { headers: apiKey })).json()) as MediaBody
      if (['completed', 'failed', 'cancelled'].includes(media.status)) break
      if (Date.now() > deadline) throw new Error(`media ${id} still ${media.status}`)
      await Bun.sleep(50)
    }
    expect(media.status).toBe('completed')
    // The processor logs its outcome once the broker confirmed the result, which may be after the API applied it.
    await images.waitForLog(/"msg":"job completed"/, 10_000)
  }, 60_000)

  afterAll(async () => {
    await images?.kill('SIGTERM')
    await api?.kill('SIGTERM')
  })

  test("the client's trace id is the upload's: in the answer's traceparent and in the media body", () => {
    const answered = parseTraceparent(accepted.headers.get('traceparent'))
    expect(answered?.traceId).toBe(clientTrace.traceId)
    // A span of the API's own, child of the client's.
    expect(answered?.spanId).not.toBe(clientTrace.spanId)
    expect((media as MediaBody & { traceId: string }).traceId).toBe(clientTrace.traceId)
  })

  test('every log line of the job, in the API and in the processor, is JSON with the service and the one trace id', () => {
    const apiLines = jsonLines(api).filter((l) => l.jobId === media.jobId)
    const imageLines = jsonLines(images).filter((l) => l.jobId === media.jobId)
    for (const line of [...apiLines, ...imageLines]) {
      expect(line.traceId).toBe(clientTrace.traceId)
      expect(line.mediaId).toBe(media.id)
      expect(['api', 'images']).toContain(line.service)
    }
    // The API: the upload, the first word from the processor, the result; with the tenant.
    expect(apiLines.map((l) => l.msg)).toEqual(
      expect.arrayContaining(['upload accepted; job queued', 'job processing', 'job completed'])
    )
    for (const line of apiLines) expect(line.tenant).toBe('test')
    expect(apiLines.every((l) => l.service === 'api')).toBe(true)
    // The processor: the job's start and end.
    expect(imageLines.map((l) => l.msg)).toEqual(expect.arrayContaining(['job started', 'job completed']))
    expect(imageLines.every((l) => l.service === 'images')).toBe(true)
    // The HTTP request lines carry the trace too (the upload's has no job id yet: it is logged as it is answered).
    const post = jsonLines(api).find((l) => l.method === 'POST' && l.route === '/v1/media')
    expect(post).toMatchObject({ traceId: clientTrace.traceId, status: 202, tenant: 'test', level: 'info' })
  })

  test("the API's /metrics passes promtool and counts the upload, the job and the broker's queues", async () => {
    const res = await fetch(`${apiUrl}/metrics`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toContain('text/plain')
    const text = await res.text()
    await promtoolCheck(text)
    expect(sample(text, 'media_uploads_total', { service: 'api', kind: 'image', outcome: 'accepted' })).toBe(1)
    expect(sample(text, 'media_upload_bytes_total', { kind: 'image', outcome: 'accepted' })).toBeGreaterThan(0)
    expect(sample(text, 'media_jobs_finished_total', { kind: 'image', status: 'completed' })).toBe(1)
    expect(sample(text, 'media_job_duration_seconds_count', { kind: 'image', status: 'completed' })).toBe(1)
    expect(sample(text, 'media_job_queued_seconds_count', { kind: 'image' })).toBe(1)
    expect(sample(text, 'media_jobs', { kind: 'image', status: 'completed' })).toBe(1)
    expect(sample(text, 'media_jobs_stalled')).toBe(0)
    expect(sample(text, 'media_dead_letters')).toBe(0)
    expect(sample(text, 'media_jobs', { kind: 'video', status: 'failed' })).toBe(0)
    expect(sample(text, 'media_outbox_backlog')).toBe(0)
    expect(sample(text, 'media_outbox_oldest_age_seconds')).toBe(0)
    expect(sample(text, 'media_queue_messages', { kind: 'image', queue: 'request' })).toBe(0)
    expect(sample(text, 'media_queue_consumers', { kind: 'image', queue: 'request' })).toBe(1)
    expect(sample(text, 'media_queue_consumers', { kind: 'video', queue: 'request' })).toBe(0)
    expect(sample(text, 'media_http_requests_total', { method: 'POST', route: '/v1/media', status: '202' })).toBe(1)
    expect(
      sample(text, 'media_http_requests_total', { method: 'GET', route: '/v1/media/:id', status: '200' })
    ).toBeGreaterThan(0)
    // Readiness is checked at the scrape itself, whether or not anything asked /readyz.
    expect(sample(text, 'media_ready', { service: 'api' })).toBe(1)
    expect(sample(text, 'process_resident_memory_bytes', { service: 'api' })).toBeGreaterThan(0)
    expect(sample(text, 'nodejs_eventloop_lag_p99_seconds', { service: 'api' })).toBeGreaterThanOrEqual(0)
    // The heap's size and use, but not V8's heap spaces: Bun walks its whole heap to answer those, at every scrape.
    expect(sample(text, 'nodejs_heap_size_used_bytes', { service: 'api' })).toBeGreaterThan(0)
    expect(text).not.toContain('nodejs_heap_space_size')
    // No ids in labels: every label value is one of a few words, never a UUID.
    expect(text).not.toMatch(/="[0-9a-f]{8}-[0-9a-f]{4}-/)
  })

  test("the processor's /metrics passes promtool and times the job's stages and outputs", async () => {
    const text = await (await fetch(`${imagesMetrics}/metrics`)).text()
    await promtoolCheck(text)
    expect(sample(text, 'media_processor_jobs_total', { service: 'images', kind: 'image', outcome: 'completed' })).toBe(
      1
    )
    expect(sample(text, 'media_job_attempt_seconds_count', { kind: 'image', outcome: 'completed' })).toBe(1)
    for (const stage of ['download', 'process', 'upload'])
      expect(sample(text, 'media_job_stage_seconds_count', { kind: 'image', stage })).toBe(1)
    expect(sample(text, 'media_output_bytes_count', { kind: 'image', format: 'webp' })).toBeGreaterThan(0)
    expect(sample(text, 'media_output_upload_seconds_count', { kind: 'image', format: 'webp' })).toBeGreaterThan(0)
    expect(sample(text, 'media_processor_slots', { state: 'busy' })).toBe(0)
    expect(sample(text, 'media_processor_slots', { state: 'free' })).toBeGreaterThan(0)
    expect(sample(text, 'media_ready', { service: 'images' })).toBe(1)
    expect(text).not.toMatch(/="[0-9a-f]{8}-[0-9a-f]{4}-/)
  })

  test('/livez and /readyz answer on the API and on the processor', async () => {
    for (const base of [apiUrl, imagesMetrics]) {
      const live = await fetch(`${base}/livez`)
      expect(live.status).toBe(200)
      expect(await live.json()).toEqual({ status: 'alive' })
      const ready = await fetch(`${base}/readyz`)
      expect(ready.status).toBe(200)
      expect(((await ready.json()) as { status: string }).status).toBe('ready')
    }
    expect(await (await fetch(`${imagesMetrics}/nothing`)).status).toBe(404)
  })
})

describe('readiness', () => {
  test('the API is alive but not ready while S3 is unreachable, and says so', async () => {
    const port = await freePort()
    const deadS3 = `http://127.0.0.1:${await freePort()}`
    const api = await spawnApi(testEnv({ PORT: String(port), S3_ENDPOINT: deadS3, LOG_FORMAT: 'json' }))
    try {
      expect((await fetch(`http://127.0.0.1:${port}/livez`)).status).toBe(200)
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`)
      expect(ready.status).toBe(503)
      const body = (await ready.json()) as {
        status: string
        down: string[]
        checks: Record<string, { ok: boolean; error?: string }>
      }
      expect(body).toMatchObject({ status: 'unavailable', down: ['s3'] })
      expect(body.checks.database).toEqual({ ok: true })
      expect(body.checks.s3!.error).toBeTruthy()
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
      expect(sample(metrics, 'media_ready', { service: 'api' })).toBe(0)
      expect(sample(metrics, 'media_s3_errors_total', { service: 'api', operation: 'ping' })).toBeGreaterThan(0)
      // The shared gauges still come (the database and the broker answer): a dead S3 does not blank the scrape.
      expect(sample(metrics, 'media_outbox_backlog', { service: 'api' })).toBe(0)
    } finally {
      await api.kill('SIGTERM')
    }
  }, 30_000)
})
