/** Wires the API's parts together: store, storage, broker, outbox, the consumers' handlers and the HTTP app. */
import { MEDIA_TYPES, describeBrokerUrls, type MediaType } from '@app/shared'
import { createLogger, createRegistry, runChecks, type Logger } from '@app/shared/ops'
import { createApp } from './app.ts'
import { consoleBuilder } from './console-build.ts'
import { createLinks } from './links.ts'
import { connectBroker } from './broker.ts'
import { createChanges } from './changes.ts'
import type { Config } from './config.ts'
import { createHandlers } from './handlers.ts'
import { IDEMPOTENCY_KEEP_MS } from './idempotency.ts'
import { createDeliverer } from './webhooks/deliver.ts'
import { createPresigner } from './presign.ts'
import { createTus } from './tus.ts'
import { seedKeys } from './keys.ts'
import { apiMetrics } from './metrics.ts'
import { createOutbox } from './outbox.ts'
import { describeDatabase, openStore } from './open-store.ts'
import { dependencies } from './routes/health.ts'
import { createStorage } from './storage.ts'
import { originalKey, stagingKey } from './recipes.ts'

/** A request not confirmed within this long after it was written is re-sent by the relay. */
const OUTBOX_GRACE_MS = 15_000
const OUTBOX_INTERVAL_MS = 5_000
/** The longest an upload waits for the broker's confirm before answering 503. */
const PUBLISH_TIMEOUT_MS = 5_000
/** How often the abandoned-upload sweep runs, by one instance of all of them. */
const UPLOAD_SWEEP_EVERY_MS = 3_600_000
/** How often each instance looks for webhook deliveries due (each is claimed by one instance). */
const WEBHOOK_ROUND_MS = 1_000
/** How often each instance asks whether a sweep is due (the sweep itself runs at its own pace, once across instances). */
const UPLOAD_SWEEP_CHECK_MS = 300_000

/** `log`: where the API logs; by default JSON lines on stdout at LOG_LEVEL (readable on a terminal). */
export async function startApi(config: Config, options: { log?: Logger } = {}) {
  const log = options.log ?? createLogger('api', config.log)
  // Names this instance: in its broker announcements (so it can tell its own apart when the fanout brings them
  // back) and in the job history (which instance applied what).
  const instanceId = crypto.randomUUID()
  const store = await openStore(config.database, { origin: instanceId }).catch((error: Error) => {
    throw new Error(`cannot open the database ${describeDatabase(config.database)}: ${error.message}`, { cause: error })
  })
  const registry = createRegistry('api')
  const presigner = createPresigner(config.s3)
  const storage = createStorage(config.s3, (operation) => metrics.s3Errors.inc({ operation }))
  const metrics = apiMetrics(
    registry,
    {
      jobsByType: () => store.countJobsByType(),
      stalled: () => store.countSilent(config.stallMs),
      deadLetters: () => store.countDeadLetters(),
      outbox: () => store.outboxBacklog(),
      queues: () => broker.queueStats(),
      ready: async () => (await runChecks(dependencies({ store, broker, storage }))).ready,
    },
    (error) => log.warn({ err: error }, `metrics: could not read the shared gauges: ${error.message}`)
  )
  const release = async () => {
    await store.close()
    storage.close()
  }
  const seeded = await seedKeys(store, config.apiKeys).catch(async (error) => {
    await release()
    throw error
  })
  if (seeded) log.info(`stored ${seeded} API key(s) from API_KEYS`)
  if (config.auth === 'none') log.warn('AUTH=none: the API is open to anyone who can reach it, as the tenant "default"')
  else if ((await store.countActiveKeys()) === 0) {
    log.warn('no API keys exist yet: every media request gets 401. Create one with `bun run keys create <tenant>`, POST /v1/admin/keys or API_KEYS')
  }
  const broker = await connectBroker({
    url: config.rabbitmqUrl,
    system: config.system,
    publishTimeoutMs: PUBLISH_TIMEOUT_MS,
    instanceId,
    log,
    onError: (operation) => metrics.brokerErrors.inc({ operation }),
  }).catch(async (error: Error) => {
    await release()
    throw new Error(
      `cannot reach RabbitMQ at ${describeBrokerUrls(config.rabbitmqUrl)} (${error.message}).\n` +
        '  Start it with `rabbitmq-server -detached` (Debian: `apt-get install rabbitmq-server`), or set RABBITMQ_URL.',
      { cause: error }
    )
  })
  const changes = createChanges(broker)
  const outbox = createOutbox({ store, broker, graceMs: OUTBOX_GRACE_MS, log })
  await broker.consume(createHandlers({ system: config.system, store, storage, changes, log, metrics })).catch(async (error) => {
    await broker.close()
    await release()
    throw error
  })

  // The outbox relay: what an upload could not send (or a re-drive wrote) goes out on the next round.
  const relayTimer = setInterval(() => void outbox.relay(), OUTBOX_INTERVAL_MS)
  void outbox.relay()

  // Stalled jobs: processing, yet no word (not even a heartbeat) for STALL_SECONDS. Only types with a live processor
  // count: with none running, jobs wait in their queue, as they may (processors need not be up). One instance sweeps
  // each round (claimRound); the store's row locks would keep a second from re-driving a job twice anyway.
  const sweepEveryMs = Math.min(30_000, Math.max(1_000, config.stallMs / 4))
  let sweeping = false
  const sweep = async () => {
    if (sweeping || !broker.isConnected()) return
    sweeping = true
    try {
      if (!(await store.claimRound('stall-sweep', sweepEveryMs - 100))) return
      const live: MediaType[] = []
      for (const type of MEDIA_TYPES) if ((await broker.consumers(type)) > 0) live.push(type)
      for (const action of await store.sweepStalled(config.stallMs, config.maxRedrives, live)) {
        metrics.stallAction(action.action)
        log.warn({ jobId: action.jobId, mediaId: action.mediaId, action: action.action }, `job stalled (silent for ${config.stallMs / 1000} s): ${action.action}`)
        changes.announce(action.mediaId)
      }
      void outbox.relay()
    } catch (error) {
      log.warn({ err: error }, `stall sweep: ${(error as Error).message}; will retry`)
    } finally {
      sweeping = false
    }
  }
  const sweepTimer = setInterval(sweep, sweepEveryMs)

  // Abandoned multipart uploads (a process killed mid-upload) under this system's keys, hourly. Stores without
  // ListMultipartUploads (some S3 clones) need a lifecycle rule (AbortIncompleteMultipartUpload) instead.
  const sweepUploads = async (olderThanMs: number) => {
    const aborted = await storage.abortStaleUploads(`${config.system}/`, olderThanMs)
    if (aborted.length) log.warn({ keys: aborted }, `aborted ${aborted.length} abandoned multipart upload(s)`)
    // Direct and tus uploads handed out but never completed: what was stored of them (a PUT object, tus's .info)
    // goes, then their records. Their multipart uploads were aborted just above.
    const forgotten: string[] = []
    for (let batch = await store.staleDirectUploads(olderThanMs, 100); batch.length; batch = await store.staleDirectUploads(olderThanMs, 100)) {
      for (const upload of batch) {
        await storage.delete(upload.key)
        if (upload.uploadId === 'tus') await storage.delete(`${upload.key}.info`)
        if (upload.uploadId === null) await storage.delete(stagingKey(config.system, upload.id))
        await store.deleteDirectUpload(upload.key)
        forgotten.push(upload.key)
      }
    }
    if (forgotten.length) log.warn({ keys: forgotten }, `forgot ${forgotten.length} direct upload(s) never completed`)
    // A presigned PUT's URL works until it expires, completed or not: what it wrote after its upload was completed
    // (or forgotten) is read by nobody, and goes.
    const late: string[] = []
    for (const key of await presigner.list(`${config.system}/uploads/`)) {
      const upload = await store.getDirectUpload(originalKey(config.system, key.slice(key.lastIndexOf('/') + 1)))
      if (upload && !upload.mediaId) continue
      await storage.delete(key)
      late.push(key)
    }
    if (late.length) log.warn({ keys: late }, `removed ${late.length} object(s) written through a direct upload's URL after it was completed`)
    return [...new Set([...aborted, ...forgotten, ...late])]
  }
  const uploadsTimer = setInterval(async () => {
    try {
      if (await store.claimRound('multipart-sweep', UPLOAD_SWEEP_EVERY_MS)) await sweepUploads(config.multipartMaxAgeMs)
    } catch (error) {
      log.warn({ err: error }, `multipart sweep: ${(error as Error).message}; an S3 lifecycle rule (AbortIncompleteMultipartUpload) does the same`)
    }
    // Resumable uploads left unfinished past their day: their S3 multipart uploads are aborted.
    if (await store.claimRound('tus-sweep', UPLOAD_SWEEP_EVERY_MS).catch(() => false)) {
      await tus.cleanUp().catch((error: Error) => log.warn({ err: error }, `tus sweep: ${error.message}`))
    }
    // Answers kept for Idempotency-Keys past their day (lookups ignore them already; this only frees the rows).
    if (await store.claimRound('idempotency-sweep', UPLOAD_SWEEP_EVERY_MS).catch(() => false)) {
      await store.sweepIdempotencyKeys(IDEMPOTENCY_KEEP_MS).catch((error) => log.warn({ err: error }, `idempotency sweep: ${error.message}`))
    }
  }, UPLOAD_SWEEP_CHECK_MS)

  const tus = createTus({ system: config.system, store, storage, outbox, presigner, s3: config.s3, maxUploadBytes: config.maxUploadBytes, instanceId, corsOrigins: config.corsOrigins })

  // Webhooks: the store writes each event with the change it announces; this sends what is due, here or elsewhere.
  const deliverer = createDeliverer({ store, log, settings: config.webhooks, onAttempt: (outcome) => metrics.webhookAttempt(outcome) })
  const webhookTimer = setInterval(() => void deliverer.round(), WEBHOOK_ROUND_MS)

  const app = createApp({
    system: config.system,
    store,
    storage,
    broker,
    changes,
    outbox,
    maxUploadBytes: config.maxUploadBytes,
    stallMs: config.stallMs,
    adminToken: config.adminToken,
    sweepUploads,
    auth: config.auth,
    limits: config.limits,
    corsOrigins: config.corsOrigins,
    log,
    metrics,
    registry,
    instanceId,
    s3: config.s3,
    presigner,
    tus,
    console: consoleBuilder(),
    links: createLinks(store),
    webhooks: { allowHttp: config.webhooks.allowHttp, allowPrivate: config.webhooks.allowPrivate, kick: () => void deliverer.round() },
  })
  return {
    app,
    store,
    log,
    async stop() {
      clearInterval(relayTimer)
      clearInterval(sweepTimer)
      clearInterval(uploadsTimer)
      clearInterval(webhookTimer)
      await deliverer.settled()
      await broker.close()
      presigner.close()
      await release()
    },
  }
}
