/** What every service shares to be operated: its log lines, its readiness checks, its metrics and their settings. */
import { describe, expect, test } from 'bun:test'
import { Writable } from 'node:stream'
import * as v from 'valibot'
import { readEnv } from '../../shared/env.ts'
import { LogEnv, commonMetrics, createLogger, createRegistry, runChecks } from '../../shared/ops/index.ts'
import { ProcessorEnv } from '../../shared/processor/index.ts'
import { processorMetrics } from '../../shared/processor/metrics.ts'
import { ProcessorEvents } from '../../shared/processor/events.ts'
import { uploadOutcome } from '../../services/api/metrics.ts'

/** A destination that keeps the lines written to it. */
function lines() {
  const written: string[] = []
  const stream = new Writable({
    write(chunk, _encoding, done) {
      written.push(...String(chunk).split('\n').filter(Boolean))
      done()
    },
  })
  return { stream, json: () => written.map((line) => JSON.parse(line) as Record<string, unknown>) }
}

describe('logs', () => {
  test('one JSON object a line, with the service, a level name, an ISO time, and the fields of its child loggers', () => {
    const out = lines()
    const log = createLogger('images', { level: 'info', format: 'json' }, out.stream)
    log.child({ jobId: 'j-1', traceId: 'a'.repeat(32) }).warn({ attempt: 2 }, 'job interrupted')
    log.debug('not at this level')
    log.error({ err: new Error('boom') }, 'failed')
    const [first, second, ...rest] = out.json()
    expect(rest).toEqual([])
    expect(first).toMatchObject({
      level: 'warn',
      service: 'images',
      jobId: 'j-1',
      traceId: 'a'.repeat(32),
      attempt: 2,
      msg: 'job interrupted',
    })
    expect(new Date(String(first!.time)).toISOString()).toBe(String(first!.time))
    expect(second).toMatchObject({ level: 'error', msg: 'failed', err: { type: 'Error', message: 'boom' } })
    expect(String((second!.err as { stack: string }).stack)).toContain('ops.test.ts')
  })

  test('LOG_LEVEL and LOG_FORMAT refuse what they do not know, naming the variable; their defaults are info and auto', () => {
    const schema = v.object(LogEnv)
    expect(readEnv(schema, {})).toEqual({ LOG_LEVEL: 'info', LOG_FORMAT: 'auto' })
    expect(() => readEnv(schema, { LOG_LEVEL: 'verbose' })).toThrow(
      /LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent/
    )
    expect(() => readEnv(schema, { LOG_FORMAT: 'xml' })).toThrow(/LOG_FORMAT: must be json, pretty or auto/)
  })

  test('METRICS_PORT must be a port', () => {
    const schema = v.object(ProcessorEnv)
    const env = { S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 's' }
    expect(readEnv(schema, { ...env, METRICS_PORT: '9100' }).METRICS_PORT).toBe(9100)
    expect(readEnv(schema, env).METRICS_PORT).toBeUndefined()
    for (const bad of ['0', '70000', 'http', '-1'])
      expect(() => readEnv(schema, { ...env, METRICS_PORT: bad })).toThrow(/METRICS_PORT/)
  })
})

describe('readiness checks', () => {
  test('each check passes, fails with its reason, or fails once it has not answered in time', async () => {
    const started = performance.now()
    const readiness = await runChecks(
      {
        database: () => {},
        s3: async () => {
          throw new Error('connect ECONNREFUSED')
        },
        rabbitmq: () => new Promise<void>(() => {}), // never answers
      },
      100
    )
    expect(readiness).toEqual({
      ready: false,
      down: ['s3', 'rabbitmq'],
      checks: {
        database: { ok: true },
        s3: { ok: false, error: 'connect ECONNREFUSED' },
        rabbitmq: { ok: false, error: 'no answer within 100 ms' },
      },
    })
    // The checks run at once: the hung one costs its timeout, not more.
    expect(performance.now() - started).toBeLessThan(2_000)
    expect(await runChecks({ database: () => {} })).toEqual({
      ready: true,
      down: [],
      checks: { database: { ok: true } },
    })
  })
})

describe('metrics', () => {
  test('an upload is counted by the status it was answered with', () => {
    expect([202, 400, 408, 413, 415, 429, 503, 500, 401].map(uploadOutcome)).toEqual([
      'accepted',
      'invalid',
      'too_slow',
      'too_large',
      'unsupported',
      'limited',
      'unavailable',
      'failed',
      'failed',
    ])
  })

  test('every series carries the service; readiness is read at the scrape', async () => {
    const registry = createRegistry('api')
    let ready = true
    commonMetrics(registry, async () => ready)
    expect(await registry.getSingleMetricAsString('media_ready')).toContain('media_ready{service="api"} 1')
    ready = false
    expect(await registry.getSingleMetricAsString('media_ready')).toContain('media_ready{service="api"} 0')
  })

  test("a processor counts attempts by outcome and times a completed job's stages, labelled by kind", async () => {
    const registry = createRegistry('videos')
    const metrics = processorMetrics(
      registry,
      'videos',
      () => ({ busy: 1, free: 0, waiting: { interactive: 0, bulk: 2 } }),
      async () => true
    )
    const events = new ProcessorEvents()
    metrics.watch(events)
    events.emit('received', { jobId: 'a', attempt: 1, cls: 'interactive' })
    events.emit('completed', { jobId: 'a' })
    events.emit('received', { jobId: 'b', attempt: 1, cls: 'bulk' })
    events.emit('retrying', { jobId: 'b', attempt: 1, delayMs: 1000, reason: 'S3 down' })
    events.emit('refused', { jobId: null, messageId: null, reason: 'not JSON' })
    const clock = metrics.stageClock()
    for (const stage of ['downloading', 'processing', 'processing', 'uploading'] as const) clock.enter(stage)
    clock.done()
    /** A series' value by its name and some of its labels (the registry adds `service` when it writes them out). */
    const value = async (metric: string, series: string, labels: Record<string, string>) => {
      const { values } = await registry.getSingleMetric(metric)!.get()
      return values.find(
        (s) =>
          ((s as { metricName?: string }).metricName ?? metric) === series &&
          Object.entries(labels).every(([k, v]) => s.labels[k] === v)
      )?.value
    }
    for (const outcome of ['completed', 'retried', 'refused']) {
      expect(await value('media_processor_jobs_total', 'media_processor_jobs_total', { kind: 'video', outcome })).toBe(
        1
      )
    }
    expect(
      await value('media_job_attempt_seconds', 'media_job_attempt_seconds_count', {
        kind: 'video',
        outcome: 'completed',
      })
    ).toBe(1)
    // One observation per stage, however many reports a stage had.
    for (const stage of ['download', 'process', 'upload']) {
      expect(await value('media_job_stage_seconds', 'media_job_stage_seconds_count', { kind: 'video', stage })).toBe(1)
    }
    const text = await registry.metrics()
    expect(text).toContain('media_processor_slots{kind="video",state="busy",service="videos"} 1')
    expect(text).toContain('media_processor_waiting{kind="video",class="bulk",service="videos"} 2')
    expect(text).toContain('media_processor_jobs_started_total{kind="video",class="interactive",service="videos"} 1')
    expect(text).toContain('media_processor_jobs_started_total{kind="video",class="bulk",service="videos"} 1')
  })
})
