/**
 * SQLite through `node:sqlite`, which both Bun and Deno provide: the embedded default. WAL mode and a busy timeout
 * let several API processes share one file; every transaction is IMMEDIATE (it takes the write lock at BEGIN), so a
 * read-modify-write is atomic across processes. Within a process the one connection runs one transaction at a time.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import type { Db, Param, Queryable, Row } from './db.ts'

/** The schema as version 1 made it; later versions change it through the migrations below. */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS media (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  format TEXT NOT NULL,
  size INTEGER NOT NULL,
  bucket TEXT NOT NULL,
  source_key TEXT NOT NULL,
  metadata TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  media_id TEXT NOT NULL REFERENCES media(id) ON DELETE CASCADE,
  type TEXT NOT NULL,
  status TEXT NOT NULL,
  stage TEXT NOT NULL,
  progress REAL NOT NULL DEFAULT 0,
  eta_seconds REAL,
  error TEXT,
  outputs TEXT NOT NULL DEFAULT '[]',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_media_id ON jobs (media_id);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS outbox (
  message_id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  queue TEXT NOT NULL,
  type TEXT NOT NULL,
  body BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  published_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
`
/** Version 2: when a processor last reported on a job and how often it was re-driven; dead letters. */
const MIGRATION_2 = `
ALTER TABLE jobs ADD COLUMN seen_at INTEGER;
ALTER TABLE jobs ADD COLUMN redrives INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_silent ON jobs (seen_at) WHERE status = 'processing';
CREATE TABLE dead_letters (
  id TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  queue TEXT NOT NULL,
  reason TEXT NOT NULL,
  deliveries INTEGER,
  job_id TEXT,
  problem TEXT,
  message_id TEXT,
  digest TEXT NOT NULL,
  headers TEXT NOT NULL,
  body BLOB NOT NULL,
  dead_at TEXT NOT NULL
);
-- At-least-once dead-lettering may deliver a dead letter twice: the same message id and body is kept once.
CREATE UNIQUE INDEX dead_letters_message ON dead_letters (queue, message_id, digest) WHERE message_id IS NOT NULL;
`

/**
 * Version 3: tenants and API keys. Media made before keys existed belong to the tenant `default` (the tenant of an
 * API run with AUTH=none). Dead letters take their job's tenant.
 */
const MIGRATION_3 = `
ALTER TABLE media ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE media ADD COLUMN filename TEXT;
CREATE INDEX media_tenant ON media (tenant, created_at);
ALTER TABLE dead_letters ADD COLUMN tenant TEXT;
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT,
  hash TEXT NOT NULL UNIQUE,
  prefix TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
`

/**
 * Version 4: several instances. An outbox row claimed by one instance's relay (until `claimed_until`) is skipped by
 * the others; `rounds` says when timer work (a sweep) is next due, whichever instance does it; `job_history` keeps
 * each job's transitions.
 */
const MIGRATION_4 = `
ALTER TABLE outbox ADD COLUMN claimed_until INTEGER;
CREATE TABLE rounds (
  name TEXT PRIMARY KEY,
  next_at INTEGER NOT NULL,
  holder TEXT
);
CREATE TABLE job_history (
  id INTEGER PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  status TEXT NOT NULL,
  reason TEXT NOT NULL,
  origin TEXT,
  at INTEGER NOT NULL
);
CREATE INDEX job_history_job ON job_history (job_id, id);
`

/** Version 5: each job keeps its upload's W3C traceparent, sent with every copy of its request. */
const MIGRATION_5 = `ALTER TABLE jobs ADD COLUMN traceparent TEXT;`

/**
 * Version 6: leases (one holder at a time, across instances: a tus upload being written), the answers given to
 * Idempotency-Keys (per tenant, kept a day), and webhooks with their deliveries (an outbox of events).
 */
const MIGRATION_6 = `
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until INTEGER NOT NULL);
CREATE TABLE idempotency_keys (
  tenant TEXT NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT,
  status INTEGER,
  body TEXT,
  location TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (tenant, key)
);
CREATE TABLE webhooks (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  url TEXT NOT NULL,
  events TEXT NOT NULL,
  secrets TEXT NOT NULL,
  disabled_at TEXT,
  disabled_reason TEXT,
  created_at TEXT NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant);
CREATE TABLE webhook_deliveries (
  id TEXT PRIMARY KEY,
  webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
  event TEXT NOT NULL,
  media_id TEXT NOT NULL,
  media TEXT NOT NULL,
  body TEXT,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at INTEGER NOT NULL,
  claimed_until INTEGER,
  last_status INTEGER,
  last_error TEXT,
  created_at INTEGER NOT NULL,
  delivered_at INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at);
`

/**
 * Version 7: direct uploads to S3: what the API handed out (a presigned PUT, or a multipart upload) for which tenant,
 * and the media a completed one became (so completing it again answers the same).
 */
const MIGRATION_7 = `
CREATE TABLE direct_uploads (
  key TEXT PRIMARY KEY,
  id TEXT NOT NULL,
  tenant TEXT NOT NULL,
  upload_id TEXT,
  filename TEXT,
  media_id TEXT,
  created_at INTEGER NOT NULL
);
`

/** Version 8: secrets every instance shares, made by the first that needs one (the key that signs output links). */
const MIGRATION_8 = `CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);`

const MIGRATIONS: readonly [version: number, sql: string][] = [
  [2, MIGRATION_2],
  [3, MIGRATION_3],
  [4, MIGRATION_4],
  [5, MIGRATION_5],
  [6, MIGRATION_6],
  [7, MIGRATION_7],
  [8, MIGRATION_8],
]
export const SQLITE_SCHEMA_VERSION = MIGRATIONS.at(-1)![0]

/** Opens (creating it if need be) and migrates the database file at `path`, or an in-memory one (`:memory:`). */
export function openSqliteDb(path: string): Db {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
  const db = new DatabaseSync(path)
  db.exec('PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;')
  migrate(db, path)

  const statements = new Map<string, ReturnType<DatabaseSync['prepare']>>()
  const prepare = (sql: string) => {
    let statement = statements.get(sql)
    if (!statement) statements.set(sql, (statement = db.prepare(sql)))
    return statement
  }
  const direct: Queryable = {
    all: async (sql, params = []) => prepare(sql).all(...(params as Param[])) as Row[],
    get: async (sql, params = []) => prepare(sql).get(...(params as Param[])) as Row | undefined,
    run: async (sql, params = []) => Number(prepare(sql).run(...(params as Param[])).changes),
  }

  // While a transaction is open, nothing else may run on this connection (it would join the transaction), nor on
  // another connection of this process to the same file: its BEGIN IMMEDIATE would wait synchronously for a lock
  // that the awaiting transaction can then never release. So every call waits its turn, per file.
  const exclusive = turns(path)
  return {
    kind: 'sqlite',
    lockRows: '',
    claimRows: '',
    all: (sql, params) => exclusive(() => direct.all(sql, params)),
    get: (sql, params) => exclusive(() => direct.get(sql, params)),
    run: (sql, params) => exclusive(() => direct.run(sql, params)),
    transaction: (work) =>
      exclusive(async () => {
        db.exec('BEGIN IMMEDIATE')
        try {
          const result = await work(direct)
          db.exec('COMMIT')
          return result
        } catch (error) {
          db.exec('ROLLBACK')
          throw error
        }
      }),
    close: () => exclusive(async () => db.close()),
  }
}

/** The queue of calls on one database file in this process (an in-memory database is its own). */
const queues = new Map<string, { tail: Promise<unknown> }>()
function turns(path: string) {
  const queue = path === ':memory:' ? { tail: Promise.resolve() as Promise<unknown> } : (queues.get(path) ?? { tail: Promise.resolve() })
  if (path !== ':memory:') queues.set(path, queue)
  return <T>(work: () => Promise<T>): Promise<T> => {
    const turn = queue.tail.then(work)
    queue.tail = turn.catch(() => {})
    return turn
  }
}

function migrate(db: DatabaseSync, path: string): void {
  const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version
  if (version > SQLITE_SCHEMA_VERSION) throw new Error(`the database ${path} has schema ${version}, newer than this API (${SQLITE_SCHEMA_VERSION})`)
  if (version === SQLITE_SCHEMA_VERSION) return
  // IMMEDIATE: two instances starting at once on a new file migrate one after the other; the second finds it done.
  db.exec('BEGIN IMMEDIATE')
  try {
    const current = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version
    if (current < SQLITE_SCHEMA_VERSION) {
      db.exec(SCHEMA)
      for (const [to, sql] of MIGRATIONS) if (current < to) db.exec(sql)
      db.exec(`PRAGMA user_version = ${SQLITE_SCHEMA_VERSION}`)
    }
    db.exec('COMMIT')
  } catch (error) {
    db.exec('ROLLBACK')
    throw error
  }
}
