/**
 * The API app for tests that need no broker and no S3: `createApp(deps)` with a real in-memory SQLite store, and
 * storage and broker objects whose every member throws. Requests these tests make are answered before anything is
 * stored or sent; one that reaches either fails, which is the point.
 */
import { createRegistry, silentLogger } from '@app/shared/ops'
import { createApp, type AppDeps } from '../../services/api/app.ts'
import type { Broker } from '../../services/api/broker.ts'
import { createChanges } from '../../services/api/changes.ts'
import { consoleBuilder } from '../../services/api/console-build.ts'
import { createLinks } from '../../services/api/links.ts'
import { issueKey } from '../../services/api/keys.ts'
import { apiMetrics } from '../../services/api/metrics.ts'
import { createPresigner } from '../../services/api/presign.ts'
import { createOutbox } from '../../services/api/outbox.ts'
import { openSqliteStore } from '../../services/api/open-store.ts'
import type { Storage } from '../../services/api/storage.ts'

export const ADMIN_TOKEN = 'unit-test-admin-token-0123456789'
const unused = (): never => {
  throw new Error('not used by this test')
}
const storage: Storage = {
  get bucket(): string {
    return unused()
  },
  put: unused,
  get: unused,
  mark: unused,
  delete: unused,
  abortStaleUploads: unused,
  ping: unused,
  close: unused,
}
const broker: Broker = {
  publish: unused,
  broadcastCancel: unused,
  announce: unused,
  consume: unused,
  isConnected: unused,
  blocked: unused,
  consumers: unused,
  queueStats: unused,
  close: unused,
}

/** An app, its store, and a key of the tenant `unit` with `request()` sending it. Close `store` when done. */
export async function unitApp(overrides: Partial<AppDeps> = {}) {
  const store = openSqliteStore(':memory:')
  const log = silentLogger()
  const registry = createRegistry('api')
  const metrics = apiMetrics(registry, { jobsByType: unused, stalled: unused, deadLetters: unused, outbox: unused, queues: unused, ready: unused })
  const deps: AppDeps = {
    system: 'unit',
    store,
    storage,
    broker,
    changes: createChanges(broker),
    outbox: createOutbox({ store, broker, graceMs: 15_000, log }),
    maxUploadBytes: 1024 * 1024,
    stallMs: 120_000,
    adminToken: ADMIN_TOKEN,
    sweepUploads: unused,
    auth: 'keys',
    limits: { requestsPerMinute: 0, concurrentUploads: 4, pace: { windowMs: 30_000, minBytesPerSecond: 1024 } },
    corsOrigins: [],
    log,
    metrics,
    registry,
    instanceId: 'unit',
    webhooks: { allowHttp: false, allowPrivate: false, kick: () => {} },
    tus: { handle: unused, cleanUp: unused },
    console: consoleBuilder(),
    links: createLinks(store),
    presigner: createPresigner({ bucket: 'unit', region: 'us-east-1', accessKeyId: 'unit', secretAccessKey: 'unit', timeoutSeconds: 5, endpoint: 'http://127.0.0.1:1' }),
    s3: { bucket: 'unit', region: 'us-east-1', accessKeyId: 'unit', secretAccessKey: 'unit', timeoutSeconds: 5, endpoint: undefined },
    ...overrides,
  }
  const app = createApp(deps)
  const { key } = await issueKey(store, 'unit')
  /** A request with the unit tenant's key (or the `authorization` header given). */
  const request = (path: string, init: RequestInit = {}) =>
    app.request(path, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.headers as Record<string, string>) } })
  return { app, store, deps, key, request }
}
