/**
 * PostgreSQL through `postgres` (porsager), which runs on Bun, Deno and Node: the database for several API
 * instances. Migrations run at start under an advisory lock, so instances starting together migrate once; row locks
 * (`FOR UPDATE`, `SKIP LOCKED`) keep two instances from changing the same job or taking the same work.
 */
import postgres from 'postgres'
import type { Db, Param, Queryable, Row } from './db.ts'

/**
 * The schema at version 4, the version SQLite reaches through its migrations (sqlite-db.ts): PostgreSQL support
 * began there, so one step makes it. Times the store compares are epoch milliseconds (BIGINT); the ISO strings it
 * only shows stay TEXT, as in SQLite, so both stores return the same records.
 */
const SCHEMA_4 = `
CREATE TABLE media (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL DEFAULT 'default',
  filename TEXT,
  kind TEXT NOT NULL,
  format TEXT NOT NULL,
  size BIGINT NOT NULL,
  bucket TEXT NOT NULL,
  source_key TEXT NOT NULL,
  metadata TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX media_tenant ON media (tenant, created_at);
CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  media_id TEXT NOT NULL REFERENCES media(id) ON DELETE CASCADE,
  type TEXT NOT NULL,
  status TEXT NOT NULL,
  stage TEXT NOT NULL,
  progress DOUBLE PRECISION NOT NULL DEFAULT 0,
  eta_seconds DOUBLE PRECISION,
  error TEXT,
  outputs TEXT NOT NULL DEFAULT '[]',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  seen_at BIGINT,
  redrives INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_media_id ON jobs (media_id);
CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_silent ON jobs (seen_at) WHERE status = 'processing';
CREATE TABLE outbox (
  message_id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  queue TEXT NOT NULL,
  type TEXT NOT NULL,
  body BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  published_at BIGINT,
  claimed_until BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
CREATE INDEX outbox_job ON outbox (job_id, created_at);
CREATE TABLE dead_letters (
  id TEXT PRIMARY KEY,
  tenant TEXT,
  type TEXT NOT NULL,
  queue TEXT NOT NULL,
  reason TEXT NOT NULL,
  deliveries INTEGER,
  job_id TEXT,
  problem TEXT,
  message_id TEXT,
  digest TEXT NOT NULL,
  headers TEXT NOT NULL,
  body BYTEA NOT NULL,
  dead_at TEXT NOT NULL
);
CREATE UNIQUE INDEX dead_letters_message ON dead_letters (queue, message_id, digest) WHERE message_id IS NOT NULL;
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT,
  hash TEXT NOT NULL UNIQUE,
  prefix TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
CREATE TABLE rounds (
  name TEXT PRIMARY KEY,
  next_at BIGINT NOT NULL,
  holder TEXT
);
CREATE TABLE job_history (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  status TEXT NOT NULL,
  reason TEXT NOT NULL,
  origin TEXT,
  at BIGINT NOT NULL
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
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until BIGINT NOT NULL);
CREATE TABLE idempotency_keys (
  tenant TEXT NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT,
  status INTEGER,
  body TEXT,
  location TEXT,
  created_at BIGINT NOT NULL,
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
  next_at BIGINT NOT NULL,
  claimed_until BIGINT,
  last_status INTEGER,
  last_error TEXT,
  created_at BIGINT NOT NULL,
  delivered_at BIGINT
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
  created_at BIGINT NOT NULL
);
`

/** Version 8: secrets every instance shares, made by the first that needs one (the key that signs output links). */
const MIGRATION_8 = `CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);`

const MIGRATIONS: readonly [version: number, sql: string][] = [
  [4, SCHEMA_4],
  [5, MIGRATION_5],
  [6, MIGRATION_6],
  [7, MIGRATION_7],
  [8, MIGRATION_8],
]
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.at(-1)![0]
/** The advisory lock migrations hold (any constant; the same in every instance). */
const MIGRATION_LOCK = 0x6d656469 // "medi"

/** `?` placeholders as PostgreSQL's `$1`, `$2`, …; the store's SQL has no `?` inside strings. */
const numbered = (sql: string) => {
  let n = 0
  return sql.replace(/\?/g, () => `$${++n}`)
}
/** Bytes go as a Buffer (bytea); everything else as given. */
const values = (params: readonly Param[]) => params.map((p) => (p instanceof Uint8Array && !Buffer.isBuffer(p) ? Buffer.from(p) : p))

/**
 * Connects to `url` (a `postgres://` URL; `?search_path=<schema>` keeps the tables in a schema of their own) and
 * migrates. Rejects when the database cannot be reached within `connectTimeoutSeconds`.
 */
export async function openPostgresDb(url: string, options: { maxConnections?: number; connectTimeoutSeconds?: number } = {}): Promise<Db> {
  const sql = postgres(url, {
    max: options.maxConnections ?? 10,
    connect_timeout: options.connectTimeoutSeconds ?? 10,
    // Idle connections are closed, so a restarted database or a failover is reconnected to on the next query.
    idle_timeout: 60,
    onnotice: () => {},
    // Every value is parsed by the store (Number(), JSON.parse): bigints come back as strings, bytea as Buffers.
    prepare: true,
  })
  const on = (client: postgres.Sql | postgres.TransactionSql): Queryable => ({
    all: async (text, params = []) => [...(await client.unsafe(numbered(text), values(params) as postgres.ParameterOrJSON<never>[]))] as Row[],
    get: async (text, params = []) => (await client.unsafe(numbered(text), values(params) as postgres.ParameterOrJSON<never>[]))[0] as Row | undefined,
    run: async (text, params = []) => (await client.unsafe(numbered(text), values(params) as postgres.ParameterOrJSON<never>[])).count,
  })
  try {
    await migrate(sql)
  } catch (error) {
    await sql.end({ timeout: 1 })
    throw error
  }
  return {
    kind: 'postgres',
    lockRows: ' FOR UPDATE',
    claimRows: ' FOR UPDATE SKIP LOCKED',
    ...on(sql),
    transaction: (work) => sql.begin((tx) => work(on(tx))) as Promise<Awaited<ReturnType<typeof work>>>,
    close: () => sql.end({ timeout: 5 }),
  }
}

async function migrate(sql: postgres.Sql): Promise<void> {
  await sql.begin(async (tx) => {
    // Held until this transaction ends: a second instance starting now waits here, then finds the schema current.
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`
    await tx`CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`
    const [row] = await tx<{ version: number }[]>`SELECT version FROM schema_version`
    const current = row?.version ?? 0
    if (current > POSTGRES_SCHEMA_VERSION) throw new Error(`the database has schema ${current}, newer than this API (${POSTGRES_SCHEMA_VERSION})`)
    if (current === POSTGRES_SCHEMA_VERSION) return
    for (const [to, step] of MIGRATIONS) if (current < to) await tx.unsafe(step)
    if (row) await tx`UPDATE schema_version SET version = ${POSTGRES_SCHEMA_VERSION}`
    else await tx`INSERT INTO schema_version (version) VALUES (${POSTGRES_SCHEMA_VERSION})`
  })
}
