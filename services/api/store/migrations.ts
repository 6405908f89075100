/**
 * The database's schema, as one list of versions for SQLite and PostgreSQL alike: each step is written once, and the
 * dialect supplies the column types the two spell differently. A database is at the version its file (SQLite's
 * `user_version`) or table (PostgreSQL's `schema_version`) records, and takes the steps past it in order, in one
 * transaction. Times the store compares are epoch milliseconds; the ISO strings it only shows stay TEXT, so both
 * databases return the same records.
 */

/** How a database spells the types that differ. */
export interface Dialect {
  /** Epoch milliseconds, byte counts. */
  bigint: string
  /** Progress and ETAs. */
  double: string
  /** Message bodies. */
  bytes: string
  /** An integer key the database numbers itself. */
  serial: string
}

export const SQLITE: Dialect = { bigint: 'INTEGER', double: 'REAL', bytes: 'BLOB', serial: 'INTEGER PRIMARY KEY' }
export const POSTGRES: Dialect = {
  bigint: 'BIGINT',
  double: 'DOUBLE PRECISION',
  bytes: 'BYTEA',
  serial: 'BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
}

interface Migration {
  version: number
  sql: (d: Dialect) => string
}

const MIGRATIONS: readonly Migration[] = [
  {
    // Media, their jobs, and the outbox of requests still to be confirmed by the broker. IF NOT EXISTS: files made by
    // the first version recorded no version, yet have these tables.
    version: 1,
    sql: (d) => `
CREATE TABLE IF NOT EXISTS media (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  format TEXT NOT NULL,
  size ${d.bigint} NOT NULL,
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
  progress ${d.double} NOT NULL DEFAULT 0,
  eta_seconds ${d.double},
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
  body ${d.bytes} NOT NULL,
  created_at ${d.bigint} NOT NULL,
  published_at ${d.bigint}
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;`,
  },
  {
    // When a processor last reported on a job and how often it was re-driven; dead letters.
    version: 2,
    sql: (d) => `
ALTER TABLE jobs ADD COLUMN seen_at ${d.bigint};
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
  body ${d.bytes} NOT NULL,
  dead_at TEXT NOT NULL
);
-- At-least-once dead-lettering may deliver a dead letter twice: the same message id and body is kept once.
CREATE UNIQUE INDEX dead_letters_message ON dead_letters (queue, message_id, digest) WHERE message_id IS NOT NULL;`,
  },
  {
    // Tenants and API keys. Media made before keys existed belong to the tenant `default` (the tenant of an API run
    // with AUTH=none). Dead letters take their job's tenant.
    version: 3,
    sql: () => `
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
);`,
  },
  {
    // Several instances: an outbox row claimed by one instance's relay (until `claimed_until`) is skipped by the
    // others; `rounds` says when timer work (a sweep) is next due, whichever instance does it; `job_history` keeps
    // each job's transitions.
    version: 4,
    sql: (d) => `
ALTER TABLE outbox ADD COLUMN claimed_until ${d.bigint};
CREATE TABLE rounds (
  name TEXT PRIMARY KEY,
  next_at ${d.bigint} NOT NULL,
  holder TEXT
);
CREATE TABLE job_history (
  id ${d.serial},
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  status TEXT NOT NULL,
  reason TEXT NOT NULL,
  origin TEXT,
  at ${d.bigint} NOT NULL
);
CREATE INDEX job_history_job ON job_history (job_id, id);`,
  },
  {
    // Each job keeps its upload's W3C traceparent, sent with every copy of its request.
    version: 5,
    sql: () => `ALTER TABLE jobs ADD COLUMN traceparent TEXT;`,
  },
  {
    // Leases (one holder at a time, across instances: a tus upload being written), the answers given to
    // Idempotency-Keys (per tenant, kept a day), and webhooks with their deliveries (an outbox of events).
    version: 6,
    sql: (d) => `
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until ${d.bigint} NOT NULL);
CREATE TABLE idempotency_keys (
  tenant TEXT NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT,
  status INTEGER,
  body TEXT,
  location TEXT,
  created_at ${d.bigint} NOT NULL,
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
  next_at ${d.bigint} NOT NULL,
  claimed_until ${d.bigint},
  last_status INTEGER,
  last_error TEXT,
  created_at ${d.bigint} NOT NULL,
  delivered_at ${d.bigint}
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at);`,
  },
  {
    // Direct uploads to S3: what the API handed out (a presigned PUT, or a multipart upload) for which tenant, and
    // the media a completed one became (so completing it again answers the same).
    version: 7,
    sql: (d) => `
CREATE TABLE direct_uploads (
  key TEXT PRIMARY KEY,
  id TEXT NOT NULL,
  tenant TEXT NOT NULL,
  upload_id TEXT,
  filename TEXT,
  media_id TEXT,
  created_at ${d.bigint} NOT NULL
);`,
  },
  {
    // Secrets every instance shares, made by the first that needs one (the key that signs output links).
    version: 8,
    sql: () => `CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);`,
  },
  {
    // A job's latest request is looked up to send it again (a re-drive): PostgreSQL databases made at version 4
    // had this index from the start; SQLite files and later PostgreSQL ones get it here.
    version: 9,
    sql: () => `CREATE INDEX IF NOT EXISTS outbox_job ON outbox (job_id, created_at);`,
  },
  {
    // Presets (a tenant's own, and which it uploads with by default), and reprocessing: a media serves the outputs of
    // its current job while a newer one runs; each job keeps the presets it was made with.
    version: 10,
    sql: () => `
ALTER TABLE media ADD COLUMN current_job_id TEXT;
UPDATE media SET current_job_id = (SELECT id FROM jobs WHERE jobs.media_id = media.id ORDER BY created_at DESC LIMIT 1);
ALTER TABLE jobs ADD COLUMN presets TEXT;
ALTER TABLE direct_uploads ADD COLUMN presets TEXT;
CREATE TABLE presets (
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  kind TEXT NOT NULL,
  definition TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (tenant, name)
);
CREATE TABLE preset_defaults (tenant TEXT NOT NULL, kind TEXT NOT NULL, names TEXT NOT NULL, PRIMARY KEY (tenant, kind));`,
  },
  {
    // Per-key limits counted by every instance on the database: requests in each minute's window, and the uploads in
    // flight, each a row held until it ends (or its instance dies and it expires).
    version: 11,
    sql: (d) => `
CREATE TABLE rate_windows (
  key TEXT NOT NULL,
  window_start ${d.bigint} NOT NULL,
  hits INTEGER NOT NULL,
  PRIMARY KEY (key, window_start)
);
CREATE TABLE upload_slot_keys (key TEXT PRIMARY KEY);
CREATE TABLE upload_slots (id TEXT PRIMARY KEY, key TEXT NOT NULL, until ${d.bigint} NOT NULL);
CREATE INDEX upload_slots_key ON upload_slots (key, until);`,
  },
  {
    // Tenants' quotas, set by operators (a null column: no limit of that kind). Usage is counted from the records.
    version: 12,
    sql: (d) => `
CREATE TABLE tenant_quotas (
  tenant TEXT PRIMARY KEY,
  stored_bytes ${d.bigint},
  media ${d.bigint},
  waiting_jobs ${d.bigint},
  updated_at TEXT NOT NULL
);`,
  },
  {
    // Every attempt of every webhook delivery (a delivery keeps only its last status).
    version: 13,
    sql: (d) => `
CREATE TABLE webhook_attempts (
  delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
  number INTEGER NOT NULL,
  at ${d.bigint} NOT NULL,
  duration_ms ${d.bigint} NOT NULL,
  status INTEGER,
  error TEXT,
  outcome TEXT NOT NULL,
  PRIMARY KEY (delivery_id, number)
);`,
  },
  {
    // The class of each job (interactive or bulk: which request queue it went to), of each key's uploads, and the
    // one a tus upload asked for at its creation.
    version: 14,
    sql: () => `
ALTER TABLE jobs ADD COLUMN class TEXT NOT NULL DEFAULT 'interactive';
ALTER TABLE api_keys ADD COLUMN class TEXT NOT NULL DEFAULT 'interactive';
ALTER TABLE direct_uploads ADD COLUMN class TEXT;`,
  },
  {
    // The event log: every change of a tenant's media, numbered per tenant (the counter row, locked by each change's
    // transaction, makes the numbers follow the commits), kept for a retention window.
    version: 15,
    sql: (d) => `
CREATE TABLE event_counters (
  tenant TEXT PRIMARY KEY,
  seq ${d.bigint} NOT NULL
);
CREATE TABLE events (
  tenant TEXT NOT NULL,
  seq ${d.bigint} NOT NULL,
  media_id TEXT NOT NULL,
  type TEXT NOT NULL,
  data TEXT NOT NULL,
  at ${d.bigint} NOT NULL,
  PRIMARY KEY (tenant, seq)
);
CREATE INDEX events_at ON events (at);`,
  },
  {
    // A media's latest event, for the per-media stream's ids.
    version: 16,
    sql: () => `CREATE INDEX events_media ON events (media_id, seq);`,
  },
  {
    // Request bodies apart from the outbox's state: the relay's claim and mark-sent updates rewrote each 1 KB body
    // with its two timestamps (on PostgreSQL, copied it into a new row version each time); marking 5,000 rows sent
    // took half as long without them.
    version: 17,
    sql: (d) => `
CREATE TABLE outbox_bodies (
  message_id TEXT PRIMARY KEY REFERENCES outbox(message_id) ON DELETE CASCADE,
  body ${d.bytes} NOT NULL
);
INSERT INTO outbox_bodies (message_id, body) SELECT message_id, body FROM outbox;
ALTER TABLE outbox DROP COLUMN body;`,
  },
]

/** The version this API's schema is at. */
export const SCHEMA_VERSION = MIGRATIONS.at(-1)!.version

/** The steps that take a database from `current` to SCHEMA_VERSION, in order, as the dialect writes them. */
export function stepsFrom(current: number, dialect: Dialect): { version: number; sql: string }[] {
  return MIGRATIONS.filter((m) => m.version > current).map((m) => ({ version: m.version, sql: m.sql(dialect) }))
}

/** The refusal to open a database a newer API has migrated. */
export function tooNew(current: number, where: string): Error {
  return new Error(`${where} has schema ${current}, newer than this API (${SCHEMA_VERSION})`)
}
