/**
 * The processor runtime (`@app/shared/processor`), tested once, with a stub media handler whose behaviour each test
 * scripts, against the real RabbitMQ and S3. Tests wait on the runtime's events, never on its log. The media
 * processors' own tests then test media behaviour only.
 */
import { PutObjectCommand } from '@aws-sdk/client-s3'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'bun:test'
import amqp from 'amqplib'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as v from 'valibot'
import {
  ATTEMPTS_HEADER,
  CancelSchema,
  ImageResultSchema,
  JobUpdateSchema,
  MAX_ATTEMPTS,
  cancelExchange,
  cancelMarkerKey,
  decodeMessage,
  encodeMessage,
  parseTraceparent,
  readEnv,
  requestQueue,
  type ImageMetadata,
  type JobClass,
  type ImageRequest,
  type ImageResult,
  type JobUpdate,
} from '@app/shared'
import {
  Cancelled,
  Interrupted,
  JobError,
  ProcessorEnv,
  runtimeSettings,
  startProcessor,
  type JobContext,
  type JobOutput,
  type Processor,
} from '@app/shared/processor'
import { connectionsNamed, rabbitmqctl } from './faults/chaos.ts'
import { newSystem, testEnv } from './helpers/env.ts'
import { connectRabbit } from './helpers/rabbit.ts'
import { testS3 } from './helpers/s3.ts'
import { deleteNamespaces, useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

type Script = (job: JobContext, request: ImageRequest) => Promise<JobOutput<ImageMetadata>>

const META: ImageMetadata = { format: 'png', width: 1, height: 1, hasAlpha: false, pages: 1, orientation: 1 }
/** The default behaviour: one output, uploaded through the runtime's S3 helper. */
const complete: Script = async (job) => {
  const stored = await job.putOutput('out', 'webp', new TextEncoder().encode('stub output'))
  return { outputs: [{ name: 'out', ...stored, width: 1, height: 1 }], metadata: META }
}
/** Rejects with the signal's reason once it aborts, as media code that honours the signal does. */
const aborted = (signal: AbortSignal) =>
  new Promise<never>((_, reject) => {
    if (signal.aborted) return reject(signal.reason)
    signal.addEventListener('abort', () => reject(signal.reason), { once: true })
  })

/** A job that runs until released (then `then`), or until its signal stops it; it records why it stopped. */
function holdable(then: Script = complete) {
  let release = () => {}
  const released = new Promise<void>((resolve) => (release = resolve))
  const seen: { reason?: unknown; started: boolean } = { started: false }
  const script: Script = async (job, request) => {
    seen.started = true
    try {
      await Promise.race([released, aborted(job.signal)])
    } catch (error) {
      seen.reason = error
      throw error
    }
    return then(job, request)
  }
  return { script, release, seen }
}

let rabbit: Awaited<ReturnType<typeof connectRabbit>>
let inspector: amqp.ChannelModel
let inspect: amqp.Channel
const cleanups: (() => Promise<void> | void)[] = []

beforeAll(async () => {
  rabbit = await connectRabbit()
  inspector = await amqp.connect(process.env.TEST_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672')
  inspect = await inspector.createChannel()
})
// Each test's processor goes with its namespace when the test ends: a namespace is eight quorum queues.
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  await deleteNamespaces()
})
afterAll(async () => {
  await inspector?.close()
  await rabbit?.close()
})

/** A processor of type `images` whose handler runs the script registered for each job (default: `complete`). */
async function startStub(overrides: Record<string, string> = {}, prepare?: (tmpDir: string) => void) {
  const env = testEnv(overrides)
  const tmpDir = mkdtempSync(join(tmpdir(), 'media-test-runtime-'))
  prepare?.(tmpDir)
  const settings = runtimeSettings(readEnv(v.object(ProcessorEnv), env), {
    type: 'images',
    concurrency: Number(overrides.CONCURRENCY ?? 2),
    timeoutSeconds: Number(overrides.TIMEOUT_SECONDS ?? 60),
    tmpDir,
  })
  const scripts = new Map<string, Script>()
  const processor: Processor = await startProcessor({
    settings,
    connect: amqp.connect,
    outputs: (request) => request.recipe.outputs.map(({ name, format }) => ({ name, format })),
    handle: (request, job) => (scripts.get(request.jobId) ?? complete)(job, request),
  })
  const s3 = testS3(env)
  let stopped: Promise<void> | undefined
  const stub = {
    env,
    tmpDir,
    settings,
    queues: settings.queues,
    processor,
    events: processor.events,
    s3,
    scripts,
    stop: () => (stopped ??= processor.stop()),
    /** Stores a source and publishes a request for it (with `script` as its job's behaviour). */
    async submit(
      script?: Script,
      options: {
        headers?: Record<string, unknown>
        marked?: boolean
        outputBucket?: string
        /** Which class's queue it goes to (default: interactive). */
        cls?: JobClass
      } = {}
    ) {
      const jobId = crypto.randomUUID()
      const prefix = `${env.SYSTEM}/outputs/${jobId}`
      const source = `${env.SYSTEM}/originals/${jobId}`
      await s3.client.send(new PutObjectCommand({ Bucket: env.S3_BUCKET, Key: source, Body: 'source bytes' }))
      if (options.marked)
        await s3.client.send(
          new PutObjectCommand({ Bucket: env.S3_BUCKET, Key: cancelMarkerKey(prefix), Body: new Uint8Array(0) })
        )
      if (script) scripts.set(jobId, script)
      const request: ImageRequest = {
        version: 1,
        jobId,
        mediaId: crypto.randomUUID(),
        source: { bucket: env.S3_BUCKET!, key: source, format: 'png', size: 12 },
        output: { bucket: options.outputBucket ?? env.S3_BUCKET!, prefix },
        recipe: { outputs: [{ name: 'out', format: 'webp', width: 8, height: 8, quality: 80 }] },
      }
      await rabbit.publishRaw(requestQueue(settings.queues, options.cls ?? 'interactive'), JSON.stringify(request), {
        messageId: crypto.randomUUID(),
        correlationId: jobId,
        type: 'job.request',
        headers: options.headers,
      })
      return { jobId, prefix, request }
    },
    /** The next result on the results queue. */
    async result(timeoutMs = 15_000): Promise<ImageResult> {
      const decoded = decodeMessage(
        ImageResultSchema,
        (await rabbit.nextMessage(settings.queues.results, timeoutMs)).content
      )
      if (!decoded.ok) throw new Error(decoded.reason)
      return decoded.value
    },
    /** The job's updates, taken off the queue until its final one. */
    async updates(jobId: string, timeoutMs = 10_000): Promise<JobUpdate[]> {
      const updates: JobUpdate[] = []
      for (;;) {
        const decoded = decodeMessage(
          JobUpdateSchema,
          (await rabbit.nextMessage(settings.queues.updates, timeoutMs)).content
        )
        if (!decoded.ok) throw new Error(decoded.reason)
        expect(decoded.value.jobId).toBe(jobId)
        updates.push(decoded.value)
        if (decoded.value.status !== 'processing') return updates
      }
    },
  }
  cleanups.push(async () => {
    await stub.stop()
    s3.close()
    rmSync(tmpDir, { recursive: true, force: true })
  })
  return stub
}

/** Polls `check` until it gives a value (not undefined or false); fails after `timeoutMs`, naming what it waited for. */
async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}`)
    await Bun.sleep(20)
  }
}

describe('one delivery', () => {
  test('a job completes: its output is stored, its result confirmed, its delivery acked and its directory removed', async () => {
    const stub = await startStub()
    const completed = (id: string) => stub.events.next('completed', (d) => d.jobId === id)
    const { jobId, prefix } = await stub.submit(async (job, request) => {
      expect(existsSync(job.workDir)).toBe(true)
      expect(job.attempt).toBe(1)
      return complete(job, request)
    })
    const done = completed(jobId)
    const result = await stub.result()
    expect(result).toMatchObject({
      jobId,
      status: 'completed',
      outputs: [{ name: 'out', key: `${prefix}/out.webp`, contentType: 'image/webp', size: 11 }],
    })
    await done
    expect(await stub.s3.keys(`${prefix}/`)).toEqual([`${prefix}/out.webp`])
    expect((await stub.updates(jobId)).at(-1)).toMatchObject({ status: 'completed', stage: 'finished', progress: 100 })
    expect(await inspect.checkQueue(stub.queues.request)).toMatchObject({ messageCount: 0 })
    expect(existsSync(join(stub.tmpDir, String(process.pid), jobId))).toBe(false)
  })

  test('updates go out at most one per 500 ms, progress never goes back, and the final one comes at once', async () => {
    const stub = await startStub()
    const { jobId } = await stub.submit(async (job, request) => {
      const started = Date.now()
      for (let i = 0; Date.now() - started < 1_200; i++) {
        job.report(i < 50 ? 'downloading' : 'processing', i % 97)
        await Bun.sleep(5)
      }
      return complete(job, request)
    })
    expect((await stub.result()).status).toBe('completed')
    const updates = await stub.updates(jobId)
    const times = updates.map((u) => Date.parse(u.at))
    // The first goes out at once, then one per 500 ms at most (1.2 s of reports: three), then the final one.
    expect(updates.length).toBeGreaterThanOrEqual(3)
    expect(updates.length).toBeLessThanOrEqual(5)
    for (let i = 1; i < times.length - 1; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(490)
    const progress = updates.map((u) => u.progress)
    expect(progress).toEqual([...progress].sort((a, b) => a - b))
    expect(updates.at(-1)).toMatchObject({ status: 'completed', progress: 100 })
  })

  test('an expected failure is reported failed with its class, once, and never retried', async () => {
    const stub = await startStub()
    let runs = 0
    const { jobId } = await stub.submit(async () => {
      runs++
      throw new JobError('invalid_media', 'the stub says the file is corrupt')
    })
    expect(await stub.result()).toMatchObject({
      jobId,
      status: 'failed',
      error: { code: 'invalid_media', class: 'input', message: 'the stub says the file is corrupt' },
    })
    expect((await stub.updates(jobId)).at(-1)).toMatchObject({ status: 'failed', error: { code: 'invalid_media' } })
    expect(runs).toBe(1)
  })

  test('a fault is retried after a backoff through redelivery, and the next attempt knows its number', async () => {
    const stub = await startStub()
    const attempts: number[] = []
    const { jobId } = await stub.submit(async (job, request) => {
      attempts.push(job.attempt)
      if (job.attempt === 1) throw new Error('S3 wobbled')
      return complete(job, request)
    })
    const retrying = await stub.events.next('retrying', (d) => d.jobId === jobId)
    expect(retrying).toMatchObject({ attempt: 1, delayMs: 1_000, reason: 'S3 wobbled' })
    expect((await stub.result()).status).toBe('completed')
    expect(attempts).toEqual([1, 2])
  })

  test(`a fault on the last attempt (${MAX_ATTEMPTS}) gives up: failed, gave_up, class transient`, async () => {
    const stub = await startStub()
    // Five attempts counted before this copy was published: this delivery is the last attempt.
    const { jobId } = await stub.submit(
      async () => {
        throw new Error('S3 is still down')
      },
      { headers: { [ATTEMPTS_HEADER]: MAX_ATTEMPTS - 1 } }
    )
    const result = await stub.result()
    expect(result).toMatchObject({ jobId, status: 'failed', error: { code: 'gave_up', class: 'transient' } })
    if (result.status === 'failed')
      expect(result.error.message).toBe(`gave up after ${MAX_ATTEMPTS} attempts: S3 is still down`)
    expect(await rabbit.messageCount(stub.queues.request)).toBe(0)
  })

  test('S3 sorts its own failures: a missing source is source_missing, a missing bucket storage_refused, neither retried', async () => {
    // The missing bucket has to be allowed, or the request is refused before S3 is asked.
    const stub = await startStub({ ALLOWED_BUCKETS: `${process.env.TEST_S3_BUCKET},no-such-bucket-anywhere` })
    const missing = await stub.submit(async (job, request) => {
      await job.storage.download(request.source.bucket, `${request.source.key}-gone`, join(job.workDir, 'original'))
      return complete(job, request)
    })
    expect(await stub.result()).toMatchObject({
      jobId: missing.jobId,
      status: 'failed',
      error: { code: 'source_missing', class: 'input' },
    })
    const refused = await stub.submit(undefined, { outputBucket: 'no-such-bucket-anywhere' })
    const result = await stub.result()
    expect(result).toMatchObject({
      jobId: refused.jobId,
      status: 'failed',
      error: { code: 'storage_refused', class: 'internal' },
    })
    if (result.status === 'failed') expect(result.error.message).toContain('NoSuchBucket')
  })

  test('a job past its time limit is stopped through its signal and fails with timeout', async () => {
    const stub = await startStub({ TIMEOUT_SECONDS: '1' })
    const held = holdable()
    const { jobId } = await stub.submit(held.script)
    expect(await stub.result(5_000)).toMatchObject({
      jobId,
      status: 'failed',
      error: { code: 'timeout', class: 'input' },
    })
    expect(held.seen.reason).toBeInstanceOf(JobError)
  })

  test('output the media code returns that the protocol refuses fails the job as processing_error rather than hanging it', async () => {
    const stub = await startStub()
    const { jobId } = await stub.submit(async (job, request) => {
      const done = await complete(job, request)
      return { ...done, outputs: done.outputs.map((o) => ({ ...o, width: 0 })) }
    })
    expect(await stub.result()).toMatchObject({
      jobId,
      status: 'failed',
      error: { code: 'processing_error', class: 'internal' },
    })
    expect(await rabbit.messageCount(stub.queues.request)).toBe(0)
  })
})

describe('refused messages', () => {
  test('a malformed request naming its job gets a failed result the backend can read, and is dead-lettered', async () => {
    const stub = await startStub()
    const jobId = crypto.randomUUID()
    await rabbit.publishRaw(
      stub.queues.request,
      JSON.stringify({ version: 1, jobId, recipe: { outputs: [{ name: 'out', format: 'jpg' }] } })
    )
    const result = await stub.result()
    expect(result).toMatchObject({ jobId, status: 'failed', error: { code: 'invalid_request', class: 'internal' } })
    if (result.status === 'failed')
      expect(result.error.message).toMatch(/refused the request: message does not match the schema: .*format/)
    expect(JSON.parse((await rabbit.nextMessage(stub.queues.dead)).content.toString()).jobId).toBe(jobId)
  })

  test('one that names no job (not JSON, no UUID anywhere) is only dead-lettered, and the processor keeps serving', async () => {
    const stub = await startStub()
    const refused = stub.events.next('refused')
    await rabbit.publishRaw(stub.queues.request, 'not json at all', { correlationId: 'not-a-uuid' })
    expect(await refused).toMatchObject({ jobId: null, reason: expect.stringContaining('not UTF-8 JSON') })
    expect((await rabbit.nextMessage(stub.queues.dead)).content.toString()).toBe('not json at all')
    const { jobId } = await stub.submit()
    expect(await stub.result()).toMatchObject({ jobId, status: 'completed' })
  })
})

describe('bucket confinement', () => {
  test('a request reaching outside ALLOWED_BUCKETS is refused like a malformed one: failed, dead-lettered, never run', async () => {
    const system = newSystem()
    const bucket = process.env.TEST_S3_BUCKET!
    const stub = await startStub({ SYSTEM: system, ALLOWED_BUCKETS: `${bucket}/${system}/` })
    let runs = 0
    const counted: Script = async (job, request) => (runs++, complete(job, request))
    const refusedWith = async (jobId: string, reason: string) => {
      expect(await stub.result()).toMatchObject({
        jobId,
        status: 'failed',
        error: { code: 'invalid_request', class: 'internal', message: `the processor refused the request: ${reason}` },
      })
      expect(JSON.parse((await rabbit.nextMessage(stub.queues.dead)).content.toString()).jobId).toBe(jobId)
    }

    const output = await stub.submit(counted, { outputBucket: 'elsewhere' })
    await refusedWith(
      output.jobId,
      `its output elsewhere/${output.prefix}/ is outside ALLOWED_BUCKETS (${bucket}/${system}/)`
    )

    // Another namespace's original, in the same bucket: outside the prefix.
    const jobId = crypto.randomUUID()
    const source = { ...output.request.source, key: `other/originals/${jobId}` }
    const refused = stub.events.next('refused', (d) => d.jobId === jobId)
    await rabbit.publishRaw(
      stub.queues.request,
      JSON.stringify({ ...output.request, jobId, source, output: { bucket, prefix: `${system}/outputs/${jobId}` } }),
      { correlationId: jobId }
    )
    await refusedWith(
      jobId,
      `its source ${bucket}/other/originals/${jobId} is outside ALLOWED_BUCKETS (${bucket}/${system}/)`
    )
    expect(await refused).toMatchObject({ jobId, reason: expect.stringContaining('ALLOWED_BUCKETS') })
    expect(runs).toBe(0)

    const inside = await stub.submit(counted)
    expect(await stub.result()).toMatchObject({ jobId: inside.jobId, status: 'completed' })
    expect(runs).toBe(1)
  })
})

describe('duplicates and cancels', () => {
  test('a second delivery of a job running here is dropped; the run under way gives the one result', async () => {
    const stub = await startStub()
    const held = holdable()
    const { jobId, request } = await stub.submit(held.script)
    await waitFor('the job to start', () => held.seen.started)
    const duplicate = stub.events.next('duplicate', (d) => d.jobId === jobId)
    await rabbit.publishRaw(stub.queues.request, JSON.stringify(request), { correlationId: jobId })
    expect(await duplicate).toEqual({ jobId, requeued: false })
    held.release()
    expect(await stub.result()).toMatchObject({ jobId, status: 'completed' })
    await waitFor('the queue to drain', async () => (await inspect.checkQueue(stub.queues.request)).messageCount === 0)
    expect(await rabbit.messageCount(stub.queues.results)).toBe(0)
  })

  test('a cancel on the fanout aborts the job through its signal; it reports cancelled and removes its outputs', async () => {
    const stub = await startStub()
    // An earlier attempt (here or on another processor) left an output: a cancel removes every planned one.
    const held = holdable()
    const { jobId, prefix } = await stub.submit(held.script)
    await stub.s3.client.send(
      new PutObjectCommand({ Bucket: stub.env.S3_BUCKET, Key: `${prefix}/out.webp`, Body: 'from an earlier attempt' })
    )
    await waitFor('the job to start', () => held.seen.started)
    await rabbit.publishToExchange(
      cancelExchange(stub.env.SYSTEM!),
      encodeMessage(CancelSchema, { version: 1, jobId, at: new Date().toISOString() })
    )
    expect(await stub.result()).toMatchObject({ jobId, status: 'cancelled' })
    expect(held.seen.reason).toBeInstanceOf(Cancelled)
    expect(await stub.s3.keys(`${prefix}/`)).toEqual([])
    expect((await stub.updates(jobId)).at(-1)).toMatchObject({ status: 'cancelled' })
  })

  test('a job whose cancel marker is set is cancelled without running', async () => {
    const stub = await startStub()
    let ran = false
    const { jobId, prefix } = await stub.submit(
      async () => {
        ran = true
        throw new Error('must not run')
      },
      { marked: true }
    )
    expect(await stub.result()).toMatchObject({ jobId, status: 'cancelled' })
    expect(ran).toBe(false)
    expect(await stub.s3.keys(`${prefix}/`)).toEqual([cancelMarkerKey(prefix)])
  })
})

describe('losing the connection', () => {
  test('a held job whose channel closes is interrupted, delivered again, and completes once', async () => {
    const stub = await startStub()
    const first = holdable()
    const { jobId } = await stub.submit(async (job, request) =>
      job.attempt === 1 ? first.script(job, request) : complete(job, request)
    )
    await waitFor('the job to start', () => first.seen.started)
    const interrupted = stub.events.next('interrupted', (d) => d.jobId === jobId)
    const [connection] = await connectionsNamed(`images ${stub.env.SYSTEM} `)
    await rabbitmqctl('close_connection', connection!.pid, 'test: closing a processor connection')
    await interrupted
    expect(first.seen.reason).toBeInstanceOf(Interrupted)
    expect(await stub.result()).toMatchObject({ jobId, status: 'completed' })
    expect(await rabbit.messageCount(stub.queues.results)).toBe(0)
  })
})

describe('long jobs: the ack deadline and the lease', () => {
  test('a job held to the ack deadline is acked and leased; it keeps its slot, sends heartbeats, and completes once', async () => {
    const stub = await startStub({ ACK_DEADLINE_SECONDS: '1', HEARTBEAT_SECONDS: '1', CONCURRENCY: '1' })
    const held = holdable()
    const first = await stub.submit(held.script)
    await stub.events.next('leased', (d) => d.jobId === first.jobId, 5_000)
    const leasedAt = Date.now()
    // Nothing is held at the broker now, and no consumer runs: the one slot is the lease's.
    await waitFor('the consumer to go', async () => (await inspect.checkQueue(stub.queues.request)).consumerCount === 0)
    const second = await stub.submit()
    const heartbeats = await waitFor('two heartbeats after the lease', async () => {
      const beats: JobUpdate[] = []
      while (beats.length < 2) {
        const update = decodeMessage(JobUpdateSchema, (await rabbit.nextMessage(stub.queues.updates, 5_000)).content)
        if (update.ok && Date.parse(update.value.at) > leasedAt) beats.push(update.value)
      }
      return beats
    })
    expect(heartbeats.map((u) => [u.jobId, u.status])).toEqual([
      [first.jobId, 'processing'],
      [first.jobId, 'processing'],
    ])
    expect(await inspect.checkQueue(stub.queues.request)).toMatchObject({ messageCount: 1, consumerCount: 0 })

    held.release()
    expect(await stub.result()).toMatchObject({ jobId: first.jobId, status: 'completed' })
    expect(await stub.result()).toMatchObject({ jobId: second.jobId, status: 'completed' })
    expect(await rabbit.messageCount(stub.queues.results)).toBe(0)
    await waitFor(
      'the consumer to come back',
      async () => (await inspect.checkQueue(stub.queues.request)).consumerCount === 1
    )
  })

  test('a leased job carries on when its connection closes; its result goes through the new one', async () => {
    const stub = await startStub({ ACK_DEADLINE_SECONDS: '1' })
    const held = holdable()
    const { jobId } = await stub.submit(held.script)
    await stub.events.next('leased', (d) => d.jobId === jobId, 5_000)
    const [before] = await connectionsNamed(`images ${stub.env.SYSTEM} `)
    let interrupted = false
    stub.events.on('interrupted', () => (interrupted = true))
    await rabbitmqctl('close_connection', before!.pid, 'test: closing the connection under a leased job')
    await waitFor('the processor to reconnect', async () =>
      (await connectionsNamed(`images ${stub.env.SYSTEM} `)).some((c) => c.name !== before!.name)
    )
    held.release()
    expect(await stub.result()).toMatchObject({ jobId, status: 'completed' })
    expect(interrupted).toBe(false)
    expect(held.seen.reason).toBeUndefined()
    expect(await inspect.checkQueue(stub.queues.request)).toMatchObject({ messageCount: 0 })
  })

  test('a leased job that hits a fault is handed back as a fresh copy counting the attempt, and that copy completes', async () => {
    const stub = await startStub({ ACK_DEADLINE_SECONDS: '1' })
    const leased = holdable(async () => {
      throw new Error('S3 wobbled after the lease')
    })
    const seen: { attempt: number }[] = []
    const { jobId } = await stub.submit(
      async (job, request) => {
        seen.push({ attempt: job.attempt })
        return job.attempt === 1 ? leased.script(job, request) : complete(job, request)
      },
      { headers: { 'x-trace': 'abc123' } }
    )
    await stub.events.next('leased', (d) => d.jobId === jobId, 5_000)
    const handedBack = stub.events.next('handed-back', (d) => d.jobId === jobId)
    leased.release()
    expect(await handedBack).toMatchObject({ attemptsMade: 1, why: 'after a fault' })
    expect(await stub.result()).toMatchObject({ jobId, status: 'completed' })
    expect(seen).toEqual([{ attempt: 1 }, { attempt: 2 }])
  })
})

describe('shutdown', () => {
  for (const leased of [false, true]) {
    test(`a ${leased ? 'leased' : 'held'} job still running after the grace period is stopped and handed back as a fresh message, headers kept`, async () => {
      const stub = await startStub({ SHUTDOWN_GRACE_SECONDS: '1', ...(leased ? { ACK_DEADLINE_SECONDS: '1' } : {}) })
      const held = holdable()
      const { jobId, request } = await stub.submit(held.script, {
        headers: { 'x-trace': 'abc123', [ATTEMPTS_HEADER]: 2 },
      })
      await waitFor('the job to start', () => held.seen.started)
      if (leased) await stub.events.next('leased', (d) => d.jobId === jobId, 5_000)
      const handedBack = stub.events.next('handed-back', (d) => d.jobId === jobId)

      const stopping = Date.now()
      await stub.stop()
      expect(Date.now() - stopping).toBeGreaterThanOrEqual(1_000)
      // A shutdown is not the job's fault: the two attempts before this one are carried, this one is not counted.
      expect(await handedBack).toMatchObject({ attemptsMade: 2, why: 'shutting down' })
      expect(held.seen.reason).toBeInstanceOf(Interrupted)

      const copy = await rabbit.nextMessage(stub.queues.request, 5_000)
      expect(await rabbit.messageCount(stub.queues.request)).toBe(0)
      expect(JSON.parse(copy.content.toString())).toEqual(request)
      expect(copy.fields.redelivered).toBe(false)
      expect(copy.properties.headers?.['x-delivery-count'] ?? 0).toBe(0)
      expect(copy.properties.headers).toMatchObject({ 'x-trace': 'abc123', [ATTEMPTS_HEADER]: 2 })
      expect(copy.properties).toMatchObject({ correlationId: jobId, type: 'job.request' })
      expect(await rabbit.messageCount(stub.queues.results)).toBe(0)
    })
  }
})

describe('two classes: interactive before bulk', () => {
  /** Jobs submitted with a script that holds each until released; `started` lists them in the order they started. */
  function classJobs(stub: Awaited<ReturnType<typeof startStub>>) {
    const started: string[] = []
    stub.events.on('received', ({ jobId, cls }) => started.push(`${cls}:${jobId}`))
    const jobs = new Map<string, { jobId: string; held: ReturnType<typeof holdable> }>()
    return {
      started,
      /** Submits a held job named `name` (its class: the name's first letter, b or i). */
      async submit(name: string) {
        const held = holdable()
        const { jobId } = await stub.submit(held.script, { cls: name.startsWith('b') ? 'bulk' : 'interactive' })
        jobs.set(name, { jobId, held })
      },
      startedOf: (name: string) => jobs.get(name)!.held.seen.started,
      async waitStarted(name: string) {
        await waitFor(`${name} to start`, () => jobs.get(name)!.held.seen.started)
      },
      /** Releases a job and waits for its result to be confirmed. */
      async finish(name: string) {
        const { jobId, held } = jobs.get(name)!
        const completed = stub.events.next('completed', (d) => d.jobId === jobId)
        held.release()
        await completed
      },
      order: () => started.map((entry) => [...jobs].find(([, j]) => entry.endsWith(j.jobId))![0]),
      /** Waits until the processor holds one delivery of `cls` for a slot (its `media_processor_waiting` gauge). */
      waitHeld: (cls: JobClass) =>
        waitFor(`a ${cls} delivery to be held`, async () =>
          (await stub.processor.registry.getSingleMetricAsString('media_processor_waiting')).includes(
            `media_processor_waiting{kind="image",class="${cls}",service="images"} 1`
          )
        ),
    }
  }

  test('with 2 slots, bulk work holds at most one; a freed slot goes to interactive work first', async () => {
    const stub = await startStub({ CONCURRENCY: '2' })
    const jobs = classJobs(stub)
    for (const name of ['b1', 'b2', 'b3']) await jobs.submit(name)
    await jobs.waitStarted('b1')
    // The second slot stays free for interactive work: i1 starts at once, though b2 was queued first.
    await jobs.submit('i1')
    await jobs.waitStarted('i1')
    expect(jobs.startedOf('b2')).toBe(false)
    // Both slots busy: i2 waits. When b1 ends, i2 gets the slot, not b2.
    await jobs.submit('i2')
    await jobs.waitHeld('interactive')
    await jobs.finish('b1')
    await jobs.waitStarted('i2')
    expect(jobs.startedOf('b2')).toBe(false)
    // An interactive job ends: bulk work takes its slot again, one job at a time.
    await jobs.finish('i1')
    await jobs.waitStarted('b2')
    expect(jobs.startedOf('b3')).toBe(false)
    for (const name of ['i2', 'b2']) await jobs.finish(name)
    await jobs.waitStarted('b3')
    await jobs.finish('b3')
    expect(jobs.order()).toEqual(['b1', 'i1', 'i2', 'b2', 'b3'])
    expect(await stub.processor.registry.getSingleMetricAsString('media_processor_jobs_started_total')).toContain(
      'media_processor_jobs_started_total{kind="image",class="bulk",service="images"} 3'
    )
  })

  test('a slot an interactive job frees goes to interactive work still in the broker, not to bulk work held here', async () => {
    const stub = await startStub({ CONCURRENCY: '2' })
    const jobs = classJobs(stub)
    for (const name of ['i1', 'i2']) await jobs.submit(name)
    await jobs.waitStarted('i2')
    await jobs.submit('b1')
    await jobs.waitHeld('bulk')
    // i3 stays in the broker (the interactive prefetch is full) until i1's delivery is acked.
    await jobs.submit('i3')
    await jobs.finish('i1')
    await jobs.waitStarted('i3')
    expect(jobs.startedOf('b1')).toBe(false)
    await jobs.finish('i2')
    await jobs.waitStarted('b1')
    for (const name of ['i3', 'b1']) await jobs.finish(name)
    expect(jobs.order()).toEqual(['i1', 'i2', 'i3', 'b1'])
  })

  test('with 1 slot, bulk work may take it (else it would never run); interactive work goes first when it frees', async () => {
    const stub = await startStub({ CONCURRENCY: '1' })
    const jobs = classJobs(stub)
    for (const name of ['b1', 'b2']) await jobs.submit(name)
    await jobs.waitStarted('b1')
    await jobs.submit('i1')
    await jobs.waitHeld('interactive')
    await jobs.finish('b1')
    await jobs.waitStarted('i1')
    expect(jobs.startedOf('b2')).toBe(false)
    await jobs.finish('i1')
    await jobs.waitStarted('b2')
    await jobs.finish('b2')
    expect(jobs.order()).toEqual(['b1', 'i1', 'b2'])
  })

  test('a delivery held for a slot up to the ack deadline goes back to its queue, no attempt counted', async () => {
    const stub = await startStub({ CONCURRENCY: '1', ACK_DEADLINE_SECONDS: '1' })
    const jobs = classJobs(stub)
    await jobs.submit('b1')
    await jobs.waitStarted('b1')
    await jobs.submit('i1')
    // b1 is leased at the deadline and keeps the one slot; i1, held as long, is published again and waits in the
    // queue (no interactive consumer while the leased job fills the slot), not in this process.
    await waitFor('i1 back in its queue', async () => (await rabbit.messageCount(stub.queues.request)) === 1, 10_000)
    expect(jobs.startedOf('i1')).toBe(false)
    const attempt = new Promise<number>((resolve) =>
      stub.events.on('received', (d) => d.cls === 'interactive' && resolve(d.attempt))
    )
    await jobs.finish('b1')
    await jobs.waitStarted('i1')
    expect(await attempt).toBe(1)
    await jobs.finish('i1')
  })

  test('at shutdown a held delivery goes back to the queue it came from at once, its attempts unchanged', async () => {
    const stub = await startStub({ CONCURRENCY: '1', SHUTDOWN_GRACE_SECONDS: '10' })
    const jobs = classJobs(stub)
    await jobs.submit('i1')
    await jobs.waitStarted('i1')
    const { jobId } = await stub.submit(undefined, { cls: 'bulk', headers: { [ATTEMPTS_HEADER]: 1 } })
    await jobs.waitHeld('bulk')
    const stopped = stub.stop()
    // Back in the bulk queue while the running job still has its grace period.
    await waitFor('the held job back in its queue', async () => (await rabbit.messageCount(stub.queues.bulk)) === 1)
    const finished = jobs.finish('i1')
    await stopped
    await finished
    const copy = await rabbit.nextMessage(stub.queues.bulk, 5_000)
    expect(copy.properties.correlationId).toBe(jobId)
    expect(copy.properties.priority).toBe(0)
    expect(copy.properties.headers?.[ATTEMPTS_HEADER]).toBe(1)
  })
})

describe('work directories', () => {
  test('those of dead runs are cleared at start', async () => {
    const stub = await startStub({}, (tmpDir) => {
      // No process has this pid: a crashed run's directory.
      mkdirSync(join(tmpDir, '999999999', 'some-job'), { recursive: true })
      writeFileSync(join(tmpDir, '999999999', 'some-job', 'original'), 'left behind')
    })
    expect(existsSync(join(stub.tmpDir, '999999999'))).toBe(false)
    expect(existsSync(join(stub.tmpDir, String(process.pid)))).toBe(true)
  })
})

describe('operations', () => {
  test("the request's traceparent is continued on the job's updates and result; a malformed one starts a new trace", async () => {
    const stub = await startStub()
    const backend = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
    const { jobId } = await stub.submit(undefined, { headers: { traceparent: backend } })
    const result = await rabbit.nextMessage(stub.queues.results, 15_000)
    const update = await rabbit.nextMessage(stub.queues.updates, 5_000)
    for (const message of [result, update]) {
      expect(message.properties.correlationId).toBe(jobId)
      const sent = parseTraceparent(message.properties.headers?.traceparent)
      // The same trace, in a span of the processor's own.
      expect(sent?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736')
      expect(sent?.spanId).not.toBe('00f067aa0ba902b7')
    }

    await stub.submit(undefined, { headers: { traceparent: 'not-a-trace' } })
    const fresh = parseTraceparent(
      (await rabbit.nextMessage(stub.queues.results, 15_000)).properties.headers?.traceparent
    )
    expect(fresh?.traceId).toMatch(/^[0-9a-f]{32}$/)
    expect(fresh?.traceId).not.toBe('4bf92f3577b34da6a3ce929d0e0e4736')
  })

  test('readiness: ready with a slot free; not ready, naming the slots, while every slot is busy', async () => {
    const stub = await startStub({ CONCURRENCY: '1' })
    expect(await stub.processor.readiness()).toMatchObject({ ready: true, down: [] })
    const held = holdable()
    const { jobId } = await stub.submit(held.script)
    await waitFor('the job to start', () => held.seen.started)
    const busy = await stub.processor.readiness()
    expect(busy).toMatchObject({ ready: false, down: ['slots'] })
    expect(busy.checks.slots).toEqual({ ok: false, error: 'all 1 busy' })
    const completed = stub.events.next('completed', (d) => d.jobId === jobId)
    held.release()
    await completed
    await waitFor('a free slot to make it ready', async () => (await stub.processor.readiness()).ready)
    // Its metrics counted the job (the registry is served on METRICS_PORT when set).
    expect(await stub.processor.registry.getSingleMetricAsString('media_processor_jobs_total')).toContain(
      'media_processor_jobs_total{kind="image",outcome="completed",service="images"} 1'
    )
  })
})
