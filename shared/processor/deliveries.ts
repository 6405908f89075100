/**
 * One delivery's life: decode or refuse, the bucket confinement, the duplicate guard, updates and heartbeats, the
 * attempt, backoff and `gave_up`, the result confirmed before the ack, the publishes of a leased job retried for a
 * while (`persist`), and the hand-back of a request as a fresh message.
 */
import * as v from 'valibot'
import { settle } from '../amqp/channels.ts'
import type { AmqpChannel, AmqpMessage } from '../amqp/types.ts'
import { MAX_MESSAGE_BYTES, decodeMessage, encodeMessage, type Decoded } from '../codec.ts'
import { JobIdSchema, JobUpdateSchema, MESSAGES, type MetadataOf, type RequestOf } from '../messages.ts'
import { CLASS_PRIORITY, requestQueue, type JobClass, type MediaType } from '../names.ts'
import { traceFields } from '../ops/log.ts'
import { MAX_ATTEMPTS, retryDelayMs } from '../topology.ts'
import { TRACEPARENT, childSpan, formatTraceparent, parseTraceparent, type TraceContext } from '../trace.ts'
import { attemptOf, carriedHeaders } from './attempts.ts'
import { confinementFailure } from './buckets.ts'
import type { Consumer } from './consumer.ts'
import { Interrupted, JobError, describeError, sleep } from './errors.ts'
import { attemptJob, type JobResult, type Settled } from './job.ts'
import type { ProcessorState, Run } from './state.ts'
import { createUpdates, type UpdateFields } from './updates.ts'

export interface Deliveries {
  /**
   * Takes one delivery of a request queue (`cls` says which) through its life; settles it on `channel`. Its run is
   * in `running` from the synchronous start of the call, before any await (the consumer's gate counts on it).
   */
  onMessage(channel: AmqpChannel, message: AmqpMessage, cls: JobClass): Promise<void>
  /**
   * Publishes the job's request again as a new message carrying `attemptsMade` (and its own headers), then acks the
   * original delivery unless the job is leased (acked already). The broker's delivery count starts again.
   */
  handBack(run: Run, attemptsMade: number, why: string): Promise<void>
}

/** A leased job has no delivery to fall back on: its publishes are retried this often, for this long. */
const LEASED_RETRY = { everyMs: 2_000, forMs: 120_000 }

type Next<M> = { kind: 'result'; result: JobResult<M> } | { kind: 'retry' } | { kind: 'interrupted' }

export function createDeliveries<T extends MediaType>(
  state: Omit<ProcessorState<T>, 'inFlight'>,
  consumer: Pick<Consumer, 'lease' | 'fitConsumer'>
): Deliveries {
  type M = MetadataOf<T>
  const {
    definition,
    settings,
    events,
    log,
    jobLogs,
    logOf,
    metrics,
    amqp,
    storage,
    workDirs,
    running,
    stopping,
    pastGrace,
    broker,
  } = state
  const { lease, fitConsumer } = consumer
  const schemas = MESSAGES[settings.type]

  const publish = (
    queue: string,
    body: Uint8Array,
    jobId: string,
    type: string,
    trace?: TraceContext
  ): Promise<void> => {
    if (!broker.publisher) return Promise.reject(new Error('not connected to the broker'))
    const headers = trace ? { [TRACEPARENT]: formatTraceparent(trace) } : undefined
    return broker.publisher.publish(queue, body, { correlationId: jobId, type, headers }).catch((error) => {
      metrics.brokerErrors.inc({ operation: 'publish' })
      throw error
    })
  }

  async function onMessage(channel: AmqpChannel, message: AmqpMessage, cls: JobClass): Promise<void> {
    // A job's logger lives from here until its outcome is reported (events logged after `running` forgets the job).
    try {
      await takeMessage(channel, message, cls)
    } finally {
      // While stopping, `stop` still hands jobs back and logs it: the loggers go with the process instead.
      const jobId = jobIdOf(message)
      if (jobId && !running.has(jobId) && !stopping.aborted) jobLogs.delete(jobId)
    }
  }

  async function takeMessage(channel: AmqpChannel, message: AmqpMessage, cls: JobClass): Promise<void> {
    const decoded = decodeMessage(schemas.request, message.content) as Decoded<RequestOf<T>>
    if (!decoded.ok) return refuse(channel, message, decoded.reason)
    const request = decoded.value
    // Outside ALLOWED_BUCKETS is refused like a malformed request: no retry and no S3 call can make it right.
    const outside = confinementFailure(settings.allowedBuckets, request)
    if (outside) return refuse(channel, message, outside)
    const { jobId } = request
    // A second copy of a job running here (a re-drive, a redelivery): two runs would share the job's work
    // directory. The run under way settles its own delivery, so the copy is dropped; but if that run was
    // interrupted (its delivery is back with the broker), the copy is the job: it goes back until the run is gone.
    const current = running.get(jobId)
    if (current) {
      const requeued = current.stop.signal.reason instanceof Interrupted
      events.emit('duplicate', { jobId, requeued })
      return settle(() => (requeued ? channel.nack(message, false, true) : channel.ack(message)), amqp)
    }
    // This attempt's span, sent on the job's updates and result: a child of the backend's trace (a missing or
    // malformed traceparent starts a new trace).
    const trace = childSpan(parseTraceparent(message.properties.headers?.[TRACEPARENT]))
    const run: Run = { jobId, message, channel, cls, stop: new AbortController(), leased: false }
    running.set(jobId, run)
    const jobLog = log.child({ jobId, mediaId: request.mediaId, ...traceFields(trace) })
    jobLogs.set(jobId, jobLog)
    const attempt = attemptOf(message.properties.headers)
    events.emit('received', { jobId, attempt, cls })
    const stages = metrics.stageClock()
    const updates = createUpdates({
      send: (update) => publish(settings.queues.updates, encodeUpdate(jobId, update), jobId, 'job.update', trace),
      heartbeatMs: settings.heartbeatMs,
      onError: (error) => jobLog.warn({ err: error }, `an update was not confirmed: ${describeError(error)}`),
    })
    // Past the broker's consumer_timeout the channel would be closed under the job: trade the delivery for a lease first.
    const ackDeadline = setTimeout(() => void lease(run), settings.ackDeadlineMs)
    const timeLimit = setTimeout(
      () =>
        run.stop.abort(new JobError('timeout', `the job took longer than the limit of ${settings.timeoutMs / 1000} s`)),
      settings.timeoutMs
    )
    let next: Next<M>
    let refit: Promise<void>
    try {
      let settled: Settled<M>
      try {
        settled = await attemptJob(
          request,
          {
            workDir: workDirs.create(jobId),
            signal: run.stop.signal,
            attempt,
            report: (stage, progress, etaSeconds) => {
              stages.enter(stage)
              updates.progress(stage, progress, etaSeconds)
            },
            storage: storage.bind(run.stop.signal),
            cleanup: storage.bind(),
            planned: definition.outputs(request),
            log: jobLog,
            onOutput: metrics.output,
          },
          definition.handle
        )
      } catch (error) {
        settled = { kind: 'fault', error } // the work directory could not be made, say
      }
      next = settled.kind === 'fault' ? await afterFault(run, attempt, settled.error) : settled
    } finally {
      clearTimeout(ackDeadline)
      clearTimeout(timeLimit)
      running.delete(jobId)
      workDirs.remove(jobId)
      refit = fitConsumer()
    }

    if (next.kind === 'interrupted') return updates.close()
    if (next.kind === 'retry') {
      updates.close()
      if (!run.leased) return settle(() => channel.nack(message, false, true), amqp)
      // A leased job has no delivery to requeue: a fresh copy goes back, counting this attempt, now that this run
      // has cleaned up (the copy may come straight back here, to the same work directory) and the consumer has its
      // slot back (a copy delivered to a consumer being cancelled would be returned, and counted as an attempt).
      await refit
      await persist(jobId, 'the hand-back of its request after a fault', () => handBack(run, attempt, 'after a fault'))
      return
    }
    let { result } = next
    let body: Uint8Array
    try {
      body = encodeMessage(schemas.result, result as v.InferInput<typeof schemas.result>)
    } catch (error) {
      // The media code returned something the protocol refuses (a bug): the job fails saying so.
      result = failedResult(jobId, new JobError('processing_error', describeError(error)))
      body = encodeMessage(schemas.result, result as v.InferInput<typeof schemas.result>)
    }
    if (result.status === 'completed') stages.done()
    updates.final(finalUpdate(result))
    if (run.leased) {
      if (await persist(jobId, 'its result', () => publish(settings.queues.results, body, jobId, 'job.result', trace)))
        reportOutcome(result)
      return updates.settled()
    }
    try {
      await publish(settings.queues.results, body, jobId, 'job.result', trace)
      await updates.settled()
    } catch (error) {
      // Unconfirmed result: put the request back so the job is done again rather than lost.
      jobLog.error({ err: error }, `the result was not confirmed, requeueing: ${describeError(error)}`)
      return settle(() => channel.nack(message, false, true), amqp)
    }
    settle(() => channel.ack(message), amqp)
    reportOutcome(result)
  }

  /** After a fault: a backoff, then another attempt; on the last attempt, `gave_up`. */
  async function afterFault(run: Run, attempt: number, error: unknown): Promise<Next<M>> {
    const reason = describeError(error)
    if (attempt >= MAX_ATTEMPTS) {
      const gaveUp = new JobError('gave_up', `gave up after ${attempt} attempts: ${reason}`, { class: 'transient' })
      return { kind: 'result', result: failedResult(run.jobId, gaveUp) }
    }
    const delayMs = retryDelayMs(attempt)
    events.emit('retrying', { jobId: run.jobId, attempt, delayMs, reason })
    await sleep(delayMs, AbortSignal.any([stopping, run.stop.signal]))
    return run.stop.signal.reason instanceof Interrupted ? { kind: 'interrupted' } : { kind: 'retry' }
  }

  /**
   * A message on the request queue that is no valid request, or one reaching outside ALLOWED_BUCKETS: a `failed`
   * result when it names a job, then the dead letters.
   */
  async function refuse(channel: AmqpChannel, message: AmqpMessage, reason: string): Promise<void> {
    const jobId = jobIdOf(message)
    events.emit('refused', { jobId, messageId: message.properties.messageId ?? null, reason })
    if (jobId) {
      const error = new JobError('invalid_request', `the processor refused the request: ${reason}`)
      const body = encodeMessage(schemas.result, failedResult(jobId, error) as v.InferInput<typeof schemas.result>)
      const trace = parseTraceparent(message.properties.headers?.[TRACEPARENT]) ?? undefined
      await publish(settings.queues.results, body, jobId, 'job.result', trace).catch((failure) =>
        log.warn({ jobId, err: failure }, `the refusal was not confirmed: ${describeError(failure)}`)
      )
    }
    settle(() => channel.nack(message, false, false), amqp)
  }

  function reportOutcome(result: JobResult<M>): void {
    if (result.status === 'completed') events.emit('completed', { jobId: result.jobId })
    else if (result.status === 'failed') events.emit('failed', { jobId: result.jobId, error: result.error })
    else events.emit('cancelled', { jobId: result.jobId })
  }

  /**
   * Publishes for a leased job, which has no delivery to fall back on: retried through reconnects for a while (not
   * past the shutdown's grace period). Failing that, the backend re-drives the job once its heartbeats stop.
   */
  async function persist(jobId: string, what: string, action: () => Promise<void>): Promise<boolean> {
    const giveUpAt = Date.now() + LEASED_RETRY.forMs
    for (let tries = 1; ; tries++) {
      try {
        await action()
        return true
      } catch (error) {
        if (Date.now() + LEASED_RETRY.everyMs > giveUpAt || pastGrace.aborted) {
          events.emit('lost', { jobId, what, reason: `${tries} tries, last: ${describeError(error)}` })
          return false
        }
        logOf(jobId).warn(
          { err: error, what },
          `leased job: ${what} failed (${describeError(error)}); trying again in ${LEASED_RETRY.everyMs / 1000} s`
        )
        await sleep(LEASED_RETRY.everyMs, pastGrace)
      }
    }
  }

  async function handBack(run: Run, attemptsMade: number, why: string): Promise<void> {
    if (!broker.publisher) throw new Error('not connected to the broker')
    const { properties, content } = run.message
    await broker.publisher.publish(requestQueue(settings.queues, run.cls), content, {
      correlationId: run.jobId,
      type: properties.type ?? 'job.request',
      priority: CLASS_PRIORITY[run.cls],
      headers: carriedHeaders(properties.headers, attemptsMade),
    })
    if (!run.leased) run.channel.ack(run.message)
    events.emit('handed-back', { jobId: run.jobId, attemptsMade, why })
  }

  return { onMessage, handBack }
}

const encodeUpdate = (jobId: string, update: UpdateFields) =>
  encodeMessage(JobUpdateSchema, { version: 1, jobId, at: new Date().toISOString(), ...update })

function failedResult(jobId: string, error: JobError): Extract<JobResult<never>, { status: 'failed' }> {
  return { version: 1, jobId, status: 'failed', error: error.toInfo(), at: new Date().toISOString() }
}

/** The last update of a job, matching its result. */
function finalUpdate(result: JobResult<unknown>): UpdateFields {
  if (result.status === 'failed') return { status: 'failed', stage: 'finished', progress: 100, error: result.error }
  if (result.status === 'cancelled') return { status: 'cancelled', stage: 'finished', progress: 100 }
  return { status: 'completed', stage: 'finished', progress: 100, etaSeconds: 0 }
}

/** The job a refused message names, if it names one: its body's `jobId`, else its correlation id, when a UUID. */
function jobIdOf(message: AmqpMessage): string | null {
  let fromBody: unknown
  if (message.content.byteLength <= MAX_MESSAGE_BYTES) {
    try {
      fromBody = (JSON.parse(new TextDecoder().decode(message.content)) as { jobId?: unknown })?.jobId
    } catch {
      // not JSON: the correlation id may still say
    }
  }
  for (const candidate of [fromBody, message.properties.correlationId])
    if (v.is(JobIdSchema, candidate)) return candidate
  return null
}
