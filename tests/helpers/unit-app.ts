/**
 * The API app for tests that need no broker and no S3: `createApp(deps)` with a real in-memory SQLite store, and
 * S3 and broker objects whose every member throws. Requests these tests make are answered before anything is
 * stored or sent; one that reaches either fails, which is the point.
 */
import { loadSockets } from '../../services/api/adapter/websocket.ts'
import { createEventTokens } from '../../services/api/auth/event-tokens.ts'
import { createEventHub } from '../../services/api/events/hub.ts'
import { streamSlots } from '../../services/api/events/slots.ts'
import { createRegistry, silentLogger } from '@app/shared/ops'
import { consoleBuilder } from '../../services/api/adapter/console-build.ts'
import { createApp, type AppDeps } from '../../services/api/app.ts'
import { issueKey } from '../../services/api/auth/keys.ts'
import { createLinks } from '../../services/api/auth/links.ts'
import type { Broker } from '../../services/api/jobs/broker.ts'
import { createChanges } from '../../services/api/jobs/changes.ts'
import { createOutbox } from '../../services/api/jobs/outbox.ts'
import { apiMetrics } from '../../services/api/metrics.ts'
import type { Objects } from '../../services/api/s3/objects.ts'
import { createS3Uploads } from '../../services/api/s3/uploads.ts'
import { openSqliteStore, type Store } from '../../services/api/store/open.ts'
import { createDirectUploads } from '../../services/api/uploads/direct.ts'
import { createPresets } from '../../services/api/uploads/presets.ts'
import { S3Client } from '@aws-sdk/client-s3'

export const ADMIN_TOKEN = 'unit-test-admin-token-0123456789'
const unused = (): never => {
  throw new Error('not used by this test')
}
const objects: Objects = {
  get bucket(): string {
    return unused()
  },
  put: unused,
  get: unused,
  size: unused,
  readHead: unused,
  copy: unused,
  list: unused,
  mark: unused,
  remove: unused,
  abortStaleUploads: unused,
  ping: unused,
}
const broker: Broker = {
  publish: unused,
  broadcastCancel: unused,
  broadcastChange: unused,
  consume: unused,
  isConnected: unused,
  blocked: unused,
  consumers: unused,
  queueStats: unused,
  close: unused,
}

/**
 * An app, its store, and a key of the tenant `unit` with `request()` sending it. Close `store` when done. `given`: a
 * store to use instead of a new in-memory SQLite one (two apps on one PostgreSQL database are two instances).
 */
export async function unitApp(overrides: Partial<AppDeps> = {}, given?: Store) {
  const store = given ?? openSqliteStore(':memory:')
  const log = silentLogger()
  const registry = createRegistry('api')
  const metrics = apiMetrics(registry)
  const outbox = createOutbox({ store, broker, graceMs: 15_000, log })
  // Presigning signs locally: a client pointed nowhere serves (no request is made).
  const s3Uploads = createS3Uploads(
    new S3Client({
      region: 'us-east-1',
      endpoint: 'http://127.0.0.1:1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'unit', secretAccessKey: 'unit' },
    }),
    'unit'
  )
  const presets = createPresets(store.presets)
  const admit = {
    system: 'unit',
    store,
    objects,
    outbox,
    presets,
    maxUploadBytes: 1024 * 1024,
    fairShare: 100,
    instanceId: 'unit',
  }
  const deps: AppDeps = {
    ...admit,
    broker,
    changes: createChanges(store, () => {}),
    media: store.media,
    deadLetters: store.deadLetters,
    keys: store.keys,
    idempotency: store.idempotency,
    webhooks: store.webhooks,
    sharedLimits: store.limits,
    presetStore: store.presets,
    direct: createDirectUploads({ ...admit, s3Uploads }),
    bucket: 'unit',
    stallMs: 120_000,
    adminToken: ADMIN_TOKEN,
    sweepUploads: unused,
    auth: 'keys',
    limits: { requestsPerMinute: 0, concurrentUploads: 4, pace: { windowMs: 30_000, minBytesPerSecond: 1024 } },
    corsOrigins: [],
    log,
    metrics,
    registry,
    destinations: { allowHttp: false, allowPrivate: false, kick: () => {} },
    tus: { handle: unused, cleanUp: unused },
    console: consoleBuilder(),
    links: createLinks(store.coordination),
    segmentStore: null,
    hub: createEventHub({ events: store.events, changes: { watchTenant: () => () => {} } }),
    events: store.events,
    slots: streamSlots(4, null),
    tokens: createEventTokens(store.coordination),
    upgradeWebSocket: (await loadSockets()).upgradeWebSocket,
    ...overrides,
  }
  const app = createApp(deps)
  const { key } = await issueKey(store, 'unit')
  /** A request with the unit tenant's key (or the `authorization` header given). */
  const request = (path: string, init: RequestInit = {}) =>
    app.request(path, {
      ...init,
      headers: { authorization: `Bearer ${key}`, ...(init.headers as Record<string, string>) },
    })
  return { app, store, deps, key, request }
}
