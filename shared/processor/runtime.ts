/**
 * The consumer half of the protocol, for every processor: connect and recover, consume the type's request queue,
 * and take each delivery through its life (decode or refuse, the bucket confinement, the duplicate guard, updates
 * and heartbeats, the attempt, backoff and `gave_up`, the result confirmed before the ack), with the lease for long
 * jobs, the cancel fanout, and hand-back at shutdown. A processor gives it a `handle` for its media and nothing else.
 *
 * A job holds its delivery while it is safe to: the request is acked only after its result is confirmed, so a
 * processor that dies mid-job has the request redelivered. RabbitMQ closes the channel of a delivery held longer
 * than its consumer_timeout, so a job still running at the ack deadline trades its delivery for a lease: the
 * delivery is acked and the job carries on, vouched for by its heartbeats alone. A leased job no longer depends on
 * a channel: it survives a reconnect, and its result (or a hand-back after a fault) is retried for a while rather
 * than requeued. A lease keeps its slot: the processor never runs more than its concurrency, leased or not.
 */
import { Buffer } from 'node:buffer'
import { hostname } from 'node:os'
import * as v from 'valibot'
import { connectInTurn, describeBrokerUrls } from '../broker-urls.ts'
import { MAX_MESSAGE_BYTES, decodeMessage, encodeMessage, type Decoded } from '../codec.ts'
import { JobIdSchema, JobUpdateSchema, MESSAGES, type MetadataOf, type RequestOf } from '../messages.ts'
import type { MediaType } from '../names.ts'
import { createLogger, traceFields, type Logger } from '../ops/log.ts'
import { createRegistry, type Registry } from '../ops/metrics.ts'
import { runChecks, type Readiness } from '../ops/health.ts'
import { startOpsServer, type OpsServer } from '../ops/server.ts'
import { createPublisher, type Publisher } from '../publisher.ts'
import { MAX_ATTEMPTS, declareTopology, retryDelayMs, topology } from '../topology.ts'
import { TRACEPARENT, childSpan, formatTraceparent, parseTraceparent, type TraceContext } from '../trace.ts'
import type { AmqpChannel, AmqpConfirmChannel, AmqpConnect, AmqpMessage, AmqpModel } from './amqp.ts'
import { confinementFailure } from './buckets.ts'
import { listenForCancels } from './cancels.ts'
import type { RuntimeSettings } from './config.ts'
import { attemptOf, carriedHeaders } from './delivery.ts'
import { Cancelled, Interrupted, JobError, describeError, sleep } from './errors.ts'
import { ProcessorEvents, logEvents } from './events.ts'
import { processorMetrics } from './metrics.ts'
import { attemptJob, type JobContext, type JobOutput, type JobResult, type PlannedOutput, type Settled } from './job.ts'
import { createStorage } from './storage.ts'
import { createUpdates, type UpdateFields } from './updates.ts'
import { createWorkDirs } from './workdirs.ts'

export interface ProcessorDefinition<T extends MediaType> {
  settings: RuntimeSettings & { type: T }
  /** amqplib's `connect`. */
  connect: AmqpConnect
  /** Every output a request may make (what a cancel removes). */
  outputs(request: RequestOf<T>): PlannedOutput[]
  /** Makes one job's outputs. Throws a JobError for an expected failure; anything else it throws is a fault. */
  handle(request: RequestOf<T>, job: JobContext): Promise<JobOutput<MetadataOf<T>>>
  /** Where the processor logs; by default JSON lines on stdout at `settings.log`'s level. */
  log?: Logger
}

export interface Processor {
  events: ProcessorEvents
  /** The processor's metrics (also served on `/metrics` when `settings.metricsPort` is set). */
  registry: Registry
  /** Where `/metrics`, `/livez` and `/readyz` listen, or null. */
  opsPort: number | null
  /** What `/readyz` answers: connected to the broker, consuming, and a slot free for another job. */
  readiness(): Promise<Readiness>
  /**
   * Stops taking work and lets running jobs finish for up to the grace period. Jobs still running then are
   * stopped and handed back as fresh messages (held deliveries acked), so a shutdown costs no attempt; if a
   * hand-back fails, a held delivery is released to the broker, which delivers it again.
   */
  stop(): Promise<void>
}

/** A leased job has no delivery to fall back on: its publishes are retried this often, for this long. */
const LEASED_RETRY = { everyMs: 2_000, forMs: 120_000 }

/** A delivery being worked on, and the channel it must be settled on. */
interface Run {
  jobId: string
  message: AmqpMessage
  channel: AmqpChannel
  /** Aborted to stop the job; the reason says why (Cancelled, Interrupted, or a JobError for the time limit). */
  stop: AbortController
  /** Acked at the ack deadline: the job no longer depends on its channel, and only its heartbeats vouch for it. */
  leased: boolean
}

type Next<M> = { kind: 'result'; result: JobResult<M> } | { kind: 'retry' } | { kind: 'interrupted' }

const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** Connects, declares the topology and consumes until stopped; reconnects by itself when the broker drops it. */
export async function startProcessor<T extends MediaType>(definition: ProcessorDefinition<T>): Promise<Processor> {
  type M = MetadataOf<T>
  const { settings } = definition
  const name = settings.type
  const schemas = MESSAGES[settings.type]
  const events = new ProcessorEvents()
  const log = definition.log ?? createLogger(name, settings.log)
  /** Each job's logger (its ids and trace on every line), from its delivery until its outcome is reported. */
  const jobLogs = new Map<string, Logger>()
  const logOf = (jobId: string) => jobLogs.get(jobId) ?? log.child({ jobId })
  logEvents(events, logOf, log)
  const registry = createRegistry(name)
  const metrics = processorMetrics(
    registry,
    settings.type,
    () => ({ busy: running.size, free: Math.max(0, settings.concurrency - running.size) }),
    async () => (await readiness()).ready
  )
  metrics.watch(events)
  const storage = createStorage(settings.s3, (operation) => metrics.s3Errors.inc({ operation }))
  const workDirs = createWorkDirs(settings.tmpDir)

  const inFlight = new Set<Promise<void>>()
  /** The jobs running here by job id: to cancel, to lease, to interrupt when their channel dies, to hand back. */
  const running = new Map<string, Run>()
  /** Aborts when the service stops: backoff waits end, and no consumer is created again. */
  const stopping = new AbortController()
  /** Aborts when the shutdown's grace period is over: leased jobs stop retrying their publishes. */
  const pastGrace = new AbortController()
  let publisher: Publisher | undefined
  /** The current connection and its channel, on which the consumer is (re)created. */
  let link: { model: AmqpModel; channel: AmqpConfirmChannel } | undefined
  let consumer: { channel: AmqpChannel; tag: string; prefetch: number } | undefined

  const publish = (queue: string, body: Uint8Array, jobId: string, type: string, trace?: TraceContext): Promise<void> => {
    if (!publisher) return Promise.reject(new Error('not connected to the broker'))
    const headers = trace ? { [TRACEPARENT]: formatTraceparent(trace) } : undefined
    return publisher.publish(queue, body, { correlationId: jobId, type, headers }).catch((error) => {
      metrics.brokerErrors.inc({ operation: 'publish' })
      throw error
    })
  }

  async function onMessage(channel: AmqpChannel, message: AmqpMessage): Promise<void> {
    // A job's logger lives from here until its outcome is reported (events logged after `running` forgets the job).
    try {
      await takeMessage(channel, message)
    } finally {
      // While stopping, `stop` still hands jobs back and logs it: the loggers go with the process instead.
      const jobId = jobIdOf(message)
      if (jobId && !running.has(jobId) && !stopping.signal.aborted) jobLogs.delete(jobId)
    }
  }

  async function takeMessage(channel: AmqpChannel, message: AmqpMessage): Promise<void> {
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
      return settle(() => (requeued ? channel.nack(message, false, true) : channel.ack(message)))
    }
    // This attempt's span, sent on the job's updates and result: a child of the backend's trace (a missing or
    // malformed traceparent starts a new trace).
    const trace = childSpan(parseTraceparent(message.properties.headers?.[TRACEPARENT]))
    const run: Run = { jobId, message, channel, stop: new AbortController(), leased: false }
    running.set(jobId, run)
    const jobLog = log.child({ jobId, mediaId: request.mediaId, ...traceFields(trace) })
    jobLogs.set(jobId, jobLog)
    const attempt = attemptOf(message.properties.headers)
    events.emit('received', { jobId, attempt })
    const stages = metrics.stageClock()
    const updates = createUpdates({
      send: (update) => publish(settings.queues.updates, encodeUpdate(jobId, update), jobId, 'job.update', trace),
      heartbeatMs: settings.heartbeatMs,
      onError: (error) => jobLog.warn({ err: error }, `an update was not confirmed: ${describeError(error)}`),
    })
    // Past the broker's consumer_timeout the channel would be closed under the job: trade the delivery for a lease first.
    const ackDeadline = setTimeout(() => void lease(run), settings.ackDeadlineMs)
    const timeLimit = setTimeout(
      () => run.stop.abort(new JobError('timeout', `the job took longer than the limit of ${settings.timeoutMs / 1000} s`)),
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
      if (!run.leased) return settle(() => channel.nack(message, false, true))
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
      if (await persist(jobId, 'its result', () => publish(settings.queues.results, body, jobId, 'job.result', trace))) reportOutcome(result)
      return updates.settled()
    }
    try {
      await publish(settings.queues.results, body, jobId, 'job.result', trace)
      await updates.settled()
    } catch (error) {
      // Unconfirmed result: put the request back so the job is done again rather than lost.
      jobLog.error({ err: error }, `the result was not confirmed, requeueing: ${describeError(error)}`)
      return settle(() => channel.nack(message, false, true))
    }
    settle(() => channel.ack(message))
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
    await sleep(delayMs, AbortSignal.any([stopping.signal, run.stop.signal]))
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
    settle(() => channel.nack(message, false, false))
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
        if (Date.now() + LEASED_RETRY.everyMs > giveUpAt || pastGrace.signal.aborted) {
          events.emit('lost', { jobId, what, reason: `${tries} tries, last: ${describeError(error)}` })
          return false
        }
        logOf(jobId).warn({ err: error, what }, `leased job: ${what} failed (${describeError(error)}); trying again in ${LEASED_RETRY.everyMs / 1000} s`)
        await sleep(LEASED_RETRY.everyMs, pastGrace.signal)
      }
    }
  }

  /**
   * Publishes the job's request again as a new message carrying `attemptsMade` (and its own headers), then acks the
   * original delivery unless the job is leased (acked already). The broker's delivery count starts again.
   */
  async function handBack(run: Run, attemptsMade: number, why: string): Promise<void> {
    if (!publisher) throw new Error('not connected to the broker')
    const { properties, content } = run.message
    await publisher.publish(settings.queues.request, content, {
      correlationId: run.jobId,
      type: properties.type ?? 'job.request',
      headers: carriedHeaders(properties.headers, attemptsMade),
    })
    if (!run.leased) run.channel.ack(run.message)
    events.emit('handed-back', { jobId: run.jobId, attemptsMade, why })
  }

  /** Acks a job's delivery at the ack deadline and lets the job carry on under a lease (see the header). */
  function lease(run: Run): Promise<void> {
    // Around a consumer re-created with one slot less: the ack frees a prefetch slot that the job still occupies.
    return fitConsumer(() => {
      // It may have finished, been stopped or lost its channel while the consumer was being cancelled.
      if (running.get(run.jobId) !== run || run.stop.signal.aborted) return
      try {
        run.channel.ack(run.message)
      } catch (error) {
        metrics.brokerErrors.inc({ operation: 'settle' })
        return logOf(run.jobId).warn({ err: error }, `could not ack at the ack deadline: ${describeError(error)}`)
      }
      run.leased = true
      events.emit('leased', { jobId: run.jobId })
    })
  }

  let fitting = Promise.resolve()
  /**
   * Keeps the jobs here at the concurrency. The broker counts only a consumer's unacked deliveries against its
   * prefetch, and a running consumer's prefetch cannot be changed; so when a lease frees a slot at the broker (or
   * a job of an earlier consumer ends), the consumer is cancelled and re-created with the slots left. Cancelling
   * leaves its unacked deliveries with the channel. `change` runs while there is no consumer.
   */
  function fitConsumer(change?: () => void): Promise<void> {
    fitting = fitting
      .then(async () => {
        if (!change && (consumer?.prefetch ?? 0) === freeSlots()) return
        if (consumer) {
          const { channel, tag } = consumer
          consumer = undefined
          await channel.cancel(tag).catch(() => {})
        }
        change?.()
        const prefetch = freeSlots()
        if (prefetch > 0 && link) await consume(link.model, link.channel, prefetch)
      })
      .catch((error) => {
        metrics.brokerErrors.inc({ operation: 'consume' })
        log.error({ err: error }, `could not consume (the channel is gone; a reconnect follows): ${describeError(error)}`)
      })
    return fitting
  }

  /** Slots for the current consumer's deliveries: those not taken by leased jobs or by an earlier consumer's. */
  function freeSlots(): number {
    if (stopping.signal.aborted) return 0
    let taken = 0
    for (const run of running.values()) if (run.leased || run.message.fields.consumerTag !== consumer?.tag) taken++
    return Math.max(0, settings.concurrency - taken)
  }

  async function consume(model: AmqpModel, channel: AmqpConfirmChannel, prefetch: number): Promise<void> {
    // Per consumer (quorum queues refuse a global prefetch); it applies to consumers created after it.
    await channel.prefetch(prefetch)
    const { consumerTag } = await channel.consume(settings.queues.request, (message) => {
      if (message === null) {
        metrics.brokerErrors.inc({ operation: 'consume' })
        log.error('the broker cancelled the consumer (queue deleted?); reconnecting to consume again')
        return void model.close().catch(() => {})
      }
      const task = onMessage(channel, message).catch((error) => log.error({ err: error }, `unexpected error: ${describeError(error)}`))
      inFlight.add(task)
      void task.finally(() => inFlight.delete(task))
    })
    consumer = { channel, tag: consumerTag, prefetch }
  }

  /** Stops the held jobs whose deliveries were on `channel`: the broker has put them back, and they will come again. */
  function interruptJobsOn(channel: AmqpChannel, why: string): void {
    for (const run of running.values()) {
      if (run.channel !== channel) continue
      if (run.leased) {
        logOf(run.jobId).info({ why }, `leased job carries on (${why})`)
        continue
      }
      if (run.stop.signal.aborted) continue
      run.stop.abort(new Interrupted(why))
      events.emit('interrupted', { jobId: run.jobId, why })
    }
  }

  const { connection, current } = await connectInTurn(definition.connect, settings.rabbitmqUrl, {
    // Names the connection in `rabbitmqctl list_connections client_properties` (and the management UI).
    clientProperties: { connection_name: `${name} ${settings.system} ${hostname()}:${process.pid}` },
    recovery: {
      initialMaxRetries: 2,
      maxDelay: 5_000,
      // Runs after every (re)connect: channels, topology, prefetch and consumer do not survive a reconnect.
      async setup(model) {
        const channel = await model.createConfirmChannel()
        channel.on('error', (error) => {
          metrics.brokerErrors.inc({ operation: 'channel' })
          log.error({ err: error }, `channel error: ${error.message}`)
        })
        // A channel closed under a live connection (an ack timeout, a deleted queue) is not recovered by amqplib:
        // close the whole connection, so recovery re-runs this setup.
        channel.on('close', () => {
          if (link?.channel === channel) link = undefined
          if (consumer?.channel === channel) consumer = undefined
          interruptJobsOn(channel, 'its channel closed')
          if (!stopping.signal.aborted) model.close().catch(() => {})
        })
        await declareTopology(channel, topology(settings.system, settings.type))
        publisher = createPublisher(channel, toBuffer)
        await listenForCancels(model, settings.system, (jobId) => running.get(jobId)?.stop.abort(new Cancelled('by its backend')), log)
        link = { model, channel }
        await fitConsumer()
      },
    },
  }).catch((error) => {
    storage.destroy()
    workDirs.removeAll()
    throw new Error(`cannot reach RabbitMQ at ${describeBrokerUrls(settings.rabbitmqUrl)}: ${describeError(error)}`, { cause: error })
  })
  connection.on('disconnect', (error) => {
    metrics.brokerErrors.inc({ operation: 'connection' })
    log.warn({ err: error }, `lost the broker (${error.message}); reconnecting to ${current()}`)
  })
  connection.on('connect', () => log.info(`connected to the broker at ${current()}`))
  connection.on('reconnect-failed', (error) => log.error({ err: error }, `gave up reconnecting: ${error.message}`))
  connection.on('error', (error) => log.error({ err: error }, `broker error: ${error.message}`))
  connection.on('blocked', (reason) => log.warn({ reason: String(reason) }, `the broker blocks publishing (${reason})`))
  connection.on('unblocked', () => log.info('the broker accepts publishing again'))

  /** What `/readyz` asks: connected, consuming (unless every slot is taken), and a slot free for another job. */
  const checks = {
    broker: () => {
      if (!link) throw new Error('not connected')
    },
    consumer: () => {
      if (stopping.signal.aborted) throw new Error('stopping')
      if (freeSlots() > 0 && !consumer) throw new Error(`not consuming ${settings.queues.request}`)
    },
    slots: () => {
      if (running.size >= settings.concurrency) throw new Error(`all ${settings.concurrency} busy`)
    },
  }
  const readiness = () => runChecks(checks)
  let ops: OpsServer | null = null
  if (settings.metricsPort !== null) {
    ops = await startOpsServer({
      port: settings.metricsPort,
      registry,
      checks: () => checks,
    }).catch(async (error) => {
      await connection.close().catch(() => {})
      storage.destroy()
      workDirs.removeAll()
      throw error
    })
  }
  log.info(
    { queue: settings.queues.request, concurrency: settings.concurrency, metricsPort: ops?.port ?? null },
    `consuming ${settings.queues.request} with concurrency ${settings.concurrency} (broker at ${current()})`
  )

  return {
    events,
    registry,
    opsPort: ops?.port ?? null,
    readiness,
    async stop() {
      stopping.abort()
      await fitConsumer()
      const settled = Promise.allSettled(inFlight)
      const graceOver = sleep(settings.shutdownGraceMs).then(() => 'grace over' as const)
      if ((await Promise.race([settled, graceOver])) === 'grace over') {
        pastGrace.abort()
        for (const run of [...running.values()]) {
          // Stopping already (cancelled, past its time, or its channel closed): it settles its own delivery, or the
          // broker has it back.
          if (run.stop.signal.aborted) continue
          run.stop.abort(new Interrupted('shutting down'))
          // A shutdown is not the job's fault: the attempts made before this one are carried over unchanged.
          await handBack(run, attemptOf(run.message.properties.headers) - 1, 'shutting down').catch((error) => {
            if (run.leased) return events.emit('lost', { jobId: run.jobId, what: 'its hand-back at shutdown', reason: describeError(error) })
            logOf(run.jobId).warn({ err: error }, `could not be handed back (${describeError(error)}); the broker delivers it again`)
            settle(() => run.channel.nack(run.message, false, true))
          })
        }
        await settled
      }
      // The channel first: closing the connection at once can overtake the acks just written on the channel (amqplib
      // muxes channels onto the socket), and the broker then requeues deliveries that were acked or handed back.
      await link?.channel.close().catch(() => {})
      await connection.close().catch(() => {})
      await ops?.close()
      storage.destroy()
      workDirs.removeAll()
    },
  }

  /** Ack/nack on a channel that died meanwhile throws; the broker has already requeued that delivery. */
  function settle(action: () => void): void {
    try {
      action()
    } catch (error) {
      metrics.brokerErrors.inc({ operation: 'settle' })
      log.warn({ err: error }, `could not settle a delivery (channel closed; it will be delivered again): ${describeError(error)}`)
    }
  }
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
  for (const candidate of [fromBody, message.properties.correlationId]) if (v.is(JobIdSchema, candidate)) return candidate
  return null
}
