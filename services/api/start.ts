/**
 * Wires the API's parts together, and does nothing else: the store, S3, the broker, the outbox, the handlers of what
 * the broker brings, change notices, uploads (tus and direct), webhook deliveries, the timers, and the HTTP app.
 */
import { describeBrokerUrls } from '@app/shared'
import { createLogger, createRegistry, runChecks, type Logger } from '@app/shared/ops'
import { consoleBuilder } from './adapter/console-build.ts'
import { createApp } from './app.ts'
import { seedKeys } from './auth/keys.ts'
import { createLinks } from './auth/links.ts'
import type { Config } from './config.ts'
import { createHandlers } from './jobs/apply.ts'
import { connectBroker } from './jobs/broker.ts'
import { createChanges } from './jobs/changes.ts'
import { createOutbox } from './jobs/outbox.ts'
import { startTimers } from './jobs/timers.ts'
import { loadSockets } from './adapter/websocket.ts'
import { createEventTokens } from './auth/event-tokens.ts'
import { createEventHub } from './events/hub.ts'
import { streamSlots } from './events/slots.ts'
import { apiMetrics } from './metrics.ts'
import { dependencies } from './routes/health.ts'
import { segmentStore } from './playback/addresses.ts'
import { openS3 } from './s3/open.ts'
import { describeDatabase, openStore } from './store/open.ts'
import { createDirectUploads } from './uploads/direct.ts'
import { createPresets } from './uploads/presets.ts'
import { sweepUploads } from './uploads/sweep.ts'
import { createTus } from './uploads/tus.ts'
import { createDeliverer } from './webhooks/deliver.ts'

/** A request not confirmed within this long after it was written is re-sent by the relay. */
const OUTBOX_GRACE_MS = 15_000
/** The longest an upload waits for the broker's confirm before answering 503. */
const PUBLISH_TIMEOUT_MS = 5_000

/** `log`: where the API logs; by default JSON lines on stdout at LOG_LEVEL (readable on a terminal). */
export async function startApi(config: Config, options: { log?: Logger } = {}) {
  const log = options.log ?? createLogger('api', config.log)
  // Names this instance: in its broker broadcasts (so it can tell its own apart when the fanout brings them back),
  // in the job history (which instance applied what), and as the holder of the leases it takes.
  const instanceId = crypto.randomUUID()
  const { system } = config
  const store = await openStore(config.database, { origin: instanceId }).catch((error: Error) => {
    throw new Error(`cannot open the database ${describeDatabase(config.database)}: ${error.message}`, { cause: error })
  })
  const registry = createRegistry('api')
  const metrics = apiMetrics(registry, (error) =>
    log.warn({ err: error }, `metrics: could not read the shared gauges: ${error.message}`)
  )
  const s3 = openS3(config.s3, (operation) => metrics.s3Errors.inc({ operation }))
  const { objects } = s3
  const release = async () => {
    await store.close()
    s3.close()
  }

  const seeded = await seedKeys(store, config.apiKeys).catch(async (error) => {
    await release()
    throw error
  })
  if (seeded) log.info(`stored ${seeded} API key(s) from API_KEYS`)
  if (config.auth === 'none') log.warn('AUTH=none: the API is open to anyone who can reach it, as the tenant "default"')
  else if ((await store.keys.countActive()) === 0) {
    log.warn(
      'no API keys exist yet: every media request gets 401. Create one with `bun run keys create <tenant>`, POST /v1/admin/keys or API_KEYS'
    )
  }

  const broker = await connectBroker({
    url: config.rabbitmqUrl,
    system,
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
  metrics.readFrom({
    jobsByType: () => store.media.countJobsByType(),
    stalled: () => store.media.countSilent(config.stallMs),
    deadLetters: () => store.deadLetters.count(),
    outbox: () => store.outbox.backlog(),
    queues: () => broker.queueStats(),
    ready: async () => (await runChecks(dependencies({ store, broker, objects }))).ready,
  })
  // Every change the store commits reaches this instance's event streams, and the others' over the fanout.
  const changes = createChanges(store, (change) => broker.broadcastChange(change))
  const outbox = createOutbox({ store, broker, graceMs: OUTBOX_GRACE_MS, log })
  await broker.consume(createHandlers({ system, store, objects, changes, log, metrics })).catch(async (error) => {
    changes.close()
    await broker.close()
    await release()
    throw error
  })

  const presets = createPresets(store.presets)
  const admit = {
    system,
    store,
    objects,
    outbox,
    presets,
    maxUploadBytes: config.maxUploadBytes,
    fairShare: config.fairShare,
    instanceId,
  }
  const tus = createTus({
    ...admit,
    s3Uploads: s3.uploads,
    s3: config.s3,
    corsOrigins: config.corsOrigins,
  })
  const direct = createDirectUploads({ ...admit, s3Uploads: s3.uploads })
  const sweep = (olderThanMs: number) => sweepUploads({ system, objects, uploads: store.uploads, log }, olderThanMs)
  const deliverer = createDeliverer({
    store,
    log,
    settings: config.webhooks,
    onAttempt: (outcome) => metrics.webhookAttempt(outcome),
  })
  const timers = startTimers({
    store,
    broker,
    outbox,
    tus,
    deliverer,
    sweepUploads: sweep,
    metrics,
    log,
    settings: {
      stallMs: config.stallMs,
      maxRedrives: config.maxRedrives,
      multipartMaxAgeMs: config.multipartMaxAgeMs,
      eventsKeepMs: config.eventsKeepMs,
    },
  })

  // The tenant's live events (events/): the log followed here, the streams each key may hold, the sockets' tokens.
  const hub = createEventHub({ events: store.events, changes })
  const sockets = await loadSockets()
  const app = createApp({
    ...admit,
    hub,
    events: store.events,
    slots: streamSlots(config.maxStreamsPerKey, store.limits),
    tokens: createEventTokens(store.coordination),
    upgradeWebSocket: sockets.upgradeWebSocket,
    broker,
    changes,
    media: store.media,
    deadLetters: store.deadLetters,
    keys: store.keys,
    idempotency: store.idempotency,
    webhooks: store.webhooks,
    sharedLimits: store.limits,
    presetStore: store.presets,
    direct,
    tus,
    bucket: config.s3.bucket,
    stallMs: config.stallMs,
    adminToken: config.adminToken,
    sweepUploads: sweep,
    auth: config.auth,
    limits: config.limits,
    corsOrigins: config.corsOrigins,
    log,
    metrics,
    registry,
    console: consoleBuilder(),
    links: createLinks(store.coordination),
    segmentStore: config.playbackSegments === 's3' ? await segmentStore(s3.uploads) : null,
    destinations: {
      allowHttp: config.webhooks.allowHttp,
      allowPrivate: config.webhooks.allowPrivate,
      kick: () => void deliverer.round(),
    },
  })
  return {
    app,
    store,
    log,
    /** What `Bun.serve` needs beside `fetch` to serve `/v1/ws` (adapter/serve.ts); undefined on Deno. */
    websocket: sockets.websocket,
    async stop() {
      timers.stop()
      hub.close()
      await deliverer.settled()
      changes.close()
      await broker.close()
      await release()
    },
  }
}
